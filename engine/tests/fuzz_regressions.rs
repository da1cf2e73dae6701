//! Replays the committed fuzz inputs (fuzz/regressions/<target>/*) through the same engine
//! functions the cargo-fuzz targets call, plus mutations of a valid seed image, so the
//! fuzzers' findings stay fixed in an ordinary `cargo test`.

mod common;

use cowfs_engine::testing::fuzzing::{crash_workload, decode_any, recover_image, seed_segment_body};

fn inputs(target: &str) -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/regressions").join(target);
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            out.push(std::fs::read(e.path()).expect("read regression input"));
        }
    }
    out
}

#[test]
fn committed_inputs_replay() {
    for i in inputs("decode_any") {
        decode_any(&i);
    }
    for i in inputs("recover_image") {
        recover_image(&i);
    }
    for i in inputs("crash_workload") {
        crash_workload(&i);
    }
}

/// The crash-workload target's body on pseudo-random inputs (a few hundred; soak: many more).
#[test]
fn random_crash_workloads_recover_to_a_prefix() {
    let n = if std::env::var("COWFS_SOAK").is_ok() { 20_000 } else { 300 };
    let mut rng = common::Rng::new(std::env::var("COWFS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(5));
    let mut checked = 0;
    for k in 0..n {
        let input = rng.bytes(2 + (k % 31) as usize);
        let r = std::panic::catch_unwind(|| crash_workload(&input));
        assert!(r.is_ok(), "crash workload input {input:?} failed");
        checked += r.unwrap_or(false) as u32;
    }
    println!("{checked} of {n} random crash workloads reached the state check");
    assert!(checked * 2 >= n, "only {checked} of {n} inputs were checked");
}

#[test]
fn every_truncation_and_bit_flip_of_a_valid_image_recovers_or_fails_cleanly() {
    let seed = seed_segment_body();
    assert!(seed.len() > 100, "seed image too small: {}", seed.len());
    recover_image(&seed);
    for cut in (0..seed.len()).step_by(7) {
        recover_image(&seed[..cut]);
    }
    for i in (0..seed.len()).step_by(3) {
        let mut m = seed.clone();
        m[i] ^= 1 << (i % 8);
        recover_image(&m);
    }
}
