//! Making a subtree what it was in another tree: the plan of what differs is computed from
//! the two walks; the changes go through the engine's commands, so each is logged and the
//! content a file had is kept as a version.

use std::collections::{HashMap, HashSet};

use super::{Entry, dir_at, find, walk};
use crate::engine::Engine;
use crate::error::{Error, Missing, Result};
use crate::format::record::{FileKind, Inode};
use crate::ids::InodeId;
use crate::index::Namespace;
use crate::index::ops::{NewInode, SetAttr, XattrMode};

/// What a tree restore did (or, dry, would do).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Restored {
    /// Regular files whose content became a new version (or that were created).
    pub restored: u64,
    /// Regular files removed (they keep their history: a grave at their path).
    pub removed: u64,
    /// Paths changed, in the order they were changed (empty for a dry run).
    pub touched: Vec<String>,
}

/// Makes the subtree at tree path `top` (`""`: the whole tree) of the live tree what it is in
/// `old` — contents (as new versions, logged as restores with `detail`), directories,
/// symlinks, hard links, modes, owners, times and xattrs. Without `keep_new`, paths created
/// since are removed (their history stays). With `dry_run`, nothing changes and the counts
/// say what would. Fails with `NotFound(Path)` or `NotDir` when `top` was not a directory in
/// `old`; ends with a sync. `progress(done, total)` counts the entries removed and restored.
pub fn restore(
    e: &Engine,
    old: &Namespace,
    top: &str,
    keep_new: bool,
    dry_run: bool,
    detail: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    let old_top = find(old, top).ok_or_else(|| Error::NotFound(Missing::Path(top.to_string())))?;
    if old_top.kind != FileKind::Directory {
        return Err(Error::NotDir(old_top.ino));
    }
    let want = walk(old, old_top.ino, top.as_bytes());
    let current = e.namespace();
    let now_top = find(&current, top).filter(|i| i.kind == FileKind::Directory);
    let now = now_top.as_ref().map(|t| walk(&current, t.ino, top.as_bytes())).unwrap_or_default();
    let want_paths: HashSet<&[u8]> = want.iter().map(|w| w.path.as_slice()).collect();
    // Paths that exist now and not then: deepest first, so directories empty out.
    let extra: Vec<&Entry> = now.iter().rev().filter(|n| !want_paths.contains(n.path.as_slice())).collect();
    if dry_run {
        return Ok(would(&want, &now, &extra, keep_new));
    }
    let mut r = Restorer { e, detail, out: Restored::default(), mapped: HashMap::new() };
    let top_now = match now_top {
        Some(t) => t.ino,
        None => r.recreate_top(top, &old_top)?,
    };
    r.mapped.insert(old_top.ino, top_now);
    let total = (if keep_new { 0 } else { extra.len() } + want.len()) as u64;
    let mut done = 0;
    if !keep_new {
        for n in &extra {
            if e.lookup(n.parent, &n.name).is_ok() {
                r.out.removed += remove_tree(e, n.parent, &n.name)?;
                r.out.touched.push(n.shown());
            }
            done += 1;
            progress(done, total);
        }
    }
    for w in &want {
        r.entry(w)?;
        done += 1;
        progress(done, total);
    }
    e.sync()?;
    Ok(r.out)
}

/// What a restore would do: the files it would remove (`extra`, unless `keep_new`), and the
/// regular files of `want` (each inode once) that are not at their path now with the same
/// content.
fn would(want: &[Entry], now: &[Entry], extra: &[&Entry], keep_new: bool) -> Restored {
    let mut out = Restored::default();
    if !keep_new {
        out.removed = extra.iter().filter(|n| n.inode.kind == FileKind::Regular).count() as u64;
    }
    let now_by_path: HashMap<&[u8], &Entry> = now.iter().map(|n| (n.path.as_slice(), n)).collect();
    let mut seen = HashSet::new();
    for w in want.iter().filter(|w| w.inode.kind == FileKind::Regular && seen.insert(w.inode.ino)) {
        out.restored += now_by_path.get(w.path.as_slice()).is_none_or(|n| {
            n.inode.kind != w.inode.kind || n.inode.content != w.inode.content || n.inode.size != w.inode.size
        }) as u64;
    }
    out
}

/// Removes what is at `name` in `parent` now (a directory with everything in it) and returns
/// how many regular files went. They keep their history.
fn remove_tree(e: &Engine, parent: InodeId, name: &[u8]) -> Result<u64> {
    let i = e.lookup(parent, name)?;
    if i.kind != FileKind::Directory {
        e.unlink(parent, name, false)?;
        return Ok((i.kind == FileKind::Regular) as u64);
    }
    let mut removed = 0;
    for c in e.entries(i.ino)?.keys() {
        removed += remove_tree(e, i.ino, c)?;
    }
    e.rmdir(parent, name, false)?;
    Ok(removed)
}

