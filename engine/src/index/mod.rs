//! The in-memory index: objects (chunks and nodes) with their locations and reference
//! counts, the namespace (inodes and directory entries), per-lineage version lists and
//! snapshots. It changes only through [`Index::apply`], which the writer thread calls after
//! appending a record and recovery calls while replaying the log: one code path, so a
//! recovered index equals the one that was running; and through the two compaction steps
//! of [`compaction`] ([`Index::forget`], [`Index::relocate`]), which the writer thread runs.
//! Pure: no I/O. [`ops`] turns an operation into the records that express it.
//!
//! Reference counts count *direct* references: for a chunk, the stored leaf entries that
//! name it; for a node, the stored inner entries, versions and live inodes that name it.
//! Snapshots do not count (creating one is O(1)); gc marks from them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use crate::error::CorruptKind;
use crate::format::record::{FileKind, Inode, LowerFile, LowerSource, Record, SnapshotMeta, Version};
use crate::ids::{DeviceId, Hlc, InodeId, LineageId, LowerFileId, NodeId, SegmentId, SnapshotId};

mod compaction;
pub mod ops;

pub use compaction::{Candidate, Garbage, Move};

/// A map keyed by object id (a blake3 hash): hashed with foldhash, randomly seeded per
/// process (SipHash over 32 bytes was a visible cost at a million objects).
pub type ObjectMap<V> = HashMap<[u8; 32], V, foldhash::fast::RandomState>;
/// Where a frame is: segment, offset of its header, whole frame length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Location {
    /// Segment.
    pub segment: SegmentId,
    /// Offset of the frame header in the segment file.
    pub offset: u64,
    /// Header + payload length.
    pub len: u32,
}

/// A stored chunk or node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjEntry {
    /// Where its frame is.
    pub loc: Location,
    /// Direct references (see the module doc).
    pub refs: u32,
    /// A content-tree node (else a chunk).
    pub is_node: bool,
    /// Raw bytes (chunks) or encoded bytes (nodes).
    pub raw_len: u32,
}

/// A directory entry's target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dirent {
    /// Target inode.
    pub child: InodeId,
    /// Its type.
    pub kind: FileKind,
}

/// The file tree: structurally shared, so cloning it (a snapshot) is O(1).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Namespace {
    /// All inodes.
    pub inodes: imbl::HashMap<InodeId, Arc<Inode>>,
    /// Entries of each directory, by name.
    pub dirs: imbl::HashMap<InodeId, imbl::OrdMap<Vec<u8>, Dirent>>,
    /// Parent of each directory (derived from the entries; the root has none).
    pub parent: imbl::HashMap<InodeId, InodeId>,
    /// Lineages of files deleted from a path, by (directory, name), until a new entry takes
    /// the name: a file created there continues the lineage.
    pub graves: imbl::HashMap<(InodeId, Vec<u8>), LineageId>,
}

impl Namespace {
    /// The inode, if it exists.
    pub fn inode(&self, ino: InodeId) -> Option<&Arc<Inode>> {
        self.inodes.get(&ino)
    }
    /// The entry `name` of directory `dir`.
    pub fn lookup(&self, dir: InodeId, name: &[u8]) -> Option<Dirent> {
        self.dirs.get(&dir).and_then(|d| d.get(name)).copied()
    }
    /// True when `dir` has no entries.
    /// (A directory not listed from its lower trees yet is not: they may hold entries.)
    pub fn is_empty_dir(&self, dir: InodeId) -> bool {
        self.dirs.get(&dir).is_none_or(|d| d.is_empty()) && self.inode(dir).is_none_or(|i| i.unlisted().is_none())
    }
    /// Takes from `listed` the entries that listing directory `dir` from its lower directories
    /// `sources` gave it, when this tree holds `dir` still unlisted with those sources: listing
    /// only makes stored what the directory showed all along, so it belongs to every tree that
    /// holds the directory unlisted (snapshots, the tree at a moment). Names this tree has stay.
    pub fn take_listing(&mut self, listed: &Namespace, dir: InodeId, sources: &[LowerSource]) {
        let Some(d) = self.inodes.get(&dir).filter(|d| d.unlisted() == Some(sources)) else { return };
        let mut d = (**d).clone();
        for (name, e) in listed.dirs.get(&dir).into_iter().flat_map(|m| m.iter()) {
            let Some(child) = listed.inodes.get(&e.child) else { continue };
            if self.lookup(dir, name).is_some() {
                continue;
            }
            self.inodes.insert(e.child, child.clone());
            self.dirs.entry(dir).or_default().insert(name.clone(), *e);
            if e.kind == FileKind::Directory {
                self.parent.insert(e.child, dir);
            }
        }
        if let Some(l) = listed.inodes.get(&dir) {
            (d.lower, d.nlink) = (l.lower.clone(), l.nlink);
        }
        self.inodes.insert(dir, Arc::new(d));
    }
    /// True when `a` is `b` or one of its ancestors.
    pub fn is_ancestor(&self, a: InodeId, mut b: InodeId) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.parent.get(&b) {
                Some(&p) => b = p,
                None => return false,
            }
        }
    }
}

