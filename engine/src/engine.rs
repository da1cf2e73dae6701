//! The engine handle: open/create a store, read through the index, and send mutations to
//! the writer thread. Cheap to clone; the writer stops when the last clone is dropped or
//! [`Engine::close`] is called.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::chunk::{self, ChunkParams};
use crate::error::{CorruptKind, Error, Result, io};
use crate::file::FileWriter;
use crate::ids::{ChunkId, InodeId, LineageId, NodeId};
use crate::index::{Dirent, Index, Location, Namespace};
use crate::meta::{self, Backup, STORE_BACKUP, StoreMeta, read_meta};
use crate::ops::{NewInode, Op, Outcome, SetAttr, XattrMode};
use crate::record::{FileKind, Inode, SnapshotMeta, Version};
use crate::storage::{LockGuard, Storage};
use crate::store::{self, OpenReport, RecoverMode, Segments};
use crate::sync::channel::{self, Sender};
use crate::sync::{AtomicUsize, JoinHandle, Mutex, RwLock, spawn};
use crate::tree::{self, ExtentKind, Node};
use crate::writer::{EncodedObject, Request, Shared, Writer, WriterConfig, WriterSlot};

/// How to open a store.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Create the store if the directory is empty.
    pub create: bool,
    /// Chunking parameters for a new store (an existing store keeps its own).
    pub chunking: ChunkParams,
    /// Segment size for a new store.
    pub segment_size: u64,
    /// Checkpoint after this many log bytes.
    pub checkpoint_bytes: u64,
    /// Budget of the decompressed-chunk cache, in bytes.
    pub chunk_cache_bytes: usize,
    /// Dirty bytes a [`FileWriter`] buffers before it chunks and stores them.
    pub write_buffer_bytes: usize,
    /// Space held back in [`RESERVE_FILE`] (0: none), on top of one checkpoint's size; given
    /// up when a delete or prune does not fit on a full device and taken again after a
    /// compaction: so that a full store can be cleaned up.
    pub reserve_bytes: u64,
    /// Appends of at least this many bytes are written as whole blocks past the page cache
    /// (see `Writer::write_frames`); smaller ones through it.
    pub block_write_bytes: u64,
}

/// The file that holds [`Options::reserve_bytes`].
pub const RESERVE_FILE: &str = "RESERVE";

/// Makes sure [`RESERVE_FILE`] holds `reserve_bytes` (0: nothing to do) plus the size of a
/// checkpoint (`checkpoint`, or else the newest one's): a compaction on a full device must
/// write one before it frees anything. On a device too full for that it holds what fits
/// (false) until a later call (the next checkpoint or compaction).
pub(crate) fn ensure_reserve(st: &dyn Storage, reserve_bytes: u64, checkpoint: Option<u64>) -> Result<bool> {
    if reserve_bytes == 0 {
        return Ok(false);
    }
    let names = st.list().map_err(io("list", "."))?;
    let len_of = |name: &str| st.open(name, false).and_then(|f| f.len()).map_err(io("len", name));
    let checkpoint = match (checkpoint, names.iter().filter_map(|n| crate::checkpoint::parse_file_name(n)).max()) {
        (Some(len), _) => len,
        (None, Some(c)) => len_of(&crate::checkpoint::file_name(c))?,
        (None, None) => 0,
    };
    let want = reserve_bytes + checkpoint;
    let name = RESERVE_FILE;
    let mut at = if names.iter().any(|n| n == name) { len_of(name)? } else { 0 };
    if at >= want {
        return Ok(true);
    }
    let f = match st.open(name, true).map_err(io("create", name)) {
        Err(Error::NoSpace) => return Ok(false),
        f => f?,
    };
    // Not zeros: a compressing file system would not store them.
    let block: Vec<u8> = (0..256u32 << 10).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut res = Ok(());
    while at < want && res.is_ok() {
        let n = block.len().min((want - at) as usize);
        res = f.write_at(&block[..n], at).map_err(io("write_at", name));
        at += n as u64;
    }
    let res = res
        .and_then(|_| f.sync_all().map_err(io("sync_all", name)))
        .and_then(|_| st.sync_dir().map_err(io("sync_dir", ".")));
    match res {
        Ok(()) => Ok(true),
        Err(Error::NoSpace) => Ok(false), // what fits stays
        Err(e) => Err(e),
    }
}

