//! The thin fuser adapter: decodes each request, calls [`CowFs`], encodes the reply. No
//! filesystem logic lives here.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cowfs_engine::{FileKind, Inode, InodeId, Timestamp};
use fuser::{
    AccessFlags, CopyFileRangeFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData,
    ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen, ReplyStatfs, ReplyWrite,
    ReplyXattr, Request, TimeOrNow, WriteFlags,
};

use crate::errno;
use crate::error::FsError;
use crate::fs::{Access, Caller, CowFs};
use crate::passthrough::Passthrough;
use crate::virt::is_virtual;

/// Attribute and entry cache lifetime given to the kernel.
const TTL: Duration = Duration::from_secs(1);

/// The fuser `Filesystem` over a [`CowFs`].
#[derive(Debug)]
pub struct FuseAdapter {
    fs: CowFs,
    passthrough: Passthrough,
    statfs_path: std::path::PathBuf,
    /// What the kernel's root node (1) is: the root directory, or the file of a virtual copy.
    root: InodeId,
}

impl FuseAdapter {
    /// Serves `fs`; `statfs` reports the space of the filesystem holding `store_dir`.
    pub fn new(fs: CowFs, store_dir: &Path) -> Self {
        FuseAdapter {
            fs,
            passthrough: Passthrough::default(),
            statfs_path: store_dir.to_path_buf(),
            root: InodeId::ROOT,
        }
    }

    /// Serves regular file `file` as the mount's root (a virtual copy mounted on a file): the
    /// kernel knows no other node then (a file has no entries to look up).
    pub fn with_root_file(self, file: InodeId) -> Self {
        FuseAdapter { root: file, ..self }
    }

    /// The inode a kernel node id names.
    fn ino(&self, i: INodeNo) -> InodeId {
        if i == INodeNo::ROOT { self.root } else { InodeId(i.0) }
    }

    /// Records a read's access time (see `CowFs::accessed`); a failure goes to the log.
    fn accessed(&self, i: INodeNo, how: Access) {
        if let Err(e) = self.fs.accessed(self.ino(i), how) {
            log_once(format!("recording the access time of inode {}: {}", i.0, describe(&e)));
        }
    }
}

/// Messages already written to the daemon log (each is logged once).
static LOGGED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

fn err(e: FsError) -> Errno {
    let n = e.errno();
    // Unexpected failures (corruption, a poisoned store, ...) go to the daemon log, once
    // each; ordinary refusals (ENOENT, EEXIST, ...) do not.
    if n == errno::EIO || n == errno::EINVAL {
        log_once(describe(&e));
    }
    Errno::from_i32(n)
}

fn describe(e: &FsError) -> String {
    match e {
        FsError::Engine(e) => e.to_string(),
        FsError::Errno(n) => format!("errno {n}"),
    }
}

/// Writes `msg` to the daemon log unless it was already (at most 1000 messages).
fn log_once(msg: String) {
    let mut logged = LOGGED.lock().unwrap_or_else(|p| p.into_inner());
    if !logged.contains(&msg) && logged.len() < 1000 {
        eprintln!("cowfs: {msg}");
        logged.push(msg);
    }
}

fn time(t: Timestamp) -> SystemTime {
    if t.secs >= 0 {
        UNIX_EPOCH + Duration::new(t.secs as u64, t.nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(t.secs.unsigned_abs()) + Duration::from_nanos(t.nanos as u64)
    }
}

fn timestamp(t: SystemTime) -> Timestamp {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() },
        Err(e) => {
            let d = e.duration();
            let (mut secs, mut nanos) = (-(d.as_secs() as i64), d.subsec_nanos());
            if nanos > 0 {
                secs -= 1;
                nanos = 1_000_000_000 - nanos;
            }
            Timestamp { secs, nanos }
        }
    }
}

fn time_or_now(t: Option<TimeOrNow>) -> Option<Timestamp> {
    t.map(|t| match t {
        TimeOrNow::SpecificTime(s) => timestamp(s),
        TimeOrNow::Now => Timestamp::now(),
    })
}

