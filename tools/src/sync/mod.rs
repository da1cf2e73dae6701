//! Sync (issue 23): one tree on several devices through a remote (docs/SYNC.md).
//!
//! A sync (1) compares the store's tree with what it showed after the last sync and records
//! the differences as this device's changes ([`model::Change`]), (2) pushes the changes not on
//! the remote yet — first the packs of the content they need that the remote lacks, then the
//! batch naming them —, (3) pulls the other devices' new batches, and (4) makes the tree show
//! the union ([`model::Merged::view`]), fetching the content it lacks. What it knows is kept
//! in `STORE/SYNC` and `STORE/SYNC-UNION` (`state`), written after each step that changed it
//! and after the tree is durable. The steps: `scan`, `packs` (push, and the fetch an apply
//! does), `apply`; the remote: `remote`.

mod apply;
pub mod model;
mod packs;
pub mod remote;
mod scan;
mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{Context, Result, bail};
use cowfs_engine::{Engine, FileKind, InodeId, NodeId, Timestamp};
use serde::{Deserialize, Serialize};

use model::{Change, Gid, Key, Kind, Version};
use remote::{Remote, RemoteConfig};
pub use state::write_atomic;
use state::{Batch, State};

/// The file of a store that holds what its syncs know.
pub const STATE: &str = "SYNC";
/// The format of the remote's marker this build writes and reads.
const REMOTE_FORMAT: u32 = 1;
/// The format of the batches it writes (2: version ids are the engine's; format 1's were made
/// by sync, read with [`state::legacy_vids`]).
const BATCH_FORMAT: u32 = 2;
/// The remote's marker object.
const MARKER: &str = "cowfs-remote.json";
/// Packs are cut at about this size...
const PACK_BYTES: usize = 16 << 20;
/// ... and this many are uploaded at once.
const UPLOADS: usize = 4;
/// Names the scan skips: where an apply parks entries while it moves others.
const STAGING: &str = ".cowfs-sync-staging";

/// A batch as a remote holds it (`devices/DEVICE/batch-SEQ.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteBatch {
    format: u32,
    device: u64,
    seq: u64,
    /// The packs holding the content its versions need that the remote lacked, with the ids
    /// in each.
    packs: Vec<PackRef>,
    changes: Vec<Change>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackRef {
    key: String,
    ids: Vec<String>,
}

/// The remote's marker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Marker {
    format: u32,
    /// FastCDC min, avg, max: stores that sync share them (content ids depend on them).
    chunking: [u32; 3],
}

/// Which way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Push and pull.
    Both,
    /// Upload this device's changes only.
    Push,
    /// Apply the other devices' changes only (this device's are recorded, not uploaded).
    Pull,
}

/// What a sync did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The remote.
    pub remote: String,
    /// Changes of this device recorded by this sync.
    pub changes_recorded: u64,
    /// Batches uploaded, and the bytes of their packs.
    pub batches_pushed: u64,
    pub bytes_pushed: u64,
    /// Other devices' batches applied.
    pub batches_pulled: u64,
    /// Bytes of content downloaded.
    pub bytes_pulled: u64,
    /// Entries the tree gained, changed (content, mode), moved and lost.
    pub created: u64,
    pub updated: u64,
    pub moved: u64,
    pub removed: u64,
    /// Conflict copies shown now.
    pub conflicts: u64,
    /// Requests made to the remote.
    pub requests: u64,
    /// Entries not synced, with why (special files, hard links, names that are not UTF-8).
    pub skipped: Vec<String>,
    /// A dry run: nothing was changed or uploaded.
    pub dry_run: bool,
}

/// One conflict the tree shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conflict {
    /// Where the copy is.
    pub path: String,
    /// Why it is not under its own name.
    pub reason: String,
}

/// A hybrid-clock value for wall-clock time `t`: milliseconds << 16, the fraction of the
/// millisecond in the low 16 bits.
fn clock_of(t: Timestamp) -> u64 {
    let ms = t.secs.max(0) as u64 * 1000 + u64::from(t.nanos / 1_000_000);
    (ms << 16) + u64::from(t.nanos % 1_000_000) * 65_536 / 1_000_000
}

