//! Newtypes for every identifier, so raw integers never cross a module boundary.

use std::fmt;

macro_rules! int_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

int_id!(
    /// An inode number. 1 is the root directory; numbers are never reused within a store.
    InodeId
);
int_id!(
    /// A segment file's number; segments are named `seg-{id:016x}.log` and sort by id.
    SegmentId
);
int_id!(
    /// A path lineage: the history of one path across renames-over and delete+recreate.
    LineageId
);
int_id!(
    /// The device that wrote a record (random per store creation; later per machine).
    DeviceId
);
int_id!(
    /// A snapshot's number, unique within the store.
    SnapshotId
);
int_id!(
    /// A file of a lower tree that a store's content refers to (overlay mounts): numbered from
    /// 1 within the store, never reused.
    LowerFileId
);
int_id!(
    /// A hybrid logical clock value: physical milliseconds << 16 | logical counter.
    Hlc
);

impl InodeId {
    /// The root directory.
    pub const ROOT: InodeId = InodeId(1);
}

impl SegmentId {
    /// Segments the writer starts are numbered `k << SLOT_BITS` (k = 1, 2, ...); the ids in
    /// between are for compaction, whose output for segment `s` is `s + 1` (it takes the
    /// replaced segment's place in log order).
    pub const SLOT_BITS: u32 = 16;

    /// The first id of the next writer slot after this one.
    pub fn next_slot(self) -> SegmentId {
        SegmentId(((self.0 >> Self::SLOT_BITS) + 1) << Self::SLOT_BITS)
    }

    /// The id of the compaction output that replaces this segment, if the slot has room.
    pub fn compacted(self) -> Option<SegmentId> {
        let next = self.0 + 1;
        (next & ((1 << Self::SLOT_BITS) - 1) != 0).then_some(SegmentId(next))
    }

    /// File name of this segment.
    pub fn file_name(self) -> String {
        format!("seg-{:016x}.log", self.0)
    }

    /// Parses `seg-{id:016x}.log`.
    pub fn parse_file_name(name: &str) -> Option<SegmentId> {
        let hex = name.strip_prefix("seg-")?.strip_suffix(".log")?;
        if hex.len() != 16 {
            return None;
        }
        u64::from_str_radix(hex, 16).ok().map(SegmentId)
    }
}

/// A version's globally unique id: the device that made it and that device's sequence.
/// Unique across machines, so histories from several devices merge as a set union.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct VersionId {
    /// Device that committed the version.
    pub device: DeviceId,
    /// Per-device sequence number, starting at 1.
    pub seq: u64,
}

impl fmt::Display for VersionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:x}-{}", self.device.0, self.seq)
    }
}

macro_rules! hash_id {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; 32]);
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                for b in &self.0 {
                    write!(f, "{b:02x}")?;
                }
                Ok(())
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}(", stringify!($name))?;
                for b in &self.0[..8] {
                    write!(f, "{b:02x}")?;
                }
                write!(f, "..)")
            }
        }
    };
}

hash_id!(
    /// blake3 of a chunk's raw (uncompressed) bytes.
    ChunkId
);
hash_id!(
    /// blake3, keyed with [`crate::format::tree::NODE_KEY`], of a content-tree node's encoding.
    NodeId
);

/// A store's random identity, written in every segment and checkpoint header so that a
/// file from another store is never mistaken for one of ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct StoreId(pub [u8; 16]);

impl fmt::Display for StoreId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}