/// A snapshot: its metadata and the namespace as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// Name, time, ...
    pub meta: Arc<SnapshotMeta>,
    /// The tree at that moment.
    pub ns: Namespace,
}

/// Allocation counters, derived from the records applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counters {
    /// Next inode number.
    pub next_ino: u64,
    /// Next lineage id.
    pub next_lineage: u64,
    /// Next snapshot id.
    pub next_snapshot: u64,
    /// Highest version sequence of this device.
    pub version_seq: u64,
    /// Highest hybrid logical clock seen.
    pub hlc: u64,
}

/// Key of a metadata record whose frame stays live while it is the newest for its key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MetaKey {
    /// The newest inode record of an inode.
    Inode(InodeId),
    /// The newest entry record of a name.
    Dirent(InodeId, Vec<u8>),
}

/// The parts of an [`Index`], for building one from a checkpoint ([`Index::from_parts`]).
#[derive(Debug, Default)]
pub(crate) struct IndexParts {
    pub device: DeviceId,
    pub ns: Namespace,
    pub objects: ObjectMap<ObjEntry>,
    pub lineages: HashMap<LineageId, Vec<Arc<Version>>>,
    pub snapshots: BTreeMap<SnapshotId, Snapshot>,
    pub live: BTreeMap<SegmentId, u64>,
    pub meta_locs: HashMap<MetaKey, Location>,
    pub counters: Counters,
    pub lower_files: BTreeMap<LowerFileId, Arc<LowerFile>>,
    pub absorbed: BTreeMap<LowerFileId, NodeId>,
}

/// The whole index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Index {
    /// This store's device id (versions of this device advance `version_seq`).
    device: DeviceId,
    /// Current tree.
    ns: Namespace,
    /// Chunks and nodes by id.
    objects: ObjectMap<ObjEntry>,
    /// Versions of each lineage, by number.
    lineages: HashMap<LineageId, Vec<Arc<Version>>>,
    /// Snapshots by id.
    snapshots: BTreeMap<SnapshotId, Snapshot>,
    /// Live frame bytes per segment (the rest of the file is dead or headers).
    live: BTreeMap<SegmentId, u64>,
    /// Frame of the newest record per key.
    meta_locs: HashMap<MetaKey, Location>,
    /// Allocation counters.
    counters: Counters,
    /// Lower files content refers to (overlay mounts), by id.
    lower_files: BTreeMap<LowerFileId, Arc<LowerFile>>,
    /// Lower files whose bytes are in the store: the content tree over each one's offsets.
    absorbed: BTreeMap<LowerFileId, NodeId>,
}

fn missing(what: String) -> CorruptKind {
    CorruptKind::Missing(what)
}

