//! Bodies of the cargo-fuzz targets in `fuzz/`, kept here so that committed regression
//! inputs replay as ordinary `cargo test` cases (engine/tests/fuzz_regressions.rs). Each
//! function must return normally on every input: a panic is a bug.

use std::sync::Arc;

use crate::engine::{Engine, inspect};
use crate::format::chunk::{self, ChunkParams};
use crate::format::frame::{self, FORMAT_VERSION};
use crate::format::record::{FileKind, Record, Timestamp};
use crate::format::tree::Node;
use crate::ids::{ChunkId, DeviceId, InodeId, SegmentId, StoreId};
use crate::log::meta::{STORE_FILE, StoreMeta};
use crate::options::Options;
use crate::storage::{SimStorage, Storage};

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
            let _ = crate::log::checkpoint::decode(rest, StoreId([0; 16]));
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
        version: FORMAT_VERSION,
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

/// What a user can see: every name in the root with its type and bytes.
fn observable(e: &Engine) -> Vec<(Vec<u8>, FileKind, Vec<u8>)> {
    let Ok(entries) = e.entries(InodeId::ROOT) else { return Vec::new() };
    entries
        .iter()
        .map(|(name, d)| {
            let data = match e.getattr(d.child) {
                Ok(i) if i.kind == FileKind::Regular => e.read(i.ino, 0, i.size as usize).unwrap_or_default(),
                _ => Vec::new(),
            };
            (name.clone(), d.kind, data)
        })
        .collect()
}

/// Runs one decoded operation; `Ok(true)` when everything before it is durable after it.
fn crash_op(e: &Engine, op: u8, name: &[u8], arg: u8) -> crate::error::Result<bool> {
    use crate::error::Error;
    let root = InodeId::ROOT;
    let domain = |r: crate::error::Result<()>| match r {
        Ok(()) => Ok(false),
        Err(Error::NotFound(_) | Error::Exists(_) | Error::IsDir(_) | Error::NotDir(_) | Error::NotEmpty(_)) => {
            Ok(false)
        }
        Err(e) => Err(e),
    };
    match op % 8 {
        0 => domain(e.create_file(root, name, 0o644).map(|_| ())),
        1 | 2 => {
            let Ok(i) = e.lookup(root, name) else { return Ok(false) };
            if i.kind != FileKind::Regular {
                return Ok(false);
            }
            let mut w = e.open_file(i.ino)?;
            let len = 1 + arg as usize * 37;
            w.write(u64::from(arg) * 13, &vec![arg ^ 0x5A; len])?;
            let durable = op % 8 == 2;
            w.commit(durable).map(|_| durable)
        }
        3 => {
            let Ok(i) = e.lookup(root, name) else { return Ok(false) };
            if i.kind != FileKind::Regular {
                return Ok(false);
            }
            let mut w = e.open_file(i.ino)?;
            w.truncate(u64::from(arg))?;
            w.commit(false).map(|_| false)
        }
        4 => domain(e.rename(root, name, root, &[b'a' + arg % 3], false, false, false)),
        5 => domain(e.unlink(root, name, false)),
        6 => e.sync().map(|_| true),
        _ => e.compact(crate::compact::Policy::FULL, &mut |_, _| {}).map(|_| true),
    }
}

/// A structured crash workload from arbitrary bytes: up to 16 operations (create, write,
/// durable write, truncate, rename, unlink, sync, compaction) on three names, a crash at one
/// mutating storage call, and one crash image. Recovery must succeed, and the state must be
/// the reference state after some prefix of the operations between the last durable
/// acknowledgement and the last one issued. Panics (the bug the fuzzer looks for) otherwise.
/// Returns whether the input made it to that check (inputs too short, or that the engine
/// refuses, return false).
pub fn crash_workload(data: &[u8]) -> bool {
    use crate::storage::sim::{CrashImage, Landed, TornFill};
    let Some((&[crash, image], rest)) = data.split_first_chunk::<2>() else { return false };
    let ops: Vec<(u8, Vec<u8>, u8)> =
        rest.chunks_exact(2).take(16).map(|c| (c[0], vec![b'a' + c[0] / 8 % 3], c[1])).collect();
    let open = |sim: &SimStorage| Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny());
    let sim = SimStorage::new();
    let Ok(e) = open(&sim) else { return false };
    let mut states = vec![observable(&e)];
    for (op, name, arg) in &ops {
        if crash_op(&e, *op, name, *arg).is_err() {
            return false; // an input the engine refuses (not a crash): nothing to check
        }
        states.push(observable(&e));
    }
    drop(e);
    let total = sim.mutations();
    if total == 0 {
        return false;
    }
    let sim = SimStorage::new();
    sim.crash_in(u64::from(crash) % total);
    let (mut acked, mut durable) = (0, 0);
    if let Ok(e) = open(&sim) {
        for (k, (op, name, arg)) in ops.iter().enumerate() {
            match crash_op(&e, *op, name, *arg) {
                Ok(synced) => {
                    acked = k + 1;
                    if synced {
                        durable = acked;
                    }
                }
                Err(_) => break,
            }
        }
    }
    let (writes, dir) = sim.pending_changes();
    let pending = (writes + dir).max(1);
    let image = match image % 6 {
        0 => CrashImage::ProcessKill,
        1 => CrashImage::PowerLoss,
        2 => CrashImage::PowerLossPartial(Landed::subset(pending, |k| k != image as usize / 6 % pending)),
        3 => CrashImage::PowerLossPartial(Landed::prefix(image as usize / 6 % pending)),
        4 => CrashImage::Torn { cut: 1 + image as usize / 6 * 97, fill: TornFill::Random },
        _ => CrashImage::Torn { cut: 1 + image as usize / 6 * 97, fill: TornFill::Zeros },
    };
    let img = sim.crash_image(&image);
    let e = open(&img).unwrap_or_else(|err| panic!("recovery failed after a crash ({image:?}): {err}"));
    let got = observable(&e);
    let low = if image.is_power_loss() { durable } else { acked };
    let high = (acked + 1).min(ops.len());
    assert!(
        (low..=high).any(|p| states[p] == got),
        "after a crash ({image:?}) the state is not that after any operation in {low}..={high}"
    );
    true
}
