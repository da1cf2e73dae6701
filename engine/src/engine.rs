//! The engine handle: open/create a store, read through the index, and send mutations to
//! the writer thread. Cheap to clone; the writer stops when the last clone is dropped or
//! [`Engine::close`] is called.

use std::os::unix::ffi::OsStrExt as _;
use std::sync::Arc;

use crate::absorb;
use crate::error::{Error, Missing, Result, io};
use crate::file::FileWriter;
use crate::format::frame::{LOWER_FORMAT_VERSION, SNAPSHOT_EDIT_FORMAT_VERSION};
use crate::format::record::LowerFile;
use crate::format::record::{Action, FileKind, Inode, SnapshotMeta, Timestamp, Version};
use crate::format::tree::{Extent, ExtentKind};
use crate::ids::{ChunkId, Hlc, InodeId, LineageId, NodeId};
use crate::index::ops::{ImportedVersion, NewInode, Op, Outcome, PruneSpec, SetAttr, XattrMode};
use crate::index::{Dirent, Index, Namespace};
use crate::inner::Inner;
use crate::log::meta::{self, Backup, STORE_BACKUP, StoreMeta, read_meta};
use crate::log::recovery::{self, OpenReport, RecoverMode};
use crate::log::store::Segments;
use crate::options::Options;
use crate::state::Shared;
use crate::storage::Storage;
use crate::sync::channel;
use crate::sync::{Mutex, RwLock};
use crate::write::{Request, Writer, WriterConfig};
use crate::{activity, compact, gc, maintenance, overlay};

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
    /// The data bytes of every version, holes excluded: what whole-file versioning would
    /// have stored (sparsely).
    pub version_bytes: u64,
    /// Of `version_bytes`, the bytes that versions read from lower trees (overlay stores):
    /// never stored.
    pub version_lower_bytes: u64,
    /// The raw size of the chunks something references (`chunk_raw_bytes` less the
    /// unreferenced chunks).
    pub referenced_chunk_raw_bytes: u64,
    /// Snapshots.
    pub snapshots: u64,
}

/// What the root of a store being opened is: a tree (the lower trees shown in it), or a
/// virtual copy of one file (named the first time).
#[derive(Clone, Copy)]
enum Root<'a> {
    Tree,
    File(Option<&'a [u8]>),
}

/// A handle to an open store.
#[derive(Debug, Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

/// What recovery finds in the store in `storage`, without opening it for writing: changes
/// nothing on disk. With `full_replay`, checkpoints are ignored (the whole log is replayed).
pub fn inspect(storage: &dyn Storage, full_replay: bool) -> Result<OpenReport> {
    inspect_index(storage, full_replay).map(|(_, report)| report)
}

/// [`inspect`], with the index it rebuilt (fsck, tests).
pub fn inspect_index(storage: &dyn Storage, full_replay: bool) -> Result<(Index, OpenReport)> {
    let meta = read_meta(storage)?.ok_or_else(|| Error::NotAStore { path: storage.describe() })?;
    let mode = if full_replay { RecoverMode::FullReplay } else { RecoverMode::ReadOnly };
    let r = recovery::recover(storage, &meta, &Segments::default(), mode)?;
    Ok((r.index, r.report))
}

impl Engine {
    /// Opens the store in `storage`, creating it when the directory is empty and
    /// `options.create` is set. Refuses a directory that is not a store, a store of another
    /// format version, and a store that is already open. An overlay store opens with the lower
    /// trees it records (see [`Engine::open_overlay`]).
    pub fn open(storage: Arc<dyn Storage>, options: Options) -> Result<Engine> {
        Self::open_overlay(storage, options, &[], false)
    }

    /// [`Engine::open`] with lower trees: `lower_paths` (absolute, layer 0 on top) are shown
    /// merged below the stored tree. The first open with lower trees makes the store format
    /// version 3, records them (`LOWERS`) and makes the root show them; later opens without
    /// any use the recorded ones, and opens with others are refused unless `relower` says to
    /// record those instead. A recorded lower tree that cannot be opened fails only what needs
    /// it; one given here fails the open.
    pub fn open_overlay(
        storage: Arc<dyn Storage>,
        options: Options,
        lower_paths: &[std::path::PathBuf],
        relower: bool,
    ) -> Result<Engine> {
        Self::open_with(storage, options, lower_paths, relower, Root::Tree)
    }

