//! Recovery: a torn tail is cut and reported; a bad record followed by valid ones is
//! corruption and is reported, never cut; a bad checkpoint falls back; checkpoint + replay
//! equals a full replay; open refuses what is not a store, a future format, a second opener.

mod common;

use std::sync::Arc;

use common::*;
use cowfs_engine::storage::{DirStorage, SimStorage, Storage};
use cowfs_engine::testing::CrashImage;
use cowfs_engine::testing::inspect_index;
use cowfs_engine::{CorruptKind, Engine, Error, Options};

fn names(sim: &SimStorage, prefix: &str) -> Vec<String> {
    sim.snapshot_files().keys().filter(|n| n.starts_with(prefix)).cloned().collect()
}

fn remove_checkpoints(sim: &SimStorage) {
    for n in names(sim, "ckpt-") {
        sim.remove(&n).unwrap();
    }
}

fn populated() -> (SimStorage, State) {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(5);
    for i in 0..20u32 {
        put_file(&e, format!("f{}", i % 7).as_bytes(), &rng.bytes(1500 + i as usize * 50), i % 3 == 0);
    }
    e.snapshot_create("snap", "x").unwrap();
    e.sync().unwrap();
    let s = state(&e);
    e.close().unwrap();
    (sim, s)
}

#[test]
fn a_torn_tail_is_cut_and_reported() {
    let (sim, want) = populated();
    let last = names(&sim, "seg-").pop().unwrap();
    let mut bytes = sim.read_file(&last).unwrap();
    let good_len = bytes.len() as u64;
    bytes.extend_from_slice(&[0x42; 23]); // a frame header that never completed
    sim.write_file(&last, bytes);
    let e = sim_engine(&sim);
    let torn = e.open_report().torn_tail.expect("torn tail reported");
    assert_eq!((torn.1, torn.2), (good_len, 23));
    assert_eq!(state(&e), want);
    // Cut, durably, before the engine appends anything: a power loss now keeps the cut.
    let cut = sim.crash_image(&CrashImage::PowerLoss);
    assert_eq!(cut.read_file(&last).unwrap().len() as u64, good_len, "the torn tail was not cut");
    drop(e);
    let again = sim_engine(&cut);
    assert_eq!(again.open_report().torn_tail, None, "reopened after the cut: nothing torn");
    assert_eq!(state(&again), want);
}

#[test]
fn a_bad_record_in_the_middle_is_corruption_not_a_torn_tail() {
    let (sim, _) = populated();
    remove_checkpoints(&sim);
    let last = names(&sim, "seg-").pop().unwrap();
    let mut bytes = sim.read_file(&last).unwrap();
    // Flip a payload byte of the first frame (just after the 64-byte header and 16-byte frame header).
    bytes[64 + 16 + 2] ^= 0x01;
    sim.write_file(&last, bytes.clone());
    let before = sim.snapshot_files();
    let err = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()).unwrap_err();
    match &err {
        Error::Corrupt { file, offset, kind } => {
            assert_eq!(file, &last);
            assert_eq!(*offset, 64);
            assert_eq!(*kind, CorruptKind::MidLog);
        }
        other => panic!("expected mid-log corruption, got {other}"),
    }
    assert_eq!(sim.snapshot_files(), before, "a failed open must not change the store");
}

#[test]
fn a_bad_checkpoint_falls_back_and_replay_fills_in() {
    let (sim, want) = populated();
    let ckpts = names(&sim, "ckpt-");
    assert!(!ckpts.is_empty());
    let newest = ckpts.last().unwrap().clone();
    let mut b = sim.read_file(&newest).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0xff;
    sim.write_file(&newest, b);
    let e = sim_engine(&sim);
    assert_eq!(e.open_report().bad_checkpoints.len(), 1);
    assert_eq!(state(&e), want);
}

