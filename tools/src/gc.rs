//! `cowfs gc`, `cowfs forget`, `cowfs policy` and `cowfs-compact`: retention, forgetting a
//! path, the stored policy (kept by [`cowfs_engine::policy`]), and reclaiming space. Functions of an open [`Engine`], served
//! like the history commands.

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cowfs_engine::compact::Policy as Compaction;
use cowfs_engine::gc::{Decision, Reason};
use cowfs_engine::policy::Policy;
use cowfs_engine::storage::DirStorage;
use cowfs_engine::{Engine, FileKind, InodeId, LineageId};

use crate::paths::{resolve, tree_path};
use crate::protocol::{CompactReport, ForgetReport, GcReport, GcVersion};

/// The policy stored in the store directory `store` (the empty one when none is).
pub fn load_policy(store: &Path) -> Result<Policy> {
    Ok(Policy::load(&DirStorage::new(store)?)?)
}

/// Stores `policy` in the store directory `store`.
pub fn save_policy(store: &Path, policy: &Policy) -> Result<()> {
    Ok(policy.save(&DirStorage::new(store)?)?)
}

/// `cowfs gc`: prunes (or, dry, plans to prune) what `policy` does not keep, then compacts so
/// the space comes back. `force` allows a plan that keeps no history of any live file.
pub fn gc(
    e: &Engine,
    policy: &Policy,
    dry_run: bool,
    force: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<GcReport> {
    if policy.rules.is_empty() && policy.exclude.is_empty() {
        bail!(
            "no keep rule given and the stored policy keeps every version (give e.g. --keep-last 10, or set rules with `cowfs policy set`)"
        );
    }
    let still_open = wait_for_orphans(e, ORPHAN_WAIT);
    let plan = policy.plan(e)?;
    if plan.drops_all_history && !force {
        bail!("these rules keep no old version of any file (only current contents): add --force to prune all history");
    }
    let versions = plan.decisions.iter().map(row).collect();
    let mut out = GcReport {
        versions_pruned: plan.versions_pruned,
        versions_pruned_bytes: plan.versions_pruned_bytes,
        reclaimed_bytes: plan.reclaimed_bytes,
        dry_run,
        deleted_files_still_open: still_open as u64,
        versions,
        store_bytes_before: None,
        store_bytes_after: None,
    };
    if !dry_run {
        if !plan.prunes.is_empty() {
            e.prune(plan.prunes)?;
        }
        let r = e.compact(Compaction::FULL, progress)?;
        out.store_bytes_before = Some(r.bytes_before);
        out.store_bytes_after = Some(r.bytes_after);
    }
    Ok(out)
}

fn row(d: &Decision) -> GcVersion {
    GcVersion {
        path: d.path.clone(),
        deleted: d.deleted,
        version: d.version.number,
        date: d.version.time.rfc3339(),
        size: d.version.size,
        kept: !d.kept.is_empty(),
        reasons: d.kept.iter().map(|r| r.to_string()).collect(),
    }
}

/// `cowfs forget`: every version of the file at `path` (live or deleted; with `recursive`, of
/// every file below the directory, deleted ones included) leaves history, but a live file's
/// current content and, unless `include_snapshots`, the versions snapshots hold (with it, the
/// files first leave the snapshots); then a full compaction, so their data is gone from the
/// store. In the activity log as gc entries naming the path.
pub fn forget(
    e: &Engine,
    path: &str,
    recursive: bool,
    include_snapshots: bool,
    dry_run: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ForgetReport> {
    let shown = if tree_path(path)?.is_empty() { "/".to_string() } else { tree_path(path)? };
    let lineages = forget_lineages(e, path, recursive)?;
    let plan = e.forget_plan(&lineages, include_snapshots)?;
    let kept = |f: &dyn Fn(&Reason) -> bool| plan.decisions.iter().filter(|d| d.kept.iter().any(f)).count() as u64;
    let mut out = ForgetReport {
        path: shown.clone(),
        dry_run,
        include_snapshots,
        files: lineages.len() as u64,
        versions_forgotten: plan.versions_pruned,
        versions_forgotten_bytes: plan.versions_pruned_bytes,
        kept_current: kept(&|r| matches!(r, Reason::Current)),
        kept_by_snapshots: kept(&|r| matches!(r, Reason::Snapshot(_))),
        snapshots: e.snapshots_holding(&lineages.iter().copied().collect::<Vec<_>>()),
        versions: plan.decisions.iter().map(row).collect(),
        store_bytes_before: None,
        store_bytes_after: None,
    };
    if !dry_run {
        if include_snapshots && !out.snapshots.is_empty() {
            let detail = format!("forget {shown}: out of snapshots {}", out.snapshots.join(", "));
            e.snapshot_forget(lineages.iter().copied().collect(), &detail)?;
        }
        if !plan.prunes.is_empty() {
            e.prune_noted(plan.prunes, &format!("forget {shown}: {} versions", out.versions_forgotten))?;
        }
        let r = e.compact(Compaction::FULL, progress)?;
        out.store_bytes_before = Some(r.bytes_before);
        out.store_bytes_after = Some(r.bytes_after);
    }
    Ok(out)
}

/// The histories `cowfs forget` takes: the file's at `path` (live, or deleted there), or with
/// `recursive` those of every file below the directory and of every file deleted in it.
fn forget_lineages(e: &Engine, path: &str, recursive: bool) -> Result<HashSet<LineageId>> {
    let p = tree_path(path)?;
    let dir = if p.is_empty() {
        InodeId::ROOT
    } else {
        let r = resolve(e, &p)?;
        match &r.inode {
            Some(i) if i.kind == FileKind::Directory => i.ino,
            Some(i) if i.kind == FileKind::Regular => return Ok(i.lineage.into_iter().collect()),
            Some(_) => bail!("{path} is not a regular file or a directory: it has no history"),
            None => match e.grave(r.parent, &r.name) {
                Some(l) => return Ok([l].into()),
                None => bail!("{path}: no such file, and none was deleted there"),
            },
        }
    };
    if !recursive {
        bail!("{path} is a directory: give --recursive to forget every file below it");
    }
    let ns = e.namespace();
    let mut out = HashSet::new();
    let mut dirs = vec![dir];
    while let Some(d) = dirs.pop() {
        for ent in ns.dirs.get(&d).into_iter().flat_map(|m| m.values()) {
            match ent.kind {
                FileKind::Directory => dirs.push(ent.child),
                FileKind::Regular => out.extend(ns.inode(ent.child).and_then(|i| i.lineage)),
                _ => {}
            }
        }
        out.extend(ns.graves.iter().filter(|((parent, _), _)| *parent == d).map(|(_, l)| *l));
    }
    Ok(out)
}

/// How long gc waits for files deleted while open to be closed.
const ORPHAN_WAIT: Duration = Duration::from_secs(1);

/// Waits up to `limit` until no file deleted while open is still open; returns how many
/// still are. A process's `close()` returns before the kernel tells the daemon (RELEASE
/// comes asynchronously), so `rm f; cowfs gc` right after writing `f` would otherwise find
/// `f` still open and its space not yet free.
fn wait_for_orphans(e: &Engine, limit: Duration) -> usize {
    let start = Instant::now();
    loop {
        let n = e.orphans().len();
        if n == 0 || start.elapsed() >= limit {
            return n;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `cowfs-compact`: a full compaction now.
pub fn compact(e: &Engine, progress: &mut dyn FnMut(u64, u64)) -> Result<CompactReport> {
    let r = e.compact(Compaction::FULL, progress)?;
    Ok(CompactReport {
        bytes_before: r.bytes_before,
        bytes_after: r.bytes_after,
        reclaimed_bytes: r.bytes_before.saturating_sub(r.bytes_after),
        segments_compacted: r.segments_compacted,
        objects_forgotten: r.objects_forgotten,
        forget_pause_us: r.forget_micros,
        switch_pause_us: r.switch_micros,
    })
}
