//! Content chunks: content-defined splitting (FastCDC 2020), identity (blake3 of the raw
//! bytes), compression (lz4 block, or raw when lz4 does not shrink the chunk) and the
//! verified decode that guarantees a read returns the exact bytes or an error.

use std::borrow::Cow;

use crate::error::{CorruptKind, DecodeError};
use crate::format::codec::{Reader, Writer};
use crate::ids::ChunkId;

/// Largest chunk any store may use (a cap on lengths read from disk).
pub const MAX_CHUNK: usize = 4 << 20;

/// Worst-case lz4 block size for `raw` input bytes (stored chunks never exceed it).
pub fn max_stored_len(raw: usize) -> usize {
    raw + raw / 255 + 16
}

/// Header of a chunk record (the compressed bytes follow it in the payload).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkMeta {
    /// blake3 of the raw bytes.
    pub id: ChunkId,
    /// Raw length.
    pub raw_len: u32,
    /// 0 = stored raw, 1 = lz4 block.
    pub codec: u8,
    /// Stored (possibly compressed) length.
    pub stored_len: u32,
}

/// Size of the chunk header inside the payload.
pub const CHUNK_HEADER_LEN: usize = 32 + 4 + 1;

impl ChunkMeta {
    /// Decodes the header of a chunk record payload, checking its lengths against the caps
    /// (the stored bytes follow it).
    pub fn decode(payload: &[u8]) -> Result<ChunkMeta, DecodeError> {
        let mut r = Reader::new(payload);
        let id = ChunkId(r.array()?);
        let raw_len = r.u32()?;
        let codec = r.u8()?;
        let stored_len = r.remaining();
        if codec > 1 {
            return Err(CorruptKind::Unknown { what: "chunk codec", value: codec.into() }.into());
        }
        if raw_len as usize > MAX_CHUNK
            || stored_len > max_stored_len(raw_len as usize)
            || (codec == 0 && stored_len != raw_len as usize)
        {
            return Err(CorruptKind::Malformed("chunk lengths").into());
        }
        Ok(ChunkMeta { id, raw_len, codec, stored_len: stored_len as u32 })
    }
}

/// FastCDC parameters of a store, fixed at creation and recorded in its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkParams {
    /// Minimum chunk size.
    pub min: u32,
    /// Target average chunk size.
    pub avg: u32,
    /// Maximum chunk size.
    pub max: u32,
}

impl ChunkParams {
    /// The default: 16 KiB / 64 KiB / 256 KiB (see docs/FORMAT.md for why).
    pub const DEFAULT: ChunkParams = ChunkParams { min: 16 << 10, avg: 64 << 10, max: 256 << 10 };

    /// Small chunks for tests, so that small inputs produce many chunks.
    pub const TINY: ChunkParams = ChunkParams { min: 64, avg: 256, max: 1024 };

    /// Checks the parameters against FastCDC's limits and ours.
    pub fn validate(&self) -> Result<(), DecodeError> {
        let ok = self.min >= 64
            && self.avg >= 256
            && self.min <= self.avg
            && self.avg <= self.max
            && self.max as usize <= MAX_CHUNK;
        if ok { Ok(()) } else { Err(CorruptKind::Malformed("chunking parameters").into()) }
    }

    /// The lengths of `data`'s content-defined pieces in order, each cut when asked for.
    pub fn pieces<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = usize> + 'a {
        let cuts = (!data.is_empty())
            .then(|| fastcdc::v2020::FastCDC::new(data, self.min as usize, self.avg as usize, self.max as usize));
        cuts.into_iter().flatten().map(|c| c.length)
    }
}

/// Runs `f` over `items` on every core (rayon's pool, whose threads live on, so their
/// allocator caches do too), results in order; on the caller's thread when there is little to
/// do. Chunk hashing and compression use it: a single file's sequential write otherwise runs
/// on one core.
pub fn par_map<T: Send, U: Send>(items: Vec<T>, bytes: usize, f: impl Fn(T) -> U + Sync + Send) -> Vec<U> {
    use rayon::prelude::*;
    if bytes < (1 << 20) || items.len() < 2 {
        return items.into_iter().map(f).collect();
    }
    items.into_par_iter().with_min_len(8).map(f).collect()
}

/// The id of raw chunk bytes.
pub fn chunk_id(raw: &[u8]) -> ChunkId {
    ChunkId(*blake3::hash(raw).as_bytes())
}

/// A chunk ready for the writer: its header and the full record payload.
#[derive(Debug, Clone)]
pub struct EncodedChunk {
    /// The header as the index will see it.
    pub meta: ChunkMeta,
    /// The record payload (header + stored bytes).
    pub payload: Vec<u8>,
}

/// Hashes and compresses `raw` into a chunk record payload (done on the caller's thread).
#[cfg(any(test, feature = "testing"))]
pub fn encode_chunk(raw: &[u8]) -> EncodedChunk {
    let id = chunk_id(raw);
    encode_chunk_with_id(id, raw)
}

