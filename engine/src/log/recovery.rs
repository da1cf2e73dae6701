//! Recovery: rebuilding the index when a store is opened — the newest valid checkpoint, then
//! the log after it, cutting a torn tail and refusing corruption in the middle of the log.
//!
//! The decisions are pure functions of what the directory lists, what the segment headers
//! say and the bytes of each segment: [`Listing::of`], [`superseded`],
//! [`roll_never_completed`] and [`end_of_log`], tested here on made-up inputs. [`recover`]
//! reads what they need, and carries out what they decide (removing, cutting, moving aside
//! only when its [`RecoverMode`] writes).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{CorruptKind, Error, Result, io};
use crate::format::frame::{self, FRAME_HEADER_LEN, Replaced, SEGMENT_HEADER_LEN};
use crate::format::record::{self, Record};
use crate::ids::SegmentId;
use crate::index::{Index, Location};
use crate::log::checkpoint::{self, LogPosition};
use crate::log::meta::StoreMeta;
use crate::log::store::{Segments, read_error, remove_segments, scan_segment};
use crate::storage::{BLOCK, Storage, StorageFile, read_all, read_exact_at, read_whole, write_atomically};

/// How recovery may change the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverMode {
    /// Cut a torn tail, remove temporaries: the store is about to be written.
    ReadWrite,
    /// Change nothing (fsck, inspection): a torn tail is only reported.
    ReadOnly,
    /// Ignore checkpoints and replay the whole log (read-only).
    FullReplay,
    /// Repair: like `ReadWrite`, but ignore checkpoints, replay the whole log, and skip (and
    /// report) records that do not apply (e.g. naming objects lost to corruption).
    Salvage,
}

impl RecoverMode {
    fn writes(self) -> bool {
        matches!(self, RecoverMode::ReadWrite | RecoverMode::Salvage)
    }
    fn uses_checkpoints(self) -> bool {
        !matches!(self, RecoverMode::FullReplay | RecoverMode::Salvage)
    }
}

/// What the store's directory lists, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Listing {
    /// Segment files, in log order.
    pub segments: Vec<SegmentId>,
    /// Checkpoint numbers, oldest first.
    pub checkpoints: Vec<u64>,
    /// Temporaries (`*.tmp`): never synced, so a power loss may bring one back; they go when
    /// the store is opened for writing.
    pub temporaries: Vec<String>,
}

impl Listing {
    pub fn of(names: &[String]) -> Listing {
        let mut l = Listing::default();
        for n in names {
            if let Some(id) = SegmentId::parse_file_name(n) {
                l.segments.push(id);
            } else if let Some(c) = checkpoint::parse_file_name(n) {
                l.checkpoints.push(c);
            } else if n.ends_with(".tmp") {
                l.temporaries.push(n.clone());
            }
        }
        l.segments.sort();
        l.checkpoints.sort();
        l
    }
}

/// What a segment's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderKind {
    /// A segment the writer began.
    Plain,
    /// A compaction output taking the place of these segments.
    Output(Replaced),
    /// The header does not verify.
    Bad,
}

