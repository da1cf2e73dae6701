//! `cowfs remote`, `cowfs sync`, `cowfs clone`, `cowfs conflicts`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cowfs_engine::storage::DirStorage;
use cowfs_engine::{Engine, Options};
use cowfs_tools::progress::Progress;
use cowfs_tools::protocol::Request;
use cowfs_tools::sync::remote::{self, RemoteConfig};
use cowfs_tools::sync::{self as sync_, Direction, Report};

use crate::args::{RemoteCmd, S3Args};
use crate::{run_command_with, store_for};

fn config(name: &str, url: &str, s3: &S3Args) -> Result<RemoteConfig> {
    remote::parse_url(url)?;
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok) || name.starts_with('.') {
        bail!("bad remote name {name:?}: 1 to 64 letters, digits, '-', '_' or '.', not starting with '.'");
    }
    if let Some(e) = &s3.endpoint {
        if !(e.starts_with("https://") || e.starts_with("http://")) {
            bail!("bad endpoint {e:?}: an http:// or https:// URL");
        }
        if e.starts_with("http://") && !s3.allow_http {
            bail!("endpoint {e} is plain http: give --allow-http to use it");
        }
    }
    Ok(RemoteConfig {
        name: name.to_string(),
        url: url.to_string(),
        endpoint: s3.endpoint.clone(),
        region: s3.region.clone(),
        allow_http: s3.allow_http,
    })
}

fn check_store(storage: &Path) -> Result<()> {
    if !storage.join(cowfs_engine::STORE_FILE).is_file() {
        bail!("{}: not a cowfs store", storage.display());
    }
    Ok(())
}

/// `cowfs remote add|list|remove`.
pub(crate) fn remote_cmd(storage: &Option<PathBuf>, cmd: &RemoteCmd, json: bool) -> Result<()> {
    let storage = &store_for(storage, None)?;
    check_store(storage)?;
    let mut all = remote::read_remotes(storage)?;
    match cmd {
        RemoteCmd::Add { name, url, s3 } => {
            let cfg = config(name, url, s3)?;
            if all.iter().any(|r| r.name == *name) {
                bail!("the store has a remote named {name:?} already (cowfs remote remove {name} first)");
            }
            all.push(cfg.clone());
            remote::write_remotes(storage, &all)?;
            if json {
                outln!("{}", serde_json::to_string(&cfg)?);
            } else {
                outln!("added remote {name} ({url})");
            }
        }
        RemoteCmd::List => {
            if json {
                outln!("{}", serde_json::to_string(&all)?);
            }
            for r in all.iter().filter(|_| !json) {
                outln!("{}\t{}", r.name, r.url);
            }
        }
        RemoteCmd::Remove { name } => {
            let Some(at) = all.iter().position(|r| r.name == *name) else {
                bail!("no remote named {name:?} (cowfs remote list)");
            };
            let gone = all.remove(at);
            remote::write_remotes(storage, &all)?;
            if json {
                outln!("{}", serde_json::to_string(&gone)?);
            } else {
                outln!("removed remote {name} (nothing on it was removed)");
            }
        }
    }
    Ok(())
}

fn print_report(r: &Report) {
    let verb = if r.dry_run { "would push" } else { "pushed" };
    outln!(
        "{verb} {} batch(es) ({} of content) to {}",
        r.batches_pushed,
        cowfs_tools::human::size(r.bytes_pushed),
        r.remote
    );
    let verb = if r.dry_run { "would pull" } else { "pulled" };
    outln!("{verb} {} batch(es) ({} of content)", r.batches_pulled, cowfs_tools::human::size(r.bytes_pulled));
    if !r.dry_run {
        outln!("{} created, {} updated, {} moved, {} removed", r.created, r.updated, r.moved, r.removed);
    }
    if r.conflicts > 0 {
        outln!("{} conflict(s): cowfs conflicts lists them", r.conflicts);
    }
    for s in &r.skipped {
        outln!("not synced: {s}");
    }
}

/// `cowfs sync`: through the daemon when the store is mounted, else on the store directly.
pub(crate) fn sync(
    storage: &Option<PathBuf>,
    name: Option<&str>,
    dir: Direction,
    dry_run: bool,
    json: bool,
) -> Result<()> {
    let storage = &store_for(storage, None)?;
    check_store(storage)?;
    let remote = remote::find_remote(storage, name)?;
    let bar = Progress::items("synced");
    let req = Request::Sync { remote, aws_env: remote::Remote::aws_env(), direction: dir, dry_run };
    let r: Report = run_command_with(storage, req, !dry_run, json, &mut |d, t| bar.set(d, t))?;
    drop(bar);
    if !json {
        print_report(&r);
    }
    Ok(())
}

/// `cowfs clone URL STORE`: a new store with the remote as "origin", synced. A clone that
/// fails leaves no store behind.
pub(crate) fn clone(url: &str, store: &Path, s3: &S3Args, json: bool) -> Result<()> {
    let cfg = config("origin", url, s3)?;
    let existed = store.exists();
    if existed && std::fs::read_dir(store).with_context(|| format!("{}", store.display()))?.next().is_some() {
        bail!("{}: not empty: clone makes a new store", store.display());
    }
    let made = (|| -> Result<Report> {
        std::fs::create_dir_all(store).with_context(|| format!("creating {}", store.display()))?;
        let e = Engine::open(Arc::new(DirStorage::new(store)?), Options::default())
            .with_context(|| format!("creating a store in {}", store.display()))?;
        let run = || -> Result<Report> {
            cowfs_tools::gc::save_policy(store, &cowfs_engine::policy::Policy::recommended())?;
            remote::write_remotes(store, std::slice::from_ref(&cfg))?;
            let bar = Progress::items("cloned");
            let env = remote::Remote::aws_env();
            let (r, _) = sync_::run(&e, store, &cfg, &env, Direction::Both, false, &mut |d, t| bar.set(d, t))?;
            Ok(r)
        };
        let r = run();
        e.close()?;
        r
    })();
    let r = match made {
        Ok(r) => r,
        Err(err) => {
            let _ = std::fs::remove_dir_all(store);
            if existed {
                let _ = std::fs::create_dir(store);
            }
            return Err(err);
        }
    };
    if json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!("cloned {url} into {}: {} entries", store.display(), r.created);
        print_report(&r);
    }
    Ok(())
}

/// `cowfs conflicts`.
pub(crate) fn conflicts(storage: &Option<PathBuf>, json: bool) -> Result<()> {
    let storage = &store_for(storage, None)?;
    check_store(storage)?;
    let meta = cowfs_engine::read_meta(&DirStorage::new(storage)?)?;
    let meta = meta.with_context(|| format!("{}: not a cowfs store", storage.display()))?;
    let all = sync_::conflicts(storage, meta.device.0)?;
    if json {
        outln!("{}", serde_json::to_string(&all)?);
        return Ok(());
    }
    for c in all {
        outln!("{}\t{}", c.path, c.reason);
    }
    Ok(())
}

/// `cowfs resolve PATH --keep mine|theirs|DEVICE-SEQ`.
pub(crate) fn resolve(storage: &PathBuf, path: &str, keep: &str, json: bool) -> Result<()> {
    let path = crate::store_path(storage, path);
    let req = Request::Resolve { path, keep: keep.to_string() };
    let r: sync_::Resolved = run_command_with(storage, req, true, json, &mut |_, _| {})?;
    if !json {
        outln!(
            "{}: kept version {}; removed {}",
            r.path,
            r.kept,
            if r.removed.is_empty() { "nothing".into() } else { r.removed.join(", ") }
        );
    }
    Ok(())
}
