//! Segment files: the 64-byte segment header and the 16-byte record frame. Pure: encodes
//! and checks bytes, does no I/O. The layout comments mirror docs/FORMAT.md.

use crate::error::{CorruptKind, DecodeError};
use crate::ids::{SegmentId, StoreId};

/// Newest store format version this build reads and writes (`STORE`, checkpoints). Bump on
/// any incompatible change.
pub const FORMAT_VERSION: u32 = 5;
/// The version a store keeps until it needs a newer one. Until then, builds that read only
/// version 2 read it.
pub const BASE_FORMAT_VERSION: u32 = 2;
/// Version 3 adds the overlay records and extents (lower files): a store takes it when it is
/// opened with lower trees for the first time.
pub const LOWER_FORMAT_VERSION: u32 = 3;
/// Version 4 adds the absorbed record (lower bytes copied into the store): a store takes it
/// at its first `overlay absorb`.
pub const ABSORB_FORMAT_VERSION: u32 = 4;
/// Version 5 adds the snapshot-forget record (a file taken out of snapshots): a store takes
/// it at its first `forget --include-snapshots` that takes a file out of one.
pub const SNAPSHOT_EDIT_FORMAT_VERSION: u32 = 5;
/// Segment header layout version (unchanged since format version 2).
pub const SEGMENT_VERSION: u32 = 2;

/// Segment magic.
pub const SEGMENT_MAGIC: [u8; 8] = *b"COWFSSEG";
/// Segment header layout:
/// ```text
///  0  magic           [u8; 8]  "COWFSSEG"
///  8  format_version  u32
/// 12  header_len      u32      = 64
/// 16  store_id        [u8; 16]
/// 32  segment_id      u64
/// 40  replaces        u64      0, or the last segment this compaction output replaces
/// 48  replaces_from   u64      0, or the first of them when it replaces several (< replaces)
/// 56  reserved        [u8; 4]  zero
/// 60  crc32c          u32      of bytes 0..60
/// ```
pub const SEGMENT_HEADER_LEN: usize = 64;
const SEG_VERSION_OFFSET: usize = 8;
const SEG_HEADER_LEN_OFFSET: usize = 12;
const SEG_STORE_OFFSET: usize = 16;
const SEG_ID_OFFSET: usize = 32;
const SEG_REPLACES_OFFSET: usize = 40;
const SEG_REPLACES_FROM_OFFSET: usize = 48;
const SEG_RESERVED_OFFSET: usize = 56;
const SEG_CRC_OFFSET: usize = 60;

/// Frame header layout:
/// ```text
///  0  payload_len  u32   <= MAX_PAYLOAD
///  4  kind         u8    record kind
///  5  flags        u8    bit 0: END_OF_TXN; other bits zero
///  6  reserved     u16   zero
///  8  payload_crc  u32   crc32c(payload)
/// 12  header_crc   u32   crc32c(bytes 0..12 ++ segment_id u64 ++ frame offset u64)
/// ```
/// Binding the header checksum to the segment id and offset means a valid frame copied to
/// another place does not verify there.
pub const FRAME_HEADER_LEN: usize = 16;
/// Largest payload of one frame.
pub const MAX_PAYLOAD: usize = 8 << 20;
/// Flag: this frame ends its transaction.
pub const FLAG_END_OF_TXN: u8 = 1;

/// Encodes a segment header.
pub fn encode_segment_header(store: StoreId, seg: SegmentId) -> [u8; SEGMENT_HEADER_LEN] {
    encode_output_header(store, seg, None)
}

/// The segments a compaction output replaces: `first..=last` of the log when it was written
/// (no other segment lay between them), whose place the output takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replaced {
    /// The first segment replaced.
    pub first: SegmentId,
    /// The last one (`first` when the output replaces one segment).
    pub last: SegmentId,
}

