//! `cowfs overlay absorb` (docs/OVERLAY.md): the lower bytes an overlay store still refers to
//! are copied into it, so that it no longer depends on its lower trees. Per lower file: the
//! ranges of it that any content tree (the tree's, a version's, a snapshot's, an open file's)
//! refers to are read — the lower file checked against its recorded identity at every read —
//! cut into chunks and stored, then one durable `Absorbed{file, root}` record makes `root` (a
//! content tree over the lower file's offsets, holes where nothing referred to it) what reads
//! of the file's `Lower` extents use. Content trees are not rewritten: node ids, versions and
//! snapshots stay as they were. A crash leaves each file absorbed or not, and running it again
//! resumes. A whole absorb first lists every directory not listed yet; when it leaves nothing
//! that depends on a lower tree, the store forgets its lower trees (`LOWERS` goes).

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use crate::error::{Error, Missing, Result};
use crate::file::{Spread, chunk_bytes};
use crate::format::frame::ABSORB_FORMAT_VERSION;
use crate::format::record::{FileKind, Record};
use crate::format::tree::{self, Extent, ExtentKind, Node};
use crate::ids::{InodeId, LowerFileId, NodeId};
use crate::index::ops::Op;
use crate::index::{Index, Namespace};
use crate::inner::Inner;
use crate::log::meta;
use crate::write::EncodedObject;

/// Lower bytes read and chunked at a time.
const READ_BYTES: usize = 8 << 20;

/// What an absorb did and what is left.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// Directories listed from the lower trees first.
    pub listed_dirs: u64,
    /// Lower files absorbed now.
    pub files: u64,
    /// Lower bytes read (and stored, deduplicated) for them.
    pub bytes: u64,
    /// Lower files in scope absorbed by an earlier run.
    pub already: u64,
    /// What could not be absorbed: the lower path and why (the store keeps depending on it).
    pub failed: Vec<(String, String)>,
    /// Directories (anywhere in the store) still not listed from the lower trees.
    pub unlisted_dirs: u64,
    /// Lower files (anywhere in the store) that content still reads from the lower trees.
    pub lower_files: u64,
    /// The store no longer depends on lower trees and forgot them (`LOWERS` removed).
    pub detached: bool,
}

/// Absorbs the lower files that the entries below tree paths `tops` (none: the whole store)
/// refer to, listing the directories there first. `progress(done, total)` in lower bytes.
pub(crate) fn absorb(inner: &Inner, tops: &[String], progress: &mut dyn FnMut(u64, u64)) -> Result<Report> {
    if inner.shared.lowers.is_empty() && inner.shared.index.read().lower_files().is_empty() {
        return Err(Error::Invalid("the store is not an overlay store: it has no lower trees to absorb".into()));
    }
    let whole = tops.is_empty();
    let tops: Vec<String> = if whole { vec!["/".to_string()] } else { tops.to_vec() };
    let mut report = Report::default();
    let mut inodes = Vec::new();
    for top in &tops {
        let ns = inner.shared.index.read().ns().clone();
        let at = crate::tree::find(&ns, top).ok_or_else(|| Error::NotFound(Missing::Path(top.clone())))?;
        list_below(inner, at.ino, &mut report, &mut inodes)?;
    }
    let (ranges, scope) = {
        let ix = inner.shared.index.read();
        let ranges = referenced(inner, &ix)?;
        let scope: BTreeSet<LowerFileId> =
            if whole { ranges.keys().copied().collect() } else { files_of(inner, &ix, &inodes)? };
        (ranges, scope)
    };
    let absorbed: BTreeSet<LowerFileId> = inner.shared.index.read().absorbed().keys().copied().collect();
    let todo: Vec<LowerFileId> = scope.iter().filter(|f| !absorbed.contains(f)).copied().collect();
    report.already = scope.len() as u64 - todo.len() as u64;
    let total: u64 = todo.iter().flat_map(|f| &ranges[f]).map(|(a, b)| b - a).sum();
    let mut done = 0;
    progress(0, total);
    if !todo.is_empty() {
        meta::raise_version(inner.shared.storage.as_ref(), ABSORB_FORMAT_VERSION)?;
    }
    for file in todo {
        let bytes = ranges[&file].iter().map(|(a, b)| b - a).sum::<u64>();
        match absorb_file(inner, file, &ranges[&file], &mut |n| progress(done + n, total)) {
            Ok(()) => {
                report.files += 1;
                report.bytes += bytes;
            }
            Err(Error::Lower { path, reason }) => report.failed.push((path, reason)),
            Err(e) => return Err(e),
        }
        done += bytes;
        progress(done, total);
    }
    let ix = inner.shared.index.read();
    let still = referenced(inner, &ix)?;
    report.lower_files = still.keys().filter(|f| !ix.absorbed().contains_key(f)).count() as u64;
    report.unlisted_dirs = std::iter::once(ix.ns())
        .chain(ix.snapshots().values().map(|s| &s.ns))
        .flat_map(|ns| ns.inodes.values().filter(|i| i.unlisted().is_some()).map(|i| i.ino))
        .collect::<HashSet<InodeId>>()
        .len() as u64;
    drop(ix);
    if whole && report.lower_files == 0 && report.unlisted_dirs == 0 && report.failed.is_empty() {
        // Every Absorbed record is durable already.
        meta::remove_lowers(inner.shared.storage.as_ref())?;
        report.detached = true;
    }
    Ok(report)
}

