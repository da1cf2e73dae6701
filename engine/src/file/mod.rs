//! [`FileWriter`]: an open file's working copy. Writes are buffered; when the buffer passes
//! its budget (and at commit) the dirty ranges are re-chunked together with the old bytes of
//! the chunks they touch (only those: chunk boundaries outside the region stay), the new
//! chunks are stored, and the extent map is updated. A commit builds the content tree and
//! commits a version. Memory: the extent map (estimated from its entry size at about 50 bytes
//! per chunk of the file, not measured) plus the write buffer.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::format::record::{FileKind, Record, Timestamp, Version};
use crate::format::tree::{self, Extent, ExtentKind, Node};
use crate::ids::InodeId;
use crate::index::ops::{Op, Outcome};
use crate::inner::Inner;
use crate::state::{Poison, panic_message};
use crate::sync::channel::Receiver;
use crate::write::EncodedObject;

mod chunking;
mod extents;

pub(crate) use chunking::{Chunked, SEND_BATCH_BYTES, Spread, chunk_bytes};
use extents::ExtentMap;

/// A re-chunk region `start .. end` and the dirty ranges inside it.
type Region = (u64, u64, Vec<(u64, Vec<u8>)>);

/// A sequential writer's buffer grows to this first, then to the write budget.
const SMALL_BUFFER: usize = 1 << 20;

/// A regular file opened for writing.
#[derive(Debug)]
pub struct FileWriter {
    engine: Arc<Inner>,
    ino: InodeId,
    /// Extents by file offset; they tile `0 .. tree_end` without gaps.
    extents: ExtentMap,
    /// Dirty bytes by offset; ranges never overlap or touch.
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    size: u64,
    dirty: bool,
    /// Object batches handed to the writer and not yet confirmed appended.
    in_flight: Vec<Receiver<Result<Outcome>>>,
    /// Objects this file uses, pinned against compaction while it is open (see
    /// [`crate::compact`]): its content root (which holds every chunk it had then), the
    /// chunks stored or reused since, and the nodes of a commit.
    pinned: Vec<[u8; 32]>,
    /// The buffers being chunked behind a sequential write, oldest first (at most
    /// [`MAX_CHUNKING`]): each one's `start .. end` and where its job (on rayon's pool) sends
    /// the result.
    chunking: VecDeque<(u64, u64, ChunkJob)>,
    /// A buffer chunked behind, emptied, filled again by the next range (fresh megabytes
    /// cost a page fault and a zeroed page per 4 KiB). Dropped at commit.
    spare: Vec<u8>,
    /// Set when storing buffered writes failed (a full device): the extent map may name
    /// chunks that were never stored, so this working copy can no longer be read or
    /// committed; the file keeps its last version, and reopening starts from it.
    failed: Option<Poison>,
}

/// Where a job chunking a buffer behind the writer sends its result, and the buffer back.
type ChunkJob = Receiver<(Result<Chunked>, Vec<u8>)>;

impl Drop for FileWriter {
    fn drop(&mut self) {
        for (_, _, job) in self.chunking.drain(..) {
            if let Ok((Ok(c), _)) = job.recv() {
                self.engine.unpin(&c.pinned);
            }
        }
        self.engine.unpin(&self.pinned);
    }
}

/// Waits until the writer appended an object batch (or failed to).
fn appended(rx: Receiver<Result<Outcome>>) -> Result<()> {
    rx.recv().map_err(|_| Error::Closed).and_then(|r| r).map(|_| ())
}

/// Most unconfirmed object batches per writer before it waits for the oldest.
const MAX_IN_FLIGHT: usize = 16;

/// Most buffers of a sequential writer chunked behind it at once, each by one job on one
/// thread. One job alone left both cores half idle: the writer waited for it at every
/// buffer. Three keep a job queued for whichever core frees up first. While this many run
/// for all files together, a file that has one waits for it before starting another.
const MAX_CHUNKING: usize = 3;

