//! Unit tests of the open file: chunking behind a sequential writer, shared jobs, a
//! panicking job.

use super::*;
use crate::storage::{SimStorage, Storage};
use crate::{Engine, Options};

/// A buffer chunked behind a sequential writer (each piece in turn on one thread) and the
/// same bytes stored by a flush (on every core) make the same extents and chunk records.
#[test]
fn both_spreads_make_the_same_chunks() {
    let e = Engine::open(Arc::new(SimStorage::new()) as Arc<dyn Storage>, Options::tiny()).unwrap();
    // 3 MiB (past par_map's threshold): words, noise, and a stretch repeated.
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut bytes: Vec<u8> = (0..2 << 20)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i >> 16) % 2 == 0 { b"the quick brown fox "[(x % 20) as usize] } else { x as u8 }
        })
        .collect();
    bytes.extend_from_within(..1 << 20);
    let one = chunk_bytes(e.inner(), &bytes, true, Spread::ThisThread).unwrap();
    e.inner().unpin(&one.pinned);
    let all = chunk_bytes(e.inner(), &bytes, true, Spread::AllCores).unwrap();
    assert_eq!(one.extents, all.extents);
    assert_eq!(one.pinned, all.pinned);
    assert_eq!(one.deferred, all.deferred);
    assert!(one.deferred.len() < one.extents.len() * 3 / 4, "the repeated stretch made new chunks");
}

/// A small file written in pieces buffers in at most [`SMALL_BUFFER`] (SQLite's journal
/// mapped and unmapped the whole budget every transaction); a bigger sequential writer's
/// buffer then grows once to the budget.
#[test]
fn sequential_buffers_grow_to_a_megabyte_then_to_the_budget() {
    let e = Engine::open(Arc::new(SimStorage::new()) as Arc<dyn Storage>, Options::default()).unwrap();
    let ino = e.create_file(InodeId::ROOT, b"journal", 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    let capacity = |w: &FileWriter| w.pending.values().map(Vec::capacity).sum::<usize>();
    let page = [7u8; 4096];
    for i in 0..256 {
        w.write(i * 4096, &page).unwrap();
    }
    assert_eq!(w.pending.len(), 1);
    assert_eq!(capacity(&w), SMALL_BUFFER);
    w.write(256 * 4096, &page).unwrap();
    let grown = capacity(&w);
    assert!(grown > e.options().write_buffer_bytes, "{grown}");
    for i in 257..512 {
        w.write(i * 4096, &page).unwrap();
    }
    assert_eq!(capacity(&w), grown);
    w.commit(true).unwrap().expect("a version");
    assert_eq!(e.read(ino, 0, 3 << 20).unwrap(), page.repeat(512));
}

/// Files written at once share the chunking jobs: each keeps its own bytes, and every job
/// is counted out when it is done.
#[test]
fn files_written_at_once_share_the_jobs() {
    let e = Engine::open(Arc::new(SimStorage::new()) as Arc<dyn Storage>, Options::tiny()).unwrap();
    let files: Vec<(InodeId, Vec<u8>)> = (0..4u8)
        .map(|i| {
            let ino = e.create_file(InodeId::ROOT, &[b'f', b'0' + i], 0o644).unwrap().ino;
            (ino, (0..200_000u32).map(|j| (j.wrapping_mul(2_654_435_761) >> (i + 7)) as u8).collect())
        })
        .collect();
    let mut writers: Vec<FileWriter> = files.iter().map(|(ino, _)| e.open_file(*ino).unwrap()).collect();
    for at in (0..200_000).step_by(1000) {
        for (w, (_, data)) in writers.iter_mut().zip(&files) {
            w.write(at as u64, &data[at..at + 1000]).unwrap();
        }
    }
    for w in &mut writers {
        w.commit(true).unwrap().expect("a version");
    }
    assert_eq!(e.inner().chunking_jobs().load(Ordering::Relaxed), 0);
    drop(writers);
    for (ino, data) in &files {
        assert_eq!(&e.read(*ino, 0, data.len() + 1).unwrap(), data);
    }
}

/// A chunking job that panics (a bug) poisons the engine with the panic's message instead
/// of aborting the process: the file's commit fails, later writes are refused, reads of
/// what was stored before still work.
#[test]
fn a_panicking_chunking_job_poisons_the_engine() {
    let e = Engine::open(Arc::new(SimStorage::new()) as Arc<dyn Storage>, Options::tiny()).unwrap();
    let kept = e.create_file(InodeId::ROOT, b"kept", 0o644).unwrap().ino;
    let mut w = e.open_file(kept).unwrap();
    w.write(0, b"stored before").unwrap();
    w.commit(true).unwrap();
    drop(w);
    let ino = e.create_file(InodeId::ROOT, b"f", 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    let mut data = chunking::tests::PANIC_MARKER.to_vec();
    data.resize(100_000, 7);
    let mut failed = None;
    for at in (0..data.len()).step_by(1000) {
        if let Err(err) = w.write(at as u64, &data[at..at + 1000]) {
            failed = Some(err);
            break;
        }
    }
    let err = match failed {
        Some(err) => err,
        None => w.commit(true).expect_err("the chunking job panicked"),
    };
    assert!(matches!(err, Error::Internal(_) | Error::Poisoned { .. }), "{err:?}");
    let cause = e.poisoned().expect("poisoned").to_string();
    assert!(cause.contains("a chunking job panicked: bytes the test marked"), "{cause}");
    assert!(matches!(e.mkdir(InodeId::ROOT, b"d", 0o755, 0, 0), Err(Error::Poisoned { .. })));
    assert_eq!(e.read(kept, 0, 100).unwrap(), b"stored before");
}