/// Lists every directory below `top` (itself included) not listed yet, and collects the
/// regular files there. A directory whose lower directories cannot be listed is reported and
/// stays unlisted.
fn list_below(inner: &Inner, top: InodeId, report: &mut Report, files: &mut Vec<InodeId>) -> Result<()> {
    let mut stack = vec![top];
    while let Some(ino) = stack.pop() {
        let i = inner.shared.inode(ino)?;
        match i.kind {
            FileKind::Regular => files.push(ino),
            FileKind::Directory => {
                if i.unlisted().is_some() {
                    match crate::overlay::list(inner, ino) {
                        Ok(()) => report.listed_dirs += 1,
                        Err(Error::Lower { path, reason }) => {
                            report.failed.push((path, reason));
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
                let ix = inner.shared.index.read();
                stack.extend(ix.ns().dirs.get(&ino).into_iter().flat_map(|d| d.values().map(|e| e.child)));
            }
            _ => {}
        }
    }
    Ok(())
}

/// Every range of every lower file that content refers to: the content of the tree, of every
/// version and snapshot, and of open files (their pinned nodes), merged per file, in order.
fn referenced(inner: &Inner, ix: &Index) -> Result<BTreeMap<LowerFileId, Vec<(u64, u64)>>> {
    let absorbed: HashSet<NodeId> = ix.absorbed().values().copied().collect();
    let mut roots: Vec<NodeId> = crate::gc::tree_roots(ix).into_iter().filter(|r| !absorbed.contains(r)).collect();
    roots.extend(ix.lineages().values().flatten().filter_map(|v| v.content));
    roots.extend(
        inner
            .shared
            .pins
            .lock()
            .keys()
            .filter(|id| ix.objects().get(*id).is_some_and(|o| o.is_node))
            .map(|id| NodeId(*id)),
    );
    let mut out: BTreeMap<LowerFileId, Vec<(u64, u64)>> = BTreeMap::new();
    walk_leaves(inner, roots, &mut |e| {
        if let ExtentKind::Lower { file, offset } = e.kind {
            out.entry(file).or_default().push((offset, offset + e.len));
        }
    })?;
    for r in out.values_mut() {
        r.sort_unstable();
        let mut merged: Vec<(u64, u64)> = Vec::with_capacity(r.len());
        for &(a, b) in r.iter() {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(b),
                _ => merged.push((a, b)),
            }
        }
        *r = merged;
    }
    Ok(out)
}

/// The lower files that regular files `inodes` refer to, now or in a version.
fn files_of(inner: &Inner, ix: &Index, inodes: &[InodeId]) -> Result<BTreeSet<LowerFileId>> {
    let ns: &Namespace = ix.ns();
    let mut roots = Vec::new();
    for i in inodes.iter().filter_map(|ino| ns.inode(*ino)) {
        roots.extend(i.content);
        let versions = i.lineage.and_then(|l| ix.lineages().get(&l));
        roots.extend(versions.into_iter().flatten().filter_map(|v| v.content));
    }
    let mut out = BTreeSet::new();
    walk_leaves(inner, roots, &mut |e| {
        if let ExtentKind::Lower { file, .. } = e.kind {
            out.insert(file);
        }
    })?;
    Ok(out)
}

/// Calls `f` for every extent of every leaf reachable from `roots`, each node once.
fn walk_leaves(inner: &Inner, roots: Vec<NodeId>, f: &mut dyn FnMut(&Extent)) -> Result<()> {
    let mut seen = HashSet::new();
    let mut stack = roots;
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        match inner.reader.node(id)?.as_ref() {
            Node::Inner { children, .. } => stack.extend(children.iter().map(|c| c.id)),
            Node::Leaf(extents) => extents.iter().for_each(&mut *f),
        }
    }
    Ok(())
}

/// Absorbs lower file `file`: reads its `ranges`, stores their chunks and a content tree over
/// its offsets, and commits the `Absorbed` record durably. `progress(bytes)` as it reads.
fn absorb_file(inner: &Inner, file: LowerFileId, ranges: &[(u64, u64)], progress: &mut dyn FnMut(u64)) -> Result<()> {
    let f = inner.shared.index.read().lower_files().get(&file).cloned();
    let f = f.ok_or_else(|| inner.shared.internal(format!("lower file {file} not recorded")))?;
    let mut pinned = Vec::new();
    let res = (|| {
        let mut extents = Vec::new();
        let mut in_flight = Vec::new();
        let (mut pos, mut read) = (0, 0);
        let mut buf = Vec::new();
        for &(start, end) in ranges {
            if start > pos {
                extents.push(Extent { len: start - pos, kind: ExtentKind::Hole });
            }
            let mut at = start;
            while at < end {
                let n = (end - at).min(READ_BYTES as u64) as usize;
                buf.resize(n, 0);
                inner.shared.lowers.read_at(&f, at, &mut buf)?;
                let c = chunk_bytes(inner, &buf, false, Spread::AllCores)?;
                pinned.extend(c.pinned);
                extents.extend(c.extents);
                in_flight.extend(c.in_flight);
                at += n as u64;
                read += n as u64;
                progress(read);
            }
            pos = end;
        }
        if f.identity.size > pos {
            extents.push(Extent { len: f.identity.size - pos, kind: ExtentKind::Hole });
        }
        for rx in in_flight {
            rx.recv().map_err(|_| Error::Closed).and_then(|r| r)?;
        }
        let (root, nodes) = tree::build(extents);
        let root = root.ok_or_else(|| inner.shared.internal(format!("lower file {file} absorbed into nothing")))?;
        let mut objects = Vec::new();
        let mut seen = HashSet::new();
        for (id, payload) in nodes {
            if !seen.insert(id) {
                continue;
            }
            pinned.push(id.0);
            if !inner.pin(&id.0) {
                let node = Node::decode(&payload).expect("a node we just encoded decodes");
                objects.push(EncodedObject::new(Record::Node(id, Arc::new(node)), payload));
            }
        }
        inner.request(objects, Some(Op::Absorb { file, root }), true).map(|_| ())
    })();
    inner.unpin(&pinned);
    res
}
