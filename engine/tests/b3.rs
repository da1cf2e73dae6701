//! Bounded exhaustive crash workloads, after B3 ("finding crash-consistency bugs with bounded
//! black-box crash testing"): every sequence of one and two operations from a fixed set, each
//! followed by one of {fsync the file, fdatasync, fsync the directory, nothing}, plus 2,000
//! random three-operation sequences. After every sync a power loss is simulated: the recovered
//! tree must be the tree after some operation at or after the last sync (nothing synced lost,
//! nothing half-applied); at the end, a process kill (taken while the engine still runs)
//! must give the final tree.

mod common;

use common::*;
use cowfs_engine::storage::SimStorage;
use cowfs_engine::testing::CrashImage;
use cowfs_engine::{Engine, Error, FileKind};

const OPS: [&str; 13] = [
    "create",
    "append4k",
    "overwrite1",
    "sparse1m",
    "truncate-down",
    "truncate-up",
    "rename",
    "rename-over",
    "link",
    "unlink",
    "mkdir",
    "rmdir",
    "commit",
];
const SYNCS: [&str; 4] = ["fsync", "fdatasync", "fsyncdir", "none"];

fn file_op(e: &Engine, f: impl FnOnce(&mut cowfs_engine::FileWriter) -> Result<(), Error>) -> Result<(), Error> {
    let i = e.lookup(ROOT, b"a")?;
    if i.kind != FileKind::Regular {
        return Ok(());
    }
    let mut w = e.open_file(i.ino)?;
    f(&mut w)?;
    w.commit(false).map(|_| ())
}

fn run(e: &Engine, op: &str) {
    let r = match op {
        "create" => e.create_file(ROOT, b"a", 0o644).map(|_| ()),
        "append4k" => file_op(e, |w| {
            let at = w.size();
            w.write(at, &[7u8; 4096])
        }),
        "overwrite1" => file_op(e, |w| w.write(0, b"X")),
        "sparse1m" => file_op(e, |w| w.write(1 << 20, b"far")),
        "truncate-down" => file_op(e, |w| {
            let half = w.size() / 2;
            w.truncate(half)
        }),
        "truncate-up" => file_op(e, |w| {
            let up = w.size() + 8192;
            w.truncate(up)
        }),
        "rename" => e.rename(ROOT, b"a", ROOT, b"r", false, false, false),
        "rename-over" => e
            .create_file(ROOT, b"b", 0o644)
            .map(|_| ())
            .or(Ok(()))
            .and_then(|()| e.rename(ROOT, b"a", ROOT, b"b", false, false, false)),
        "link" => e.lookup(ROOT, b"a").and_then(|i| e.link(i.ino, ROOT, b"c")).map(|_| ()),
        "unlink" => e.unlink(ROOT, b"a", false),
        "mkdir" => e.mkdir(ROOT, b"d", 0o755, 0, 0).map(|_| ()),
        "rmdir" => e.rmdir(ROOT, b"d", false),
        "commit" => file_op(e, |w| w.write(2, b"v")),
        other => panic!("unknown op {other}"),
    };
    match r {
        Ok(()) | Err(Error::NotFound(_) | Error::Exists(_) | Error::IsDir(_) | Error::NotDir(_)) => {}
        Err(Error::NotEmpty(_)) => {}
        Err(err) => panic!("{op}: {err}"),
    }
}

fn sync(e: &Engine, how: &str) -> bool {
    match how {
        // At the engine level a file's fsync and fdatasync, and a directory's, all make the
        // whole log durable (one log); the FUSE layer maps its calls onto this.
        "fsync" | "fdatasync" | "fsyncdir" => {
            e.sync().expect("sync");
            true
        }
        _ => false,
    }
}

/// Runs one sequence; returns the number of power-loss images checked.
fn check(seq: &[(&str, &str)]) -> u64 {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut states = vec![state(&e)];
    let mut images = 0;
    for (k, (op, how)) in seq.iter().enumerate() {
        run(&e, op);
        states.push(state(&e));
        if sync(&e, how) {
            let durable = k + 1;
            let img = sim.crash_image(&CrashImage::PowerLoss);
            let got = state(&sim_engine(&img));
            assert!(
                (durable..states.len()).any(|p| states[p] == got),
                "{seq:?}: power loss after the sync of step {k} lost or half-applied something"
            );
            images += 1;
        }
    }
    // The process killed at the end, before a shutdown could sync or checkpoint anything.
    let killed = sim.crash_image(&CrashImage::ProcessKill);
    drop(e);
    assert_eq!(state(&sim_engine(&killed)), *states.last().unwrap(), "{seq:?}: process kill");
    images + 1
}

#[test]
fn every_one_and_two_step_sequence_and_random_three_step_ones() {
    let steps: Vec<(&str, &str)> = OPS.iter().flat_map(|o| SYNCS.iter().map(move |s| (*o, *s))).collect();
    let mut sequences = 0;
    let mut images = 0;
    for a in &steps {
        images += check(&[*a]);
        sequences += 1;
        for b in &steps {
            // Start from a file that exists, as most interesting states need one.
            images += check(&[("create", "none"), *a, *b]);
            sequences += 1;
        }
    }
    let n = if std::env::var("COWFS_SOAK").is_ok() { 50_000 } else { 2_000 };
    let mut rng = Rng::new(std::env::var("COWFS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(17));
    for _ in 0..n {
        let seq: Vec<(&str, &str)> = (0..3).map(|_| steps[rng.below(steps.len() as u64) as usize]).collect();
        images += check(&seq);
        sequences += 1;
    }
    println!("{sequences} sequences, {images} crash images checked");
}
