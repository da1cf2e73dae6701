//! The writer: the only code that appends to the log.
//!
//! Callers send [`Request`]s over a bounded channel to the writer's thread, or run one
//! themselves when the writer is idle ([`WriterSlot`]). The writer takes one, drains whatever
//! else is queued, and for each request in order: prepares it against the index (validation),
//! frames its records, appends them (one `write` per transaction, or per group of
//! one-object transactions) and applies them to the index. After the batch it fsyncs once if
//! any request asked for durability, and only then replies. Chunk hashing, compression and
//! payload checksums happen on the callers' threads.
//!
//! Invariants: (1) every segment before the current one is fully synced (a roll syncs the old
//! segment first), so one fsync of the current segment makes the whole log prefix durable;
//! (2) a reply of success to a durable request is sent only after that fsync returned; (3)
//! after any failed sync, and any failed append the writer cannot undo, the engine is
//! poisoned and never appends again (fsync is never retried).
//!
//! A full device is the one failure the writer undoes: an append that fails with `ENOSPC` is
//! cut off again (the segment is truncated to where the log ended, so no partial frame stays),
//! a roll that cannot create its segment removes it, a checkpoint that does not fit is
//! skipped; the request gets `NoSpace` and the engine keeps working. An operation that frees
//! space ([`Op::frees_space`]) then gets one retry after the writer made room (the store's
//! reserve file and all but the newest checkpoint removed, see `log::reserve::make_room`).

use std::io::IoSlice;
use std::sync::Arc;

use crate::error::{Error, Result, io};
use crate::format::frame::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::format::record::{Record, Timestamp};
use crate::ids::SegmentId;
use crate::index::Location;
use crate::index::ops::{self, Ctx, Op, Outcome};
use crate::log::checkpoint::{self, LogPosition};
use crate::state::{Poison, Shared};
use crate::storage::{BLOCK, StorageFile};

mod request;
mod slot;

pub use request::{EncodedObject, Output, Replacement, Reply, Request};
pub use slot::WriterSlot;

/// A block-write buffer larger than this is not kept between appends.
const STAGING_KEEP: usize = 4 << 20;

/// Most objects appended in one write (two slices each; the kernel takes 1024 per call).
const MAX_GROUP: usize = 256;

/// A record to append, framed: `crc` is the payload's crc32c; `ends_txn` marks the last
/// frame of its transaction.
struct Frame<'a> {
    record: &'a Record,
    payload: &'a [u8],
    crc: u32,
    ends_txn: bool,
}

/// Appends between two writeback starts (see [`crate::storage::StorageFile::start_writeback`]).
const WRITEBACK_STEP: u64 = 8 << 20;

/// Tunables of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterConfig {
    /// Checkpoint after this many log bytes since the last one.
    pub checkpoint_bytes: u64,
    /// Most requests per batch.
    pub max_batch: usize,
    /// The store's reserve (see `Options::reserve_bytes`): it grows with the checkpoints.
    pub reserve_bytes: u64,
    /// Appends of at least this many bytes are block writes ([`Writer::write_frames`]).
    pub block_write_bytes: u64,
}

/// The writer's state (owned by its thread).
#[derive(Debug)]
pub struct Writer {
    shared: Arc<Shared>,
    config: WriterConfig,
    seg: SegmentId,
    file: Option<Arc<dyn StorageFile>>,
    offset: u64,
    unsynced: bool,
    /// Where in the current segment the last writeback was started (see `WRITEBACK_STEP`).
    written_back: u64,
    since_checkpoint: u64,
    next_checkpoint: u64,
    /// After a sync of the current segment, the offset it covered: the next append writes a
    /// SyncMark with it first.
    mark: Option<u64>,
    /// The current segment's bytes from the start of the block holding `offset` up to it:
    /// what a block write of the next append starts with.
    tail: Vec<u8>,
    /// A block write left zeros past `offset` (cut before the segment is sealed).
    padded: bool,
    /// The reused buffer of block writes.
    staging: Vec<u8>,
}

