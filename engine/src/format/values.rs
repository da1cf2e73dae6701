//! The values records carry: inodes, versions, snapshots, activity stamps, times, file kinds
//! and actions (their encoding is in `super::record`).

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{CorruptKind, DecodeError};
use crate::format::codec::{Reader, Writer};
use crate::ids::{Hlc, InodeId, LineageId, LowerFileId, NodeId, SnapshotId, VersionId};

/// What a transaction did, as the activity log (`cowfs log`) names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// A file, device node or fifo created.
    Create,
    /// A file's content committed (a version).
    Write,
    /// A name of a file removed.
    Delete,
    /// An entry renamed.
    Rename,
    /// A directory created.
    Mkdir,
    /// A directory removed.
    Rmdir,
    /// A hard link added.
    Link,
    /// A symlink created.
    Symlink,
    /// Mode, owner or times changed.
    Attr,
    /// An extended attribute set or removed.
    Xattr,
    /// A file's content restored from its history.
    Restore,
    /// A snapshot taken.
    SnapshotCreate,
    /// A snapshot deleted.
    SnapshotDelete,
    /// The tree restored from a snapshot.
    SnapshotRestore,
    /// History pruned.
    Gc,
}

impl Action {
    /// Every action, in code order.
    pub const ALL: [Action; 15] = [
        Action::Create,
        Action::Write,
        Action::Delete,
        Action::Rename,
        Action::Mkdir,
        Action::Rmdir,
        Action::Link,
        Action::Symlink,
        Action::Attr,
        Action::Xattr,
        Action::Restore,
        Action::SnapshotCreate,
        Action::SnapshotDelete,
        Action::SnapshotRestore,
        Action::Gc,
    ];

    /// Stored code (1..=15).
    pub fn code(self) -> u8 {
        Action::ALL.iter().position(|a| *a == self).expect("listed") as u8 + 1
    }

    /// The action with this code.
    pub fn from_code(c: u8) -> Result<Action, DecodeError> {
        match c {
            1..=15 => Ok(Action::ALL[c as usize - 1]),
            v => Err(CorruptKind::Unknown { what: "action", value: v.into() }.into()),
        }
    }

    /// Name as `cowfs log` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Write => "write",
            Action::Delete => "delete",
            Action::Rename => "rename",
            Action::Mkdir => "mkdir",
            Action::Rmdir => "rmdir",
            Action::Link => "link",
            Action::Symlink => "symlink",
            Action::Attr => "attr",
            Action::Xattr => "xattr",
            Action::Restore => "restore",
            Action::SnapshotCreate => "snapshot-create",
            Action::SnapshotDelete => "snapshot-delete",
            Action::SnapshotRestore => "snapshot-restore",
            Action::Gc => "gc",
        }
    }

    /// The action named `s`.
    pub fn parse(s: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == s)
    }
}

/// The first record of every transaction that changes something: when, what, and on which
/// inode. Paths are not stored: the log reader derives them from the transaction's entry
/// records and the tree as it was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Wall-clock time of the transaction.
    pub time: Timestamp,
    /// What it did.
    pub action: Action,
    /// The inode it was about (`InodeId(0)`: none, e.g. snapshot operations).
    pub ino: InodeId,
    /// Free text: a snapshot's name, where a restore came from.
    pub detail: String,
}

/// POSIX file type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Unix socket.
    Socket,
}

impl FileKind {
    /// On-disk code.
    pub fn code(self) -> u8 {
        match self {
            FileKind::Regular => 1,
            FileKind::Directory => 2,
            FileKind::Symlink => 3,
            FileKind::Fifo => 4,
            FileKind::CharDevice => 5,
            FileKind::BlockDevice => 6,
            FileKind::Socket => 7,
        }
    }
    /// From the on-disk code.
    pub fn from_code(c: u8) -> Result<Self, DecodeError> {
        Ok(match c {
            1 => FileKind::Regular,
            2 => FileKind::Directory,
            3 => FileKind::Symlink,
            4 => FileKind::Fifo,
            5 => FileKind::CharDevice,
            6 => FileKind::BlockDevice,
            7 => FileKind::Socket,
            v => {
                return Err(CorruptKind::Unknown { what: "file kind", value: v.into() }.into());
            }
        })
    }
}

/// Seconds and nanoseconds since the Unix epoch (may be negative).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp {
    /// Whole seconds.
    pub secs: i64,
    /// Nanoseconds, below 1e9.
    pub nanos: u32,
}

