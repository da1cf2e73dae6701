//! The apply: the tree made to show the union.

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::Result;
use cowfs_engine::{
    DeviceId, Engine, FileKind, Hlc, ImportedVersion, InodeId, NewInode, NodeId, SetAttr, Timestamp, VersionId,
};

use super::model::{Entry, Gid, Key, Kind, Version, Vid};
use super::packs::Packs;
use super::remote::Remote;
use super::state::{Local, RemoteState, State};
use super::{Report, STAGING, unhex};

/// Makes the tree show the union: creates, moves, updates and removes entries (fetching the
/// content it lacks) and records what it shows as the new base. Returns the store paths
/// changed.
pub(super) fn apply(
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
    let staged = staging_name(st.device);
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
            // The same bytes may be a newer version (a settled conflict, identical edits):
            // the next edit descends from it, and the history gains what it lacks of it.
            if let (Some(v), Some(l)) = (&s.version, local.get_mut(&ino))
                && l.vid != Some(v.vid)
            {
                l.vid = Some(v.vid);
                import(e, &mut packs, InodeId(ino), &st.merged.entries[&s.key.gid], v, s.key.copy.is_some())?;
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
                            import(e, &mut packs, i.ino, &st.merged.entries[&s.key.gid], v, s.key.copy.is_some())?;
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
                import(e, &mut packs, ino, &st.merged.entries[&s.key.gid], v, s.key.copy.is_some())?;
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
    if let Some(at) = staging
        && e.entries(at).map(|x| x.is_empty()).unwrap_or(false)
    {
        e.rmdir(InodeId::ROOT, staged.as_bytes(), false)?;
    }
    report.bytes_pulled = packs.bytes;
    st.local = local;
    touched.sort();
    touched.dedup();
    Ok(touched)
}

/// The name of this device's staging directory in the root.
fn staging_name(device: u64) -> String {
    format!("{STAGING}-{device:016x}")
}

/// The staging directory (made when first needed).
pub(super) fn staging_dir(e: &Engine, cached: &mut Option<InodeId>, device: u64, owner: (u32, u32)) -> Result<InodeId> {
    if let Some(i) = cached {
        return Ok(*i);
    }
    let name = staging_name(device);
    let i = match e.lookup(InodeId::ROOT, name.as_bytes()) {
        Ok(i) => i.ino,
        Err(_) => e.mkdir(InodeId::ROOT, name.as_bytes(), 0o700, owner.0, owner.1)?.ino,
    };
    *cached = Some(i);
    Ok(i)
}

/// Makes file `ino` show version `v` of `entry`, fetching what the store lacks. The other
/// devices' versions `v` is or descends from that the file's history lacks join it as the
/// versions they are, parents first (this device's own it no longer holds are not brought
/// back). When `v` is not one of them (this device's own, or one the history holds), or for a
/// conflict copy (`copy`: its history is its own), the file gets `v`'s content as a restore, a
/// new version, unless it holds that already.
pub(super) fn import(
    e: &Engine,
    packs: &mut Packs<'_>,
    ino: InodeId,
    entry: &Entry,
    v: &Version,
    copy: bool,
) -> Result<()> {
    let root_of = |v: &Version| v.content.as_deref().map(unhex).transpose().map(|r| r.map(NodeId));
    let time = |v: &Version| Timestamp { secs: v.time.0, nanos: v.time.1 };
    let name = |v: &Vid| format!("{:x}-{}", v.device, v.seq);
    let me = e.meta().device.0;
    let i = e.getattr(ino)?;
    let held: HashSet<Vid> = i
        .lineage
        .map(|l| e.versions(l))
        .unwrap_or_default()
        .iter()
        .map(|x| Vid { device: x.id.device.0, seq: x.id.seq })
        .collect();
    // `v` and its ancestors the history lacks, parents first (a version's clock is after its
    // parents'), `v` last.
    let mut gap: Vec<&Version> = Vec::new();
    let mut todo = if copy { Vec::new() } else { vec![v.vid] };
    let mut seen = HashSet::new();
    while let Some(id) = todo.pop() {
        if !seen.insert(id) || held.contains(&id) {
            continue;
        }
        let Some(x) = entry.versions.get(&id) else { continue };
        if x.vid.device != me {
            gap.push(x);
        }
        todo.extend(x.parents.iter().copied());
    }
    gap.sort_by_key(|x| (x.vid == v.vid, x.hlc, x.vid.device, x.vid.seq));
    let root = root_of(v)?;
    let shows = (i.size, i.content) == (v.size, root);
    if !gap.is_empty() {
        let mut versions = Vec::with_capacity(gap.len());
        let mut roots: Vec<NodeId> = root.into_iter().collect();
        for x in &gap {
            let content = root_of(x)?;
            roots.extend(content);
            versions.push(ImportedVersion {
                id: engine_id(x.vid),
                time: time(x),
                size: x.size,
                content,
                hlc: Hlc(x.hlc),
                parents: x.parents.iter().map(|p| engine_id(*p)).collect(),
            });
        }
        let received = packs.trees(e, &roots)?;
        let detail = match gap.len() {
            1 => format!("sync: version {} from the remote", name(&gap[0].vid)),
            n => format!("sync: {n} versions from the remote, the newest {}", name(&gap[n - 1].vid)),
        };
        let mtime = if shows { i.mtime } else { time(v) };
        e.import_versions(ino, versions, v.size, root, received, mtime, &detail)?;
    }
    if gap.last().is_none_or(|x| x.vid != v.vid) && !(shows && gap.is_empty()) {
        // The content is `v`'s now or at this commit; a version of it unless the history's
        // newest is.
        let received = packs.trees(e, &root.into_iter().collect::<Vec<_>>())?;
        let detail = format!("sync: version {} from the remote", name(&v.vid));
        let mtime = if shows { i.mtime } else { time(v) };
        e.import_content(ino, v.size, root, received, Some(mtime), &detail)?;
    }
    Ok(())
}

fn engine_id(v: Vid) -> VersionId {
    VersionId { device: DeviceId(v.device), seq: v.seq }
}

/// How deep an entry is (its directory chain, as recorded).
pub(super) fn depth(local: &BTreeMap<u64, Local>, l: &Local) -> usize {
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
