//! Overlay directories (docs/OVERLAY.md): a directory that shows lower directories gets their
//! entries as stored entries at its first listing — one transaction of inodes and entries,
//! regular files with content that refers to the whole lower file (nothing read, nothing
//! hashed) — and from then on is an ordinary directory. Mounting reads nothing of the lower
//! trees; a tree is read as far as it is looked at.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Missing, Result};
use crate::format::record::{
    FileKind, Inode, LowerFile, LowerIdentity, LowerSource, MAX_LOWER_PATH_LEN, Record, Timestamp,
};
use crate::format::tree::{self, Extent, ExtentKind, Node};
use crate::ids::{InodeId, NodeId};
use crate::index::Index;
use crate::index::ops::{LowerEntry, Op, Outcome};
use crate::inner::Inner;
use crate::log::meta;
use crate::storage::Storage;
use crate::storage::lower::{Listed, LowerStat, Lowers, Xattrs};
use crate::write::EncodedObject;

/// The type of a lower entry by its mode.
fn kind_of(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::Regular,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFSOCK => FileKind::Socket,
        _ => return None,
    })
}

fn time((secs, nanos): (i64, u32)) -> Timestamp {
    Timestamp { secs, nanos }
}

/// The lower trees an open of `storage` uses: `given`, or (none given) the ones it records.
/// Refuses others than the recorded ones unless `relower`, and a given tree that cannot be
/// opened; a recorded one that cannot be opened fails only what reads it. Returns them and the
/// recorded list (for [`record_lowers`]).
pub(crate) fn lowers_to_open(
    storage: &dyn Storage,
    given: &[PathBuf],
    relower: bool,
) -> Result<(Lowers, Vec<PathBuf>)> {
    let recorded = meta::read_lowers(storage)?;
    if !given.is_empty() && !recorded.is_empty() && recorded != given && !relower {
        let list = |p: &[PathBuf]| p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        return Err(Error::Invalid(format!(
            "the store's lower trees are {}, not {} (--relower replaces them)",
            list(&recorded),
            list(given)
        )));
    }
    let lowers = Lowers::open(if given.is_empty() { &recorded } else { given });
    if !given.is_empty() {
        (0..lowers.len() as u32).try_for_each(|l| lowers.layer(l).map(|_| ()))?;
    }
    Ok((lowers, recorded))
}

/// After an open with lower trees `given` other than the `recorded` ones: the first time, the
/// root shows them (durably; not for a virtual copy, `show` false, whose root holds one lower
/// file instead), then `LOWERS` records them. In that order, a crash between the two leaves a
/// root that shows them and no record, which the next such open completes.
pub(crate) fn record_lowers(inner: &Inner, given: &[PathBuf], recorded: &[PathBuf], show: bool) -> Result<()> {
    if given.is_empty() || recorded == given {
        return Ok(());
    }
    if recorded.is_empty() && show {
        inner.submit(Op::ShowLowers { layers: given.len() as u32 }, true)?;
    }
    meta::write_lowers(inner.shared.storage.as_ref(), given)
}

/// What the root of a virtual copy (`Engine::open_virtual_copy`) holds, from the recovered
/// index alone, so that a refusal comes before anything is written: `Some` its one regular
/// file, `None` an empty root that lower file `name` of tree 0 is to become. Refused: a root
/// holding anything else, a `name` other than the file's, an empty root without `name`.
pub(crate) fn virtual_copy_file(ix: &Index, name: Option<&[u8]>) -> Result<Option<InodeId>> {
    let root = ix.ns().dirs.get(&InodeId::ROOT);
    let entries: Vec<(&[u8], InodeId, FileKind)> =
        root.into_iter().flat_map(|d| d.iter().map(|(n, e)| (&n[..], e.child, e.kind))).collect();
    let shown = |n: &[u8]| String::from_utf8_lossy(n).into_owned();
    match (&entries[..], name) {
        ([(have, ino, FileKind::Regular)], want) => match want {
            Some(want) if want != *have => {
                Err(Error::Invalid(format!("the store is a virtual copy of {}, not of {}", shown(have), shown(want))))
            }
            _ => Ok(Some(*ino)),
        },
        ([], None) => Err(Error::Invalid("the store is empty: name the file it copies (--lower FILE)".into())),
        ([], Some(_)) => Ok(None),
        _ => Err(Error::Invalid(format!(
            "the store holds a tree of {} entries, not one file: mount it on a directory",
            entries.len()
        ))),
    }
}

