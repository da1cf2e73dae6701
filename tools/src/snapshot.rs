//! `cowfs snapshot create|list|show|delete`: named, O(1) captures of the whole tree, pinned
//! against gc. Functions of an open [`Engine`], served like the history commands.

use anyhow::{Result, bail};
use std::sync::Arc;

use anyhow::Context;
use cowfs_engine::Namespace;
use cowfs_engine::{Action, Engine, Error, FileKind, Inode, InodeId, SnapshotMeta};

use crate::protocol::{Deleted, Renamed, SnapshotDetail, SnapshotInfo, SnapshotRestored, TreeDiff};

use crate::paths::dir_at;

fn info(s: &SnapshotMeta) -> SnapshotInfo {
    SnapshotInfo { name: s.name.clone(), description: s.description.clone(), date: s.time.rfc3339(), id: s.id.0 }
}

/// `snapshot create`.
pub fn create(e: &Engine, name: &str, description: &str) -> Result<SnapshotInfo> {
    match e.snapshot_create(name, description) {
        Ok(s) => Ok(info(&s)),
        Err(Error::Exists(_)) => bail!("snapshot {name:?} already exists"),
        Err(Error::Invalid(_) | Error::NameTooLong(_)) => {
            bail!("invalid snapshot name {name:?} (1 to 255 bytes, no '/', not '.' or '..')")
        }
        Err(err) => Err(err.into()),
    }
}

/// `snapshot list`, oldest first.
pub fn list(e: &Engine) -> Vec<SnapshotInfo> {
    e.snapshots().iter().map(|s| info(s)).collect()
}

/// `snapshot show`: the snapshot and what it holds.
pub fn show(e: &Engine, name: &str) -> Result<SnapshotDetail> {
    let Some(meta) = e.snapshots().into_iter().find(|s| s.name == name) else { bail!("no snapshot {name:?}") };
    let ns = e.snapshot_namespace(name)?;
    let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
    for i in ns.inodes.values() {
        match i.kind {
            FileKind::Regular => {
                files += 1;
                bytes += i.size;
            }
            FileKind::Directory => dirs += 1,
            _ => {}
        }
    }
    Ok(SnapshotDetail { info: info(&meta), files, directories: dirs.saturating_sub(1), logical_size_bytes: bytes })
}

/// `snapshot delete`.
pub fn delete(e: &Engine, name: &str) -> Result<Deleted> {
    match e.snapshot_delete(name) {
        Ok(()) => Ok(Deleted { deleted: name.to_string() }),
        Err(Error::NotFound(_)) => bail!("no snapshot {name:?}"),
        Err(err) => Err(err.into()),
    }
}

/// One entry of a tree, by path.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    parent_path: String,
    name: Vec<u8>,
    inode: Arc<Inode>,
}

/// Every entry below directory `top` (whose store path is `top_path`, `""` for the root) of
/// a namespace, parents before children, by path.
fn walk(ns: &Namespace, top: InodeId, top_path: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![(top_path.to_string(), top)];
    while let Some((dir_path, dir)) = stack.pop() {
        if let Some(entries) = ns.dirs.get(&dir) {
            for (name, d) in entries.iter() {
                let Some(inode) = ns.inode(d.child) else { continue };
                let path = format!("{dir_path}/{}", String::from_utf8_lossy(name));
                if inode.kind == FileKind::Directory {
                    stack.push((path.clone(), d.child));
                }
                out.push(Entry { path, parent_path: dir_path.clone(), name: name.clone(), inode: inode.clone() });
            }
        }
    }
    out.sort_by(|a, b| a.path.matches('/').count().cmp(&b.path.matches('/').count()).then(a.path.cmp(&b.path)));
    out
}

/// The inode at store path `path` (`""`: the root) in a namespace.
fn find(ns: &Namespace, path: &str) -> Option<Arc<Inode>> {
    let mut at = ns.inode(InodeId::ROOT)?.clone();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        let d = ns.lookup(at.ino, part.as_bytes())?;
        at = ns.inode(d.child)?.clone();
    }
    Some(at)
}

/// Removes whatever is at `path` now (a directory with everything in it). Files removed this
/// way keep their history (a grave at their path).
fn remove_tree(e: &Engine, parent: InodeId, name: &[u8]) -> Result<u64> {
    let i = e.lookup(parent, name)?;
    let mut removed = 0;
    if i.kind == FileKind::Directory {
        let children: Vec<Vec<u8>> = e.entries(i.ino)?.keys().cloned().collect();
        for c in children {
            removed += remove_tree(e, i.ino, &c)?;
        }
        e.rmdir(parent, name)?;
    } else {
        e.unlink(parent, name, false)?;
        removed += (i.kind == FileKind::Regular) as u64;
    }
    Ok(removed)
}

