//! A read-only lower tree of an overlay mount (docs/OVERLAY.md, step 2): what cowfs shows from
//! it and never writes. Every access is relative to the tree's root directory, resolved by
//! `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`: no path, symlink or `..` can reach
//! outside the tree, and symlinks inside it are never followed (an overlay shows them as
//! symlinks; the kernel resolves them through the mount). Files are opened read-only, without
//! updating their access time where the kernel allows, and an open file's [`Identity`] says
//! whether it is still the file a store recorded.
//!
//! [`Lowers`] is an overlay store's set of lower trees: it reads the recorded lower files that
//! content refers to, and refuses (never serves) one that is no longer the recorded file.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2, readlinkat};
use nix::sys::stat::{FileStat, fstat, fstatat};

use crate::error::{Error, Result};
use crate::format::record::{LowerFile, Timestamp};
use crate::ids::LowerFileId;
use crate::sync::Mutex;

/// What pins a lower file's content (the store records it; see [`LowerIdentity`]).
pub use crate::format::record::LowerIdentity as Identity;

fn identity_of(st: &FileStat) -> Identity {
    Identity {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size as u64,
        mtime: Timestamp { secs: st.st_mtime, nanos: st.st_mtime_nsec as u32 },
        ctime: Timestamp { secs: st.st_ctime, nanos: st.st_ctime_nsec as u32 },
    }
}

/// An entry's attributes, as `lstat` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowerStat {
    /// Its identity (for a regular file, what a store records).
    pub identity: Identity,
    /// `st_mode`: the file type bits and the permissions.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Links.
    pub nlink: u64,
    /// Device number (character and block devices).
    pub rdev: u64,
    /// Access time (seconds, nanoseconds).
    pub atime: (i64, u32),
}

impl LowerStat {
    fn of(st: &FileStat) -> LowerStat {
        LowerStat {
            identity: identity_of(st),
            mode: st.st_mode,
            uid: st.st_uid,
            gid: st.st_gid,
            nlink: st.st_nlink,
            rdev: st.st_rdev,
            atime: (st.st_atime, st.st_atime_nsec as u32),
        }
    }
    /// A directory.
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    /// A regular file.
    pub fn is_file(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// A lower tree, by its root directory.
#[derive(Debug)]
pub struct LowerDir {
    path: PathBuf,
    root: OwnedFd,
}

/// The resolution every access uses: beneath the root, no symlink followed.
fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS)
}

/// `rel` as a path below the root (`""` or `.`: the root), or EINVAL for an absolute path or
/// one with `..`.
fn below(rel: &Path) -> io::Result<&Path> {
    if rel.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        Ok(rel)
    } else {
        Err(io::Error::from_raw_os_error(libc::EINVAL))
    }
}

/// `rel`, or `.` for the root (an empty path).
fn or_root(rel: &Path) -> &Path {
    if rel.as_os_str().is_empty() { Path::new(".") } else { rel }
}

impl LowerDir {
    /// Opens the lower tree at `path` (absolute). Fails when it is missing, not a directory
    /// or not readable.
    pub fn open(path: &Path) -> io::Result<LowerDir> {
        let root = nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )?;
        Ok(LowerDir { path: path.to_path_buf(), root })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory holding `rel`, and `rel`'s last name (`None` for the root).
    fn parent<'a>(&self, rel: &'a Path) -> io::Result<(Option<OwnedFd>, Option<&'a OsStr>)> {
        let rel = below(rel)?;
        let Some(name) = rel.file_name() else { return Ok((None, None)) };
        let dir = or_root(rel.parent().unwrap_or(rel));
        let fd = openat2(&self.root, dir, how(OFlag::O_PATH | OFlag::O_DIRECTORY))?;
        Ok((Some(fd), Some(name)))
    }

    /// The attributes of the entry at `rel`, not following it if it is a symlink.
    pub fn lstat(&self, rel: &Path) -> io::Result<LowerStat> {
        let st = match self.parent(rel)? {
            (Some(dir), Some(name)) => fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?,
            _ => fstat(&self.root)?,
        };
        Ok(LowerStat::of(&st))
    }

    /// The names in directory `rel` (without `.` and `..`), in the order the file system gives.
    pub fn read_dir(&self, rel: &Path) -> io::Result<Vec<Vec<u8>>> {
        let fd = openat2(&self.root, or_root(below(rel)?), how(OFlag::O_RDONLY | OFlag::O_DIRECTORY))?;
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut names = Vec::new();
        for entry in dir.iter() {
            let name = entry?.file_name().to_bytes().to_vec();
            if name != b"." && name != b".." {
                names.push(name);
            }
        }
        Ok(names)
    }

    /// The target of symlink `rel`.
    pub fn read_link(&self, rel: &Path) -> io::Result<Vec<u8>> {
        match self.parent(rel)? {
            (Some(dir), Some(name)) => Ok(readlinkat(&dir, name)?.as_bytes().to_vec()),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }

    /// Opens regular file `rel` for reading (not updating its access time where the kernel
    /// allows), with its identity as open. A directory is EISDIR, another kind EINVAL.
    pub fn open_file(&self, rel: &Path) -> io::Result<(File, Identity)> {
        let rel = below(rel)?;
        let fd = match openat2(&self.root, rel, how(OFlag::O_RDONLY | OFlag::O_NOATIME)) {
            // O_NOATIME needs the file's owner (or CAP_FOWNER).
            Err(nix::errno::Errno::EPERM) => openat2(&self.root, rel, how(OFlag::O_RDONLY))?,
            r => r?,
        };
        let st = fstat(&fd)?;
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
            _ => return Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
        Ok((File::from(fd), identity_of(&st)))
    }
}

