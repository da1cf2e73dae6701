//! cowfs-engine: the storage engine of cowfs.
//!
//! An append-only log of segment files holds content-defined chunks (blake3-named,
//! lz4-compressed, crc32c-framed), content-tree nodes and metadata records. An in-memory
//! [`index::Index`] is rebuilt at open from the newest checkpoint plus a replay of the log
//! after it. One writer thread group-commits mutations. Every disk access goes through the
//! [`storage::Storage`] trait. See docs/FORMAT.md and docs/DESIGN.md.

pub mod activity;
pub mod checkpoint;
pub mod chunk;
pub mod codec;
pub mod compact;
mod engine;
pub mod error;
mod file;
pub mod frame;
pub mod fsck;
pub mod fuzzing;
pub mod gc;
pub mod ids;
pub mod index;
pub mod meta;
pub mod ops;
pub mod record;
pub mod storage;
pub mod store;
mod sync;
pub mod tree;
mod writer;

pub use engine::{Engine, Options, Stats, inspect};
pub use error::{CorruptKind, Error, Result};
pub use file::FileWriter;
pub use ids::{ChunkId, DeviceId, Hlc, InodeId, LineageId, NodeId, SegmentId, SnapshotId, StoreId, VersionId};
pub use meta::read_meta;
pub use ops::{NewInode, Op, Outcome, SetAttr, XattrMode};
pub use record::{Action, FileKind, Inode, MAX_NAME_LEN, SnapshotMeta, Stamp, Timestamp, Version};
