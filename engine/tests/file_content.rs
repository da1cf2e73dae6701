//! File content through the engine: writes, sparse files, truncation, hole punching, edits
//! that store only what they touch, dedup, and versions per save.

mod common;

use std::sync::Arc;

use common::*;
use cowfs_engine::storage::{DirStorage, SimStorage, Storage};
use cowfs_engine::testing::CrashImage;
use cowfs_engine::{Engine, Options};

#[test]
fn write_read_and_reopen() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(7);
    let data = rng.bytes(100_000);
    let ino = put_file(&e, b"f", &data, true);
    assert_eq!(e.read(ino, 0, data.len()).unwrap(), data);
    assert_eq!(e.read(ino, 5000, 10).unwrap(), &data[5000..5010]);
    drop(e);
    let e = sim_engine(&sim);
    assert_eq!(e.read(ino, 0, 200_000).unwrap(), data);
}

/// A read into a used buffer zeroes the holes it covers: no byte of an earlier read shows
/// through.
#[test]
fn reads_into_a_used_buffer_zero_the_holes() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = e.create_file(ROOT, b"holes", 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    w.write(0, &[7u8; 5000]).unwrap();
    w.write(20_000, &[9u8; 3000]).unwrap();
    w.truncate(40_000).unwrap();
    w.commit(true).unwrap();
    let mut want = vec![0u8; 40_000];
    want[..5000].fill(7);
    want[20_000..23_000].fill(9);
    let mut buf = vec![0xaa; 64 << 10];
    e.read_into(ino, 0, 40_000, &mut buf).unwrap();
    assert_eq!(buf, want);
    for (at, len) in [(4000, 20_000), (6000, 1000), (22_000, 30_000)] {
        buf.fill(0xaa);
        e.read_into(ino, at, len, &mut buf).unwrap();
        assert_eq!(buf, want[at as usize..(at as usize + len).min(40_000)], "{len} bytes at {at}");
    }
}

#[test]
fn sparse_files_store_nothing_for_holes() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = e.create_file(ROOT, b"sparse", 0o644).unwrap().ino;
    let before = e.stats().unwrap();
    let mut w = e.open_file(ino).unwrap();
    w.truncate(1 << 30).unwrap();
    w.write(512 << 20, b"middle").unwrap();
    w.commit(true).unwrap();
    let after = e.stats().unwrap();
    assert!(
        after.segment_bytes - before.segment_bytes < 4096,
        "hole cost {} bytes",
        after.segment_bytes - before.segment_bytes
    );
    assert_eq!(e.getattr(ino).unwrap().size, 1 << 30);
    assert_eq!(e.read(ino, (512 << 20) - 2, 10).unwrap(), b"\0\0middle\0\0");
    assert_eq!(e.read(ino, 7 << 20, 4).unwrap(), vec![0; 4]);
    let mut w = e.open_file(ino).unwrap();
    w.punch_hole(512 << 20, 3).unwrap();
    w.truncate(600 << 20).unwrap();
    w.commit(true).unwrap();
    assert_eq!(e.read(ino, 512 << 20, 6).unwrap(), b"\0\0\0dle");
    assert_eq!(e.getattr(ino).unwrap().size, 600 << 20);
}

#[test]
fn a_small_edit_of_a_big_file_stores_little() {
    let dir = tempfile::tempdir().unwrap();
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(dir.path()).unwrap());
    let e = Engine::open(st, Options::default()).unwrap();
    let mut rng = Rng::new(3);
    let ino = e.create_file(ROOT, b"big", 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    let block = rng.bytes(1 << 20);
    for i in 0..64u64 {
        let mut b = block.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        w.write(i << 20, &b).unwrap();
    }
    w.commit(true).unwrap();
    let before = e.stats().unwrap().segment_bytes;
    let mut w = e.open_file(ino).unwrap();
    w.write(30 << 20, &[0xAB; 4096]).unwrap();
    let v = w.commit(true).unwrap().expect("a new version");
    assert_eq!(v.number, 2);
    let grown = e.stats().unwrap().segment_bytes - before;
    println!("4 KiB edit of a 64 MiB file stored {grown} bytes");
    assert!(grown < 600 << 10, "edit stored {grown} bytes");
    assert_eq!(e.read(ino, 30 << 20, 4096).unwrap(), vec![0xAB; 4096]);
    let old = &e.versions(e.getattr(ino).unwrap().lineage.unwrap())[0];
    let mut expect = block.clone();
    expect[..8].copy_from_slice(&30u64.to_le_bytes());
    assert_eq!(e.read_content(old.content, old.size, 30 << 20, 1 << 20).unwrap(), expect);
}