impl Writer {
    /// The state the writer shares with the engine.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// A writer appending at `tail` (or starting segment 1).
    pub fn new(
        shared: Arc<Shared>,
        config: WriterConfig,
        tail: Option<LogPosition>,
        next_checkpoint: u64,
    ) -> Result<Self> {
        let (seg, offset, file) = match tail {
            Some(t) => (t.segment, t.offset, shared.segments.get(t.segment)),
            None => (SegmentId(0), 0, None),
        };
        let mut tail = vec![0; (offset % BLOCK as u64) as usize];
        if let Some(f) = &file {
            let from = offset - tail.len() as u64;
            crate::storage::read_exact_at(f.as_ref(), &mut tail, from).map_err(io("read", &seg.file_name()))?;
        }
        Ok(Writer {
            shared,
            config,
            seg,
            file,
            offset,
            unsynced: false,
            written_back: offset,
            since_checkpoint: 0,
            next_checkpoint,
            mark: None,
            tail,
            padded: false,
            staging: Vec::new(),
        })
    }

    fn poison(&self, e: &Error) {
        self.shared.set_poison(Poison::from_error(e));
    }

    /// Handles one batch; returns true on shutdown.
    fn process(&mut self, batch: Vec<Request>) -> bool {
        let mut replies: Vec<(Reply, Result<Outcome>)> = Vec::new();
        let mut need_sync = false;
        let mut checkpoint_replies = Vec::new();
        let mut shutdown = None;
        for req in batch {
            match req {
                Request::Apply { objects, op, durable, reply } => {
                    if let Some(e) = self.shared.poisoned() {
                        if let Some(r) = reply {
                            replies.push((r, Err(e)));
                        }
                        continue;
                    }
                    let result = self.apply(objects, op.as_ref());
                    if let Err(e) = &result
                        && matches!(e, Error::Io { .. } | Error::NoSpace | Error::Corrupt { .. })
                        && self.shared.poisoned().is_some()
                    {
                        // An append failed: nothing in this batch may be acknowledged.
                        for (_, res) in replies.iter_mut() {
                            *res = Err(Poison::from_error(e).error());
                        }
                    }
                    need_sync |= durable && result.is_ok();
                    if let Some(r) = reply {
                        replies.push((r, result));
                    }
                }
                Request::Checkpoint(r) => checkpoint_replies.push(r),
                Request::Forget(g, r) => {
                    let out = {
                        let pins = self.shared.pins.lock();
                        let mut ix = self.shared.index.write();
                        Outcome::Count(ix.forget(&pins, &g))
                    };
                    let _ = r.send(Ok(out));
                }
                Request::Roll(r) => {
                    let _ = r.send(self.roll_requested());
                }
                Request::Switch(o, r) => {
                    let _ = r.send(self.switch_requested(&o));
                }
                Request::Shutdown(r, checkpoint) => shutdown = Some((r, checkpoint)),
            }
        }
        if need_sync && let Err(e) = self.sync() {
            let p = Poison::from_error(&e);
            for (_, res) in replies.iter_mut() {
                if res.is_ok() {
                    *res = Err(p.error());
                }
            }
        }
        for (r, res) in replies {
            let _ = r.send(res);
        }
        let want_checkpoint = !checkpoint_replies.is_empty()
            || shutdown.as_ref().is_some_and(|(_, c)| *c)
            || self.since_checkpoint >= self.config.checkpoint_bytes;
        let res = if want_checkpoint {
            match self.shared.poisoned() {
                Some(e) => Err(e),
                None => self.checkpoint(),
            }
        } else {
            Ok(())
        };
        for r in checkpoint_replies {
            let _ = r.send(res.as_ref().map(|_| Outcome::Done).map_err(clone_err));
        }
        if let Some((r, _)) = shutdown {
            // Whatever was appended is made durable before the writer stops.
            let res = res.and_then(|_| self.cut_padding()).and_then(|_| self.sync());
            let _ = r.send(res.map(|_| Outcome::Done));
            return true;
        }
        false
    }