impl FileWriter {
    pub(crate) fn open(engine: Arc<Inner>, ino: InodeId) -> Result<FileWriter> {
        let inode = engine.shared.inode(ino)?;
        if inode.kind != FileKind::Regular {
            return Err(Error::IsDir(ino));
        }
        let mut extents = ExtentMap::default();
        engine.reader.for_each_extent(inode.content, |at, e| extents.push(at, e))?;
        let mut w = FileWriter {
            engine,
            ino,
            extents,
            pending: BTreeMap::new(),
            pending_bytes: 0,
            size: inode.size,
            dirty: false,
            in_flight: Vec::new(),
            pinned: Vec::new(),
            chunking: VecDeque::new(),
            spare: Vec::new(),
            failed: None,
        };
        w.repin(inode.content);
        Ok(w)
    }

    /// After open and after a commit: pins only the content root, whose tree holds every
    /// chunk of the extents (compaction keeps what a pinned node references). Chunks stored
    /// or reused later are pinned one by one until the next commit.
    fn repin(&mut self, root: Option<crate::ids::NodeId>) {
        let old = std::mem::take(&mut self.pinned);
        if let Some(r) = root {
            self.engine.pin(&r.0);
            self.pinned.push(r.0);
        }
        self.engine.unpin(&old);
    }

    /// Pins `id` and tells whether it is stored.
    fn pin(&mut self, id: [u8; 32]) -> bool {
        self.pinned.push(id);
        self.engine.pin(&id)
    }

    /// The inode.
    pub fn ino(&self) -> InodeId {
        self.ino
    }

    /// Current size, including buffered writes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes written and held in memory, not yet stored: the dirty buffer (stored once it
    /// passes `Options::write_buffer_bytes`) and the buffers being chunked behind a sequential
    /// writer (at most three): at most four times the budget plus one write each.
    pub fn buffered_bytes(&self) -> usize {
        self.pending_bytes + self.chunking.iter().map(|(start, end, _)| (end - start) as usize).sum::<usize>()
    }

