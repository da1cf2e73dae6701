//! Filesystem semantics over the engine, independent of FUSE: open files and handles,
//! one version per save, orphans (files unlinked while open), directory handles with stable
//! offsets, xattr rules. Every method returns an [`FsError`] (an engine error or an errno); the adapter maps it to an
//! errno. Testable without a mount, over the engine on the storage simulator.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cowfs_engine::Dirent;
use cowfs_engine::{Engine, FileKind, FileWriter, Inode, InodeId, NewInode, SetAttr, Timestamp};
use parking_lot::Mutex;

use crate::error::{FsError, Result, errno};
use crate::virt::{VNode, Virt, is_virtual};

mod dirs;
mod xattr;

/// `XATTR_CREATE` / `XATTR_REPLACE` flag values of setxattr(2).
pub const XATTR_CREATE: i32 = 1;
/// See [`XATTR_CREATE`].
pub const XATTR_REPLACE: i32 = 2;

/// An open regular file, shared by every handle on its inode.
#[derive(Debug)]
struct OpenFile {
    writer: Arc<Mutex<FileWriter>>,
    handles: u32,
    /// mtime of the newest buffered change (reported by getattr, committed with the version).
    mtime: Option<Timestamp>,
    /// ctime of the newest buffered change (reported by getattr until the commit).
    ctime: Option<Timestamp>,
}

/// S_ISGID.
const SET_GID: u32 = 0o2000;

#[derive(Debug, Clone, Copy)]
struct Handle {
    ino: InodeId,
    /// Wrote data since its last commit: the next flush (close) commits.
    wrote: bool,
    /// Created the file or opened it with O_TRUNC: a save even without writes, committed at
    /// release (not at flush: a shell's `> f` duplicates the descriptor and closes the
    /// original before writing through the copy) unless a flush committed it already.
    saved: bool,
    append: bool,
    /// The process that wrote last: only its close commits at flush. A descriptor inherited
    /// by a forked child is closed by that child at exec, which sends a flush too; it must
    /// not cut a version in the middle of the parent's writes.
    writer_pid: u32,
}

/// A directory's entries, by name.
type Entries = Vec<(Vec<u8>, Dirent)>;

/// A directory handle: the entries as they were at opendir (or the last rewind), so offsets
/// stay stable.
#[derive(Debug)]
struct DirHandle {
    /// The directory.
    ino: InodeId,
    entries: Entries,
    parent: InodeId,
    /// A readdir was served: a read from offset 0 now is a rewind.
    read: bool,
}

/// What a caller is (for ownership of new inodes and xattr namespace rules).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One entry returned by [`CowFs::readdir`]: (offset of the next entry, inode, kind, name).
pub type DirEntry = (u64, InodeId, FileKind, Vec<u8>);

/// The filesystem.
#[derive(Debug)]
pub struct CowFs {
    engine: Engine,
    files: Mutex<HashMap<InodeId, OpenFile>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    next_fh: AtomicU64,
    virt: Virt,
    vfiles: Mutex<HashMap<u64, crate::virt::VFile>>,
}