/// Gives space back on a full device so that an operation that frees space fits: removes the
/// reserve file and every checkpoint but the newest (the older ones are only a fallback).
/// True when anything went.
pub(crate) fn make_room(storage: &dyn Storage) -> Result<bool> {
    let reserve = storage.list().map_err(io("list", "."))?.iter().any(|n| n == RESERVE_FILE);
    if reserve {
        storage.remove(RESERVE_FILE).map_err(io("remove", RESERVE_FILE))?;
    }
    Ok(crate::checkpoint::remove_below(storage, None)? || reserve)
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create: true,
            chunking: ChunkParams::DEFAULT,
            segment_size: meta::DEFAULT_SEGMENT_SIZE,
            checkpoint_bytes: 256 << 20,
            chunk_cache_bytes: 32 << 20,
            // Full, a sequential writer's buffer holds this plus one FUSE write (1 MiB): 15
            // MiB stays under the 16 MiB above which the daemon's allocator maps memory
            // straight from the kernel (tools/src/mount.rs), where each fresh buffer would
            // cost a page fault and a zeroed page per 4 KiB.
            write_buffer_bytes: 14 << 20,
            reserve_bytes: 4 << 20,
            block_write_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// Small everything, for tests: tiny chunks and segments, frequent checkpoints.
    pub fn tiny() -> Self {
        Options {
            create: true,
            chunking: ChunkParams::TINY,
            segment_size: 16 << 10,
            checkpoint_bytes: 64 << 10,
            chunk_cache_bytes: 1 << 20,
            write_buffer_bytes: 8 << 10,
            reserve_bytes: 0,
            block_write_bytes: 256,
        }
    }
}

/// Space and object counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Segment files.
    pub segments: u64,
    /// Their total size.
    pub segment_bytes: u64,
    /// Bytes of frames compaction would keep.
    pub live_bytes: u64,
    /// Bytes compaction can reclaim: duplicate copies, and objects a compaction's mark found
    /// unreferenced (known after a mark; `unreferenced_chunks` counts candidates before).
    pub dead_bytes: u64,
    /// Distinct chunks.
    pub chunks: u64,
    /// Their raw size.
    pub chunk_raw_bytes: u64,
    /// Their stored size (frames).
    pub chunk_stored_bytes: u64,
    /// Chunks nothing references yet (or any more).
    pub unreferenced_chunks: u64,
    /// Content-tree nodes.
    pub nodes: u64,
    /// Inodes.
    pub inodes: u64,
    /// Regular files.
    pub files: u64,
    /// Sum of the sizes of current regular files (holes included).
    pub logical_bytes: u64,
    /// Lineages with at least one version.
    pub lineages: u64,
    /// Versions.
    pub versions: u64,
    /// Sum of the sizes of every version (holes included): what whole-file versioning
    /// would have stored.
    pub version_bytes: u64,
    /// Snapshots.
    pub snapshots: u64,
}

/// A range of a chunk that a read copies to file offset `at`.
#[derive(Debug, Clone, Copy)]
struct Piece {
    chunk: ChunkId,
    from: u32,
    len: usize,
    at: u64,
}

/// Zeroes the bytes of `out` (file bytes from `base`) that no piece covers. Pieces come in
/// file order without overlaps; should they not, all of `out` is zeroed.
fn zero_holes(pieces: &[Piece], base: u64, out: &mut [u8]) {
    let mut pos = 0;
    for p in pieces {
        let at = (p.at - base) as usize;
        if at < pos {
            out.fill(0);
            return;
        }
        out[pos..at].fill(0);
        pos = at + p.len;
    }
    out[pos..].fill(0);
}

/// The most one read of neighbouring frames covers.
const SPAN_MAX: u64 = 8 << 20;
/// The largest read buffer a thread keeps for its next read.
const SPAN_BUF_KEEP: usize = 4 << 20;

thread_local! {
    static SPAN_BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Times a read that failed is tried again on a file's newer version (see [`Engine::read_into`]).
const READ_RETRIES: usize = 8;
/// The largest gap between frames that one read still spans (reading it costs less than
/// another read).
const SPAN_GAP: u64 = 64 << 10;

/// A byte-budgeted FIFO cache.
#[derive(Debug)]
struct Cache<V> {
    map: crate::index::ObjectMap<(V, usize)>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
    budget: usize,
}

impl<V: Clone> Cache<V> {
    fn new(budget: usize) -> Self {
        Cache { map: Default::default(), order: VecDeque::new(), bytes: 0, budget }
    }
    fn get(&self, k: &[u8; 32]) -> Option<V> {
        self.map.get(k).map(|(v, _)| v.clone())
    }
    fn insert(&mut self, k: [u8; 32], v: V, size: usize) {
        if size > self.budget || self.map.contains_key(&k) {
            return;
        }
        while self.bytes + size > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, s)) = self.map.remove(&old) {
                self.bytes -= s;
            }
        }
        self.map.insert(k, (v, size));
        self.order.push_back(k);
        self.bytes += size;
    }
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    options: Options,
    tx: Sender<Request>,
    slot: Arc<WriterSlot>,
    writer: Mutex<Option<JoinHandle<()>>>,
    chunks: Mutex<Cache<Arc<Vec<u8>>>>,
    nodes: Mutex<Cache<Arc<Node>>>,
    report: OpenReport,
    compacting: Mutex<()>,
    /// Buffers being chunked behind sequential writers, all files together.
    chunking: AtomicUsize,
    _lock: LockGuard,
}

impl Inner {
    /// Queues a request for the writer's thread.
    fn send(&self, req: Request) -> Result<()> {
        self.slot.send(&self.tx, req)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let (rtx, rrx) = channel::bounded(1);
            if self.send(Request::Shutdown(rtx, true)).is_ok() {
                let _ = rrx.recv();
            }
            let _ = h.join();
        }
    }
}