fn file_type(k: FileKind) -> FileType {
    match k {
        FileKind::Regular => FileType::RegularFile,
        FileKind::Directory => FileType::Directory,
        FileKind::Symlink => FileType::Symlink,
        FileKind::Fifo => FileType::NamedPipe,
        FileKind::CharDevice => FileType::CharDevice,
        FileKind::BlockDevice => FileType::BlockDevice,
        FileKind::Socket => FileType::Socket,
    }
}

fn attr(i: &Inode) -> FileAttr {
    FileAttr {
        ino: INodeNo(i.ino.0),
        size: i.size,
        blocks: i.size.div_ceil(512),
        atime: time(i.atime),
        mtime: time(i.mtime),
        ctime: time(i.ctime),
        crtime: time(i.ctime),
        kind: file_type(i.kind),
        perm: (i.mode & 0o7777) as u16,
        nlink: i.nlink,
        uid: i.uid,
        gid: i.gid,
        rdev: i.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

/// The generation an entry's file handles carry. Inode numbers are never reused, so 0 for
/// every stored inode; `.cowfs/` numbers are given out anew by every mount, so theirs is this
/// daemon's own (never 0): a handle from an earlier mount is then stale, never another node.
fn generation(i: InodeId) -> Generation {
    static MOUNT: std::sync::LazyLock<u64> = std::sync::LazyLock::new(|| {
        let t = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
        // The kernel keeps 32 bits.
        u64::from((t.as_nanos() as u32 ^ std::process::id()) | 1)
    });
    Generation(if is_virtual(i) { *MOUNT } else { 0 })
}

fn reply_entry(reply: ReplyEntry, r: crate::error::Result<Inode>) {
    match r {
        Ok(i) => reply.entry(&TTL, &attr(&i), generation(i.ino)),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: crate::error::Result<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, r: crate::error::Result<Vec<u8>>, size: u32) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(Errno::from_i32(errno::ERANGE)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(err(e)),
    }
}

const S_IFMT: u32 = 0o170000;

impl Filesystem for FuseAdapter {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        let _ = config.set_max_write(1 << 20);
        // Sequential reads arrive as 1 MiB requests (the kernel's default is 128 KiB): fewer
        // round trips; the kernel caps it at what it allows.
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        // Listings carry each entry's attributes (READDIRPLUS): `ls -l`, `find` and the like
        // then make no LOOKUP per entry. With AUTO the kernel asks for them in a listing's
        // first reply and after lookups in the directory, plain READDIR otherwise. Refused by
        // an old kernel, listings stay plain.
        let _ = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS | InitFlags::FUSE_READDIRPLUS_AUTO);
        // File handles (`open_by_handle_at`, NFS export): a handle holds the node id, which is
        // the inode number — stable across remounts and never reused — so the kernel may look
        // an inode up by id ("." in it) after it left its cache; see `generation`.
        if config.add_capabilities(InitFlags::FUSE_EXPORT_SUPPORT).is_err() {
            eprintln!("cowfs: the kernel refused export support: file handles will be stale");
        }
        // Backing files for untouched lower files on a read-only mount (see `passthrough`):
        // depth 1, so a backing file must be on a file system that stacks nothing.
        if config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok() && config.set_max_stack_depth(1).is_ok() {
            self.passthrough.enable();
        }
        Ok(())
    }

    fn destroy(&mut self) {
        if let Err(e) = self.fs.shutdown() {
            eprintln!("cowfs: error while unmounting: {e:?}");
        }
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.fs.lookup(self.ino(parent), name.as_bytes()));
    }

    fn getattr(&self, _req: &Request, i: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.fs.getattr(self.ino(i)) {
            Ok(a) => reply.attr(&TTL, &attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        _req: &Request,
        i: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let r = self.fs.setattr(
            self.ino(i),
            mode.map(|m| m & 0o7777),
            uid,
            gid,
            size,
            time_or_now(atime),
            time_or_now(mtime),
        );
        match r {
            Ok(a) => reply.attr(&TTL, &attr(&a)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, i: INodeNo, reply: ReplyData) {
        match self.fs.readlink(self.ino(i)) {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, rdev: u32, reply: ReplyEntry) {
        let kind = match mode & S_IFMT {
            0o100000 | 0 => FileKind::Regular,
            0o010000 => FileKind::Fifo,
            0o020000 => FileKind::CharDevice,
            0o060000 => FileKind::BlockDevice,
            0o140000 => FileKind::Socket,
            _ => return reply.error(Errno::from_i32(errno::EINVAL)),
        };
        let perm = mode & 0o7777 & !umask;
        reply_entry(reply, self.fs.mknod(caller(req), self.ino(parent), name.as_bytes(), kind, perm, rdev as u64));
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        reply_entry(reply, self.fs.mkdir(caller(req), self.ino(parent), name.as_bytes(), mode & 0o7777 & !umask));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.unlink(self.ino(parent), name.as_bytes()));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.rmdir(self.ino(parent), name.as_bytes()));
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        reply_entry(
            reply,
            self.fs.symlink(caller(req), self.ino(parent), link_name.as_bytes(), target.as_os_str().as_bytes()),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.contains(RenameFlags::RENAME_WHITEOUT) {
            return reply.error(Errno::from_i32(errno::EINVAL));
        }
        let r = self.fs.rename(
            self.ino(parent),
            name.as_bytes(),
            self.ino(newparent),
            newname.as_bytes(),
            flags.contains(RenameFlags::RENAME_NOREPLACE),
            flags.contains(RenameFlags::RENAME_EXCHANGE),
        );
        reply_empty(reply, r);
    }

    fn link(&self, _req: &Request, i: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        reply_entry(reply, self.fs.link(self.ino(i), self.ino(newparent), newname.as_bytes()));
    }

    fn open(&self, _req: &Request, i: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let f = flags.0;
        let write = f & libc::O_ACCMODE != libc::O_RDONLY;
        let ino = self.ino(i);
        let through = match self.passthrough.acquire(&self.fs, ino, write, &reply) {
            Ok(through) => through,
            Err(e) => return reply.error(err(e)),
        };
        match self.fs.open(ino, write, f & libc::O_TRUNC != 0, f & libc::O_APPEND != 0) {
            Ok(fh) => {
                if f & libc::O_ACCMODE != libc::O_WRONLY && f & libc::O_NOATIME == 0 {
                    self.accessed(i, Access::Open);
                }
                match through {
                    Some(id) => {
                        self.passthrough.opened(fh, ino);
                        reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id)
                    }
                    // The kernel's page cache stays valid across opens: content changes only
                    // through this mount, or through the control socket, which invalidates
                    // what it changed.
                    None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            Err(e) => {
                if through.is_some() {
                    self.passthrough.abandon(&self.fs, ino);
                }
                reply.error(err(e))
            }
        }
    }

    fn read(
        &self,
        _req: &Request,
        i: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        // Each FUSE thread reuses its reply buffer: a fresh megabyte per read costs a page
        // fault and a zeroed page per 4 KiB.
        thread_local! {
            static BUF: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
        }
        let mut buf = BUF.take();
        match self.fs.read_into(fh.0, offset, size as usize, &mut buf) {
            Ok(()) => {
                reply.data(&buf);
                self.accessed(i, Access::Read);
            }
            Err(e) => reply.error(err(e)),
        }
        if buf.capacity() <= 2 << 20 {
            BUF.set(buf);
        }
    }

    fn write(
        &self,
        req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        match self.fs.write(fh.0, offset, data, req.pid()) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(&self, req: &Request, _i: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.flush(fh.0, req.pid()));
    }

    fn release(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.passthrough.release(&self.fs, fh.0);
        reply_empty(reply, self.fs.release(fh.0));
    }

    fn fsync(&self, _req: &Request, _i: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.fsync(fh.0));
    }

    fn opendir(&self, _req: &Request, i: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.fs.opendir(self.ino(i)) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(&self, _req: &Request, i: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectoryPlus) {
        if offset == 0 {
            self.accessed(i, Access::List);
        }
        match self.fs.readdir(self.ino(i), fh.0, offset) {
            Ok(entries) => {
                for (next, child, _, name) in entries {
                    // The names come from the listing's snapshot (taken at opendir), but each
                    // entry here becomes a cached dentry: it is looked up now, while the
                    // kernel holds the directory's lock against renames, creates and unlinks,
                    // so a name renamed or removed since the snapshot cannot linger in the
                    // kernel's cache as a stale entry (the kernel ignores `.` and `..`).
                    let now = match name.as_slice() {
                        b"." | b".." => self.fs.getattr(child),
                        _ => self.fs.lookup(self.ino(i), &name),
                    };
                    let a = match now {
                        Ok(a) => a,
                        // Gone since the snapshot: left out, as a later opendir would.
                        Err(e) if e.errno() == errno::ENOENT => continue,
                        Err(e) => return reply.error(err(e)),
                    };
                    if reply.add(INodeNo(a.ino.0), next, OsStr::from_bytes(&name), &TTL, &attr(&a), generation(a.ino)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(&self, _req: &Request, i: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        if offset == 0 {
            self.accessed(i, Access::List);
        }
        match self.fs.readdir(self.ino(i), fh.0, offset) {
            Ok(entries) => {
                for (next, child, kind, name) in entries {
                    if reply.add(INodeNo(child.0), next, file_type(kind), OsStr::from_bytes(&name)) {
                        break;
                    }
                }
                reply.ok();
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(&self, _req: &Request, _i: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.releasedir(fh.0));
    }

    fn fsyncdir(&self, _req: &Request, _i: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.sync());
    }

    fn statfs(&self, _req: &Request, _i: INodeNo, reply: ReplyStatfs) {
        // The space is the space of the disk that holds the store.
        match nix::sys::statvfs::statvfs(self.statfs_path.as_path()) {
            Ok(st) => reply.statfs(
                st.blocks(),
                st.blocks_free(),
                st.blocks_available(),
                u32::MAX as u64,
                u32::MAX as u64,
                st.block_size() as u32,
                cowfs_engine::MAX_NAME_LEN as u32,
                st.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn setxattr(
        &self,
        req: &Request,
        i: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.fs.setxattr(caller(req), self.ino(i), name.as_bytes(), value, flags));
    }

    fn getxattr(&self, _req: &Request, i: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.fs.getxattr(self.ino(i), name.as_bytes()), size);
    }

    fn listxattr(&self, _req: &Request, i: INodeNo, size: u32, reply: ReplyXattr) {
        reply_xattr(reply, self.fs.listxattr(self.ino(i)), size);
    }

    fn removexattr(&self, req: &Request, i: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.fs.removexattr(caller(req), self.ino(i), name.as_bytes()));
    }

    fn access(&self, _req: &Request, _i: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks access itself.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let perm = mode & 0o7777 & !umask;
        match self.fs.create(caller(req), self.ino(parent), name.as_bytes(), perm, flags & libc::O_APPEND != 0) {
            Ok((i, fh)) => {
                reply.created(&TTL, &attr(&i), generation(i.ino), FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn ioctl(
        &self,
        _req: &Request,
        _i: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::from_i32(errno::ENOTTY));
    }

    fn fallocate(
        &self,
        _req: &Request,
        _i: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let available = || {
            let st = nix::sys::statvfs::statvfs(self.statfs_path.as_path()).map_err(|e| FsError::Errno(e as i32))?;
            Ok(st.blocks_available() * st.fragment_size())
        };
        reply_empty(reply, self.fs.fallocate(fh.0, offset, length, mode, available));
    }

    fn copy_file_range(
        &self,
        _req: &Request,
        _ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        _ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        _flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        // The reply counts in u32: copy at most 1 GiB per call (callers loop).
        match self.fs.copy_file_range(fh_in.0, offset_in, fh_out.0, offset_out, len.min(1 << 30)) {
            Ok(n) => reply.written(n as u32),
            Err(e) => reply.error(err(e)),
        }
    }
}
