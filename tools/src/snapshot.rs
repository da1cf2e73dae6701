//! `cowfs snapshot create|list|show|delete`: named, O(1) captures of the whole tree, pinned
//! against gc. Functions of an open [`Engine`], served like the history commands.

use anyhow::{Result, bail};
use cowfs_engine::{Engine, Error, FileKind, SnapshotMeta};
use serde_json::{Value, json};

use crate::history::rfc3339;

fn meta_json(s: &SnapshotMeta) -> Value {
    json!({ "name": s.name, "description": s.description, "date": rfc3339(s.time), "id": s.id.0 })
}

/// `snapshot create`.
pub fn create(e: &Engine, name: &str, description: &str) -> Result<Value> {
    match e.snapshot_create(name, description) {
        Ok(s) => Ok(meta_json(&s)),
        Err(Error::Exists(_)) => bail!("snapshot {name:?} already exists"),
        Err(Error::Invalid(_) | Error::NameTooLong(_)) => {
            bail!("invalid snapshot name {name:?} (1 to 255 bytes, no '/', not '.' or '..')")
        }
        Err(err) => Err(err.into()),
    }
}

/// `snapshot list`, oldest first.
pub fn list(e: &Engine) -> Value {
    Value::Array(e.snapshots().iter().map(|s| meta_json(s)).collect())
}

/// `snapshot show`: the snapshot and what it holds.
pub fn show(e: &Engine, name: &str) -> Result<Value> {
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
    let mut v = meta_json(&meta);
    v["files"] = files.into();
    v["directories"] = dirs.saturating_sub(1).into();
    v["logical_size_bytes"] = bytes.into();
    Ok(v)
}

