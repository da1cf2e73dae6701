//! Operations on one inode's attributes and content, on snapshots and on versions.

use std::sync::Arc;

use super::{Ctx, ImportedVersion, Outcome, PruneSpec, SetAttr, XattrMode, check_name, inode};
use crate::error::{Error, Missing, Result};
use crate::format::record::{
    FileKind, Inode, MAX_DESCRIPTION_LEN, MAX_XATTR_NAME_LEN, MAX_XATTR_TOTAL, MAX_XATTR_VALUE_LEN, MAX_XATTRS, Record,
    SnapshotMeta, Timestamp, Version,
};
use crate::ids::{Hlc, InodeId, LineageId, NodeId, SnapshotId, VersionId};
use crate::index::Index;

/// Changes the attributes `attr` names.
pub(super) fn set_attr(ix: &Index, now: Timestamp, ino: InodeId, attr: &SetAttr) -> Result<(Vec<Record>, Outcome)> {
    let mut n = (*inode(ix, ino)?).clone();
    if let Some(m) = attr.mode {
        n.mode = m & 0o7777;
    }
    if let Some(u) = attr.uid {
        n.uid = u;
    }
    if let Some(g) = attr.gid {
        n.gid = g;
    }
    if let Some(t) = attr.atime {
        n.atime = t;
    }
    if let Some(t) = attr.mtime {
        n.mtime = t;
    }
    n.ctime = now;
    let n = Arc::new(n);
    Ok((vec![Record::Inode(n.clone())], Outcome::Inode(n)))
}

/// Sets an extended attribute.
pub(super) fn set_xattr(
    ix: &Index,
    now: Timestamp,
    ino: InodeId,
    name: &[u8],
    value: &[u8],
    mode: XattrMode,
) -> Result<(Vec<Record>, Outcome)> {
    if name.is_empty() || name.len() > MAX_XATTR_NAME_LEN {
        return Err(Error::Invalid(format!("xattr name of {} bytes", name.len())));
    }
    if value.len() > MAX_XATTR_VALUE_LEN {
        return Err(Error::Invalid(format!("xattr value of {} bytes", value.len())));
    }
    let mut n = (*inode(ix, ino)?).clone();
    let present = n.xattrs.contains_key(name);
    match mode {
        XattrMode::Create if present => {
            return Err(Error::Exists(String::from_utf8_lossy(name).into_owned()));
        }
        XattrMode::Replace if !present => {
            return Err(Error::NoXattr(String::from_utf8_lossy(name).into_owned()));
        }
        _ => {}
    }
    if !present && n.xattrs.len() >= MAX_XATTRS {
        return Err(Error::NoSpace);
    }
    n.xattrs.insert(name.to_vec(), value.to_vec());
    // The inode record must fit one frame: all xattrs of an inode share a budget.
    let total: usize = n.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if total > MAX_XATTR_TOTAL {
        return Err(Error::NoSpace);
    }
    n.ctime = now;
    let n = Arc::new(n);
    Ok((vec![Record::Inode(n.clone())], Outcome::Inode(n)))
}

/// Makes `content` (`size` bytes) the file's content and, unless it already was, its newest
/// version.
pub(super) fn commit_content(
    ix: &Index,
    ctx: Ctx,
    ino: InodeId,
    size: u64,
    content: Option<NodeId>,
    mtime: Option<Timestamp>,
) -> Result<(Vec<Record>, Outcome)> {
    let old = inode(ix, ino)?;
    if old.kind != FileKind::Regular {
        return Err(Error::IsDir(ino));
    }
    if let Some(c) = content
        && !ix.objects.get(&c.0).is_some_and(|e| e.is_node)
    {
        return Err(Error::Invalid(format!("content root {c} is not stored")));
    }
    let lineage = old.lineage.ok_or_else(|| Error::Invalid(format!("inode {ino} has no lineage")))?;
    let head = ix.lineages.get(&lineage).and_then(|l| l.last());
    let unchanged = head.is_some_and(|h| h.content == content && h.size == size);
    let mut n = (*old).clone();
    n.size = size;
    n.content = content;
    // Times move only when the content does: committing a new file's first (empty)
    // version at its first close is not a change of the file.
    if old.content != content || old.size != size {
        n.mtime = mtime.unwrap_or(ctx.now);
        n.ctime = ctx.now;
    }
    let n = Arc::new(n);
    let mut recs = Vec::new();
    if *n != *old {
        recs.push(Record::Inode(n.clone()));
    }
    if unchanged {
        return Ok((recs, Outcome::Version(None)));
    }
    let version = |seq: u64, number: u64, time: Timestamp, size: u64, content: Option<NodeId>, hlc: Hlc, parents| {
        let id = VersionId { device: ix.device, seq };
        version_of(&old, lineage, number, ImportedVersion { id, time, size, content, hlc, parents })
    };
    let (mut seq, mut hlc) = (ix.counters.version_seq + 1, ix.next_hlc(ctx.physical_ms));
    let mut head = head.map(|h| (h.number, h.id));
    // A file that has content and no version is an overlay's lower file not changed before
    // (or a file kept open after its last name went, whose lineage was just made fresh): what
    // it held — the lower original — becomes version 1, from the time it was made.
    if head.is_none() && old.content.is_some() {
        let original = version(seq, 1, old.mtime, old.size, old.content, hlc, Vec::new());
        recs.push(Record::Version(original.clone()));
        if (old.content, old.size) == (content, size) {
            return Ok((recs, Outcome::Version(Some(original))));
        }
        (head, seq, hlc) = (Some((1, original.id)), seq + 1, Hlc(hlc.0 + 1));
    }
    let parents = head.map(|(_, id)| vec![id]).unwrap_or_default();
    let v = version(seq, head.map_or(1, |(n, _)| n + 1), ctx.now, size, content, hlc, parents);
    recs.push(Record::Version(v.clone()));
    Ok((recs, Outcome::Version(Some(v))))
}