/// The file of a virtual copy: the root's one regular file, made the first time (an empty
/// root) from lower file `name` of tree 0, durably, as a listing would make it (its
/// attributes, content that refers to the lower file whole, no version until its first
/// save). Refusals: [`virtual_copy_file`]; a lower `name` that is not a regular file.
pub(crate) fn virtual_copy(inner: &Inner, name: Option<&[u8]>) -> Result<InodeId> {
    let found = virtual_copy_file(&inner.shared.index.read(), name)?;
    match (found, name) {
        (Some(ino), _) => Ok(ino),
        (None, Some(name)) => adopt(inner, name),
        (None, None) => Err(inner.shared.internal("an empty virtual copy without a file name")),
    }
}

/// Makes lower file `name` of tree 0 the root's one file (see [`virtual_copy`]).
fn adopt(inner: &Inner, name: &[u8]) -> Result<InodeId> {
    let tree = inner.shared.lowers.layer(0)?;
    let rel = Path::new(std::ffi::OsStr::from_bytes(name));
    let lower =
        |e: std::io::Error| Error::Lower { path: tree.path().join(rel).display().to_string(), reason: e.to_string() };
    let stat = tree.lstat(rel).map_err(lower)?;
    if !stat.is_file() {
        return Err(Error::Invalid(format!("{} is not a regular file", tree.path().join(rel).display())));
    }
    let xattrs = tree.xattrs(rel).map_err(lower)?;
    let mut objects = Vec::new();
    let mut content = None;
    if stat.identity.size > 0 {
        let f = record_files(inner, vec![(0, name.to_vec(), stat.identity)])?.remove(0);
        let (root, nodes) = tree::build(whole(&f));
        for (id, payload) in nodes {
            let node = Node::decode(&payload).expect("a node we just encoded decodes");
            objects.push(EncodedObject::new(Record::Node(id, Arc::new(node)), payload));
        }
        content = root;
    }
    let attrs = lower_attrs(FileKind::Regular, &stat, content, Vec::new(), xattrs);
    let entry = LowerEntry { name: name.to_vec(), attrs, sources: vec![LowerSource { layer: 0, path: name.to_vec() }] };
    inner.request(objects, Some(Op::Adopt { dir: InodeId::ROOT, entry: Box::new(entry) }), true)?;
    let ix = inner.shared.index.read();
    let child = ix.ns().dirs.get(&InodeId::ROOT).and_then(|d| d.get(name)).map(|e| e.child);
    child.ok_or_else(|| inner.shared.internal("the adopted file is not in the root"))
}

/// Records lower files (layer, path, identity), each getting the next id. Not durable by
/// itself: the transaction that refers to them is.
fn record_files(inner: &Inner, files: Vec<(u32, Vec<u8>, LowerIdentity)>) -> Result<Vec<Arc<LowerFile>>> {
    let n = files.len();
    match inner.submit(Op::RecordLowerFiles { files }, false)? {
        Outcome::LowerFiles(f) if f.len() == n => Ok(f),
        other => Err(inner.shared.internal(format!("unexpected outcome {other:?}"))),
    }
}

/// The extent that stands for all of recorded lower file `f` (`None`: it is empty).
fn whole(f: &LowerFile) -> Option<Extent> {
    (f.identity.size > 0).then_some(Extent { len: f.identity.size, kind: ExtentKind::Lower { file: f.id, offset: 0 } })
}

/// `Engine::record_lower_file`: records lower file `path` of tree `layer` with its identity as
/// it is now; returns it and the extent that stands for its whole content.
pub(crate) fn record_file(inner: &Inner, layer: u32, path: &Path) -> Result<(Arc<LowerFile>, Option<Extent>)> {
    let tree = inner.shared.lowers.layer(layer)?;
    let bytes = path.as_os_str().as_bytes();
    if bytes.is_empty() || bytes.len() > MAX_LOWER_PATH_LEN || path.is_absolute() {
        return Err(Error::Invalid(format!("lower file path {}", path.display())));
    }
    let (_, identity) = tree
        .open_file(path)
        .map_err(|e| Error::Lower { path: tree.path().join(path).display().to_string(), reason: e.to_string() })?;
    let f = record_files(inner, vec![(layer, bytes.to_vec(), identity)])?.remove(0);
    let extent = whole(&f);
    Ok((f, extent))
}

