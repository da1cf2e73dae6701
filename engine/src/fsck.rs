//! Read-only consistency check of a store (the engine half of `cowfs-fsck`): every frame of
//! every segment, the checkpoint against a full replay of the log, every object a tree,
//! version, inode or snapshot references, and the directory tree (reachability, cycles, link
//! counts). With `verify_data`, every chunk is read, decompressed and hashed. Changes nothing:
//! recovery runs in read-only mode, and a torn tail is reported, not cut.

use std::collections::{BTreeSet, HashMap, HashSet};

use crate::error::{Error, Result, io};
use crate::format::frame::{self, SEGMENT_HEADER_LEN};
use crate::format::record::FileKind;
use crate::format::tree::{self, ExtentKind, Node};
use crate::ids::{ChunkId, InodeId, LowerFileId, NodeId, SegmentId};
use crate::index::{Index, Location, Namespace};
use crate::log::meta::{self, Backup, STORE_BACKUP, STORE_FILE};
use crate::log::recovery::{self, RecoverMode};
use crate::log::store::{self, Segments};
use crate::storage::{Storage, read_all, write_atomically};
use crate::{format::chunk, log::checkpoint};

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
    check_with_progress(storage, verify_data, &mut |_, _| {})
}

/// [`check`], telling `progress(done, total)` in bytes of stored chunks hashed (with
/// `verify_data`; the total counts every stored chunk, so garbage awaiting gc leaves the end
/// short of it).
pub fn check_with_progress(
    storage: &dyn Storage,
    verify_data: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Report> {
    let mut r = Report::default();
    let meta = match meta::read_header(storage) {
        Ok(Some(h)) => {
            for problem in h.problems() {
                r.error(STORE_FILE, problem);
            }
            let note = match h.backup {
                Backup::Missing => Some("is missing (a store from before it was kept)"),
                Backup::Older => Some("says an older format version (an upgrade cut short)"),
                _ => None,
            };
            if let Some(what) = note {
                let problem = format!("{STORE_BACKUP} {what}: the next open writes it");
                r.findings.push(Finding { place: STORE_BACKUP.into(), problem, error: false });
            }
            h.meta
        }
        Ok(None) => return Err(Error::NotAStore { path: storage.describe() }),
        // Both copies unusable: the rest is checked against a header rebuilt from the log.
        Err(e @ Error::Corrupt { .. }) => {
            let Ok((rebuilt, _)) = meta::rebuild(storage) else { return Err(e) };
            let problem = format!("{e}, and {STORE_BACKUP} is unusable too: --repair rebuilds them from the segments");
            r.error(STORE_FILE, problem);
            rebuilt
        }
        Err(e) => return Err(e),
    };
    let segments = Segments::default();
    // The checkpoints first: what they name (e.g. a segment that is gone) is reported even
    // when the log itself cannot be replayed.
    let names = storage.list().map_err(io("list", "."))?;
    for c in names.iter().filter(|n| checkpoint::parse_file_name(n).is_some()) {
        if let Some((ix, _)) = read_all(storage, c).ok().and_then(|b| checkpoint::decode(&b, meta.store_id).ok()) {
            for seg in ix.live().keys().filter(|s| !names.contains(&s.file_name())) {
                r.error(seg.file_name(), format!("segment named by checkpoint {c} is missing"));
            }
        }
    }
    let from_checkpoint = recovery::recover(storage, &meta, &Segments::default(), RecoverMode::ReadOnly);
    match &from_checkpoint {
        Ok(rec) => {
            for (name, why) in &rec.report.bad_checkpoints {
                r.error(name.clone(), format!("checkpoint does not verify: {why}"));
            }
        }
        Err(e) => r.error("checkpoint", e.to_string()),
    }
    let full = match recovery::recover(storage, &meta, &segments, RecoverMode::FullReplay) {
        Ok(rec) => {
            if let Some((seg, off, len)) = rec.report.torn_tail {
                let problem = match &rec.report.moved_aside {
                    None => format!("torn tail of {len} bytes (cut at the next open)"),
                    Some(to) => format!(
                        "the log ends at a frame that does not verify, with {len} bytes after it that hold valid \
                         frames (unsynced writes that landed out of order, or damage): the next open moves them \
                         aside to {to}"
                    ),
                };
                r.findings.push(Finding { place: format!("{} at {off}", seg.file_name()), problem, error: false });
            }
            rec.index
        }
        Err(e) => {
            r.error("log", e.to_string());
            return Ok(r);
        }
    };
    r.segments = segments.ids().len() as u64;
    if let Ok(rec) = from_checkpoint {
        // Compared as compaction leaves them: garbage aside (see `without_garbage`).
        let (a, b) = (&without_garbage(&rec.index, &segments), &without_garbage(&full, &segments));
        let differ: Vec<&str> = [
            ("tree", a.ns() != b.ns()),
            ("objects", a.objects() != b.objects()),
            ("versions", a.lineages() != b.lineages()),
            ("snapshots", a.snapshots() != b.snapshots()),
            ("live bytes", a.live() != b.live()),
            ("record places", a.meta_locs() != b.meta_locs()),
            ("counters", a.counters() != b.counters()),
            ("device", a.device() != b.device()),
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
    let lower = check_objects(&full, &segments, verify_data.then_some(progress), &mut r);
    check_refs(&full, &segments, &mut r);
    check_lower_files(storage, &full, &lower, &mut r);
    check_tree(full.ns(), "", &mut r);
    for s in full.snapshots().values() {
        check_tree(&s.ns, &format!("snapshot {}: ", s.meta.name), &mut r);
    }
    Ok(r)
}

/// `ix` without what nothing references (objects with no references, and then what only
/// they referenced), as compaction eventually collects it. Two indexes of the same log agree
/// on everything else, but may hold garbage differently: the log can hold two frames of one
/// object (writers racing to store the same bytes; the first is the object's), and once
/// compaction collected the object as garbage with the segment of its first frame, a full
/// replay meets the second frame and has the object again, unreferenced, until compaction
/// reaches that segment too.
fn without_garbage(ix: &Index, segments: &Segments) -> Index {
    let mut ix = ix.clone();
    loop {
        let dead: Vec<([u8; 32], bool, Location)> =
            ix.objects().iter().filter(|(_, e)| e.refs == 0).map(|(id, e)| (*id, e.is_node, e.loc)).collect();
        if dead.is_empty() {
            return ix;
        }
        for (id, is_node, loc) in dead {
            // A node that does not read is reported by `check_objects`; here it just holds no
            // references.
            let children = match is_node {
                true => segments.read_frame(loc).ok().and_then(|p| Node::decode(&p).ok()).map(|n| n.references()),
                false => None,
            };
            ix.forget_object(&id, &children.unwrap_or_default());
        }
    }
}

/// Every content tree reachable from a version, an inode (of the tree or a snapshot) or an
/// absorbed lower file: its nodes and chunks are there and read (chunks hashed with
/// `verify_data`). Returns the lower files these trees refer to (garbage awaiting gc may
/// refer to others: nothing reads it).
fn check_objects(
    ix: &Index,
    segments: &Segments,
    mut verify_data: Option<&mut dyn FnMut(u64, u64)>,
    r: &mut Report,
) -> BTreeSet<LowerFileId> {
    let total: u64 = ix.objects().values().filter(|e| !e.is_node).map(|e| u64::from(e.loc.len)).sum();
    let mut done = 0;
    let mut roots: Vec<(String, NodeId)> = Vec::new();
    for (l, versions) in ix.lineages() {
        for v in versions {
            if let Some(c) = v.content {
                roots.push((format!("lineage {l} version {}", v.number), c));
            }
        }
    }
    for i in ix.ns().inodes.values() {
        if let Some(c) = i.content {
            roots.push((format!("inode {}", i.ino), c));
        }
    }
    for s in ix.snapshots().values() {
        for i in s.ns.inodes.values() {
            if let Some(c) = i.content {
                roots.push((format!("snapshot {} inode {}", s.meta.name, i.ino), c));
            }
        }
    }
    roots.extend(ix.absorbed().iter().map(|(f, root)| (format!("absorbed lower file {f}"), *root)));
    let mut seen_nodes: HashSet<NodeId> = HashSet::new();
    let mut seen_chunks: HashSet<ChunkId> = HashSet::new();
    let mut lower = BTreeSet::new();
    let mut stack: Vec<(String, NodeId)> = roots;
    while let Some((who, id)) = stack.pop() {
        if !seen_nodes.insert(id) {
            continue;
        }
        let Some(e) = ix.objects().get(&id.0).filter(|e| e.is_node) else {
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
                    if let ExtentKind::Lower { file, .. } = x.kind {
                        // (Absorbed trees are walked first: `roots` ends with them.)
                        if who.starts_with("absorbed") {
                            r.error(who.clone(), "an absorbed tree refers to a lower file");
                        }
                        lower.insert(file);
                    }
                    let ExtentKind::Chunk { id: cid, offset } = x.kind else { continue };
                    if !seen_chunks.insert(cid) {
                        continue;
                    }
                    let Some(ce) = ix.objects().get(&cid.0).filter(|e| !e.is_node) else {
                        r.error(who.clone(), format!("chunk {cid} is missing"));
                        continue;
                    };
                    r.objects += 1;
                    if offset as u64 + x.len > ce.raw_len as u64 {
                        r.error(who.clone(), format!("extent beyond the end of chunk {cid}"));
                    }
                    if let Some(progress) = verify_data.as_mut() {
                        r.chunks_verified += 1;
                        done += u64::from(ce.loc.len);
                        progress(done, total);
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
    lower
}

/// Reference counts: every object's count must equal the references to it from stored nodes,
/// versions, live inodes and absorbed lower files, counted afresh.
fn check_refs(ix: &Index, segments: &Segments, r: &mut Report) {
    let mut found: HashMap<[u8; 32], u32> = HashMap::new();
    for e in ix.objects().values().filter(|e| e.is_node) {
        // An unreadable node is reported by the tree walk; its references cannot be counted.
        let Ok(node) = segments.read_frame(e.loc).and_then(|p| {
            Node::decode(&p).map_err(|err| Error::corrupt(e.loc.segment.file_name(), e.loc.offset, err.0))
        }) else {
            continue;
        };
        for c in node.references() {
            *found.entry(c).or_default() += 1;
        }
    }
    let roots = ix
        .lineages()
        .values()
        .flatten()
        .filter_map(|v| v.content)
        .chain(ix.ns().inodes.values().filter_map(|i| i.content))
        .chain(ix.absorbed().values().copied());
    for c in roots {
        *found.entry(c.0).or_default() += 1;
    }
    for (id, e) in ix.objects() {
        let want = found.get(id).copied().unwrap_or(0);
        if e.refs != want {
            r.error(
                format!("{} at {}", e.loc.segment.file_name(), e.loc.offset),
                format!("object {}: reference count {} but {want} references found", NodeId(*id), e.refs),
            );
        }
    }
}

/// Every lower file that stored content refers to is still the file recorded (an overlay
/// store; docs/OVERLAY.md): one that changed, went or cannot be read is an error — its ranges
/// read as EIO — named by its path.
fn check_lower_files(storage: &dyn Storage, ix: &Index, referenced: &BTreeSet<LowerFileId>, r: &mut Report) {
    if referenced.iter().all(|id| ix.absorbed().contains_key(id)) {
        return;
    }
    let paths = match meta::read_lowers(storage) {
        Ok(p) => p,
        Err(e) => return r.error(meta::LOWERS_FILE, e.to_string()),
    };
    let lowers = crate::storage::lower::Lowers::open(&paths);
    // (An absorbed file's ranges are read from the store.)
    for id in referenced.iter().filter(|id| !ix.absorbed().contains_key(id)) {
        let Some(f) = ix.lower_files().get(id) else { continue }; // replay refuses such a node
        // A read of nothing checks what every read checks: the file is there, and is the one recorded.
        if let Err(e) = lowers.read_at(f, 0, &mut []) {
            let (place, why) = match e {
                Error::Lower { path, reason } => (path, reason),
                other => (format!("lower file {id}"), other.to_string()),
            };
            r.error(place, format!("{why}: the store's ranges of it read as EIO"));
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
        if ns.inodes.is_empty() && prefix.is_empty() {
            // Created, but the root's transaction never reached the log: open writes it.
            let problem = "empty store without a root directory (the next open creates it)".to_string();
            r.findings.push(Finding { place: "/".into(), problem, error: false });
        } else {
            r.error(format!("{prefix}/"), "root directory missing");
        }
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
        // An overlay directory not listed yet has the lower directory's count: its entries
        // are not in the store.
        let unlisted = i.unlisted().is_some();
        if !reachable && i.nlink > 0 {
            r.error(format!("{prefix}inode {}", i.ino), "not reachable from the root (orphan)");
        } else if reachable && i.nlink != want && !unlisted {
            r.error(format!("{prefix}inode {}", i.ino), format!("link count {} but {} found", i.nlink, want));
        }
    }
}

/// Frames of one segment that verify, in order, and the byte ranges that do not.
struct Salvaged<'a> {
    /// (kind, end of transaction, payload) of every frame of a complete transaction.
    frames: Vec<(u8, bool, &'a [u8])>,
    /// Byte ranges lost: unreadable frames and the incomplete transactions around them.
    lost: Vec<(usize, usize)>,
}

/// Reads segment `data` frame by frame. A frame that does not verify loses its whole
/// transaction up to the next frame that verifies; in the newest segment, a bad end with no
/// valid frame after it is a torn tail, left for open to cut (it was never acknowledged).
fn salvage(data: &[u8], seg: SegmentId, is_last: bool) -> Salvaged<'_> {
    let mut out = Salvaged { frames: Vec::new(), lost: Vec::new() };
    let (mut pos, mut txn_start) = (SEGMENT_HEADER_LEN, SEGMENT_HEADER_LEN);
    let mut txn = Vec::new();
    loop {
        if pos == data.len() && txn.is_empty() {
            return out;
        }
        match store::read_frame_at(data, seg, pos) {
            Ok((kind, end, payload, len)) => {
                txn.push((kind, end, payload));
                pos += len;
                if end {
                    out.frames.append(&mut txn);
                    txn_start = pos;
                }
            }
            Err(_) => {
                let next = (pos + 1..data.len()).find(|p| frame::valid_frame_at(data, 0, seg, *p));
                match next {
                    None if is_last => return out,
                    None => {
                        out.lost.push((txn_start, data.len()));
                        return out;
                    }
                    Some(p) => {
                        out.lost.push((txn_start, p));
                        txn.clear();
                        (pos, txn_start) = (p, p);
                    }
                }
            }
        }
    }
}

/// Name of the file that keeps bytes repair moved aside.
fn aside(what: &str, offset: usize) -> String {
    format!("lost-{what}-{offset}.bad")
}

/// `cowfs-fsck --repair`: makes the store open again, moving aside (never deleting) what cannot
/// be read. Unreadable frames (and the rest of their transactions) of a segment go to
/// `lost-SEGMENT-OFFSET.bad` files and the segment is rewritten without them; a segment whose
/// header is unreadable goes aside whole; checkpoints that do not verify, or that describe a
/// rewritten segment, go aside; the whole log is replayed, skipping records that no longer
/// apply (e.g. a file version whose chunk was lost); a torn tail is cut; a new checkpoint is
/// written. Returns what it did, one finding per action. Refuses a store that is open
/// (mounted): `Error::Locked`.
pub fn repair(storage: &dyn Storage) -> Result<Vec<Finding>> {
    let _lock = storage.try_lock().map_err(io("lock", "LOCK"))?.ok_or(Error::Locked)?;
    let mut done = Vec::new();
    let mut fixed = |place: String, problem: String| done.push(Finding { place, problem, error: false });
    let meta = match meta::read_header(storage) {
        Ok(Some(h)) => {
            if let Some(why) = &h.primary {
                meta::write_copy(storage, STORE_FILE, &h.meta)?;
                fixed(STORE_FILE.into(), format!("unusable ({why}): rewritten from {STORE_BACKUP}"));
            }
            if matches!(h.backup, Backup::Unreadable(_) | Backup::Differs) {
                meta::write_copy(storage, STORE_BACKUP, &h.meta)?;
                fixed(STORE_BACKUP.into(), format!("{}: rewritten from {STORE_FILE}", h.problems().join("; ")));
            }
            h.meta
        }
        Ok(None) => return Err(Error::NotAStore { path: storage.describe() }),
        Err(e @ Error::Corrupt { .. }) => {
            let Ok((rebuilt, notes)) = meta::rebuild(storage) else { return Err(e) };
            meta::write_header(storage, &rebuilt)?;
            fixed(STORE_FILE.into(), format!("{e}; {STORE_BACKUP} unusable too: both rebuilt ({})", notes.join("; ")));
            rebuilt
        }
        Err(e) => return Err(e),
    };
    let names = storage.list().map_err(io("list", "."))?;
    let mut segs: Vec<SegmentId> = names.iter().filter_map(|n| SegmentId::parse_file_name(n)).collect();
    segs.sort();
    let mut rewritten = false;
    for (k, &seg) in segs.iter().enumerate() {
        let name = seg.file_name();
        let data = read_all(storage, &name)?;
        let is_last = k + 1 == segs.len();
        let replaces = match frame::check_segment_header(&data, meta.store_id, seg) {
            Ok(r) => r,
            Err(_) if is_last => continue, // an unfinished roll: open removes it
            Err(e) => {
                let to = aside(&name, 0);
                storage.rename(&name, &to).map_err(io("rename", &name))?;
                fixed(name.clone(), format!("unreadable segment header ({:?}): moved aside to {to}", e.0));
                rewritten = true;
                continue;
            }
        };
        let s = salvage(&data, seg, is_last);
        if s.lost.is_empty() {
            continue;
        }
        for &(a, b) in &s.lost {
            let to = aside(&name, a);
            write_atomically(storage, &to, &data[a..b])?;
            fixed(format!("{name} at {a}"), format!("{} unreadable bytes moved aside to {to}", b - a));
        }
        let mut buf = frame::encode_output_header(meta.store_id, seg, replaces).to_vec();
        for (kind, end, payload) in s.frames {
            let at = buf.len() as u64;
            frame::encode_frame(&mut buf, seg, at, kind, end, payload);
        }
        write_atomically(storage, &name, &buf)?;
        rewritten = true;
    }
    let mut next = 1;
    for n in &names {
        let Some(c) = checkpoint::parse_file_name(n) else { continue };
        next = next.max(c + 1);
        let verifies = read_all(storage, n).and_then(|b| checkpoint::decode(&b, meta.store_id).map_err(|e| e.at(n, 0)));
        if rewritten || verifies.is_err() {
            let to = aside(n, 0);
            storage.rename(n, &to).map_err(io("rename", n))?;
            let why = if rewritten { "describes a segment repair rewrote" } else { "does not verify" };
            fixed(n.clone(), format!("checkpoint {why}: moved aside to {to}"));
        }
    }
    storage.sync_dir().map_err(io("sync_dir", "."))?;
    let rec = recovery::recover(storage, &meta, &Segments::default(), RecoverMode::Salvage)?;
    if let Some((seg, off, len)) = rec.report.torn_tail {
        fixed(format!("{} at {off}", seg.file_name()), format!("torn tail of {len} bytes cut"));
    }
    for (loc, why) in &rec.report.skipped_records {
        fixed(format!("{} at {}", loc.segment.file_name(), loc.offset), format!("record skipped: {why}"));
    }
    let pos = rec.tail.unwrap_or(checkpoint::LogPosition { segment: SegmentId(0), offset: 0 });
    write_atomically(
        storage,
        &checkpoint::file_name(next),
        &checkpoint::encode(&rec.index, meta.store_id, meta.version, pos),
    )?;
    fixed(checkpoint::file_name(next), "checkpoint rebuilt from the log".into());
    Ok(done)
}