/// Version `number` of `lineage`, made from `file` (which held it: inode, mode, owner) as `v`
/// says.
fn version_of(file: &Inode, lineage: LineageId, number: u64, v: ImportedVersion) -> Arc<Version> {
    Arc::new(Version {
        id: v.id,
        lineage,
        number,
        ino: file.ino,
        mode: file.mode,
        uid: file.uid,
        gid: file.gid,
        time: v.time,
        size: v.size,
        content: v.content,
        hlc: v.hlc,
        parents: v.parents,
    })
}

/// Adds `versions` (another device's) to the file's history after its newest, skipping those
/// it holds, and makes `content` (size, root) the file's, with `mtime`.
pub(super) fn import_versions(
    ix: &Index,
    ctx: Ctx,
    ino: InodeId,
    versions: &[ImportedVersion],
    content: (u64, Option<NodeId>),
    mtime: Timestamp,
) -> Result<(Vec<Record>, Outcome)> {
    let old = inode(ix, ino)?;
    if old.kind != FileKind::Regular {
        return Err(Error::IsDir(ino));
    }
    let lineage = old.lineage.ok_or_else(|| Error::Invalid(format!("inode {ino} has no lineage")))?;
    let stored = |c: Option<NodeId>| c.is_none_or(|c| ix.objects.get(&c.0).is_some_and(|e| e.is_node));
    if !stored(content.1) {
        return Err(Error::Invalid(format!("content root {} is not stored", content.1.unwrap_or_default())));
    }
    let held = ix.lineages.get(&lineage);
    let mut number = held.and_then(|l| l.last()).map_or(0, |h| h.number);
    let mut recs = Vec::new();
    let mut made = None;
    for v in versions {
        if v.id.device == ix.device {
            return Err(Error::Invalid(format!("version {} is this store's own: it is not imported", v.id)));
        }
        if !stored(v.content) {
            return Err(Error::Invalid(format!("the content of version {} is not stored", v.id)));
        }
        if held.is_some_and(|l| l.iter().any(|h| h.id == v.id)) {
            continue;
        }
        number += 1;
        let version = version_of(&old, lineage, number, v.clone());
        recs.push(Record::Version(version.clone()));
        made = Some(version);
    }
    let mut n = (*old).clone();
    if (n.size, n.content) != content || n.mtime != mtime {
        ((n.size, n.content), n.mtime, n.ctime) = (content, mtime, ctx.now);
        recs.insert(0, Record::Inode(Arc::new(n)));
    }
    Ok((recs, Outcome::Version(made)))
}

/// Takes a snapshot of the whole tree.
pub(super) fn snapshot_create(ix: &Index, ctx: Ctx, name: &str, description: &str) -> Result<(Vec<Record>, Outcome)> {
    check_name(name.as_bytes())?;
    if description.len() > MAX_DESCRIPTION_LEN {
        return Err(Error::Invalid(format!("description of {} bytes", description.len())));
    }
    if ix.snapshot_by_name(name).is_some() {
        return Err(Error::Exists(format!("snapshot {name}")));
    }
    let meta = Arc::new(SnapshotMeta {
        id: SnapshotId(ix.counters.next_snapshot),
        name: name.to_string(),
        description: description.to_string(),
        time: ctx.now,
        hlc: ix.next_hlc(ctx.physical_ms),
    });
    Ok((vec![Record::SnapshotCreate(meta.clone())], Outcome::Snapshot(meta)))
}

/// Removes versions (see `Op::Prune`).
pub(super) fn prune(ix: &Index, prunes: &[PruneSpec]) -> Result<(Vec<Record>, Outcome)> {
    let mut recs = Vec::new();
    for (lineage, numbers, grave) in prunes {
        let list = ix.lineages.get(lineage).ok_or(Error::NotFound(Missing::Lineage(*lineage)))?;
        let mut numbers = numbers.clone();
        numbers.sort_unstable();
        numbers.dedup();
        if let Some(n) = numbers.iter().find(|n| !list.iter().any(|v| v.number == **n)) {
            return Err(Error::NotFound(Missing::Version { lineage: *lineage, number: *n }));
        }
        let all = numbers.len() == list.len();
        if !all && list.last().is_some_and(|v| numbers.binary_search(&v.number).is_ok()) {
            return Err(Error::Invalid(format!("pruning the newest version of lineage {lineage} but not all")));
        }
        for part in numbers.chunks(crate::format::record::MAX_PRUNE) {
            let last = part.last() == numbers.last();
            let grave = grave.clone().filter(|_| all && last);
            let c = &ix.counters;
            let counters = (c.version_seq, c.hlc, c.next_lineage);
            recs.push(Record::Prune { lineage: *lineage, numbers: part.to_vec(), grave, counters });
        }
    }
    Ok((recs, Outcome::Done))
}