#[test]
fn identical_data_is_stored_once_and_unchanged_saves_make_no_version() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let data = Rng::new(9).bytes(50_000);
    put_file(&e, b"a", &data, true);
    let s1 = e.stats().unwrap();
    let b = put_file(&e, b"b", &data, true);
    let s2 = e.stats().unwrap();
    assert_eq!(s1.chunks, s2.chunks, "second copy added chunks");
    let lineage = e.getattr(b).unwrap().lineage.unwrap();
    assert_eq!(e.versions(lineage).len(), 1);
    put_file(&e, b"b", &data, true);
    assert_eq!(e.versions(lineage).len(), 1, "same content must not make a version");
    put_file(&e, b"b", b"v2", true);
    put_file(&e, b"b", b"v3", true);
    let vs = e.versions(lineage);
    assert_eq!(vs.iter().map(|v| v.number).collect::<Vec<_>>(), vec![1, 2, 3]);
    assert_eq!(e.read_content(vs[1].content, vs[1].size, 0, 10).unwrap(), b"v2");
}

#[test]
fn writes_are_buffered_within_budget() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = e.create_file(ROOT, b"stream", 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    let mut rng = Rng::new(11);
    let mut all = Vec::new();
    let budget = e.options().write_buffer_bytes;
    let (chunks_before, mut most) = (e.stats().unwrap().chunks, 0);
    for k in 0..50 {
        let d = if k % 2 == 0 { rng.text(3000) } else { rng.bytes(3000) };
        w.write(all.len() as u64, &d).unwrap();
        all.extend_from_slice(&d);
        most = most.max(w.buffered_bytes());
        assert!(w.buffered_bytes() <= 4 * (budget + 3000), "write {k}: {} bytes buffered", w.buffered_bytes());
        assert_eq!(w.read(0, all.len()).unwrap(), all);
    }
    assert!(most > budget / 2, "the writes were not buffered: at most {most} bytes");
    let stored = e.stats().unwrap().chunks - chunks_before;
    assert!(stored > 0, "150,000 bytes written, nothing stored before the commit (budget {budget})");
    w.commit(false).unwrap();
    assert_eq!(w.buffered_bytes(), 0);
    assert_eq!(e.read(ino, 0, all.len()).unwrap(), all);
}

/// A sequential writer keeps several buffers chunking behind it; writes back into them, past
/// the end (a gap), a truncation and reads all see the bytes in order, as does a reopen.
#[test]
fn buffers_chunked_behind_a_writer_keep_their_order() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = e.create_file(ROOT, b"stream", 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    let mut rng = Rng::new(12);
    let mut all = Vec::new();
    fn put(w: &mut cowfs_engine::FileWriter, all: &mut Vec<u8>, at: usize, d: &[u8]) {
        w.write(at as u64, d).unwrap();
        if all.len() < at + d.len() {
            all.resize(at + d.len(), 0);
        }
        all[at..at + d.len()].copy_from_slice(d);
    }
    for round in 0..6 {
        // Many budgets' worth appended without a read: buffers queue behind the writer.
        for _ in 0..40 {
            let n = 1 + rng.below(5000) as usize;
            let d = rng.bytes(n);
            let end = all.len();
            put(&mut w, &mut all, end, &d);
        }
        let d = rng.bytes(700);
        match round % 3 {
            0 => {
                let at = all.len() - 20_000;
                put(&mut w, &mut all, at, &d)
            }
            1 => {
                let at = all.len() + 9_000;
                put(&mut w, &mut all, at, &d)
            }
            _ => {
                all.truncate(all.len() - 30_000);
                w.truncate(all.len() as u64).unwrap();
            }
        }
    }
    assert_eq!(w.read(0, all.len() + 10).unwrap(), all);
    w.commit(true).unwrap().expect("a new version");
    drop((w, e));
    assert_eq!(sim_engine(&sim).read(ino, 0, all.len() + 10).unwrap(), all);
}