#[test]
fn checkpoint_plus_replay_equals_full_replay() {
    for_each_seed(6, |seed| {
        let sim = SimStorage::new();
        let e = sim_engine(&sim);
        let mut rng = Rng::new(seed);
        for i in 0..60u64 {
            let name = format!("f{}", rng.below(9));
            match rng.below(6) {
                0 => {
                    let _ = e.unlink(ROOT, name.as_bytes(), false);
                }
                1 => {
                    let _ = e.rename(
                        ROOT,
                        name.as_bytes(),
                        ROOT,
                        format!("f{}", rng.below(9)).as_bytes(),
                        false,
                        false,
                        false,
                    );
                }
                2 if i % 10 == 0 => {
                    e.snapshot_create(&format!("s{i}"), "").unwrap();
                }
                _ => {
                    let n = rng.below(4000) as usize;
                    put_file(&e, name.as_bytes(), &rng.bytes(n), false);
                }
            }
        }
        // Inspect while the engine still runs (no final checkpoint): checkpoint + tail replay.
        // The last save may have crossed the checkpoint mark and left no tail (seed 100003):
        // one more small save then makes one.
        e.sync().unwrap();
        let (mut from_ckpt, mut report) = inspect_index(&sim, false).unwrap();
        for extra in 0..3 {
            if report.replayed_records > 0 {
                break;
            }
            put_file(&e, format!("tail{extra}").as_bytes(), b"tail", false);
            e.sync().unwrap();
            (from_ckpt, report) = inspect_index(&sim, false).unwrap();
        }
        let live = e.with_index(|ix| ix.clone());
        assert!(report.checkpoint.is_some(), "seed {seed}: expected a checkpoint to be used");
        assert!(report.replayed_records > 0, "seed {seed}: expected a replayed tail");
        let (full, _) = inspect_index(&sim, true).unwrap();
        assert!(from_ckpt == full, "seed {seed}: checkpoint+replay differs from full replay");
        assert!(live == full, "seed {seed}: running index differs from full replay");
        drop(e);
    });
}

#[test]
fn open_refuses_foreign_dirs_future_formats_and_second_openers() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(dir.path()).unwrap());
    let err = Engine::open(st, Options::default()).unwrap_err();
    assert!(matches!(err, Error::NotAStore { .. }), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(dir.path()).unwrap());
    let e = Engine::open(st.clone(), Options::default()).unwrap();
    let second = Engine::open(Arc::new(DirStorage::new(dir.path()).unwrap()), Options::default()).unwrap_err();
    assert!(matches!(second, Error::Locked), "{second}");
    e.close().unwrap();

    let store = dir.path().join("STORE");
    let mut b = std::fs::read(&store).unwrap();
    b[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&store, b).unwrap();
    let err = Engine::open(st, Options::default()).unwrap_err();
    assert!(matches!(err, Error::UnsupportedFormat { found: 99, supported: 5 }), "{err}");
}

#[test]
fn segments_roll_and_everything_survives_reopen() {
    let (sim, want) = populated();
    assert!(names(&sim, "seg-").len() > 3, "tiny segments should have rolled");
    let e = sim_engine(&sim);
    assert_eq!(state(&e), want);
    let s = e.stats().unwrap();
    assert!(s.segments > 3 && s.chunks > 10 && s.versions >= 7, "{s:?}");
}

/// Dropping the last handle closes the store at once: a file written in several buffers
/// (chunked by jobs on other threads) and committed, then the engine dropped, reopens at
/// once — no job still holds the store open (LOCK) behind the caller's back.
#[test]
fn dropping_the_engine_releases_the_store_at_once() {
    let sim = SimStorage::new();
    let data = Rng::new(3).bytes(64 << 10);
    for round in 0..300 {
        let e = sim_engine(&sim);
        let name = format!("f{}", round % 7);
        put_file(&e, name.as_bytes(), &data[..(16 << 10) + round * 100], false);
        drop(e);
    }
    let e = sim_engine(&sim);
    assert_eq!(e.entries(ROOT).unwrap().len(), 7);
}