/// Open lower files kept for reading; beyond this many the cache starts again.
const OPEN_FILES: usize = 1024;

/// The lower trees of an overlay store, in layer order (0: the first `--lower`, on top), and
/// the lower files opened for reading.
#[derive(Debug, Default)]
pub struct Lowers {
    layers: Vec<LowerDir>,
    open: Mutex<std::collections::HashMap<LowerFileId, std::sync::Arc<File>>>,
    /// Files reported as changed (one log line each).
    reported: Mutex<std::collections::HashSet<LowerFileId>>,
}

impl Lowers {
    /// Opens the trees at `paths` (absolute; checked by [`check_lowers`]).
    pub fn open(paths: &[PathBuf]) -> io::Result<Lowers> {
        let layers = paths.iter().map(|p| LowerDir::open(p)).collect::<io::Result<_>>()?;
        Ok(Lowers { layers, ..Lowers::default() })
    }

    /// The trees, in layer order.
    pub fn layers(&self) -> &[LowerDir] {
        &self.layers
    }

    /// Fills `buf` with the bytes at `offset` of recorded lower file `f`. Fails with
    /// [`Error::Lower`] when the file is missing, unreadable or no longer the one recorded
    /// (any of device, inode, size, mtime or ctime differs): checked at every read, so a
    /// changed file's bytes are never served. The first failure of a file is logged.
    pub fn read_at(&self, f: &LowerFile, offset: u64, buf: &mut [u8]) -> Result<()> {
        let r = self.read_checked(f, offset, buf);
        if let Err(Error::Lower { path, reason }) = &r
            && self.reported.lock().insert(f.id)
        {
            eprintln!("cowfs: lower file {path}: {reason}; its ranges read as EIO");
        }
        r
    }

    fn read_checked(&self, f: &LowerFile, offset: u64, buf: &mut [u8]) -> Result<()> {
        let rel = Path::new(OsStr::from_bytes(&f.path));
        let layer = self.layers.get(f.layer as usize);
        // The path only for an error: reads that succeed build nothing.
        let fail = |reason: String| {
            let path = layer.map_or_else(|| rel.to_path_buf(), |l| l.path().join(rel));
            Error::Lower { path: path.display().to_string(), reason }
        };
        let Some(layer) = layer else { return Err(fail(format!("lower tree {} is not mounted", f.layer))) };
        let cached = self.open.lock().get(&f.id).cloned();
        let file = match cached {
            Some(file) => file,
            None => {
                let (file, _) = layer.open_file(rel).map_err(|e| fail(e.to_string()))?;
                let file = std::sync::Arc::new(file);
                let mut open = self.open.lock();
                if open.len() >= OPEN_FILES {
                    open.clear();
                }
                open.insert(f.id, file.clone());
                file
            }
        };
        // The identity is compared after the read: a write updates the times before it changes
        // bytes, so a change made before or during this read shows here.
        let read = std::os::unix::fs::FileExt::read_exact_at(&*file, buf, offset);
        let now = identity_of(&fstat(&*file).map_err(|e| fail(e.to_string()))?);
        if now != f.identity {
            self.open.lock().remove(&f.id);
            return Err(fail(format!("changed since it was recorded ({now:?}, recorded {:?})", f.identity)));
        }
        read.map_err(|e| fail(e.to_string()))
    }
}

