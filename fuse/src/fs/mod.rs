//! Filesystem semantics over the engine, independent of FUSE: names and attributes here;
//! open files, one version per save and orphans (files unlinked while open) in `files`;
//! directory handles with stable offsets in `dirs`; xattr rules in `xattr`. Every method
//! returns an [`FsError`] (an engine error or an errno); the adapter maps it to an errno.
//! Testable without a mount, over the engine on the storage simulator.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use cowfs_engine::Dirent;
use cowfs_engine::{Engine, FileKind, FileWriter, Inode, InodeId, NewInode, SetAttr, Timestamp};
use parking_lot::Mutex;

use crate::error::{FsError, Result, errno};
use crate::virt::{VNode, Virt, is_virtual};

mod dirs;
mod files;
mod flags;
mod xattr;

pub use flags::{Access, AtimeRule, FlagSource, MountFlags};

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
pub struct CowFs {
    engine: Engine,
    files: Mutex<HashMap<InodeId, OpenFile>>,
    handles: Mutex<HashMap<u64, Handle>>,
    dirs: Mutex<HashMap<u64, DirHandle>>,
    next_fh: AtomicU64,
    virt: Virt,
    vfiles: Mutex<HashMap<u64, crate::virt::VFile>>,
    /// The mount's flags (none: reads record no access time, not read-only).
    flags: Option<flags::Flags>,
}

impl std::fmt::Debug for CowFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CowFs").field("engine", &self.engine).finish_non_exhaustive()
    }
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
            flags: None,
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
}