impl Index {
    /// This store's device id.
    pub fn device(&self) -> DeviceId {
        self.device
    }
    /// The current tree.
    pub fn ns(&self) -> &Namespace {
        &self.ns
    }
    /// Chunks and nodes by id.
    pub fn objects(&self) -> &ObjectMap<ObjEntry> {
        &self.objects
    }
    /// Versions of each lineage, by number.
    pub fn lineages(&self) -> &HashMap<LineageId, Vec<Arc<Version>>> {
        &self.lineages
    }
    /// Snapshots by id.
    pub fn snapshots(&self) -> &BTreeMap<SnapshotId, Snapshot> {
        &self.snapshots
    }
    /// Where a snapshot holds a regular file of one of `lineages`: (snapshot, lineage) pairs,
    /// sorted.
    pub fn snapshot_holds(&self, lineages: &[LineageId]) -> Vec<(SnapshotId, LineageId)> {
        let wanted: HashSet<LineageId> = lineages.iter().copied().collect();
        let mut out = BTreeSet::new();
        for s in self.snapshots.values() {
            let held = s.ns.inodes.values().filter(|i| i.kind == FileKind::Regular).filter_map(|i| i.lineage);
            out.extend(held.filter(|l| wanted.contains(l)).map(|l| (s.meta.id, l)));
        }
        out.into_iter().collect()
    }
    /// Live frame bytes per segment.
    pub fn live(&self) -> &BTreeMap<SegmentId, u64> {
        &self.live
    }
    /// Frame of the newest record per key.
    pub fn meta_locs(&self) -> &HashMap<MetaKey, Location> {
        &self.meta_locs
    }
    /// Allocation counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
    /// Lower files content refers to, by id.
    pub fn lower_files(&self) -> &BTreeMap<LowerFileId, Arc<LowerFile>> {
        &self.lower_files
    }
    /// The number the next recorded lower file gets.
    pub fn next_lower_file(&self) -> LowerFileId {
        LowerFileId(self.lower_files.last_key_value().map_or(1, |(id, _)| id.0 + 1))
    }
    /// Lower files whose bytes are in the store (`overlay absorb`): the content tree over each
    /// one's offsets.
    pub fn absorbed(&self) -> &BTreeMap<LowerFileId, NodeId> {
        &self.absorbed
    }
    /// The oldest format version that holds everything this index has (a checkpoint of it is
    /// written in the store's version, or this one if newer).
    pub fn format_needed(&self) -> u32 {
        use crate::format::frame::{ABSORB_FORMAT_VERSION, BASE_FORMAT_VERSION, LOWER_FORMAT_VERSION};
        if !self.absorbed.is_empty() {
            ABSORB_FORMAT_VERSION
        } else if !self.lower_files.is_empty() {
            LOWER_FORMAT_VERSION
        } else {
            BASE_FORMAT_VERSION
        }
    }

    /// An index made of decoded parts (a checkpoint's).
    pub(crate) fn from_parts(parts: IndexParts) -> Index {
        let IndexParts { device, ns, objects, lineages, snapshots, live, meta_locs, counters, lower_files, absorbed } =
            parts;
        Index { device, ns, objects, lineages, snapshots, live, meta_locs, counters, lower_files, absorbed }
    }

    /// An empty index for a store whose device id is `device`.
    pub fn new(device: DeviceId) -> Self {
        Index {
            device,
            ns: Namespace::default(),
            objects: ObjectMap::default(),
            lineages: HashMap::new(),
            snapshots: BTreeMap::new(),
            live: BTreeMap::new(),
            meta_locs: HashMap::new(),
            counters: Counters { next_ino: 1, next_lineage: 1, next_snapshot: 1, version_seq: 0, hlc: 0 },
            lower_files: BTreeMap::new(),
            absorbed: BTreeMap::new(),
        }
    }

    fn add_live(&mut self, loc: Location) {
        *self.live.entry(loc.segment).or_default() += loc.len as u64;
    }

    fn kill(&mut self, loc: Location) {
        if let Some(v) = self.live.get_mut(&loc.segment) {
            *v = v.saturating_sub(loc.len as u64);
        }
    }

    /// Tracks the newest record per key. A superseded record stays live: compaction keeps
    /// metadata (it is the history `cowfs log` and `.cowfs/at/` replay).
    fn replace_meta(&mut self, key: MetaKey, loc: Option<Location>) {
        match loc {
            Some(l) => self.meta_locs.insert(key, l),
            None => self.meta_locs.remove(&key),
        };
    }

