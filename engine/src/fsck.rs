//! Read-only consistency check of a store (the engine half of `cowfs-fsck`): every frame of
//! every segment, the checkpoint against a full replay of the log, every object a tree,
//! version, inode or snapshot references, and the directory tree (reachability, cycles, link
//! counts). With `verify_data`, every chunk is read, decompressed and hashed. Changes nothing:
//! recovery runs in read-only mode, and a torn tail is reported, not cut.

use std::collections::{HashMap, HashSet};

use crate::chunk;
use crate::error::{Error, Result};
use crate::ids::{ChunkId, InodeId, NodeId};
use crate::index::{Index, Namespace};
use crate::record::FileKind;
use crate::storage::Storage;
use crate::store::{self, RecoverMode, Segments};
use crate::tree::{self, ExtentKind, Node};

/// One problem found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Where: a file and offset, or a path / inode.
    pub place: String,
    /// What is wrong.
    pub problem: String,
    /// False for what open would repair by itself (a torn tail).
    pub error: bool,
}

/// The result of a check.
#[derive(Debug, Clone, Default)]
pub struct Report {
    /// Problems, in the order found.
    pub findings: Vec<Finding>,
    /// Segments read.
    pub segments: u64,
    /// Objects (chunks and nodes) checked.
    pub objects: u64,
    /// Chunks whose data was read and hashed (`verify_data`).
    pub chunks_verified: u64,
    /// Inodes checked.
    pub inodes: u64,
}

impl Report {
    /// True when nothing is wrong (a torn tail alone is not an error).
    pub fn clean(&self) -> bool {
        self.findings.iter().all(|f| !f.error)
    }
    fn error(&mut self, place: impl Into<String>, problem: impl Into<String>) {
        self.findings.push(Finding { place: place.into(), problem: problem.into(), error: true });
    }
}

/// Checks the store in `storage`; `Err` only when the check itself cannot run (not a store,
/// unreadable directory).
pub fn check(storage: &dyn Storage, verify_data: bool) -> Result<Report> {
    let meta = crate::engine::read_meta(storage)?.ok_or_else(|| Error::NotAStore { path: storage.describe() })?;
    let mut r = Report::default();
    let segments = Segments::default();
    let full = match store::recover(storage, &meta, &segments, RecoverMode::FullReplay) {
        Ok(rec) => {
            if let Some((seg, off, len)) = rec.report.torn_tail {
                r.findings.push(Finding {
                    place: format!("{} at {off}", seg.file_name()),
                    problem: format!("torn tail of {len} bytes (cut at the next open)"),
                    error: false,
                });
            }
            rec.index
        }
        Err(e) => {
            r.error("log", e.to_string());
            return Ok(r);
        }
    };
    r.segments = segments.ids().len() as u64;
    match store::recover(storage, &meta, &Segments::default(), RecoverMode::ReadOnly) {
        Ok(rec) => {
            for (name, why) in &rec.report.bad_checkpoints {
                r.error(name.clone(), format!("checkpoint does not verify: {why}"));
            }
            let (a, b) = (&rec.index, &full);
            let differ: Vec<&str> = [
                ("tree", a.ns != b.ns),
                ("objects", a.objects != b.objects),
                ("versions", a.lineages != b.lineages),
                ("snapshots", a.snapshots != b.snapshots),
                ("live bytes", a.live != b.live),
                ("record places", a.meta_locs != b.meta_locs),
                ("counters", a.counters != b.counters),
                ("device", a.device != b.device),
            ]
            .into_iter()
            .filter_map(|(what, d)| d.then_some(what))
            .collect();
            if !differ.is_empty() {
                let name = rec.report.checkpoint.unwrap_or_else(|| "checkpoint".into());
                let what = differ.join(", ");
                r.error(
                    name,
                    format!("index from the checkpoint and the log differs from a full replay of the log ({what})"),
                );
            }
        }
        Err(e) => r.error("checkpoint", e.to_string()),
    }
    check_objects(&full, &segments, verify_data, &mut r);
    check_tree(&full.ns, "", &mut r);
    for s in full.snapshots.values() {
        check_tree(&s.ns, &format!("snapshot {}: ", s.meta.name), &mut r);
    }
    Ok(r)
}

