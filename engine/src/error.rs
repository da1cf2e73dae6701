//! The engine's one error type. Every variant names a situation and says what the caller
//! can do about it; the FUSE layer maps each one to an errno without a wildcard arm.

use std::io;

use crate::ids::{InodeId, LineageId};

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O call on the storage failed. If it was a write or a sync the engine is now
    /// poisoned (see [`Error::Poisoned`]); reads may be retried.
    #[error("I/O error during {op} on {file}: {source}")]
    Io {
        /// What the engine was doing (`append`, `sync_data`, `read_at`, ...).
        op: &'static str,
        /// The store-relative file name.
        file: String,
        /// The operating system's error.
        #[source]
        source: io::Error,
    },
    /// The storage is full. Nothing was acknowledged for the failed operation; the engine is
    /// poisoned like after any failed append (a partial frame may be on disk), reopen after
    /// freeing space. Reads keep working.
    #[error("no space left on the storage device")]
    NoSpace,
    /// A previous write or fsync failed, so the engine refuses all further mutations until it
    /// is reopened (fsync is never retried: after a failed fsync the kernel may have dropped
    /// the dirty pages, so a retried fsync could report success for lost data).
    #[error("store is read-only after an earlier I/O failure ({cause}); reopen it")]
    Poisoned {
        /// The first failure, as text.
        cause: String,
    },
    /// Bytes on disk do not decode: a checksum mismatch, a bad length, an unknown kind. The
    /// data at that place is lost; `cowfs-fsck` reports it. Never returned for a torn tail,
    /// which recovery cuts silently (that data was never acknowledged).
    #[error("corrupt store: {kind} in {file} at offset {offset}")]
    Corrupt {
        /// Store-relative file name.
        file: String,
        /// Byte offset of the bad structure in that file.
        offset: u64,
        /// What is wrong.
        kind: CorruptKind,
    },
    /// An object's bytes (a chunk's, decompressed, or a node's) do not hash to its id.
    #[error("object {object} content hash mismatch (stored in {file} at {offset})")]
    HashMismatch {
        /// The object's id, hex.
        object: String,
        /// Store-relative file name.
        file: String,
        /// Frame offset.
        offset: u64,
    },
    /// The directory is not empty and has no cowfs store header.
    #[error("{path} is not a cowfs store (no STORE file, and not empty)")]
    NotAStore {
        /// The directory given.
        path: String,
    },
    /// A lower file that content refers to (overlay mounts) is missing, unreadable, or no
    /// longer the file that was recorded: its bytes are not served.
    #[error("lower file {path}: {reason}")]
    Lower {
        /// Where it is (or was).
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The store was written by a format this build does not know.
    #[error("store format version {found} is not supported (this build reads versions 2 to {supported})")]
    UnsupportedFormat {
        /// Version in the store header.
        found: u32,
        /// The newest version this build reads (it reads every version from 2 up).
        supported: u32,
    },
    /// Another process (or another `Engine` in this one) has the store open.
    #[error("store is already open by another process (LOCK is held)")]
    Locked,
    /// No such inode, directory entry, path, lineage, version or snapshot.
    #[error("not found: {0}")]
    NotFound(Missing),
    /// The extended attribute does not exist (getxattr, removexattr, XATTR_REPLACE).
    #[error("no such extended attribute: {0}")]
    NoXattr(String),
    /// The name already exists (create, mkdir, link, rename with NOREPLACE, snapshot name).
    #[error("already exists: {0}")]
    Exists(String),
    /// A directory operation on a non-directory.
    #[error("not a directory: inode {0}")]
    NotDir(InodeId),
    /// A file operation on a directory.
    #[error("is a directory: inode {0}")]
    IsDir(InodeId),
    /// rmdir, or rename over, a directory that still has entries.
    #[error("directory not empty: inode {0}")]
    NotEmpty(InodeId),
    /// A name is empty, `.`/`..`, contains `/` or NUL, or is longer than 255 bytes; or some
    /// other argument is out of range.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A name is longer than [`crate::MAX_NAME_LEN`] bytes.
    #[error("name too long ({0} bytes)")]
    NameTooLong(usize),
    /// A rename would move a directory under itself.
    #[error("cannot move a directory into its own subtree")]
    Loop,
    /// The engine was closed (its writer thread has stopped).
    #[error("engine is shut down")]
    Closed,
    /// A bug: the engine met a state its code does not expect, or one of its threads
    /// panicked. The engine is poisoned (it refuses writes from then on; reopening starts
    /// again from what is on disk).
    #[error("internal error: {0} (the store refuses writes until it is reopened)")]
    Internal(String),
}