impl CowFs {
    /// The filesystem over `engine`.
    pub fn new(engine: Engine) -> Self {
        CowFs {
            engine: engine.clone(),
            files: Mutex::new(HashMap::new()),
            handles: Mutex::new(HashMap::new()),
            dirs: Mutex::new(HashMap::new()),
            next_fh: AtomicU64::new(1),
            virt: Virt::new(engine),
            vfiles: Mutex::new(HashMap::new()),
        }
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Attributes, with the size and mtime of buffered writes.
    pub fn getattr(&self, ino: InodeId) -> Result<Inode> {
        if is_virtual(ino) {
            return self.virt.vgetattr(ino);
        }
        let mut i = (*self.engine.getattr(ino)?).clone();
        let open = self.files.lock().get(&ino).map(|f| (f.writer.clone(), f.mtime, f.ctime));
        if let Some((w, mtime, ctime)) = open {
            i.size = w.lock().size();
            if let Some(m) = mtime {
                i.mtime = m;
            }
            if let Some(c) = ctime {
                i.ctime = i.ctime.max(c);
            }
        }
        Ok(i)
    }

    /// Looks a name up.
    pub fn lookup(&self, parent: InodeId, name: &[u8]) -> Result<Inode> {
        // FUSE does not check name lengths; a longer name cannot exist here.
        if name.len() > cowfs_engine::MAX_NAME_LEN {
            return Err(FsError::Errno(errno::ENAMETOOLONG));
        }
        // An exported file handle names an inode, not a path: the kernel finds the inode again
        // (once it left the kernel's cache, or after a remount) by looking up "." in it, and a
        // directory's parent by "..". No directory entry has these names.
        if name == b"." {
            return if is_virtual(parent) { self.virt.vgetattr(parent) } else { self.getattr(parent) };
        }
        if name == b".." {
            return self.lookup_parent(parent);
        }
        if parent == InodeId::ROOT && name == crate::virt::NAME {
            return self.virt.vgetattr(self.virt.vid(VNode::Top));
        }
        if is_virtual(parent) {
            return self.virt.vlookup(parent, name);
        }
        let i = self.engine.lookup(parent, name)?;
        self.getattr(i.ino)
    }

    /// The directory holding directory `dir` (the root's is the root).
    fn lookup_parent(&self, dir: InodeId) -> Result<Inode> {
        if is_virtual(dir) {
            let up = self.virt.vparent(dir)?;
            return if is_virtual(up) { self.virt.vgetattr(up) } else { self.getattr(up) };
        }
        if self.engine.getattr(dir)?.kind != FileKind::Directory {
            return Err(FsError::Errno(errno::ENOTDIR));
        }
        // A directory without a parent other than the root is one removed while open.
        let up = match self.engine.parent(dir) {
            Some(up) => up,
            None if dir == InodeId::ROOT => dir,
            None => return Err(FsError::Errno(errno::ENOENT)),
        };
        self.getattr(up)
    }

    /// A regular file with an open handle.
    fn file_open(&self, ino: InodeId) -> bool {
        self.files.lock().contains_key(&ino)
    }

    /// A file or directory with an open handle: removing its last name keeps it (an orphan)
    /// until its last close.
    fn is_open(&self, ino: InodeId) -> bool {
        self.file_open(ino) || self.dirs.lock().values().any(|d| d.ino == ino)
    }

    /// Refuses changes inside `.cowfs/` (EROFS) and a new entry named `.cowfs` at the root,
    /// which exists already (EEXIST).
    fn check_writable(&self, parent: InodeId, name: &[u8]) -> Result<()> {
        if is_virtual(parent) {
            return Err(FsError::Errno(errno::EROFS));
        }
        if parent == InodeId::ROOT && name == crate::virt::NAME {
            return Err(FsError::Errno(errno::EEXIST));
        }
        Ok(())
    }

    /// Refuses removing or renaming anything inside `.cowfs/`, or `.cowfs` itself (EROFS).
    fn check_removable(parent: InodeId, name: &[u8]) -> Result<()> {
        if is_virtual(parent) || (parent == InodeId::ROOT && name == crate::virt::NAME) {
            return Err(FsError::Errno(errno::EROFS));
        }
        Ok(())
    }

    /// Creates a non-directory node (regular file, fifo, device, socket).
    pub fn mknod(
        &self,
        c: Caller,
        parent: InodeId,
        name: &[u8],
        kind: FileKind,
        mode: u32,
        rdev: u64,
    ) -> Result<Inode> {
        self.check_writable(parent, name)?;
        let gid = self.set_gid_of(parent)?.unwrap_or(c.gid);
        let attrs = NewInode { kind, mode, uid: c.uid, gid, rdev, symlink: Vec::new(), lineage: None };
        Ok((*self.engine.create(parent, name, attrs)?).clone())
    }

    /// The group new inodes in `parent` take instead of the creator's when `parent` is a
    /// set-group-ID directory (as on local file systems; the kernel leaves it to a FUSE daemon).
    fn set_gid_of(&self, parent: InodeId) -> Result<Option<u32>> {
        let p = self.engine.getattr(parent)?;
        Ok((p.mode & SET_GID != 0).then_some(p.gid))
    }

    /// Creates a directory; in a set-group-ID directory it takes the directory's group and
    /// is set-group-ID too.
    pub fn mkdir(&self, c: Caller, parent: InodeId, name: &[u8], mode: u32) -> Result<Inode> {
        self.check_writable(parent, name)?;
        let (mode, gid) = match self.set_gid_of(parent)? {
            Some(gid) => (mode | SET_GID, gid),
            None => (mode, c.gid),
        };
        Ok((*self.engine.mkdir(parent, name, mode, c.uid, gid)?).clone())
    }

    /// Creates a symlink.
    pub fn symlink(&self, c: Caller, parent: InodeId, name: &[u8], target: &[u8]) -> Result<Inode> {
        self.check_writable(parent, name)?;
        let attrs = NewInode {
            kind: FileKind::Symlink,
            mode: 0o777,
            uid: c.uid,
            gid: self.set_gid_of(parent)?.unwrap_or(c.gid),
            rdev: 0,
            symlink: target.to_vec(),
            lineage: None,
        };
        Ok((*self.engine.create(parent, name, attrs)?).clone())
    }

    /// Adds a hard link.
    pub fn link(&self, ino: InodeId, parent: InodeId, name: &[u8]) -> Result<Inode> {
        if is_virtual(ino) {
            return Err(FsError::Errno(errno::EROFS));
        }
        self.check_writable(parent, name)?;
        self.engine.link(ino, parent, name)?;
        self.getattr(ino)
    }

    /// Removes a name; an open file whose last name goes stays until its last close.
    pub fn unlink(&self, parent: InodeId, name: &[u8]) -> Result<()> {
        Self::check_removable(parent, name)?;
        let target = self.engine.lookup(parent, name)?;
        let keep_orphan = self.is_open(target.ino);
        self.engine.unlink(parent, name, keep_orphan)?;
        Ok(())
    }

    /// Removes an empty directory (one still open lives on, empty and nameless, until its
    /// last close: `fstat` on it works, with `st_nlink` 0).
    pub fn rmdir(&self, parent: InodeId, name: &[u8]) -> Result<()> {
        Self::check_removable(parent, name)?;
        let target = self.engine.lookup(parent, name)?;
        Ok(self.engine.rmdir(parent, name, self.is_open(target.ino))?)
    }

    /// Renames atomically (`noreplace`: RENAME_NOREPLACE, `exchange`: RENAME_EXCHANGE).
    pub fn rename(
        &self,
        parent: InodeId,
        name: &[u8],
        new_parent: InodeId,
        new_name: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> Result<()> {
        Self::check_removable(parent, name)?;
        self.check_writable(new_parent, new_name)?;
        // A file renamed over another carries its content into that file's history, so its
        // unsaved bytes are saved first: the kernel sends RELEASE asynchronously, and "write
        // temp, close, rename" may reach us as "rename, release".
        if let Ok(src) = self.engine.lookup(parent, name)
            && src.kind == FileKind::Regular
            && self.file_open(src.ino)
        {
            self.commit(src.ino, false, false)?;
        }
        let keep_orphan = match self.engine.lookup(new_parent, new_name) {
            Ok(t) => self.is_open(t.ino),
            Err(_) => false,
        };
        Ok(self.engine.rename(parent, name, new_parent, new_name, noreplace, exchange, keep_orphan)?)
    }

    /// A symlink's target.
    pub fn readlink(&self, ino: InodeId) -> Result<Vec<u8>> {
        let i = if is_virtual(ino) { Arc::new(self.virt.vgetattr(ino)?) } else { self.engine.getattr(ino)? };
        if i.kind != FileKind::Symlink {
            return Err(FsError::Errno(errno::EINVAL));
        }
        Ok(i.symlink.clone())
    }

    /// Changes attributes; `size` truncates or extends (a version when no handle is open).
    #[allow(clippy::too_many_arguments)]
    pub fn setattr(
        &self,
        ino: InodeId,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Timestamp>,
        mtime: Option<Timestamp>,
    ) -> Result<Inode> {
        if is_virtual(ino) {
            return Err(FsError::Errno(errno::EROFS));
        }
        if let Some(size) = size {
            if self.with_open_writer(ino, |w| Ok(w.truncate(size)?))?.is_some() {
                self.touch_open(ino);
            } else {
                let mut w = self.engine.open_file(ino)?;
                if w.size() != size {
                    w.truncate(size)?;
                    w.commit(false)?;
                }
            }
        }
        let current = self.engine.getattr(ino)?;
        let mut mode = mode;
        if (uid.is_some_and(|u| u != current.uid) || gid.is_some_and(|g| g != current.gid))
            && mode.is_none()
            && current.kind == FileKind::Regular
        {
            // chown clears set-user-id, and set-group-id when group-executable.
            let mut m = current.mode & !0o4000;
            if m & 0o010 != 0 {
                m &= !0o2000;
            }
            mode = Some(m);
        }
        if mode.is_some() || uid.is_some() || gid.is_some() || atime.is_some() || mtime.is_some() {
            self.engine.setattr(ino, SetAttr { mode, uid, gid, atime, mtime })?;
            if let (Some(m), Some(f)) = (mtime, self.files.lock().get_mut(&ino)) {
                f.mtime = Some(m);
            }
        }
        self.getattr(ino)
    }

    /// Opens a regular file; returns the handle. `truncate`: O_TRUNC.
    pub fn open(&self, ino: InodeId, write: bool, truncate: bool, append: bool) -> Result<u64> {
        if is_virtual(ino) {
            if write {
                return Err(FsError::Errno(errno::EROFS));
            }
            let f = self.virt.vfile(ino)?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.vfiles.lock().insert(fh, f);
            return Ok(fh);
        }
        let i = self.engine.getattr(ino)?;
        if i.kind == FileKind::Directory {
            return Err(FsError::Errno(errno::EISDIR));
        }
        if i.kind == FileKind::Regular {
            // The handle count moves under the map lock, in the same step that finds or
            // registers the writer, so a racing last close cannot remove it in between.
            let registered = self.files.lock().get_mut(&ino).map(|f| f.handles += 1).is_some();
            if !registered {
                // Built outside the lock (it reads the file's tree); a racing open may win,
                // and then its writer is used.
                let w = Arc::new(Mutex::new(self.engine.open_file(ino)?));
                let mut files = self.files.lock();
                files.entry(ino).or_insert(OpenFile { writer: w, handles: 0, mtime: None, ctime: None }).handles += 1;
            }
            if write && truncate {
                let truncated = self.with_open_writer(ino, |w| {
                    if w.size() == 0 {
                        return Ok(false);
                    }
                    w.truncate(0)?;
                    Ok(true)
                })?;
                if truncated == Some(true) {
                    self.touch_open(ino);
                }
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Handle { ino, wrote: false, saved: write && truncate, append, writer_pid: 0 });
        Ok(fh)
    }

    /// Creates and opens a regular file.
    pub fn create(&self, c: Caller, parent: InodeId, name: &[u8], mode: u32, append: bool) -> Result<(Inode, u64)> {
        let i = self.mknod(c, parent, name, FileKind::Regular, mode, 0)?;
        let fh = self.open(i.ino, true, false, append)?;
        // Creating is a save: at close the (maybe empty) new content becomes a version unless
        // it equals the newest one of the lineage (a re-created path continues its history).
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.saved = true;
        }
        Ok((i, fh))
    }

    fn writer_of(&self, fh: u64) -> Result<(Handle, Arc<Mutex<FileWriter>>)> {
        let h = *self.handles.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        let w = self.files.lock().get(&h.ino).map(|f| f.writer.clone());
        // Handles on fifos and devices have no content here.
        let w = w.ok_or(FsError::Errno(errno::EINVAL))?;
        Ok((h, w))
    }

    /// Reads through the handle (buffered writes included).
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(fh, offset, size, &mut out)?;
        Ok(out)
    }

    /// [`CowFs::read`] into `out` (replacing what it held; its capacity is reused).
    pub fn read_into(&self, fh: u64, offset: u64, size: usize, out: &mut Vec<u8>) -> Result<()> {
        let virtual_file = self.vfiles.lock().get(&fh).copied();
        if let Some(f) = virtual_file {
            return Ok(self.engine.read_content_into(f.root, f.size, offset, size, out)?);
        }
        let (_, w) = self.writer_of(fh)?;
        let mut w = w.lock();
        if w.is_dirty() {
            *out = w.read(offset, size)?;
            Ok(())
        } else {
            drop(w);
            let ino = self.handles.lock().get(&fh).map(|h| h.ino).ok_or(FsError::Errno(errno::EBADF))?;
            Ok(self.engine.read_into(ino, offset, size, out)?)
        }
    }

    /// Writes through the handle; returns the bytes written.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], pid: u32) -> Result<usize> {
        let (h, w) = self.writer_of(fh)?;
        {
            let mut w = w.lock();
            let at = if h.append { w.size() } else { offset };
            w.write(at, data)?;
        }
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.wrote = true;
            h.writer_pid = pid;
        }
        self.touch_open(h.ino);
        Ok(data.len())
    }

    /// Runs `f` on the open file's writer, with the writer locked and still registered
    /// (a racing last close removes it while holding the same lock). `None`: not open.
    fn with_open_writer<R>(&self, ino: InodeId, f: impl FnOnce(&mut FileWriter) -> Result<R>) -> Result<Option<R>> {
        loop {
            let Some(w) = self.files.lock().get(&ino).map(|f| f.writer.clone()) else { return Ok(None) };
            let mut guard = w.lock();
            if self.files.lock().get(&ino).is_some_and(|f| Arc::ptr_eq(&f.writer, &w)) {
                return f(&mut guard).map(Some);
            }
        }
    }

    /// Records that an open file changed now (its mtime, reported until the commit).
    fn touch_open(&self, ino: InodeId) {
        if let Some(f) = self.files.lock().get_mut(&ino) {
            let now = Timestamp::now();
            f.mtime = Some(now);
            f.ctime = Some(now);
        }
    }

    /// Commits the open file's buffered content as a version, if it changed; with
    /// `durable`, everything is durable when this returns.
    /// `saved`: the handle asking wrote (or created the file), so its content is a save even
    /// when nothing is buffered.
    fn commit(&self, ino: InodeId, durable: bool, saved: bool) -> Result<()> {
        let first = self.needs_first_version(ino);
        let mtime = self.files.lock().get(&ino).and_then(|f| f.mtime);
        let committed = self.with_open_writer(ino, |w| {
            if w.is_dirty() || first || saved {
                w.commit_with_mtime(durable, mtime)?;
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
        if durable && committed != Some(true) {
            self.engine.sync()?;
        }
        Ok(())
    }

    /// A new file gets its first version (its initial, maybe empty, content) at its first
    /// close even without writes: `touch f` makes one version.
    fn needs_first_version(&self, ino: InodeId) -> bool {
        self.engine.getattr(ino).ok().and_then(|i| i.lineage).is_some_and(|l| self.engine.newest_version(l).is_none())
    }

    /// fsync / fdatasync: the file's content is a durable version when this returns.
    pub fn fsync(&self, fh: u64) -> Result<()> {
        if self.vfiles.lock().contains_key(&fh) {
            return Ok(());
        }
        let h = *self.handles.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        if !self.files.lock().contains_key(&h.ino) {
            return Ok(self.engine.sync()?);
        }
        self.commit(h.ino, true, h.wrote || h.saved)?;
        // Committed, as at a flush: nothing of this handle is left for its close or release.
        self.committed(fh);
        Ok(())
    }

    /// flush (every close(2) of a descriptor, synchronously): a handle that wrote data commits
    /// its version now, so the version exists when close returns (RELEASE comes later,
    /// asynchronously). A flush of a handle that wrote nothing does nothing — not even for a
    /// create or O_TRUNC, which release commits: a shell's `echo v > f` closes its first
    /// descriptor before writing through a duplicate, and must make one version, not two.
    /// Only the close by the process that wrote (`pid`) commits (see `Handle::writer_pid`).
    pub fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        if self.vfiles.lock().contains_key(&fh) {
            return Ok(());
        }
        let h = *self.handles.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        if !h.wrote || h.writer_pid != pid || !self.file_open(h.ino) {
            return Ok(());
        }
        self.commit(h.ino, false, true)?;
        self.committed(fh);
        Ok(())
    }

    /// Handle `fh`'s writes and its save (its create or O_TRUNC) are in a committed version:
    /// its release, which may come after another handle truncated the file again, has
    /// nothing left to commit.
    fn committed(&self, fh: u64) {
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.wrote = false;
            h.saved = false;
        }
    }

    /// fsyncdir and sync of anything else: everything acknowledged is durable.
    pub fn sync(&self) -> Result<()> {
        Ok(self.engine.sync()?)
    }

    /// Closes a handle: a handle that wrote commits a version (a new file's first version
    /// is committed by the first close even without writes); the last close of an unlinked
    /// file frees it.
    pub fn release(&self, fh: u64) -> Result<()> {
        if self.vfiles.lock().remove(&fh).is_some() {
            return Ok(());
        }
        let Some(h) = self.handles.lock().remove(&fh) else {
            return Err(FsError::Errno(errno::EBADF));
        };
        let mut result = Ok(());
        let open = self.files.lock().get(&h.ino).map(|f| f.writer.clone());
        if let Some(w) = open {
            // Lock order: writer, then the files map. The entry goes while the writer is
            // held, so a concurrent truncate either sees it and commits through it first,
            // or sees it gone.
            let mut guard = w.lock();
            let first = self.needs_first_version(h.ino);
            let (last, mtime) = {
                let mut files = self.files.lock();
                let f = files.get_mut(&h.ino).expect("a handle keeps its file open");
                f.handles -= 1;
                (f.handles == 0, f.mtime)
            };
            // A handle with an uncommitted save commits; so does the last close when changes
            // were made without a writing handle (a truncate through setattr), or when the
            // file has no version yet (made by mknod). Not another handle's close while the
            // creator may still be writing: a reader's close would cut a partial version.
            if h.wrote || h.saved || (last && (first || guard.is_dirty())) {
                result = guard.commit_with_mtime(false, mtime).map(|_| ()).map_err(FsError::from);
            }
            if last {
                // An open may have taken the file again since the count reached zero.
                let mut files = self.files.lock();
                if files.get(&h.ino).is_some_and(|f| f.handles == 0) {
                    files.remove(&h.ino);
                }
            }
        }
        if let Ok(i) = self.engine.getattr(h.ino)
            && i.nlink == 0
            && !self.file_open(h.ino)
        {
            result = result.and(self.engine.free(h.ino).map_err(FsError::from));
        }
        result
    }

    /// fallocate: mode 0 extends the size; KEEP_SIZE alone does nothing; PUNCH_HOLE|KEEP_SIZE
    /// makes a hole. Mode 0 and KEEP_SIZE promise the range's space: with fewer than `len`
    /// bytes `available` on the store's disk they are ENOSPC (a copy-on-write store writes
    /// new space for every later write into the range, allocated before or not).
    pub fn fallocate(&self, fh: u64, offset: u64, len: u64, mode: i32, available: u64) -> Result<()> {
        const KEEP_SIZE: i32 = 1;
        const PUNCH_HOLE: i32 = 2;
        let (h, w) = self.writer_of(fh)?;
        let end = offset.checked_add(len).ok_or(FsError::Errno(errno::EFBIG))?;
        if (mode == 0 || mode == KEEP_SIZE) && len > available {
            return Err(FsError::Errno(errno::ENOSPC));
        }
        {
            let mut w = w.lock();
            match mode {
                0 => {
                    if end > w.size() {
                        w.truncate(end)?;
                    }
                }
                KEEP_SIZE => return Ok(()),
                m if m == PUNCH_HOLE | KEEP_SIZE => w.punch_hole(offset, len)?,
                _ => return Err(FsError::Errno(errno::EOPNOTSUPP)),
            }
        }
        if let Some(hh) = self.handles.lock().get_mut(&fh) {
            hh.wrote = true;
        }
        self.touch_open(h.ino);
        Ok(())
    }

    /// copy_file_range inside the mount: the destination takes the source's chunks, so the
    /// copy costs metadata only. Returns the bytes copied (0 at or past the source's end).
    pub fn copy_file_range(&self, fh_in: u64, off_in: u64, fh_out: u64, off_out: u64, len: u64) -> Result<u64> {
        if self.vfiles.lock().contains_key(&fh_in) {
            // Out of `.cowfs/`: no chunks to share here; the caller copies by read and write.
            return Err(FsError::Errno(errno::EXDEV));
        }
        let (_, src) = self.writer_of(fh_in)?;
        let (out, dst) = self.writer_of(fh_out)?;
        let (n, extents) = {
            let mut s = src.lock();
            let size = s.size();
            if off_in >= size || len == 0 {
                return Ok(0);
            }
            let n = len.min(size - off_in);
            (n, s.extents_in(off_in, n)?)
        };
        dst.lock().splice(off_out, extents)?;
        if let Some(h) = self.handles.lock().get_mut(&fh_out) {
            h.wrote = true;
        }
        self.touch_open(out.ino);
        Ok(n)
    }

    /// Commits every open file and stops the engine (unmount).
    pub fn shutdown(&self) -> Result<()> {
        let open: Vec<InodeId> = self.files.lock().keys().copied().collect();
        let mut result = Ok(());
        for ino in open {
            result = result.and(self.commit(ino, false, false));
        }
        self.files.lock().clear();
        result.and(self.engine.clone().close().map_err(FsError::from))
    }
}