/// A handle to an open store.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// Rebuilds the index without opening the store for writing (inspection, fsck, tests):
/// changes nothing on disk. With `full_replay`, checkpoints are ignored.
pub fn inspect(storage: &dyn Storage, full_replay: bool) -> Result<(Index, OpenReport)> {
    let meta = read_meta(storage)?.ok_or_else(|| Error::NotAStore { path: storage.describe() })?;
    let mode = if full_replay { RecoverMode::FullReplay } else { RecoverMode::ReadOnly };
    let r = store::recover(storage, &meta, &Segments::default(), mode)?;
    Ok((r.index, r.report))
}

impl Engine {
    /// Opens the store in `storage`, creating it when the directory is empty and
    /// `options.create` is set. Refuses a directory that is not a store, a store of another
    /// format version, and a store that is already open.
    pub fn open(storage: Arc<dyn Storage>, options: Options) -> Result<Engine> {
        // Check before locking, so that refusing a foreign directory leaves no LOCK file in it;
        // then again under the lock, which a creation needs.
        if read_meta(storage.as_ref())?.is_none() && !options.create {
            return Err(Error::NotAStore { path: storage.describe() });
        }
        let lock = storage.try_lock().map_err(io("lock", "LOCK"))?.ok_or(Error::Locked)?;
        let header = match meta::read_header(storage.as_ref())? {
            Some(h) => h,
            None if options.create => {
                options.chunking.validate().map_err(|e| e.at("options", 0))?;
                let meta = StoreMeta::new(options.chunking, options.segment_size);
                meta::write_header(storage.as_ref(), &meta)?;
                meta::Header { meta, primary: None, backup: Backup::Agrees }
            }
            None => {
                return Err(Error::NotAStore { path: storage.describe() });
            }
        };
        let meta = header.meta;
        // A store from before the backup was kept, or a creation that crashed between the two
        // files, gets its backup now. A damaged copy is only reported: fsck --repair mends it.
        if header.backup == Backup::Missing {
            meta::write_copy(storage.as_ref(), STORE_BACKUP, &meta)?;
        }
        let segments = Segments::default();
        let mut rec = store::recover(storage.as_ref(), &meta, &segments, RecoverMode::ReadWrite)?;
        rec.report.header_problems = header.problems();
        let shared = Arc::new(Shared {
            storage,
            meta,
            index: RwLock::new(rec.index),
            segments,
            poison: Mutex::new(None),
            pins: Mutex::new(Default::default()),
        });
        let config = WriterConfig {
            checkpoint_bytes: options.checkpoint_bytes,
            max_batch: 256,
            reserve_bytes: options.reserve_bytes,
            block_write_bytes: options.block_write_bytes,
        };
        let slot = Arc::new(WriterSlot::new(Writer::new(shared.clone(), config, rec.tail, rec.next_checkpoint)?));
        let (tx, rx) = channel::bounded(16);
        let handle = {
            let slot = slot.clone();
            spawn(move || slot.run(rx))
        };
        let engine = Engine {
            inner: Arc::new(Inner {
                shared,
                options,
                tx,
                slot,
                writer: Mutex::new(Some(handle)),
                chunks: Mutex::new(Cache::new(options.chunk_cache_bytes)),
                nodes: Mutex::new(Cache::new(8 << 20)),
                report: rec.report,
                compacting: Mutex::new(()),
                chunking: AtomicUsize::new(0),
                _lock: lock,
            }),
        };
        engine.finish_open()?;
        engine.ensure_reserve()?;
        Ok(engine)
    }

    pub(crate) fn make_room(&self) -> Result<bool> {
        make_room(self.inner.shared.storage.as_ref())
    }

    /// Makes sure the reserve file holds its share (see [`ensure_reserve`]).
    pub fn ensure_reserve(&self) -> Result<bool> {
        ensure_reserve(self.inner.shared.storage.as_ref(), self.inner.options.reserve_bytes, None)
    }

    /// Creates the root of a new store and frees orphans left by a crash (inodes unlinked
    /// while open).
    fn finish_open(&self) -> Result<()> {
        let orphans = self.orphans();
        let has_root = self.inner.shared.index.read().ns.inode(InodeId::ROOT).is_some();
        if !has_root {
            self.submit(Op::InitRoot { mode: 0o755, uid: 0, gid: 0 }, true)?;
        }
        for ino in orphans {
            self.submit(Op::Free { ino }, false)?;
        }
        Ok(())
    }

    /// Files unlinked while open (no name left; freed when the last handle closes). Their
    /// content is live until then: gc cannot reclaim it.
    pub fn orphans(&self) -> Vec<InodeId> {
        let ix = self.inner.shared.index.read();
        ix.ns.inodes.values().filter(|i| i.nlink == 0 && i.kind != FileKind::Directory).map(|i| i.ino).collect()
    }

    /// What recovery found when this engine opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The store's fixed parameters.
    pub fn meta(&self) -> StoreMeta {
        self.inner.shared.meta
    }