/// New chunks reach the log in groups, one write each, that never carry a segment past its
/// size; the store reads them back after a reopen and checks clean.
#[test]
fn grouped_appends_keep_segments_within_their_size() {
    let dir = tempfile::tempdir().unwrap();
    let segment_size = 1 << 20;
    let open = || {
        let st: Arc<dyn Storage> = Arc::new(DirStorage::new(dir.path()).unwrap());
        Engine::open(st, Options { segment_size, ..Options::default() }).unwrap()
    };
    let data = Rng::new(11).bytes(8 << 20);
    let ino = put_file(&open(), b"big", &data, true);
    let mut segments = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name().to_string_lossy().ends_with(".log") {
            segments += 1;
            let len = entry.metadata().unwrap().len();
            assert!(len <= segment_size, "{:?} holds {len} bytes", entry.file_name());
        }
    }
    assert!(segments >= 8, "8 MiB in segments of 1 MiB: {segments} segments");
    assert_eq!(open().read(ino, 0, data.len()).unwrap(), data);
    let report = cowfs_engine::fsck::check(&DirStorage::new(dir.path()).unwrap(), true).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

/// The bytes of the newest segment (the one the writer appends to).
fn newest_segment(sim: &SimStorage) -> Vec<u8> {
    let files = sim.snapshot_files();
    files.into_iter().filter(|(n, _)| n.starts_with("seg-")).max().expect("a segment").1
}

/// Large appends are block writes, which leave zeros to the end of the block past the log: a
/// killed process leaves them, and the next open cuts them without calling them a torn tail;
/// a clean close cuts them itself.
#[test]
fn block_padding_is_cut_at_close_and_by_the_next_open() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let data = Rng::new(5).bytes(5000);
    let ino = put_file(&e, b"f", &data, true);
    assert!(sim.block_writes() > 0, "a 5000-byte save makes block writes (threshold 256 bytes)");
    let killed = sim.crash_image(&CrashImage::ProcessKill);
    let padded = newest_segment(&killed);
    assert!(padded.len().is_multiple_of(4096) && padded.last() == Some(&0), "{} bytes", padded.len());
    let report = cowfs_engine::fsck::check(&killed, true).unwrap();
    assert!(report.findings.is_empty(), "padding is no finding: {:?}", report.findings);
    let reopened = sim_engine(&killed);
    assert_eq!(reopened.read(ino, 0, data.len()).unwrap(), data);
    let cut = newest_segment(&killed);
    assert!(cut.len() < padded.len() && padded.starts_with(&cut), "{} -> {} bytes", padded.len(), cut.len());
    drop(reopened);
    drop(e);
    assert_eq!(newest_segment(&sim), cut, "a clean close cuts the padding as the open did");
}

/// Hundreds of scattered small edits saved at once re-chunk hundreds of regions: their new
/// chunks reach the writer in batches before the commit (not all with it, which would hold
/// them all in memory), and the saved content is exactly the edited bytes, after a reopen too.
#[test]
fn many_scattered_edits_commit_in_batches() {
    let sim = SimStorage::new();
    let open = || Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::default()).unwrap();
    let e = open();
    let mut rng = Rng::new(9);
    let mut data = rng.bytes(32 << 20);
    let ino = put_file(&e, b"big", &data, true);
    let mut w = e.open_file(ino).unwrap();
    for i in 0..300u64 {
        let at = (i * 104_729 + rng.below(100_000)) as usize % (data.len() - 64);
        let len = 1 + rng.below(64) as usize;
        let edit = rng.bytes(len);
        data[at..at + edit.len()].copy_from_slice(&edit);
        w.write(at as u64, &edit).unwrap();
    }
    let before = sim.mutations();
    w.commit(true).unwrap().expect("a new version");
    // ~19 MiB of new chunks: one write per 2 MiB batch, then the commit's own append and
    // sync. All with the commit, they would be one write per 256 chunks.
    assert!(sim.mutations() - before > 16, "{} storage calls for the commit", sim.mutations() - before);
    assert_eq!(e.read(ino, 0, data.len()).unwrap(), data);
    drop((w, e));
    assert_eq!(open().read(ino, 0, data.len()).unwrap(), data);
}
