//! Sync (issue 23): one tree on several devices through a remote (docs/SYNC.md).
//!
//! A sync (1) compares the store's tree with what it showed after the last sync and records
//! the differences as this device's changes ([`model::Change`]), (2) pushes the changes not on
//! the remote yet — first the packs of the content they need that the remote lacks, then the
//! batch naming them —, (3) pulls the other devices' new batches, and (4) makes the tree show
//! the union ([`model::Merged::view`]), fetching the content it lacks. What it knows is kept
//! in `STORE/SYNC`, written after each step that changed it and after the tree is durable.

pub mod model;
pub mod remote;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, bail};
use cowfs_engine::{ChunkId, Engine, FileKind, InodeId, NewInode, NodeId, Received, SetAttr, Timestamp};
use serde::{Deserialize, Serialize};

use model::{Change, Gid, Key, Kind, Merged, Place, Stamp, Version, Vid};
use remote::{Remote, RemoteConfig};

/// The file of a store that holds what its syncs know.
pub const STATE: &str = "SYNC";
/// The remote format this build writes and reads.
const REMOTE_FORMAT: u32 = 1;
/// The remote's marker object.
const MARKER: &str = "cowfs-remote.json";
/// Packs are cut at about this size...
const PACK_BYTES: usize = 16 << 20;
/// ... and this many are uploaded at once.
const UPLOADS: usize = 4;
/// Names the scan skips: where an apply parks entries while it moves others.
const STAGING: &str = ".cowfs-sync-staging";

/// Writes `path` atomically: a temporary, fsync, rename, directory fsync.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).with_context(|| format!("writing {}", tmp.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming {}", tmp.display()))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// A local entry as the tree showed it after the last sync.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Local {
    key: Key,
    kind: Kind,
    /// Its directory (inode number) and name.
    parent: u64,
    name: String,
    mode: u32,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    target: String,
    /// A file's content and size, and the version that is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(default)]
    size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    vid: Option<Vid>,
}

/// One of this device's batches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Batch {
    seq: u64,
    changes: Vec<Change>,
}

/// What a store knows of one remote.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct RemoteState {
    /// This device's batches on it: 1 ..= pushed.
    pushed: u64,
    /// Each other device's batches applied: 1 ..= n (by device id in hex).
    pulled: BTreeMap<String, u64>,
    /// Where each object (hex id) is: its pack (kept in `SYNC-UNION`).
    #[serde(skip)]
    objects: BTreeMap<String, String>,
}

/// The big part of the state, `STORE/SYNC-UNION`, read only when a sync has something to do.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Union {
    merged: Merged,
    mine: Vec<Batch>,
    /// Per remote: where each object is.
    objects: BTreeMap<String, BTreeMap<String, String>>,
}

/// What the store's syncs know: `STORE/SYNC` (what the tree showed, counters, per remote what
/// was pushed and pulled) and `STORE/SYNC-UNION` (the union, this device's batches, the object
/// maps), the second read when needed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct State {
    format: u32,
    device: u64,
    hlc: u64,
    next_gid: u64,
    next_seq: u64,
    /// This device's batches: 1 ..= batches.
    batches: u64,
    local: BTreeMap<u64, Local>,
    remotes: BTreeMap<String, RemoteState>,
    #[serde(skip)]
    merged: Merged,
    #[serde(skip)]
    mine: Vec<Batch>,
    /// Whether `merged`, `mine` and the object maps are read (or new).
    #[serde(skip)]
    union_read: bool,
    #[serde(skip)]
    store: std::path::PathBuf,
}

/// The union's file.
const UNION: &str = "SYNC-UNION";