fn check_objects(ix: &Index, segments: &Segments, verify_data: bool, r: &mut Report) {
    let mut roots: Vec<(String, NodeId)> = Vec::new();
    for (l, versions) in &ix.lineages {
        for v in versions {
            if let Some(c) = v.content {
                roots.push((format!("lineage {l} version {}", v.number), c));
            }
        }
    }
    for i in ix.ns.inodes.values() {
        if let Some(c) = i.content {
            roots.push((format!("inode {}", i.ino), c));
        }
    }
    for s in ix.snapshots.values() {
        for i in s.ns.inodes.values() {
            if let Some(c) = i.content {
                roots.push((format!("snapshot {} inode {}", s.meta.name, i.ino), c));
            }
        }
    }
    let mut seen_nodes: HashSet<NodeId> = HashSet::new();
    let mut seen_chunks: HashSet<ChunkId> = HashSet::new();
    let mut stack: Vec<(String, NodeId)> = roots;
    while let Some((who, id)) = stack.pop() {
        if !seen_nodes.insert(id) {
            continue;
        }
        let Some(e) = ix.objects.get(&id.0).filter(|e| e.is_node) else {
            r.error(who, format!("content node {id} is missing"));
            continue;
        };
        r.objects += 1;
        let place = format!("{} at {}", e.loc.segment.file_name(), e.loc.offset);
        let node = match segments.read_frame(e.loc) {
            Ok(p) if tree::node_id(&p) == id => match Node::decode(&p) {
                Ok(n) => n,
                Err(err) => {
                    r.error(place, format!("node {id} of {who}: {:?}", err.0));
                    continue;
                }
            },
            Ok(_) => {
                r.error(place, format!("node {id} of {who}: content does not match its id"));
                continue;
            }
            Err(err) => {
                r.error(place, format!("node {id} of {who}: {err}"));
                continue;
            }
        };
        match node {
            Node::Inner { children, .. } => stack.extend(children.iter().map(|c| (who.clone(), c.id))),
            Node::Leaf(extents) => {
                for x in extents {
                    let ExtentKind::Chunk { id: cid, offset } = x.kind else { continue };
                    if !seen_chunks.insert(cid) {
                        continue;
                    }
                    let Some(ce) = ix.objects.get(&cid.0).filter(|e| !e.is_node) else {
                        r.error(who.clone(), format!("chunk {cid} is missing"));
                        continue;
                    };
                    r.objects += 1;
                    if offset as u64 + x.len > ce.raw_len as u64 {
                        r.error(who.clone(), format!("extent beyond the end of chunk {cid}"));
                    }
                    if verify_data {
                        r.chunks_verified += 1;
                        let place = format!("{} at {}", ce.loc.segment.file_name(), ce.loc.offset);
                        match segments.read_frame(ce.loc) {
                            Ok(p) => {
                                if let Err(err) = chunk::decode_chunk(&p, cid) {
                                    r.error(place, format!("chunk {cid} of {who}: {:?}", err.0));
                                }
                            }
                            Err(err) => r.error(place, format!("chunk {cid} of {who}: {err}")),
                        }
                    }
                }
            }
        }
    }
}

/// Reachability from the root, no cycles, link counts.
fn check_tree(ns: &Namespace, prefix: &str, r: &mut Report) {
    let mut names: HashMap<InodeId, u32> = HashMap::new();
    let mut subdirs: HashMap<InodeId, u32> = HashMap::new();
    let mut seen: HashSet<InodeId> = HashSet::new();
    let mut stack = vec![(InodeId::ROOT, String::new())];
    seen.insert(InodeId::ROOT);
    if ns.inode(InodeId::ROOT).is_none() {
        r.error(format!("{prefix}/"), "root directory missing");
        return;
    }
    while let Some((dir, path)) = stack.pop() {
        for (name, d) in ns.dirs.get(&dir).into_iter().flat_map(|m| m.iter()) {
            let p = format!("{path}/{}", String::from_utf8_lossy(name));
            let Some(i) = ns.inode(d.child) else {
                r.error(format!("{prefix}{p}"), format!("entry names missing inode {}", d.child));
                continue;
            };
            if i.kind != d.kind {
                r.error(format!("{prefix}{p}"), "entry type differs from its inode");
            }
            *names.entry(d.child).or_default() += 1;
            if i.kind == FileKind::Directory {
                *subdirs.entry(dir).or_default() += 1;
                if !seen.insert(d.child) {
                    r.error(format!("{prefix}{p}"), "directory reachable twice (a cycle or a second name)");
                    continue;
                }
                stack.push((d.child, p));
            }
        }
    }
    for i in ns.inodes.values() {
        r.inodes += 1;
        let want = if i.kind == FileKind::Directory {
            2 + subdirs.get(&i.ino).copied().unwrap_or(0)
        } else {
            names.get(&i.ino).copied().unwrap_or(0)
        };
        let reachable = i.ino == InodeId::ROOT || names.contains_key(&i.ino);
        if !reachable && i.nlink > 0 {
            r.error(format!("{prefix}inode {}", i.ino), "not reachable from the root (orphan)");
        } else if reachable && i.nlink != want {
            r.error(format!("{prefix}inode {}", i.ino), format!("link count {} but {} found", i.nlink, want));
        }
    }
}
