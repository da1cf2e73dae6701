//! Mutations as the layers above ask for them ([`Op`]), and their translation into records
//! ([`prepare`]), which the writer thread runs against the current index just before it
//! appends. Validation happens here, on the one thread that mutates, so two racing
//! operations can never both pass a check that only one of them may pass. Pure: no I/O.

use std::sync::Arc;

use crate::error::{Error, Missing, Result};
use crate::format::record::{
    Action, FileKind, Inode, LowerFile, LowerIdentity, LowerSource, MAX_DESCRIPTION_LEN, MAX_NAME_LEN, Record,
    SnapshotMeta, Stamp, Timestamp, Version,
};
use crate::ids::{Hlc, InodeId, LineageId, LowerFileId, NodeId, VersionId};
use crate::index::Index;

mod content;
mod lower;
mod namespace;

use content::{commit_content, import_versions, prune, set_attr, set_xattr, snapshot_create};
use namespace::{create, link, rename};

/// How `SetXattr` treats an existing attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrMode {
    /// Create or replace.
    Any,
    /// Fail with `Exists` if present (XATTR_CREATE).
    Create,
    /// Fail with `NotFound` if absent (XATTR_REPLACE).
    Replace,
}

/// Attribute changes; `None` leaves a field alone. ctime is set to now whenever anything changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SetAttr {
    /// New permission bits (`& 0o7777`).
    pub mode: Option<u32>,
    /// New owner.
    pub uid: Option<u32>,
    /// New group.
    pub gid: Option<u32>,
    /// New access time.
    pub atime: Option<Timestamp>,
    /// New modification time.
    pub mtime: Option<Timestamp>,
}

/// A version made on another device, as [`Op::ImportVersions`] adds it to a file's history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportedVersion {
    /// Its id: another device's (never this store's).
    pub id: VersionId,
    /// When it was made there.
    pub time: Timestamp,
    /// Its size and content (the content's nodes must be stored).
    pub size: u64,
    pub content: Option<NodeId>,
    /// Its clock and parents there.
    pub hlc: Hlc,
    pub parents: Vec<VersionId>,
}

/// A new inode's attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewInode {
    /// Type (not a directory: use `Op::Mkdir`).
    pub kind: FileKind,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number (device nodes).
    pub rdev: u64,
    /// Target (symlinks).
    pub symlink: Vec<u8>,
    /// Continue this lineage's history (regular files) instead of starting a new one.
    pub lineage: Option<LineageId>,
}

/// An entry of an overlay directory's lower directories, as listing them found it: what
/// [`Op::Expand`] makes an inode of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerEntry {
    /// Name.
    pub name: Vec<u8>,
    /// Its attributes as the lower tree has them (type, mode, owner, times, size, device
    /// number, symlink target, extended attributes; for a regular file with bytes, its content:
    /// a stored tree of one extent of a recorded lower file). Its number, lineage, link count
    /// and origin are given by `Expand`.
    pub attrs: Inode,
    /// Where it is: a directory's lower directories (top first), another entry's one place.
    pub sources: Vec<LowerSource>,
}

/// What gc removes from one lineage: its id, the version numbers, and the grave to remove
/// when the lineage loses every version.
pub type PruneSpec = (LineageId, Vec<u64>, Option<(InodeId, Vec<u8>)>);