    /// Opens a virtual copy of one file (`cowfs mount --lower FILE STORE MOUNTFILE`): a store
    /// whose root holds one regular file, made the first time from `lower_file` (absolute;
    /// the store records its directory as its one lower tree, and the root does not show that
    /// tree). Returns the engine and the file. Later opens may omit `lower_file`; given, it
    /// must be the file the store copies. Refused: a store holding anything but one regular
    /// file, an empty store without `lower_file`, a `lower_file` that is not a regular file.
    pub fn open_virtual_copy(
        storage: Arc<dyn Storage>,
        options: Options,
        lower_file: Option<&std::path::Path>,
    ) -> Result<(Engine, InodeId)> {
        let split = lower_file.map(|f| match (f.parent(), f.file_name()) {
            (Some(dir), Some(name)) if f.is_absolute() => Ok((dir.to_path_buf(), name.as_bytes().to_vec())),
            _ => Err(Error::Invalid(format!("lower file {} (an absolute path to a file)", f.display()))),
        });
        if lower_file.is_none() && read_meta(storage.as_ref())?.is_none() {
            return Err(Error::Invalid("the store is new: name the file it is to copy (--lower FILE)".into()));
        }
        let (dirs, name) = match split.transpose()? {
            Some((dir, name)) => (vec![dir], Some(name)),
            None => (Vec::new(), None),
        };
        let e = Self::open_with(storage, options, &dirs, false, Root::File(name.as_deref()))?;
        let ino = overlay::virtual_copy(&e.inner, name.as_deref())?;
        Ok((e, ino))
    }

    /// [`Engine::open_overlay`], or [`Engine::open_virtual_copy`] as `root` says.
    fn open_with(
        storage: Arc<dyn Storage>,
        options: Options,
        lower_paths: &[std::path::PathBuf],
        relower: bool,
        root: Root,
    ) -> Result<Engine> {
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
        let mut meta = header.meta;
        // A store from before the backup was kept, a creation that crashed between the two
        // files, or a first open with lower trees that crashed between them (the backup still
        // says version 2), gets its backup now. A damaged copy is only reported: fsck --repair
        // mends it.
        if matches!(header.backup, Backup::Missing | Backup::Older) {
            meta::write_copy(storage.as_ref(), STORE_BACKUP, &meta)?;
        }
        let (lowers, recorded) = overlay::lowers_to_open(storage.as_ref(), lower_paths, relower)?;
        let segments = Segments::default();
        let mut rec = recovery::recover(storage.as_ref(), &meta, &segments, RecoverMode::ReadWrite)?;
        if let Root::File(name) = root {
            overlay::virtual_copy_file(&rec.index, name)?;
        }
        // The first open with lower trees makes the store version 3, before anything of that
        // version is written (both copies; a crash between them leaves STORE at 3 and the
        // backup at 2, which the next open writes again: `Backup::Older` above).
        if !lower_paths.is_empty() && (meta.version < LOWER_FORMAT_VERSION || header.backup != Backup::Agrees) {
            meta.version = meta.version.max(LOWER_FORMAT_VERSION);
            meta::write_header(storage.as_ref(), &meta)?;
        }
        rec.report.header_problems = header.problems();
        let shared = Arc::new(Shared {
            storage,
            meta,
            index: RwLock::new(rec.index),
            segments,
            poison: Mutex::new(None),
            pins: Mutex::new(Default::default()),
            lowers,
        });
        let config = WriterConfig {
            checkpoint_bytes: options.checkpoint_bytes,
            max_batch: 256,
            reserve_bytes: options.reserve_bytes,
            block_write_bytes: options.block_write_bytes,
        };
        let writer = Writer::new(shared, config, rec.tail, rec.next_checkpoint)?;
        let engine = Engine { inner: Arc::new(Inner::start(writer, options, rec.report, lock)) };
        engine.finish_open()?;
        overlay::record_lowers(&engine.inner, lower_paths, &recorded, matches!(root, Root::Tree))?;
        engine.ensure_reserve()?;
        Ok(engine)
    }

    /// The shared part (for the unit tests of the modules below the handle).
    #[cfg(test)]
    pub(crate) fn inner(&self) -> &Arc<Inner> {
        &self.inner
    }

    /// Makes sure the reserve file holds its share (see [`crate::log::reserve::ensure_reserve`]).
    pub fn ensure_reserve(&self) -> Result<bool> {
        self.inner.ensure_reserve()
    }

