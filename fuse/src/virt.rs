//! The hidden, read-only `.cowfs/` directory at the mount root: `snapshots/NAME/...` (each
//! snapshot's tree), `at/DATETIME/...` (the whole tree as it was at that moment, rebuilt from
//! the log; not listed, reachable by name) and `versions/PATH/N` (every version of a current
//! file, by number). It is
//! not listed by readdir of the root, only reachable by name. Its inodes are numbered from
//! [`VIRTUAL_BASE`] up, registered on first sight (real inode numbers count up from 1 and
//! never get near). Writes anywhere in it are refused (EROFS, in the adapter).

use std::collections::HashMap;
use std::sync::Arc;

use cowfs_engine::Namespace;
use cowfs_engine::{FileKind, Inode, InodeId, LineageId, NodeId, SnapshotId, Timestamp};
use parking_lot::Mutex;

use cowfs_engine::Engine;

use crate::error::{FsError, Result, errno};

/// First virtual inode number.
pub const VIRTUAL_BASE: u64 = 1 << 62;
/// Name of the hidden directory at the root.
pub const NAME: &[u8] = b".cowfs";

/// True for inodes of the `.cowfs/` tree.
pub fn is_virtual(ino: InodeId) -> bool {
    ino.0 >= VIRTUAL_BASE
}

/// A node of the virtual tree.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum VNode {
    /// `.cowfs`
    Top,
    /// `.cowfs/snapshots`
    Snapshots,
    /// An inode of a frozen tree (a snapshot's, or the tree at a moment).
    Frozen { tree: Tree, ino: InodeId },
    /// `.cowfs/at`
    At,
    /// `.cowfs/versions/...`: mirrors a current directory.
    VersDir(InodeId),
    /// `.cowfs/versions/.../FILE`: a directory of the current file's versions.
    VersFile(InodeId),
    /// One version, as a read-only file.
    Version { file: InodeId, lineage: LineageId, number: u64 },
}

/// A tree that no longer changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Tree {
    /// A snapshot's.
    Snapshot(SnapshotId),
    /// The whole tree at a moment.
    At(Timestamp),
}

/// How many trees-at-a-moment stay cached (each costs a replay of the log to rebuild).
const AT_CACHE: usize = 4;

/// Registry of virtual inode numbers.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    ids: HashMap<VNode, u64>,
    nodes: Vec<VNode>,
    /// Trees at a moment, most recently used last.
    at: Vec<(Timestamp, Namespace)>,
}

/// An open virtual file: what to read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct VFile {
    pub root: Option<NodeId>,
    pub size: u64,
}

fn dir_attrs(ino: InodeId, base: &Inode) -> Inode {
    Inode {
        ino,
        kind: FileKind::Directory,
        mode: 0o555,
        nlink: 2,
        size: 0,
        lineage: None,
        content: None,
        symlink: Vec::new(),
        xattrs: Default::default(),
        lower: None,
        ..base.clone()
    }
}

/// The `.cowfs/` tree over an engine.
#[derive(Debug)]
pub(crate) struct Virt {
    engine: Engine,
    registry: Mutex<Registry>,
}

impl Virt {
    /// The tree over `engine`.
    pub(crate) fn new(engine: Engine) -> Virt {
        Virt { engine, registry: Mutex::new(Registry::default()) }
    }

    fn engine(&self) -> &Engine {
        &self.engine
    }

    pub(crate) fn vid(&self, n: VNode) -> InodeId {
        let mut r = self.registry.lock();
        if let Some(id) = r.ids.get(&n) {
            return InodeId(*id);
        }
        let id = VIRTUAL_BASE + r.nodes.len() as u64;
        r.nodes.push(n.clone());
        r.ids.insert(n, id);
        InodeId(id)
    }

    pub(crate) fn vnode(&self, ino: InodeId) -> Result<VNode> {
        let r = self.registry.lock();
        let i = ino.0.checked_sub(VIRTUAL_BASE).ok_or(FsError::Errno(errno::ENOENT))?;
        r.nodes.get(i as usize).cloned().ok_or(FsError::Errno(errno::ENOENT))
    }