/// One mutation, applied atomically.
#[derive(Debug, Clone)]
pub enum Op {
    /// Create a non-directory inode named `name` in `parent`.
    Create {
        /// Directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// Attributes.
        attrs: NewInode,
    },
    /// Create a directory.
    Mkdir {
        /// Parent directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// Add a hard link to `ino`.
    Link {
        /// Inode (not a directory).
        ino: InodeId,
        /// Directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
    },
    /// Remove a non-directory entry. With `keep_orphan`, an inode whose link count reaches
    /// zero stays (it is still open) until [`Op::Free`].
    Unlink {
        /// Directory.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// The inode is open: keep it when its last link goes.
        keep_orphan: bool,
    },
    /// Remove an empty directory. With `keep_orphan` (it is open), it stays, with no link,
    /// until [`Op::Free`].
    Rmdir {
        /// Parent.
        parent: InodeId,
        /// Name.
        name: Vec<u8>,
        /// The directory is open: keep it when its name goes.
        keep_orphan: bool,
    },
    /// Rename, atomically replacing a target (unless `noreplace`) or swapping (`exchange`).
    Rename {
        /// Source directory.
        parent: InodeId,
        /// Source name.
        name: Vec<u8>,
        /// Target directory.
        new_parent: InodeId,
        /// Target name.
        new_name: Vec<u8>,
        /// Fail if the target exists (RENAME_NOREPLACE).
        noreplace: bool,
        /// Swap source and target (RENAME_EXCHANGE).
        exchange: bool,
        /// A replaced target inode is open: keep it when its last link goes.
        keep_orphan: bool,
    },
    /// Change attributes.
    SetAttr {
        /// Inode.
        ino: InodeId,
        /// Changes.
        attr: SetAttr,
    },
    /// Record a read's access time: an inode record, not in the activity log (reads are not
    /// changes), and the change time stays.
    Atime {
        /// Inode.
        ino: InodeId,
        /// When it was read.
        time: Timestamp,
    },
    /// Set an extended attribute.
    SetXattr {
        /// Inode.
        ino: InodeId,
        /// Name.
        name: Vec<u8>,
        /// Value.
        value: Vec<u8>,
        /// Create/replace rule.
        mode: XattrMode,
    },
    /// Remove an extended attribute.
    RemoveXattr {
        /// Inode.
        ino: InodeId,
        /// Name.
        name: Vec<u8>,
    },
    /// Set a regular file's content; commits a version unless it equals the lineage's newest.
    CommitContent {
        /// Inode.
        ino: InodeId,
        /// New size.
        size: u64,
        /// New content root (its nodes must already be stored).
        content: Option<NodeId>,
        /// New mtime (`None`: now).
        mtime: Option<Timestamp>,
    },
    /// Adds versions another device made (ids, clocks and parents theirs) to a regular file's
    /// history, oldest first, skipping those it holds already, and sets the file's content
    /// (see [`ImportedVersion`]).
    ImportVersions {
        /// Inode.
        ino: InodeId,
        /// The versions, in an order where parents come first.
        versions: Vec<ImportedVersion>,
        /// The file's content after (its nodes must be stored), usually the last version's.
        size: u64,
        content: Option<NodeId>,
        /// The file's mtime after.
        mtime: Timestamp,
    },
    /// Free an orphaned inode (link count zero, last handle closed).
    Free {
        /// Inode.
        ino: InodeId,
    },
    /// Take a snapshot of the whole tree.
    SnapshotCreate {
        /// Unique name.
        name: String,
        /// Free text.
        description: String,
    },
    /// Delete a snapshot.
    SnapshotDelete {
        /// Name.
        name: String,
    },
    /// Create the root directory of a new store.
    InitRoot {
        /// Permission bits.
        mode: u32,
        /// Owner.
        uid: u32,
        /// Group.
        gid: u32,
    },
    /// No change; with durability, a barrier that makes everything before it durable.
    Barrier,
    /// Record lower files that content is about to refer to (overlay stores): each gets the
    /// next lower file id, in order.
    RecordLowerFiles {
        /// Per file: which lower tree, its path below the tree's root, the file as it is now.
        files: Vec<(u32, Vec<u8>, LowerIdentity)>,
    },
    /// The root directory of a store opened with lower trees for the first time shows them
    /// (`layers` of them), unless it already does.
    ShowLowers {
        /// How many lower trees.
        layers: u32,
    },
    /// Put the entries of directory `dir`'s lower directories into the store, clearing its
    /// `lower` (a directory listed already: nothing). An entry whose name the directory has
    /// is hidden by it.
    Expand {
        /// The directory.
        dir: InodeId,
        /// What its lower directories hold, merged (see [`LowerEntry`]).
        entries: Vec<LowerEntry>,
    },
    /// Put lower regular file `entry` (one place, in tree 0) into directory `dir`, which
    /// shows no lower trees: the one file of a virtual copy (`cowfs mount --lower FILE`).
    /// Refused when the name exists.
    Adopt {
        /// The directory.
        dir: InodeId,
        /// The file, as a listing gives it (boxed: an inode is large).
        entry: Box<LowerEntry>,
    },
    /// Recorded lower file `file`'s bytes are in the store, as content tree `root` over its
    /// offsets (`overlay absorb`; a file absorbed already: nothing).
    Absorb {
        /// The lower file.
        file: LowerFileId,
        /// Its bytes' content tree (stored).
        root: NodeId,
    },
    /// Remove versions (gc): per lineage, the numbers, and the grave to remove when the
    /// lineage loses every version. A lineage that keeps any version keeps its newest.
    Prune {
        /// What to remove.
        prunes: Vec<PruneSpec>,
    },
    /// Take every regular file of `lineages` out of every snapshot that holds one (its inodes
    /// and the entries naming them).
    SnapshotForget {
        /// The files' lineages.
        lineages: Vec<LineageId>,
    },
    /// Only an activity-log entry (the summary of a command made of many operations).
    Note {
        /// What happened.
        action: Action,
        /// The inode it was about (`InodeId(0)`: none).
        ino: InodeId,
        /// Free text.
        detail: String,
    },
    /// `op`, logged as `action` with `detail` (a restore is a content commit logged as one).
    Tagged {
        /// Logged action.
        action: Action,
        /// Free text.
        detail: String,
        /// The operation.
        op: Box<Op>,
    },
}

impl Op {
    /// True for what a user does to make room (delete, rename over, prune, drop a snapshot):
    /// on a full device the writer gives up the store's reserve for these, once, so that a
    /// full store can still be cleaned up (see `Options::reserve_bytes`).
    pub fn frees_space(&self) -> bool {
        match self {
            Op::Unlink { .. }
            | Op::Rmdir { .. }
            | Op::Rename { .. }
            | Op::Free { .. }
            | Op::SnapshotDelete { .. }
            | Op::SnapshotForget { .. }
            | Op::Prune { .. } => true,
            Op::Tagged { op, .. } => op.frees_space(),
            _ => false,
        }
    }
}

/// What an operation produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to report.
    Done,
    /// The inode created or changed.
    Inode(Arc<Inode>),
    /// The version committed, or `None` when the content was unchanged.
    Version(Option<Arc<Version>>),
    /// The snapshot taken.
    Snapshot(Arc<SnapshotMeta>),
    /// How many (compaction's forget step: objects forgotten).
    Count(u64),
    /// The lower files recorded.
    LowerFiles(Vec<Arc<LowerFile>>),
}