/// Checkpoints do not pile up: the writer keeps the newest two (the older one a fallback
/// should the newest go bad), and after a compaction, whose victims the older one names, one.
#[test]
fn the_writer_keeps_two_checkpoints_and_compaction_one() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(8);
    for round in 0..6 {
        put_file(&e, format!("f{round}").as_bytes(), &rng.bytes(3000), false);
        e.checkpoint().unwrap();
        let n = names(&sim, "ckpt-").len();
        assert_eq!(n, if round == 0 { 1 } else { 2 }, "round {round}: {:?}", names(&sim, "ckpt-"));
    }
    e.unlink(ROOT, b"f0", false).unwrap();
    let rules = cowfs_engine::gc::Rules { keep_last: Some(1), ..Default::default() };
    let plan = e.gc_plan(&rules, cowfs_engine::Timestamp::now(), &|_| false).unwrap();
    e.submit(cowfs_engine::testing::Op::Prune { prunes: plan.prunes }, true).unwrap();
    let r = e.compact(cowfs_engine::compact::Policy::FULL, &mut |_, _| {}).unwrap();
    assert!(r.segments_compacted > 0, "{r:?}");
    let left = names(&sim, "ckpt-");
    assert_eq!(left.len(), 1, "{left:?}");
    // A reopened store numbers its next checkpoint after the newest: it replaces nothing.
    drop(e);
    let e = sim_engine(&sim);
    put_file(&e, b"after", b"reopened", false);
    e.checkpoint().unwrap();
    let now = names(&sim, "ckpt-");
    assert!(now.len() == 2 && now.iter().all(|n| *n > left[0]), "{left:?} -> {now:?}");
}

/// A damaged checkpoint (its `live` count garbage) does not stop a compaction: the segment
/// removal that reads checkpoints' lists skips it as naming nothing usable.
#[test]
fn a_damaged_checkpoint_does_not_stop_a_compaction() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(9);
    for i in 0..8u64 {
        put_file(&e, format!("f{}", i % 3).as_bytes(), &rng.bytes(4000), true);
    }
    e.checkpoint().unwrap();
    put_file(&e, b"g", &rng.bytes(4000), true);
    e.checkpoint().unwrap();
    // The newer of the two: the switch's checkpoint keeps it (and removes the older).
    let newer = names(&sim, "ckpt-")[1].clone();
    let mut b = sim.read_file(&newer).unwrap();
    // The live list's count: after the 44-byte header and six counters.
    b[92..96].copy_from_slice(&u32::MAX.to_le_bytes());
    sim.write_file(&newer, b);
    let rules = cowfs_engine::gc::Rules { keep_last: Some(1), ..Default::default() };
    let plan = e.gc_plan(&rules, cowfs_engine::Timestamp::now(), &|_| false).unwrap();
    e.submit(cowfs_engine::testing::Op::Prune { prunes: plan.prunes }, true).unwrap();
    let want = state(&e);
    let r = e.compact(cowfs_engine::compact::Policy::FULL, &mut |_, _| {}).unwrap();
    assert!(r.segments_compacted > 0, "{r:?}");
    assert_eq!(state(&e), want);
}

/// A segment whose header does not verify, in the middle of the log, is corruption: open
/// refuses, naming it, and changes nothing — it is never taken for the leftover of a
/// compaction and removed. So too a compaction output whose run is gone (an ordinary
/// segment now).
#[test]
fn a_damaged_segment_header_is_corruption_and_the_segment_is_kept() {
    let (plain, _) = populated();
    let (compacted, _) = compacted();
    for (sim, pick_output) in [(plain, false), (compacted, true)] {
        let segs = names(&sim, "seg-");
        assert!(segs.len() > 2, "{segs:?}");
        let victim = match pick_output {
            false => segs[1].clone(),
            true => segs[..segs.len() - 1].iter().find(|n| !n.ends_with("0000.log")).expect("an output").clone(),
        };
        let mut b = sim.read_file(&victim).unwrap();
        b[20] ^= 0x01; // inside the store id
        sim.write_file(&victim, b);
        let before = sim.snapshot_files();
        let err = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { ref file, .. } if *file == victim), "{victim}: {err}");
        assert_eq!(sim.snapshot_files(), before, "{victim}: a failed open changed the store");
    }
}