/// Encodes the header of a segment that, with `replaces`, is the compaction output taking
/// those segments' place.
pub fn encode_output_header(store: StoreId, seg: SegmentId, replaces: Option<Replaced>) -> [u8; SEGMENT_HEADER_LEN] {
    let mut h = [0u8; SEGMENT_HEADER_LEN];
    let (from, last) = match replaces {
        Some(r) if r.first < r.last => (r.first.0, r.last.0),
        Some(r) => (0, r.last.0),
        None => (0, 0),
    };
    h[SEG_REPLACES_OFFSET..SEG_REPLACES_OFFSET + 8].copy_from_slice(&last.to_le_bytes());
    h[SEG_REPLACES_FROM_OFFSET..SEG_REPLACES_FROM_OFFSET + 8].copy_from_slice(&from.to_le_bytes());
    h[..8].copy_from_slice(&SEGMENT_MAGIC);
    h[SEG_VERSION_OFFSET..SEG_VERSION_OFFSET + 4].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h[SEG_HEADER_LEN_OFFSET..SEG_HEADER_LEN_OFFSET + 4].copy_from_slice(&(SEGMENT_HEADER_LEN as u32).to_le_bytes());
    h[SEG_STORE_OFFSET..SEG_STORE_OFFSET + 16].copy_from_slice(&store.0);
    h[SEG_ID_OFFSET..SEG_ID_OFFSET + 8].copy_from_slice(&seg.0.to_le_bytes());
    let crc = crc32c::crc32c(&h[..SEG_CRC_OFFSET]);
    h[SEG_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
    h
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Checks a segment header against the expected store and segment id; returns the segments
/// it replaces (compaction output), if any.
pub fn check_segment_header(h: &[u8], store: StoreId, seg: SegmentId) -> Result<Option<Replaced>, DecodeError> {
    if h.len() < SEGMENT_HEADER_LEN {
        return Err(CorruptKind::Length { len: h.len() as u64, limit: SEGMENT_HEADER_LEN as u64 }.into());
    }
    if h[..8] != SEGMENT_MAGIC {
        return Err(CorruptKind::BadMagic.into());
    }
    let expected = le32(h, SEG_CRC_OFFSET);
    let got = crc32c::crc32c(&h[..SEG_CRC_OFFSET]);
    if expected != got {
        return Err(CorruptKind::Checksum { expected, got }.into());
    }
    let version = le32(h, SEG_VERSION_OFFSET);
    if version != SEGMENT_VERSION {
        return Err(CorruptKind::Unknown { what: "segment format version", value: version.into() }.into());
    }
    if le32(h, SEG_HEADER_LEN_OFFSET) as usize != SEGMENT_HEADER_LEN
        || h[SEG_STORE_OFFSET..SEG_STORE_OFFSET + 16] != store.0
        || h[SEG_ID_OFFSET..SEG_ID_OFFSET + 8] != seg.0.to_le_bytes()
    {
        return Err(CorruptKind::Malformed("segment header identity").into());
    }
    let u64_at = |at: usize| u64::from_le_bytes(h[at..at + 8].try_into().expect("8 bytes"));
    let (last, from) = (u64_at(SEG_REPLACES_OFFSET), u64_at(SEG_REPLACES_FROM_OFFSET));
    if h[SEG_RESERVED_OFFSET..SEG_CRC_OFFSET].iter().any(|b| *b != 0) || last >= seg.0 || (from != 0 && from >= last) {
        return Err(CorruptKind::Malformed("segment header reserved bytes").into());
    }
    let first = if from == 0 { last } else { from };
    Ok((last != 0).then_some(Replaced { first: SegmentId(first), last: SegmentId(last) }))
}

/// The store id a segment header names, when its magic and checksum verify (for rebuilding a
/// lost `STORE`, see [`crate::log::meta::rebuild`]).
pub fn segment_header_store(h: &[u8]) -> Option<StoreId> {
    if h.len() < SEGMENT_HEADER_LEN
        || h[..8] != SEGMENT_MAGIC
        || le32(h, SEG_CRC_OFFSET) != crc32c::crc32c(&h[..SEG_CRC_OFFSET])
    {
        return None;
    }
    Some(StoreId(h[SEG_STORE_OFFSET..SEG_STORE_OFFSET + 16].try_into().expect("16 bytes")))
}

fn header_crc(h: &[u8], seg: SegmentId, offset: u64) -> u32 {
    let c = crc32c::crc32c(&h[..12]);
    let c = crc32c::crc32c_append(c, &seg.0.to_le_bytes());
    crc32c::crc32c_append(c, &offset.to_le_bytes())
}

/// Appends one frame for `payload` at file offset `offset` of segment `seg` to `out`.
pub fn encode_frame(out: &mut Vec<u8>, seg: SegmentId, offset: u64, kind: u8, end_of_txn: bool, payload: &[u8]) {
    out.extend_from_slice(&frame_header(seg, offset, kind, end_of_txn, payload.len(), crc32c::crc32c(payload)));
    out.extend_from_slice(payload);
}

/// The header of a frame at file offset `offset` of segment `seg` whose payload is `len`
/// bytes with crc32c `payload_crc` (computed where the payload was made, off the writer).
pub fn frame_header(
    seg: SegmentId,
    offset: u64,
    kind: u8,
    end_of_txn: bool,
    len: usize,
    payload_crc: u32,
) -> [u8; FRAME_HEADER_LEN] {
    assert!(len <= MAX_PAYLOAD, "frame payload over MAX_PAYLOAD");
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4] = kind;
    h[5] = if end_of_txn { FLAG_END_OF_TXN } else { 0 };
    h[8..12].copy_from_slice(&payload_crc.to_le_bytes());
    let hc = header_crc(&h, seg, offset);
    h[12..16].copy_from_slice(&hc.to_le_bytes());
    h
}

/// A frame header that verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    /// Payload length.
    pub len: u32,
    /// Record kind.
    pub kind: u8,
    /// Ends its transaction.
    pub end_of_txn: bool,
    /// crc32c of the payload.
    pub payload_crc: u32,
}