/// Checks a directory entry name.
pub fn check_name(name: &[u8]) -> Result<()> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::NameTooLong(name.len()));
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(Error::Invalid(format!("bad file name {:?}", String::from_utf8_lossy(name))));
    }
    Ok(())
}

fn inode(ix: &Index, ino: InodeId) -> Result<Arc<Inode>> {
    ix.ns.inode(ino).cloned().ok_or(Error::NotFound(Missing::Inode(ino)))
}

/// Directory `ino`, to look in or change. A removed directory that is still open (no link
/// left) has no entries and takes none: ENOENT, as POSIX says for creating in it.
fn dir(ix: &Index, ino: InodeId) -> Result<Arc<Inode>> {
    let i = inode(ix, ino)?;
    if i.kind != FileKind::Directory {
        return Err(Error::NotDir(ino));
    }
    if i.nlink == 0 {
        return Err(Error::NotFound(Missing::Inode(ino)));
    }
    if i.unlisted().is_some() {
        // The engine lists a directory's lower entries before changing it (Engine::expanded):
        // changing it first could create a name that its lower directory has.
        return Err(Error::Invalid(format!("directory {ino} is not listed from its lower trees yet")));
    }
    Ok(i)
}

/// Removes an empty directory's last name: its free record, or, when it is still open
/// (`keep_orphan`), its inode with no link left, freed by [`Op::Free`] at its last close.
fn drop_dir(victim: &Inode, now: Timestamp, keep_orphan: bool) -> Record {
    if !keep_orphan {
        return Record::InodeFree(victim.ino);
    }
    let mut v = victim.clone();
    v.nlink = 0;
    v.ctime = now;
    Record::Inode(Arc::new(v))
}