    fn tree_ns(&self, tree: Tree) -> Result<Namespace> {
        match tree {
            Tree::Snapshot(snap) => {
                let name = self
                    .engine()
                    .snapshots()
                    .into_iter()
                    .find(|s| s.id == snap)
                    .map(|s| s.name.clone())
                    .ok_or(FsError::Errno(errno::ENOENT))?;
                Ok(self.engine().snapshot_namespace(&name)?)
            }
            Tree::At(t) => {
                {
                    let mut r = self.registry.lock();
                    if let Some(k) = r.at.iter().position(|(at, _)| *at == t) {
                        let hit = r.at.remove(k);
                        r.at.push(hit.clone());
                        return Ok(hit.1);
                    }
                }
                // Rebuilt outside the lock: it reads the whole log.
                let ns = self.engine().namespace_at(t)?;
                let mut r = self.registry.lock();
                if r.at.len() >= AT_CACHE {
                    r.at.remove(0);
                }
                r.at.push((t, ns.clone()));
                Ok(ns)
            }
        }
    }

    /// The moment a name in `.cowfs/at/` means, if it is one: a date that is not in the future
    /// and not before the store was created.
    fn moment(&self, name: &[u8]) -> Option<Timestamp> {
        let t = Timestamp::parse(std::str::from_utf8(name).ok()?).ok()?;
        (t >= self.engine().meta().created && t <= Timestamp::now()).then_some(t)
    }

    /// Attributes of a virtual inode.
    pub(crate) fn vgetattr(&self, ino: InodeId) -> Result<Inode> {
        let root = self.engine().getattr(InodeId::ROOT)?;
        Ok(match self.vnode(ino)? {
            VNode::Top | VNode::Snapshots | VNode::At => dir_attrs(ino, &root),
            VNode::Frozen { tree, ino: real } => {
                let ns = self.tree_ns(tree)?;
                let i = ns.inode(real).ok_or(FsError::Errno(errno::ENOENT))?;
                Inode { ino, ..(**i).clone() }
            }
            VNode::VersDir(d) => Inode { ino, ..(*self.engine().getattr(d)?).clone() },
            VNode::VersFile(f) => {
                let i = self.engine().getattr(f)?;
                // The file's read bits, with search where it may be read.
                let mode = (i.mode & 0o444) | ((i.mode & 0o444) >> 2);
                Inode { mode, ..dir_attrs(ino, &i) }
            }
            VNode::Version { file, lineage, number } => {
                let i = self.engine().getattr(file)?;
                let v = self.find_version(lineage, number)?;
                Inode {
                    ino,
                    kind: FileKind::Regular,
                    mode: v.mode & 0o444,
                    uid: v.uid,
                    gid: v.gid,
                    nlink: 1,
                    size: v.size,
                    mtime: v.time,
                    ctime: v.time,
                    atime: v.time,
                    content: v.content,
                    lineage: None,
                    symlink: Vec::new(),
                    xattrs: Default::default(),
                    lower: None,
                    ..(*i).clone()
                }
            }
        })
    }

    fn find_version(&self, lineage: LineageId, number: u64) -> Result<Arc<cowfs_engine::Version>> {
        self.engine().versions(lineage).into_iter().find(|v| v.number == number).ok_or(FsError::Errno(errno::ENOENT))
    }