impl State {
    fn load(store: &Path, device: u64) -> Result<State> {
        let p = store.join(STATE);
        let mut st: State = match std::fs::read(&p) {
            Ok(b) => match serde_json::from_slice::<serde_json::Value>(&b).ok().and_then(|v| v.get("format")?.as_u64())
            {
                Some(1) => State::from_format_1(&b).with_context(|| format!("{} is damaged", p.display()))?,
                _ => serde_json::from_slice(&b).with_context(|| format!("{} is damaged", p.display()))?,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let union_read = !store.join(UNION).exists();
                return Ok(State { format: 2, device, union_read, store: store.to_path_buf(), ..State::default() });
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        if st.format != 2 {
            bail!("{} has format {}, which this cowfs does not know", p.display(), st.format);
        }
        if st.device != device {
            bail!("{} belongs to device {:016x}, not this store's {device:016x}", p.display(), st.device);
        }
        st.store = store.to_path_buf();
        Ok(st)
    }

    /// Format 1 (the first builds of sync): everything in `SYNC`; saved as format 2.
    fn from_format_1(bytes: &[u8]) -> Result<State> {
        #[derive(Deserialize)]
        struct Remote1 {
            pushed: u64,
            pulled: BTreeMap<String, u64>,
            objects: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        struct State1 {
            device: u64,
            hlc: u64,
            next_gid: u64,
            next_seq: u64,
            merged: Merged,
            mine: Vec<Batch>,
            local: BTreeMap<u64, Local>,
            remotes: BTreeMap<String, Remote1>,
        }
        let old: State1 = serde_json::from_slice(bytes)?;
        Ok(State {
            format: 2,
            device: old.device,
            hlc: old.hlc,
            next_gid: old.next_gid,
            next_seq: old.next_seq,
            batches: old.mine.len() as u64,
            local: old.local,
            remotes: old
                .remotes
                .into_iter()
                .map(|(n, r)| (n, RemoteState { pushed: r.pushed, pulled: r.pulled, objects: r.objects }))
                .collect(),
            merged: old.merged,
            mine: old.mine,
            union_read: true,
            store: Default::default(),
        })
    }

    /// Reads `SYNC-UNION` unless read.
    fn read_union(&mut self) -> Result<()> {
        if self.union_read {
            return Ok(());
        }
        let p = self.store.join(UNION);
        let u: Union = match std::fs::read(&p) {
            Ok(b) => serde_json::from_slice(&b).with_context(|| format!("{} is damaged", p.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Union::default(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", p.display())),
        };
        // SYNC-UNION is written first: a save cut short between the two leaves it ahead (a
        // batch recorded whose changes the next scan records again — the same content, which
        // the union shows once); never behind.
        if (u.mine.len() as u64) < self.batches {
            bail!("{} holds {} batches of this device, {} says {}", p.display(), u.mine.len(), STATE, self.batches);
        }
        self.batches = u.mine.len() as u64;
        self.merged = u.merged;
        self.mine = u.mine;
        for (name, objects) in u.objects {
            self.remotes.entry(name).or_default().objects = objects;
        }
        self.union_read = true;
        Ok(())
    }

    /// Writes the state: the union first (when read), so that `SYNC` never counts batches
    /// `SYNC-UNION` lacks.
    fn save(&self, store: &Path) -> Result<()> {
        if self.union_read {
            let u = UnionRef {
                merged: &self.merged,
                mine: &self.mine,
                objects: self.remotes.iter().map(|(n, r)| (n.as_str(), &r.objects)).collect(),
            };
            write_atomic(&store.join(UNION), &serde_json::to_vec(&u)?)?;
        }
        write_atomic(&store.join(STATE), &serde_json::to_vec(self)?)
    }

    /// Adds change `c` to the union, and its clock values to those seen.
    fn merge(&mut self, c: &Change) {
        let seen = c.place.iter().map(|p| p.stamp.hlc).chain(c.versions.iter().map(|v| v.hlc));
        self.hlc = self.hlc.max(seen.max().unwrap_or(0));
        self.merged.apply(c);
    }

    /// The next clock value: after every one seen, and at least the wall clock.
    fn tick(&mut self) -> u64 {
        self.hlc = self.hlc.max(clock_of(Timestamp::now())) + 1;
        self.hlc
    }
}

/// [`Union`] as written, borrowing the state's parts.
#[derive(Serialize)]
struct UnionRef<'a> {
    merged: &'a Merged,
    mine: &'a [Batch],
    objects: BTreeMap<&'a str, &'a BTreeMap<String, String>>,
}

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
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    check_store(store)?;
    let device = e.meta().device.0;
    let mut st = State::load(store, device)?;
    let mut report = Report { remote: cfg.name.clone(), dry_run, ..Report::default() };
    let remote = Remote::open(cfg, aws_env)?;
    check_marker(e, &remote, !dry_run)?;

    // 1. This device's changes since the last sync (a dry run changes the state only in
    // memory).
    let first_time = !st.remotes.contains_key(&cfg.name);
    let (changes, base_changed) = scan(e, &mut st, &mut report)?;
    report.changes_recorded = changes.len() as u64;
    let pushed = st.remotes.get(&cfg.name).map_or(0, |r| r.pushed);
    // The other devices' batches not applied yet (one listing each).
    let mut new_batches = Vec::new();
    if dir != Direction::Push {
        for d in other_devices(&remote, device)? {
            let from = st.remotes.get(&cfg.name).and_then(|r| r.pulled.get(&d).copied()).unwrap_or(0);
            let keys = batch_keys(&remote, &d, from)?;
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
    let mut rs = st.remotes.get(&cfg.name).cloned().unwrap_or_default();
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
        st.remotes.insert(cfg.name.clone(), rs.clone());
        st.save(store)?;
    }

    // 2. Push.
    if dir != Direction::Pull {
        let todo: Vec<Batch> = st.mine.iter().filter(|b| b.seq > rs.pushed).cloned().collect();
        for (i, b) in todo.iter().enumerate() {
            progress(i as u64, todo.len() as u64);
            report.bytes_pushed += push_batch(e, &remote, &mut rs, device, b)?;
            rs.pushed = b.seq;
            report.batches_pushed += 1;
            st.remotes.insert(cfg.name.clone(), rs.clone());
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
            let b = read_batch(&remote, &key)?;
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
        st.remotes.insert(cfg.name.clone(), rs.clone());
        st.save(store)?;
    }

    // 4. Show the union.
    let touched = apply(e, &mut st, &remote, &rs, &mut report, progress)?;
    report.requests = remote.requests();
    e.sync()?;
    st.remotes.insert(cfg.name.clone(), rs);
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
    let b: RemoteBatch =
        serde_json::from_slice(&bytes).with_context(|| format!("remote {}: {key} is damaged", remote.shown))?;
    if b.format > REMOTE_FORMAT {
        bail!("remote {}: {key} has format {}, made by a newer cowfs", remote.shown, b.format);
    }
    Ok(b)
}

/// Records the tree's differences from what it showed after the last sync as changes of this
/// device, and makes what it shows now the new base.
fn scan(e: &Engine, st: &mut State, report: &mut Report) -> Result<(Vec<Change>, bool)> {
    let ns = e.namespace();
    let me = st.device;
    let mut out: Vec<Change> = Vec::new();
    let mut local = BTreeMap::new();
    let mut seen = HashSet::new();
    let mut todo = VecDeque::from([(InodeId::ROOT, Gid::ROOT, String::new())]);
    // Conflict copies that went or changed: their file's heads are merged.
    let mut settled: BTreeSet<Gid> = BTreeSet::new();
    // What the union shows where the tree has an entry the state does not know (computed
    // at the first such entry).
    let mut shown_at: Option<Unmapped> = None;
    while let Some((dir, dir_gid, dir_path)) = todo.pop_front() {
        let Some(entries) = ns.dirs.get(&dir) else { continue };
        for (name, d) in entries.iter() {
            let path = format!("{dir_path}/{}", String::from_utf8_lossy(name));
            let Ok(name) = String::from_utf8(name.clone()) else {
                report.skipped.push(format!("{path}: the name is not UTF-8"));
                continue;
            };
            if dir == InodeId::ROOT && name.starts_with(STAGING) {
                // An apply cut short parked these: they keep what they were (the next apply
                // puts them in place); what it had not named yet is its leftover.
                for (pname, pd) in ns.dirs.get(&d.child).into_iter().flat_map(|x| x.iter()) {
                    if let Some(b) = st.local.get(&pd.child.0)
                        && seen.insert(pd.child)
                    {
                        let parked =
                            Local { parent: d.child.0, name: String::from_utf8_lossy(pname).into_owned(), ..b.clone() };
                        local.insert(pd.child.0, parked);
                    }
                }
                continue;
            }
            let Some(i) = ns.inodes.get(&d.child) else { continue };
            let Some(kind) = kind_of(i.kind) else {
                report.skipped.push(format!("{path}: a special file"));
                continue;
            };
            if !seen.insert(i.ino) {
                report.skipped.push(format!("{path}: another name of a file synced under its first name"));
                continue;
            }
            let target = String::from_utf8_lossy(&i.symlink).into_owned();
            let content = i.content.map(|c| hex(&c.0));
            let mode = i.mode & 0o7777;
            let known = st.local.get(&i.ino.0).cloned();
            if known.is_none() {
                st.read_union()?;
            }
            let base =
                match known {
                    Some(b) => Some(b),
                    // Made by an apply cut short before it recorded it: the entry the union shows
                    // there, when it is that (a directory; a file with its content; a symlink to
                    // its target), is adopted, not recorded as new.
                    None => adoptable(&mut shown_at, st, &ns, (dir_gid, &name), kind, (&content, i.size), &target).map(
                        |s| Local {
                            key: s.key,
                            kind,
                            parent: dir.0,
                            name: name.clone(),
                            mode,
                            target: target.clone(),
                            content: content.clone(),
                            size: i.size,
                            vid: s.version.as_ref().map(|v| v.vid),
                        },
                    ),
                };
            let unchanged_copy = base.as_ref().is_some_and(|b| {
                b.key.copy.is_some() && b.parent == dir.0 && b.name == name && b.content == content && b.size == i.size
            });
            let key = match &base {
                Some(b) if b.key.copy.is_none() || unchanged_copy => b.key,
                _ => {
                    if let Some(b) = &base {
                        // A conflict copy edited or moved: a file of its own now.
                        settled.insert(b.key.gid);
                    }
                    st.next_gid += 1;
                    Key { gid: Gid { device: me, n: st.next_gid }, copy: None }
                }
            };
            let fresh = base.as_ref().is_none_or(|b| b.key != key);
            let mut change = Change { gid: key.gid, kind, place: None, versions: Vec::new() };
            let mut vid = base.as_ref().and_then(|b| b.vid);
            if key.copy.is_none() {
                let moved = base.as_ref().is_none_or(|b| {
                    fresh || b.parent != dir.0 || b.name != name || b.mode != mode || b.target != target
                });
                if moved {
                    // When it happened (the inode's change time) orders it among concurrent
                    // ones; after the place it replaces in any case.
                    st.read_union()?;
                    let prior =
                        st.merged.entries.get(&key.gid).and_then(|e| e.place.as_ref()).map_or(0, |p| p.stamp.hlc + 1);
                    let stamp = Stamp { hlc: clock_of(i.ctime).max(prior), device: me };
                    change.place = Some(Place {
                        stamp,
                        parent: dir_gid,
                        name: name.clone(),
                        mode,
                        target: target.clone(),
                        removed: None,
                    });
                }
                let edited = kind == Kind::File
                    && (fresh || base.as_ref().is_some_and(|b| b.content != content || b.size != i.size));
                if edited {
                    st.read_union()?;
                    st.next_seq += 1;
                    let parents: Vec<Vid> = if fresh { Vec::new() } else { vid.into_iter().collect() };
                    // The edit's time orders it among concurrent ones (the later edit keeps the
                    // name); after what it descends from in any case.
                    let after = st.merged.entries.get(&key.gid).map_or(0, |e| {
                        parents.iter().filter_map(|p| e.versions.get(p)).map(|v| v.hlc + 1).max().unwrap_or(0)
                    });
                    let v = Version {
                        vid: Vid { device: me, seq: st.next_seq },
                        parents,
                        hlc: clock_of(i.mtime).max(after),
                        time: (i.mtime.secs, i.mtime.nanos),
                        size: i.size,
                        content: content.clone(),
                    };
                    vid = Some(v.vid);
                    change.versions.push(v);
                }
            }
            if change.place.is_some() || !change.versions.is_empty() {
                out.push(change);
            }
            local.insert(
                i.ino.0,
                Local { key, kind, parent: dir.0, name: name.clone(), mode, target, content, size: i.size, vid },
            );
            if kind == Kind::Dir {
                todo.push_back((i.ino, key.gid, path));
            }
        }
    }
    // What went: a file or directory removed; a conflict copy deleted settles its conflict.
    let before = std::mem::take(&mut st.local);
    for (ino, b) in &before {
        if local.contains_key(ino) && local[ino].key == b.key {
            continue;
        }
        st.read_union()?;
        match b.key.copy {
            Some(_) => {
                settled.insert(b.key.gid);
            }
            None => {
                let Some(entry) = st.merged.entries.get(&b.key.gid) else { continue };
                let Some(mut p) = entry.place.clone() else { continue };
                let seen = entry.heads().iter().map(|v| v.vid).collect();
                p.stamp = Stamp { hlc: st.tick(), device: me };
                p.removed = Some(seen);
                out.push(Change { gid: b.key.gid, kind: b.kind, place: Some(p), versions: Vec::new() });
            }
        }
    }
    // A settled conflict: a version of the file as it is, after every head.
    for gid in settled {
        st.read_union()?;
        let Some(entry) = st.merged.entries.get(&gid) else { continue };
        let heads: Vec<Vid> = entry.heads().iter().map(|v| v.vid).collect();
        if heads.len() < 2 {
            continue;
        }
        // The file was edited too: that version descends from every head.
        if let Some(v) = out.iter_mut().filter(|c| c.gid == gid).flat_map(|c| c.versions.iter_mut()).next() {
            for h in heads {
                if !v.parents.contains(&h) {
                    v.parents.push(h);
                }
            }
            continue;
        }
        let Some((&main_ino, main)) = local.iter().find(|(_, l)| l.key == Key { gid, copy: None }) else { continue };
        let time = ns.inodes.get(&InodeId(main_ino)).map_or((0, 0), |i| (i.mtime.secs, i.mtime.nanos));
        st.next_seq += 1;
        let v = Version {
            vid: Vid { device: me, seq: st.next_seq },
            parents: heads,
            hlc: st.tick(),
            time,
            size: main.size,
            content: main.content.clone(),
        };
        local.get_mut(&main_ino).expect("found above").vid = Some(v.vid);
        out.push(Change { gid, kind: Kind::File, place: None, versions: vec![v] });
    }
    let base_changed = local != before;
    st.local = local;
    Ok((out, base_changed))
}

/// The entries the union shows that no live local entry shows, by (directory, name).
type Unmapped = HashMap<(Gid, String), model::Shown>;

/// The entry the union shows at `at` (directory, name) that a new local entry of this kind and
/// content (and size) is; each is adopted once. `unmapped` is filled at the first call.
fn adoptable(
    unmapped: &mut Option<Unmapped>,
    st: &State,
    ns: &cowfs_engine::Namespace,
    at: (Gid, &str),
    kind: Kind,
    content: (&Option<String>, u64),
    target: &str,
) -> Option<model::Shown> {
    let map = unmapped.get_or_insert_with(|| {
        let mapped: HashSet<Key> =
            st.local.iter().filter(|(ino, _)| ns.inodes.contains_key(&InodeId(**ino))).map(|(_, l)| l.key).collect();
        st.merged
            .view()
            .shown
            .into_iter()
            .filter(|s| !mapped.contains(&s.key))
            .map(|s| ((s.parent, s.name.clone()), s))
            .collect()
    });
    let key = (at.0, at.1.to_string());
    let s = map.get(&key)?;
    let same = s.kind == kind
        && match kind {
            Kind::Dir => true,
            Kind::Symlink => s.target == target,
            Kind::File => s.version.as_ref().is_some_and(|v| (&v.content, v.size) == (content.0, content.1)),
        };
    if same { map.remove(&key) } else { None }
}

/// Uploads batch `b` of this device: packs of the content it needs that the remote lacks,
/// then the batch. Returns the bytes of its packs. A batch already there (a sync cut short
/// after writing it) is accepted when it is the same.
fn push_batch(e: &Engine, remote: &Remote, rs: &mut RemoteState, device: u64, b: &Batch) -> Result<u64> {
    let dev = format!("{device:016x}");
    // Packs are uploaded by UPLOADS threads while the next ones are built.
    let (tx, rx) = std::sync::mpsc::sync_channel::<(String, Vec<u8>)>(1);
    let rx = std::sync::Mutex::new(rx);
    let (packs, bytes) = std::thread::scope(|scope| -> Result<(Vec<PackRef>, u64)> {
        let uploaders: Vec<_> = (0..UPLOADS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((key, pack)) = next else { return Ok(()) };
                        remote.put(&key, pack)?;
                    }
                })
            })
            .collect();
        let built = build_packs(e, rs, &dev, b, &tx);
        drop(tx);
        for u in uploaders {
            // An upload failure explains a build stopped by the closed channel: it goes first.
            u.join().unwrap_or_else(|_| bail!("an upload thread panicked"))?;
        }
        built
    })?;
    for p in &packs {
        for id in &p.ids {
            rs.objects.insert(id.clone(), p.key.clone());
        }
    }
    let batch = RemoteBatch { format: REMOTE_FORMAT, device, seq: b.seq, packs, changes: b.changes.clone() };
    let key = batch_key(&dev, b.seq);
    if !remote.create(&key, serde_json::to_vec(&batch)?)? {
        let there = read_batch(remote, &key)?;
        if there.changes != batch.changes {
            bail!(
                "remote {}: {key} exists and differs: another store with this device id ({dev}) syncs there",
                remote.shown
            );
        }
        for p in &there.packs {
            for id in &p.ids {
                rs.objects.insert(id.clone(), p.key.clone());
            }
        }
    }
    Ok(bytes)
}

/// Builds the packs of the objects batch `b`'s versions need that the remote lacks, handing
/// each to `upload` as it is complete. Returns them and their objects' bytes.
fn build_packs(
    e: &Engine,
    rs: &RemoteState,
    dev: &str,
    b: &Batch,
    upload: &std::sync::mpsc::SyncSender<(String, Vec<u8>)>,
) -> Result<(Vec<PackRef>, u64)> {
    let mut packs = Vec::new();
    let mut pack: Vec<u8> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut bytes = 0u64;
    let mut queued: HashSet<[u8; 32]> = HashSet::new();
    let flush = |pack: &mut Vec<u8>, ids: &mut Vec<String>, packs: &mut Vec<PackRef>| -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let key = format!("devices/{dev}/pack-{}.pack", blake3::hash(pack).to_hex());
        upload.send((key.clone(), std::mem::take(pack))).map_err(|_| anyhow::anyhow!("the upload stopped"))?;
        packs.push(PackRef { key, ids: std::mem::take(ids) });
        Ok(())
    };
    for v in b.changes.iter().flat_map(|c| c.versions.iter()) {
        let Some(root) = &v.content else { continue };
        let (nodes, chunks) = e.tree_objects(NodeId(unhex(root)?))?;
        let objects = nodes.iter().map(|n| (1u8, n.0)).chain(chunks.iter().map(|c| (2u8, c.0)));
        for (kind, id) in objects {
            let h = hex(&id);
            if rs.objects.contains_key(&h) || !queued.insert(id) {
                continue;
            }
            let data = if kind == 1 { e.node_bytes(NodeId(id))? } else { e.chunk(ChunkId(id))?.to_vec() };
            pack.push(kind);
            pack.extend_from_slice(&id);
            pack.extend_from_slice(&(data.len() as u32).to_le_bytes());
            pack.extend_from_slice(&data);
            bytes += data.len() as u64;
            ids.push(h);
            if pack.len() >= PACK_BYTES {
                flush(&mut pack, &mut ids, &mut packs)?;
            }
        }
    }
    flush(&mut pack, &mut ids, &mut packs)?;
    Ok((packs, bytes))
}

/// A pack's objects by id: kind (1 node, 2 chunk) and bytes.
type PackObjects = HashMap<[u8; 32], (u8, Vec<u8>)>;

/// Packs fetched during one apply.
struct Packs<'a> {
    remote: &'a Remote,
    rs: &'a RemoteState,
    cache: HashMap<String, PackObjects>,
    bytes: u64,
}

