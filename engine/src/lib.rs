//! cowfs-engine: the storage engine of cowfs.
//!
//! An append-only log of segment files holds content-defined chunks (blake3-named,
//! lz4-compressed, crc32c-framed), content-tree nodes and metadata records. An in-memory
//! [`index::Index`] is rebuilt at open from the newest checkpoint plus a replay of the log
//! after it. One writer thread group-commits mutations. Every disk access goes through the
//! [`storage::Storage`] trait. See docs/FORMAT.md and docs/DESIGN.md (its module map shows
//! the layers, each importing only the ones below it).

// Bottom: errors, ids, the sync facade, storage.
pub mod error;
pub mod ids;
pub mod storage;
mod sync;
// Pure encoding of what is on disk, then the in-memory index built from it.
pub mod format;
pub mod index;
// The log on disk: header, segments, recovery, checkpoints, reserve.
pub mod log;
// An open engine: shared state, the writer thread, the read path.
mod inner;
mod options;
mod read;
mod state;
mod write;
// Built on an open engine: files, history, retention and compaction, the handle.
pub mod activity;
pub mod compact;
mod engine;
mod file;
pub mod gc;
// Whole-store tools.
pub mod fsck;
pub mod fuzzing;

// The modules' paths before they were grouped by layer.
pub use format::{chunk, codec, frame, record, tree};
pub use index::ops;
pub use log::{checkpoint, meta, store};

pub use engine::{Engine, Stats, inspect};
pub use error::{CorruptKind, Error, Result};
pub use file::FileWriter;
pub use format::record::{Action, FileKind, Inode, MAX_NAME_LEN, SnapshotMeta, Stamp, Timestamp, Version};
pub use ids::{ChunkId, DeviceId, Hlc, InodeId, LineageId, NodeId, SegmentId, SnapshotId, StoreId, VersionId};
pub use index::ops::{NewInode, Op, Outcome, SetAttr, XattrMode};
pub use log::meta::read_meta;
pub use options::Options;
