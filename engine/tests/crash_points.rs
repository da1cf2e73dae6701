//! Crash-point enumeration. A seeded workload runs once on the simulator as the reference,
//! recording the observable state after every operation. Then, for every mutating storage
//! call k (store creation included), the workload runs again with a crash at call k, and
//! every image that crash can leave is recovered: process kill, power loss, and a torn final
//! write (cut at 1, 512, 4096 and len-1 bytes, the rest old bytes or zeros). Each recovered
//! state must equal the reference after some prefix of the operations that lies between the
//! last one acknowledged as durable and the last one issued (for a process kill: at least
//! every acknowledged one); reopening must give the same state again; and new durable writes
//! must work and survive a power loss.

mod common;

use std::sync::Arc;

use common::*;
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::testing::{CrashImage, TornFill};
use cowfs_engine::{Engine, Error, InodeId, Options};

#[derive(Debug, Clone)]
enum WOp {
    Create(&'static str),
    Mkdir(&'static str),
    Write {
        name: &'static str,
        offset: u64,
        data: Vec<u8>,
        truncate: Option<u64>,
    },
    Rename(&'static str, &'static str),
    Unlink(&'static str),
    Snapshot(String),
    Checkpoint,
    Sync,
    /// Prune every old version (keep the current ones), durably.
    Gc,
    /// A full compaction.
    Compact,
}

const NAMES: [&str; 4] = ["a", "b", "c", "d"];

fn workload(seed: u64, len: usize) -> Vec<(WOp, bool)> {
    let mut rng = Rng::new(seed);
    (0..len)
        .map(|i| {
            let name = NAMES[rng.below(4) as usize];
            let op = match rng.below(14) {
                0 | 1 => WOp::Create(name),
                2 => WOp::Mkdir(name),
                3..=6 => {
                    let n = [1usize, 100, 700, 3000][rng.below(4) as usize];
                    let data = if rng.below(2) == 0 { rng.bytes(n) } else { rng.text(n) };
                    let truncate = (rng.below(4) == 0).then(|| rng.below(2000));
                    WOp::Write { name, offset: rng.below(4000), data, truncate }
                }
                7 => WOp::Rename(name, NAMES[rng.below(4) as usize]),
                8 => WOp::Unlink(name),
                9 => WOp::Snapshot(format!("s{i}")),
                10 => WOp::Checkpoint,
                11 => WOp::Gc,
                12 => WOp::Compact,
                _ => WOp::Sync,
            };
            (op, rng.below(3) == 0)
        })
        .collect()
}

/// Runs one operation; returns whether it made everything before it durable. Domain
/// errors (ENOENT, EEXIST, ...) are outcomes, not failures; storage errors are returned.
fn run_op(e: &Engine, op: &WOp, durable: bool) -> Result<bool, Error> {
    let domain = |r: Result<(), Error>, synced: bool| match r {
        Ok(()) => Ok(synced),
        Err(Error::NotFound(_) | Error::Exists(_) | Error::IsDir(_) | Error::NotDir(_) | Error::NotEmpty(_)) => {
            Ok(false)
        }
        Err(other) => Err(other),
    };
    let root = InodeId::ROOT;
    match op {
        WOp::Create(n) => domain(e.create_file(root, n.as_bytes(), 0o644).map(|_| ()), false),
        WOp::Mkdir(n) => domain(e.mkdir(root, n.as_bytes(), 0o755, 0, 0).map(|_| ()), false),
        WOp::Write { name, offset, data, truncate } => {
            let ino = match e.lookup(root, name.as_bytes()) {
                Ok(i) if i.kind == cowfs_engine::FileKind::Regular => i.ino,
                Ok(_) | Err(Error::NotFound(_)) => return Ok(false),
                Err(e) => return Err(e),
            };
            let mut w = e.open_file(ino)?;
            if let Some(t) = truncate {
                w.truncate(*t)?;
            }
            w.write(*offset, data)?;
            w.commit(durable).map(|_| durable)
        }
        WOp::Rename(a, b) => domain(e.rename(root, a.as_bytes(), root, b.as_bytes(), false, false, false), false),
        WOp::Unlink(n) => domain(e.unlink(root, n.as_bytes(), false), false),
        WOp::Snapshot(n) => domain(e.snapshot_create(n, "").map(|_| ()), true),
        WOp::Checkpoint => e.checkpoint().map(|_| true),
        WOp::Sync => e.sync().map(|_| true),
        WOp::Gc => {
            let rules = cowfs_engine::gc::Rules { keep_last: Some(1), ..Default::default() };
            let plan = e.gc_plan(&rules, cowfs_engine::Timestamp::now(), &|_| false)?;
            e.submit(cowfs_engine::testing::Op::Prune { prunes: plan.prunes }, true).map(|_| true)
        }
        // A full compaction seals the log (a synced roll) and checkpoints: all before is durable.
        WOp::Compact => e.compact(cowfs_engine::compact::Policy::FULL, &mut |_, _| {}).map(|_| true),
    }
}

fn open(sim: &SimStorage) -> Result<Engine, Error> {
    Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny())
}

#[derive(Debug, Default)]
struct Counts {
    crash_points: u64,
    images: u64,
    recoveries: Recoveries,
}

/// Power-loss images per crash point: every subset of the pending changes when there are at
/// most this many (soak: more), else every prefix, every all-but-one and a sample.
const EXHAUSTIVE_UP_TO: usize = 8;
const SOAK_EXHAUSTIVE_UP_TO: usize = 10;

fn check_seed(seed: u64, len: usize, soak: bool, counts: &mut Counts) {
    let ops = workload(seed, len);
    // Reference run.
    let sim = SimStorage::new();
    let e = open(&sim).expect("open");
    let mut states = vec![state(&e)];
    for (op, d) in &ops {
        run_op(&e, op, *d).expect("reference run");
        states.push(state(&e));
    }
    drop(e);
    let total = sim.mutations();
    assert!(sim.block_writes() > 0, "seed {seed}: the workload makes no block write to crash in");

    for k in 0..total {
        let sim = SimStorage::new();
        sim.crash_in(k);
        // Ops fully acknowledged, and the prefix known durable.
        let mut acked = 0usize;
        let mut durable_upto = 0usize;
        if let Ok(e) = open(&sim) {
            for (i, (op, d)) in ops.iter().enumerate() {
                match run_op(&e, op, *d) {
                    Err(_) => break,
                    Ok(synced) => {
                        acked = i + 1;
                        if synced {
                            durable_upto = acked;
                        }
                    }
                }
            }
            drop(e);
        }
        // The run is deterministic (one operation at a time): it makes the same calls as the
        // reference, so every one of them is a crash point.
        assert!(sim.has_crashed(), "seed {seed}: no crash at call {k} of {total}");
        counts.crash_points += 1;
        let mut images = vec![CrashImage::ProcessKill];
        if let Some(n) = sim.torn_write_len() {
            for cut in [1, 511, 512, 4095, 4096, n.saturating_sub(1)] {
                if cut > 0 && cut < n {
                    for fill in [TornFill::Old, TornFill::Zeros, TornFill::Random] {
                        images.push(CrashImage::Torn { cut, fill });
                    }
                }
            }
        }
        let limit = if soak { SOAK_EXHAUSTIVE_UP_TO } else { EXHAUSTIVE_UP_TO };
        images.extend(power_loss_images(&sim, limit, seed << 32 | k, &mut counts.recoveries));
        for (n, image) in images.iter().enumerate() {
            counts.images += 1;
            let img = sim.crash_image(image);
            let ctx = format!("seed {seed}, crash at call {k}, image {image:?}, acked {acked}, durable {durable_upto}");
            let got =
                recover_image(&img, &open, soak || (k + n as u64).is_multiple_of(8), &ctx, &mut counts.recoveries);
            let low = if image.is_power_loss() { durable_upto } else { acked };
            let high = (acked + 1).min(ops.len());
            if !(low..=high).any(|p| states[p] == got) {
                let near = (0..states.len()).find(|p| states[*p] == got);
                panic!(
                    "{ctx}: recovered state is not the state after any op in {low}..={high} (matches {near:?})\n{got:#?}"
                )
            }
        }
    }
}

#[test]
fn every_crash_point_recovers_to_a_prefix() {
    let soak = std::env::var("COWFS_SOAK").is_ok();
    let total = std::sync::Mutex::new(Counts::default());
    for_each_seed(if soak { 200 } else { 12 }, |seed| {
        let mut t = total.lock().unwrap();
        check_seed(seed, if soak { 80 } else { 40 }, soak, &mut t);
    });
    let t = total.into_inner().unwrap();
    println!("crash-point enumeration: {t:?}");
    assert!(t.crash_points > 0 && t.recoveries.recovery_crashes > 0, "{t:?}");
}