    /// A roll asked for (compaction seals the segment it will read): none when the
    /// current segment holds nothing yet.
    fn roll_requested(&mut self) -> Result<Outcome> {
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        if self.file.is_some() && self.offset > SEGMENT_HEADER_LEN as u64 {
            self.roll()?;
        }
        Ok(Outcome::Done)
    }

    /// A compaction's switch to its outputs, then a checkpoint: the index no longer names the
    /// victims, so if no checkpoint says so the engine must stop here (reopening picks the
    /// victims).
    fn switch_requested(&mut self, o: &Output) -> Result<Outcome> {
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        self.switch(o);
        let mut res = self.write_checkpoint(true);
        // (Should making room fail, the checkpoint's error is the one to report.)
        if let Err(Error::NoSpace) = res
            && matches!(self.make_room(), Ok(true))
        {
            res = self.write_checkpoint(true);
        }
        if let Err(e) = &res {
            self.poison(e);
        }
        res.map(|_| Outcome::Done)
    }

    fn apply(&mut self, objects: Vec<EncodedObject>, op: Option<&Op>) -> Result<Outcome> {
        if !objects.is_empty() {
            let fresh: Vec<EncodedObject> = {
                let ix = self.shared.index.read();
                objects.into_iter().filter(|o| !ix.objects().contains_key(&o.id())).collect()
            };
            self.append_objects(&fresh)?;
            crate::format::chunk::give_back(fresh.into_iter().map(|o| o.payload));
        }
        let Some(op) = op else {
            return Ok(Outcome::Done);
        };
        let now = Timestamp::now();
        let ctx = Ctx { now, physical_ms: (now.secs.max(0) as u64) * 1000 + (now.nanos / 1_000_000) as u64 };
        let (records, outcome) = {
            let ix = self.shared.index.read();
            ops::prepare(op, &ix, ctx)?
        };
        if !records.is_empty() {
            let framed: Vec<(Record, Vec<u8>)> = records
                .into_iter()
                .map(|r| {
                    let p = r.encode_meta();
                    (r, p)
                })
                .collect();
            match self.append_txn(&framed) {
                Err(Error::NoSpace) if op.frees_space() && self.shared.poisoned().is_none() && self.make_room()? => {
                    self.append_txn(&framed)?
                }
                res => res?,
            }
        }
        Ok(outcome)
    }

    /// Compaction's switch: the index points at the copies, the outputs take the runs' places
    /// in the segment map.
    fn switch(&self, o: &Output) {
        let mut ix = self.shared.index.write();
        ix.relocate(&o.moves, o.segments.iter().map(|r| (r.run.as_slice(), r.output, r.bytes)));
        for r in &o.segments {
            for victim in &r.run {
                self.shared.segments.remove(*victim);
            }
            self.shared.segments.insert(r.output, r.file.clone());
        }
    }

    fn make_room(&self) -> Result<bool> {
        crate::log::reserve::make_room(self.shared.storage.as_ref())
    }

    /// Appends `objects`, each its own transaction, in groups: as many as fit in the current
    /// segment, one write each.
    fn append_objects(&mut self, objects: &[EncodedObject]) -> Result<()> {
        let mut rest = objects;
        while !rest.is_empty() {
            // The first object of a group goes wherever `append` puts it (rolling if need be).
            let room = match &self.file {
                Some(_) => self.shared.meta.segment_size.saturating_sub(self.offset),
                None => 0,
            };
            let (mut n, mut size) = (0, 0u64);
            while let Some(o) = rest.get(n)
                && n < MAX_GROUP
                && (n == 0 || size + (FRAME_HEADER_LEN + o.payload.len()) as u64 <= room)
            {
                size += (FRAME_HEADER_LEN + o.payload.len()) as u64;
                n += 1;
            }
            let (group, tail) = rest.split_at(n);
            let frames: Vec<Frame<'_>> = group
                .iter()
                .map(|o| Frame { record: &o.record, payload: &o.payload, crc: o.crc, ends_txn: true })
                .collect();
            self.append(&frames)?;
            rest = tail;
        }
        Ok(())
    }

