//! What sync means, independent of stores and remotes: the changes each device uploads, their
//! union, and the one tree that union shows — computed the same way on every device, so two
//! devices that hold the same changes show the same tree (docs/SEMANTICS.md, *Sync*).
//!
//! An entry (file, directory, symlink) has a [`Gid`] given by the device that made it. Its
//! place (parent, name, attributes, or removed) is a last-writer-wins register ordered by
//! [`Stamp`]; its versions are a grow-only set forming a graph by their parents. Merging is
//! a union, so it is commutative, associative and idempotent: the order in which devices'
//! changes arrive does not matter. Nothing a device uploaded is dropped by the merge; what
//! the tree cannot show under its name (concurrent versions, two entries at one name) it
//! shows as conflict copies beside it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// An entry's identity on every device: the device that made it and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Gid {
    /// The device that made it (0: the root).
    pub device: u64,
    /// Its number on that device.
    pub n: u64,
}

impl Gid {
    /// The root directory, the same on every device.
    pub const ROOT: Gid = Gid { device: 0, n: 0 };
}

/// When a place was set: a hybrid logical clock, then the device, which orders every two
/// stamps (a device never gives one clock value twice).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Stamp {
    /// Hybrid logical clock: physical milliseconds << 16, or more.
    pub hlc: u64,
    /// The device that set it.
    pub device: u64,
}

/// A version's identity: the device that made it and its sequence number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Vid {
    /// The device.
    pub device: u64,
    /// Its number there.
    pub seq: u64,
}

impl Vid {
    /// Set in the sequence numbers of versions sync made itself (a settled conflict, content
    /// no engine version holds), which are not the engine's: the others are the ids of the
    /// engine's versions (device, sequence).
    pub const SYNC_MADE: u64 = 1 << 63;
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// A regular file (has versions).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
}

/// Where an entry is, with its attributes, or that it was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Place {
    /// When it was set (the newest wins).
    pub stamp: Stamp,
    /// The directory holding it.
    pub parent: Gid,
    /// Its name there.
    pub name: String,
    /// Permission bits.
    pub mode: u32,
    /// A symlink's target.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub target: String,
    /// Removed, having seen these versions: a version it did not see brings the file back
    /// (an edit wins over a concurrent delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<Vec<Vid>>,
}

/// A version of a file's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Version {
    /// Its identity.
    pub vid: Vid,
    /// The versions it descends from.
    pub parents: Vec<Vid>,
    /// When it was made (hybrid logical clock).
    pub hlc: u64,
    /// Its time (the file's mtime when saved): seconds, nanoseconds.
    pub time: (i64, u32),
    /// Size in bytes.
    pub size: u64,
    /// Content tree root (hex of the node id; none: empty or all hole).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// One entry's changes, as a device uploads them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// The entry.
    pub gid: Gid,
    /// What it is.
    pub kind: Kind,
    /// Its new place, if that changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<Place>,
    /// New versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<Version>,
}

/// Everything known of one entry: the newest place and every version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What it is.
    pub kind: Kind,
    /// The newest place (by stamp).
    pub place: Option<Place>,
    /// Every version (stored as a list: JSON keys are strings).
    #[serde(with = "as_list")]
    pub versions: BTreeMap<Vid, Version>,
}

/// A map whose values carry their keys, written as the list of its values.
mod as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Version, Vid};

    pub fn serialize<S: Serializer>(m: &BTreeMap<Vid, Version>, s: S) -> Result<S::Ok, S::Error> {
        m.values().collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Vid, Version>, D::Error> {
        Ok(Vec::<Version>::deserialize(d)?.into_iter().map(|v| (v.vid, v)).collect())
    }
}

impl Entry {
    /// The versions no other version descends from, oldest first by (hlc, device): the last
    /// is the one shown under the file's name.
    pub fn heads(&self) -> Vec<&Version> {
        let parents: BTreeSet<Vid> = self.versions.values().flat_map(|v| v.parents.iter().copied()).collect();
        let mut heads: Vec<&Version> = self.versions.values().filter(|v| !parents.contains(&v.vid)).collect();
        heads.sort_by_key(|v| (v.hlc, v.vid.device, v.vid.seq));
        heads
    }

    /// Whether its place says removed and the removal saw every head.
    fn removed(&self) -> bool {
        match self.place.as_ref().and_then(|p| p.removed.as_ref()) {
            None => self.place.is_none(),
            Some(seen) => self.heads().iter().all(|h| seen.contains(&h.vid)),
        }
    }
}

/// The union of every device's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "Vec<(Gid, Entry)>", from = "Vec<(Gid, Entry)>")]
pub struct Merged {
    /// By entry.
    pub entries: BTreeMap<Gid, Entry>,
}