fn entry_missing(parent: InodeId, name: &[u8]) -> Error {
    Error::NotFound(Missing::entry(parent, name))
}

/// Builds the records of a change to `parent`'s entries: its mtime and ctime become `now`,
/// its link count moves by `nlink_delta`.
fn touch_dir(p: &Inode, now: Timestamp, nlink_delta: i32) -> Record {
    let mut p = p.clone();
    p.mtime = now;
    p.ctime = now;
    p.nlink = p.nlink.saturating_add_signed(nlink_delta);
    Record::Inode(Arc::new(p))
}

/// Drops one link of `victim`: its new inode record, or its free record when the last
/// link goes and it is not kept as an orphan.
/// A file kept open after its last name went (an orphan) leaves its path's history: its
/// lineage moves to a fresh one, so later saves through its open handles do not interleave
/// with the history of a file created at the path again.
fn drop_link(ix: &Index, victim: &Inode, now: Timestamp, keep_orphan: bool) -> Record {
    let mut v = victim.clone();
    v.nlink = v.nlink.saturating_sub(1);
    v.ctime = now;
    if v.nlink > 0 {
        return Record::Inode(Arc::new(v));
    }
    if !keep_orphan {
        return Record::InodeFree(v.ino);
    }
    if v.lineage.is_some() {
        v.lineage = Some(LineageId(ix.counters.next_lineage));
    }
    Record::Inode(Arc::new(v))
}

/// Merges records for the same inode so a transaction writes each inode once, last wins.
fn dedup_inodes(recs: Vec<Record>) -> Vec<Record> {
    let mut out: Vec<Record> = Vec::with_capacity(recs.len());
    for r in recs {
        if let Record::Inode(i) = &r
            && let Some(pos) = out.iter().position(|o| matches!(o, Record::Inode(j) if j.ino == i.ino))
        {
            out[pos] = r;
            continue;
        }
        out.push(r);
    }
    out
}

/// A new inode with every time set to `now`, one link (directories: two), no content.
fn fresh_inode(ino: InodeId, kind: FileKind, mode: u32, uid: u32, gid: u32, now: Timestamp) -> Inode {
    Inode {
        ino,
        kind,
        mode: mode & 0o7777,
        uid,
        gid,
        nlink: if kind == FileKind::Directory { 2 } else { 1 },
        size: 0,
        atime: now,
        mtime: now,
        ctime: now,
        rdev: 0,
        lineage: None,
        content: None,
        symlink: Vec::new(),
        xattrs: Default::default(),
        lower: None,
    }
}

/// Context the writer supplies: the clock.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Wall-clock now.
    pub now: Timestamp,
    /// Physical milliseconds for the hybrid logical clock.
    pub physical_ms: u64,
}

/// Validates `op` against `ix` and returns the records that carry it out, in apply order.
/// A transaction that changes anything starts with a [`Stamp`] (the activity log).
pub fn prepare(op: &Op, ix: &Index, ctx: Ctx) -> Result<(Vec<Record>, Outcome)> {
    let (mut recs, outcome) = prepare_op(op, ix, ctx)?;
    if let Some((action, ino, detail)) = describe(op, ix, &outcome)
        && (!recs.is_empty() || matches!(op, Op::Note { .. }))
    {
        recs.insert(0, Record::Stamp(Arc::new(Stamp { time: ctx.now, action, ino, detail })));
    }
    Ok((recs, outcome))
}

