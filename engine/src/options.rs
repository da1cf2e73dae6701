//! How to open a store: the tunables of an engine.

use crate::format::chunk::ChunkParams;

/// How to open a store.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Create the store if the directory is empty.
    pub create: bool,
    /// Chunking parameters for a new store (an existing store keeps its own).
    pub chunking: ChunkParams,
    /// Segment size for a new store.
    pub segment_size: u64,
    /// Checkpoint after this many log bytes.
    pub checkpoint_bytes: u64,
    /// Budget of the decompressed-chunk cache, in bytes.
    pub chunk_cache_bytes: usize,
    /// Dirty bytes a [`FileWriter`] buffers before it chunks and stores them.
    pub write_buffer_bytes: usize,
    /// Space held back in [`crate::log::reserve::RESERVE_FILE`] (0: none), on top of one checkpoint's size; given
    /// up when a delete or prune does not fit on a full device and taken again after a
    /// compaction: so that a full store can be cleaned up.
    pub reserve_bytes: u64,
    /// Appends of at least this many bytes are written as whole blocks past the page cache
    /// (see `Writer::write_frames`); smaller ones through it.
    pub block_write_bytes: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            create: true,
            chunking: ChunkParams::DEFAULT,
            segment_size: crate::log::meta::DEFAULT_SEGMENT_SIZE,
            checkpoint_bytes: 256 << 20,
            chunk_cache_bytes: 32 << 20,
            // Full, a sequential writer's buffer holds this plus one FUSE write (1 MiB): 15
            // MiB stays under the 16 MiB above which the daemon's allocator maps memory
            // straight from the kernel (tools/src/mount.rs), where each fresh buffer would
            // cost a page fault and a zeroed page per 4 KiB.
            write_buffer_bytes: 14 << 20,
            reserve_bytes: 4 << 20,
            block_write_bytes: 1 << 20,
        }
    }
}

impl Options {
    /// Small everything, for tests: tiny chunks and segments, frequent checkpoints.
    pub fn tiny() -> Self {
        Options {
            create: true,
            chunking: ChunkParams::TINY,
            segment_size: 16 << 10,
            checkpoint_bytes: 64 << 10,
            chunk_cache_bytes: 1 << 20,
            write_buffer_bytes: 8 << 10,
            reserve_bytes: 0,
            block_write_bytes: 256,
        }
    }
}