impl From<Vec<(Gid, Entry)>> for Merged {
    fn from(v: Vec<(Gid, Entry)>) -> Merged {
        Merged { entries: v.into_iter().collect() }
    }
}

impl From<Merged> for Vec<(Gid, Entry)> {
    fn from(m: Merged) -> Self {
        m.entries.into_iter().collect()
    }
}

impl Merged {
    /// Adds `c`: its place if newer than the one known, its versions.
    pub fn apply(&mut self, c: &Change) {
        let e =
            self.entries.entry(c.gid).or_insert_with(|| Entry { kind: c.kind, place: None, versions: BTreeMap::new() });
        if let Some(p) = &c.place
            && e.place.as_ref().is_none_or(|old| old.stamp < p.stamp)
        {
            e.place = Some(p.clone());
        }
        for v in &c.versions {
            e.versions.entry(v.vid).or_insert_with(|| v.clone());
        }
    }

    /// The tree this union shows.
    pub fn view(&self) -> View {
        View::of(self)
    }
}

/// What a shown entry is: an entry under its name, or a version of it shown as a conflict
/// copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// The entry.
    pub gid: Gid,
    /// A conflict copy of this head of the file (its other content), or the entry itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy: Option<Vid>,
}

/// One entry of the tree a union shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shown {
    /// What it shows.
    pub key: Key,
    /// The directory it is in (the entry that shows it: directories of one name merge into
    /// the one that shows them all).
    pub parent: Gid,
    /// Its name there.
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// Permission bits.
    pub mode: u32,
    /// A symlink's target.
    pub target: String,
    /// A file's content: the version shown (its time is the file's modification time).
    pub version: Option<Version>,
    /// Why it is not under its own name (a conflict copy, or a name another entry won).
    pub conflict: Option<String>,
}

/// The tree: every shown entry, each directory before what it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    /// Parents first; within a directory by name.
    pub shown: Vec<Shown>,
}