    fn add_ref(&mut self, id: &[u8; 32]) -> Result<(), CorruptKind> {
        let e = self.objects.get_mut(id).ok_or_else(|| missing(format!("object {}", NodeId(*id))))?;
        e.refs = e.refs.saturating_add(1);
        Ok(())
    }

    fn drop_ref(&mut self, id: &[u8; 32]) {
        if let Some(e) = self.objects.get_mut(id) {
            e.refs = e.refs.saturating_sub(1);
        }
    }

    fn check_content(&self, c: Option<NodeId>) -> Result<(), CorruptKind> {
        match c {
            Some(id) if !self.objects.get(&id.0).is_some_and(|e| e.is_node) => {
                Err(missing(format!("content root {id}")))
            }
            _ => Ok(()),
        }
    }

    /// Applies one record found (or just written) at `loc`. Every check happens before any
    /// change, so a failed apply leaves the index as it was.
    pub fn apply(&mut self, rec: &Record, loc: Location) -> Result<(), CorruptKind> {
        self.apply_with(rec, loc, false)
    }

    /// [`Index::apply`] for a replay of the whole log, which may meet records older than what
    /// compaction kept: an inode or version record whose content gc has since collected is
    /// applied without it being counted (a later record of that inode, or the version's
    /// prune, follows).
    pub fn apply_history(&mut self, rec: &Record, loc: Location) -> Result<(), CorruptKind> {
        self.apply_with(rec, loc, true)
    }