impl FrameHeader {
    /// Whole frame length.
    pub fn frame_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + self.len as u64
    }
}

/// Checks a frame header found at `offset` of `seg`.
pub fn decode_frame_header(h: &[u8], seg: SegmentId, offset: u64) -> Result<FrameHeader, DecodeError> {
    if h.len() < FRAME_HEADER_LEN {
        return Err(CorruptKind::Length { len: h.len() as u64, limit: FRAME_HEADER_LEN as u64 }.into());
    }
    let expected = le32(h, 12);
    let got = header_crc(h, seg, offset);
    if expected != got {
        return Err(CorruptKind::Checksum { expected, got }.into());
    }
    let len = le32(h, 0);
    if len as usize > MAX_PAYLOAD {
        return Err(CorruptKind::Length { len: len.into(), limit: MAX_PAYLOAD as u64 }.into());
    }
    if h[5] & !FLAG_END_OF_TXN != 0 || h[6] != 0 || h[7] != 0 {
        return Err(CorruptKind::Unknown { what: "frame flags", value: h[5].into() }.into());
    }
    Ok(FrameHeader { len, kind: h[4], end_of_txn: h[5] & FLAG_END_OF_TXN != 0, payload_crc: le32(h, 8) })
}

/// Checks a payload against its header.
pub fn check_payload(h: &FrameHeader, payload: &[u8]) -> Result<(), DecodeError> {
    let got = crc32c::crc32c(payload);
    if got != h.payload_crc {
        return Err(CorruptKind::Checksum { expected: h.payload_crc, got }.into());
    }
    Ok(())
}

/// True when a complete, valid frame starts at `pos` of `bytes` (the segment's content from
/// file offset `base`). Used to tell a torn tail from corruption in the middle of the log.
pub fn valid_frame_at(bytes: &[u8], base: u64, seg: SegmentId, pos: usize) -> bool {
    let Some(h) = bytes.get(pos..pos + FRAME_HEADER_LEN) else {
        return false;
    };
    let Ok(fh) = decode_frame_header(h, seg, base + pos as u64) else {
        return false;
    };
    let start = pos + FRAME_HEADER_LEN;
    match bytes.get(start..start + fh.len as usize) {
        Some(p) => check_payload(&fh, p).is_ok(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_bind_to_their_place() {
        let mut out = Vec::new();
        encode_frame(&mut out, SegmentId(3), 64, 5, true, b"payload");
        let h = decode_frame_header(&out, SegmentId(3), 64).unwrap();
        assert_eq!((h.len, h.kind, h.end_of_txn), (7, 5, true));
        check_payload(&h, &out[16..]).unwrap();
        assert!(decode_frame_header(&out, SegmentId(3), 65).is_err());
        assert!(decode_frame_header(&out, SegmentId(4), 64).is_err());
    }

    #[test]
    fn segment_header_checks_identity() {
        let s = StoreId([7; 16]);
        let h = encode_segment_header(s, SegmentId(9));
        check_segment_header(&h, s, SegmentId(9)).unwrap();
        assert!(check_segment_header(&h, StoreId([8; 16]), SegmentId(9)).is_err());
        assert!(check_segment_header(&h, s, SegmentId(10)).is_err());
        let mut bad = h;
        bad[20] ^= 1;
        assert!(check_segment_header(&bad, s, SegmentId(9)).is_err());
    }

    #[test]
    fn output_headers_name_what_they_replace() {
        let s = StoreId([7; 16]);
        let (a, b) = (SegmentId(0x1_0003), SegmentId(0x5_0001));
        for r in [Replaced { first: a, last: a }, Replaced { first: a, last: b }] {
            let h = encode_output_header(s, SegmentId(0x5_0002), Some(r));
            assert_eq!(check_segment_header(&h, s, SegmentId(0x5_0002)).unwrap(), Some(r));
        }
        // Not after the output, and the range in order.
        let h = encode_output_header(s, b, Some(Replaced { first: b, last: b }));
        assert!(check_segment_header(&h, s, b).is_err());
        let h = encode_output_header(s, SegmentId(0x5_0002), Some(Replaced { first: a, last: b }));
        let mut swapped = h;
        swapped.copy_within(40..48, 48);
        swapped[40..48].copy_from_slice(&a.0.to_le_bytes());
        let crc = crc32c::crc32c(&swapped[..SEG_CRC_OFFSET]);
        swapped[SEG_CRC_OFFSET..].copy_from_slice(&crc.to_le_bytes());
        assert!(check_segment_header(&swapped, s, SegmentId(0x5_0002)).is_err());
    }
}