/// The segments an interrupted compaction left over, given every segment's header. When a
/// compaction output and any segment it replaces are both present, the switch to the output
/// is committed exactly when the checkpoint names it (`named`): then the replaced ones that
/// are left go, otherwise the output does. An output whose header never made it, next to the
/// segment it was to replace, is a compaction that died while writing it. A torn newest
/// segment, or damage, is not decided here.
pub(crate) fn superseded(
    headers: &BTreeMap<SegmentId, HeaderKind>,
    named: &mut dyn FnMut(SegmentId) -> bool,
) -> Vec<SegmentId> {
    let mut out = Vec::new();
    for (&seg, header) in headers {
        match header {
            HeaderKind::Output(r) if headers.range(r.first..=r.last).next().is_some() => {
                if named(seg) {
                    out.extend(headers.range(r.first..=r.last).map(|(s, _)| *s));
                } else {
                    out.push(seg);
                }
            }
            HeaderKind::Bad
                if seg.0 & ((1 << SegmentId::SLOT_BITS) - 1) != 0 && headers.contains_key(&SegmentId(seg.0 - 1)) =>
            {
                out.push(seg);
            }
            _ => {}
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Whether the newest segment, whose header does not verify, is a roll that never completed:
/// its header is written and synced before anything goes into it, so such a segment holds
/// no valid frame (and, from a crash, usually nothing but zeros).
pub(crate) fn roll_never_completed(data: &[u8], seg: SegmentId) -> bool {
    data.len() < SEGMENT_HEADER_LEN
        || data[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0)
        || !(1..data.len()).any(|p| frame::valid_frame_at(data, 0, seg, p))
}

/// What follows the end of a segment's valid log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Nothing.
    Clean,
    /// Zeros to the end of the last block: the writer's block padding, left by a process that
    /// stopped without closing the store. Cut, but not a torn tail.
    Padding,
    /// A torn tail of `dropped` bytes: cut. With `aside`, valid frames follow the first bad
    /// one — unsynced writes that landed out of order, or damage no check can tell apart —
    /// and the tail is kept in a file, never deleted (what follows a hole was never
    /// acknowledged if the hole is the unsynced tail).
    Torn { dropped: u64, aside: bool },
    /// A SyncMark after the first bad frame shows the bad bytes at `at` had been synced:
    /// damage, not a torn write.
    Damaged { at: u64 },
}

/// What lies after `end`, where the valid log of `data` (the whole segment `seg`) ends.
pub(crate) fn end_of_log(data: &[u8], end: u64, seg: SegmentId) -> Tail {
    let rest = &data[end as usize..];
    if rest.is_empty() {
        return Tail::Clean;
    }
    if rest.len() < BLOCK && rest.iter().all(|&b| b == 0) {
        return Tail::Padding;
    }
    let mut pos = 0;
    while frame::valid_frame_at(rest, end, seg, pos) {
        let len = u32::from_le_bytes([rest[pos], rest[pos + 1], rest[pos + 2], rest[pos + 3]]) as usize;
        pos += FRAME_HEADER_LEN + len;
    }
    let bad = end + pos as u64;
    let mut aside = false;
    for p in (pos + 1..rest.len()).filter(|p| frame::valid_frame_at(rest, end, seg, *p)) {
        aside = true;
        // The frame verified, so its header decodes and its payload is in range.
        if let Ok(h) = frame::decode_frame_header(&rest[p..p + FRAME_HEADER_LEN], seg, end + p as u64)
            && h.kind == record::kind::SYNC_MARK
            && let Ok(Record::SyncMark(at)) =
                Record::decode(h.kind, &rest[p + FRAME_HEADER_LEN..p + FRAME_HEADER_LEN + h.len as usize])
            && at > bad
        {
            return Tail::Damaged { at: bad };
        }
    }
    Tail::Torn { dropped: rest.len() as u64, aside }
}

/// Rebuilds the index from `storage`, registering every segment in `segments`.
pub fn recover(storage: &dyn Storage, meta: &StoreMeta, segments: &Segments, mode: RecoverMode) -> Result<Recovered> {
    let mut report = OpenReport::default();
    let listing = Listing::of(&storage.list().map_err(io("list", "."))?);
    if mode.writes() {
        for n in &listing.temporaries {
            storage.remove(n).map_err(io("remove", n))?;
            report.removed_temporaries.push(n.clone());
        }
    }
    let next_checkpoint = listing.checkpoints.last().map_or(1, |c| c + 1);
    let start = if mode.uses_checkpoints() { newest_checkpoint(storage, meta, &listing, &mut report) } else { None };
    // From the start of the log, the replay meets history compaction has thinned out.
    let from_scratch = start.is_none();
    let (mut index, pos) =
        start.unwrap_or_else(|| (Index::new(meta.device), LogPosition { segment: SegmentId(0), offset: 0 }));

    let mut headers = read_headers(storage, meta, &listing.segments)?;
    let kinds = headers
        .iter()
        .map(|(s, (_, h))| {
            (*s, h.as_ref().map_or(HeaderKind::Bad, |r| r.map_or(HeaderKind::Plain, HeaderKind::Output)))
        })
        .collect();
    // Which segments the newest readable checkpoint names decides between a compaction output
    // and the segment it replaces, also for a replay that does not start from it (so every
    // replay of one store reads the same segments).
    let superseded = superseded(&kinds, &mut |seg| {
        if !from_scratch {
            return index.live().contains_key(&seg);
        }
        listing
            .checkpoints
            .iter()
            .rev()
            .find_map(|c| read_checkpoint(storage, meta, *c).ok())
            .is_some_and(|(ix, _)| ix.live().contains_key(&seg))
    });
    let mut seg_ids = listing.segments;
    if !superseded.is_empty() {
        seg_ids.retain(|s| !superseded.contains(s));
        if mode.writes() {
            remove_segments(storage, &superseded)?;
        }
        report.superseded_segments = superseded;
    }

    let mut tail = None;
    let last = seg_ids.last().copied();
    for seg in seg_ids {
        let (file, header) = headers.remove(&seg).expect("every listed segment was opened");
        if seg < pos.segment {
            header?;
            segments.insert(seg, file);
            continue;
        }
        let name = seg.file_name();
        let data = read_whole(file.as_ref(), &name)?;
        if let Err(e) = frame::check_segment_header(&data, meta.store_id, seg) {
            if Some(seg) == last && roll_never_completed(&data, seg) && !index.live().contains_key(&seg) {
                if mode.writes() {
                    storage.remove(&name).map_err(io("remove", &name))?;
                    storage.sync_dir().map_err(io("sync_dir", "."))?;
                }
                report.removed_empty_segment = Some(seg);
                continue;
            }
            return Err(e.at(&name, 0));
        }
        let from = if seg == pos.segment { pos.offset as usize } else { SEGMENT_HEADER_LEN };
        let replay = Replay { index: &mut index, from_scratch, mode, report: &mut report };
        let end = replay.segment(&data, seg, from, Some(seg) == last)?;
        match end_of_log(&data, end, seg) {
            Tail::Clean => {}
            Tail::Padding => {
                if mode.writes() {
                    cut(file.as_ref(), &name, end)?;
                }
            }
            Tail::Damaged { at } => return Err(Error::corrupt(&name, at, CorruptKind::MidLog)),
            Tail::Torn { dropped, aside } => {
                report.torn_tail = Some((seg, end, dropped));
                if aside {
                    let file_name = format!("lost-{name}-{end}.bad");
                    if mode.writes() {
                        write_atomically(storage, &file_name, &data[end as usize..])?;
                    }
                    report.moved_aside = Some(file_name);
                }
                if mode.writes() {
                    cut(file.as_ref(), &name, end)?;
                }
            }
        }
        segments.insert(seg, file);
        tail = Some(LogPosition { segment: seg, offset: end });
    }
    Ok(Recovered { index, tail, next_checkpoint, report })
}

/// Checkpoint number `c`, decoded.
fn read_checkpoint(storage: &dyn Storage, meta: &StoreMeta, c: u64) -> Result<(Index, LogPosition)> {
    let name = checkpoint::file_name(c);
    read_all(storage, &name).and_then(|b| checkpoint::decode(&b, meta.store_id).map_err(|e| e.at(&name, 0)))
}

/// The newest checkpoint that verifies and names only segments that are present (one older
/// than a compaction names segments that are gone): older ones are tried, each failure
/// reported; `None` means the whole log is replayed.
fn newest_checkpoint(
    storage: &dyn Storage,
    meta: &StoreMeta,
    listing: &Listing,
    report: &mut OpenReport,
) -> Option<(Index, LogPosition)> {
    for &c in listing.checkpoints.iter().rev() {
        let name = checkpoint::file_name(c);
        let loaded = read_checkpoint(storage, meta, c).and_then(|(ix, pos)| {
            match ix.live().keys().find(|s| !listing.segments.contains(s)) {
                Some(s) => {
                    let kind = CorruptKind::Missing(format!("segment {} named by the checkpoint", s.file_name()));
                    Err(Error::corrupt(&name, 0, kind))
                }
                None => Ok((ix, pos)),
            }
        });
        match loaded {
            Ok(v) => {
                report.checkpoint = Some(name);
                return Some(v);
            }
            Err(e) => report.bad_checkpoints.push((name, e.to_string())),
        }
    }
    None
}

/// A segment file, opened once, and what its header says (an error when it does not verify).
type Opened = (Arc<dyn StorageFile>, Result<Option<Replaced>>);

/// Opens every segment and reads its header.
fn read_headers(storage: &dyn Storage, meta: &StoreMeta, segs: &[SegmentId]) -> Result<BTreeMap<SegmentId, Opened>> {
    let mut headers = BTreeMap::new();
    for &seg in segs {
        let name = seg.file_name();
        let file = storage.open(&name, false).map_err(io("open", &name))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        let header = read_exact_at(file.as_ref(), &mut h, 0)
            .map_err(|e| read_error(&name, 0, SEGMENT_HEADER_LEN, e))
            .and_then(|()| frame::check_segment_header(&h, meta.store_id, seg).map_err(|e| e.at(&name, 0)));
        headers.insert(seg, (file, header));
    }
    Ok(headers)
}

/// Cuts a segment file at `end` and syncs it.
fn cut(file: &dyn StorageFile, name: &str, end: u64) -> Result<()> {
    file.set_len(end).map_err(io("set_len", name))?;
    file.sync_all().map_err(io("sync_all", name))
}

/// Replaying the log into an index.
struct Replay<'a> {
    index: &'a mut Index,
    /// No checkpoint: history records are applied as history.
    from_scratch: bool,
    mode: RecoverMode,
    report: &'a mut OpenReport,
}

impl Replay<'_> {
    /// Applies the complete transactions of segment `seg` (its bytes `data`) from offset
    /// `from`, and returns where its valid log ends.
    fn segment(self, data: &[u8], seg: SegmentId, from: usize, is_last: bool) -> Result<u64> {
        if from > data.len() || from < SEGMENT_HEADER_LEN {
            let kind = CorruptKind::Missing(format!("log up to offset {from} named by the checkpoint"));
            return Err(Error::corrupt(seg.file_name(), data.len() as u64, kind));
        }
        let Replay { index, from_scratch, mode, report } = self;
        index.register_segment(seg);
        let (end, _) = scan_segment(data, seg, from, is_last, &mut |txn| {
            for (rec, loc) in txn {
                let applied = if from_scratch { index.apply_history(rec, *loc) } else { index.apply(rec, *loc) };
                match applied {
                    Ok(()) => report.replayed_records += 1,
                    Err(k) if mode == RecoverMode::Salvage => report.skipped_records.push((*loc, format!("{k:?}"))),
                    Err(k) => return Err(Error::corrupt(seg.file_name(), loc.offset, k)),
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(end)
    }
}

/// What recovery found besides the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Checkpoint used, if any.
    pub checkpoint: Option<String>,
    /// Checkpoints that did not verify, with the reason (older ones were tried).
    pub bad_checkpoints: Vec<(String, String)>,
    /// Records replayed after the checkpoint.
    pub replayed_records: u64,
    /// A torn tail was cut: segment, offset of the cut, bytes dropped.
    pub torn_tail: Option<(SegmentId, u64, u64)>,
    /// A newest segment whose header never completed was removed.
    pub removed_empty_segment: Option<SegmentId>,
    /// Temporary files removed.
    pub removed_temporaries: Vec<String>,
    /// Segments left over from an interrupted compaction (removed when opened for writing).
    pub superseded_segments: Vec<SegmentId>,
    /// Salvage: records that did not apply, and why.
    pub skipped_records: Vec<(Location, String)>,
    /// What is wrong with `STORE` or its backup (the store opened with the good copy; see
    /// [`crate::log::meta::Header::problems`]): `cowfs-fsck --repair` mends them.
    pub header_problems: Vec<String>,
    /// Valid frames after the end of the newest segment's log (unsynced writes that landed
    /// out of order, or damage) were kept in this file instead of being replayed.
    pub moved_aside: Option<String>,
}

/// The result of recovery.
#[derive(Debug)]
pub struct Recovered {
    /// The rebuilt index.
    pub index: Index,
    /// Where the writer appends next (`None`: no segment yet).
    pub tail: Option<LogPosition>,
    /// Number the next checkpoint gets.
    pub next_checkpoint: u64,
    /// What happened.
    pub report: OpenReport,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(k: u64) -> SegmentId {
        SegmentId(k << SegmentId::SLOT_BITS)
    }

    #[test]
    fn listing_sorts_and_ignores_other_files() {
        let names: Vec<String> = [
            seg(2).file_name(),
            "STORE".into(),
            checkpoint::file_name(7),
            "ckpt.tmp".into(),
            seg(1).file_name(),
            format!("lost-{}-80.bad", seg(1).file_name()),
            checkpoint::file_name(3),
        ]
        .into();
        let l = Listing::of(&names);
        assert_eq!(l.segments, [seg(1), seg(2)]);
        assert_eq!(l.checkpoints, [3, 7]);
        assert_eq!(l.temporaries, ["ckpt.tmp"]);
    }

    #[test]
    fn superseded_follows_the_checkpoint() {
        let out = SegmentId(seg(2).0 + 1);
        let replaces = HeaderKind::Output(Replaced { first: seg(1), last: seg(2) });
        let headers: BTreeMap<_, _> =
            [(seg(1), HeaderKind::Plain), (seg(2), HeaderKind::Plain), (out, replaces), (seg(3), HeaderKind::Plain)]
                .into();
        // Named by the checkpoint: the switch is committed, the replaced segments go.
        assert_eq!(superseded(&headers, &mut |s| s == out), [seg(1), seg(2)]);
        // Not named: the output is incomplete and goes.
        assert_eq!(superseded(&headers, &mut |_| false), [out]);
        // The replaced segments are gone already: nothing to decide.
        let done: BTreeMap<_, _> = [(out, replaces), (seg(3), HeaderKind::Plain)].into();
        assert_eq!(superseded(&done, &mut |_| panic!("no question to ask")), []);
    }

    #[test]
    fn superseded_output_without_header() {
        let out = SegmentId(seg(1).0 + 1);
        let headers: BTreeMap<_, _> = [(seg(1), HeaderKind::Plain), (out, HeaderKind::Bad)].into();
        assert_eq!(superseded(&headers, &mut |_| false), [out]);
        // A writer segment with a bad header is a torn roll or damage, decided later.
        let torn: BTreeMap<_, _> = [(seg(1), HeaderKind::Plain), (seg(2), HeaderKind::Bad)].into();
        assert_eq!(superseded(&torn, &mut |_| false), []);
        // So is a bad output with no predecessor next to it.
        let alone: BTreeMap<_, _> = [(out, HeaderKind::Bad)].into();
        assert_eq!(superseded(&alone, &mut |_| false), []);
    }

    /// A segment `seg` holding a header and one transaction of one `SyncMark(at)` record.
    fn segment_with_sync_mark(seg: SegmentId, at: u64) -> Vec<u8> {
        let mut data = frame::encode_segment_header(crate::ids::StoreId([1; 16]), seg).to_vec();
        let payload = Record::SyncMark(at).encode_meta();
        let offset = data.len() as u64;
        frame::encode_frame(&mut data, seg, offset, record::kind::SYNC_MARK, true, &payload);
        data
    }

    #[test]
    fn roll_never_completed_only_without_valid_frames() {
        assert!(roll_never_completed(&[0; 10], seg(1)));
        assert!(roll_never_completed(&[0; 4096], seg(1)));
        let mut data = segment_with_sync_mark(seg(1), 0);
        data[0] ^= 1; // a bad header, but a frame after it verifies: damage
        assert!(!roll_never_completed(&data, seg(1)));
    }

    #[test]
    fn what_follows_the_end_of_the_log() {
        let s = seg(1);
        let log = segment_with_sync_mark(s, 0);
        let end = log.len() as u64;
        assert_eq!(end_of_log(&log, end, s), Tail::Clean);

        let mut padded = log.clone();
        padded.resize(BLOCK, 0);
        assert_eq!(end_of_log(&padded, end, s), Tail::Padding);

        let mut torn = log.clone();
        torn.extend_from_slice(&[7; 100]);
        assert_eq!(end_of_log(&torn, end, s), Tail::Torn { dropped: 100, aside: false });

        // A hole, then a valid frame: kept aside. `frame` holds the log and, at its offset, one
        // more frame (a SyncMark naming an offset before the hole, so the hole is not synced).
        let frame_at = |mark: u64| {
            let mut d = torn.clone();
            let offset = d.len() as u64;
            let payload = Record::SyncMark(mark).encode_meta();
            frame::encode_frame(&mut d, s, offset, record::kind::SYNC_MARK, true, &payload);
            d
        };
        let out_of_order = frame_at(end);
        let dropped = out_of_order.len() as u64 - end;
        assert_eq!(end_of_log(&out_of_order, end, s), Tail::Torn { dropped, aside: true });
        // The SyncMark after the hole names an offset past it: the hole was synced, damage.
        assert_eq!(end_of_log(&frame_at(end + 200), end, s), Tail::Damaged { at: end });
    }
}
