//! Replays the committed fuzz inputs (fuzz/regressions/<target>/*) through the same engine
//! functions the cargo-fuzz targets call, plus mutations of a valid seed image, so the
//! fuzzers' findings stay fixed in an ordinary `cargo test`.

use cowfs_engine::fuzzing::{decode_any, recover_image, seed_segment_body};

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