/// How the activity log names `op` (`ix` is the index before it): action, inode, detail.
fn describe(op: &Op, ix: &Index, outcome: &Outcome) -> Option<(Action, InodeId, String)> {
    let made = || match outcome {
        Outcome::Inode(i) => i.ino,
        _ => InodeId(0),
    };
    let named = |parent: &InodeId, name: &[u8]| ix.ns.lookup(*parent, name).map_or(InodeId(0), |d| d.child);
    let (action, ino) = match op {
        Op::Create { attrs, .. } if attrs.kind == FileKind::Symlink => (Action::Symlink, made()),
        Op::Create { .. } => (Action::Create, made()),
        Op::Mkdir { .. } => (Action::Mkdir, made()),
        Op::Link { ino, .. } => (Action::Link, *ino),
        Op::Unlink { parent, name, .. } => (Action::Delete, named(parent, name)),
        Op::Rmdir { parent, name, .. } => (Action::Rmdir, named(parent, name)),
        Op::Rename { parent, name, .. } => (Action::Rename, named(parent, name)),
        Op::SetAttr { ino, .. } => (Action::Attr, *ino),
        Op::SetXattr { ino, .. } | Op::RemoveXattr { ino, .. } => (Action::Xattr, *ino),
        Op::CommitContent { ino, .. } | Op::ImportVersions { ino, .. } => (Action::Write, *ino),
        Op::SnapshotCreate { name, .. } => return Some((Action::SnapshotCreate, InodeId(0), name.clone())),
        Op::SnapshotDelete { name } => return Some((Action::SnapshotDelete, InodeId(0), name.clone())),
        Op::Note { action, ino, detail } => return Some((*action, *ino, detail.clone())),
        Op::Prune { prunes } => {
            let n: usize = prunes.iter().map(|p| p.1.len()).sum();
            return Some((Action::Gc, InodeId(0), format!("{n} versions pruned")));
        }
        Op::Tagged { action, detail, op } => {
            let ino = describe(op, ix, outcome).map_or(InodeId(0), |(_, ino, _)| ino);
            return Some((*action, ino, detail.clone()));
        }
        Op::Free { .. }
        | Op::Atime { .. }
        | Op::SnapshotForget { .. }
        | Op::InitRoot { .. }
        | Op::Barrier
        | Op::RecordLowerFiles { .. }
        | Op::ShowLowers { .. }
        | Op::Expand { .. }
        | Op::Adopt { .. }
        | Op::Absorb { .. } => return None,
    };
    Some((action, ino, String::new()))
}

