//! Decoders fed arbitrary bytes return a value or `Corrupt`, never panic, and never
//! allocate beyond their caps (proptest; failures print a minimal failing input).

use cowfs_engine::testing::checkpoint;
use cowfs_engine::testing::chunk;
use cowfs_engine::testing::frame;
use cowfs_engine::testing::meta::StoreMeta;
use cowfs_engine::testing::record::Record;
use cowfs_engine::testing::tree::Node;
use cowfs_engine::{ChunkId, SegmentId, StoreId};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn records(kind in 0u8..12, bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(r) = Record::decode(kind, &bytes) {
            // What decodes must re-encode to the same bytes (metadata records).
            if !matches!(r, Record::Chunk(_) | Record::Node(..)) {
                prop_assert_eq!(r.encode_meta(), bytes);
            }
        }
    }

    #[test]
    fn nodes(bytes in proptest::collection::vec(any::<u8>(), 0..800)) {
        if let Ok(n) = Node::decode(&bytes) {
            prop_assert_eq!(n.encode(), bytes);
        }
    }

    #[test]
    fn chunks(bytes in proptest::collection::vec(any::<u8>(), 0..600), id in any::<[u8; 32]>()) {
        let _ = chunk::decode_chunk(&bytes, ChunkId(id));
    }

    #[test]
    fn frames_and_headers(bytes in proptest::collection::vec(any::<u8>(), 0..200), seg in any::<u64>(), off in any::<u64>()) {
        let _ = frame::decode_frame_header(&bytes, SegmentId(seg), off);
        let _ = frame::check_segment_header(&bytes, StoreId([0; 16]), SegmentId(seg));
        let _ = StoreMeta::decode(&bytes);
        for p in 0..bytes.len() {
            let _ = frame::valid_frame_at(&bytes, off % 1000, SegmentId(seg), p);
        }
    }

    #[test]
    fn checkpoints(mut bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
        // Give random bodies a valid header and checksum so the body decoder is exercised.
        if bytes.len() > 48 {
            bytes[..8].copy_from_slice(&checkpoint::CHECKPOINT_MAGIC);
            bytes[8..12].copy_from_slice(&frame::SEGMENT_VERSION.to_le_bytes());
            bytes[12..28].copy_from_slice(&[0; 16]);
            let n = bytes.len();
            let crc = crc32c::crc32c(&bytes[..n - 4]);
            bytes[n - 4..].copy_from_slice(&crc.to_le_bytes());
        }
        let _ = checkpoint::decode(&bytes, StoreId([0; 16]));
    }
}
