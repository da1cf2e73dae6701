//! Whole trees: walking a [`Namespace`] (the live tree, a snapshot's or the tree at a time),
//! the difference between two trees ([`diff`], pure), and making a subtree what it was in
//! another ([`restore`], through an [`Engine`]'s commands, so every change is logged and
//! nothing leaves history).
//!
//! A tree path is store-relative: `""` for the root, else `/a/b`. Names are bytes; paths are
//! shown lossily decoded, but entries are matched and changed by their bytes.

mod restore;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::engine::Engine;
use crate::error::{Error, Missing, Result};
use crate::format::record::{FileKind, Inode};
use crate::ids::InodeId;
use crate::index::Namespace;

pub use restore::{Restored, restore};

/// One entry of a tree.
#[derive(Debug, Clone)]
struct Entry {
    /// Its path, as bytes (`/a/b`).
    path: Vec<u8>,
    /// The directory holding it.
    parent: InodeId,
    /// Its name there.
    name: Vec<u8>,
    inode: Arc<Inode>,
}

impl Entry {
    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// Every entry below directory `top` (whose path is `top_path`) of a namespace, parents
/// before children (by depth, then path).
fn walk(ns: &Namespace, top: InodeId, top_path: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![(top_path.to_vec(), top)];
    while let Some((dir_path, dir)) = stack.pop() {
        let Some(entries) = ns.dirs.get(&dir) else { continue };
        for (name, d) in entries.iter() {
            let Some(inode) = ns.inode(d.child) else { continue };
            let path = [dir_path.as_slice(), b"/", name].concat();
            if inode.kind == FileKind::Directory {
                stack.push((path.clone(), d.child));
            }
            out.push(Entry { path, parent: dir, name: name.clone(), inode: inode.clone() });
        }
    }
    let depth = |p: &[u8]| p.iter().filter(|&&b| b == b'/').count();
    out.sort_by(|a, b| depth(&a.path).cmp(&depth(&b.path)).then(a.path.cmp(&b.path)));
    out
}

/// The inode at tree path `path` (`""`: the root) of a namespace.
pub fn find(ns: &Namespace, path: &str) -> Option<Arc<Inode>> {
    let mut at = ns.inode(InodeId::ROOT)?.clone();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let d = ns.lookup(at.ino, part.as_bytes())?;
        at = ns.inode(d.child)?.clone();
    }
    Some(at)
}

/// The directory at tree path `path` of the live tree.
fn dir_at(e: &Engine, path: &str) -> Result<InodeId> {
    let mut dir = InodeId::ROOT;
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let i = match e.lookup(dir, part.as_bytes()) {
            Err(Error::NotFound(_)) => return Err(Error::NotFound(Missing::Path(path.to_string()))),
            r => r?,
        };
        if i.kind != FileKind::Directory {
            return Err(Error::NotDir(i.ino));
        }
        dir = i.ino;
    }
    Ok(dir)
}

/// What changed from one tree to another, like `zfs diff`; each list in walk order (shallower
/// paths first, then by path).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    /// Paths only in the second tree.
    pub added: Vec<String>,
    /// Paths only in the first.
    pub removed: Vec<String>,
    /// Paths (not directories) whose content, type, target, mode, owner or xattrs changed.
    pub modified: Vec<String>,
    /// The same inode at another path (not a directory's, whose entries show the move): from,
    /// to.
    pub renamed: Vec<(String, String)>,
}

/// What changed from tree `a` to tree `b`.
pub fn diff(a: &Namespace, b: &Namespace) -> Diff {
    let (wa, wb) = (walk(a, InodeId::ROOT, b""), walk(b, InodeId::ROOT, b""));
    let by_path_a: HashMap<&[u8], &Entry> = wa.iter().map(|x| (x.path.as_slice(), x)).collect();
    let by_path_b: HashMap<&[u8], &Entry> = wb.iter().map(|x| (x.path.as_slice(), x)).collect();
    let ino_b: HashMap<InodeId, &Entry> = wb.iter().map(|x| (x.inode.ino, x)).collect();
    let mut out = Diff::default();
    let mut renamed_to = HashSet::new();
    for x in &wa {
        match by_path_b.get(x.path.as_slice()) {
            Some(y) => {
                let (i, j) = (&x.inode, &y.inode);
                let changed = i.kind != j.kind
                    || i.content != j.content
                    || i.size != j.size
                    || i.symlink != j.symlink
                    || (i.mode, i.uid, i.gid) != (j.mode, j.uid, j.gid)
                    || i.xattrs != j.xattrs;
                if changed && i.kind != FileKind::Directory {
                    out.modified.push(x.shown());
                }
            }
            // At another path on the other side, and that path not on this side.
            None => match ino_b.get(&x.inode.ino) {
                Some(y) if !by_path_a.contains_key(y.path.as_slice()) => {
                    out.renamed.push((x.shown(), y.shown()));
                    renamed_to.insert(y.path.as_slice());
                }
                _ => out.removed.push(x.shown()),
            },
        }
    }
    for y in &wb {
        if !by_path_a.contains_key(y.path.as_slice()) && !renamed_to.contains(y.path.as_slice()) {
            out.added.push(y.shown());
        }
    }
    out
}

#[cfg(test)]
mod tests;
