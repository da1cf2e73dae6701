//! Compaction: reclaiming the space of objects nothing references any more, while the store
//! is in use.
//!
//! 1. **Mark.** The compactor scans the sealed segments (every one before the writer's) for
//!    object frames. Under one read lock it takes the roots (the content of every live inode,
//!    version and snapshot inode) and, for every object frame that is the index's copy, its
//!    reference count. Off the lock it walks the content trees from the roots. Objects not
//!    reached are garbage *at that moment*.
//! 2. **Forget** (writer thread, [`forget`]). Garbage stays garbage unless something referenced
//!    it since: a new reference raises its count (counts of unreachable objects only rise: their
//!    referrers are other garbage nodes, which never release), and an open file that reused it
//!    holds a pin (`Inner::pin`). Those, and everything below them, are kept; the rest
//!    leaves the index (a later write of the same bytes stores them again). Forgetting writes
//!    nothing: until the switch below, the frames are still on disk and a crash forgets nothing.
//! 3. **Copy.** Victims are sealed segments with enough dead bytes, and small ones (under half
//!    a segment: compaction outputs, a writer's segment a full compaction sealed): in runs of neighbours in the
//!    log whose kept bytes fit one segment. A run with garbage, or of several segments, is
//!    copied in log order into one output segment `last + 1`, which takes the run's place in
//!    the log: every frame except forgotten or duplicate objects and pruned versions. Metadata
//!    is kept (it is the history the activity log and `.cowfs/at/` replay). The output's header
//!    names the run (`first..=last`); it is synced. Merging keeps the number of segments (and
//!    of open files) in step with the live data, however often compaction runs.
//! 4. **Switch** (writer thread, [`switch`]): the index points at the copies, the victims leave
//!    the segment map, a checkpoint is written. Then the victim files are removed. Recovery with
//!    an output and any of its run present keeps the output if the checkpoint names it, else
//!    the run.
//!
//! Steps 2–4 run in rounds of about one segment of copies each, emptiest runs first, so that
//! on a nearly full device the first rounds give space back before later ones need it.
//!
//! Readers that looked an object up before the switch retry at its new place; open segment
//! files stay readable after removal (the handle keeps them).

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result, io};
use crate::format::frame::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::format::record::Record;
use crate::ids::SegmentId;
use crate::index::Location;
use crate::index::{Candidate, Garbage, Move};
use crate::inner::Inner;
use crate::storage::StorageFile;
use crate::write::{Output, Replacement, Request};

/// What a compaction did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Bytes of all segment files before.
    pub bytes_before: u64,
    /// ... after.
    pub bytes_after: u64,
    /// Segments rewritten.
    pub segments_compacted: u64,
    /// Segments written in their place (fewer when small ones were merged).
    pub segments_written: u64,
    /// Objects forgotten (unreferenced).
    pub objects_forgotten: u64,
    /// Longest time the writer was held by the forget step, in microseconds.
    pub forget_micros: u64,
    /// Time the switch (index update and checkpoint) held the writer, in microseconds.
    pub switch_micros: u64,
}

/// How much to compact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// Rewrite a sealed segment when its live fraction is below this (1.0: any dead byte).
    pub live_below: f64,
}

impl Policy {
    /// Everything reclaimable now (the writer's segment is sealed first).
    pub const FULL: Policy = Policy { live_below: 1.0 };
    /// The background default: segments at most half live.
    pub const BACKGROUND: Policy = Policy { live_below: 0.5 };
}

/// Neighbouring segments of the log to compact into one output (`target`, after the last of
/// them), with the bytes they keep.
struct Run {
    segs: Vec<(SegmentId, Arc<dyn StorageFile>)>,
    target: SegmentId,
    kept: u64,
}

impl Run {
    fn replaced(&self) -> frame::Replaced {
        frame::Replaced { first: self.segs[0].0, last: self.segs[self.segs.len() - 1].0 }
    }
}

/// An object frame of a sealed segment.
struct Found {
    id: [u8; 32],
    loc: Location,
    children: Vec<[u8; 32]>,
}