    /// Frames, appends and applies one transaction.
    fn append_txn(&mut self, records: &[(Record, Vec<u8>)]) -> Result<()> {
        let n = records.len();
        let frames: Vec<Frame<'_>> = records
            .iter()
            .enumerate()
            .map(|(i, (record, payload))| Frame { record, payload, crc: crc32c::crc32c(payload), ends_txn: i + 1 == n })
            .collect();
        self.append(&frames)
    }

    /// Appends `frames` (whole transactions) in one write and applies them. Poisons on any
    /// failure except a full device, which leaves the log as it was.
    fn append(&mut self, frames: &[Frame<'_>]) -> Result<()> {
        let size: u64 = frames.iter().map(|f| (FRAME_HEADER_LEN + f.payload.len()) as u64).sum();
        if self.file.is_none()
            || (self.offset > SEGMENT_HEADER_LEN as u64 && self.offset + size > self.shared.meta.segment_size)
        {
            self.roll()?;
        }
        let file = self.file.clone().expect("a segment is open after roll");
        // The frame headers (after a sync mark, its whole frame, its own transaction ahead of
        // these) in one buffer; the payloads are written from where they are.
        let mut heads = Vec::with_capacity(FRAME_HEADER_LEN * (frames.len() + 2));
        let mark = self.mark.take();
        if let Some(at) = mark {
            let mark = Record::SyncMark(at);
            frame::encode_frame(&mut heads, self.seg, self.offset, mark.kind(), true, &mark.encode_meta());
        }
        let first = heads.len();
        let mut locs = Vec::with_capacity(frames.len());
        let mut off = self.offset + first as u64;
        for f in frames {
            heads.extend_from_slice(&frame::frame_header(
                self.seg,
                off,
                f.record.kind(),
                f.ends_txn,
                f.payload.len(),
                f.crc,
            ));
            let len = FRAME_HEADER_LEN + f.payload.len();
            locs.push(Location { segment: self.seg, offset: off, len: len as u32 });
            off += len as u64;
        }
        let mut slices = Vec::with_capacity(2 * frames.len() + 1);
        if first > 0 {
            slices.push(IoSlice::new(&heads[..first]));
        }
        for (h, f) in heads[first..].chunks_exact(FRAME_HEADER_LEN).zip(frames) {
            slices.push(IoSlice::new(h));
            slices.push(IoSlice::new(f.payload));
        }
        let name = self.seg.file_name();
        let written = off - self.offset;
        if let Err(e) = self.write_frames(file.as_ref(), &slices, written).map_err(io("append", &name)) {
            if matches!(e, Error::NoSpace) {
                // Cut off what part of it was written: the log ends where it did.
                if let Err(cut) = file.set_len(self.offset).map_err(io("set_len", &name)) {
                    return Err(self.fail(cut));
                }
                self.mark = mark;
                return Err(e);
            }
            return Err(self.fail(e));
        }
        self.offset = off;
        self.unsynced = true;
        self.since_checkpoint += written;
        if self.offset - self.written_back >= WRITEBACK_STEP {
            // The kernel would otherwise hold all of it until the next sync: start the disk
            // on it now, so a long write's final fsync waits only for what it has not written yet.
            let (from, len) = (self.written_back, self.offset - self.written_back);
            if let Err(e) = file.start_writeback(from, len).map_err(io("sync_file_range", &name)) {
                return Err(self.fail(e));
            }
            self.written_back = self.offset;
        }
        let mut ix = self.shared.index.write();
        for (f, loc) in frames.iter().zip(locs) {
            if let Err(k) = ix.apply(f.record, loc) {
                drop(ix);
                return Err(self.fail(Error::corrupt(&name, loc.offset, k)));
            }
        }
        Ok(())
    }

    /// Writes `slices` (`len` bytes) at the end of the log. Appends of at least
    /// `block_write_bytes` (1 MiB by default: a sequential write's batches) go as whole blocks
    /// ([`StorageFile::write_blocks`]: past the page cache where the storage allows), starting
    /// with the partial block they continue and padded with zeros to a block's end; smaller
    /// ones (metadata, small files) as they are, through the page cache, where they cost a
    /// copy rather than a wait for the disk. Keeps `tail` current.
    fn write_frames(&mut self, file: &dyn StorageFile, slices: &[IoSlice<'_>], len: u64) -> std::io::Result<()> {
        let keep = self.tail.len();
        let end = self.offset + len;
        let new_tail = (end % BLOCK as u64) as usize;
        if len < self.config.block_write_bytes {
            file.write_vectored_at(slices, self.offset)?;
            // The last `new_tail` bytes of the old tail followed by the slices.
            let mut skip = keep + len as usize - new_tail;
            let mut tail = Vec::with_capacity(new_tail);
            for p in std::iter::once(&self.tail[..]).chain(slices.iter().map(|s| &**s)) {
                if skip >= p.len() {
                    skip -= p.len();
                } else {
                    tail.extend_from_slice(&p[skip..]);
                    skip = 0;
                }
            }
            self.tail = tail;
            return Ok(());
        }
        let span = (keep as u64 + len).next_multiple_of(BLOCK as u64) as usize;
        let at = crate::storage::align_in(&mut self.staging, span);
        let blocks = &mut self.staging[at..at + span];
        blocks[..keep].copy_from_slice(&self.tail);
        let mut pos = keep;
        for s in slices {
            blocks[pos..pos + s.len()].copy_from_slice(s);
            pos += s.len();
        }
        blocks[pos..].fill(0);
        file.write_blocks(blocks, self.offset - keep as u64, keep)?;
        self.padded = true;
        let tail_from = keep + len as usize - new_tail;
        self.tail.clear();
        self.tail.extend_from_slice(&blocks[tail_from..tail_from + new_tail]);
        if self.staging.len() > STAGING_KEEP {
            self.staging = Vec::new();
        }
        Ok(())
    }

    /// Cuts the zeros a block write left past the end of the log, before the segment is
    /// sealed (a roll) or closed: a finished segment ends with its last frame.
    fn cut_padding(&mut self) -> Result<()> {
        if !self.padded {
            return Ok(());
        }
        let Some(f) = &self.file else { return Ok(()) };
        let name = self.seg.file_name();
        if let Err(e) = f.set_len(self.offset).map_err(io("set_len", &name)) {
            return Err(self.fail(e));
        }
        self.padded = false;
        self.unsynced = true;
        Ok(())
    }

    /// Poisons the engine with `e` and returns it.
    fn fail(&self, e: Error) -> Error {
        self.poison(&e);
        e
    }

    /// Syncs the current segment if anything was appended since the last sync.
    fn sync(&mut self) -> Result<()> {
        if !self.unsynced {
            return Ok(());
        }
        let Some(f) = &self.file else { return Ok(()) };
        let name = self.seg.file_name();
        let res = f.sync_data().map_err(io("sync_data", &name));
        if let Err(e) = &res {
            self.poison(e);
        } else {
            self.unsynced = false;
            self.mark = Some(self.offset);
        }
        res
    }

    /// Starts a new segment: the old one is synced first, the new one's header is durable
    /// (file and directory entry) before anything is appended to it.
    /// On a full device the new segment is removed again and the log goes on in the old one
    /// (`NoSpace`, not poisoned); any other failure poisons.
    fn roll(&mut self) -> Result<()> {
        self.cut_padding()?;
        self.sync()?;
        let seg = self.seg.next_slot();
        let name = seg.file_name();
        let st = self.shared.storage.clone();
        let f = match st.open(&name, true).map_err(io("create", &name)) {
            Ok(f) => f,
            Err(Error::NoSpace) => return Err(Error::NoSpace),
            Err(e) => return Err(self.fail(e)),
        };
        let header = frame::encode_segment_header(self.shared.meta.store_id, seg);
        let made = f
            .write_at(&header, 0)
            .map_err(io("append", &name))
            .and_then(|_| f.sync_all().map_err(io("sync_all", &name)))
            .and_then(|_| st.sync_dir().map_err(io("sync_dir", ".")));
        match made {
            Ok(()) => {}
            Err(Error::NoSpace) => {
                // Not yet part of the log (no record in it): it goes.
                if let Err(e) = st.remove(&name).map_err(io("remove", &name)) {
                    return Err(self.fail(e));
                }
                return Err(Error::NoSpace);
            }
            Err(e) => return Err(self.fail(e)),
        }
        self.shared.segments.insert(seg, f.clone());
        self.shared.index.write().register_segment(seg);
        self.seg = seg;
        self.file = Some(f);
        self.offset = SEGMENT_HEADER_LEN as u64;
        self.tail = header.to_vec();
        self.written_back = self.offset;
        self.mark = None; // the old segment's; this one is new
        Ok(())
    }

    /// Writes a checkpoint of the index at the current log position. The log is synced
    /// first, so the checkpoint never covers records that could be lost.
    ///
    /// One that does not fit on the device is skipped (the log is the truth; the next one
    /// is tried after more log); any other failure poisons.
    fn checkpoint(&mut self) -> Result<()> {
        let res = self.write_checkpoint(false);
        match &res {
            Err(Error::NoSpace) => self.since_checkpoint = 0,
            Err(e) => self.poison(e),
            Ok(()) => {}
        }
        res
    }

    /// Unless it `must` be written (a compaction's switch), the reserve first grows to cover
    /// it, and when it cannot the checkpoint is not written (`NoSpace`): so the reserve holds
    /// room for the checkpoint a compaction on a full device will need.
    fn write_checkpoint(&mut self, must: bool) -> Result<()> {
        if self.file.is_none() {
            self.roll()?;
        }
        self.sync()?;
        let pos = LogPosition { segment: self.seg, offset: self.offset };
        let bytes = {
            let ix = self.shared.index.read();
            checkpoint::encode(&ix, self.shared.meta.store_id, self.shared.meta.version, pos)
        };
        let n = self.next_checkpoint;
        let st = self.shared.storage.clone();
        let name = checkpoint::file_name(n);
        let reserve = self.config.reserve_bytes;
        if !must && reserve > 0 && !crate::log::reserve::ensure_reserve(st.as_ref(), reserve, Some(bytes.len() as u64))?
        {
            return Err(Error::NoSpace);
        }
        match crate::storage::write_atomically(st.as_ref(), &name, &bytes) {
            Err(Error::NoSpace) => {
                // Make room: only the newest existing checkpoint stays (a full replay is the
                // fallback behind it), then one more try.
                checkpoint::remove_below(st.as_ref(), None)?;
                crate::storage::write_atomically(st.as_ref(), &name, &bytes)?;
            }
            res => res?,
        }
        self.next_checkpoint += 1;
        self.since_checkpoint = 0;
        // Keep the newest two: the previous one is a fallback should the newest go bad.
        checkpoint::remove_below(st.as_ref(), Some(n.saturating_sub(1))).map(|_| ())
    }
}

fn clone_err(e: &Error) -> Error {
    Poison::from_error(e).error()
}
