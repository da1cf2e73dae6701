//! Bodies of the cargo-fuzz targets in `fuzz/`, kept here so that committed regression
//! inputs replay as ordinary `cargo test` cases (engine/tests/fuzz_regressions.rs). Each
//! function must return normally on every input: a panic is a bug.

use std::sync::Arc;

use crate::chunk::{self, ChunkParams};
use crate::engine::{Engine, Options, inspect};
use crate::frame;
use crate::ids::{ChunkId, DeviceId, InodeId, SegmentId, StoreId};
use crate::record::{FileKind, Record, Timestamp};
use crate::storage::{SimStorage, Storage};
use crate::store::{STORE_FILE, StoreMeta};
use crate::tree::Node;

/// Every decoder, chosen by the first byte.
pub fn decode_any(data: &[u8]) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    match sel % 6 {
        0 => {
            if let Some((&kind, p)) = rest.split_first() {
                let _ = Record::decode(kind, p);
            }
        }
        1 => {
            let _ = Node::decode(rest);
        }
        2 => {
            let _ = chunk::decode_chunk(rest, ChunkId([0; 32]));
        }
        3 => {
            let _ = crate::checkpoint::decode(rest, StoreId([0; 16]));
        }
        4 => {
            for p in 0..rest.len().min(64) {
                let _ = frame::decode_frame_header(&rest[p..], SegmentId(0).next_slot(), p as u64);
            }
        }
        _ => {
            let _ = StoreMeta::decode(rest);
        }
    }
}

/// The `STORE` of the store that [`recover_image`] builds around its input.
pub fn fuzz_store_meta() -> StoreMeta {
    StoreMeta {
        store_id: StoreId([0x5A; 16]),
        device: DeviceId(1),
        chunking: ChunkParams::TINY,
        segment_size: 1 << 20,
        created: Timestamp { secs: 0, nanos: 0 },
    }
}

/// Recovery from an arbitrary image: a valid `STORE` and one segment whose bytes after a
/// valid header are `data`. Opening must fail cleanly or succeed; reading everything must
/// give bytes or an error.
pub fn recover_image(data: &[u8]) {
    let sim = SimStorage::new();
    sim.write_file(STORE_FILE, fuzz_store_meta().encode());
    let mut seg = frame::encode_segment_header(fuzz_store_meta().store_id, SegmentId(0).next_slot()).to_vec();
    seg.extend_from_slice(data);
    sim.write_file(&SegmentId(0).next_slot().file_name(), seg);
    let _ = inspect(&sim, true);
    let Ok(e) = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options { create: false, ..Options::tiny() })
    else {
        return;
    };
    let mut stack = vec![InodeId::ROOT];
    let mut seen = 0;
    while let Some(dir) = stack.pop() {
        let Ok(entries) = e.entries(dir) else {
            continue;
        };
        for (_, d) in entries.iter() {
            seen += 1;
            if seen > 10_000 {
                return;
            }
            match d.kind {
                FileKind::Directory => stack.push(d.child),
                FileKind::Regular => {
                    if let Ok(i) = e.getattr(d.child) {
                        let _ = e.read(i.ino, 0, i.size.min(1 << 20) as usize);
                    }
                }
                _ => {}
            }
        }
    }
    let _ = e.close();
}

/// A valid segment body (frames after the header) of a small store, as a seed input for
/// [`recover_image`].
pub fn seed_segment_body() -> Vec<u8> {
    let sim = SimStorage::new();
    sim.write_file(STORE_FILE, fuzz_store_meta().encode());
    if let Ok(e) = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()) {
        if let Ok(i) = e.create_file(InodeId::ROOT, b"f", 0o644)
            && let Ok(mut w) = e.open_file(i.ino)
        {
            let _ = w.write(0, b"hello fuzzer, hello fuzzer, hello fuzzer");
            let _ = w.commit(true);
        }
        let _ = e.mkdir(InodeId::ROOT, b"d", 0o755, 0, 0);
        let _ = e.close();
    }
    sim.read_file(&SegmentId(0).next_slot().file_name())
        .map(|s| s[frame::SEGMENT_HEADER_LEN..].to_vec())
        .unwrap_or_default()
}
