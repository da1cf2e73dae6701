//! Operations on names: create, link, rename (unlink, rmdir and mkdir are short enough to
//! stay in the dispatch).

use std::sync::Arc;

use super::{
    Ctx, NewInode, Outcome, check_name, dedup_inodes, dir, drop_dir, drop_link, entry_missing, fresh_inode, inode,
    touch_dir,
};
use crate::error::{Error, Result};
use crate::format::record::Version;
use crate::format::record::{FileKind, Inode, MAX_SYMLINK_LEN, Record, Timestamp};
use crate::ids::{InodeId, LineageId, VersionId};
use crate::index::{Dirent, Index};

/// Creates a non-directory inode named `name` in `parent`.
pub(super) fn create(
    ix: &Index,
    now: Timestamp,
    parent: InodeId,
    name: &[u8],
    attrs: &NewInode,
) -> Result<(Vec<Record>, Outcome)> {
    check_name(name)?;
    let p = dir(ix, parent)?;
    if ix.ns.lookup(parent, name).is_some() {
        return Err(Error::Exists(String::from_utf8_lossy(name).into_owned()));
    }
    if attrs.kind == FileKind::Directory {
        return Err(Error::Invalid("use mkdir for directories".into()));
    }
    if attrs.symlink.len() > MAX_SYMLINK_LEN {
        return Err(Error::NameTooLong(attrs.symlink.len()));
    }
    if attrs.kind == FileKind::Symlink && attrs.symlink.is_empty() {
        return Err(Error::Invalid("empty symlink target".into()));
    }
    // A file created where one was deleted continues that path's lineage.
    let lineage = match attrs.kind {
        FileKind::Regular => Some(
            attrs
                .lineage
                .or_else(|| ix.ns.graves.get(&(parent, name.to_vec())).copied())
                .unwrap_or(LineageId(ix.counters.next_lineage)),
        ),
        _ => None,
    };
    let ino = InodeId(ix.counters.next_ino);
    let mut new = fresh_inode(ino, attrs.kind, attrs.mode, attrs.uid, attrs.gid, now);
    new.rdev = attrs.rdev;
    new.lineage = lineage;
    if attrs.kind == FileKind::Symlink {
        new.size = attrs.symlink.len() as u64;
        new.symlink = attrs.symlink.clone();
    }
    let new = Arc::new(new);
    let recs = vec![
        Record::Inode(new.clone()),
        Record::DirentSet { parent, name: name.to_vec(), child: ino, kind: attrs.kind },
        touch_dir(&p, now, 0),
    ];
    Ok((recs, Outcome::Inode(new)))
}

/// Adds the name `name` in `parent` for inode `ino`.
pub(super) fn link(
    ix: &Index,
    now: Timestamp,
    ino: InodeId,
    parent: InodeId,
    name: &[u8],
) -> Result<(Vec<Record>, Outcome)> {
    check_name(name)?;
    let p = dir(ix, parent)?;
    let i = inode(ix, ino)?;
    if i.kind == FileKind::Directory {
        return Err(Error::IsDir(ino));
    }
    if ix.ns.lookup(parent, name).is_some() {
        return Err(Error::Exists(String::from_utf8_lossy(name).into_owned()));
    }
    let mut n = (*i).clone();
    n.nlink += 1;
    n.ctime = now;
    let n = Arc::new(n);
    let recs = vec![
        Record::Inode(n.clone()),
        Record::DirentSet { parent, name: name.to_vec(), child: ino, kind: i.kind },
        touch_dir(&p, now, 0),
    ];
    Ok((recs, Outcome::Inode(n)))
}

