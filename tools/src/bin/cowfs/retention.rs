//! `cowfs gc`, `cowfs forget` and `cowfs policy`: what they ask of the store and what they
//! print.

use std::path::PathBuf;

use anyhow::{Result, bail};
use cowfs_tools::human;
use cowfs_tools::progress::Progress;
use cowfs_tools::protocol::{ForgetReport, GcReport, GcVersion, PolicyFile, Request};

use super::args::{KeepArgs, PolicyCmd};
use super::{run_command_with, store_for, store_path};

pub(crate) fn gc(
    storage: &PathBuf,
    keep: &KeepArgs,
    dry_run: bool,
    explain: bool,
    force: bool,
    json: bool,
) -> Result<()> {
    let mut policy = keep.to_policy(&[])?;
    if policy == PolicyFile::default() {
        // No rules on the command line: the stored policy's.
        if !storage.is_dir() {
            bail!("{}: no such directory", storage.display());
        }
        policy = cowfs_tools::gc::load_policy(storage)?.to_file();
    }
    let bar = Progress::bytes("compacted");
    let out: GcReport =
        run_command_with(storage, Request::Gc { policy, dry_run, force }, !dry_run, json, &mut |d, t| bar.set(d, t))?;
    drop(bar);
    if json {
        return Ok(());
    }
    if explain {
        explain_versions(&out.versions, "pruned");
    }
    let verb = if dry_run { "would prune" } else { "pruned" };
    outln!(
        "{verb} {} versions ({} of file versions); {} reclaimable",
        out.versions_pruned,
        human::size(out.versions_pruned_bytes),
        human::size(out.reclaimed_bytes)
    );
    if let (Some(before), Some(after)) = (out.store_bytes_before, out.store_bytes_after) {
        outln!("store: {} -> {}", human::size(before), human::size(after));
    }
    if out.deleted_files_still_open > 0 {
        outln!(
            "{} deleted file(s) still open: their space comes back once closed (run gc again then)",
            out.deleted_files_still_open
        );
    }
    Ok(())
}

/// One line per version: kept (and why) or `gone` (`--explain` of gc and forget).
fn explain_versions(versions: &[GcVersion], gone: &str) {
    for v in versions {
        let verdict = if v.kept { format!("kept: {}", v.reasons.join(", ")) } else { gone.to_string() };
        outln!(
            "{}{} v{} {}  {verdict}",
            v.path,
            if v.deleted { " (deleted)" } else { "" },
            v.version,
            human::time(&v.date)
        );
    }
}

/// `cowfs forget`'s choices.
pub(crate) struct ForgetArgs {
    pub(crate) recursive: bool,
    pub(crate) include_snapshots: bool,
    pub(crate) dry_run: bool,
}

pub(crate) fn forget(storage: &PathBuf, path: &str, how: &ForgetArgs, explain: bool, json: bool) -> Result<()> {
    let ForgetArgs { recursive, include_snapshots, dry_run } = *how;
    let req = Request::Forget { path: store_path(storage, path), recursive, include_snapshots, dry_run };
    let bar = Progress::bytes("compacted");
    let out: ForgetReport = run_command_with(storage, req, !dry_run, json, &mut |d, t| bar.set(d, t))?;
    drop(bar);
    if json {
        return Ok(());
    }
    if explain {
        explain_versions(&out.versions, "forgotten");
    }
    let verb = if dry_run { "would forget" } else { "forgot" };
    outln!(
        "{verb} {} versions ({}) of {} file(s) at {}",
        out.versions_forgotten,
        human::size(out.versions_forgotten_bytes),
        out.files,
        out.path
    );
    if out.kept_current > 0 {
        outln!("kept {} current content(s): delete the file(s) first to forget them too", out.kept_current);
    }
    if out.kept_by_snapshots > 0 {
        outln!(
            "kept {} version(s) held by snapshot(s) {}: --include-snapshots forgets them too",
            out.kept_by_snapshots,
            out.snapshots.join(", ")
        );
    } else if out.include_snapshots && !out.snapshots.is_empty() {
        let verb = if dry_run { "would leave" } else { "left" };
        outln!("{verb} snapshot(s) {}", out.snapshots.join(", "));
    }
    if let (Some(before), Some(after)) = (out.store_bytes_before, out.store_bytes_after) {
        outln!("store: {} -> {}", human::size(before), human::size(after));
    }
    Ok(())
}

pub(crate) fn policy(storage: &Option<PathBuf>, cmd: &PolicyCmd, json: bool) -> Result<()> {
    use cowfs_engine::policy::Policy;
    use cowfs_tools::gc::{load_policy, save_policy};
    let storage = &store_for(storage, None)?;
    if !storage.join(cowfs_engine::STORE_FILE).is_file() {
        bail!("{}: not a cowfs store", storage.display());
    }
    let p = match cmd {
        PolicyCmd::Show => load_policy(storage)?,
        PolicyCmd::Set { keep, exclude, keep_all, min_free, max_size, recommended } => {
            let mut f = if *recommended { Policy::recommended() } else { load_policy(storage)? }.to_file();
            let rules = keep.to_policy(exclude)?;
            if rules != PolicyFile::default() || *keep_all {
                f = PolicyFile { min_free: f.min_free, max_size: f.max_size, ..rules };
            } else if min_free.is_none() && max_size.is_none() && !*recommended {
                bail!(
                    "nothing to set: give keep rules, --keep-all, --exclude, --min-free, --max-size or --recommended"
                );
            }
            let none = |v: &String| (v != "none").then(|| v.clone());
            if let Some(v) = min_free {
                f.min_free = none(v);
            }
            if let Some(v) = max_size {
                f.max_size = none(v);
            }
            let p = Policy::from_file(&f)?;
            save_policy(storage, &p)?;
            p
        }
    };
    let v = serde_json::to_value(p.to_file())?;
    if json {
        outln!("{v}");
    } else {
        for (k, val) in v.as_object().into_iter().flatten() {
            outln!(
                "{k:<14} {}",
                if val.is_null() { "-".to_string() } else { val.as_str().map_or(val.to_string(), str::to_string) }
            );
        }
    }
    Ok(())
}