/// Lists directory `dir` from its lower directories if it shows any and was not listed yet
/// (see [`Op::Expand`]). One listing at a time: a second caller for the same directory finds
/// it listed. Fails with `Error::Lower` when a lower directory cannot be listed (the
/// directory stays unlisted; nothing is shown partly).
pub(crate) fn list(inner: &Inner, dir: InodeId) -> Result<()> {
    if inner.shared.inode(dir).map(|i| i.unlisted().is_none()).unwrap_or(true) {
        return Ok(());
    }
    let _one = inner.listing.lock();
    let d = inner.shared.inode(dir)?;
    let Some(sources) = d.unlisted() else { return Ok(()) };
    let listed: Vec<(Listed, Vec<_>)> =
        inner.shared.lowers.list(sources)?.into_iter().filter(|(l, _)| kind_of(l.stat.mode).is_some()).collect();
    // The regular files with bytes are recorded first: their content refers to them by id.
    let files: Vec<(u32, Vec<u8>, LowerIdentity)> = listed
        .iter()
        .filter(|(l, _)| l.stat.is_file() && l.stat.identity.size > 0)
        .map(|(l, from)| (from[0].layer, from[0].path.clone(), l.stat.identity))
        .collect();
    let mut recorded = if files.is_empty() { Vec::new() } else { record_files(inner, files)? }.into_iter();
    let mut objects = Vec::new();
    let mut entries = Vec::with_capacity(listed.len());
    for (l, from) in listed {
        let kind = kind_of(l.stat.mode).expect("filtered above");
        let mut content = None;
        if kind == FileKind::Regular && l.stat.identity.size > 0 {
            let f = recorded.next().ok_or_else(|| inner.shared.internal("a lower file went unrecorded"))?;
            let (root, nodes) = tree::build(whole(&f));
            for (id, payload) in nodes {
                let node = Node::decode(&payload).expect("a node we just encoded decodes");
                objects.push(EncodedObject::new(Record::Node(id, Arc::new(node)), payload));
            }
            content = root;
        }
        let symlink = if kind == FileKind::Symlink { l.target } else { Vec::new() };
        let attrs = lower_attrs(kind, &l.stat, content, symlink, l.xattrs);
        entries.push(LowerEntry { name: l.name, attrs, sources: from });
    }
    inner.request(objects, Some(Op::Expand { dir, entries }), false).map(|_| ())
}

/// The attributes of a lower entry of `kind` as `lstat` gave them (see [`LowerEntry`]).
fn lower_attrs(kind: FileKind, stat: &LowerStat, content: Option<NodeId>, symlink: Vec<u8>, xattrs: Xattrs) -> Inode {
    Inode {
        ino: InodeId(0),
        kind,
        mode: stat.mode,
        uid: stat.uid,
        gid: stat.gid,
        nlink: u32::try_from(stat.nlink).unwrap_or(u32::MAX),
        size: if kind == FileKind::Symlink { symlink.len() as u64 } else { stat.identity.size },
        atime: time(stat.atime),
        mtime: stat.identity.mtime,
        ctime: stat.identity.ctime,
        rdev: stat.rdev,
        lineage: None,
        content,
        symlink,
        xattrs,
        lower: None,
    }
}

/// How an entry of an overlay store differs from the lower trees (`cowfs overlay status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Its path in the store's tree (a deleted entry: where it was).
    pub path: String,
    /// What differs.
    pub kind: ChangeKind,
    /// Where it is in the lower trees, when it was moved (renamed) since.
    pub from: Option<String>,
    /// A changed regular file: the bytes of it stored in the store (the rest is read from the
    /// lower file).
    pub stored_bytes: u64,
}

/// What differs (see [`Change`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Made in the store (not in the lower trees).
    Added,
    /// Content changed (a regular file).
    Modified,
    /// Mode, owner, times or extended attributes changed, not the content.
    Metadata,
    /// Moved, nothing else changed.
    Renamed,
    /// In the lower trees, gone from the store (hidden: the lower trees keep it).
    Deleted,
}

impl ChangeKind {
    /// Its name in `--json` and the table.
    pub fn name(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Metadata => "metadata",
            ChangeKind::Renamed => "renamed",
            ChangeKind::Deleted => "deleted",
        }
    }
}

fn join(dir: &str, name: &[u8]) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), String::from_utf8_lossy(name))
}

fn place(s: &LowerSource) -> String {
    format!("/{}", String::from_utf8_lossy(&s.path))
}

