//! What the writer is asked to do: requests, the objects they carry, compaction's outputs.

use std::sync::Arc;

use crate::error::Result;
use crate::format::record::Record;
use crate::ids::SegmentId;
use crate::index::ops::{Op, Outcome};
use crate::index::{Garbage, Move};
use crate::storage::StorageFile;
use crate::sync::channel::Sender;

/// A chunk or node ready to append: its record (for the index), its payload and the
/// payload's checksum (computed where the object is made, so not on the writer's thread).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedObject {
    pub(super) record: Record,
    pub(super) payload: Vec<u8>,
    pub(super) crc: u32,
}

impl EncodedObject {
    /// The object of `record` whose frame payload is `payload`.
    pub fn new(record: Record, payload: Vec<u8>) -> Self {
        let crc = crc32c::crc32c(&payload);
        EncodedObject { record, payload, crc }
    }

    /// The payload's length.
    pub fn payload_len(&self) -> usize {
        self.payload.len()
    }

    /// The object's id.
    pub(super) fn id(&self) -> [u8; 32] {
        match &self.record {
            Record::Chunk(m) => m.id.0,
            Record::Node(id, _) => id.0,
            _ => unreachable!("only chunks and nodes are objects"),
        }
    }
}

/// Reply channel of one request.
pub type Reply = Sender<Result<Outcome>>;

/// Work for the writer.
#[derive(Debug)]
pub enum Request {
    /// Store chunks/nodes not yet in the index (each its own transaction), then run `op`.
    Apply {
        /// Objects to store first.
        objects: Vec<EncodedObject>,
        /// The operation (`None`: objects only).
        op: Option<Op>,
        /// Make it durable before replying.
        durable: bool,
        /// Where the result goes (`None`: nobody waits; a failure poisons the engine).
        reply: Option<Reply>,
    },
    /// Write a checkpoint now.
    Checkpoint(Reply),
    /// Compaction: forget the garbage the compactor found (see [`crate::compact`]).
    Forget(Box<Garbage>, Reply),
    /// Start a new segment if the current one holds anything, so everything so far is in
    /// sealed segments (a full compaction can then reach it).
    Roll(Reply),
    /// Compaction: switch to a written output segment, then checkpoint.
    Switch(Box<Output>, Reply),
    /// Sync, checkpoint (when the flag is set), and stop.
    Shutdown(Reply, bool),
}

/// A run of segments and the output written in its place.
#[derive(Debug)]
pub struct Replacement {
    /// The segments replaced, in log order.
    pub run: Vec<SegmentId>,
    /// The output.
    pub output: SegmentId,
    /// Its file.
    pub file: Arc<dyn StorageFile>,
    /// Bytes of its frames.
    pub bytes: u64,
}

/// Written output segments, for the switch.
#[derive(Debug)]
pub struct Output {
    /// Each run of segments replaced, and its output.
    pub segments: Vec<Replacement>,
    /// Frames moved.
    pub moves: Vec<Move>,
}