/// A closed store that was pruned and fully compacted (its older segments are compaction
/// outputs whose runs are gone), and its state.
fn compacted() -> (SimStorage, State) {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(10);
    for i in 0..30u64 {
        put_file(&e, format!("f{}", i % 4).as_bytes(), &rng.bytes(2000 + 100 * i as usize), false);
    }
    let rules = cowfs_engine::gc::Rules { keep_last: Some(1), ..Default::default() };
    let plan = e.gc_plan(&rules, cowfs_engine::Timestamp::now(), &|_| false).unwrap();
    e.submit(cowfs_engine::testing::Op::Prune { prunes: plan.prunes }, true).unwrap();
    let r = e.compact(cowfs_engine::compact::Policy::FULL, &mut |_, _| {}).unwrap();
    assert!(r.segments_written > 0, "{r:?}");
    let want = state(&e);
    e.close().unwrap();
    let outputs = names(&sim, "seg-").iter().filter(|n| !n.ends_with("0000.log")).count();
    assert!(outputs > 0, "no compaction output: {:?}", names(&sim, "seg-"));
    (sim, want)
}

/// A compacted store recovers from a full replay when every checkpoint is lost: an output
/// is kept as an ordinary segment, not taken for an unfinished one (with no checkpoint to
/// name it) and removed with the data it holds.
#[test]
fn a_compacted_store_recovers_without_any_checkpoint() {
    let (sim, want) = compacted();
    remove_checkpoints(&sim);
    let e = sim_engine(&sim);
    assert_eq!(e.open_report().superseded_segments, vec![]);
    assert_eq!(state(&e), want);
}

/// An older segment cut to a few bytes (its header gone, no frame left) is corruption, with
/// or without a checkpoint: only the newest segment, whose roll may not have completed, is
/// removed when its header never made it.
#[test]
fn an_older_segment_cut_short_is_corruption_not_an_unfinished_roll() {
    for keep_checkpoints in [true, false] {
        let (sim, _) = populated();
        if !keep_checkpoints {
            remove_checkpoints(&sim);
        }
        let segs = names(&sim, "seg-");
        let victim = segs[segs.len() - 2].clone();
        sim.write_file(&victim, sim.read_file(&victim).unwrap()[..10].to_vec());
        let before = sim.snapshot_files();
        let err = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { ref file, .. } if *file == victim), "{victim}: {err}");
        assert_eq!(sim.snapshot_files(), before, "{victim}: a failed open changed the store");
    }
}

/// A record whose frame verifies but which does not apply (here: an entry naming an inode
/// that does not exist) is corruption: open refuses; only `fsck --repair` skips it (and says so).
#[test]
fn a_record_that_does_not_apply_is_corruption_and_only_repair_skips_it() {
    use cowfs_engine::testing::record::{Record, kind};
    let (sim, want) = populated();
    remove_checkpoints(&sim);
    let last = names(&sim, "seg-").pop().unwrap();
    let seg = cowfs_engine::SegmentId::parse_file_name(&last).unwrap();
    let mut bytes = sim.read_file(&last).unwrap();
    let bad = Record::DirentSet {
        parent: cowfs_engine::InodeId::ROOT,
        name: b"ghost".to_vec(),
        child: cowfs_engine::InodeId(999_999),
        kind: cowfs_engine::FileKind::Regular,
    };
    let at = bytes.len() as u64;
    cowfs_engine::testing::frame::encode_frame(&mut bytes, seg, at, kind::DIRENT_SET, true, &bad.encode_meta());
    sim.write_file(&last, bytes);
    let err = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()).unwrap_err();
    assert!(matches!(err, Error::Corrupt { ref file, offset, .. } if *file == last && offset == at), "{err}");
    let done = cowfs_engine::fsck::repair(&sim).unwrap();
    assert!(format!("{done:?}").contains("record skipped"), "{done:?}");
    assert_eq!(state(&sim_engine(&sim)), want);
}

/// Zeros past the end of the log, less than a block, are the writer's block padding left by a
/// process that died before closing: cut without a torn-tail report. A whole block of zeros
/// (which padding never is) or anything else is a torn tail, reported.
#[test]
fn block_padding_is_cut_silently_and_anything_else_is_a_torn_tail() {
    for (extra, torn) in
        [(vec![0u8; 100], false), (vec![0u8; 4095], false), (vec![0u8; 4096], true), (vec![7u8; 100], true)]
    {
        let (sim, want) = populated();
        let last = names(&sim, "seg-").pop().unwrap();
        let mut bytes = sim.read_file(&last).unwrap();
        let end = bytes.len() as u64;
        bytes.extend_from_slice(&extra);
        sim.write_file(&last, bytes);
        let e = sim_engine(&sim);
        let what = format!("{} bytes of {}", extra.len(), extra[0]);
        assert_eq!(e.open_report().torn_tail.is_some(), torn, "{what}: {:?}", e.open_report());
        assert_eq!(state(&e), want, "{what}");
        let cut = sim.crash_image(&CrashImage::PowerLoss);
        assert_eq!(cut.read_file(&last).unwrap().len() as u64, end, "{what}: not cut durably at the end of the log");
    }
}