fn prepare_op(op: &Op, ix: &Index, ctx: Ctx) -> Result<(Vec<Record>, Outcome)> {
    let now = ctx.now;
    match op {
        Op::Create { parent, name, attrs } => create(ix, now, *parent, name, attrs),
        Op::Mkdir { parent, name, mode, uid, gid } => {
            check_name(name)?;
            let p = dir(ix, *parent)?;
            if ix.ns.lookup(*parent, name).is_some() {
                return Err(Error::Exists(String::from_utf8_lossy(name).into_owned()));
            }
            let ino = InodeId(ix.counters.next_ino);
            let new = Arc::new(fresh_inode(ino, FileKind::Directory, *mode, *uid, *gid, now));
            let recs = vec![
                Record::Inode(new.clone()),
                Record::DirentSet { parent: *parent, name: name.clone(), child: ino, kind: FileKind::Directory },
                touch_dir(&p, now, 1),
            ];
            Ok((recs, Outcome::Inode(new)))
        }
        Op::Link { ino, parent, name } => link(ix, now, *ino, *parent, name),
        Op::Unlink { parent, name, keep_orphan } => {
            let p = dir(ix, *parent)?;
            let d = ix.ns.lookup(*parent, name).ok_or_else(|| entry_missing(*parent, name))?;
            if d.kind == FileKind::Directory {
                return Err(Error::IsDir(d.child));
            }
            let victim = inode(ix, d.child)?;
            let mut recs = vec![
                Record::DirentRemove { parent: *parent, name: name.clone() },
                drop_link(ix, &victim, now, *keep_orphan),
                touch_dir(&p, now, 0),
            ];
            if let (1, Some(lineage)) = (victim.nlink, victim.lineage) {
                recs.push(Record::Grave { parent: *parent, name: name.clone(), lineage });
            }
            Ok((recs, Outcome::Done))
        }
        Op::Rmdir { parent, name, keep_orphan } => {
            let p = dir(ix, *parent)?;
            let d = ix.ns.lookup(*parent, name).ok_or_else(|| entry_missing(*parent, name))?;
            if d.kind != FileKind::Directory {
                return Err(Error::NotDir(d.child));
            }
            if !ix.ns.is_empty_dir(d.child) {
                return Err(Error::NotEmpty(d.child));
            }
            let recs = vec![
                Record::DirentRemove { parent: *parent, name: name.clone() },
                drop_dir(&*inode(ix, d.child)?, now, *keep_orphan),
                touch_dir(&p, now, -1),
            ];
            Ok((recs, Outcome::Done))
        }
        Op::Rename { parent, name, new_parent, new_name, noreplace, exchange, keep_orphan } => {
            rename(ix, ctx, (*parent, name), (*new_parent, new_name), *noreplace, *exchange, *keep_orphan)
        }
        Op::SetAttr { ino, attr } => set_attr(ix, now, *ino, attr),
        Op::Atime { ino, time } => {
            let mut n = (*inode(ix, *ino)?).clone();
            n.atime = *time;
            let n = Arc::new(n);
            Ok((vec![Record::Inode(n.clone())], Outcome::Inode(n)))
        }
        Op::SetXattr { ino, name, value, mode } => set_xattr(ix, now, *ino, name, value, *mode),
        Op::RemoveXattr { ino, name } => {
            let mut n = (*inode(ix, *ino)?).clone();
            if n.xattrs.remove(name).is_none() {
                return Err(Error::NoXattr(String::from_utf8_lossy(name).into_owned()));
            }
            n.ctime = now;
            let n = Arc::new(n);
            Ok((vec![Record::Inode(n.clone())], Outcome::Inode(n)))
        }
        Op::CommitContent { ino, size, content, mtime } => commit_content(ix, ctx, *ino, *size, *content, *mtime),
        Op::ImportVersions { ino, versions, size, content, mtime } => {
            import_versions(ix, ctx, *ino, versions, (*size, *content), *mtime)
        }
        Op::Free { ino } => {
            let i = inode(ix, *ino)?;
            if i.nlink != 0 {
                return Err(Error::Invalid(format!("inode {ino} still has {} links", i.nlink)));
            }
            Ok((vec![Record::InodeFree(*ino)], Outcome::Done))
        }
        Op::SnapshotCreate { name, description } => snapshot_create(ix, ctx, name, description),
        Op::SnapshotDelete { name } => {
            let s = ix.snapshot_by_name(name).ok_or_else(|| Error::NotFound(Missing::Snapshot(name.clone())))?;
            Ok((vec![Record::SnapshotDelete(s.meta.id)], Outcome::Done))
        }
        Op::InitRoot { mode, uid, gid } => {
            if ix.ns.inode(InodeId::ROOT).is_some() {
                return Err(Error::Exists("root directory".into()));
            }
            let root = Arc::new(fresh_inode(InodeId::ROOT, FileKind::Directory, *mode, *uid, *gid, now));
            Ok((vec![Record::Inode(root.clone())], Outcome::Inode(root)))
        }
        Op::Barrier => Ok((Vec::new(), Outcome::Done)),
        Op::RecordLowerFiles { files } => lower::record_files(ix, files),
        Op::ShowLowers { layers } => lower::show(ix, *layers),
        Op::Expand { dir, entries } => lower::expand(ix, *dir, entries),
        Op::Adopt { dir, entry } => lower::adopt(ix, *dir, entry),
        Op::Absorb { file, root } => lower::absorb(ix, *file, *root),
        Op::Prune { prunes } => prune(ix, prunes),
        Op::SnapshotForget { lineages } => {
            let holds = ix.snapshot_holds(lineages).into_iter();
            Ok((holds.map(|(snapshot, lineage)| Record::SnapshotForget { snapshot, lineage }).collect(), Outcome::Done))
        }
        Op::Note { detail, .. } => {
            if detail.len() > MAX_DESCRIPTION_LEN {
                return Err(Error::Invalid(format!("note of {} bytes", detail.len())));
            }
            Ok((Vec::new(), Outcome::Done))
        }
        Op::Tagged { detail, op, .. } => {
            if detail.len() > MAX_DESCRIPTION_LEN {
                return Err(Error::Invalid(format!("note of {} bytes", detail.len())));
            }
            prepare_op(op, ix, ctx)
        }
    }
}
