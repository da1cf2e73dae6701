//! fsck finds injected corruption and names where it is (a bit flip in a frame header, in a
//! payload, in a checkpoint; a truncated segment; a deleted segment), and `repair` makes the
//! store open again, moving unreadable bytes aside and keeping everything else.

mod common;

use std::sync::Arc;

use common::*;
use cowfs_engine::SegmentId;
use cowfs_engine::fsck;
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::testing::frame::SEGMENT_HEADER_LEN;
use cowfs_engine::{Engine, Options};

/// A closed store over several segments; returns it and its state.
fn store() -> (SimStorage, State) {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(11);
    for i in 0..24u64 {
        let n = 500 + rng.below(4000) as usize;
        put_file(&e, format!("f{i}").as_bytes(), &rng.bytes(n), i % 4 == 0);
    }
    let want = state(&e);
    e.close().unwrap();
    (sim, want)
}

fn segments(sim: &SimStorage) -> Vec<String> {
    let mut v: Vec<String> =
        sim.list().unwrap().into_iter().filter(|n| SegmentId::parse_file_name(n).is_some()).collect();
    v.sort();
    v
}

/// Offsets of the frames of a segment file.
fn frames(data: &[u8], seg: &str) -> Vec<usize> {
    let id = SegmentId::parse_file_name(seg).unwrap();
    let mut out = Vec::new();
    let mut pos = SEGMENT_HEADER_LEN;
    while let Ok((_, _, _, len)) = cowfs_engine::testing::store::read_frame_at(data, id, pos) {
        out.push(pos);
        pos += len;
    }
    out
}

fn findings(sim: &SimStorage) -> (bool, String) {
    let r = fsck::check(sim, true).unwrap();
    (r.clean(), format!("{:?}", r.findings))
}

fn open(sim: &SimStorage) -> Result<Engine, cowfs_engine::Error> {
    Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options { create: false, ..Options::tiny() })
}

#[test]
fn each_kind_of_damage_is_found_and_named() {
    let (sim, _) = store();
    assert!(findings(&sim).0, "a fresh store is clean");
    let segs = segments(&sim);
    assert!(segs.len() >= 3, "{segs:?}");
    let first = &segs[0];
    let data = sim.read_file(first).unwrap();
    let at = frames(&data, first);

    // A bit flip in a frame header, then in a payload, of the first segment.
    for (what, offset) in [("header", at[2] + 5), ("payload", at[2] + 20)] {
        let mut bad = data.clone();
        bad[offset] ^= 0x10;
        sim.write_file(first, bad);
        let (clean, text) = findings(&sim);
        assert!(!clean && text.contains(first.as_str()), "{what}: {text}");
        sim.write_file(first, data.clone());
    }
    // A truncated segment (not the newest: its end is not a torn tail).
    sim.write_file(first, data[..data.len() / 2].to_vec());
    let (clean, text) = findings(&sim);
    assert!(!clean && text.contains(first.as_str()), "truncated: {text}");
    sim.write_file(first, data.clone());
    // A deleted segment.
    let second = sim.read_file(&segs[1]).unwrap();
    sim.remove(&segs[1]).unwrap();
    let (clean, text) = findings(&sim);
    assert!(!clean && text.contains(segs[1].as_str()), "deleted: {text}");
    sim.write_file(&segs[1], second);
    assert!(findings(&sim).0, "restored");
    // A bit flip in the checkpoint.
    let ckpt = sim.list().unwrap().into_iter().filter(|n| n.ends_with(".ckpt")).max().unwrap();
    let mut c = sim.read_file(&ckpt).unwrap();
    let n = c.len() / 2;
    c[n] ^= 4;
    sim.write_file(&ckpt, c);
    let (clean, text) = findings(&sim);
    assert!(!clean && text.contains(&ckpt), "checkpoint: {text}");
}

#[test]
fn repair_moves_a_damaged_transaction_aside_and_keeps_the_rest() {
    let (sim, want) = store();
    let segs = segments(&sim);
    let first = &segs[0];
    let data = sim.read_file(first).unwrap();
    let at = frames(&data, first);
    let mut bad = data.clone();
    let hit = at[at.len() / 2];
    bad[hit + 3] ^= 0x01; // a frame header in the middle of the first segment
    sim.write_file(first, bad.clone());
    assert!(!findings(&sim).0, "fsck finds it");
    let done = fsck::repair(&sim).unwrap();
    let text = format!("{done:?}");
    assert!(text.contains("moved aside") && text.contains("checkpoint rebuilt"), "{text}");
    // The bytes kept aside are the damaged segment's, from the start of the damaged
    // transaction (named in the file name), and include the damaged frame.
    let prefix = format!("lost-{first}-");
    let lost: Vec<String> = sim.list().unwrap().into_iter().filter(|n| n.starts_with(&prefix)).collect();
    assert_eq!(lost.len(), 1, "{lost:?}");
    let from: usize = lost[0][prefix.len()..].strip_suffix(".bad").unwrap().parse().unwrap();
    let kept = sim.read_file(&lost[0]).unwrap();
    assert!(from <= hit && hit < from + kept.len(), "{from} + {} misses the damage at {hit}", kept.len());
    assert_eq!(kept, bad[from..from + kept.len()], "the bytes moved aside are not the segment's");
    // The rewritten segment holds everything else, in order.
    let rewritten = sim.read_file(first).unwrap();
    assert_eq!(rewritten.len() + kept.len(), bad.len(), "repair dropped bytes it did not keep aside");
    let e = open(&sim).expect("opens after repair");
    // Files whose data sat in the lost transaction may be gone or unreadable; every other file
    // reads exactly as it was.
    let files: Vec<_> = want.iter().filter(|(k, _)| k.starts_with("/f")).collect();
    let intact = files
        .iter()
        .filter(|(k, (_, data, _))| {
            let Ok(i) = e.lookup(ROOT, &k.as_bytes()[1..]) else { return false };
            e.read(i.ino, 0, i.size as usize).is_ok_and(|d| d == *data)
        })
        .count();
    assert!(intact + 2 >= files.len(), "repair lost more than the damaged transaction: {intact} of {}", files.len());
    drop(e);
    // Repair is idempotent: a second one finds the log readable.
    let again = fsck::repair(&sim).unwrap();
    assert!(!format!("{again:?}").contains("moved aside"), "{again:?}");
}

#[test]
fn repair_rebuilds_a_bad_checkpoint_and_refuses_an_open_store() {
    let (sim, want) = store();
    let ckpts: Vec<String> = sim.list().unwrap().into_iter().filter(|n| n.ends_with(".ckpt")).collect();
    for c in &ckpts {
        let mut b = sim.read_file(c).unwrap();
        b[20] ^= 0xFF;
        sim.write_file(c, b);
    }
    let done = fsck::repair(&sim).unwrap();
    assert!(format!("{done:?}").contains("does not verify"), "{done:?}");
    assert!(findings(&sim).0, "{:?}", findings(&sim).1);
    let e = open(&sim).unwrap();
    assert_eq!(state(&e), want);
    assert!(matches!(fsck::repair(&sim), Err(cowfs_engine::Error::Locked)), "an open store is not repaired");
}
