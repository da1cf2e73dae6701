//! The scan: the tree's differences from what it showed after the last sync, as this
//! device's changes.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use anyhow::Result;
use cowfs_engine::{Engine, InodeId};

use super::model::{self, Change, Gid, Key, Kind, Place, Stamp, Version, Vid};
use super::state::{Local, State};
use super::{Report, STAGING, clock_of, hex, kind_of};

/// Records the tree's differences from what it showed after the last sync as changes of this
/// device, and makes what it shows now the new base.
pub(super) fn scan(e: &Engine, st: &mut State, report: &mut Report) -> Result<(Vec<Change>, bool)> {
    // Versions the engine makes from now on have later clocks.
    let scanned = e.clock().0;
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
                    let base = if fresh { None } else { vid };
                    change.versions = saved_versions(e, st, i, key.gid, base);
                    vid = change.versions.last().map(|v| v.vid);
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
            vid: Vid { device: me, seq: Vid::SYNC_MADE | st.next_seq },
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
    st.scanned = scanned;
    Ok((out, base_changed))
}

/// The versions this device saved of file `i` (entry `gid`) since the one it showed after the
/// last sync (`base`; none for an entry new to sync) as versions of the union, oldest first:
/// the engine's (their ids, clocks and times; the newest, which is what the file holds, with
/// the file's mtime), each descending from the one before and the first from `base`. An entry
/// new to sync brings the versions saved since the last scan (only the newest at a first
/// sync); an engine history that does not end in this device's version of what the file holds
/// (content the engine recorded no version of) gives one version sync makes.
fn saved_versions(e: &Engine, st: &mut State, i: &cowfs_engine::Inode, gid: Gid, base: Option<Vid>) -> Vec<Version> {
    let me = st.device;
    let known = st.merged.entries.get(&gid);
    let hlc_of = |out: &[Version], vid: Option<Vid>| {
        let vid = vid?;
        out.iter().find(|v| v.vid == vid).or_else(|| known?.versions.get(&vid)).map(|v| v.hlc)
    };
    let engine = i.lineage.map(|l| e.versions(l)).unwrap_or_default();
    let id_of = |v: &cowfs_engine::Version| Vid { device: v.id.device.0, seq: v.id.seq };
    // Up to the newest version holding what the file holds.
    let end = engine.iter().rposition(|v| (v.content, v.size) == (i.content, i.size));
    let start = |end: usize| match base.and_then(|b| engine[..=end].iter().position(|v| id_of(v) == b)) {
        Some(at) => at + 1,
        None if st.scanned > 0 => engine[..=end].iter().position(|v| v.hlc.0 > st.scanned).unwrap_or(end),
        None => end,
    };
    let saved: Vec<&cowfs_engine::Version> = match end {
        Some(end) if engine[end].id.device.0 == me => engine[start(end).min(end)..=end]
            .iter()
            .filter(|v| v.id.device.0 == me && known.is_none_or(|k| !k.versions.contains_key(&id_of(v))))
            .map(|v| v.as_ref())
            .collect(),
        _ => Vec::new(),
    };
    let mut out: Vec<Version> = Vec::new();
    let mut parent = base;
    for (n, v) in saved.iter().enumerate() {
        let newest = n + 1 == saved.len();
        let time = if newest { i.mtime } else { v.time };
        let after = hlc_of(&out, parent).map_or(0, |h| h + 1);
        out.push(Version {
            vid: id_of(v),
            parents: parent.into_iter().collect(),
            hlc: v.hlc.0.max(after),
            time: (time.secs, time.nanos),
            size: v.size,
            content: v.content.map(|c| hex(&c.0)),
        });
        parent = Some(id_of(v));
    }
    if out.is_empty() {
        // The edit's time orders it among concurrent ones (the later edit keeps the name);
        // after what it descends from in any case.
        let after = hlc_of(&out, parent).map_or(0, |h| h + 1);
        st.next_seq += 1;
        out.push(Version {
            vid: Vid { device: me, seq: Vid::SYNC_MADE | st.next_seq },
            parents: parent.into_iter().collect(),
            hlc: clock_of(i.mtime).max(after),
            time: (i.mtime.secs, i.mtime.nanos),
            size: i.size,
            content: i.content.map(|c| hex(&c.0)),
        });
    }
    out
}

/// The entries the union shows that no live local entry shows, by (directory, name).
pub(super) type Unmapped = HashMap<(Gid, String), model::Shown>;

/// The entry the union shows at `at` (directory, name) that a new local entry of this kind and
/// content (and size) is; each is adopted once. `unmapped` is filled at the first call.
pub(super) fn adoptable(
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