    fn apply_with(&mut self, rec: &Record, loc: Location, history: bool) -> Result<(), CorruptKind> {
        match rec {
            Record::Chunk(meta) => {
                if self.objects.contains_key(&meta.id.0) {
                    // A duplicate written by a race; the first copy stays the live one.
                    return Ok(());
                }
                self.objects.insert(meta.id.0, ObjEntry { loc, refs: 0, is_node: false, raw_len: meta.raw_len });
                self.add_live(loc);
            }
            Record::Node(id, node) => {
                if self.objects.contains_key(&id.0) {
                    return Ok(());
                }
                let refs = node.references();
                if let Some(r) = refs.iter().find(|r| !self.objects.contains_key(*r)) {
                    return Err(missing(format!("object {} referenced by node {id}", NodeId(*r))));
                }
                if let Some(f) = node.lower_files().find(|f| !self.lower_files.contains_key(f)) {
                    return Err(missing(format!("lower file {f} referenced by node {id}")));
                }
                for r in &refs {
                    self.add_ref(r)?;
                }
                self.objects.insert(id.0, ObjEntry { loc, refs: 0, is_node: true, raw_len: loc.len });
                self.add_live(loc);
            }
            Record::Inode(inode) => {
                let collected = history && self.check_content(inode.content).is_err();
                if !collected {
                    self.check_content(inode.content)?;
                }
                if let Some(c) = inode.content.filter(|_| !collected) {
                    self.add_ref(&c.0)?;
                }
                let old = self.ns.inodes.insert(inode.ino, inode.clone());
                if let Some(c) = old.as_ref().and_then(|o| o.content) {
                    self.drop_ref(&c.0);
                }
                // A directory just listed from its lower trees: so are the snapshots' copies.
                if let Some(sources) = old.as_ref().and_then(|o| o.unlisted()).filter(|_| inode.unlisted().is_none()) {
                    for s in self.snapshots.values_mut() {
                        s.ns.take_listing(&self.ns, inode.ino, sources);
                    }
                }
                self.counters.next_ino = self.counters.next_ino.max(inode.ino.0 + 1);
                if let Some(l) = inode.lineage {
                    self.counters.next_lineage = self.counters.next_lineage.max(l.0 + 1);
                }
                self.add_live(loc);
                self.replace_meta(MetaKey::Inode(inode.ino), Some(loc));
            }
            Record::InodeFree(ino) => {
                let Some(old) = self.ns.inodes.remove(ino) else {
                    return Err(missing(format!("inode {ino} to free")));
                };
                if let Some(c) = old.content {
                    self.drop_ref(&c.0);
                }
                self.ns.dirs.remove(ino);
                self.ns.parent.remove(ino);
                self.add_live(loc);
                self.replace_meta(MetaKey::Inode(*ino), None);
            }
            Record::DirentSet { parent, name, child, kind } => {
                if !self.ns.inodes.get(parent).is_some_and(|p| p.kind == FileKind::Directory) {
                    return Err(missing(format!("directory {parent} for entry")));
                }
                if !self.ns.inodes.contains_key(child) {
                    return Err(missing(format!("inode {child} named by an entry")));
                }
                let dir = self.ns.dirs.entry(*parent).or_default();
                dir.insert(name.clone(), Dirent { child: *child, kind: *kind });
                self.ns.graves.remove(&(*parent, name.clone()));
                // A directory has exactly one name once a transaction completes, so the last
                // entry set for it names its parent; the link goes when the directory is freed.
                if *kind == FileKind::Directory {
                    self.ns.parent.insert(*child, *parent);
                }
                self.add_live(loc);
                self.replace_meta(MetaKey::Dirent(*parent, name.clone()), Some(loc));
            }
            Record::DirentRemove { parent, name } => {
                let Some(dir) = self.ns.dirs.get_mut(parent) else {
                    return Err(missing(format!("directory {parent} for entry removal")));
                };
                if dir.remove(name.as_slice()).is_none() {
                    return Err(missing(format!("entry to remove in {parent}")));
                }
                self.add_live(loc);
                self.replace_meta(MetaKey::Dirent(*parent, name.clone()), None);
            }
            Record::Version(v) => {
                // In a replay of a compacted log, a version pruned later (its record kept in a
                // segment compaction did not rewrite) may name content already collected.
                let collected = history && self.check_content(v.content).is_err();
                if !collected {
                    self.check_content(v.content)?;
                }
                let list = self.lineages.get(&v.lineage);
                if list.and_then(|l| l.last()).is_some_and(|last| last.number >= v.number) {
                    return Err(CorruptKind::Malformed("version number not increasing"));
                }
                if let Some(c) = v.content.filter(|_| !collected) {
                    self.add_ref(&c.0)?;
                }
                self.lineages.entry(v.lineage).or_default().push(v.clone());
                if v.id.device == self.device {
                    self.counters.version_seq = self.counters.version_seq.max(v.id.seq);
                }
                self.counters.hlc = self.counters.hlc.max(v.hlc.0);
                self.counters.next_lineage = self.counters.next_lineage.max(v.lineage.0 + 1);
                self.add_live(loc);
            }
            Record::SnapshotCreate(meta) => {
                if self.snapshots.contains_key(&meta.id) || self.snapshots.values().any(|s| s.meta.name == meta.name) {
                    return Err(CorruptKind::Malformed("duplicate snapshot"));
                }
                self.snapshots.insert(meta.id, Snapshot { meta: meta.clone(), ns: self.ns.clone() });
                self.counters.next_snapshot = self.counters.next_snapshot.max(meta.id.0 + 1);
                self.counters.hlc = self.counters.hlc.max(meta.hlc.0);
                self.add_live(loc);
            }
            Record::SnapshotDelete(id) => {
                if self.snapshots.remove(id).is_none() {
                    return Err(missing(format!("snapshot {id} to delete")));
                }
                self.add_live(loc);
            }
            Record::Grave { parent, name, lineage } => {
                self.ns.graves.insert((*parent, name.clone()), *lineage);
                self.counters.next_lineage = self.counters.next_lineage.max(lineage.0 + 1);
                self.add_live(loc);
            }
            Record::Stamp(_) => self.add_live(loc),
            Record::LowerFile(f) => {
                match self.lower_files.get(&f.id) {
                    Some(known) if known != f => return Err(CorruptKind::Malformed("lower file id taken twice")),
                    Some(_) => return Ok(()),
                    None => self.lower_files.insert(f.id, f.clone()),
                };
                self.add_live(loc);
            }
            Record::Absorbed { file, root } => {
                if !self.lower_files.contains_key(file) {
                    return Err(missing(format!("lower file {file} absorbed")));
                }
                match self.absorbed.get(file) {
                    Some(known) if known != root => return Err(CorruptKind::Malformed("lower file absorbed twice")),
                    Some(_) => return Ok(()),
                    None => {}
                }
                self.check_content(Some(*root))?;
                self.add_ref(&root.0)?;
                self.absorbed.insert(*file, *root);
                self.add_live(loc);
            }
            Record::SnapshotForget { snapshot, lineage } => {
                let Some(s) = self.snapshots.get_mut(snapshot) else {
                    return Err(missing(format!("snapshot {snapshot} to take lineage {lineage} out of")));
                };
                let gone: HashSet<InodeId> =
                    s.ns.inodes
                        .values()
                        .filter(|i| i.kind == FileKind::Regular && i.lineage == Some(*lineage))
                        .map(|i| i.ino)
                        .collect();
                let dirs: Vec<InodeId> =
                    s.ns.dirs
                        .iter()
                        .filter(|(_, entries)| entries.values().any(|d| gone.contains(&d.child)))
                        .map(|(dir, _)| *dir)
                        .collect();
                for dir in dirs {
                    if let Some(entries) = s.ns.dirs.get_mut(&dir) {
                        let names: Vec<Vec<u8>> =
                            entries.iter().filter(|(_, d)| gone.contains(&d.child)).map(|(n, _)| n.clone()).collect();
                        for n in names {
                            entries.remove(&n);
                        }
                    }
                }
                for ino in &gone {
                    s.ns.inodes.remove(ino);
                }
                s.ns.graves.retain(|_, l| l != lineage);
                self.add_live(loc);
            }
            // Meaningful only at the end of the log: never live, dropped by compaction.
            Record::SyncMark(_) => {}
            Record::Prune { lineage, numbers, grave, counters } => {
                self.counters.version_seq = self.counters.version_seq.max(counters.0);
                self.counters.hlc = self.counters.hlc.max(counters.1);
                self.counters.next_lineage = self.counters.next_lineage.max(counters.2);
                // With the lineage's last version goes its grave. (A replay of a compacted
                // log may no longer hold the versions, but still meets this record.)
                if let Some(key) = grave
                    && self.ns.graves.get(key) == Some(lineage)
                {
                    self.ns.graves.remove(key);
                }
                if let Some(list) = self.lineages.get_mut(lineage) {
                    let mut dropped = Vec::new();
                    list.retain(|v| {
                        let prune = numbers.binary_search(&v.number).is_ok();
                        if prune {
                            dropped.push(v.content);
                        }
                        !prune
                    });
                    if list.is_empty() {
                        self.lineages.remove(lineage);
                    }
                    for c in dropped.into_iter().flatten() {
                        self.drop_ref(&c.0);
                    }
                }
                self.add_live(loc);
            }
        }
        Ok(())
    }

    /// Records that segment `seg` exists (with no live bytes yet): every segment file has an
    /// entry in `live`, so a replay of the log and a checkpoint agree on an empty one.
    pub fn register_segment(&mut self, seg: SegmentId) {
        self.live.entry(seg).or_insert(0);
    }

    /// Removes an object compaction found unreferenced: its bytes become dead and the
    /// references it held (`children`, as [`crate::format::tree::Node::references`] lists them) go.
    pub fn forget_object(&mut self, id: &[u8; 32], children: &[[u8; 32]]) {
        if let Some(e) = self.objects.remove(id) {
            self.kill(e.loc);
            for c in children {
                self.drop_ref(c);
            }
        }
    }

    /// The snapshot called `name`.
    pub fn snapshot_by_name(&self, name: &str) -> Option<&Snapshot> {
        self.snapshots.values().find(|s| s.meta.name == name)
    }

    /// Next hybrid logical clock value after `physical_ms`.
    pub fn next_hlc(&self, physical_ms: u64) -> Hlc {
        let phys = physical_ms << 16;
        Hlc(phys.max(self.counters.hlc + 1))
    }
}