fn hex(b: &[u8; 32]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<[u8; 32]> {
    let bad = || anyhow::anyhow!("bad object id {s:?}");
    if s.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

fn kind_of(k: FileKind) -> Option<Kind> {
    match k {
        FileKind::Regular => Some(Kind::File),
        FileKind::Directory => Some(Kind::Dir),
        FileKind::Symlink => Some(Kind::Symlink),
        _ => None,
    }
}

/// Refuses a store sync cannot work on: an overlay store still using its lower trees.
fn check_store(store: &Path) -> Result<()> {
    let storage = cowfs_engine::storage::DirStorage::new(store)?;
    if !cowfs_engine::read_lowers(&storage)?.is_empty() {
        bail!("an overlay store syncs once it no longer needs its lower trees (cowfs overlay absorb)");
    }
    Ok(())
}

/// Runs one sync of the store at `store` (open as `e`) with remote `cfg` (S3 credentials
/// from `aws_env`, see [`Remote::aws_env`]). Returns what it did
/// and the store paths whose entries it changed (for a mount to drop from its caches).
pub fn run(
    e: &Engine,
    store: &Path,
    cfg: &RemoteConfig,
    aws_env: &BTreeMap<String, String>,
    dir: Direction,
    dry_run: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Report, Vec<String>)> {
    check_store(store)?;
    let remote = Remote::open(cfg, aws_env)?;
    run_with(e, store, &cfg.name, &remote, dir, dry_run, progress)
}

/// [`run`] with `remote` (called `name` in the store) open already.
fn run_with(
    e: &Engine,
    store: &Path,
    name: &str,
    remote: &Remote,
    dir: Direction,
    dry_run: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Report, Vec<String>)> {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let device = e.meta().device.0;
    let mut st = State::load(store, device)?;
    let mut report = Report { remote: name.to_string(), dry_run, ..Report::default() };
    check_marker(e, remote, !dry_run)?;

    // 1. This device's changes since the last sync (a dry run changes the state only in
    // memory).
    let first_time = !st.remotes.contains_key(name);
    let (changes, base_changed) = scan::scan(e, &mut st, &mut report)?;
    report.changes_recorded = changes.len() as u64;
    let pushed = st.remotes.get(name).map_or(0, |r| r.pushed);
    // The other devices' batches not applied yet (one listing each).
    let mut new_batches = Vec::new();
    if dir != Direction::Push {
        for d in other_devices(remote, device)? {
            let from = st.remotes.get(name).and_then(|r| r.pulled.get(&d).copied()).unwrap_or(0);
            let keys = batch_keys(remote, &d, from)?;
            if !keys.is_empty() {
                new_batches.push((d, from, keys));
            }
        }
    }
    if dry_run {
        report.batches_pushed = (st.batches + u64::from(!changes.is_empty())).saturating_sub(pushed);
        report.batches_pulled = new_batches.iter().map(|(_, _, k)| k.len() as u64).sum();
        report.requests = remote.requests();
        return Ok((report, Vec::new()));
    }
    let to_push = dir != Direction::Pull && (st.batches > pushed || !changes.is_empty());
    if !first_time && !base_changed && changes.is_empty() && !to_push && new_batches.is_empty() {
        // Nothing new on either side: the tree shows the union already.
        report.requests = remote.requests();
        return Ok((report, Vec::new()));
    }
    st.read_union()?;
    let mut rs = st.remotes.get(name).cloned().unwrap_or_default();
    if !changes.is_empty() {
        for c in &changes {
            st.merge(c);
        }
        st.batches += 1;
        let seq = st.batches;
        st.mine.push(Batch { seq, changes });
    }
    // Saved before anything is uploaded: a batch pushed is always one the state holds.
    if first_time || base_changed || report.changes_recorded > 0 {
        st.remotes.insert(name.to_string(), rs.clone());
        st.save(store)?;
    }

    // 2. Push.
    if dir != Direction::Pull {
        let todo: Vec<Batch> = st.mine.iter().filter(|b| b.seq > rs.pushed).cloned().collect();
        for (i, b) in todo.iter().enumerate() {
            progress(i as u64, todo.len() as u64);
            report.bytes_pushed += packs::push_batch(e, remote, &mut rs, device, b)?;
            rs.pushed = b.seq;
            report.batches_pushed += 1;
            st.remotes.insert(name.to_string(), rs.clone());
            st.save(store)?;
        }
    }
    if dir == Direction::Push {
        report.requests = remote.requests();
        return Ok((report, Vec::new()));
    }

    // 3. Pull.
    for (d, from, keys) in new_batches {
        let mut at = from;
        for key in keys {
            let b = read_batch(remote, &key)?;
            let want = at + 1;
            if format!("{:016x}", b.device) != d || b.seq != want {
                bail!(
                    "remote {}: {key} is batch {} of device {:016x}, expected {want} of {d}",
                    remote.shown,
                    b.seq,
                    b.device
                );
            }
            for c in &b.changes {
                st.merge(c);
            }
            for p in &b.packs {
                for id in &p.ids {
                    rs.objects.insert(id.clone(), p.key.clone());
                }
            }
            at = b.seq;
            report.batches_pulled += 1;
        }
        rs.pulled.insert(d, at);
    }
    if report.batches_pulled > 0 {
        // Saved before the tree changes: an apply cut short is finished by the next sync,
        // which finds what it made in the union and adopts it.
        st.remotes.insert(name.to_string(), rs.clone());
        st.save(store)?;
    }

    // 4. Show the union.
    let touched = apply::apply(e, &mut st, remote, &rs, &mut report, progress)?;
    report.requests = remote.requests();
    e.sync()?;
    st.remotes.insert(name.to_string(), rs);
    st.save(store)?;
    Ok((report, touched))
}

/// Checks the remote's marker (format, chunking), writing it on an empty remote when `create`.
fn check_marker(e: &Engine, remote: &Remote, create: bool) -> Result<()> {
    let c = e.meta().chunking;
    let ours = Marker { format: REMOTE_FORMAT, chunking: [c.min, c.avg, c.max] };
    let found = match remote.get(MARKER)? {
        Some(b) => b,
        None => {
            if !remote.is_empty()? {
                bail!("remote {} is not a cowfs remote (it holds other objects and no {MARKER})", remote.shown);
            }
            if create && !remote.create(MARKER, serde_json::to_vec(&ours)?)? {
                // Another device made it meanwhile: check theirs.
                return check_marker(e, remote, false);
            }
            return Ok(());
        }
    };
    let m: serde_json::Value = serde_json::from_slice(&found)
        .map_err(|_| anyhow::anyhow!("remote {} is not a cowfs remote ({MARKER} is not JSON)", remote.shown))?;
    let format = m.get("format").and_then(|f| f.as_u64()).unwrap_or(0);
    if format > REMOTE_FORMAT as u64 {
        bail!("remote {} has format {format}, made by a newer cowfs (this one reads {REMOTE_FORMAT})", remote.shown);
    }
    let m: Marker = serde_json::from_value(m)
        .map_err(|_| anyhow::anyhow!("remote {} is not a cowfs remote ({MARKER} is not one)", remote.shown))?;
    if m.chunking != ours.chunking {
        bail!(
            "remote {} chunks content as {:?}, this store as {:?}: they cannot share content",
            remote.shown,
            m.chunking,
            ours.chunking
        );
    }
    Ok(())
}

/// The other devices with batches on the remote (hex ids).
fn other_devices(remote: &Remote, me: u64) -> Result<Vec<String>> {
    let me = format!("{me:016x}");
    Ok(remote.dirs("devices")?.into_iter().filter(|d| *d != me && d.len() == 16).collect())
}

fn batch_key(device: &str, seq: u64) -> String {
    format!("devices/{device}/batch-{seq:016x}.json")
}

/// The keys of device `d`'s batches after number `after`, in order.
fn batch_keys(remote: &Remote, d: &str, after: u64) -> Result<Vec<String>> {
    let keys = remote.list_after(&format!("devices/{d}"), &batch_key(d, after))?;
    Ok(keys.into_iter().filter(|k| k.starts_with(&format!("devices/{d}/batch-")) && k.ends_with(".json")).collect())
}

fn read_batch(remote: &Remote, key: &str) -> Result<RemoteBatch> {
    let bytes = remote.get(key)?.with_context(|| format!("remote {}: {key} is gone", remote.shown))?;
    let damaged = || format!("remote {}: {key} is damaged", remote.shown);
    let format = state::format_of(&bytes).with_context(damaged)?;
    if format > BATCH_FORMAT as u64 {
        bail!("remote {}: {key} has format {format}, made by a newer cowfs", remote.shown);
    }
    if format >= 2 {
        return serde_json::from_slice(&bytes).with_context(damaged);
    }
    let mut v: serde_json::Value = serde_json::from_slice(&bytes).with_context(damaged)?;
    state::legacy_vids(&mut v);
    serde_json::from_value(v).with_context(damaged)
}

/// The conflicts the tree shows after the last sync.
pub fn conflicts(store: &Path, device: u64) -> Result<Vec<Conflict>> {
    let mut st = State::load(store, device)?;
    st.read_union()?;
    let view = st.merged.view();
    let mut paths: HashMap<Gid, String> = HashMap::from([(Gid::ROOT, String::new())]);
    let mut out = Vec::new();
    for s in &view.shown {
        let path = format!("{}/{}", paths.get(&s.parent).cloned().unwrap_or_default(), s.name);
        if s.kind == Kind::Dir {
            paths.insert(s.key.gid, path.clone());
        }
        if let Some(reason) = &s.conflict {
            out.push(Conflict { path, reason: reason.clone() });
        }
    }
    Ok(out)
}

/// What `cowfs resolve` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The file.
    pub path: String,
    /// The version whose content it has now (`DEVICE-SEQ`, hex device).
    pub kept: String,
    /// The conflict copies removed.
    pub removed: Vec<String>,
}

/// `cowfs resolve PATH --keep mine|theirs|DEVICE-SEQ`: the file at `path` (or a conflict copy
/// of it) gets the content of the head chosen — `mine`, this device's newest; `theirs`,
/// another device's newest; or the one named — as a restore (a version, undoable), and its
/// conflict copies go. The next sync records a version after every head: the conflict is
/// settled on every device.
pub fn resolve(e: &Engine, store: &Path, path: &str, keep: &str) -> Result<(Resolved, Vec<String>)> {
    let device = e.meta().device.0;
    let mut st = State::load(store, device)?;
    st.read_union()?;
    let r = crate::paths::resolve(e, path)?;
    let i = r.inode.with_context(|| format!("{path}: no such file"))?;
    let l = st.local.get(&i.ino.0).with_context(|| format!("{path} is not synced yet"))?;
    let gid = l.key.gid;
    let entry = st.merged.entries.get(&gid).with_context(|| format!("{path} is not synced yet"))?;
    let heads = entry.heads();
    if heads.len() < 2 {
        bail!("{path} has no conflict");
    }
    let name = |v: &Version| format!("{:x}-{}", v.vid.device, v.vid.seq);
    let chosen = match keep {
        "mine" => heads
            .iter()
            .rev()
            .find(|v| v.vid.device == device)
            .with_context(|| format!("{path}: no version of this device is in the conflict"))?,
        "theirs" => heads
            .iter()
            .rev()
            .find(|v| v.vid.device != device)
            .with_context(|| format!("{path}: no other device's version is in the conflict"))?,
        id => heads.iter().find(|v| name(v) == id).with_context(|| {
            let have: Vec<String> = heads.iter().map(|v| name(v)).collect();
            format!("{id:?} is not a version in the conflict of {path} (mine, theirs, or one of {have:?})")
        })?,
    };
    let (main_ino, main) = st
        .local
        .iter()
        .find(|(_, l)| l.key == Key { gid, copy: None })
        .with_context(|| format!("{path}: the file is not in the tree"))?;
    let dir_path = |parent: u64| -> String {
        let mut parts = Vec::new();
        let mut at = parent;
        while let Some(p) = st.local.get(&at) {
            parts.push(p.name.clone());
            at = p.parent;
        }
        parts.iter().rev().map(|p| format!("/{p}")).collect()
    };
    let main_path = format!("{}/{}", dir_path(main.parent), main.name);
    if main.content != chosen.content || main.size != chosen.size {
        let root = chosen.content.as_deref().map(unhex).transpose()?.map(NodeId);
        if let Some(r) = root
            && !e.has_object(&r.0)
        {
            bail!("{path}: the content of version {} is not in this store", name(chosen));
        }
        let time = Timestamp { secs: chosen.time.0, nanos: chosen.time.1 };
        e.restore_content(
            InodeId(*main_ino),
            chosen.size,
            root,
            Some(time),
            &format!("resolve: version {}", name(chosen)),
            true,
        )?;
    }
    let mut removed = Vec::new();
    for l in st.local.values().filter(|l| l.key.gid == gid && l.key.copy.is_some()) {
        e.unlink(InodeId(l.parent), l.name.as_bytes(), true)?;
        removed.push(format!("{}/{}", dir_path(l.parent), l.name));
    }
    let mut touched = removed.clone();
    touched.push(main_path.clone());
    Ok((Resolved { path: main_path, kept: name(chosen), removed }, touched))
}
