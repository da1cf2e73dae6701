//! Cutting bytes into chunks: content-defined pieces hashed, pinned, looked up, the new ones
//! compressed and handed to the writer in batches.

use std::collections::HashSet;

use crate::error::Result;
use crate::format::chunk;
use crate::format::record::Record;
use crate::format::tree::{Extent, ExtentKind};
use crate::ids::ChunkId;
use crate::index::ops::Outcome;
use crate::inner::Inner;
use crate::sync::channel::Receiver;
use crate::write::EncodedObject;

/// Batch objects to the writer in groups of about this many payload bytes.
pub(crate) const SEND_BATCH_BYTES: usize = 2 << 20;
/// Bytes cut into chunks: their extents, the ids pinned (every chunk, stored or not), and the
/// new chunks' batches handed to the writer.
#[derive(Debug)]
pub(crate) struct Chunked {
    pub(crate) extents: Vec<Extent>,
    pub(crate) pinned: Vec<[u8; 32]>,
    pub(crate) in_flight: Vec<Receiver<Result<Outcome>>>,
    pub(crate) deferred: Vec<EncodedObject>,
}

/// How [`chunk_bytes`] spreads its work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spread {
    /// Hashing and compression of the pieces on every core: a flush its caller waits for.
    AllCores,
    /// Each piece cut, hashed and compressed in turn on this thread while its bytes are in
    /// the core's cache: a buffer chunked behind a sequential writer, where the jobs of
    /// several buffers keep the cores busy (docs/PERFORMANCE.md, session 8).
    ThisThread,
}

/// Cuts `bytes` into chunks, hashes them, pins each and looks it up, compresses the new ones
/// and hands them to the writer in batches (or, with `defer`, returns them in `deferred`).
pub(crate) fn chunk_bytes(engine: &Inner, bytes: &[u8], defer: bool, spread: Spread) -> Result<Chunked> {
    #[cfg(test)]
    if bytes.starts_with(tests::PANIC_MARKER) {
        panic!("bytes the test marked");
    }
    let pieces = engine.shared.meta.chunking.pieces(bytes).scan(0, |pos, len| {
        let piece = &bytes[*pos..*pos + len];
        *pos += len;
        Some(piece)
    });
    let mut out = Chunked { extents: Vec::new(), pinned: Vec::new(), in_flight: Vec::new(), deferred: Vec::new() };
    let mut seen = HashSet::new();
    // Notes a piece's extent and pin; true when its chunk is new.
    let mut fresh = |out: &mut Chunked, id: ChunkId, piece: &[u8]| {
        out.pinned.push(id.0);
        out.extents.push(Extent { len: piece.len() as u64, kind: ExtentKind::Chunk { id, offset: 0 } });
        !engine.pin(&id.0) && seen.insert(id)
    };
    let encode = |(id, piece): (ChunkId, &[u8])| {
        let c = chunk::encode_chunk_with_id(id, piece);
        EncodedObject::new(Record::Chunk(c.meta), c.payload)
    };
    let mut batch = Batch { engine, defer, objects: Vec::new(), bytes: 0 };
    match spread {
        Spread::ThisThread => {
            for piece in pieces {
                let id = chunk::chunk_id(piece);
                if fresh(&mut out, id, piece) {
                    batch.push(&mut out, encode((id, piece)))?;
                }
            }
        }
        Spread::AllCores => {
            let pieces: Vec<&[u8]> = pieces.collect();
            let ids = chunk::par_map(pieces.clone(), bytes.len(), chunk::chunk_id);
            let new: Vec<(ChunkId, &[u8])> = pieces
                .into_iter()
                .zip(ids)
                .filter(|&(piece, id)| fresh(&mut out, id, piece))
                .map(|(p, id)| (id, p))
                .collect();
            let new_bytes = new.iter().map(|(_, p)| p.len()).sum();
            for o in chunk::par_map(new, new_bytes, encode) {
                batch.push(&mut out, o)?;
            }
        }
    }
    batch.finish(&mut out)?;
    Ok(out)
}

/// New chunks gathered into batches for the writer.
struct Batch<'a> {
    engine: &'a Inner,
    defer: bool,
    objects: Vec<EncodedObject>,
    bytes: usize,
}

impl Batch<'_> {
    /// Adds `o`; a batch of [`SEND_BATCH_BYTES`] goes to the writer (unless deferred).
    fn push(&mut self, out: &mut Chunked, o: EncodedObject) -> Result<()> {
        self.bytes += o.payload_len();
        self.objects.push(o);
        if self.bytes >= SEND_BATCH_BYTES && !self.defer {
            out.in_flight.push(self.engine.send_objects(std::mem::take(&mut self.objects))?);
            self.bytes = 0;
        }
        Ok(())
    }

    /// Sends the rest, or with `defer` leaves it all in `out.deferred`.
    fn finish(self, out: &mut Chunked) -> Result<()> {
        if self.defer {
            out.deferred = self.objects;
        } else if !self.objects.is_empty() {
            out.in_flight.push(self.engine.send_objects(self.objects)?);
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    /// A buffer that starts with these bytes makes [`super::chunk_bytes`] panic (the unit
    /// tests of a panicking chunking job).
    pub(crate) const PANIC_MARKER: &[u8] = b"\xffcowfs test: panic while chunking\xff";
}