impl Inner {
    /// Compacts the sealed segments `policy` selects. `progress(done, total)` is called with
    /// bytes of segments processed. One compaction runs at a time; a second call waits.
    pub(crate) fn compact(&self, policy: Policy, progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
        let _one = self.compaction_lock();
        if policy.live_below >= 1.0 {
            // Everything: seal the writer's segment too, so no garbage is out of reach. On a
            // full device, after making room; failing that, the sealed segments are enough.
            let mut rolled = self.writer_call(Request::Roll);
            if let Err(Error::NoSpace) = rolled
                && self.make_room()?
            {
                rolled = self.writer_call(Request::Roll);
            }
            match rolled {
                Ok(_) | Err(Error::NoSpace) => {}
                Err(e) => return Err(e),
            }
        }
        let shared = self.shared.clone();
        let mut report = Report { bytes_before: self.segment_bytes()?, ..Report::default() };
        let all = shared.segments.all();
        let Some(&(tail, _)) = all.last() else { return Ok(report) };
        let sealed: Vec<(SegmentId, Arc<dyn StorageFile>)> = all.into_iter().filter(|(s, _)| *s < tail).collect();
        let total: u64 = sealed.iter().map(|(_, f)| f.len().unwrap_or(0)).sum::<u64>();
        let mut done = 0u64;

        let garbage = self.mark(&sealed, &mut |n| {
            done += n;
            progress(done, total)
        })?;
        let live = shared.index.read().live().clone();
        let size = shared.meta.segment_size;
        let runs = plan_runs(sealed, &garbage, &live, size, policy)?;
        // (Only the runs' handles are held from here on, each until its round is done: an
        // open handle keeps a removed file's space in use.)
        let total = total + runs.iter().flat_map(|r| &r.segs).map(|(_, f)| f.len().unwrap_or(0)).sum::<u64>();
        for mut round in rounds(runs, size) {
            round.sort_by_key(|r| r.target); // copied in log order (and dropped after the round)
            self.compact_round(&round, &garbage, &mut report, &mut |n| {
                done += n;
                progress(done, total)
            })?;
        }
        report.bytes_after = self.segment_bytes()?;
        self.ensure_reserve()?;
        Ok(report)
    }

    /// The mark (see the module doc): the object frames of the `sealed` segments that nothing
    /// reaches now, with their reference counts at the mark. `progress(bytes)` after each
    /// segment read.
    fn mark(
        &self,
        sealed: &[(SegmentId, Arc<dyn StorageFile>)],
        progress: &mut dyn FnMut(u64),
    ) -> Result<Vec<Candidate>> {
        let shared = &self.shared;
        let mut found = Vec::new();
        for (seg, f) in sealed {
            let data = crate::storage::read_whole(f.as_ref(), &seg.file_name())?;
            frame::check_segment_header(&data, shared.meta.store_id, *seg).map_err(|e| e.at(seg.file_name(), 0))?;
            crate::log::store::scan_segment(&data, *seg, SEGMENT_HEADER_LEN, false, &mut |txn| {
                for (rec, loc) in txn {
                    match rec {
                        Record::Chunk(m) => found.push(Found { id: m.id.0, loc: *loc, children: Vec::new() }),
                        Record::Node(id, n) => found.push(Found { id: id.0, loc: *loc, children: n.references() }),
                        _ => {}
                    }
                }
                Ok(ControlFlow::Continue(()))
            })?;
            progress(data.len() as u64);
        }
        let (roots, refs) = {
            let ix = shared.index.read();
            let mut roots = crate::gc::tree_roots(&ix);
            roots.extend(ix.lineages().values().flatten().filter_map(|v| v.content));
            let refs: Vec<Option<u32>> =
                found.iter().map(|f| ix.objects().get(&f.id).filter(|e| e.loc == f.loc).map(|e| e.refs)).collect();
            (roots, refs)
        };
        let reached = crate::gc::reachable(self, roots)?;
        let garbage = found
            .into_iter()
            .zip(refs)
            .filter_map(|(f, r)| {
                let refs = r?;
                (!reached.contains(&f.id)).then_some(Candidate { id: f.id, loc: f.loc, refs, children: f.children })
            })
            .collect();
        Ok(garbage)
    }
}