    /// Creates the root of a new store and frees orphans left by a crash (files and
    /// directories removed while open).
    fn finish_open(&self) -> Result<()> {
        let (orphans, has_root) = {
            let ix = self.inner.shared.index.read();
            // Files and directories alike.
            let orphans: Vec<InodeId> = ix.ns().inodes.values().filter(|i| i.nlink == 0).map(|i| i.ino).collect();
            (orphans, ix.ns().inode(InodeId::ROOT).is_some())
        };
        if !has_root {
            self.inner.submit(Op::InitRoot { mode: 0o755, uid: 0, gid: 0 }, true)?;
        }
        for ino in orphans {
            self.inner.submit(Op::Free { ino }, false)?;
        }
        Ok(())
    }

    /// Files unlinked while open (no name left; freed when the last handle closes). Their
    /// content is live until then: gc cannot reclaim it.
    pub fn orphans(&self) -> Vec<InodeId> {
        let ix = self.inner.shared.index.read();
        ix.ns().inodes.values().filter(|i| i.nlink == 0 && i.kind != FileKind::Directory).map(|i| i.ino).collect()
    }

    /// What recovery found when this engine opened.
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The store's parameters as it was opened: a format version raised since (by the first
    /// absorb, or the first file taken out of a snapshot) shows from the next open, and in
    /// `STORE` at once.
    pub fn meta(&self) -> StoreMeta {
        self.inner.shared.meta
    }

    /// The options this engine was opened with.
    pub fn options(&self) -> Options {
        self.inner.options
    }

    /// True when the object (chunk or node) is stored.
    pub fn has_object(&self, id: &[u8; 32]) -> bool {
        self.inner.has_object(id)
    }

    /// Bytes of all segment files.
    pub fn segment_bytes(&self) -> Result<u64> {
        self.inner.segment_bytes()
    }

    /// Makes everything acknowledged so far durable.
    pub fn sync(&self) -> Result<()> {
        self.inner.submit(Op::Barrier, true).map(|_| ())
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
        self.inner.stop_background();
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
        self.inner.shared.index.read().ns().clone()
    }

    /// An inode's attributes.
    pub fn getattr(&self, ino: InodeId) -> Result<Arc<Inode>> {
        self.inner.shared.inode(ino)
    }

    /// The inode named `name` in `parent`.
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<Arc<Inode>> {
        let ix = self.inner.shared.index.read();
        let p = ix.ns().inode(parent).ok_or(Error::NotFound(Missing::Inode(parent)))?;
        if p.kind != FileKind::Directory {
            return Err(Error::NotDir(parent));
        }
        if p.unlisted().is_some() {
            drop(ix);
            self.listed(parent)?;
            return self.lookup(parent, name);
        }
        let d = ix.ns().lookup(parent, name).ok_or_else(|| Error::NotFound(Missing::entry(parent, name)))?;
        ix.ns().inode(d.child).cloned().ok_or(Error::NotFound(Missing::Inode(d.child)))
    }

    /// The directory holding directory `dir` (`None`: the root, or not a directory).
    pub fn parent(&self, dir: InodeId) -> Option<InodeId> {
        self.inner.shared.index.read().ns().parent.get(&dir).copied()
    }

    /// The lineage of the file deleted at `name` in `parent`, if one was (its history stays).
    pub fn grave(&self, parent: InodeId, name: &[u8]) -> Option<LineageId> {
        self.inner.shared.index.read().ns().graves.get(&(parent, name.to_vec())).copied()
    }

    /// A directory's entries, sorted by name (an O(1) copy).
    pub fn entries(&self, dir: InodeId) -> Result<imbl::OrdMap<Vec<u8>, Dirent>> {
        let ix = self.inner.shared.index.read();
        let d = ix.ns().inode(dir).ok_or(Error::NotFound(Missing::Inode(dir)))?;
        if d.kind != FileKind::Directory {
            return Err(Error::NotDir(dir));
        }
        if d.unlisted().is_some() {
            drop(ix);
            self.listed(dir)?;
            return self.entries(dir);
        }
        Ok(ix.ns().dirs.get(&dir).cloned().unwrap_or_default())
    }

    /// Reads `len` bytes at `offset` of a file's current content (short at end of file).
    pub fn read(&self, ino: InodeId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(ino, offset, len, &mut out)?;
        Ok(out)
    }

