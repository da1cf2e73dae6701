//! `cowfs gc`, `cowfs policy` and `cowfs-compact`: retention, the stored policy, and
//! reclaiming space. Functions of an open [`Engine`], served like the history commands.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cowfs_engine::compact::Policy as Compaction;
use cowfs_engine::gc::{self, Rules};
use cowfs_engine::maintenance::Retention;
use cowfs_engine::{Engine, Timestamp};

use crate::protocol::{CompactReport, GcReport, GcVersion, PolicyFile};

/// The policy file in a store directory.
pub const POLICY_FILE: &str = "POLICY";

/// The stored retention policy: keep rules and exclude globs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep rules the daemon applies in the background.
    pub rules: Rules,
    /// Paths matching one of these keep only their current content.
    pub exclude: Vec<String>,
}

impl Policy {
    /// As the policy file holds it.
    pub fn to_file(&self) -> PolicyFile {
        let r = &self.rules;
        PolicyFile {
            keep_last: r.keep_last,
            keep_after: r.keep_after.map(|t| t.rfc3339()),
            keep_within: r.keep_within.clone(),
            keep_hourly: r.keep_hourly,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            exclude: self.exclude.clone(),
        }
    }

    /// From the policy file's form (or a request's), checked: the time, the span, the globs.
    pub fn from_file(f: &PolicyFile) -> Result<Policy> {
        let keep_after = f.keep_after.as_deref().map(crate::history::parse_time).transpose()?;
        if let Some(w) = &f.keep_within {
            gc::parse_within(w).map_err(anyhow::Error::msg)?;
        }
        for g in &f.exclude {
            check_glob(g)?;
        }
        let rules = Rules {
            keep_last: f.keep_last,
            keep_after,
            keep_within: f.keep_within.clone(),
            keep_hourly: f.keep_hourly,
            keep_daily: f.keep_daily,
            keep_weekly: f.keep_weekly,
            keep_monthly: f.keep_monthly,
        };
        Ok(Policy { rules, exclude: f.exclude.clone() })
    }

    /// The policy stored in `store` (the default, empty one when none is).
    pub fn load(store: &Path) -> Result<Policy> {
        match std::fs::read_to_string(store.join(POLICY_FILE)) {
            Ok(text) => {
                let f: PolicyFile =
                    serde_json::from_str(&text).with_context(|| format!("{POLICY_FILE} is not a policy"))?;
                Policy::from_file(&f).context(POLICY_FILE)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Policy::default()),
            Err(e) => Err(anyhow::Error::new(e).context(POLICY_FILE)),
        }
    }

    /// The policy as the engine's background maintenance applies it.
    pub fn retention(&self) -> Retention {
        let exclude = self.exclude.clone();
        Retention { rules: self.rules.clone(), excluded: Box::new(move |p| exclude.iter().any(|g| excluded(p, g))) }
    }

    /// What gc would do under this policy now.
    pub fn plan(&self, e: &Engine) -> Result<gc::Plan> {
        let r = self.retention();
        Ok(e.gc_plan(&r.rules, Timestamp::now(), &*r.excluded)?)
    }

    /// Stores the policy (written to a temporary file, synced, renamed into place).
    pub fn save(&self, store: &Path) -> Result<()> {
        use std::io::Write;
        let tmp = store.join(format!("{POLICY_FILE}.tmp"));
        let mut f = std::fs::OpenOptions::new().create(true).write(true).truncate(true).open(&tmp)?;
        f.write_all(format!("{}\n", serde_json::to_string_pretty(&self.to_file())?).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, store.join(POLICY_FILE))?;
        std::fs::File::open(store)?.sync_all()?;
        Ok(())
    }
}

fn check_glob(g: &str) -> Result<()> {
    if g.is_empty() || g.trim_matches('/').is_empty() || g.contains('\0') {
        bail!("invalid exclude pattern {g:?}");
    }
    Ok(())
}

/// `*` and `?` within one path component.
fn glob_component(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_component(&pat[1..], s) || (!s.is_empty() && glob_component(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob_component(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob_component(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Whether store path `path` (`/a/b.tmp`) matches an exclude pattern, gitignore-style:
/// `*.tmp` matches a file name anywhere; `target/` matches a directory named `target`
/// anywhere (and everything below it); a pattern with an inner `/` (`/build/out`, `a/b`)
/// matches from the root.
pub fn excluded(path: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let dir_only = pattern.ends_with('/');
    let pat = pattern.trim_matches('/');
    if pat.contains('/') {
        let pp: Vec<&str> = pat.split('/').collect();
        return parts.len() >= pp.len()
            && pp.iter().zip(&parts).all(|(p, s)| glob_component(p.as_bytes(), s.as_bytes()))
            && (!dir_only || parts.len() > pp.len());
    }
    let (dirs, name) = match parts.split_last() {
        Some((name, dirs)) => (dirs, *name),
        None => return false,
    };
    let in_dir = dirs.iter().any(|d| glob_component(pat.as_bytes(), d.as_bytes()));
    in_dir || (!dir_only && glob_component(pat.as_bytes(), name.as_bytes()))
}

/// `cowfs gc`: prunes (or, dry, plans to prune) what `policy` does not keep, then compacts so
/// the space comes back. `force` allows a plan that keeps no history of any live file.
pub fn gc(e: &Engine, policy: &Policy, dry_run: bool, force: bool) -> Result<GcReport> {
    if policy.rules.is_empty() && policy.exclude.is_empty() {
        bail!("no keep rule given and no policy stored (give e.g. --keep-last 10, or set one with `cowfs policy set`)");
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