/// The runs to compact (see the module doc): neighbouring sealed segments whose live
/// fraction without the `garbage` is under `policy`'s, and small ones, each run's kept bytes
/// fitting one segment of `size` bytes. `live`: the index's live bytes per segment.
fn plan_runs(
    sealed: Vec<(SegmentId, Arc<dyn StorageFile>)>,
    garbage: &[Candidate],
    live: &std::collections::BTreeMap<SegmentId, u64>,
    size: u64,
    policy: Policy,
) -> Result<Vec<Run>> {
    // Victims: sealed segments whose live fraction, without the garbage, is under the
    // policy's, and small ones, in runs (see the module doc). Only their garbage is
    // forgotten, so the index always matches the log.
    let mut dead: HashMap<SegmentId, u64> = HashMap::new();
    for c in garbage {
        *dead.entry(c.loc.segment).or_default() += u64::from(c.loc.len);
    }
    let mut runs: Vec<Run> = Vec::new();
    // The run being gathered: its segments, the bytes they keep, whether it has garbage.
    type Gathered = (Vec<(SegmentId, Arc<dyn StorageFile>)>, u64, bool);
    let mut open: Option<Gathered> = None;
    let mut close = |open: &mut Option<Gathered>| {
        if let Some((segs, kept, dirty)) = open.take()
            && (dirty || segs.len() > 1)
            && let Some(target) = segs[segs.len() - 1].0.compacted()
        {
            runs.push(Run { segs, target, kept });
        }
    };
    for (seg, f) in sealed {
        let frames = f.len().map_err(io("len", &seg.file_name()))?.saturating_sub(SEGMENT_HEADER_LEN as u64);
        let kept = live.get(&seg).copied().unwrap_or(0).saturating_sub(dead.get(&seg).copied().unwrap_or(0));
        let dirty = frames > 0 && kept < frames && (kept as f64 / frames as f64) < policy.live_below;
        if !dirty && frames >= size / 2 {
            close(&mut open);
            continue;
        }
        match &mut open {
            Some((segs, run_kept, run_dirty)) if *run_kept + kept <= size => {
                segs.push((seg, f));
                *run_kept += kept;
                *run_dirty |= dirty;
            }
            _ => {
                close(&mut open);
                open = Some((vec![(seg, f)], kept, dirty));
            }
        }
    }
    close(&mut open);
    Ok(runs)
}

/// `runs` in rounds of about one segment of copies each, emptiest runs first: on a nearly
/// full device the space of the first rounds is back before the later ones need room for
/// their copies.
fn rounds(mut runs: Vec<Run>, size: u64) -> Vec<Vec<Run>> {
    runs.sort_by_key(|r| (r.kept, r.target));
    let mut rounds: Vec<Vec<Run>> = Vec::new();
    let mut round_kept = 0;
    for r in runs {
        match rounds.last_mut() {
            Some(round) if round_kept + r.kept <= size => {
                round_kept += r.kept;
                round.push(r);
            }
            _ => {
                round_kept = r.kept;
                rounds.push(vec![r]);
            }
        }
    }
    rounds
}

impl Inner {
    /// One round: forget the runs' garbage, copy them, switch, remove them.
    fn compact_round(
        &self,
        runs: &[Run],
        garbage: &[Candidate],
        report: &mut Report,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let shared = self.shared.clone();
        let victims: HashSet<SegmentId> = runs.iter().flat_map(|r| &r.segs).map(|(s, _)| *s).collect();
        let candidates: Vec<Candidate> = garbage.iter().filter(|c| victims.contains(&c.loc.segment)).cloned().collect();
        if !candidates.is_empty() {
            let t = Instant::now();
            let out = self.writer_call(|r| Request::Forget(Box::new(Garbage { candidates }), r))?;
            report.forget_micros = report.forget_micros.max(t.elapsed().as_micros() as u64);
            if let crate::index::ops::Outcome::Count(n) = out {
                report.objects_forgotten += n;
            }
        }

        // Copy the victims; on a full device, once more after making room.
        let mut out = self.copy_round(runs, progress);
        if let Err(Error::NoSpace) = out
            && self.make_room()?
        {
            out = self.copy_round(runs, progress);
        }
        let out = out?;
        report.segments_compacted += victims.len() as u64;
        report.segments_written += runs.len() as u64;

        // Switch, then the victims go.
        let t = Instant::now();
        self.writer_call(|r| Request::Switch(Box::new(out), r))?;
        report.switch_micros = report.switch_micros.max(t.elapsed().as_micros() as u64);
        // The victims go, after the older checkpoints that name them.
        let victims: Vec<SegmentId> = runs.iter().flat_map(|r| &r.segs).map(|(s, _)| *s).collect();
        crate::log::store::remove_segments(shared.storage.as_ref(), &victims)
    }