    /// [`Engine::read`] into `out` (replacing what it held; its capacity is reused). A read
    /// racing a save may return the new content (see `Reader::read_into`).
    pub fn read_into(&self, ino: InodeId, offset: u64, len: usize, out: &mut Vec<u8>) -> Result<()> {
        self.inner.reader.read_into(ino, offset, len, out)
    }

    /// Reads from a content tree of a file of `size` bytes: any version's content.
    pub fn read_content(&self, root: Option<NodeId>, size: u64, offset: u64, len: usize) -> Result<Vec<u8>> {
        self.inner.reader.read_content(root, size, offset, len)
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
        self.inner.reader.read_content_into(root, size, offset, len, out)
    }

    /// Calls `f(offset, extent)` for every extent of a content tree, in order.
    pub fn for_each_extent(&self, root: Option<NodeId>, f: impl FnMut(u64, Extent)) -> Result<()> {
        self.inner.reader.for_each_extent(root, f)
    }

    /// When every byte of regular file `ino` is its recorded lower file, whole and not
    /// absorbed (a lower file nothing changed yet): that file, opened for reading and checked
    /// against its identity at this open (FUSE passthrough hands it to the kernel, whose
    /// reads then skip the daemon and that check). None otherwise; [`Error::Lower`] when the
    /// lower file is missing, unreadable or changed.
    pub fn whole_lower_file(&self, ino: InodeId) -> Result<Option<(std::fs::File, Arc<LowerFile>)>> {
        let i = self.getattr(ino)?;
        if i.kind != FileKind::Regular || i.size == 0 {
            return Ok(None);
        }
        let (mut extents, mut whole) = (0, None);
        self.for_each_extent(i.content, |at, x| {
            extents += 1;
            if let ExtentKind::Lower { file, offset: 0 } = x.kind
                && at == 0
                && x.len == i.size
            {
                whole = Some(file);
            }
        })?;
        let Some(file) = whole.filter(|_| extents == 1) else { return Ok(None) };
        let f = {
            let ix = self.inner.shared.index.read();
            if ix.absorbed().contains_key(&file) {
                return Ok(None);
            }
            ix.lower_files().get(&file).cloned()
        };
        let Some(f) = f.filter(|f| f.identity.size == i.size) else { return Ok(None) };
        Ok(Some((self.inner.shared.lowers.open_checked(&f)?, f)))
    }

    /// Checks that `file`, opened by [`Engine::whole_lower_file`], is still lower file `f` as
    /// recorded ([`Error::Lower`] naming the change otherwise).
    pub fn lower_file_unchanged(&self, f: &LowerFile, file: &std::fs::File) -> Result<()> {
        self.inner.shared.lowers.still(f, file)
    }

    /// Every node and chunk of content tree `root`, each once (to copy it to another store).
    /// [`Error::Invalid`] for a tree referring to a lower file, whose bytes are not stored.
    pub fn tree_objects(&self, root: NodeId) -> Result<(Vec<NodeId>, Vec<ChunkId>)> {
        crate::transfer::tree_objects(&self.inner, root)
    }

    /// Node `id`'s encoding (what its id hashes), checked.
    pub fn node_bytes(&self, id: NodeId) -> Result<Vec<u8>> {
        crate::transfer::node_bytes(&self.inner, id)
    }

    /// Sets regular file `ino`'s content to tree `root` of `size` bytes received from another
    /// store, storing first the objects of `received` this store lacks — each checked against
    /// its id, and every object of the tree received or stored, else [`Error::Invalid`] and
    /// nothing written. A restore in the activity log (`detail`); not durable by itself.
    pub fn import_content(
        &self,
        ino: InodeId,
        size: u64,
        root: Option<NodeId>,
        received: crate::transfer::Received,
        mtime: Option<Timestamp>,
        detail: &str,
    ) -> Result<Option<Arc<Version>>> {
        let what = crate::transfer::Import::Content { size, root, mtime };
        crate::transfer::import(&self.inner, ino, received, what, detail)
    }

    /// Adds `versions`, made on other devices (their ids, clocks, parents), to regular file
    /// `ino`'s history after its newest — skipping those it holds; parents first — and makes
    /// tree `root` of `size` bytes (usually the last version's) the file's content, with
    /// `mtime`. The objects of the trees are stored first from `received` as in
    /// [`Engine::import_content`]. In the activity log as a write with `detail`; not durable by
    /// itself. Returns the last version added.
    #[allow(clippy::too_many_arguments)]
    pub fn import_versions(
        &self,
        ino: InodeId,
        versions: Vec<ImportedVersion>,
        size: u64,
        root: Option<NodeId>,
        received: crate::transfer::Received,
        mtime: Timestamp,
        detail: &str,
    ) -> Result<Option<Arc<Version>>> {
        let what = crate::transfer::Import::Versions { versions, size, root, mtime };
        crate::transfer::import(&self.inner, ino, received, what, detail)
    }