/// Like [`encode_chunk`] when the id is already known. lz4 writes into a buffer this thread
/// keeps, the record goes into a buffer the writer gave back ([`give_back`]) where one fits:
/// fresh buffers for each chunk cost 90,000-100,000 page faults per GiB written (the kernel
/// zeroing every page anew), 8-10% of a sequential write's CPU.
pub fn encode_chunk_with_id(id: ChunkId, raw: &[u8]) -> EncodedChunk {
    thread_local! {
        static LZ4_OUT: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
    }
    let mut out = LZ4_OUT.take();
    let max = lz4_flex::block::get_maximum_output_size(raw.len());
    if out.len() < max {
        out.resize(max, 0);
    }
    let shrunk = lz4_flex::block::compress_into(raw, &mut out[..max]).ok().filter(|&n| n < raw.len());
    let (codec, stored): (u8, &[u8]) = match shrunk {
        Some(n) => (1, &out[..n]),
        None => (0, raw),
    };
    let mut w = Writer { buf: record_buffer(CHUNK_HEADER_LEN + stored.len()) };
    w.raw(&id.0).u32(raw.len() as u32).u8(codec).raw(stored);
    let meta = ChunkMeta { id, raw_len: raw.len() as u32, codec, stored_len: stored.len() as u32 };
    LZ4_OUT.set(out);
    EncodedChunk { meta, payload: w.buf }
}

/// Record buffers the writer is done with, for the next chunks' records (at most
/// [`SPARE_RECORDS`] of them, each at most [`SPARE_RECORD_MAX`]).
static SPARE_RECORD_POOL: parking_lot::Mutex<Vec<Vec<u8>>> = parking_lot::Mutex::new(Vec::new());
/// Buffers kept for reuse: a few batches' worth of 64 KiB chunks.
const SPARE_RECORDS: usize = 64;
/// The largest buffer kept: a 256 KiB chunk's record (the default largest chunk) with room.
const SPARE_RECORD_MAX: usize = 320 << 10;

/// An empty buffer with room for `len` bytes: the smallest spare that has it, or a new one.
fn record_buffer(len: usize) -> Vec<u8> {
    let mut pool = SPARE_RECORD_POOL.lock();
    let best = (pool.iter().enumerate())
        .filter(|(_, b)| b.capacity() >= len)
        .min_by_key(|(_, b)| b.capacity())
        .map(|(i, _)| i);
    match best {
        Some(i) => {
            let mut b = pool.swap_remove(i);
            b.clear();
            b
        }
        None => Vec::with_capacity(len),
    }
}

/// Hands record buffers whose records are written back for reuse by [`encode_chunk_with_id`].
pub fn give_back(buffers: impl IntoIterator<Item = Vec<u8>>) {
    let mut pool = SPARE_RECORD_POOL.lock();
    for b in buffers {
        if pool.len() >= SPARE_RECORDS {
            break;
        }
        if b.capacity() <= SPARE_RECORD_MAX {
            pool.push(b);
        }
    }
}

/// Decodes a chunk record payload whose frame checksum already passed, decompressing with
/// the recorded raw length as the cap and checking blake3 against `expected`.
pub fn decode_chunk(payload: &[u8], expected: ChunkId) -> Result<Vec<u8>, DecodeError> {
    decode_chunk_ref(payload, expected).map(Cow::into_owned)
}

/// [`decode_chunk`] without a copy when the chunk is stored raw: the bytes borrowed from
/// `payload`.
pub fn decode_chunk_ref(payload: &[u8], expected: ChunkId) -> Result<Cow<'_, [u8]>, DecodeError> {
    let meta = ChunkMeta::decode(payload)?;
    let stored = &payload[CHUNK_HEADER_LEN..];
    let raw = match meta.codec {
        0 => Cow::Borrowed(stored),
        _ => Cow::Owned(
            lz4_flex::block::decompress(stored, meta.raw_len as usize)
                .map_err(|_| DecodeError(CorruptKind::Malformed("lz4 block")))?,
        ),
    };
    if raw.len() != meta.raw_len as usize {
        return Err(CorruptKind::Malformed("chunk raw length").into());
    }
    if meta.id != expected || chunk_id(&raw) != expected {
        return Err(CorruptKind::HashMismatch(expected.to_string()).into());
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compressible_chunks_are_compressed_and_random_ones_are_not() {
        let text = b"hello world ".repeat(1000);
        let c = encode_chunk(&text);
        assert_eq!(c.meta.codec, 1);
        assert!(c.payload.len() < text.len() / 4);
        assert_eq!(decode_chunk(&c.payload, c.meta.id).unwrap(), text);

        let mut x = 0x1234_5678_9abc_def0u64;
        let random: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let c = encode_chunk(&random);
        assert_eq!(c.meta.codec, 0);
        assert_eq!(decode_chunk(&c.payload, c.meta.id).unwrap(), random);
    }

    /// Records written into buffers given back (dirty, of any size) hold exactly what a fresh
    /// buffer would: nothing of what the buffer held before.
    #[test]
    fn reused_record_buffers_hold_only_the_new_record() {
        let text = b"reuse me ".repeat(3000);
        let random: Vec<u8> = (0..50_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        for _ in 0..3 {
            give_back([1usize << 10, 16 << 10, 64 << 10, 300 << 10].map(|n| vec![0xAA; n]));
            for raw in [&text[..], &random[..], &text[..10], &random[..100]] {
                let c = encode_chunk(raw);
                assert_eq!(c.payload.len(), CHUNK_HEADER_LEN + c.meta.stored_len as usize);
                assert_eq!(&c.payload[..32], &c.meta.id.0);
                assert_eq!(decode_chunk(&c.payload, c.meta.id).unwrap(), raw);
                give_back([c.payload]);
            }
        }
    }

    #[test]
    fn a_flipped_bit_is_an_error_never_wrong_bytes() {
        let text = b"abcdefgh".repeat(500);
        let c = encode_chunk(&text);
        for i in CHUNK_HEADER_LEN..c.payload.len() {
            let mut p = c.payload.clone();
            p[i] ^= 0x10;
            if let Ok(raw) = decode_chunk(&p, c.meta.id) {
                assert_eq!(raw, text, "flip at {i} gave wrong bytes");
            }
        }
    }
}
