//! `cowfs gc`, `cowfs policy` and `cowfs-compact`: retention, the stored policy (kept by
//! [`cowfs_engine::policy`]), and reclaiming space. Functions of an open [`Engine`], served
//! like the history commands.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use cowfs_engine::Engine;
use cowfs_engine::compact::Policy as Compaction;
use cowfs_engine::policy::Policy;
use cowfs_engine::storage::DirStorage;

use crate::protocol::{CompactReport, GcReport, GcVersion};

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
pub fn gc(e: &Engine, policy: &Policy, dry_run: bool, force: bool) -> Result<GcReport> {
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
    let versions = plan
        .decisions
        .iter()
        .map(|d| GcVersion {
            path: d.path.clone(),
            deleted: d.deleted,
            version: d.version.number,
            date: d.version.time.rfc3339(),
            size: d.version.size,
            kept: !d.kept.is_empty(),
            reasons: d.kept.iter().map(|r| r.to_string()).collect(),
        })
        .collect();
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
        let r = e.compact(Compaction::FULL, &mut |_, _| {})?;
        out.store_bytes_before = Some(r.bytes_before);
        out.store_bytes_after = Some(r.bytes_after);
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