    /// The options this engine was opened with.
    pub fn options(&self) -> Options {
        self.inner.options
    }

    /// Runs one operation through the writer; with `durable`, returns only after it is on
    /// stable storage.
    pub fn submit(&self, op: Op, durable: bool) -> Result<Outcome> {
        self.request(Vec::new(), Some(op), durable)
    }

    pub(crate) fn request(&self, objects: Vec<EncodedObject>, op: Option<Op>, durable: bool) -> Result<Outcome> {
        if let Some(e) = self.inner.shared.poisoned() {
            return Err(e);
        }
        let (rtx, rrx) = channel::bounded(1);
        let req = Request::Apply { objects, op, durable, reply: Some(rtx) };
        if let Some(req) = self.inner.slot.try_inline(req) {
            self.inner.send(req)?;
        }
        rrx.recv().map_err(|_| Error::Closed)?
    }

    /// Hands objects to the writer without waiting for them to be appended; the returned
    /// receiver gets the result. The bounded channel applies back-pressure.
    pub(crate) fn send_objects(&self, objects: Vec<EncodedObject>) -> Result<channel::Receiver<Result<Outcome>>> {
        if let Some(e) = self.inner.shared.poisoned() {
            return Err(e);
        }
        let (rtx, rrx) = channel::bounded(1);
        self.inner.send(Request::Apply { objects, op: None, durable: false, reply: Some(rtx) })?;
        Ok(rrx)
    }

    /// True when the object (chunk or node) is stored.
    pub fn has_object(&self, id: &[u8; 32]) -> bool {
        self.inner.shared.index.read().objects.contains_key(id)
    }

    /// The count of buffers being chunked behind sequential writers, all files together.
    pub(crate) fn chunking_jobs(&self) -> &AtomicUsize {
        &self.inner.chunking
    }

    /// Pins `id` against compaction (until [`Engine::unpin`]) and tells whether it is stored:
    /// an open file that reuses a stored object keeps it alive until its commit references it.
    pub(crate) fn pin(&self, id: &[u8; 32]) -> bool {
        let mut pins = self.inner.shared.pins.lock();
        let present = self.inner.shared.index.read().objects.contains_key(id);
        *pins.entry(*id).or_default() += 1;
        present
    }