/// What [`Error::NotFound`] did not find.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Missing {
    /// An inode.
    #[error("inode {0}")]
    Inode(InodeId),
    /// A name in a directory.
    #[error("entry {name:?} in directory {parent}")]
    Entry {
        /// The directory.
        parent: InodeId,
        /// The name (lossily decoded).
        name: String,
    },
    /// A path in the tree (store-relative, `/a/b`).
    #[error("path {0:?}")]
    Path(String),
    /// A snapshot, by name.
    #[error("snapshot {0:?}")]
    Snapshot(String),
    /// A lineage (no version of it is left).
    #[error("lineage {0}")]
    Lineage(LineageId),
    /// A version of a lineage.
    #[error("version {number} of lineage {lineage}")]
    Version {
        /// The lineage.
        lineage: LineageId,
        /// The version number.
        number: u64,
    },
}

impl Missing {
    /// The entry `name` of directory `parent`.
    pub(crate) fn entry(parent: InodeId, name: &[u8]) -> Missing {
        Missing::Entry { parent, name: String::from_utf8_lossy(name).into_owned() }
    }
}

/// What exactly is wrong with a corrupt structure.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CorruptKind {
    /// Magic bytes are wrong.
    #[error("bad magic")]
    BadMagic,
    /// A crc32c does not match.
    #[error("checksum mismatch (expected {expected:#010x}, got {got:#010x})")]
    Checksum {
        /// Stored value.
        expected: u32,
        /// Computed value.
        got: u32,
    },
    /// A length field exceeds its cap or the bytes available.
    #[error("length {len} out of range (limit {limit})")]
    Length {
        /// The length read.
        len: u64,
        /// The cap or the bytes available.
        limit: u64,
    },
    /// An unknown record kind, extent kind, file kind or flag.
    #[error("unknown {what} {value}")]
    Unknown {
        /// Which enumeration.
        what: &'static str,
        /// The value found.
        value: u64,
    },
    /// A record decoded, but its fields are inconsistent or trailing bytes remain.
    #[error("malformed {0}")]
    Malformed(&'static str),
    /// A frame is unreadable and valid frames follow it: not a torn tail.
    #[error("bad frame followed by valid frames (mid-log corruption)")]
    MidLog,
    /// A referenced chunk, node or segment is missing.
    #[error("missing {0}")]
    Missing(String),
    /// Bytes decode but do not hash to the id that names them (the object, hex).
    #[error("content does not match its id {0}")]
    HashMismatch(String),
}

/// Engine result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(op: &'static str, file: impl Into<String>, source: io::Error) -> Self {
        if source.raw_os_error() == Some(28) || source.kind() == io::ErrorKind::StorageFull {
            return Error::NoSpace;
        }
        Error::Io { op, file: file.into(), source }
    }

    pub(crate) fn corrupt(file: impl Into<String>, offset: u64, kind: CorruptKind) -> Self {
        Error::Corrupt { file: file.into(), offset, kind }
    }

    /// The content tree names bytes past the end of chunk `chunk` (it was stored with
    /// another length than the tree says).
    pub(crate) fn extent_beyond(chunk: impl std::fmt::Display) -> Self {
        Error::corrupt("content tree", 0, CorruptKind::Missing(format!("bytes past the end of chunk {chunk}")))
    }

    /// True when the error says that bytes on disk are bad (checksum, hash, decode).
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::HashMismatch { .. })
    }
}

/// Used by decoders that do not yet know where their bytes came from; the caller attaches
/// the file and offset with [`DecodeError::at`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError(pub CorruptKind);

impl DecodeError {
    /// Attach the place the bytes came from.
    pub fn at(self, file: impl Into<String>, offset: u64) -> Error {
        Error::corrupt(file, offset, self.0)
    }
}

impl From<CorruptKind> for DecodeError {
    fn from(k: CorruptKind) -> Self {
        DecodeError(k)
    }
}

/// Maps an I/O error of operation `op` on `file` to [`Error::Io`] (for `map_err`).
pub(crate) fn io<'a>(op: &'static str, file: &'a str) -> impl FnOnce(io::Error) -> Error + 'a {
    move |e| Error::io(op, file, e)
}