/// `snapshot delete`.
pub fn delete(e: &Engine, name: &str) -> Result<Value> {
    match e.snapshot_delete(name) {
        Ok(()) => Ok(json!({ "deleted": name })),
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
    inode: std::sync::Arc<cowfs_engine::Inode>,
}

/// Every entry of a namespace, parents before children, by path.
fn walk(ns: &cowfs_engine::index::Namespace) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut stack = vec![(String::new(), cowfs_engine::InodeId::ROOT)];
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

/// Removes whatever is at `path` now (a directory with everything in it). Files removed this
/// way keep their history (a grave at their path).
fn remove_tree(e: &Engine, parent: cowfs_engine::InodeId, name: &[u8]) -> Result<u64> {
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

/// `snapshot restore`: the tree becomes what the snapshot captured — contents (as new
/// versions: nothing leaves history), directories, symlinks, hard links, modes, owners,
/// times and xattrs. Without `keep_new`, paths created since are removed (their history
/// stays). Returns the summary and the paths it changed.
pub fn restore(e: &Engine, name: &str, keep_new: bool, dry_run: bool) -> Result<(Value, Vec<String>)> {
    use std::collections::{HashMap, HashSet};

    use cowfs_engine::{InodeId, NewInode, Op, SetAttr};

    let ns = e.snapshot_namespace(name).map_err(|_| anyhow::anyhow!("no snapshot {name:?}"))?;
    let want = walk(&ns);
    let want_paths: HashSet<&str> = want.iter().map(|w| w.path.as_str()).collect();
    let now = walk(&e.namespace());
    let mut touched = Vec::new();
    let mut removed = 0u64;
    // Paths that exist now and not in the snapshot: deepest first, so directories empty out.
    let extra: Vec<&Entry> = now.iter().rev().filter(|n| !want_paths.contains(n.path.as_str())).collect();
    let mut restored = 0u64;
    if dry_run {
        if !keep_new {
            removed = extra.iter().filter(|n| n.inode.kind == FileKind::Regular).count() as u64;
        }
        let now_by_path: HashMap<&str, &Entry> = now.iter().map(|n| (n.path.as_str(), n)).collect();
        for w in &want {
            let differs = match now_by_path.get(w.path.as_str()) {
                Some(n) => {
                    n.inode.kind != w.inode.kind || n.inode.content != w.inode.content || n.inode.size != w.inode.size
                }
                None => true,
            };
            restored += (differs && w.inode.kind == FileKind::Regular) as u64;
        }
        let v = json!({ "snapshot": name, "files_restored": restored, "files_removed": removed, "keep_new": keep_new, "dry_run": true });
        return Ok((v, touched));
    }
    if !keep_new {
        for n in &extra {
            let Ok(parent) =
                crate::history::walk_dirs(e, &n.parent_path, n.parent_path.split('/').filter(|p| !p.is_empty()))
            else {
                continue;
            };
            if e.lookup(parent, &n.name).is_ok() {
                removed += remove_tree(e, parent, &n.name)?;
                touched.push(n.path.clone());
            }
        }
    }
    // Snapshot inode -> the inode that now stands for it (hard links are linked to it).
    let mut mapped: HashMap<InodeId, InodeId> = HashMap::new();
    for w in &want {
        let parent = crate::history::walk_dirs(e, &w.parent_path, w.parent_path.split('/').filter(|p| !p.is_empty()))?;
        let old = w.inode.as_ref();
        let current = e.lookup(parent, &w.name).ok();
        if let Some(&target) = mapped.get(&old.ino) {
            // Another name of a hard-linked file.
            if current.as_ref().map(|c| c.ino) != Some(target) {
                if current.is_some() {
                    remove_tree(e, parent, &w.name)?;
                }
                e.link(target, parent, &w.name)?;
                touched.push(w.path.clone());
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
            touched.push(w.path.clone());
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
                let op = Op::CommitContent { ino, size: old.size, content: old.content, mtime: Some(old.mtime) };
                e.submit(op, false)?;
                restored += 1;
                touched.push(w.path.clone());
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
        let attr = SetAttr {
            mode: Some(old.mode),
            uid: Some(old.uid),
            gid: Some(old.gid),
            atime: Some(old.atime),
            mtime: Some(old.mtime),
        };
        e.setattr(ino, attr)?;
    }
    e.sync()?;
    let v = json!({ "snapshot": name, "files_restored": restored, "files_removed": removed, "keep_new": keep_new, "dry_run": false });
    Ok((v, touched))
}

/// `cowfs diff --snapshot A [--snapshot B]`: what changed in the tree from snapshot A to
/// snapshot B (or to now), like `zfs diff`: added, removed, modified (content, type or target)
/// and renamed (the same inode at another path) paths.
pub fn tree_diff(e: &Engine, a: &str, b: Option<&str>) -> Result<Value> {
    use std::collections::HashMap;

    let ns_a = e.snapshot_namespace(a).map_err(|_| anyhow::anyhow!("no snapshot {a:?}"))?;
    let ns_b = match b {
        Some(b) => e.snapshot_namespace(b).map_err(|_| anyhow::anyhow!("no snapshot {b:?}"))?,
        None => e.namespace(),
    };
    let (wa, wb) = (walk(&ns_a), walk(&ns_b));
    let by_path_b: HashMap<&str, &Entry> = wb.iter().map(|x| (x.path.as_str(), x)).collect();
    let by_path_a: HashMap<&str, &Entry> = wa.iter().map(|x| (x.path.as_str(), x)).collect();
    // Inodes by number, for renames: an inode (not a directory's, whose entries show the
    // move) that is at another path on each side and at neither path on the other.
    let ino_b: HashMap<cowfs_engine::InodeId, &Entry> = wb.iter().map(|x| (x.inode.ino, x)).collect();
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
                    renamed.push(json!({ "from": x.path, "to": y.path }));
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
    Ok(json!({
        "from": a,
        "to": b.unwrap_or("now"),
        "added": added,
        "removed": removed,
        "modified": modified,
        "renamed": renamed,
    }))
}