/// After the end of the log (here an unfinished transaction: a frame that verifies but does
/// not end its transaction), damage followed by a SyncMark that names an offset past it is
/// corruption in synced bytes, reported at the exact offset of the damage — not a torn tail.
#[test]
fn damage_after_an_unfinished_transaction_before_a_sync_mark_is_corruption_at_its_offset() {
    use cowfs_engine::testing::record::{Record, kind};
    let (sim, _) = populated();
    let last = names(&sim, "seg-").pop().unwrap();
    let seg = cowfs_engine::SegmentId::parse_file_name(&last).unwrap();
    let mut bytes = sim.read_file(&last).unwrap();
    let end = bytes.len() as u64;
    let open_txn = Record::InodeFree(cowfs_engine::InodeId(12_345)).encode_meta();
    cowfs_engine::testing::frame::encode_frame(&mut bytes, seg, end, kind::INODE_FREE, false, &open_txn);
    let damage = bytes.len() as u64;
    bytes.extend_from_slice(&[0xEE; 40]);
    let mark_at = bytes.len() as u64;
    let mark = Record::SyncMark(mark_at).encode_meta();
    cowfs_engine::testing::frame::encode_frame(&mut bytes, seg, mark_at, kind::SYNC_MARK, true, &mark);
    sim.write_file(&last, bytes);
    let before = sim.snapshot_files();
    let err = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()).unwrap_err();
    match &err {
        Error::Corrupt { file, offset, kind } => {
            assert_eq!((file.as_str(), *offset, kind), (last.as_str(), damage, &CorruptKind::MidLog), "{err}");
        }
        other => panic!("expected corruption at {damage}, got {other}"),
    }
    assert_eq!(sim.snapshot_files(), before, "a failed open changed the store");
}

/// No sealed segment is left empty: a transaction larger than a segment (an inode with 20
/// KiB of xattrs in 16 KiB segments) that comes when the writer's segment is still empty goes
/// into it, without sealing it empty and starting another.
#[test]
fn an_oversized_transaction_seals_no_empty_segment() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = put_file(&e, b"f", b"small", true);
    // A full compaction leaves the writer in a fresh segment (it seals the one it had).
    e.compact(cowfs_engine::compact::Policy::FULL, &mut |_, _| {}).unwrap();
    e.set_xattr(ino, b"user.big", &Rng::new(4).bytes(20 << 10), cowfs_engine::XattrMode::Any).unwrap();
    put_file(&e, b"g", b"after", true);
    let segs = names(&sim, "seg-");
    for s in &segs[..segs.len() - 1] {
        let len = sim.read_file(s).unwrap().len();
        assert!(len > 64, "{s} is sealed empty ({len} bytes): {segs:?}");
    }
}

/// The reserve (space held back for cleaning up a full device) grows with the checkpoints:
/// after a checkpoint it holds the reserve plus that checkpoint's size.
#[test]
fn the_reserve_grows_to_cover_each_checkpoint() {
    let sim = SimStorage::new();
    let reserve = 32u64 << 10;
    let opts = Options { reserve_bytes: reserve, segment_size: 64 << 10, ..Options::tiny() };
    let e = Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, opts).unwrap();
    let mut rng = Rng::new(6);
    for round in 0..3 {
        for i in 0..40 {
            put_file(&e, format!("r{round}-{i}").as_bytes(), &rng.bytes(300), false);
        }
        e.checkpoint().unwrap();
        let newest = names(&sim, "ckpt-").pop().unwrap();
        let ckpt = sim.read_file(&newest).unwrap().len() as u64;
        let held = sim.read_file("RESERVE").map_or(0, |b| b.len() as u64);
        assert!(held >= reserve + ckpt, "round {round}: RESERVE {held} < {reserve} + checkpoint {ckpt}");
    }
}
