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
use crate::format::record::{LowerFile, LowerIdentity, LowerSource, Timestamp};
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

/// An entry of a lower directory (see [`LowerDir::list`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its name.
    pub name: Vec<u8>,
    /// Its attributes.
    pub stat: LowerStat,
    /// A symlink's target (else empty).
    pub target: Vec<u8>,
    /// Its extended attributes (see [`LowerDir::xattrs`]).
    pub xattrs: Xattrs,
}

/// Extended attributes, by name.
pub type Xattrs = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// The extended attributes of the entry `name` of the directory open as `dir`, not following
/// it if it is a symlink: those in the `user.`, `trusted.` and `security.` namespaces (not
/// `system.`, whose POSIX ACLs cowfs does not enforce). None on a file system without them.
fn xattrs_at(dir: &OwnedFd, name: &OsStr) -> io::Result<Xattrs> {
    use std::os::fd::AsRawFd;
    // The entry through the directory's descriptor: one component below a directory opened
    // beneath the tree's root, so nothing outside it.
    let mut path = std::ffi::OsString::from(format!("/proc/self/fd/{}/", dir.as_raw_fd()));
    path.push(name);
    let path = Path::new(&path);
    let mut buf = vec![0u8; 1 << 16];
    let n = match rustix::fs::llistxattr(path, &mut buf[..]) {
        Err(rustix::io::Errno::NOTSUP) => return Ok(Xattrs::new()),
        r => r?,
    };
    let names: Vec<Vec<u8>> = buf[..n].split(|b| *b == 0).filter(|s| !s.is_empty()).map(<[u8]>::to_vec).collect();
    let mut out = Xattrs::new();
    for k in names {
        if !(k.starts_with(b"user.") || k.starts_with(b"trusted.") || k.starts_with(b"security.")) {
            continue;
        }
        let n = match rustix::fs::lgetxattr(path, &k[..], &mut buf[..]) {
            Err(rustix::io::Errno::NODATA) => continue, // removed meanwhile
            r => r?,
        };
        out.insert(k, buf[..n].to_vec());
    }
    Ok(out)
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

    /// The extended attributes of the entry at `rel` (see [`Listed::xattrs`]).
    pub fn xattrs(&self, rel: &Path) -> io::Result<Xattrs> {
        match self.parent(rel)? {
            (Some(dir), Some(name)) => xattrs_at(&dir, name),
            _ => xattrs_at(&self.root, OsStr::new(".")),
        }
    }

    /// The attributes of the entry at `rel`, not following it if it is a symlink.
    pub fn lstat(&self, rel: &Path) -> io::Result<LowerStat> {
        let st = match self.parent(rel)? {
            (Some(dir), Some(name)) => fstatat(&dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)?,
            _ => fstat(&self.root)?,
        };
        Ok(LowerStat::of(&st))
    }

    /// The entries of directory `rel` (without `.` and `..`) in the order the file system
    /// gives, each with its attributes and, for a symlink, its target. An entry that goes away
    /// while listing is left out.
    pub fn list(&self, rel: &Path) -> io::Result<Vec<Listed>> {
        let fd = openat2(&self.root, or_root(below(rel)?), how(OFlag::O_RDONLY | OFlag::O_DIRECTORY))?;
        let at = fd.try_clone()?;
        let mut dir = nix::dir::Dir::from_fd(fd)?;
        let mut out = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name();
            if name.to_bytes() == b"." || name.to_bytes() == b".." {
                continue;
            }
            let st = match fstatat(&at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
                Err(nix::errno::Errno::ENOENT) => continue,
                r => LowerStat::of(&r?),
            };
            let target = match st.mode & libc::S_IFMT {
                libc::S_IFLNK => match readlinkat(&at, name) {
                    Err(nix::errno::Errno::ENOENT) => continue,
                    r => r?.as_bytes().to_vec(),
                },
                _ => Vec::new(),
            };
            let name = name.to_bytes().to_vec();
            let xattrs = match xattrs_at(&at, OsStr::from_bytes(&name)) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
                r => r?,
            };
            out.push(Listed { name, stat: st, target, xattrs });
        }
        Ok(out)
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
/// the lower files opened for reading. A tree that could not be opened is kept as the reason:
/// what needs it fails with that, what does not works (fsck, the log, versions stored whole).
#[derive(Debug, Default)]
pub struct Lowers {
    layers: Vec<(PathBuf, std::result::Result<LowerDir, String>)>,
    open: Mutex<std::collections::HashMap<LowerFileId, std::sync::Arc<File>>>,
}

impl Lowers {
    /// Opens the trees at `paths` (absolute; checked by [`check_lowers`]).
    pub fn open(paths: &[PathBuf]) -> Lowers {
        let layers = paths.iter().map(|p| (p.clone(), LowerDir::open(p).map_err(|e| e.to_string()))).collect();
        Lowers { layers, ..Lowers::default() }
    }