    /// The newest hybrid-clock value this store has given or seen: every version, snapshot
    /// and import recorded after this call has a later one.
    pub fn clock(&self) -> Hlc {
        Hlc(self.inner.shared.index.read().next_hlc(0).0 - 1)
    }

    /// A chunk's raw bytes, verified (frame checksum, decompression cap, blake3) and cached.
    pub fn chunk(&self, id: ChunkId) -> Result<Arc<Vec<u8>>> {
        self.inner.reader.chunk(id)
    }

    /// The newest version of a lineage (without copying the lineage's list).
    pub fn newest_version(&self, lineage: LineageId) -> Option<Arc<Version>> {
        self.inner.newest_version(lineage)
    }

    /// Every version of a lineage, oldest first.
    pub fn versions(&self, lineage: LineageId) -> Vec<Arc<Version>> {
        self.inner.shared.index.read().lineages().get(&lineage).cloned().unwrap_or_default()
    }

    /// All snapshots, oldest first.
    pub fn snapshots(&self) -> Vec<Arc<SnapshotMeta>> {
        self.inner.shared.index.read().snapshots().values().map(|s| s.meta.clone()).collect()
    }

    /// The tree a snapshot captured.
    pub fn snapshot_namespace(&self, name: &str) -> Result<Namespace> {
        let ix = self.inner.shared.index.read();
        ix.snapshot_by_name(name)
            .map(|s| s.ns.clone())
            .ok_or_else(|| Error::NotFound(Missing::Snapshot(name.to_string())))
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
        s.live_bytes = ix.live().values().sum();
        s.dead_bytes =
            s.segment_bytes.saturating_sub(s.live_bytes + s.segments * crate::format::frame::SEGMENT_HEADER_LEN as u64);
        for e in ix.objects().values() {
            if e.is_node {
                s.nodes += 1;
            } else {
                s.chunks += 1;
                s.chunk_raw_bytes += e.raw_len as u64;
                s.chunk_stored_bytes += e.loc.len as u64;
                s.unreferenced_chunks += (e.refs == 0) as u64;
                s.referenced_chunk_raw_bytes += if e.refs > 0 { e.raw_len as u64 } else { 0 };
            }
        }
        s.inodes = ix.ns().inodes.len() as u64;
        for i in ix.ns().inodes.values() {
            if i.kind == FileKind::Regular {
                s.files += 1;
                s.logical_bytes = s.logical_bytes.saturating_add(i.size);
            }
        }
        s.lineages = ix.lineages().len() as u64;
        s.versions = ix.lineages().values().map(|v| v.len() as u64).sum();
        s.snapshots = ix.snapshots().len() as u64;
        let contents: Vec<Option<NodeId>> = ix.lineages().values().flatten().map(|v| v.content).collect();
        // Walked without the index lock: a node read takes it.
        drop(ix);
        let mut memo = std::collections::HashMap::new();
        for root in contents {
            let (chunks, lower) = self.inner.reader.data_bytes(root, &mut memo)?;
            s.version_bytes = s.version_bytes.saturating_add(chunks).saturating_add(lower);
            s.version_lower_bytes = s.version_lower_bytes.saturating_add(lower);
        }
        Ok(s)
    }

    /// What the retention `rules` prune at `now` and what that reclaims (see
    /// [`crate::gc::plan`]); paths for which `excluded` holds keep every version.
    pub fn gc_plan(&self, rules: &gc::Rules, now: Timestamp, excluded: &dyn Fn(&str) -> bool) -> Result<gc::Plan> {
        gc::plan(&self.inner, rules, now, excluded)
    }

    /// Starts the background maintenance (see [`crate::maintenance`]): every `m.every`, the
    /// retention rules `m.retention` gives, then a compaction of mostly dead segments. Runs
    /// until the engine closes; replaces one started before.
    pub fn start_maintenance(&self, m: maintenance::Maintenance) -> Result<()> {
        maintenance::start(&self.inner, m)
    }