impl Packs<'_> {
    /// Object `id` (kind 1 node, 2 chunk) from the remote.
    fn get(&mut self, id: &[u8; 32]) -> Result<(u8, Vec<u8>)> {
        let h = hex(id);
        let key = self
            .rs
            .objects
            .get(&h)
            .with_context(|| format!("remote {}: no pack holds object {h}", self.remote.shown))?;
        if !self.cache.contains_key(key) {
            if self.cache.len() >= 4 {
                self.cache.clear();
            }
            let bytes =
                self.remote.get(key)?.with_context(|| format!("remote {}: {key} is gone", self.remote.shown))?;
            self.bytes += bytes.len() as u64;
            self.cache.insert(
                key.clone(),
                parse_pack(&bytes).with_context(|| format!("remote {}: {key}", self.remote.shown))?,
            );
        }
        self.cache[key]
            .get(id)
            .cloned()
            .with_context(|| format!("remote {}: {key} lacks object {h}", self.remote.shown))
    }

    /// What the store lacks of tree `root`.
    fn tree(&mut self, e: &Engine, root: NodeId) -> Result<Received> {
        let mut r = Received::default();
        let mut todo = vec![root];
        let mut seen = HashSet::new();
        while let Some(id) = todo.pop() {
            if !seen.insert(id) || e.has_object(&id.0) {
                continue;
            }
            let (kind, bytes) = self.get(&id.0)?;
            if kind != 1 {
                bail!("remote {}: object {id} is not a node", self.remote.shown);
            }
            for (k, child) in node_refs(&bytes)? {
                if k == 1 {
                    todo.push(NodeId(child));
                } else if !e.has_object(&child) && seen.insert(NodeId(child)) {
                    let (ck, raw) = self.get(&child)?;
                    if ck != 2 {
                        bail!("remote {}: object {} is not a chunk", self.remote.shown, hex(&child));
                    }
                    r.chunks.push((ChunkId(child), raw));
                }
            }
            r.nodes.push((id, bytes));
        }
        Ok(r)
    }
}