/// A restore under way.
struct Restorer<'a> {
    e: &'a Engine,
    detail: &'a str,
    out: Restored,
    /// An inode of the old tree -> the one that stands for it now (directories hold the
    /// entries restored into them; hard links are linked to it).
    mapped: HashMap<InodeId, InodeId>,
}

impl Restorer<'_> {
    /// The top directory is gone (or something else is there): it comes back first.
    fn recreate_top(&mut self, top: &str, old_top: &Inode) -> Result<InodeId> {
        let (parent_path, name) =
            top.rsplit_once('/').ok_or_else(|| Error::Internal("the root is not a directory".into()))?;
        let parent = dir_at(self.e, parent_path)?;
        if self.e.lookup(parent, name.as_bytes()).is_ok() {
            self.out.removed += remove_tree(self.e, parent, name.as_bytes())?;
        }
        let ino = self.e.mkdir(parent, name.as_bytes(), old_top.mode, old_top.uid, old_top.gid)?.ino;
        self.out.touched.push(top.to_string());
        Ok(ino)
    }

    /// Makes entry `w` of the old tree what it was (its parent is restored already).
    fn entry(&mut self, w: &Entry) -> Result<()> {
        let e = self.e;
        let parent = *self
            .mapped
            .get(&w.parent)
            .ok_or_else(|| Error::Internal("a restored entry's directory was not restored".into()))?;
        let old = w.inode.as_ref();
        let current = e.lookup(parent, &w.name).ok();
        if let Some(&target) = self.mapped.get(&old.ino) {
            // Another name of a hard-linked file.
            if current.as_ref().map(|c| c.ino) != Some(target) {
                if current.is_some() {
                    remove_tree(e, parent, &w.name)?;
                }
                e.link(target, parent, &w.name)?;
                self.out.touched.push(w.shown());
            }
            return Ok(());
        }
        let ino = match current {
            Some(c) if c.kind == old.kind && (old.kind != FileKind::Symlink || c.symlink == old.symlink) => c.ino,
            current => {
                if current.is_some() {
                    remove_tree(e, parent, &w.name)?;
                }
                self.out.touched.push(w.shown());
                self.create(parent, &w.name, old)?
            }
        };
        self.mapped.insert(old.ino, ino);
        if old.kind == FileKind::Regular {
            let cur = e.getattr(ino)?;
            if cur.content != old.content || cur.size != old.size {
                e.restore_content(ino, old.size, old.content, Some(old.mtime), self.detail, false)?;
                self.out.restored += 1;
                self.out.touched.push(w.shown());
            }
        }
        attributes(e, ino, old)
    }

    /// Creates `name` in `parent` as the kind of inode `old` was.
    fn create(&self, parent: InodeId, name: &[u8], old: &Inode) -> Result<InodeId> {
        let inode = match old.kind {
            FileKind::Directory => self.e.mkdir(parent, name, old.mode, old.uid, old.gid)?,
            kind => {
                let attrs = NewInode {
                    kind,
                    mode: old.mode,
                    uid: old.uid,
                    gid: old.gid,
                    rdev: old.rdev,
                    symlink: old.symlink.clone(),
                    lineage: None,
                };
                self.e.create(parent, name, attrs)?
            }
        };
        Ok(inode.ino)
    }
}

/// Gives inode `ino` the xattrs, mode, owner and times `old` had.
fn attributes(e: &Engine, ino: InodeId, old: &Inode) -> Result<()> {
    let cur = e.getattr(ino)?;
    for k in cur.xattrs.keys().filter(|k| !old.xattrs.contains_key(*k)) {
        e.remove_xattr(ino, k)?;
    }
    for (k, v) in &old.xattrs {
        if cur.xattrs.get(k) != Some(v) {
            e.set_xattr(ino, k, v, XattrMode::Any)?;
        }
    }
    let cur = e.getattr(ino)?;
    if (cur.mode, cur.uid, cur.gid, cur.atime, cur.mtime) != (old.mode, old.uid, old.gid, old.atime, old.mtime) {
        let attr = SetAttr {
            mode: Some(old.mode),
            uid: Some(old.uid),
            gid: Some(old.gid),
            atime: Some(old.atime),
            mtime: Some(old.mtime),
        };
        e.setattr(ino, attr)?;
    }
    Ok(())
}