    /// Releases pins taken with [`Engine::pin`].
    pub(crate) fn unpin(&self, ids: &[[u8; 32]]) {
        let mut pins = self.inner.shared.pins.lock();
        for id in ids {
            if let Some(n) = pins.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(id);
                }
            }
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.inner.shared
    }

    /// Sends a request built around a reply channel to the writer and waits for the reply.
    pub(crate) fn writer_call(&self, f: impl FnOnce(crate::writer::Reply) -> Request) -> Result<Outcome> {
        let (tx, rx) = channel::bounded(1);
        self.inner.send(f(tx))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Held while a compaction runs (one at a time).
    pub(crate) fn compaction_lock(&self) -> crate::sync::MutexGuard<'_, ()> {
        self.inner.compacting.lock()
    }

    /// Bytes of all segment files.
    pub fn segment_bytes(&self) -> Result<u64> {
        let mut n = 0;
        for (seg, f) in self.inner.shared.segments.all() {
            n += f.len().map_err(io("len", &seg.file_name()))?;
        }
        Ok(n)
    }

    /// Makes everything acknowledged so far durable.
    pub fn sync(&self) -> Result<()> {
        self.submit(Op::Barrier, true).map(|_| ())
    }

    /// Writes a checkpoint now.
    pub fn checkpoint(&self) -> Result<()> {
        let (rtx, rrx) = channel::bounded(1);
        self.inner.send(Request::Checkpoint(rtx))?;
        rrx.recv().map_err(|_| Error::Closed)?.map(|_| ())
    }

    /// Syncs, writes a checkpoint and stops the writer. Other clones then get `Closed`.
    pub fn close(self) -> Result<()> {
        self.stop(true)
    }

    /// Syncs and stops the writer without writing a checkpoint: a store that was only read
    /// keeps its bytes (the next open replays the log tail).
    pub fn close_without_checkpoint(self) -> Result<()> {
        self.stop(false)
    }

    fn stop(self, checkpoint: bool) -> Result<()> {
        let handle = self.inner.writer.lock().take();
        let Some(h) = handle else { return Ok(()) };
        let (rtx, rrx) = channel::bounded(1);
        self.inner.send(Request::Shutdown(rtx, checkpoint))?;
        let res = rrx.recv().map_err(|_| Error::Closed)?;
        let _ = h.join();
        res.map(|_| ())
    }

    /// The engine's poison error, if an append or sync failed.
    pub fn poisoned(&self) -> Option<Error> {
        self.inner.shared.poisoned()
    }

    // ---- reads -------------------------------------------------------------------------

    /// The current namespace (an O(1) structurally shared copy).
    pub fn namespace(&self) -> Namespace {
        self.inner.shared.index.read().ns.clone()
    }

    /// Calls `f` with every complete transaction of the log, oldest first, until it breaks.
    /// Reads the segment files as they are now: a transaction being appended meanwhile is
    /// either complete and seen, or not seen.
    pub fn scan_log(&self, f: &mut dyn FnMut(&store::Txn) -> Result<std::ops::ControlFlow<()>>) -> Result<()> {
        // The files as they are now: a compaction meanwhile does not pull them away.
        let files = self.inner.shared.segments.all();
        for (k, (seg, file)) in files.iter().enumerate() {
            let (seg, name) = (*seg, seg.file_name());
            let data = crate::storage::read_whole(file.as_ref(), &name)?;
            let from = crate::frame::SEGMENT_HEADER_LEN.min(data.len());
            if store::scan_segment(&data, seg, from, k + 1 == files.len(), f)?.1 {
                break;
            }
        }
        Ok(())
    }

    /// Runs `f` with the index read-locked (for inspection and tests).
    pub fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&self.inner.shared.index.read())
    }

    /// An inode's attributes.
    pub fn getattr(&self, ino: InodeId) -> Result<Arc<Inode>> {
        self.inner.shared.index.read().ns.inode(ino).cloned().ok_or_else(|| Error::NotFound(format!("inode {ino}")))
    }

    /// The inode named `name` in `parent`.
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<Arc<Inode>> {
        let ix = self.inner.shared.index.read();
        let p = ix.ns.inode(parent).ok_or_else(|| Error::NotFound(format!("inode {parent}")))?;
        if p.kind != FileKind::Directory {
            return Err(Error::NotDir(parent));
        }
        let d =
            ix.ns.lookup(parent, name).ok_or_else(|| Error::NotFound(String::from_utf8_lossy(name).into_owned()))?;
        ix.ns.inode(d.child).cloned().ok_or_else(|| Error::NotFound(format!("inode {}", d.child)))
    }

    /// A directory's entries, sorted by name (an O(1) copy).
    pub fn entries(&self, dir: InodeId) -> Result<imbl::OrdMap<Vec<u8>, Dirent>> {
        let ix = self.inner.shared.index.read();
        let d = ix.ns.inode(dir).ok_or_else(|| Error::NotFound(format!("inode {dir}")))?;
        if d.kind != FileKind::Directory {
            return Err(Error::NotDir(dir));
        }
        Ok(ix.ns.dirs.get(&dir).cloned().unwrap_or_default())
    }

    /// Reads `len` bytes at `offset` of a file's current content (short at end of file).
    pub fn read(&self, ino: InodeId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(ino, offset, len, &mut out)?;
        Ok(out)
    }

    /// [`Engine::read`] into `out` (replacing what it held; its capacity is reused).
    ///
    /// A read that fails while the file got a new version is read again from the new one: the
    /// version it started from may have been pruned and its objects collected by a compaction
    /// meanwhile (a reader holds no lock between the file's tree and its chunks), and the
    /// newest content is what a read racing a save may return anyway.
    pub fn read_into(&self, ino: InodeId, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        let mut i = self.getattr(ino)?;
        if i.kind != FileKind::Regular {
            return Err(Error::IsDir(ino));
        }
        let mut retries = 0;
        loop {
            let Err(e) = self.read_content_into(i.content, i.size, offset, len, out) else { return Ok(()) };
            let now = self.getattr(ino)?;
            if now.content == i.content || retries == READ_RETRIES {
                return Err(e);
            }
            (i, retries) = (now, retries + 1);
        }
    }

    /// Reads from a content tree of a file of `size` bytes: any version's content.
    pub fn read_content(&self, root: Option<NodeId>, size: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_content_into(root, size, offset, len, &mut out)?;
        Ok(out)
    }

    /// [`Engine::read_content`] into `out` (replacing what it held; its capacity is reused).
    pub fn read_content_into(
        &self,
        root: Option<NodeId>,
        size: u64,
        offset: u64,
        len: usize,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let end = size.min(offset.saturating_add(len as u64));
        if offset >= end {
            out.clear();
            return Ok(());
        }
        // The old bytes stay where chunks overwrite them (zeroing a megabyte per read was
        // ~3% of a cold read's time); holes are zeroed.
        out.truncate((end - offset) as usize);
        out.resize((end - offset) as usize, 0);
        let mut pieces = Vec::new();
        if let Some(root) = root {
            self.pieces(root, 0, offset, end, &mut pieces, 0)?;
        }
        zero_holes(&pieces, offset, out);
        self.copy_chunks(&pieces, offset, out)
    }

    /// Lists the chunk ranges of the subtree `id` (which starts at file offset `base`) that
    /// fall in `offset .. end`.
    fn pieces(&self, id: NodeId, base: u64, offset: u64, end: u64, out: &mut Vec<Piece>, depth: u8) -> Result<()> {
        if depth > tree::MAX_LEVEL {
            return Err(self.tree_corrupt(id, "tree deeper than the limit"));
        }
        let node = self.node(id)?;
        let mut pos = base;
        match node.as_ref() {
            Node::Leaf(extents) => {
                for e in extents {
                    let e_end = pos.saturating_add(e.len);
                    let (s, t) = (pos.max(offset), e_end.min(end));
                    if s < t
                        && let ExtentKind::Chunk { id: chunk, offset: coff } = e.kind
                    {
                        let from = u32::try_from(coff as u64 + (s - pos))
                            .map_err(|_| self.tree_corrupt(id, "extent beyond its chunk"))?;
                        out.push(Piece { chunk, from, len: (t - s) as usize, at: s });
                    }
                    pos = e_end;
                    if pos >= end {
                        break;
                    }
                }
            }
            Node::Inner { children, .. } => {
                for c in children {
                    let c_end = pos.saturating_add(c.len);
                    if pos.max(offset) < c_end.min(end) {
                        self.pieces(c.id, pos, offset, end, out, depth + 1)?;
                    }
                    pos = c_end;
                    if pos >= end {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Copies each piece's bytes of its chunk into `out` (which starts at file offset
    /// `base`). Chunks not in the cache are read with one read per run of neighbouring frames
    /// in a segment (a sequential read of a file written sequentially is one read), each
    /// frame verified as [`Engine::chunk`] does; a run that fails to read or verify (say,
    /// compaction moved it meanwhile) goes through [`Engine::chunk`] one by one, which retries
    /// moved objects and reports damage.
    fn copy_chunks(&self, pieces: &[Piece], base: u64, out: &mut [u8]) -> Result<()> {
        let copy = |p: &Piece, data: &[u8], out: &mut [u8]| -> Result<()> {
            let src = data
                .get(p.from as usize..p.from as usize + p.len)
                .ok_or_else(|| Error::Invalid(format!("extent beyond chunk {}", p.chunk)))?;
            let at = (p.at - base) as usize;
            out[at..at + p.len].copy_from_slice(src);
            Ok(())
        };
        let mut missing = Vec::new();
        {
            let cache = self.inner.chunks.lock();
            for p in pieces {
                match cache.get(&p.chunk.0) {
                    Some(c) => copy(p, &c, out)?,
                    None => missing.push(p),
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        let mut slow = Vec::new();
        let mut located = Vec::with_capacity(missing.len());
        {
            let ix = self.inner.shared.index.read();
            for p in missing {
                match ix.objects.get(&p.chunk.0) {
                    Some(e) if !e.is_node && store::check_frame_len(e.loc).is_ok() => located.push((e.loc, p)),
                    _ => slow.push(p),
                }
            }
        }
        located.sort_by_key(|(l, _)| (l.segment, l.offset));
        // The thread's read buffer: fresh megabytes for every read cost a page fault and a
        // zeroed page per 4 KiB.
        let mut buf = SPAN_BUF.take();
        let mut rest = &located[..];
        while let Some(((first, _), _)) = rest.split_first() {
            // A run: frames of one segment, each starting at most SPAN_GAP after the run's
            // reach, the whole at most SPAN_MAX.
            let (start, mut stop, mut n) = (first.offset, first.offset + first.len as u64, 1);
            while let Some((l, _)) = rest.get(n)
                && l.segment == first.segment
                && l.offset <= stop + SPAN_GAP
                && (l.offset + l.len as u64).max(stop) - start <= SPAN_MAX
            {
                stop = stop.max(l.offset + l.len as u64);
                n += 1;
            }
            let (run, tail) = rest.split_at(n);
            rest = tail;
            let len = (stop - start) as usize;
            if self.inner.shared.segments.read_span_into(first.segment, start, len, &mut buf).is_err() {
                slow.extend(run.iter().map(|(_, p)| *p));
                continue;
            }
            let span = &buf[..len];
            let mut last: Option<(Location, std::borrow::Cow<'_, [u8]>)> = None;
            for (loc, p) in run {
                if last.as_ref().is_none_or(|(l, _)| l != loc) {
                    let at = (loc.offset - start) as usize;
                    let raw = store::frame_payload(&span[at..at + loc.len as usize], *loc, false)
                        .ok()
                        .and_then(|payload| chunk::decode_chunk_ref(payload, p.chunk).ok());
                    last = raw.map(|r| (*loc, r));
                }
                match &last {
                    Some((_, raw)) => {
                        copy(p, raw, out)?;
                        // A chunk only partly read now is likely read again for the rest.
                        if p.len < raw.len() {
                            self.inner.chunks.lock().insert(p.chunk.0, Arc::new(raw.to_vec()), raw.len());
                        }
                    }
                    None => slow.push(p),
                }
            }
        }
        if buf.capacity() <= SPAN_BUF_KEEP {
            SPAN_BUF.set(buf);
        }
        for p in slow {
            copy(p, &self.chunk(p.chunk)?, out)?;
        }
        Ok(())
    }

    fn tree_corrupt(&self, id: NodeId, what: &'static str) -> Error {
        let loc = self.inner.shared.index.read().objects.get(&id.0).map(|e| e.loc);
        let (file, off) = loc.map_or((String::from("?"), 0), |l| (l.segment.file_name(), l.offset));
        Error::corrupt(file, off, CorruptKind::Malformed(what))
    }

    /// Calls `f(offset, extent)` for every extent of a content tree, in order.
    pub fn for_each_extent(&self, root: Option<NodeId>, mut f: impl FnMut(u64, tree::Extent)) -> Result<()> {
        fn walk(e: &Engine, id: NodeId, pos: &mut u64, f: &mut dyn FnMut(u64, tree::Extent), depth: u8) -> Result<()> {
            if depth > tree::MAX_LEVEL {
                return Err(e.tree_corrupt(id, "tree deeper than the limit"));
            }
            match e.node(id)?.as_ref() {
                Node::Leaf(ext) => {
                    for x in ext {
                        f(*pos, *x);
                        *pos = pos.saturating_add(x.len);
                    }
                }
                Node::Inner { children, .. } => {
                    for c in children {
                        let start = *pos;
                        walk(e, c.id, pos, f, depth + 1)?;
                        if *pos - start != c.len {
                            return Err(e.tree_corrupt(id, "child length differs from its subtree"));
                        }
                    }
                }
            }
            Ok(())
        }
        let mut pos = 0;
        match root {
            Some(r) => walk(self, r, &mut pos, &mut f, 0),
            None => Ok(()),
        }
    }

    /// The verified frame payload of a stored object, and where it is.
    /// Compaction may move the object meanwhile: a read that fails is retried at the object's
    /// new place.
    fn object_payload(&self, id: &[u8; 32], node: bool) -> Result<(Vec<u8>, Location)> {
        let locate = || match self.inner.shared.index.read().objects.get(id) {
            Some(e) if e.is_node == node => Ok(e.loc),
            _ => {
                let what = if node { "node" } else { "chunk" };
                let kind = CorruptKind::Missing(format!("{what} {}", NodeId(*id)));
                Err(Error::corrupt("index", 0, kind))
            }
        };
        let mut loc = locate()?;
        loop {
            match self.inner.shared.segments.read_frame(loc) {
                Ok(p) => return Ok((p, loc)),
                Err(e) => match locate() {
                    Ok(moved) if moved != loc => loc = moved,
                    _ => return Err(e),
                },
            }
        }
    }

    /// A node, verified (frame checksum and keyed hash) and cached.
    pub(crate) fn node(&self, id: NodeId) -> Result<Arc<Node>> {
        if let Some(n) = self.inner.nodes.lock().get(&id.0) {
            return Ok(n);
        }
        let (payload, loc) = self.object_payload(&id.0, true)?;
        let name = loc.segment.file_name();
        if tree::node_id(&payload) != id {
            return Err(Error::HashMismatch { chunk: id.to_string(), file: name, offset: loc.offset });
        }
        let node = Arc::new(Node::decode(&payload).map_err(|e| e.at(&name, loc.offset))?);
        self.inner.nodes.lock().insert(id.0, node.clone(), payload.len());
        Ok(node)
    }

    /// A chunk's raw bytes, verified (frame checksum, decompression cap, blake3) and cached.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        if let Some(c) = self.inner.chunks.lock().get(&id.0) {
            return Ok(c);
        }
        let (payload, loc) = self.object_payload(&id.0, false)?;
        let name = loc.segment.file_name();
        let raw = chunk::decode_chunk(&payload, id).map_err(|e| match e.0 {
            CorruptKind::Missing(_) => {
                Error::HashMismatch { chunk: id.to_string(), file: name.clone(), offset: loc.offset }
            }
            k => Error::corrupt(&name, loc.offset, k),
        })?;
        let raw = Arc::new(raw);
        self.inner.chunks.lock().insert(id.0, raw.clone(), raw.len());
        Ok(raw)
    }

    /// The newest version of a lineage (without copying the lineage's list).
    pub fn newest_version(&self, lineage: LineageId) -> Option<Arc<Version>> {
        self.inner.shared.index.read().lineages.get(&lineage).and_then(|v| v.last().cloned())
    }

    /// Every version of a lineage, oldest first.
    pub fn versions(&self, lineage: LineageId) -> Vec<Arc<Version>> {
        self.inner.shared.index.read().lineages.get(&lineage).cloned().unwrap_or_default()
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<Arc<SnapshotMeta>> {
        self.inner.shared.index.read().snapshots.values().map(|s| s.meta.clone()).collect()
    }

    /// The tree a snapshot captured.
    pub fn snapshot_namespace(&self, name: &str) -> Result<Namespace> {
        let ix = self.inner.shared.index.read();
        ix.snapshot_by_name(name).map(|s| s.ns.clone()).ok_or_else(|| Error::NotFound(format!("snapshot {name}")))
    }

    /// Space and object counts.
    pub fn stats(&self) -> Result<Stats> {
        let mut s = Stats::default();
        for seg in self.inner.shared.segments.ids() {
            if let Some(f) = self.inner.shared.segments.get(seg) {
                s.segments += 1;
                s.segment_bytes += f.len().map_err(io("len", &seg.file_name()))?;
            }
        }
        let ix = self.inner.shared.index.read();
        s.live_bytes = ix.live.values().sum();
        s.dead_bytes =
            s.segment_bytes.saturating_sub(s.live_bytes + s.segments * crate::frame::SEGMENT_HEADER_LEN as u64);
        for e in ix.objects.values() {
            if e.is_node {
                s.nodes += 1;
            } else {
                s.chunks += 1;
                s.chunk_raw_bytes += e.raw_len as u64;
                s.chunk_stored_bytes += e.loc.len as u64;
                s.unreferenced_chunks += (e.refs == 0) as u64;
            }
        }
        s.inodes = ix.ns.inodes.len() as u64;
        for i in ix.ns.inodes.values() {
            if i.kind == FileKind::Regular {
                s.files += 1;
                s.logical_bytes += i.size;
            }
        }
        s.lineages = ix.lineages.len() as u64;
        s.versions = ix.lineages.values().map(|v| v.len() as u64).sum();
        s.version_bytes = ix.lineages.values().flatten().map(|v| v.size).sum();
        s.snapshots = ix.snapshots.len() as u64;
        Ok(s)
    }

    // ---- mutations ---------------------------------------------------------------------

    fn inode_outcome(o: Outcome) -> Result<Arc<Inode>> {
        match o {
            Outcome::Inode(i) => Ok(i),
            other => Err(Error::Invalid(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Creates a directory.
    pub fn mkdir(&self, parent: InodeId, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Arc<Inode>> {
        Self::inode_outcome(self.submit(Op::Mkdir { parent, name: name.to_vec(), mode, uid, gid }, false)?)
    }

    /// Creates a non-directory inode.
    pub fn create(&self, parent: InodeId, name: &[u8], attrs: NewInode) -> Result<Arc<Inode>> {
        Self::inode_outcome(self.submit(Op::Create { parent, name: name.to_vec(), attrs }, false)?)
    }

    /// Creates an empty regular file with mode `mode` owned by root.
    pub fn create_file(&self, parent: InodeId, name: &[u8], mode: u32) -> Result<Arc<Inode>> {
        let attrs =
            NewInode { kind: FileKind::Regular, mode, uid: 0, gid: 0, rdev: 0, symlink: Vec::new(), lineage: None };
        self.create(parent, name, attrs)
    }

    /// Adds a hard link.
    pub fn link(&self, ino: InodeId, parent: InodeId, name: &[u8]) -> Result<Arc<Inode>> {
        Self::inode_outcome(self.submit(Op::Link { ino, parent, name: name.to_vec() }, false)?)
    }

    /// Removes a non-directory entry.
    pub fn unlink(&self, parent: InodeId, name: &[u8], keep_orphan: bool) -> Result<()> {
        self.submit(Op::Unlink { parent, name: name.to_vec(), keep_orphan }, false).map(|_| ())
    }

    /// Removes an empty directory.
    pub fn rmdir(&self, parent: InodeId, name: &[u8]) -> Result<()> {
        self.submit(Op::Rmdir { parent, name: name.to_vec() }, false).map(|_| ())
    }

    /// Renames (see [`Op::Rename`]); `keep_orphan`: a replaced file is still open.
    #[allow(clippy::too_many_arguments)]
    pub fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        noreplace: bool,
        exchange: bool,
        keep_orphan: bool,
    ) -> Result<()> {
        let op = Op::Rename {
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            noreplace,
            exchange,
            keep_orphan,
        };
        self.submit(op, false).map(|_| ())
    }

    /// Changes attributes.
    pub fn setattr(&self, ino: InodeId, attr: SetAttr) -> Result<Arc<Inode>> {
        Self::inode_outcome(self.submit(Op::SetAttr { ino, attr }, false)?)
    }

    /// Sets an extended attribute.
    pub fn set_xattr(&self, ino: InodeId, name: &[u8], value: &[u8], mode: XattrMode) -> Result<()> {
        self.submit(Op::SetXattr { ino, name: name.to_vec(), value: value.to_vec(), mode }, false).map(|_| ())
    }

    /// Removes an extended attribute.
    pub fn remove_xattr(&self, ino: InodeId, name: &[u8]) -> Result<()> {
        self.submit(Op::RemoveXattr { ino, name: name.to_vec() }, false).map(|_| ())
    }

    /// Takes a snapshot of the whole tree (O(1)); durable when it returns.
    pub fn snapshot_create(&self, name: &str, description: &str) -> Result<Arc<SnapshotMeta>> {
        match self.submit(Op::SnapshotCreate { name: name.into(), description: description.into() }, true)? {
            Outcome::Snapshot(s) => Ok(s),
            other => Err(Error::Invalid(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Deletes a snapshot; durable when it returns.
    pub fn snapshot_delete(&self, name: &str) -> Result<()> {
        self.submit(Op::SnapshotDelete { name: name.into() }, true).map(|_| ())
    }

    /// Opens a regular file's content for writing.
    pub fn open_file(&self, ino: InodeId) -> Result<FileWriter> {
        FileWriter::open(self.clone(), ino)
    }
}