/// The ids a node refers to: (1, child node) or (2, chunk).
fn node_refs(bytes: &[u8]) -> Result<Vec<(u8, [u8; 32])>> {
    let refs = cowfs_engine::tree_refs(bytes).map_err(|e| anyhow::anyhow!("a received node does not decode: {e}"))?;
    Ok(refs.into_iter().map(|r| (if r.node { 1 } else { 2 }, r.id)).collect())
}

fn parse_pack(bytes: &[u8]) -> Result<PackObjects> {
    let mut out = HashMap::new();
    let mut at = 0;
    while at < bytes.len() {
        if bytes.len() - at < 37 {
            bail!("truncated at byte {at}");
        }
        let kind = bytes[at];
        let id: [u8; 32] = bytes[at + 1..at + 33].try_into().expect("32 bytes");
        let len = u32::from_le_bytes(bytes[at + 33..at + 37].try_into().expect("4 bytes")) as usize;
        at += 37;
        if bytes.len() - at < len || !(kind == 1 || kind == 2) {
            bail!("damaged at byte {at}");
        }
        out.insert(id, (kind, bytes[at..at + len].to_vec()));
        at += len;
    }
    Ok(out)
}

/// Makes the tree show the union: creates, moves, updates and removes entries (fetching the
/// content it lacks) and records what it shows as the new base. Returns the store paths
/// changed.
fn apply(
    e: &Engine,
    st: &mut State,
    remote: &Remote,
    rs: &RemoteState,
    report: &mut Report,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<String>> {
    let view = st.merged.view();
    let ns = e.namespace();
    let root = e.getattr(InodeId::ROOT)?;
    let (uid, gid) = (root.uid, root.gid);
    let mut packs = Packs { remote, rs, cache: HashMap::new(), bytes: 0 };
    let mut by_key: HashMap<Key, u64> = st.local.iter().map(|(ino, l)| (l.key, *ino)).collect();
    let mut local = st.local.clone();
    let mut dir_ino: HashMap<Gid, InodeId> = HashMap::from([(Gid::ROOT, InodeId::ROOT)]);
    let mut paths: HashMap<Gid, String> = HashMap::from([(Gid::ROOT, String::new())]);
    let mut touched = Vec::new();

    let mut staging: Option<InodeId> = None;
    let shown_keys: HashSet<Key> = view.shown.iter().map(|s| s.key).collect();
    // What an apply cut short left in the staging directory and no record names goes.
    let staged = format!("{STAGING}-{:016x}", st.device);
    if let Ok(dir) = e.lookup(InodeId::ROOT, staged.as_bytes()) {
        staging = Some(dir.ino);
        for (name, d) in e.entries(dir.ino)?.iter() {
            if !local.contains_key(&d.child.0) && d.kind != FileKind::Directory {
                e.unlink(dir.ino, name, true)?;
            }
        }
    }
    report.conflicts = view.shown.iter().filter(|s| s.conflict.is_some()).count() as u64;
    for (n, s) in view.shown.iter().enumerate() {
        progress(n as u64, view.shown.len() as u64);
        let Some(&parent) = dir_ino.get(&s.parent) else { continue };
        let path = format!("{}/{}", paths[&s.parent], s.name);
        // Shown as the tree shows it already: nothing to do (most entries, most of the time).
        if let Some(&ino) = by_key.get(&s.key)
            && let Some(l) = local.get(&ino)
            && (l.parent, l.name.as_str(), l.mode) == (parent.0, s.name.as_str(), s.mode)
            && s.version.as_ref().is_none_or(|v| (&l.content, l.size) == (&v.content, v.size))
            && ns.inodes.contains_key(&InodeId(ino))
        {
            if s.kind == Kind::Dir {
                dir_ino.insert(s.key.gid, InodeId(ino));
                paths.insert(s.key.gid, path);
            }
            // The same bytes may be a newer version (a settled conflict): the next edit
            // descends from it.
            if let (Some(v), Some(l)) = (&s.version, local.get_mut(&ino)) {
                l.vid = Some(v.vid);
            }
            continue;
        }
        // The name is someone else's: a tracked entry that moves or goes is parked first.
        if let Ok(occupant) = e.lookup(parent, s.name.as_bytes()) {
            let mine = by_key.get(&s.key) == Some(&occupant.ino.0);
            if !mine {
                if !local.contains_key(&occupant.ino.0) {
                    report
                        .skipped
                        .push(format!("{path}: a new local entry has the name; it stays until the next sync"));
                    continue;
                }
                let at = staging_dir(e, &mut staging, st.device, (uid, gid))?;
                let parked = format!("{}", occupant.ino.0);
                e.rename(parent, s.name.as_bytes(), at, parked.as_bytes(), true, false, false)?;
                let entry = local.get_mut(&occupant.ino.0).expect("tracked");
                entry.parent = at.0;
                entry.name = parked;
            }
        }
        let ino = match by_key.get(&s.key).copied() {
            Some(ino) if e.getattr(InodeId(ino)).is_ok() => {
                let l = local[&ino].clone();
                if (l.parent, l.name.as_str()) != (parent.0, s.name.as_str()) {
                    e.rename(InodeId(l.parent), l.name.as_bytes(), parent, s.name.as_bytes(), true, false, false)?;
                    report.moved += 1;
                    touched.push(path.clone());
                }
                if l.mode != s.mode && s.kind != Kind::Symlink {
                    e.setattr(
                        InodeId(ino),
                        SetAttr { mode: Some(s.mode), uid: None, gid: None, atime: None, mtime: None },
                    )?;
                    report.updated += 1;
                    touched.push(path.clone());
                }
                InodeId(ino)
            }
            _ => {
                let i = match s.kind {
                    Kind::Dir => e.mkdir(parent, s.name.as_bytes(), s.mode, uid, gid)?,
                    Kind::File => {
                        // Made whole in the staging directory, then put in place: a file
                        // never shows at its name without its content.
                        let at = staging_dir(e, &mut staging, st.device, (uid, gid))?;
                        let v =
                            s.version.as_ref().map_or(String::new(), |v| format!("-{:x}-{}", v.vid.device, v.vid.seq));
                        let tmp = format!("new-{:x}-{}{v}", s.key.gid.device, s.key.gid.n);
                        let attrs = NewInode {
                            kind: FileKind::Regular,
                            mode: s.mode,
                            uid,
                            gid,
                            rdev: 0,
                            symlink: Vec::new(),
                            lineage: None,
                        };
                        let i = e.create(at, tmp.as_bytes(), attrs)?;
                        if let Some(v) = &s.version {
                            import(e, &mut packs, i.ino, v)?;
                        }
                        e.rename(at, tmp.as_bytes(), parent, s.name.as_bytes(), true, false, false)?;
                        i
                    }
                    Kind::Symlink => {
                        let attrs = NewInode {
                            kind: FileKind::Symlink,
                            mode: 0o777,
                            uid,
                            gid,
                            rdev: 0,
                            symlink: s.target.as_bytes().to_vec(),
                            lineage: None,
                        };
                        e.create(parent, s.name.as_bytes(), attrs)?
                    }
                };
                report.created += 1;
                touched.push(path.clone());
                by_key.insert(s.key, i.ino.0);
                let v = s.version.as_ref();
                local.insert(
                    i.ino.0,
                    Local {
                        key: s.key,
                        kind: s.kind,
                        parent: parent.0,
                        name: s.name.clone(),
                        mode: s.mode,
                        target: s.target.clone(),
                        content: v.and_then(|v| v.content.clone()),
                        size: v.map_or(0, |v| v.size),
                        vid: v.map(|v| v.vid),
                    },
                );
                i.ino
            }
        };
        if let Some(v) = &s.version {
            let l = &local[&ino.0];
            if l.content != v.content || l.size != v.size {
                import(e, &mut packs, ino, v)?;
                report.updated += 1;
                touched.push(path.clone());
            }
        }
        let l = local.get_mut(&ino.0).expect("recorded");
        l.parent = parent.0;
        l.name = s.name.clone();
        l.mode = s.mode;
        if let Some(v) = &s.version {
            l.content = v.content.clone();
            l.size = v.size;
            l.vid = Some(v.vid);
        }
        if s.kind == Kind::Dir {
            dir_ino.insert(s.key.gid, ino);
            paths.insert(s.key.gid, path);
        }
    }
    // What the union no longer shows goes: files first, then directories, deepest first.
    let mut gone: Vec<(u64, Local)> =
        local.iter().filter(|(_, l)| !shown_keys.contains(&l.key)).map(|(i, l)| (*i, l.clone())).collect();
    gone.sort_by_key(|(_, l)| (l.kind == Kind::Dir, std::cmp::Reverse(depth(&local, l))));
    for (ino, l) in gone {
        let r = if l.kind == Kind::Dir {
            e.rmdir(InodeId(l.parent), l.name.as_bytes(), false)
        } else {
            e.unlink(InodeId(l.parent), l.name.as_bytes(), true)
        };
        match r {
            Ok(()) => {
                report.removed += 1;
                local.remove(&ino);
            }
            Err(err) => report.skipped.push(format!("{}: not removed: {err}", l.name)),
        }
    }
    if let Some(at) = staging {
        let name = format!("{STAGING}-{:016x}", st.device);
        if e.entries(at).map(|x| x.is_empty()).unwrap_or(false) {
            e.rmdir(InodeId::ROOT, name.as_bytes(), false)?;
        }
    }
    report.bytes_pulled = packs.bytes;
    st.local = local;
    touched.sort();
    touched.dedup();
    Ok(touched)
}

/// The staging directory (made when first needed).
fn staging_dir(e: &Engine, cached: &mut Option<InodeId>, device: u64, owner: (u32, u32)) -> Result<InodeId> {
    if let Some(i) = cached {
        return Ok(*i);
    }
    let name = format!("{STAGING}-{device:016x}");
    let i = match e.lookup(InodeId::ROOT, name.as_bytes()) {
        Ok(i) => i.ino,
        Err(_) => e.mkdir(InodeId::ROOT, name.as_bytes(), 0o700, owner.0, owner.1)?.ino,
    };
    *cached = Some(i);
    Ok(i)
}

/// Sets file `ino`'s content to version `v`, fetching what the store lacks.
fn import(e: &Engine, packs: &mut Packs<'_>, ino: InodeId, v: &Version) -> Result<()> {
    let root = v.content.as_deref().map(unhex).transpose()?.map(NodeId);
    let received = match root {
        Some(r) => packs.tree(e, r)?,
        None => Received::default(),
    };
    let time = Timestamp { secs: v.time.0, nanos: v.time.1 };
    let detail = format!("sync: version {:x}-{} from the remote", v.vid.device, v.vid.seq);
    e.import_content(ino, v.size, root, received, Some(time), &detail)?;
    Ok(())
}

/// How deep an entry is (its directory chain, as recorded).
fn depth(local: &BTreeMap<u64, Local>, l: &Local) -> usize {
    let mut d = 0;
    let mut at = l.parent;
    while let Some(p) = local.get(&at) {
        d += 1;
        at = p.parent;
        if d > 4096 {
            break;
        }
    }
    d
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

#[cfg(test)]
mod state_tests {
    use super::*;

    /// A state of the first builds (format 1, one file) is read and saved as format 2, and a
    /// save cut short between its two files (the union ahead) is read back.
    #[test]
    fn format_1_is_read_and_saved_as_2_and_a_union_ahead_is_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let v1 = r#"{"format":1,"device":5,"hlc":7,"next_gid":2,"next_seq":3,"merged":[],
            "mine":[{"seq":1,"changes":[]}],"local":{},
            "remotes":{"r":{"pushed":1,"pulled":{"00000000000000aa":4},"objects":{"ab":"pack-1"}}}}"#;
        std::fs::write(dir.path().join(STATE), v1).unwrap();
        let st = State::load(dir.path(), 5).unwrap();
        assert_eq!((st.format, st.batches, st.hlc), (2, 1, 7));
        st.save(dir.path()).unwrap();
        let mut again = State::load(dir.path(), 5).unwrap();
        assert!(!again.union_read);
        again.read_union().unwrap();
        assert_eq!(again.remotes["r"].objects["ab"], "pack-1");
        assert_eq!(again.remotes["r"].pulled["00000000000000aa"], 4);
        assert_eq!(again.mine.len(), 1);
        // The union written, SYNC not: SYNC counts one batch less.
        again.mine.push(Batch { seq: 2, changes: Vec::new() });
        again.batches = 2;
        let union = UnionRef {
            merged: &again.merged,
            mine: &again.mine,
            objects: again.remotes.iter().map(|(n, r)| (n.as_str(), &r.objects)).collect(),
        };
        write_atomic(&dir.path().join(UNION), &serde_json::to_vec(&union).unwrap()).unwrap();
        let mut cut = State::load(dir.path(), 5).unwrap();
        assert_eq!(cut.batches, 1);
        cut.read_union().unwrap();
        assert_eq!(cut.batches, 2);
        assert!(State::load(dir.path(), 6).is_err(), "another device's state is refused");
    }
}
