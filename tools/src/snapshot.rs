//! `cowfs snapshot create|list|show|delete`: named, O(1) captures of the whole tree, pinned
//! against gc. Functions of an open [`Engine`], served like the history commands.

use anyhow::{Result, bail};
use cowfs_engine::tree::{self, Restored};
use cowfs_engine::{Action, Engine, Error, FileKind, InodeId, Namespace, SnapshotMeta};

use crate::protocol::{Deleted, Renamed, SnapshotDetail, SnapshotInfo, SnapshotRestored, TreeDiff};

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
                bytes = bytes.saturating_add(i.size);
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

/// A tree restore of the subtree at tree path `top` to what it is in `old` (see
/// [`cowfs_engine::tree::restore`]), with the CLI's message when `top` was not a directory.
pub fn restore_tree(
    e: &Engine,
    old: &Namespace,
    top: &str,
    keep_new: bool,
    dry_run: bool,
    detail: &str,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Restored> {
    if tree::find(old, top).is_none_or(|i| i.kind != FileKind::Directory) {
        bail!("{} was not a directory then", if top.is_empty() { "/" } else { top });
    }
    Ok(tree::restore(e, old, top, keep_new, dry_run, detail, progress)?)
}

/// `snapshot restore`: the whole tree becomes what the snapshot captured (see
/// [`restore_tree`]). Returns the summary and the paths it changed.
pub fn restore(
    e: &Engine,
    name: &str,
    keep_new: bool,
    dry_run: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(SnapshotRestored, Vec<String>)> {
    let ns = e.snapshot_namespace(name).map_err(|_| anyhow::anyhow!("no snapshot {name:?}"))?;
    let r = restore_tree(e, &ns, "", keep_new, dry_run, &format!("snapshot {name}"), progress)?;
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
/// snapshot B (or to now), like `zfs diff` (see [`cowfs_engine::tree::diff`]).
pub fn tree_diff(e: &Engine, a: &str, b: Option<&str>) -> Result<TreeDiff> {
    let ns_a = e.snapshot_namespace(a).map_err(|_| anyhow::anyhow!("no snapshot {a:?}"))?;
    let ns_b = match b {
        Some(b) => e.snapshot_namespace(b).map_err(|_| anyhow::anyhow!("no snapshot {b:?}"))?,
        None => e.namespace(),
    };
    let d = tree::diff(&ns_a, &ns_b);
    Ok(TreeDiff {
        from: a.to_string(),
        to: b.unwrap_or("now").to_string(),
        added: d.added,
        removed: d.removed,
        modified: d.modified,
        renamed: d.renamed.into_iter().map(|(from, to)| Renamed { from, to }).collect(),
    })
}
