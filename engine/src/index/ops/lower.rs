//! Overlay operations (docs/OVERLAY.md): recording lower files, the root showing the lower
//! trees, and a directory's lower entries becoming stored entries at its first listing.

use std::collections::HashSet;
use std::sync::Arc;

use super::{LowerEntry, Outcome, check_name, inode};
use crate::error::{Error, Result};
use crate::format::record::{
    FileKind, Inode, LowerFile, LowerIdentity, LowerOrigin, LowerSource, MAX_LOWERS, MAX_XATTR_NAME_LEN,
    MAX_XATTR_TOTAL, MAX_XATTR_VALUE_LEN, MAX_XATTRS, Record,
};
use crate::ids::{InodeId, LineageId, LowerFileId, NodeId};
use crate::index::Index;

/// Records lower files, numbered from the next free id.
pub(super) fn record_files(ix: &Index, files: &[(u32, Vec<u8>, LowerIdentity)]) -> Result<(Vec<Record>, Outcome)> {
    let first = ix.next_lower_file().0;
    let recorded: Vec<Arc<LowerFile>> = files
        .iter()
        .zip(first..)
        .map(|((layer, path, identity), id)| {
            Arc::new(LowerFile { id: LowerFileId(id), layer: *layer, path: path.clone(), identity: *identity })
        })
        .collect();
    let recs = recorded.iter().map(|f| Record::LowerFile(f.clone())).collect();
    Ok((recs, Outcome::LowerFiles(recorded)))
}

/// Lower file `file`'s bytes are in the store as tree `root` (see [`super::Op::Absorb`]).
pub(super) fn absorb(ix: &Index, file: LowerFileId, root: NodeId) -> Result<(Vec<Record>, Outcome)> {
    if !ix.lower_files().contains_key(&file) {
        return Err(Error::Invalid(format!("lower file {file} is not recorded")));
    }
    if ix.absorbed().contains_key(&file) {
        return Ok((Vec::new(), Outcome::Done));
    }
    if !ix.objects.get(&root.0).is_some_and(|o| o.is_node) {
        return Err(Error::Invalid(format!("content root {root} of lower file {file} is not stored")));
    }
    Ok((vec![Record::Absorbed { file, root }], Outcome::Done))
}

/// The root shows the roots of `layers` lower trees, unless it shows lower trees already;
/// refused when it was listed from lower trees (only a store detached from them by `overlay
/// absorb` records none then).
pub(super) fn show(ix: &Index, layers: u32) -> Result<(Vec<Record>, Outcome)> {
    if layers == 0 || layers as usize > MAX_LOWERS {
        return Err(Error::Invalid(format!("{layers} lower trees (1 to {MAX_LOWERS})")));
    }
    let root = inode(ix, InodeId::ROOT)?;
    match root.lower.as_deref() {
        // Listed with no lower trees recorded: `overlay absorb` detached the store from them.
        Some(o) if o.listed => {
            return Err(Error::Invalid(
                "the store was detached from its lower trees (overlay absorb); it cannot show lower trees again".into(),
            ));
        }
        Some(_) => return Ok((Vec::new(), Outcome::Done)),
        None => {}
    }
    let mut r = (*root).clone();
    let sources = (0..layers).map(|layer| LowerSource { layer, path: Vec::new() }).collect();
    r.lower = Some(Arc::new(LowerOrigin { listed: false, sources }));
    Ok((vec![Record::Inode(Arc::new(r))], Outcome::Done))
}