/// What differs from the lower trees below tree path `top` (`/`: everything), by path. Reads
/// the store and the lower trees, changes nothing and lists nothing: a directory not listed
/// yet is unchanged by construction. An entry whose lower original cannot be read any more
/// shows as modified.
pub(crate) fn status(inner: &Inner, top: &str) -> Result<Vec<Change>> {
    // One moment of the index: the tree and the lower files it refers to.
    let (ns, files) = {
        let ix = inner.shared.index.read();
        (ix.ns().clone(), ix.lower_files().clone())
    };
    let start = crate::tree::find(&ns, top).ok_or_else(|| Error::NotFound(Missing::Path(top.to_string())))?;
    // Every lower place something in the store still comes from: a lower entry missing from
    // its directory but found here was moved, not deleted.
    let kept: std::collections::HashSet<&LowerSource> =
        ns.inodes.values().filter_map(|i| i.lower.as_deref()).flat_map(|o| &o.sources).collect();
    let mut out = Vec::new();
    let mut stack = vec![(start, format!("/{}", top.trim_matches('/')))];
    while let Some((i, path)) = stack.pop() {
        let Some(origin) = i.lower.as_deref() else {
            if path != "/" {
                out.push(Change { path, kind: ChangeKind::Added, from: None, stored_bytes: 0 });
            } else if let Some(here) = ns.dirs.get(&i.ino) {
                // A root that shows no lower trees (a virtual copy's): its entries, each on its own.
                let children = here.iter().filter_map(|(name, d)| Some((ns.inode(d.child)?.clone(), join("/", name))));
                stack.extend(children);
            }
            continue;
        };
        let at = &origin.sources[0];
        let moved = (place(at) != path).then(|| place(at));
        let lower = inner.shared.lowers.layer(at.layer).and_then(|l| {
            let rel = Path::new(std::ffi::OsStr::from_bytes(&at.path));
            let fail = |e: std::io::Error| Error::Lower {
                path: l.path().join(rel).display().to_string(),
                reason: e.to_string(),
            };
            Ok((l.lstat(rel).map_err(fail)?, l.xattrs(rel).map_err(fail)?))
        });
        let mut change = None;
        let mut stored_bytes = 0;
        if i.kind == FileKind::Regular {
            let mut whole_lower = None;
            let mut pieces = 0;
            inner.reader.for_each_extent(i.content, |at, e| {
                pieces += 1;
                match e.kind {
                    ExtentKind::Chunk { .. } => stored_bytes += e.len,
                    ExtentKind::Lower { file, offset: 0 } if at == 0 => whole_lower = Some((file, e.len)),
                    _ => {}
                }
            })?;
            let same = match &lower {
                Ok((l, _)) if pieces == 0 => i.size == 0 && l.identity.size == 0,
                Ok((l, _)) => {
                    pieces == 1
                        && whole_lower.is_some_and(|(f, len)| {
                            len == i.size && files.get(&f).is_some_and(|f| f.identity == l.identity)
                        })
                }
                Err(_) => false,
            };
            if !same {
                change = Some(ChangeKind::Modified);
            }
        }
        if change.is_none()
            && let Ok((l, xattrs)) = &lower
        {
            let attrs = i.mode != l.mode & 0o7777 || i.uid != l.uid || i.gid != l.gid || i.xattrs != *xattrs;
            let mtime = (i.mtime.secs, i.mtime.nanos) != (l.identity.mtime.secs, l.identity.mtime.nanos);
            if attrs || (i.kind != FileKind::Directory && mtime) {
                change = Some(ChangeKind::Metadata);
            }
        }
        let change = change.or(moved.as_ref().map(|_| ChangeKind::Renamed));
        // (The root's attributes are the store's own.)
        if let Some(kind) = change.filter(|_| path != "/") {
            out.push(Change { path: path.clone(), kind, from: moved, stored_bytes });
        }
        if i.kind != FileKind::Directory || !origin.listed {
            continue;
        }
        let here = ns.dirs.get(&i.ino).cloned().unwrap_or_default();
        for (name, d) in here.iter() {
            if let Some(child) = ns.inode(d.child) {
                stack.push((child.clone(), join(&path, name)));
            }
        }
        // What the lower directories hold that the store no longer has here, nor elsewhere.
        for (l, from) in inner.shared.lowers.list(&origin.sources)? {
            if !here.contains_key(&l.name) && !kept.contains(&from[0]) {
                out.push(Change { path: join(&path, &l.name), kind: ChangeKind::Deleted, from: None, stored_bytes: 0 });
            }
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