    /// Reclaims the space of what nothing references any more (see [`crate::compact`]);
    /// `progress(done, total)` follows the bytes copied.
    pub fn compact(&self, policy: compact::Policy, progress: &mut dyn FnMut(u64, u64)) -> Result<compact::Report> {
        self.inner.compact(policy, progress)
    }

    /// Every change in the log, oldest first (see [`crate::activity`]).
    pub fn activity(&self) -> Result<Vec<activity::LogEntry>> {
        activity::activity(&self.inner)
    }

    /// The tree as it was at `t`, rebuilt from the log (see [`crate::activity`]).
    pub fn namespace_at(&self, t: Timestamp) -> Result<Namespace> {
        activity::namespace_at(&self.inner, t)
    }

    // ---- mutations ---------------------------------------------------------------------

    /// Makes sure directory `dir` holds its lower entries (overlay stores): at the first
    /// listing of a directory that shows lower directories, their entries become stored ones
    /// (see [`crate::overlay`]), in the current tree and in every snapshot and tree at a moment
    /// that holds it unlisted. Every operation that reads or changes a directory's entries
    /// calls this first; a view of an older tree calls it for a directory it finds unlisted.
    pub fn listed(&self, dir: InodeId) -> Result<()> {
        overlay::list(&self.inner, dir)
    }

    /// What differs from the lower trees below tree path `top` (an overlay store; empty for
    /// another): entries added, modified (with the bytes stored), changed in metadata only,
    /// moved, and deleted, by path. Reads only; lists nothing.
    pub fn overlay_status(&self, top: &str) -> Result<Vec<overlay::Change>> {
        overlay::status(&self.inner, top)
    }

    /// Copies the lower bytes that the entries below tree paths `tops` (none: the whole
    /// store) refer to into the store, listing the directories there first (see
    /// [`crate::absorb`]); a whole absorb that leaves nothing depending on a lower tree makes
    /// the store forget its lower trees. `progress(done, total)` in lower bytes.
    pub fn overlay_absorb(&self, tops: &[String], progress: &mut dyn FnMut(u64, u64)) -> Result<absorb::Report> {
        absorb::absorb(&self.inner, tops, progress)
    }

    /// [`Engine::listed`] for `dir` and, when `name` in it is a directory, for that one too.
    fn listed_target(&self, dir: InodeId, name: &[u8]) -> Result<()> {
        self.listed(dir)?;
        let child = self.inner.shared.index.read().ns().lookup(dir, name);
        match child {
            Some(d) if d.kind == FileKind::Directory => self.listed(d.child),
            _ => Ok(()),
        }
    }