/// Checks the lower trees of an overlay mount and returns them made absolute: each must exist,
/// be a readable directory, and be neither the mount point, nor inside the store or the mount
/// point, nor contain either of them. The error is one line naming the bad path.
pub fn check_lowers(lowers: &[PathBuf], store: &Path, mountpoint: &Path) -> Result<Vec<PathBuf>, String> {
    let canon = |p: &Path, what: &str| p.canonicalize().map_err(|e| format!("{what} {}: {e}", p.display()));
    let (store, mnt) = (canon(store, "store")?, canon(mountpoint, "mount point")?);
    let mut out: Vec<PathBuf> = Vec::new();
    for l in lowers {
        let p = canon(l, "lower")?;
        let name = l.display();
        if !p.is_dir() {
            return Err(format!("lower {name} is not a directory"));
        }
        LowerDir::open(&p).map_err(|e| format!("lower {name}: {e}"))?;
        for (other, what) in [(&mnt, "the mount point"), (&store, "the store")] {
            if p == *other {
                return Err(format!("lower {name} is {what}"));
            }
            if p.starts_with(other) {
                return Err(format!("lower {name} is inside {what}"));
            }
            if other.starts_with(&p) {
                return Err(format!("lower {name} contains {what}"));
            }
        }
        if out.contains(&p) {
            return Err(format!("lower {name} is given twice"));
        }
        out.push(p);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{FileExt, symlink};

    use super::*;

    fn tree() -> (tempfile::TempDir, LowerDir) {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("lower");
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        std::fs::write(root.join("a/b/f"), b"lower bytes").unwrap();
        symlink("b/f", root.join("a/inside")).unwrap();
        symlink("/etc", root.join("a/escape")).unwrap();
        symlink("../..", root.join("a/up")).unwrap();
        let l = LowerDir::open(&root).unwrap();
        (t, l)
    }

    fn errno(r: io::Result<impl std::fmt::Debug>) -> i32 {
        r.unwrap_err().raw_os_error().unwrap()
    }

    #[test]
    fn reads_the_tree_without_following_symlinks() {
        let (_t, l) = tree();
        assert!(l.lstat(Path::new("")).unwrap().is_dir());
        assert!(l.lstat(Path::new("a/b")).unwrap().is_dir());
        let st = l.lstat(Path::new("a/b/f")).unwrap();
        assert!(st.is_file());
        assert_eq!(st.identity.size, 11);
        let mut names = l.read_dir(Path::new("a")).unwrap();
        names.sort();
        assert_eq!(names, [b"b".to_vec(), b"escape".to_vec(), b"inside".to_vec(), b"up".to_vec()]);
        assert_eq!(l.read_dir(Path::new("")).unwrap(), [b"a".to_vec()]);
        assert_eq!(l.read_link(Path::new("a/escape")).unwrap(), b"/etc");
        let link = l.lstat(Path::new("a/inside")).unwrap();
        assert_eq!(link.mode & libc::S_IFMT, libc::S_IFLNK, "a symlink is shown as one");
        let (f, id) = l.open_file(Path::new("a/b/f")).unwrap();
        let mut buf = [0u8; 11];
        f.read_exact_at(&mut buf, 0).unwrap();
        assert_eq!(&buf, b"lower bytes");
        assert_eq!(id, st.identity);
    }

    #[test]
    fn nothing_outside_the_tree_is_reachable() {
        let (_t, l) = tree();
        // Through a symlink (absolute, relative, or inside the tree): never followed. As the
        // last component opened as a directory it is not one (O_NOFOLLOW); further up the
        // path, RESOLVE_NO_SYMLINKS refuses it.
        assert_eq!(errno(l.lstat(Path::new("a/escape/passwd"))), libc::ENOTDIR);
        assert_eq!(errno(l.lstat(Path::new("a/escape/ssh/x"))), libc::ELOOP);
        assert_eq!(errno(l.lstat(Path::new("a/up/x"))), libc::ENOTDIR);
        assert_eq!(errno(l.open_file(Path::new("a/up/a/b/f"))), libc::ELOOP);
        assert_eq!(errno(l.open_file(Path::new("a/inside"))), libc::ELOOP);
        assert_eq!(errno(l.read_dir(Path::new("a/escape"))), libc::ENOTDIR);
        // By name.
        assert_eq!(errno(l.lstat(Path::new("../x"))), libc::EINVAL);
        assert_eq!(errno(l.open_file(Path::new("/etc/passwd"))), libc::EINVAL);
        assert_eq!(errno(l.open_file(Path::new("a/b"))), libc::EISDIR);
        assert_eq!(errno(l.lstat(Path::new("a/missing"))), libc::ENOENT);
    }

    #[test]
    fn a_changed_file_has_another_identity() {
        let (t, l) = tree();
        let (_, before) = l.open_file(Path::new("a/b/f")).unwrap();
        let path = t.path().join("lower/a/b/f");
        // Same size, mtime put back: the ctime still tells.
        let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::fs::write(&path, b"LOWER bytes").unwrap();
        File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
        let (_, after) = l.open_file(Path::new("a/b/f")).unwrap();
        assert_eq!((after.size, after.mtime), (before.size, before.mtime));
        assert_ne!(after, before);
    }

    #[test]
    fn bad_lowers_are_refused_with_one_line() {
        let t = tempfile::tempdir().unwrap();
        let p = |s: &str| t.path().join(s);
        for d in ["store", "mnt", "lower", "store/inner"] {
            std::fs::create_dir_all(p(d)).unwrap();
        }
        std::fs::write(p("file"), b"").unwrap();
        let check =
            |lowers: &[&str]| check_lowers(&lowers.iter().map(|s| p(s)).collect::<Vec<_>>(), &p("store"), &p("mnt"));
        assert_eq!(check(&["lower"]).unwrap(), [p("lower").canonicalize().unwrap()]);
        for (lowers, says) in [
            (&["missing"][..], "lower "),
            (&["file"], "is not a directory"),
            (&["mnt"], "is the mount point"),
            (&["store"], "is the store"),
            (&["store/inner"], "is inside the store"),
            (&["."], "contains the mount point"),
            (&["lower", "lower"], "is given twice"),
        ] {
            let e = check(lowers).unwrap_err();
            assert!(e.contains(says) && !e.contains('\n'), "{lowers:?}: {e}");
        }
    }
}