    /// Entries of a virtual directory: (name, inode, kind).
    pub(crate) fn ventries(&self, ino: InodeId) -> Result<Vec<(Vec<u8>, InodeId, FileKind)>> {
        Ok(match self.vnode(ino)? {
            VNode::Top => vec![
                (b"at".to_vec(), self.vid(VNode::At), FileKind::Directory),
                (b"snapshots".to_vec(), self.vid(VNode::Snapshots), FileKind::Directory),
                (b"versions".to_vec(), self.vid(VNode::VersDir(InodeId::ROOT)), FileKind::Directory),
            ],
            VNode::Snapshots => self
                .engine()
                .snapshots()
                .iter()
                .map(|s| {
                    (
                        s.name.as_bytes().to_vec(),
                        self.vid(VNode::Frozen { tree: Tree::Snapshot(s.id), ino: InodeId::ROOT }),
                        FileKind::Directory,
                    )
                })
                .collect(),
            // Moments are reachable by name only (there are too many to list).
            VNode::At => Vec::new(),
            VNode::Frozen { tree, ino: dir } => {
                let mut ns = self.tree_ns(tree)?;
                if ns.inode(dir).is_some_and(|i| i.unlisted().is_some()) {
                    // An overlay directory not listed yet, then or now: listing it (the live
                    // directory, the same inode) gives this tree its entries too.
                    self.engine().listed(dir)?;
                    self.registry.lock().at.retain(|(t, _)| Tree::At(*t) != tree);
                    ns = self.tree_ns(tree)?;
                }
                let entries = ns.dirs.get(&dir).cloned().unwrap_or_default();
                entries
                    .iter()
                    .map(|(n, d)| (n.clone(), self.vid(VNode::Frozen { tree, ino: d.child }), d.kind))
                    .collect()
            }
            VNode::VersDir(dir) => self
                .engine()
                .entries(dir)?
                .iter()
                .filter_map(|(n, d)| match d.kind {
                    FileKind::Directory => Some((n.clone(), self.vid(VNode::VersDir(d.child)), FileKind::Directory)),
                    FileKind::Regular => Some((n.clone(), self.vid(VNode::VersFile(d.child)), FileKind::Directory)),
                    _ => None,
                })
                .collect(),
            VNode::VersFile(f) => {
                let lineage = self.engine().getattr(f)?.lineage.ok_or(FsError::Errno(errno::ENOENT))?;
                self.engine()
                    .versions(lineage)
                    .iter()
                    .map(|v| {
                        let n = VNode::Version { file: f, lineage, number: v.number };
                        (v.number.to_string().into_bytes(), self.vid(n), FileKind::Regular)
                    })
                    .collect()
            }
            VNode::Version { .. } => return Err(FsError::Errno(errno::ENOTDIR)),
        })
    }

    /// Looks a name up in a virtual directory.
    pub(crate) fn vlookup(&self, parent: InodeId, name: &[u8]) -> Result<Inode> {
        if self.vnode(parent)? == VNode::At {
            let t = self.moment(name).ok_or(FsError::Errno(errno::ENOENT))?;
            return self.vgetattr(self.vid(VNode::Frozen { tree: Tree::At(t), ino: InodeId::ROOT }));
        }
        let found = self.ventries(parent)?.into_iter().find(|(n, _, _)| n == name);
        let (_, ino, _) = found.ok_or(FsError::Errno(errno::ENOENT))?;
        self.vgetattr(ino)
    }

    /// The directory holding virtual directory `dir` (an exported handle's `..`); ENOENT for a
    /// directory of one file's versions, which has no single parent (the file may have several
    /// names).
    pub(crate) fn vparent(&self, dir: InodeId) -> Result<InodeId> {
        Ok(match self.vnode(dir)? {
            VNode::Top => InodeId::ROOT,
            VNode::Snapshots | VNode::At => self.vid(VNode::Top),
            VNode::Frozen { tree, ino } if ino == InodeId::ROOT => {
                self.vid(if matches!(tree, Tree::At(_)) { VNode::At } else { VNode::Snapshots })
            }
            VNode::Frozen { tree, ino } => {
                let up = self.tree_ns(tree)?.parent.get(&ino).copied().ok_or(FsError::Errno(errno::ENOENT))?;
                self.vid(VNode::Frozen { tree, ino: up })
            }
            VNode::VersDir(d) if d == InodeId::ROOT => self.vid(VNode::Top),
            VNode::VersDir(d) => {
                self.vid(VNode::VersDir(self.engine().parent(d).ok_or(FsError::Errno(errno::ENOENT))?))
            }
            VNode::VersFile(_) => return Err(FsError::Errno(errno::ENOENT)),
            VNode::Version { .. } => return Err(FsError::Errno(errno::ENOTDIR)),
        })
    }

    /// What an open of a virtual file reads.
    pub(crate) fn vfile(&self, ino: InodeId) -> Result<VFile> {
        let a = self.vgetattr(ino)?;
        match a.kind {
            FileKind::Regular => Ok(VFile { root: a.content, size: a.size }),
            FileKind::Directory => Err(FsError::Errno(errno::EISDIR)),
            _ => Err(FsError::Errno(errno::EINVAL)),
        }
    }
}