/// Makes inodes and entries of `dir`'s lower entries (those whose name it does not have) and
/// marks it listed. Its link count becomes 2 + its subdirectories; its times do not move
/// (listing is not a change).
pub(super) fn expand(ix: &Index, dir: InodeId, entries: &[LowerEntry]) -> Result<(Vec<Record>, Outcome)> {
    let d = inode(ix, dir)?;
    if d.kind != FileKind::Directory {
        return Err(Error::NotDir(dir));
    }
    let Some(sources) = d.unlisted() else { return Ok((Vec::new(), Outcome::Done)) };
    let stored = ix.ns.dirs.get(&dir);
    let mut subdirs = stored.map_or(0, |s| s.values().filter(|e| e.kind == FileKind::Directory).count());
    let (mut ino, mut lineage) = (ix.counters.next_ino, ix.counters.next_lineage);
    let mut names = HashSet::new();
    let mut recs = Vec::with_capacity(2 * entries.len() + 1);
    for e in entries {
        check_name(&e.name)?;
        if !names.insert(&e.name[..]) {
            return Err(Error::Invalid(format!("lower entry {:?} twice", String::from_utf8_lossy(&e.name))));
        }
        if stored.is_some_and(|s| s.contains_key(&e.name)) {
            continue;
        }
        let new = lower_inode(ix, e, InodeId(ino), &mut lineage)?;
        subdirs += usize::from(new.kind == FileKind::Directory);
        let (child, kind) = (new.ino, new.kind);
        recs.push(Record::Inode(Arc::new(new)));
        recs.push(Record::DirentSet { parent: dir, name: e.name.clone(), child, kind });
        ino += 1;
    }
    let mut listed = (*d).clone();
    listed.lower = Some(Arc::new(LowerOrigin { listed: true, sources: sources.to_vec() }));
    listed.nlink = 2 + subdirs as u32;
    recs.push(Record::Inode(Arc::new(listed)));
    Ok((recs, Outcome::Done))
}

/// The inode `ino` that lower entry `e` becomes (a regular file gets lineage `lineage`, which
/// then moves on), its content and attributes checked.
fn lower_inode(ix: &Index, e: &LowerEntry, ino: InodeId, lineage: &mut u64) -> Result<Inode> {
    let a = &e.attrs;
    if let Some(c) = a.content
        && (a.kind != FileKind::Regular || !ix.objects.get(&c.0).is_some_and(|o| o.is_node))
    {
        return Err(Error::Invalid(format!("content root {c} of a lower entry is not stored")));
    }
    let is_dir = a.kind == FileKind::Directory;
    if e.sources.is_empty() || (!is_dir && e.sources.len() != 1) {
        return Err(Error::Invalid("a lower entry without its place, or a non-directory with several".into()));
    }
    let total: usize = a.xattrs.iter().map(|(k, v)| k.len() + v.len()).sum();
    if a.xattrs.len() > MAX_XATTRS
        || total > MAX_XATTR_TOTAL
        || a.xattrs.iter().any(|(k, v)| k.is_empty() || k.len() > MAX_XATTR_NAME_LEN || v.len() > MAX_XATTR_VALUE_LEN)
    {
        let name = String::from_utf8_lossy(&e.name);
        return Err(Error::Invalid(format!("lower entry {name:?} has more extended attributes than cowfs keeps")));
    }
    Ok(Inode {
        ino,
        mode: a.mode & 0o7777,
        nlink: if is_dir { a.nlink.max(2) } else { 1 },
        size: if matches!(a.kind, FileKind::Regular | FileKind::Symlink) { a.size } else { 0 },
        lineage: (a.kind == FileKind::Regular).then(|| {
            let l = LineageId(*lineage);
            *lineage += 1;
            l
        }),
        lower: Some(Arc::new(LowerOrigin { listed: !is_dir, sources: e.sources.clone() })),
        ..a.clone()
    })
}

/// Puts lower regular file `e` into directory `dir`, which shows no lower trees (the root of
/// a virtual copy, `cowfs mount --lower FILE`): a lower entry like those a listing makes.
pub(super) fn adopt(ix: &Index, dir: InodeId, e: &LowerEntry) -> Result<(Vec<Record>, Outcome)> {
    let d = inode(ix, dir)?;
    if d.kind != FileKind::Directory {
        return Err(Error::NotDir(dir));
    }
    if d.lower.is_some() {
        return Err(Error::Invalid("adopting a lower file into a directory that shows lower trees".into()));
    }
    check_name(&e.name)?;
    if ix.ns.dirs.get(&dir).is_some_and(|s| s.contains_key(&e.name)) {
        return Err(Error::Exists(String::from_utf8_lossy(&e.name).into_owned()));
    }
    if e.attrs.kind != FileKind::Regular {
        return Err(Error::Invalid("only a regular file is adopted".into()));
    }
    let mut lineage = ix.counters.next_lineage;
    let new = lower_inode(ix, e, InodeId(ix.counters.next_ino), &mut lineage)?;
    let (child, kind) = (new.ino, new.kind);
    Ok((
        vec![Record::Inode(Arc::new(new)), Record::DirentSet { parent: dir, name: e.name.clone(), child, kind }],
        Outcome::Done,
    ))
}