pub(super) fn rename(
    ix: &Index,
    ctx: Ctx,
    (sp, sn): (InodeId, &Vec<u8>),
    (tp, tn): (InodeId, &Vec<u8>),
    noreplace: bool,
    exchange: bool,
    keep_orphan: bool,
) -> Result<(Vec<Record>, Outcome)> {
    let (now, physical_ms) = (ctx.now, ctx.physical_ms);
    check_name(tn)?;
    if noreplace && exchange {
        return Err(Error::Invalid("RENAME_NOREPLACE with RENAME_EXCHANGE".into()));
    }
    let src_dir = dir(ix, sp)?;
    let dst_dir = dir(ix, tp)?;
    let src = ix.ns.lookup(sp, sn).ok_or_else(|| entry_missing(sp, sn))?;
    let dst = ix.ns.lookup(tp, tn);
    let src_ino = inode(ix, src.child)?;
    let is_dir = src.kind == FileKind::Directory;
    if is_dir && ix.ns.is_ancestor(src.child, tp) {
        return Err(Error::Loop);
    }
    if sp == tp && sn == tn {
        return Ok((Vec::new(), Outcome::Done));
    }
    let mut recs = Vec::new();
    let mut touched = src_ino.as_ref().clone();
    touched.ctime = now;
    if exchange {
        let dst = dst.ok_or_else(|| entry_missing(tp, tn))?;
        return exchange_entries(ix, now, (sp, sn, &src_dir, src), (tp, tn, &dst_dir, dst), touched);
    }
    let mut dst_delta = 0i32;
    if let Some(dst) = dst {
        if noreplace {
            return Err(Error::Exists(String::from_utf8_lossy(tn).into_owned()));
        }
        if dst.child == src.child {
            // Two links to one inode: POSIX says do nothing.
            return Ok((Vec::new(), Outcome::Done));
        }
        let victim = inode(ix, dst.child)?;
        match (is_dir, dst.kind == FileKind::Directory) {
            (true, false) => return Err(Error::NotDir(dst.child)),
            (false, true) => return Err(Error::IsDir(dst.child)),
            (true, true) => {
                if !ix.ns.is_empty_dir(dst.child) {
                    return Err(Error::NotEmpty(dst.child));
                }
                recs.push(drop_dir(&victim, now, keep_orphan));
                dst_delta -= 1;
            }
            (false, false) => {
                recs.push(drop_link(ix, &victim, now, keep_orphan));
                recs.extend(save_over(ix, &victim, src.child, &src_ino, &mut touched, now, physical_ms));
            }
        }
    }
    // Remove, then set: a directory's parent link follows the last record. The replaced
    // inode's record comes after the entry that stops naming it.
    let mut ordered = vec![
        Record::DirentRemove { parent: sp, name: sn.clone() },
        Record::DirentSet { parent: tp, name: tn.clone(), child: src.child, kind: src.kind },
    ];
    ordered.append(&mut recs);
    let mut recs = ordered;
    if sp == tp {
        recs.push(touch_dir(&src_dir, now, dst_delta));
    } else {
        let d = is_dir as i32;
        recs.push(touch_dir(&src_dir, now, -d));
        recs.push(touch_dir(&dst_dir, now, d + dst_delta));
    }
    recs.push(Record::Inode(Arc::new(touched)));
    Ok((dedup_inodes(recs), Outcome::Done))
}

/// RENAME_EXCHANGE of entry `src` (`name` in directory `parent`, inode `dir`) and `dst`:
/// each name then holds the other's inode; `touched` is the source inode with its new ctime.
fn exchange_entries(
    ix: &Index,
    now: Timestamp,
    (sp, sn, src_dir, src): (InodeId, &Vec<u8>, &Inode, Dirent),
    (tp, tn, dst_dir, dst): (InodeId, &Vec<u8>, &Inode, Dirent),
    touched: Inode,
) -> Result<(Vec<Record>, Outcome)> {
    if dst.kind == FileKind::Directory && ix.ns.is_ancestor(dst.child, sp) {
        return Err(Error::Loop);
    }
    let mut other = inode(ix, dst.child)?.as_ref().clone();
    other.ctime = now;
    let mut recs = vec![
        Record::DirentSet { parent: tp, name: tn.clone(), child: src.child, kind: src.kind },
        Record::DirentSet { parent: sp, name: sn.clone(), child: dst.child, kind: dst.kind },
    ];
    let delta = (src.kind == FileKind::Directory) as i32 - (dst.kind == FileKind::Directory) as i32;
    if sp == tp {
        recs.push(touch_dir(src_dir, now, 0));
    } else {
        recs.push(touch_dir(src_dir, now, -delta));
        recs.push(touch_dir(dst_dir, now, delta));
    }
    recs.push(Record::Inode(Arc::new(touched)));
    recs.push(Record::Inode(Arc::new(other)));
    Ok((dedup_inodes(recs), Outcome::Done))
}

/// "Write a temp file, rename it over the target": the target path's history goes on. The
/// moved file (inode `ino`, `moved`; `touched` is what it becomes) joins the replaced file's
/// (`victim`'s) lineage, and its content becomes that lineage's next version — the record
/// returned, unless that version's content is the moved file's already.
fn save_over(
    ix: &Index,
    victim: &Inode,
    ino: InodeId,
    moved: &Inode,
    touched: &mut Inode,
    now: Timestamp,
    physical_ms: u64,
) -> Option<Record> {
    let (1, Some(l), Some(own)) = (victim.nlink, victim.lineage, moved.lineage) else { return None };
    touched.lineage = Some(l);
    let head = ix.lineages.get(&l).and_then(|v| v.last());
    if head.is_some_and(|h| h.content == moved.content && h.size == moved.size) {
        return None;
    }
    let own = ix.lineages.get(&own).and_then(|v| v.last());
    Some(Record::Version(Arc::new(Version {
        id: VersionId { device: ix.device, seq: ix.counters.version_seq + 1 },
        lineage: l,
        number: head.map_or(1, |h| h.number + 1),
        ino,
        mode: moved.mode,
        uid: moved.uid,
        gid: moved.gid,
        time: now,
        size: moved.size,
        content: moved.content,
        hlc: ix.next_hlc(physical_ms),
        parents: head.iter().chain(own.iter()).map(|v| v.id).collect(),
    })))
}