/// `name` as a conflict copy made on `device` at `hlc`: Syncthing's
/// `stem.sync-conflict-YYYYMMDD-HHMMSS-DEVICE.ext` (UTC; DEVICE: the first 8 hex digits of
/// the device id; `.ext` kept when the name has one after its first character).
pub fn conflict_name(name: &str, hlc: u64, device: u64) -> String {
    let secs = ((hlc >> 16) / 1000) as i64;
    let when = jiff::Timestamp::from_second(secs).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let when = when.strftime("%Y%m%d-%H%M%S");
    let dev = format!("{device:016x}");
    let (mut stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    let tail = format!(".sync-conflict-{when}-{}{ext}", &dev[..8]);
    // Names are at most 255 bytes (a uniqueness suffix may need a few more: 240).
    while stem.len() + tail.len() > 240 && !stem.is_empty() {
        let cut = stem.char_indices().last().map_or(0, |(i, _)| i);
        stem = &stem[..cut];
    }
    format!("{stem}{tail}")
}

#[cfg(test)]
mod tests;

impl View {
    fn of(m: &Merged) -> View {
        let live = live_entries(m);
        let parent_of = parents_without_cycles(m, &live);
        let mut children: BTreeMap<Gid, Vec<Gid>> = BTreeMap::new();
        for (&g, &p) in &parent_of {
            children.entry(p).or_default().push(g);
        }
        let mut out = Vec::new();
        // Directories to fill: the one shown, and every directory merged into it.
        let mut todo: Vec<(Gid, Vec<Gid>)> = vec![(Gid::ROOT, vec![Gid::ROOT])];
        while let Some((shown_dir, merged)) = todo.pop() {
            let mut by_name: BTreeMap<&str, Vec<Gid>> = BTreeMap::new();
            for d in &merged {
                for g in children.get(d).into_iter().flatten() {
                    let p = m.entries[g].place.as_ref().expect("a live entry has a place");
                    by_name.entry(&p.name).or_default().push(*g);
                }
            }
            let mut taken: BTreeSet<String> = by_name.keys().map(|n| n.to_string()).collect();
            let mut unique = |base: String| {
                let mut name = base.clone();
                let mut i = 1;
                while !taken.insert(name.clone()) {
                    name = format!("{base}-{i}");
                    i += 1;
                }
                name
            };
            let mut shown_here = Vec::new();
            for (name, gids) in by_name {
                let place = |g: &Gid| m.entries[g].place.as_ref().expect("a live entry has a place");
                let (mut dirs, mut others): (Vec<Gid>, Vec<Gid>) =
                    gids.into_iter().partition(|g| m.entries[g].kind == Kind::Dir);
                // Directories of one name are one directory: the first made shows them all.
                dirs.sort_by_key(|g| (place(g).stamp, *g));
                // Else the newest place keeps the name; the others are conflict copies.
                others.sort_by_key(|g| std::cmp::Reverse((place(g).stamp, *g)));
                let winner_is_dir = !dirs.is_empty();
                if let Some(&first) = dirs.first() {
                    let p = place(&first);
                    shown_here.push(shown(Key { gid: first, copy: None }, Kind::Dir, shown_dir, name, p, None, None));
                    todo.push((first, dirs.clone()));
                }
                for (i, g) in others.iter().enumerate() {
                    let e = &m.entries[g];
                    let p = place(g);
                    let heads = e.heads();
                    let head = heads.last().map(|v| (*v).clone());
                    let (file_name, why) = if i == 0 && !winner_is_dir {
                        (name.to_string(), None)
                    } else {
                        (
                            unique(conflict_name(name, p.stamp.hlc, p.stamp.device)),
                            Some(format!("{name}: another entry has the name")),
                        )
                    };
                    // Concurrent versions: the newest under the name, each other as a copy —
                    // but one with the same content as the newest or a copy (two devices that
                    // saved the same bytes) is no conflict.
                    let mut contents: BTreeSet<(Option<&str>, u64)> =
                        head.iter().map(|h| (h.content.as_deref(), h.size)).collect();
                    for other in &heads[..heads.len().saturating_sub(1)] {
                        if !contents.insert((other.content.as_deref(), other.size)) {
                            continue;
                        }
                        let copy = unique(conflict_name(&file_name, other.hlc, other.vid.device));
                        let why = format!("{file_name}: concurrent version {:x}-{}", other.vid.device, other.vid.seq);
                        let key = Key { gid: *g, copy: Some(other.vid) };
                        shown_here.push(shown(key, Kind::File, shown_dir, &copy, p, Some((*other).clone()), Some(why)));
                    }
                    shown_here.push(shown(Key { gid: *g, copy: None }, e.kind, shown_dir, &file_name, p, head, why));
                }
            }
            shown_here.sort_by(|a, b| a.name.cmp(&b.name));
            out.extend(shown_here);
        }
        // Parents first: a directory's entries were pushed after the directory was shown.
        View { shown: out }
    }
}

fn shown(
    key: Key,
    kind: Kind,
    parent: Gid,
    name: &str,
    p: &Place,
    version: Option<Version>,
    conflict: Option<String>,
) -> Shown {
    Shown { key, parent, name: name.to_string(), kind, mode: p.mode, target: p.target.clone(), version, conflict }
}

/// The entries the tree shows: not removed, or removed but holding one that is shown (a
/// directory keeps what was put into it concurrently with its removal).
fn live_entries(m: &Merged) -> BTreeSet<Gid> {
    let mut live: BTreeSet<Gid> = m.entries.iter().filter(|(_, e)| !e.removed()).map(|(g, _)| *g).collect();
    // A live entry's ancestors live (bounded: a cycle cannot add more than there is).
    let mut more: Vec<Gid> = live.iter().copied().collect();
    while let Some(g) = more.pop() {
        let Some(p) = m.entries.get(&g).and_then(|e| e.place.as_ref()) else { continue };
        if p.parent != Gid::ROOT
            && m.entries.get(&p.parent).is_some_and(|e| e.kind == Kind::Dir && e.place.is_some())
            && live.insert(p.parent)
        {
            more.push(p.parent);
        }
    }
    live.remove(&Gid::ROOT);
    live
}

/// Each live entry's directory: its place's parent, or the root when that is not a known
/// directory; and where parents make a cycle (two devices moved two directories into each
/// other), the member placed last goes to the root.
fn parents_without_cycles(m: &Merged, live: &BTreeSet<Gid>) -> BTreeMap<Gid, Gid> {
    let mut parent: BTreeMap<Gid, Gid> = live
        .iter()
        .map(|g| {
            let p = m.entries[g].place.as_ref().expect("a live entry has a place").parent;
            let ok = p == Gid::ROOT || (live.contains(&p) && m.entries[&p].kind == Kind::Dir);
            (*g, if ok { p } else { Gid::ROOT })
        })
        .collect();
    let mut done: BTreeSet<Gid> = BTreeSet::new();
    for &start in live {
        let mut path = Vec::new();
        let mut at = start;
        let mut on_path = BTreeSet::new();
        while at != Gid::ROOT && !done.contains(&at) {
            if !on_path.insert(at) {
                // A cycle: from `at`'s first visit to here.
                let from = path.iter().position(|g| *g == at).expect("on the path");
                let cycle = &path[from..];
                let last = *cycle
                    .iter()
                    .max_by_key(|g| (m.entries[*g].place.as_ref().expect("live").stamp, **g))
                    .expect("a cycle has members");
                parent.insert(last, Gid::ROOT);
                break;
            }
            path.push(at);
            at = parent[&at];
        }
        done.extend(path);
    }
    parent
}
