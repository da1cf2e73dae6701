//! cowfs-engine: the storage engine of cowfs.
//!
//! An append-only log of segment files holds content-defined chunks (blake3-named,
//! lz4-compressed, crc32c-framed), content-tree nodes and metadata records. An in-memory index
//! is rebuilt at open from the newest checkpoint plus a replay of the log after it. One writer
//! thread group-commits mutations. Every disk access goes through the [`storage::Storage`]
//! trait. See docs/FORMAT.md and docs/DESIGN.md (its module map shows the layers, each
//! importing only the ones below it).
//!
//! The public API is [`Engine`] (open a store; read through typed queries; change it through
//! typed commands), [`FileWriter`] (an open file), [`Options`], [`Error`], the query and
//! command types below, [`gc`] (retention rules and plans), [`compact`] (compaction policy
//! and report), [`fsck`], [`policy`] (the stored retention policy), [`tree`] (tree diff and restore) and
//! [`storage`]. The on-disk codecs, the index, the log and the
//! storage simulator are internal; the `testing` feature shows them to tests and fuzzers
//! through [`testing`].

// Bottom: errors, ids, the sync facade, storage.
pub mod error;
mod ids;
pub mod storage;
mod sync;
// Pure encoding of what is on disk, then the in-memory index built from it.
mod format;
mod index;
// The log on disk: header, segments, recovery, checkpoints, reserve.
mod log;
// An open engine: shared state, the writer thread, the read path.
mod inner;
mod options;
mod read;
mod state;
mod write;
// Built on an open engine: files, history, retention and compaction, the handle.
pub mod absorb;
mod activity;
pub mod compact;
mod engine;
mod file;
pub mod gc;
pub mod maintenance;
pub mod overlay;
// Whole-store tools.
pub mod fsck;
#[cfg(any(test, feature = "testing"))]
mod fuzzing;
pub mod policy;
mod transfer;
pub mod tree;

pub use activity::LogEntry;
pub use engine::{Engine, Stats, inspect};
pub use error::{CorruptKind, Error, Result};
pub use file::FileWriter;
pub use format::chunk::ChunkParams;
pub use format::record::{
    Action, FileKind, Inode, LowerFile, LowerIdentity, LowerOrigin, LowerSource, MAX_NAME_LEN, SnapshotMeta, Stamp,
    Timestamp, Version,
};
pub use format::tree::{Extent, ExtentKind};
pub use ids::{
    ChunkId, DeviceId, Hlc, InodeId, LineageId, LowerFileId, NodeId, SegmentId, SnapshotId, StoreId, VersionId,
};
pub use index::ops::{ImportedVersion, NewInode, PruneSpec, SetAttr, XattrMode};
pub use index::{Dirent, Namespace};
pub use log::meta::{STORE_FILE, StoreMeta, read_lowers, read_meta};
pub use log::recovery::OpenReport;
pub use options::Options;
pub use transfer::{Received, TreeRef, tree_refs};

/// The engine's internals, for its tests, the fuzz targets and benchmarks of its parts
/// (feature `testing`): the codecs, the index and its operations, the log, the storage
/// simulator's crash images, and an [`Engine`]'s raw operation channel.
#[cfg(feature = "testing")]
pub mod testing {
    pub use crate::engine::inspect_index;
    pub use crate::format::{chunk, codec, frame, record, tree};
    pub use crate::index::ops::{self, Op, Outcome};
    pub use crate::index::{Index, ObjEntry};
    pub use crate::log::{checkpoint, meta, store};
    pub use crate::storage::SimStorage;
    pub use crate::storage::sim::{CrashImage, Fate, Fault, FaultKind, Landed, PowerLossCoverage, SECTOR, TornFill};

    /// The in-memory index.
    pub mod index {
        pub use crate::index::*;
    }

    /// Entry points of the fuzz targets (fuzz/).
    pub mod fuzzing {
        pub use crate::fuzzing::*;
    }
}