    fn inode_outcome(&self, o: Outcome) -> Result<Arc<Inode>> {
        match o {
            Outcome::Inode(i) => Ok(i),
            other => Err(self.inner.shared.internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Creates a directory.
    pub fn mkdir(&self, parent: InodeId, name: &[u8], mode: u32, uid: u32, gid: u32) -> Result<Arc<Inode>> {
        self.listed(parent)?;
        self.inode_outcome(self.inner.submit(Op::Mkdir { parent, name: name.to_vec(), mode, uid, gid }, false)?)
    }

    /// Creates a non-directory inode.
    pub fn create(&self, parent: InodeId, name: &[u8], attrs: NewInode) -> Result<Arc<Inode>> {
        self.listed(parent)?;
        self.inode_outcome(self.inner.submit(Op::Create { parent, name: name.to_vec(), attrs }, false)?)
    }

    /// Creates an empty regular file with mode `mode` owned by root.
    pub fn create_file(&self, parent: InodeId, name: &[u8], mode: u32) -> Result<Arc<Inode>> {
        let attrs =
            NewInode { kind: FileKind::Regular, mode, uid: 0, gid: 0, rdev: 0, symlink: Vec::new(), lineage: None };
        self.create(parent, name, attrs)
    }

    /// Adds a hard link.
    pub fn link(&self, ino: InodeId, parent: InodeId, name: &[u8]) -> Result<Arc<Inode>> {
        self.listed(parent)?;
        self.inode_outcome(self.inner.submit(Op::Link { ino, parent, name: name.to_vec() }, false)?)
    }

    /// Removes a non-directory entry.
    pub fn unlink(&self, parent: InodeId, name: &[u8], keep_orphan: bool) -> Result<()> {
        self.listed(parent)?;
        self.inner.submit(Op::Unlink { parent, name: name.to_vec(), keep_orphan }, false).map(|_| ())
    }

    /// Removes an empty directory; `keep_orphan`: it is still open, and stays (no link, no
    /// entries, nothing created in it) until [`Engine::free`] at its last close.
    pub fn rmdir(&self, parent: InodeId, name: &[u8], keep_orphan: bool) -> Result<()> {
        // Empty only once its lower entries are known.
        self.listed_target(parent, name)?;
        self.inner.submit(Op::Rmdir { parent, name: name.to_vec(), keep_orphan }, false).map(|_| ())
    }

    /// Renames (`noreplace`: RENAME_NOREPLACE, `exchange`: RENAME_EXCHANGE); `keep_orphan`: the
    /// file or empty directory it replaces is still open (kept until [`Engine::free`]).
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
        self.listed(parent)?;
        // A directory it replaces must be empty, which its lower entries may contradict.
        self.listed_target(new_parent, new_name)?;
        let op = Op::Rename {
            parent,
            name: name.to_vec(),
            new_parent,
            new_name: new_name.to_vec(),
            noreplace,
            exchange,
            keep_orphan,
        };
        self.inner.submit(op, false).map(|_| ())
    }

    /// Changes attributes.
    pub fn setattr(&self, ino: InodeId, attr: SetAttr) -> Result<Arc<Inode>> {
        self.inode_outcome(self.inner.submit(Op::SetAttr { ino, attr }, false)?)
    }

    /// Records that `ino` was read at `time` (its access time; see `Op::Atime`). Not durable
    /// by itself: it reaches the disk with the next durable operation.
    pub fn set_atime(&self, ino: InodeId, time: Timestamp) -> Result<()> {
        self.inner.submit(Op::Atime { ino, time }, false).map(|_| ())
    }

    /// Sets an extended attribute.
    pub fn set_xattr(&self, ino: InodeId, name: &[u8], value: &[u8], mode: XattrMode) -> Result<()> {
        self.inner.submit(Op::SetXattr { ino, name: name.to_vec(), value: value.to_vec(), mode }, false).map(|_| ())
    }

    /// Removes an extended attribute.
    pub fn remove_xattr(&self, ino: InodeId, name: &[u8]) -> Result<()> {
        self.inner.submit(Op::RemoveXattr { ino, name: name.to_vec() }, false).map(|_| ())
    }

    /// Takes a snapshot of the whole tree (O(1)); durable when it returns.
    pub fn snapshot_create(&self, name: &str, description: &str) -> Result<Arc<SnapshotMeta>> {
        match self.inner.submit(Op::SnapshotCreate { name: name.into(), description: description.into() }, true)? {
            Outcome::Snapshot(s) => Ok(s),
            other => Err(self.inner.shared.internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Records lower file `path` of lower tree `layer` (overlay stores) with its identity as
    /// it is now, and returns the extent that stands for its whole content: splice it into a
    /// [`FileWriter`] and the file's bytes are read from the lower file, never copied. Not
    /// durable by itself (the commit that uses it is). `Invalid` for an empty or absolute
    /// path; [`Error::Lower`] for a store without that lower tree, or when the file cannot be
    /// opened below the tree's root (missing, a directory, a symlink on the way, `..`).
    pub fn record_lower_file(&self, layer: u32, path: &std::path::Path) -> Result<(Arc<LowerFile>, Option<Extent>)> {
        overlay::record_file(&self.inner, layer, path)
    }

    /// Deletes a snapshot; durable when it returns.
    pub fn snapshot_delete(&self, name: &str) -> Result<()> {
        self.inner.submit(Op::SnapshotDelete { name: name.into() }, true).map(|_| ())
    }

    /// Frees an inode that has no name left (unlinked while open) once its last handle is
    /// closed: its content becomes garbage unless a version holds it.
    pub fn free(&self, ino: InodeId) -> Result<()> {
        self.inner.submit(Op::Free { ino }, false).map(|_| ())
    }

    /// Gives regular file `ino` the content `content` of `size` bytes (an old version's, or a
    /// snapshot's file's) and the modification time `mtime` (`None`: now), as a new version
    /// logged as a restore with `detail`. `None` when the content was already that.
    pub fn restore_content(
        &self,
        ino: InodeId,
        size: u64,
        content: Option<NodeId>,
        mtime: Option<Timestamp>,
        detail: &str,
        durable: bool,
    ) -> Result<Option<Arc<Version>>> {
        let op = Op::CommitContent { ino, size, content, mtime };
        let op = Op::Tagged { action: Action::Restore, detail: detail.to_string(), op: Box::new(op) };
        match self.inner.submit(op, durable)? {
            Outcome::Version(v) => Ok(v),
            other => Err(self.inner.shared.internal(format!("unexpected outcome {other:?}"))),
        }
    }

    /// Logs `action` on `ino` with `detail` in the activity log (the summary of a command made
    /// of many operations, such as a tree restore); durable when it returns.
    pub fn note(&self, action: Action, ino: InodeId, detail: &str) -> Result<()> {
        self.inner.submit(Op::Note { action, ino, detail: detail.to_string() }, true).map(|_| ())
    }

    /// Removes the versions a retention plan prunes ([`Engine::gc_plan`]); durable when it
    /// returns. The space comes back at the next compaction.
    pub fn prune(&self, prunes: Vec<PruneSpec>) -> Result<()> {
        self.inner.submit(Op::Prune { prunes }, true).map(|_| ())
    }

    /// What `cowfs forget` of the files of `lineages` prunes: every version but current
    /// contents and, unless `include_snapshots`, what snapshots hold (see [`gc::plan`]; the
    /// plan's decisions and prunes are those of `lineages` only).
    pub fn forget_plan(
        &self,
        lineages: &std::collections::HashSet<LineageId>,
        include_snapshots: bool,
    ) -> Result<gc::Plan> {
        gc::forget_plan(&self.inner, lineages, include_snapshots)
    }

    /// The names of the snapshots holding a regular file of one of `lineages`, sorted.
    pub fn snapshots_holding(&self, lineages: &[LineageId]) -> Vec<String> {
        let ix = self.inner.shared.index.read();
        let holds = ix.snapshot_holds(lineages);
        let held = ix.snapshots().values().filter(|s| holds.iter().any(|h| h.0 == s.meta.id));
        let mut names: Vec<String> = held.map(|s| s.meta.name.clone()).collect();
        names.sort();
        names
    }

    /// Takes every file of `lineages` out of every snapshot holding one, in the activity log
    /// as a gc with `detail`. The first time it changes a snapshot, the store becomes format
    /// version 5 (both header copies) before the record is written. Durable when it returns.
    pub fn snapshot_forget(&self, lineages: Vec<LineageId>, detail: &str) -> Result<()> {
        if self.inner.shared.index.read().snapshot_holds(&lineages).is_empty() {
            return Ok(());
        }
        meta::raise_version(self.inner.shared.storage.as_ref(), SNAPSHOT_EDIT_FORMAT_VERSION)?;
        let op = Op::Tagged {
            action: Action::Gc,
            detail: detail.to_string(),
            op: Box::new(Op::SnapshotForget { lineages }),
        };
        self.inner.submit(op, true).map(|_| ())
    }

    /// [`Engine::prune`], in the activity log as a gc with `detail` (`cowfs forget`).
    pub fn prune_noted(&self, prunes: Vec<PruneSpec>, detail: &str) -> Result<()> {
        let op = Op::Tagged { action: Action::Gc, detail: detail.to_string(), op: Box::new(Op::Prune { prunes }) };
        self.inner.submit(op, true).map(|_| ())
    }

    /// Opens a regular file's content for writing.
    pub fn open_file(&self, ino: InodeId) -> Result<FileWriter> {
        FileWriter::open(self.inner.clone(), ino)
    }
}

/// The raw operation channel and the index, for tests (feature `testing`).
#[cfg(feature = "testing")]
impl Engine {
    /// Runs one operation through the writer; with `durable`, returns only after it is on
    /// stable storage.
    pub fn submit(&self, op: Op, durable: bool) -> Result<Outcome> {
        self.inner.submit(op, durable)
    }

    /// Runs `f` with the index read-locked (for inspection and tests).
    pub fn with_index<R>(&self, f: impl FnOnce(&Index) -> R) -> R {
        f(&self.inner.shared.index.read())
    }

    /// Calls `f` with every complete transaction of the log, oldest first, until it breaks.
    /// Reads the segment files as they are now: a transaction being appended meanwhile is
    /// either complete and seen, or not seen.
    pub fn scan_log(
        &self,
        f: &mut dyn FnMut(&crate::log::store::Txn) -> Result<std::ops::ControlFlow<()>>,
    ) -> Result<()> {
        self.inner.scan_log(f)
    }
}