    /// True when something changed since open or the last commit.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Writes `data` at `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.usable()?;
        if data.is_empty() {
            return Ok(());
        }
        let end = offset.checked_add(data.len() as u64).ok_or_else(|| Error::Invalid("write past 2^64".into()))?;
        self.size = self.size.max(end);
        self.dirty = true;
        if !self.write_in_place(offset, data) {
            self.write_merging(offset, end, data);
        }
        if self.pending_bytes > self.engine.options.write_buffer_bytes {
            self.flush_behind()?;
        }
        Ok(())
    }

    /// The common case of a sequential writer: the write starts inside (or right at the end
    /// of) one buffered range and touches no other; it is copied into that range in place.
    fn write_in_place(&mut self, offset: u64, data: &[u8]) -> bool {
        let end = offset + data.len() as u64;
        let Some((&s, v)) = self.pending.range(..=offset).next_back() else {
            return false;
        };
        if s + (v.len() as u64) < offset || self.pending.range(s + 1..=end).next().is_some() {
            return false;
        }
        let budget = self.engine.options.write_buffer_bytes;
        let v = self.pending.get_mut(&s).expect("found above");
        let rel = (offset - s) as usize;
        let overlap = (v.len() - rel).min(data.len());
        v[rel..rel + overlap].copy_from_slice(&data[..overlap]);
        let grow = data.len() - overlap;
        if v.capacity() - v.len() < grow {
            // A sequential writer's buffer: to 1 MiB, then once to its full size (it is stored
            // when it passes the budget), not by doubling (copies, and up to twice the memory).
            // A small file's writes never map the full budget (a fresh mapping per file).
            let full = budget + grow;
            let target = if v.len() + grow <= SMALL_BUFFER { full.min(SMALL_BUFFER) } else { full };
            v.reserve_exact(grow.max(target.saturating_sub(v.len())));
        }
        v.extend_from_slice(&data[overlap..]);
        self.pending_bytes += data.len() - overlap;
        true
    }

    /// The general case: merges every buffered range that overlaps or touches the write.
    fn write_merging(&mut self, offset: u64, end: u64, data: &[u8]) {
        // Merge with every pending range that overlaps or touches [offset, end).
        let touching: Vec<u64> =
            self.pending.range(..=end).filter(|(s, v)| **s + v.len() as u64 >= offset).map(|(s, _)| *s).collect();
        let start = touching.first().map_or(offset, |s| (*s).min(offset));
        let mut last_end = end;
        for s in &touching {
            last_end = last_end.max(s + self.pending[s].len() as u64);
        }
        let mut buf = std::mem::take(&mut self.spare);
        buf.clear();
        buf.resize((last_end - start) as usize, 0);
        for s in touching {
            let v = self.pending.remove(&s).expect("listed above");
            self.pending_bytes -= v.len();
            buf[(s - start) as usize..(s - start) as usize + v.len()].copy_from_slice(&v);
        }
        buf[(offset - start) as usize..(end - start) as usize].copy_from_slice(data);
        self.pending_bytes += buf.len();
        self.pending.insert(start, buf);
    }

    /// Sets the size: cuts extents and buffered bytes past it, or extends with a hole.
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        self.usable()?;
        self.finish_chunking()?;
        self.drop_pending(size, u64::MAX);
        self.extents.truncate(size);
        self.size = size;
        self.dirty = true;
        Ok(())
    }

    /// Turns `offset .. offset + len` into a hole (size unchanged).
    pub fn punch_hole(&mut self, offset: u64, len: u64) -> Result<()> {
        self.usable()?;
        self.finish_chunking()?;
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return Ok(());
        }
        self.drop_pending(offset, end);
        self.extents.punch(offset, end);
        self.dirty = true;
        Ok(())
    }

    /// Reads `len` bytes at `offset` as the file is now (buffered writes included).
    pub fn read(&mut self, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.usable()?;
        self.finish_chunking()?;
        let end = self.size.min(offset.saturating_add(len as u64));
        if offset >= end {
            return Ok(Vec::new());
        }
        let mut out = self.read_extents(offset, end)?;
        for (s, v) in self.pending.range(..end) {
            let (a, b) = ((*s).max(offset), (s + v.len() as u64).min(end));
            if a < b {
                out[(a - offset) as usize..(b - offset) as usize]
                    .copy_from_slice(&v[(a - s) as usize..(b - s) as usize]);
            }
        }
        Ok(out)
    }

    /// Chunks and stores the buffered writes (not yet a version).
    pub fn flush(&mut self) -> Result<()> {
        self.usable()?;
        let res = self.store_pending(false).map(|_| ());
        self.note_failure(res)
    }

    /// The error that made this working copy unusable, if any.
    fn usable(&self) -> Result<()> {
        self.failed.as_ref().map_or(Ok(()), |p| Err(p.error()))
    }

    /// Remembers a failure to store buffered writes (see `failed`).
    fn note_failure<T>(&mut self, res: Result<T>) -> Result<T> {
        if let Err(e) = &res {
            self.failed = Some(Poison::from_error(e));
        }
        res
    }

    /// Chunks the buffered writes; their new chunks go to the writer, or with `defer` are
    /// returned instead (a commit sends them with itself: one round trip to the writer).
    fn store_pending(&mut self, defer: bool) -> Result<Vec<EncodedObject>> {
        self.finish_chunking()?;
        let (mut deferred, mut deferred_bytes) = (Vec::new(), 0);
        if self.pending.is_empty() {
            return Ok(deferred);
        }
        let pending = std::mem::take(&mut self.pending);
        self.pending_bytes = 0;
        // Group dirty ranges whose re-chunk regions overlap.
        let mut groups: Vec<Region> = Vec::new();
        for (s, v) in pending {
            let e = s + v.len() as u64;
            let (rs, re) = self.extents.region(s, e);
            match groups.last_mut() {
                Some(g) if rs <= g.1 => {
                    g.1 = g.1.max(re);
                    g.2.push((s, v));
                }
                _ => groups.push((rs, re, vec![(s, v)])),
            }
        }
        for (rs, re, mut ranges) in groups {
            let whole = ranges.len() == 1 && ranges[0].0 == rs && ranges[0].0 + ranges[0].1.len() as u64 == re;
            let bytes = if whole {
                // Nothing old to merge in (an append, or whole chunks rewritten).
                ranges.pop().expect("one range").1
            } else {
                let mut bytes = self.read_extents(rs, re)?;
                for (s, v) in ranges {
                    bytes[(s - rs) as usize..(s - rs) as usize + v.len()].copy_from_slice(&v);
                }
                bytes
            };
            let c = chunk_bytes(&self.engine, &bytes, defer, Spread::AllCores)?;
            let more = self.take_chunked(rs, re, c)?;
            deferred_bytes += more.iter().map(EncodedObject::payload_len).sum::<usize>();
            deferred.extend(more);
            // Many scattered edits re-chunk many regions: what is deferred goes to the writer
            // once it makes a batch, so memory stays bounded by batches, not by edits.
            if deferred_bytes >= SEND_BATCH_BYTES {
                let rx = self.engine.send_objects(std::mem::take(&mut deferred))?;
                self.track(rx)?;
                deferred_bytes = 0;
            }
        }
        Ok(deferred)
    }

    /// A sequential writer's full buffer is chunked on another thread while the next ones
    /// fill (up to [`MAX_CHUNKING`] at once): when the dirty bytes are exactly one range
    /// appended right after the stored extents and the buffers being chunked. Anything else
    /// is stored in place ([`FileWriter::flush`]).
    fn flush_behind(&mut self) -> Result<()> {
        while let Some(Ok(done)) = self.chunking.front().map(|(_, _, job)| job.try_recv()) {
            self.take_job(done)?;
        }
        let end = self.chunking.back().map_or_else(|| self.extents.end(), |(_, end, _)| *end);
        let append = self.pending.len() == 1 && self.pending.keys().next() == Some(&end);
        if !append {
            return self.flush();
        }
        // Several files written at once share the jobs: one each, more while few run.
        let running = self.engine.chunking_jobs().load(Ordering::Relaxed);
        if self.chunking.len() >= MAX_CHUNKING || (!self.chunking.is_empty() && running >= MAX_CHUNKING) {
            self.finish_oldest()?;
        }
        let (start, bytes) = self.pending.pop_first().expect("one range");
        self.pending_bytes = 0;
        let end = start + bytes.len() as u64;
        let engine = self.engine.clone();
        let (tx, rx) = crate::sync::channel::bounded(1);
        engine.chunking_jobs().fetch_add(1, Ordering::Relaxed);
        rayon::spawn(move || {
            // A panic here (a bug) would abort the process on rayon's pool: it poisons the
            // engine instead, and this file's writer gets the error.
            let chunked =
                std::panic::catch_unwind(AssertUnwindSafe(|| chunk_bytes(&engine, &bytes, false, Spread::ThisThread)))
                    .unwrap_or_else(|p| {
                        Err(engine.shared.internal(format!("a chunking job panicked: {}", panic_message(&*p))))
                    });
            engine.chunking_jobs().fetch_sub(1, Ordering::Relaxed);
            // The handle goes before the result: a caller that has every result and drops
            // its own handle closes the store (and frees its LOCK) then, not when this
            // thread gets round to it.
            drop(engine);
            let _ = tx.send((chunked, bytes));
        });
        self.chunking.push_back((start, end, rx));
        Ok(())
    }

    /// Waits for every buffer being chunked behind and puts its chunks in place.
    fn finish_chunking(&mut self) -> Result<()> {
        while !self.chunking.is_empty() {
            self.finish_oldest()?;
        }
        Ok(())
    }

    /// Waits for the oldest buffer being chunked behind and puts its chunks in place.
    fn finish_oldest(&mut self) -> Result<()> {
        let res = match self.chunking.front().map(|(_, _, job)| job.recv()) {
            Some(Ok(done)) => done,
            Some(Err(_)) => (Err(self.engine.shared.internal("a chunking job ended without a result")), Vec::new()),
            None => return Ok(()),
        };
        self.take_job(res)
    }

    /// Puts the result of the oldest chunking job in place (the job is removed).
    fn take_job(&mut self, (res, buf): (Result<Chunked>, Vec<u8>)) -> Result<()> {
        let (start, end, _) = self.chunking.pop_front().expect("a job was waited for");
        self.spare = buf;
        let res = res.and_then(|c| self.take_chunked(start, end, c)).map(|_| ());
        self.note_failure(res)
    }

    /// Puts the chunks of `start .. end` in place: their pins, their extents, their batches
    /// (handed to the writer already) as in flight; returns the deferred ones.
    fn take_chunked(&mut self, start: u64, end: u64, c: Chunked) -> Result<Vec<EncodedObject>> {
        self.pinned.extend(c.pinned);
        self.extents.replace(start, end, c.extents);
        for rx in c.in_flight {
            self.track(rx)?;
        }
        Ok(c.deferred)
    }

    /// Counts an object batch handed to the writer as in flight (waiting for the oldest
    /// first when [`MAX_IN_FLIGHT`] are).
    fn track(&mut self, rx: Receiver<Result<Outcome>>) -> Result<()> {
        if self.in_flight.len() >= MAX_IN_FLIGHT {
            let res = appended(self.in_flight.remove(0));
            self.note_failure(res)?;
        }
        self.in_flight.push(rx);
        Ok(())
    }

    /// Waits until every object batch sent so far is appended (and readable).
    fn settle(&mut self) -> Result<()> {
        let mut res = Ok(());
        for rx in self.in_flight.drain(..) {
            let r = appended(rx);
            if res.is_ok() {
                res = r;
            }
        }
        self.note_failure(res)
    }

    /// Stores everything and commits a version (unless the content equals the newest
    /// version). With `durable`, returns only once the version is on stable storage.
    pub fn commit(&mut self, durable: bool) -> Result<Option<Arc<Version>>> {
        self.commit_with_mtime(durable, None)
    }

    /// Like [`FileWriter::commit`], with the mtime to record (`None`: the commit time).
    pub fn commit_with_mtime(&mut self, durable: bool, mtime: Option<Timestamp>) -> Result<Option<Arc<Version>>> {
        self.usable()?;
        let res = self.store_pending(true);
        self.spare = Vec::new();
        let mut objects = self.note_failure(res)?;
        self.settle()?;
        let extents = self.extents.normalized();
        let (mut root, mut nodes) = tree::build(extents.iter().copied());
        // The same bytes can end up chunked differently (edits in separate flushes); keep the
        // head version's tree then, so an unchanged save never makes a version.
        if let Some(head) = self.head()?
            && head.content != root
            && head.size == self.size
        {
            if !objects.is_empty() {
                // The comparison reads the new chunks: store them first.
                let rx = self.engine.send_objects(std::mem::take(&mut objects));
                let rx = self.note_failure(rx)?;
                self.in_flight.push(rx);
                self.settle()?;
            }
            if self.same_bytes(head.content, &extents)? {
                root = head.content;
                nodes.clear();
            }
        }
        let chunks_inside = !objects.is_empty();
        let mut seen = HashSet::new();
        if let Some(r) = root {
            self.pin(r.0); // the head's tree, reused
        }
        for (id, payload) in nodes {
            if seen.insert(id) && !self.pin(id.0) {
                let node = Node::decode(&payload).expect("a node we just encoded decodes");
                objects.push(EncodedObject::new(Record::Node(id, Arc::new(node)), payload));
            }
        }
        let op = Op::CommitContent { ino: self.ino, size: self.size, content: root, mtime };
        // (Failed, the pins stay: they cover the extents until a commit succeeds.)
        let out = self.engine.request(objects, Some(op), durable);
        // The new chunks went with it: failed, some may not be stored.
        let out = if chunks_inside { self.note_failure(out)? } else { out? };
        self.repin(root);
        self.dirty = false;
        match out {
            Outcome::Version(v) => Ok(v),
            other => Err(self.engine.shared.internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// The extents of `offset .. offset + len` (holes where nothing is stored), with every
    /// buffered write stored first: what [`FileWriter::splice`] puts into another file to
    /// copy without copying data (copy_file_range).
    pub fn extents_in(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.flush()?;
        self.settle()?;
        Ok(self.extents.slice(offset, len))
    }

    /// Replaces the bytes at `offset` with `extents` (from [`FileWriter::extents_in`] of any
    /// file of this store), growing the file if needed. No data is read or written.
    pub fn splice(&mut self, offset: u64, extents: Vec<Extent>) -> Result<()> {
        self.usable()?;
        self.finish_chunking()?;
        let len: u64 = extents.iter().map(|e| e.len).sum();
        if len == 0 {
            return Ok(());
        }
        let end = offset.checked_add(len).ok_or_else(|| Error::Invalid("copy past 2^64".into()))?;
        for e in &extents {
            if let ExtentKind::Chunk { id, .. } = e.kind {
                self.pin(id.0);
            }
        }
        self.drop_pending(offset, end);
        self.extents.replace(offset, end, extents);
        self.size = self.size.max(end);
        self.dirty = true;
        Ok(())
    }

    fn head(&self) -> Result<Option<Arc<Version>>> {
        let lineage = self.engine.shared.inode(self.ino)?.lineage;
        Ok(lineage.and_then(|l| self.engine.newest_version(l)))
    }

    /// True when the content tree `other` holds the same bytes as `extents`. Ranges where both
    /// name the same chunk bytes (or both are holes) are equal without reading; only the
    /// ranges that differ are read and compared, so the cost follows the edit.
    fn same_bytes(&mut self, other: Option<crate::ids::NodeId>, extents: &[Extent]) -> Result<bool> {
        let mut theirs = Vec::new();
        self.engine.reader.for_each_extent(other, |off, e| theirs.push((off, e)))?;
        let mut ours = Vec::with_capacity(extents.len());
        let mut pos = 0;
        for e in extents {
            ours.push((pos, *e));
            pos += e.len;
        }
        let end = self.size;
        let (mut i, mut j, mut at) = (0usize, 0usize, 0u64);
        while at < end {
            let a = extents::piece(&ours, &mut i, at);
            let b = extents::piece(&theirs, &mut j, at);
            let next = [a.map(|x| x.0), b.map(|x| x.0), Some(end)].into_iter().flatten().min().unwrap_or(end);
            let same = match (a.map(|x| x.1), b.map(|x| x.1)) {
                (None | Some(ExtentKind::Hole), None | Some(ExtentKind::Hole)) => true,
                (Some(x), Some(y)) => x == y,
                _ => false,
            };
            if !same {
                let mine = self.read_extents(at, next)?;
                let old = self.engine.reader.read_content(other, end, at, (next - at) as usize)?;
                if mine != old {
                    return Ok(false);
                }
            }
            at = next;
        }
        Ok(true)
    }

    /// Removes buffered bytes in `from .. to`.
    fn drop_pending(&mut self, from: u64, to: u64) {
        let hit: Vec<u64> =
            self.pending.range(..to).filter(|(s, v)| **s + v.len() as u64 > from).map(|(s, _)| *s).collect();
        for s in hit {
            let v = self.pending.remove(&s).expect("listed above");
            self.pending_bytes -= v.len();
            let e = s + v.len() as u64;
            if s < from {
                let head = v[..(from - s) as usize].to_vec();
                self.pending_bytes += head.len();
                self.pending.insert(s, head);
            }
            if e > to {
                let tail = v[(to - s) as usize..].to_vec();
                self.pending_bytes += tail.len();
                self.pending.insert(to, tail);
            }
        }
    }

    /// The stored bytes of `from .. to` (zeros for holes and past the tree end).
    fn read_extents(&mut self, from: u64, to: u64) -> Result<Vec<u8>> {
        let unsettled = !self.in_flight.is_empty()
            && self.extents.overlapping(from..to).any(|(_, e)| match e.kind {
                ExtentKind::Chunk { id, .. } => !self.engine.has_object(&id.0),
                ExtentKind::Hole | ExtentKind::Lower { .. } => false,
            });
        if unsettled {
            self.settle()?;
        }
        let mut out = vec![0u8; (to - from) as usize];
        for (s, e) in self.extents.overlapping(from..to) {
            let (a, b) = (s.max(from), (s + e.len).min(to));
            if a >= b {
                continue;
            }
            let to = &mut out[(a - from) as usize..(b - from) as usize];
            match e.kind {
                ExtentKind::Chunk { id, offset } => {
                    let data = self.engine.reader.chunk(id)?;
                    let src = offset as u64 + (a - s);
                    let slice =
                        data.get(src as usize..(src + (b - a)) as usize).ok_or_else(|| Error::extent_beyond(id))?;
                    to.copy_from_slice(slice);
                }
                ExtentKind::Lower { file, offset } => self.engine.reader.lower(file, offset + (a - s), to)?,
                ExtentKind::Hole => {}
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests;