/// What a tree restore did (or, dry, would do).
#[derive(Debug, Default)]
pub struct TreeRestore {
    /// Regular files whose content became a new version (or were created).
    pub restored: u64,
    /// Regular files removed (they keep their history).
    pub removed: u64,
    /// Store paths changed.
    pub touched: Vec<String>,
}

/// Makes the subtree at store path `top` (`""`: the whole tree) what it is in `old` —
/// contents (as new versions, logged as restores with `detail`: nothing leaves history),
/// directories, symlinks, hard links, modes, owners, times and xattrs. Without `keep_new`,
/// paths created since are removed (their history stays).
pub fn restore_tree(
    e: &Engine,
    old: &Namespace,
    top: &str,
    keep_new: bool,
    dry_run: bool,
    detail: &str,
) -> Result<TreeRestore> {
    use std::collections::{HashMap, HashSet};

    use cowfs_engine::{NewInode, SetAttr};

    let label = if top.is_empty() { "/" } else { top };
    let Some(old_top) = find(old, top).filter(|i| i.kind == FileKind::Directory) else {
        bail!("{label} was not a directory then")
    };
    let want = walk(old, old_top.ino, top);
    let want_paths: HashSet<&str> = want.iter().map(|w| w.path.as_str()).collect();
    let current = e.namespace();
    let now_top = find(&current, top).filter(|i| i.kind == FileKind::Directory);
    let now = now_top.as_ref().map(|t| walk(&current, t.ino, top)).unwrap_or_default();
    let mut out = TreeRestore::default();
    // Paths that exist now and not then: deepest first, so directories empty out.
    let extra: Vec<&Entry> = now.iter().rev().filter(|n| !want_paths.contains(n.path.as_str())).collect();
    if dry_run {
        if !keep_new {
            out.removed = extra.iter().filter(|n| n.inode.kind == FileKind::Regular).count() as u64;
        }
        let now_by_path: HashMap<&str, &Entry> = now.iter().map(|n| (n.path.as_str(), n)).collect();
        let mut seen = HashSet::new();
        for w in want.iter().filter(|w| w.inode.kind == FileKind::Regular && seen.insert(w.inode.ino)) {
            out.restored += now_by_path.get(w.path.as_str()).is_none_or(|n| {
                n.inode.kind != w.inode.kind || n.inode.content != w.inode.content || n.inode.size != w.inode.size
            }) as u64;
        }
        return Ok(out);
    }
    if now_top.is_none() {
        // The directory itself is gone (or something else is there): it comes back first.
        let (parent_path, name) = top.rsplit_once('/').context("the root is always a directory")?;
        let parent = dir_at(e, parent_path)?;
        if e.lookup(parent, name.as_bytes()).is_ok() {
            out.removed += remove_tree(e, parent, name.as_bytes())?;
        }
        e.mkdir(parent, name.as_bytes(), old_top.mode, old_top.uid, old_top.gid)?;
        out.touched.push(top.to_string());
    }
    if !keep_new {
        for n in &extra {
            let Ok(parent) = dir_at(e, &n.parent_path) else { continue };
            if e.lookup(parent, &n.name).is_ok() {
                out.removed += remove_tree(e, parent, &n.name)?;
                out.touched.push(n.path.clone());
            }
        }
    }
    // Old inode -> the inode that now stands for it (hard links are linked to it).
    let mut mapped: HashMap<InodeId, InodeId> = HashMap::new();
    for w in &want {
        let parent = dir_at(e, &w.parent_path)?;
        let old = w.inode.as_ref();
        let current = e.lookup(parent, &w.name).ok();
        if let Some(&target) = mapped.get(&old.ino) {
            // Another name of a hard-linked file.
            if current.as_ref().map(|c| c.ino) != Some(target) {
                if current.is_some() {
                    remove_tree(e, parent, &w.name)?;
                }
                e.link(target, parent, &w.name)?;
                out.touched.push(w.path.clone());
            }
            continue;
        }
        let same_kind = current
            .as_ref()
            .is_some_and(|c| c.kind == old.kind && (old.kind != FileKind::Symlink || c.symlink == old.symlink));
        let ino = if same_kind {
            current.expect("checked").ino
        } else {
            if current.is_some() {
                remove_tree(e, parent, &w.name)?;
            }
            out.touched.push(w.path.clone());
            match old.kind {
                FileKind::Directory => e.mkdir(parent, &w.name, old.mode, old.uid, old.gid)?.ino,
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
                    e.create(parent, &w.name, attrs)?.ino
                }
            }
        };
        mapped.insert(old.ino, ino);
        if old.kind == FileKind::Regular {
            let cur = e.getattr(ino)?;
            if cur.content != old.content || cur.size != old.size {
                e.restore_content(ino, old.size, old.content, Some(old.mtime), detail, false)?;
                out.restored += 1;
                out.touched.push(w.path.clone());
            }
        }
        let cur = e.getattr(ino)?;
        for k in cur.xattrs.keys().filter(|k| !old.xattrs.contains_key(*k)) {
            e.remove_xattr(ino, k)?;
        }
        for (k, v) in &old.xattrs {
            if cur.xattrs.get(k) != Some(v) {
                e.set_xattr(ino, k, v, cowfs_engine::XattrMode::Any)?;
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
    }
    e.sync()?;
    Ok(out)
}

/// `snapshot restore`: the whole tree becomes what the snapshot captured (see
/// [`restore_tree`]). Returns the summary and the paths it changed.
pub fn restore(e: &Engine, name: &str, keep_new: bool, dry_run: bool) -> Result<(SnapshotRestored, Vec<String>)> {
    let ns = e.snapshot_namespace(name).map_err(|_| anyhow::anyhow!("no snapshot {name:?}"))?;
    let r = restore_tree(e, &ns, "", keep_new, dry_run, &format!("snapshot {name}"))?;
    if !dry_run {
        e.note(Action::SnapshotRestore, InodeId::ROOT, name)?;
    }
    let v = SnapshotRestored {
        snapshot: name.to_string(),
        files_restored: r.restored,
        files_removed: r.removed,
        keep_new,
        dry_run,
    };
    Ok((v, r.touched))
}

/// `cowfs diff --snapshot A [--snapshot B]`: what changed in the tree from snapshot A to
/// snapshot B (or to now), like `zfs diff`: added, removed, modified (content, type or target)
/// and renamed (the same inode at another path) paths.
pub fn tree_diff(e: &Engine, a: &str, b: Option<&str>) -> Result<TreeDiff> {
    use std::collections::HashMap;

    let ns_a = e.snapshot_namespace(a).map_err(|_| anyhow::anyhow!("no snapshot {a:?}"))?;
    let ns_b = match b {
        Some(b) => e.snapshot_namespace(b).map_err(|_| anyhow::anyhow!("no snapshot {b:?}"))?,
        None => e.namespace(),
    };
    let (wa, wb) = (walk(&ns_a, InodeId::ROOT, ""), walk(&ns_b, InodeId::ROOT, ""));
    let by_path_b: HashMap<&str, &Entry> = wb.iter().map(|x| (x.path.as_str(), x)).collect();
    let by_path_a: HashMap<&str, &Entry> = wa.iter().map(|x| (x.path.as_str(), x)).collect();
    // Inodes by number, for renames: an inode (not a directory's, whose entries show the
    // move) that is at another path on each side and at neither path on the other.
    let ino_b: HashMap<InodeId, &Entry> = wb.iter().map(|x| (x.inode.ino, x)).collect();
    let (mut added, mut removed, mut modified, mut renamed) = (vec![], vec![], vec![], vec![]);
    let mut renamed_to = std::collections::HashSet::new();
    for x in &wa {
        match by_path_b.get(x.path.as_str()) {
            Some(y) => {
                let (i, j) = (&x.inode, &y.inode);
                let changed = i.kind != j.kind
                    || i.content != j.content
                    || i.size != j.size
                    || i.symlink != j.symlink
                    || i.mode != j.mode
                    || i.uid != j.uid
                    || i.gid != j.gid
                    || i.xattrs != j.xattrs;
                if changed && i.kind != FileKind::Directory {
                    modified.push(x.path.clone());
                }
            }
            None => match ino_b.get(&x.inode.ino) {
                Some(y) if !by_path_a.contains_key(y.path.as_str()) => {
                    renamed.push(Renamed { from: x.path.clone(), to: y.path.clone() });
                    renamed_to.insert(y.path.clone());
                }
                _ => removed.push(x.path.clone()),
            },
        }
    }
    for y in &wb {
        if !by_path_a.contains_key(y.path.as_str()) && !renamed_to.contains(&y.path) {
            added.push(y.path.clone());
        }
    }
    Ok(TreeDiff { from: a.to_string(), to: b.unwrap_or("now").to_string(), added, removed, modified, renamed })
}