    /// How many trees.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// True without lower trees (not an overlay store).
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// Tree `layer`, or why it cannot be read.
    pub fn layer(&self, layer: u32) -> Result<&LowerDir> {
        match self.layers.get(layer as usize) {
            Some((_, Ok(dir))) => Ok(dir),
            Some((path, Err(reason))) => Err(Error::Lower { path: path.display().to_string(), reason: reason.clone() }),
            None => Err(Error::Lower {
                path: format!("lower tree {layer}"),
                reason: format!("the store is open with {} lower trees", self.layers.len()),
            }),
        }
    }

    /// The entries that an overlay directory showing `sources` (top layer first) gets from
    /// them (see [`merge`]). A source that cannot be listed fails the whole listing
    /// ([`Error::Lower`]): a directory is never shown with entries silently missing.
    pub fn list(&self, sources: &[LowerSource]) -> Result<Vec<(Listed, Vec<LowerSource>)>> {
        let mut listings = Vec::with_capacity(sources.len());
        for s in sources {
            let tree = self.layer(s.layer)?;
            let rel = Path::new(OsStr::from_bytes(&s.path));
            let listed = tree.list(rel).map_err(|e| Error::Lower {
                path: tree.path().join(rel).display().to_string(),
                reason: e.to_string(),
            })?;
            listings.push((s.clone(), listed));
        }
        Ok(merge(listings))
    }

    /// Opens recorded lower file `f` for a reader that reads it directly (FUSE passthrough),
    /// checked against its recorded identity at this open — after it, that reader sees the
    /// file as it is, unchecked. [`Error::Lower`] when it is missing, unreadable or changed.
    pub fn open_checked(&self, f: &LowerFile) -> Result<File> {
        let rel = Path::new(OsStr::from_bytes(&f.path));
        let layer = self.layer(f.layer)?;
        let fail = |reason: String| Error::Lower { path: layer.path().join(rel).display().to_string(), reason };
        let (file, now) = layer.open_file(rel).map_err(|e| fail(e.to_string()))?;
        if now != f.identity {
            return Err(fail(format!("changed since it was recorded ({})", identity_change(&f.identity, &now))));
        }
        Ok(file)
    }

    /// Whether the file open as `file` is still recorded lower file `f` as recorded: the
    /// check a passthrough reader's last close makes, to report a change it may have read.
    pub fn still(&self, f: &LowerFile, file: &File) -> Result<()> {
        let rel = Path::new(OsStr::from_bytes(&f.path));
        let layer = self.layer(f.layer)?;
        let fail = |reason: String| Error::Lower { path: layer.path().join(rel).display().to_string(), reason };
        let now = identity_of(&fstat(file).map_err(|e| fail(e.to_string()))?);
        if now != f.identity {
            return Err(fail(format!("changed while open ({})", identity_change(&f.identity, &now))));
        }
        Ok(())
    }

    /// Fills `buf` with the bytes at `offset` of recorded lower file `f`. Fails with
    /// [`Error::Lower`] when the file is missing, unreadable or no longer the one recorded
    /// (any of device, inode, size, mtime or ctime differs): checked at every read, so a
    /// changed file's bytes are never served. (The mount logs the error once.)
    pub fn read_at(&self, f: &LowerFile, offset: u64, buf: &mut [u8]) -> Result<()> {
        let rel = Path::new(OsStr::from_bytes(&f.path));
        let layer = self.layer(f.layer)?;
        // The path only for an error: reads that succeed build nothing.
        let fail = |reason: String| Error::Lower { path: layer.path().join(rel).display().to_string(), reason };
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
            return Err(fail(format!("changed since it was recorded ({})", identity_change(&f.identity, &now))));
        }
        read.map_err(|e| fail(e.to_string()))
    }
}

/// Merges the listings of an overlay directory's lower directories, top layer first, into its
/// entries: a name is shown by the first layer that has it; a directory shown so also shows
/// the directories of that name in the layers below, down to the first layer where the name
/// is not a directory (which hides the rest). Each entry comes with where it is: the lower
/// directories it shows, or the one place of a non-directory. Pure.
pub fn merge(listings: Vec<(LowerSource, Vec<Listed>)>) -> Vec<(Listed, Vec<LowerSource>)> {
    let mut out: Vec<(Listed, Vec<LowerSource>)> = Vec::new();
    // Per name: its place in `out`, and whether lower layers still merge into it.
    let mut seen: std::collections::HashMap<Vec<u8>, (usize, bool)> = std::collections::HashMap::new();
    for (source, listed) in listings {
        for l in listed {
            let child = || {
                let mut path = source.path.clone();
                if !path.is_empty() {
                    path.push(b'/');
                }
                path.extend_from_slice(&l.name);
                LowerSource { layer: source.layer, path }
            };
            match seen.get_mut(&l.name) {
                None => {
                    let at = vec![child()];
                    seen.insert(l.name.clone(), (out.len(), l.stat.is_dir()));
                    out.push((l, at));
                }
                Some((at, merging @ true)) => {
                    if l.stat.is_dir() {
                        out[*at].1.push(child());
                    } else {
                        *merging = false;
                    }
                }
                Some(_) => {}
            }
        }
    }
    out
}