    /// Copies each run into its output (synced); on failure removes the outputs again.
    fn copy_round(&self, runs: &[Run], progress: &mut dyn FnMut(u64)) -> Result<Output> {
        let shared = &self.shared;
        let mut out = Output { segments: Vec::new(), moves: Vec::new() };
        let copied = runs.iter().try_for_each(|run| {
            let target = run.target;
            let mut buf = frame::encode_output_header(shared.meta.store_id, target, Some(run.replaced())).to_vec();
            for (seg, file) in &run.segs {
                let data = crate::storage::read_whole(file.as_ref(), &seg.file_name())?;
                self.copy_live(&data, *seg, target, &mut buf, &mut out.moves)?;
                progress(data.len() as u64);
            }
            let tname = target.file_name();
            let file = shared.storage.open(&tname, true).map_err(io("create", &tname))?;
            file.set_len(0).map_err(io("set_len", &tname))?;
            file.write_at(&buf, 0).map_err(io("write_at", &tname))?;
            file.sync_all().map_err(io("sync_all", &tname))?;
            out.segments.push(Replacement {
                run: run.segs.iter().map(|(s, _)| *s).collect(),
                output: target,
                file,
                bytes: (buf.len() - SEGMENT_HEADER_LEN) as u64,
            });
            Ok(())
        });
        let copied = copied.and_then(|()| shared.storage.sync_dir().map_err(io("sync_dir", ".")));
        if let Err(e) = copied {
            // The outputs are not part of the store before the switch: give their space back
            // now (a full device is the usual cause). Should a removal fail, the next open
            // removes what is left (an output its checkpoint does not name); the first error
            // is the one to report.
            let names = shared.storage.list().unwrap_or_default();
            for run in runs {
                if names.contains(&run.target.file_name()) {
                    let _ = shared.storage.remove(&run.target.file_name());
                }
            }
            return Err(e);
        }
        Ok(out)
    }

    /// Appends the frames of `data` (segment `seg`) compaction keeps to `buf`, framed for
    /// segment `target` (whose bytes `buf` holds from its start), and their moves to `moves`.
    fn copy_live(
        &self,
        data: &[u8],
        seg: SegmentId,
        target: SegmentId,
        buf: &mut Vec<u8>,
        moves: &mut Vec<Move>,
    ) -> Result<()> {
        let shared = &self.shared;
        crate::log::store::scan_segment(data, seg, SEGMENT_HEADER_LEN, false, &mut |txn| {
            let kept: Vec<&(Record, Location)> = {
                let ix = shared.index.read();
                txn.iter()
                    .filter(|(rec, loc)| match rec {
                        Record::Chunk(m) => ix.objects().get(&m.id.0).is_some_and(|e| e.loc == *loc),
                        Record::Node(id, _) => ix.objects().get(&id.0).is_some_and(|e| e.loc == *loc),
                        Record::Version(v) => {
                            ix.lineages().get(&v.lineage).is_some_and(|l| l.iter().any(|x| x.id == v.id))
                        }
                        // Evidence about the end of the log, which this segment no longer is.
                        Record::SyncMark(_) => false,
                        _ => true,
                    })
                    .collect()
            };
            let n = kept.len();
            for (k, (rec, loc)) in kept.into_iter().enumerate() {
                let start = loc.offset as usize + FRAME_HEADER_LEN;
                let payload = &data[start..loc.offset as usize + loc.len as usize];
                let at = buf.len() as u64;
                frame::encode_frame(buf, target, at, rec.kind(), k + 1 == n, payload);
                let id = match rec {
                    Record::Chunk(m) => Some(m.id.0),
                    Record::Node(id, _) => Some(id.0),
                    _ => None,
                };
                moves.push((*loc, Location { segment: target, offset: at, len: loc.len }, id));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(())
    }
}