impl Timestamp {
    /// Parses RFC 3339 with an offset (`2026-11-21T14:03:00+01:00`, `...Z`), or civil time
    /// `YYYY-MM-DD[ HH:MM[:SS]]` (also with `T`) in the local time zone. The error names `s`.
    pub fn parse(s: &str) -> Result<Timestamp, String> {
        use jiff::tz::TimeZone;
        let local = |dt: jiff::civil::DateTime| {
            dt.to_zoned(TimeZone::system()).map(|z| z.timestamp()).map_err(|e| format!("date {s:?}: {e}"))
        };
        let ts = if let Ok(ts) = s.parse::<jiff::Timestamp>() {
            ts
        } else if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
            local(dt)?
        } else if let Ok(d) = s.parse::<jiff::civil::Date>() {
            local(d.to_datetime(jiff::civil::Time::midnight()))?
        } else {
            return Err(format!(
                "invalid date {s:?} (use RFC 3339 like 2026-11-21T14:03:00+01:00, or local YYYY-MM-DD[ HH:MM[:SS]])"
            ));
        };
        Ok(Timestamp { secs: ts.as_second(), nanos: ts.subsec_nanosecond() as u32 })
    }

    /// RFC 3339 with the local zone's offset.
    pub fn rfc3339(self) -> String {
        match jiff::Timestamp::new(self.secs, self.nanos as i32) {
            Ok(ts) => ts.display_with_offset(ts.to_zoned(jiff::tz::TimeZone::system()).offset()).to_string(),
            Err(_) => format!("@{}.{:09}", self.secs, self.nanos),
        }
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp { secs: d.as_secs() as i64, nanos: d.subsec_nanos() }
    }
    pub(crate) fn encode(&self, w: &mut Writer) {
        w.i64(self.secs).u32(self.nanos);
    }
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let secs = r.i64()?;
        let nanos = r.u32()?;
        if nanos >= 1_000_000_000 {
            return Err(CorruptKind::Malformed("timestamp nanoseconds").into());
        }
        Ok(Timestamp { secs, nanos })
    }
}

/// Every attribute of an inode. Written whole on every change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inode {
    /// Inode number.
    pub ino: InodeId,
    /// File type.
    pub kind: FileKind,
    /// Permission bits including set-uid, set-gid and sticky (`& 0o7777`).
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count (directories: 2 + subdirectories).
    pub nlink: u32,
    /// Size in bytes (regular files; symlinks: target length).
    pub size: u64,
    /// Last access.
    pub atime: Timestamp,
    /// Last content change.
    pub mtime: Timestamp,
    /// Last attribute change.
    pub ctime: Timestamp,
    /// Device number for device nodes.
    pub rdev: u64,
    /// History lineage of a regular file.
    pub lineage: Option<LineageId>,
    /// Root of the content tree of a regular file (`None`: all hole / empty).
    pub content: Option<NodeId>,
    /// Target of a symlink.
    pub symlink: Vec<u8>,
    /// Extended attributes.
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Where an overlay store's entry comes from in its lower trees (format version 3; `None`:
    /// made in the store). A directory whose lower entries are not in the store yet is
    /// *unlisted*; its first listing puts them in, in one transaction, and marks it listed
    /// (docs/OVERLAY.md).
    pub lower: Option<Arc<LowerOrigin>>,
}

impl Inode {
    /// The lower directories an unlisted overlay directory shows (`None`: not one).
    pub fn unlisted(&self) -> Option<&[LowerSource]> {
        self.lower.as_deref().filter(|l| !l.listed).map(|l| &l.sources[..])
    }
}

/// Where an overlay entry comes from (see [`Inode::lower`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LowerOrigin {
    /// A directory whose lower entries are in the store (always set for other entries).
    pub listed: bool,
    /// A directory's lower directories, top layer first; another entry's one place.
    pub sources: Vec<LowerSource>,
}

/// A lower directory that an overlay directory shows (format version 3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LowerSource {
    /// Which lower tree (0: the first `--lower`).
    pub layer: u32,
    /// Its path below the tree's root (empty: the root itself).
    pub path: Vec<u8>,
}

/// A version of a file's content in its lineage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// Globally unique id.
    pub id: VersionId,
    /// Lineage the version belongs to.
    pub lineage: LineageId,
    /// Number within the lineage, from 1, never reused or renumbered.
    pub number: u64,
    /// Inode that held this content when it was committed.
    pub ino: InodeId,
    /// The file's permission bits when committed (an old version is readable by whom the
    /// file was readable then).
    pub mode: u32,
    /// The file's owner when committed.
    pub uid: u32,
    /// The file's group when committed.
    pub gid: u32,
    /// Wall-clock commit time.
    pub time: Timestamp,
    /// File size.
    pub size: u64,
    /// Content-tree root (`None`: empty or all hole).
    pub content: Option<NodeId>,
    /// Hybrid logical clock value at commit.
    pub hlc: Hlc,
    /// Versions this one descends from (the lineage's previous head; several after a merge).
    pub parents: Vec<VersionId>,
}

/// A named snapshot of the whole tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Number.
    pub id: SnapshotId,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Wall-clock time taken.
    pub time: Timestamp,
    /// Hybrid logical clock value.
    pub hlc: Hlc,
}

/// What pins a lower file's content: if any of it differs, its bytes may have changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LowerIdentity {
    /// Device.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// Status change time: changes with every write, even one that puts the mtime back.
    pub ctime: Timestamp,
}

/// A file of a lower tree whose bytes a store's content refers to (`Lower` extents).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LowerFile {
    /// Its number in the store.
    pub id: LowerFileId,
    /// Which lower tree (0: the first `--lower`).
    pub layer: u32,
    /// Its path below the tree's root when it was recorded (relative, no `..`).
    pub path: Vec<u8>,
    /// The file as it was when recorded.
    pub identity: LowerIdentity,
}