/// Checks the lower trees of an overlay mount and returns them made absolute: each must exist,
/// be a readable directory, and be neither the mount point, nor inside the store or the mount
/// point, nor contain either of them. The error is one line naming the bad path.
pub fn check_lowers(lowers: &[PathBuf], store: &Path, mountpoint: &Path) -> Result<Vec<PathBuf>, String> {
    let canon = |p: &Path, what: &str| p.canonicalize().map_err(|e| format!("{what} {}: {e}", p.display()));
    // A store not created yet is where it will be.
    let store = store.canonicalize().or_else(|_| std::path::absolute(store)).map_err(|e| format!("store: {e}"))?;
    let mnt = canon(mountpoint, "mount point")?;
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

/// What differs between a recorded identity and the file now, for messages: "size 35 -> 18,
/// mtime 1796339470.470872931 -> 1796339470.690872940".
fn identity_change(was: &LowerIdentity, now: &LowerIdentity) -> String {
    let t = |t: &Timestamp| format!("{}.{:09}", t.secs, t.nanos);
    let mut out = Vec::new();
    if (was.dev, was.ino) != (now.dev, now.ino) {
        out.push(format!(
            "another file (device {} inode {} -> device {} inode {})",
            was.dev, was.ino, now.dev, now.ino
        ));
    }
    if was.size != now.size {
        out.push(format!("size {} -> {}", was.size, now.size));
    }
    if was.mtime != now.mtime {
        out.push(format!("mtime {} -> {}", t(&was.mtime), t(&now.mtime)));
    }
    if was.ctime != now.ctime {
        out.push(format!("ctime {} -> {}", t(&was.ctime), t(&now.ctime)));
    }
    out.join(", ")
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
        let mut listed = l.list(Path::new("a")).unwrap();
        listed.sort_by(|x, y| x.name.cmp(&y.name));
        let names: Vec<_> = listed.iter().map(|e| &e.name[..]).collect();
        assert_eq!(names, [&b"b"[..], b"escape", b"inside", b"up"]);
        assert!(listed[0].stat.is_dir());
        assert_eq!((&listed[1].target[..], &listed[3].target[..]), (&b"/etc"[..], &b"../.."[..]));
        assert_eq!(listed[2].stat.identity, l.lstat(Path::new("a/inside")).unwrap().identity);
        assert_eq!(l.list(Path::new("")).unwrap().iter().map(|e| e.name.clone()).collect::<Vec<_>>(), [b"a".to_vec()]);
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
        assert_eq!(errno(l.list(Path::new("a/escape"))), libc::ENOTDIR);
        // By name.
        assert_eq!(errno(l.lstat(Path::new("../x"))), libc::EINVAL);
        assert_eq!(errno(l.open_file(Path::new("/etc/passwd"))), libc::EINVAL);
        assert_eq!(errno(l.open_file(Path::new("a/b"))), libc::EISDIR);
        assert_eq!(errno(l.lstat(Path::new("a/missing"))), libc::ENOENT);
    }

    #[test]
    fn layers_merge_top_first_and_a_non_directory_hides_what_is_below() {
        let t = tempfile::tempdir().unwrap();
        let p = |s: &str| t.path().join(s);
        for d in ["0/d/x", "1/d/y", "1/f", "2/d", "2/f", "1/plain", "2/plain/z", "0/shadow", "2/shadow"] {
            std::fs::create_dir_all(p(d)).unwrap();
        }
        std::fs::write(p("0/plain"), b"top").unwrap();
        std::fs::write(p("1/shadow"), b"hides layer 2").unwrap();
        std::fs::write(p("0/d/y"), b"over the directory of layer 1").unwrap();
        let lowers = Lowers::open(&[p("0"), p("1"), p("2")]);
        let root = |layer| LowerSource { layer, path: Vec::new() };
        let mut got = lowers.list(&[root(0), root(1), root(2)]).unwrap();
        got.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        // Each entry as "name[/] <- layer:path ...".
        let show: Vec<String> = got
            .iter()
            .map(|(l, s)| {
                let from: Vec<String> =
                    s.iter().map(|s| format!("{}:{}", s.layer, String::from_utf8_lossy(&s.path))).collect();
                let slash = if l.stat.is_dir() { "/" } else { "" };
                format!("{}{slash} <- {}", String::from_utf8_lossy(&l.name), from.join(" "))
            })
            .collect();
        assert_eq!(show, ["d/ <- 0:d 1:d 2:d", "f/ <- 1:f 2:f", "plain <- 0:plain", "shadow/ <- 0:shadow"]);
        let d = lowers.list(&got[0].1).unwrap();
        let mut names: Vec<_> = d.iter().map(|(l, _)| (l.name.clone(), l.stat.is_dir())).collect();
        names.sort();
        assert_eq!(
            names,
            [(b"x".to_vec(), true), (b"y".to_vec(), false)],
            "layer 0's file y hides layer 1's directory"
        );
        // A layer that is gone fails the listing, naming it, rather than showing less.
        let gone = Lowers::open(&[p("0"), p("missing")]);
        let e = gone.list(&[root(0), root(1)]).unwrap_err().to_string();
        assert!(e.contains("missing"), "{e}");
        assert!(gone.list(&[root(0)]).is_ok());
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
