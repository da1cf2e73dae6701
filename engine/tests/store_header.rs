//! One damaged file must not lose a store. `STORE` (the store's identity and parameters) is
//! kept twice, `STORE` and `STORE.backup`: open falls back to the backup, fsck reports the
//! damaged copy and `--repair` rewrites it from the other, or, with both gone, rebuilds them
//! from the segment headers and checkpoints. A store made before the backup was kept (format
//! version 2, the committed fixture `fixtures/v2-store`) opens unchanged and gets its backup.
//!
//! The story: a 72-byte `STORE` overwritten with random bytes made the store unopenable, and
//! `cowfs-fsck --repair` gave up with "bad magic in STORE" (exit 8), although every segment
//! and checkpoint was intact.

mod common;

use std::sync::Arc;

use common::*;
use cowfs_engine::fsck;
use cowfs_engine::storage::{DirStorage, SimStorage, Storage};
use cowfs_engine::testing::meta::{STORE_BACKUP, STORE_FILE};
use cowfs_engine::{Engine, Error, FileKind, Options};

fn populated() -> (SimStorage, State) {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(17);
    for i in 0..12u64 {
        put_file(&e, format!("f{}", i % 5).as_bytes(), &rng.bytes(500 + 300 * i as usize), i % 4 == 0);
    }
    e.snapshot_create("s", "").unwrap();
    let want = state(&e);
    e.close().unwrap();
    (sim, want)
}

fn open_existing(sim: &SimStorage) -> Result<Engine, Error> {
    Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options { create: false, ..Options::tiny() })
}

fn garbage(seed: u64) -> Vec<u8> {
    Rng::new(seed).bytes(72)
}

#[test]
fn a_new_store_keeps_its_header_twice() {
    let (sim, _) = populated();
    let store = sim.read_file(STORE_FILE).unwrap();
    assert_eq!(store.len(), 72);
    assert_eq!(sim.read_file(STORE_BACKUP), Some(store));
    assert!(fsck::check(&sim, true).unwrap().findings.is_empty());
}

#[test]
fn a_damaged_store_file_falls_back_to_the_backup_and_repair_rewrites_it() {
    for seed in 1..=8 {
        let (sim, want) = populated();
        let good = sim.read_file(STORE_FILE).unwrap();
        sim.write_file(STORE_FILE, garbage(seed));
        let e = open_existing(&sim).unwrap_or_else(|err| panic!("seed {seed}: did not open: {err}"));
        assert_eq!(state(&e), want, "seed {seed}");
        let problems = &e.open_report().header_problems;
        assert!(problems.len() == 1 && problems[0].contains("STORE is unusable"), "seed {seed}: {problems:?}");
        drop(e);
        assert_eq!(sim.read_file(STORE_FILE).unwrap(), garbage(seed), "open changed the damaged STORE");
        let report = fsck::check(&sim, true).unwrap();
        assert!(!report.clean() && report.findings.iter().any(|f| f.place == STORE_FILE), "{:?}", report.findings);
        let done = fsck::repair(&sim).unwrap();
        assert!(done.iter().any(|f| f.place == STORE_FILE && f.problem.contains("rewritten")), "{done:?}");
        assert_eq!(sim.read_file(STORE_FILE).unwrap(), good, "seed {seed}: STORE as it was");
        assert!(fsck::check(&sim, true).unwrap().clean());
        assert_eq!(state(&open_existing(&sim).unwrap()), want);
    }
}

#[test]
fn a_deleted_store_file_falls_back_to_the_backup() {
    let (sim, want) = populated();
    sim.remove(STORE_FILE).unwrap();
    assert_eq!(state(&open_existing(&sim).unwrap()), want);
    assert!(!fsck::check(&sim, false).unwrap().clean());
    fsck::repair(&sim).unwrap();
    assert!(fsck::check(&sim, true).unwrap().clean());
}

#[test]
fn a_damaged_backup_is_reported_and_repaired_and_the_store_opens_meanwhile() {
    let (sim, want) = populated();
    let good = sim.read_file(STORE_BACKUP).unwrap();
    sim.write_file(STORE_BACKUP, garbage(99));
    let e = open_existing(&sim).unwrap();
    assert_eq!(state(&e), want);
    assert!(e.open_report().header_problems[0].contains("STORE.backup is unusable"), "{:?}", e.open_report());
    drop(e);
    assert!(!fsck::check(&sim, false).unwrap().clean());
    fsck::repair(&sim).unwrap();
    assert_eq!(sim.read_file(STORE_BACKUP).unwrap(), good);
    assert!(fsck::check(&sim, true).unwrap().clean());
}

#[test]
fn with_both_copies_damaged_repair_rebuilds_them_from_the_segments() {
    let (sim, want) = populated();
    let old = cowfs_engine::read_meta(&sim).unwrap().unwrap();
    sim.write_file(STORE_FILE, garbage(1));
    sim.write_file(STORE_BACKUP, garbage(2));
    let before = sim.snapshot_files();
    let err = open_existing(&sim).unwrap_err();
    assert!(matches!(err, Error::Corrupt { ref file, .. } if file == STORE_FILE), "{err}");
    assert_eq!(sim.snapshot_files(), before, "a failed open changed the store");
    // The check still checks everything else, against a header rebuilt in memory.
    let report = fsck::check(&sim, true).unwrap();
    let errors: Vec<_> = report.findings.iter().filter(|f| f.error).collect();
    assert!(errors.len() == 1 && errors[0].place == STORE_FILE, "{:?}", report.findings);
    assert!(report.objects > 0 && report.inodes > 0, "{report:?}");
    assert_eq!(sim.snapshot_files(), before, "fsck without --repair changed the store");
    let done = fsck::repair(&sim).unwrap();
    assert!(done.iter().any(|f| f.place == STORE_FILE && f.problem.contains("rebuilt")), "{done:?}");
    let meta = cowfs_engine::read_meta(&sim).unwrap().unwrap();
    assert_eq!((meta.store_id, meta.device), (old.store_id, old.device), "identity kept");
    assert!(fsck::check(&sim, true).unwrap().clean());
    let e = open_existing(&sim).unwrap();
    assert_eq!(state(&e), want);
    put_file(&e, b"after", b"writes work", true);
}

#[test]
fn a_directory_of_other_files_is_still_not_a_store() {
    let sim = SimStorage::new();
    sim.write_file("notes.txt", b"mine".to_vec());
    assert!(matches!(open_existing(&sim), Err(Error::NotAStore { .. })));
    assert!(matches!(fsck::check(&sim, false), Err(Error::NotAStore { .. })));
    assert!(matches!(fsck::repair(&sim), Err(Error::NotAStore { .. })));
    assert_eq!(sim.snapshot_files().len(), 1, "nothing written");
}

/// The committed store was made by the code of format version 2 before `STORE.backup`
/// existed (commit d1a81a5): three versions of `/notes.txt`, a directory with a 20,000-byte
/// file, a symlink and a snapshot.
#[test]
fn a_committed_version_2_store_without_a_backup_opens_and_gets_one() {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/v2-store");
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    assert!(!dir.path().join(STORE_BACKUP).exists());
    let st = DirStorage::new(dir.path()).unwrap();
    let report = fsck::check(&st, true).unwrap();
    assert!(report.clean(), "a v2 store without a backup is clean: {:?}", report.findings);
    assert!(report.findings.iter().any(|f| f.place == STORE_BACKUP && !f.error), "{:?}", report.findings);
    let e = Engine::open(Arc::new(st) as Arc<dyn Storage>, Options { create: false, ..Options::tiny() }).unwrap();
    let got = state(&e);
    assert_eq!(got["/notes.txt"].1, b"version three\n");
    assert_eq!(got["/notes.txt"].2.len(), 3, "three versions");
    assert_eq!(got["/docs/big.bin"].1, Rng::new(42).bytes(20_000));
    assert_eq!((got["/link"].0, got["/link"].1.as_slice()), (FileKind::Symlink, &b"notes.txt"[..]));
    assert_eq!(got["@snapshots"].1, b"before-edit,");
    e.close().unwrap();
    assert_eq!(std::fs::read(dir.path().join(STORE_BACKUP)).unwrap(), std::fs::read(fixture.join(STORE_FILE)).unwrap());
    let report = fsck::check(&DirStorage::new(dir.path()).unwrap(), true).unwrap();
    assert!(report.findings.is_empty(), "{:?}", report.findings);
}

/// The committed version-2 store mounted over a lower tree for the first time (the migration
/// to version 3): its files stay as they were and on top, the lower tree shows below them,
/// both copies of the header say 3, the checkpoint is version 3, and fsck is clean.
#[test]
fn the_committed_version_2_store_becomes_version_3_over_a_lower_tree() {
    let (dir, store) = fixture_copy("v2-store");
    let lower = dir.path().join("lower");
    std::fs::create_dir_all(lower.join("docs")).unwrap();
    std::fs::write(lower.join("notes.txt"), b"the lower one, hidden").unwrap();
    std::fs::write(lower.join("from-lower"), b"shown").unwrap();
    std::fs::write(lower.join("docs/beside"), b"not merged: docs is the store's").unwrap();
    let open = |lowers: &[std::path::PathBuf]| {
        let st = Arc::new(DirStorage::new(&store).unwrap()) as Arc<dyn Storage>;
        Engine::open_overlay(st, Options { create: false, ..Options::tiny() }, lowers, false).unwrap()
    };
    let e = open(std::slice::from_ref(&lower));
    assert_eq!(e.meta().version, 3);
    let got = state(&e);
    assert_eq!(got["/notes.txt"].1, b"version three\n");
    assert_eq!(got["/notes.txt"].2.len(), 3, "three versions");
    assert_eq!(got["/docs/big.bin"].1, Rng::new(42).bytes(20_000));
    assert_eq!(got["/from-lower"].1, b"shown");
    assert!(!got.contains_key("/docs/beside"));
    e.checkpoint().unwrap();
    e.close().unwrap();
    let mut ckpts: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    ckpts.sort();
    for f in [STORE_FILE, STORE_BACKUP, ckpts.last().unwrap()] {
        assert_eq!(std::fs::read(store.join(f)).unwrap()[8..12], 3u32.to_le_bytes(), "{f}");
    }
    let e = open(&[]);
    assert_eq!(state(&e), got, "reopened with the recorded lower tree");
    e.close().unwrap();
    let report = fsck::check(&DirStorage::new(&store).unwrap(), true).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

/// The committed version-3 store (`fixtures/v3-store`: an overlay store made by the version-3
/// build over a lower tree at /tmp/v3lower, with a lower file edited in place, a file of its
/// own, a snapshot, a checkpoint and a log tail after it) opens unchanged and stays version 3;
/// over a new lower tree (`--relower`) the files recorded from the old one read as EIO (not
/// the same files) and its own bytes read as they were; its first absorb makes it version 4
/// (both header copies, the next checkpoint), absorbing what it can and naming what it cannot.
#[test]
fn the_committed_version_3_store_opens_and_becomes_version_4_at_its_first_absorb() {
    let (dir, store) = fixture_copy("v3-store");
    let lower = dir.path().join("lower");
    std::fs::create_dir_all(lower.join("docs")).unwrap();
    std::fs::write(lower.join("kept.txt"), b"the lower original of kept.txt\n").unwrap();
    std::fs::write(lower.join("whole.txt"), b"shown as it is\n").unwrap();
    std::fs::write(lower.join("docs/unlisted.txt"), b"in a directory never listed\n").unwrap();
    let open = |lowers: &[std::path::PathBuf]| {
        let st = Arc::new(DirStorage::new(&store).unwrap()) as Arc<dyn Storage>;
        Engine::open_overlay(st, Options { create: false, ..Options::tiny() }, lowers, true).unwrap()
    };
    let version = |f: &str| std::fs::read(store.join(f)).unwrap()[8..12].to_vec();
    let e = open(std::slice::from_ref(&lower));
    assert_eq!(e.meta().version, 3);
    let file = |e: &Engine, path: &str| {
        let mut ino = cowfs_engine::InodeId::ROOT;
        for c in path.split('/') {
            ino = e.lookup(ino, c.as_bytes()).unwrap().ino;
        }
        e.getattr(ino).unwrap()
    };
    let read = |e: &Engine, path: &str| {
        let i = file(e, path);
        e.read(i.ino, 0, i.size as usize)
    };
    assert_eq!(read(&e, "own.txt").unwrap(), b"stored in the store\n");
    assert_eq!(read(&e, "after.txt").unwrap(), b"after the checkpoint\n");
    assert_eq!(e.snapshots().len(), 1);
    assert!(matches!(read(&e, "kept.txt"), Err(Error::Lower { .. })), "another file at the recorded path");
    let kept = file(&e, "kept.txt");
    assert_eq!(e.versions(kept.lineage.unwrap()).len(), 2, "the lower original and the edit");
    let r = e.overlay_absorb(&[], &mut |_, _| {}).unwrap();
    assert_eq!((r.files, r.lower_files, r.detached), (1, 2, false), "{r:?}");
    let mut failed: Vec<&str> = r.failed.iter().map(|(p, _)| p.rsplit('/').next().unwrap()).collect();
    failed.sort();
    assert_eq!(failed, ["kept.txt", "whole.txt"]);
    assert_eq!(read(&e, "docs/unlisted.txt").unwrap(), b"in a directory never listed\n");
    e.close().unwrap();
    let mut ckpts: Vec<_> = std::fs::read_dir(&store)
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("ckpt-"))
        .collect();
    ckpts.sort();
    for f in [STORE_FILE, STORE_BACKUP, ckpts.last().unwrap()] {
        assert_eq!(version(f), 4u32.to_le_bytes(), "{f}");
    }
    std::fs::write(lower.join("docs/unlisted.txt"), b"changed after it was absorbed").unwrap();
    let e = open(&[]);
    assert_eq!(e.meta().version, 4);
    assert_eq!(read(&e, "docs/unlisted.txt").unwrap(), b"in a directory never listed\n");
    assert_eq!(read(&e, "own.txt").unwrap(), b"stored in the store\n");
}

/// The committed version-4 store (`fixtures/v4-store`: made by the version-4 build as an
/// overlay store, fully absorbed and detached, with `secret.txt` saved twice before the
/// snapshot `snap` and once after, a checkpoint and a log tail after it) opens unchanged and
/// stays version 4; taking a file out of its snapshot makes it version 5 (both header copies)
/// before the record is written; the snapshot keeps its other files, a reopen replays the
/// record, and fsck finds nothing.
#[test]
fn the_committed_version_4_store_becomes_version_5_when_a_file_leaves_a_snapshot() {
    let (_dir, store) = fixture_copy("v4-store");
    let open = || {
        let st = Arc::new(DirStorage::new(&store).unwrap()) as Arc<dyn Storage>;
        Engine::open(st, Options { create: false, ..Options::tiny() }).unwrap()
    };
    let version = |f: &str| u32::from_le_bytes(std::fs::read(store.join(f)).unwrap()[8..12].try_into().unwrap());
    let e = open();
    assert_eq!(e.meta().version, 4);
    let read = |e: &Engine, name: &str| {
        let i = e.lookup(cowfs_engine::InodeId::ROOT, name.as_bytes()).unwrap();
        e.read(i.ino, 0, i.size as usize).unwrap()
    };
    assert_eq!(read(&e, "kept.txt"), b"the lower original of kept.txt\nedited in place\n");
    assert_eq!(read(&e, "own.txt"), b"stored in the store\n");
    assert_eq!(read(&e, "after.txt"), b"after the checkpoint\n");
    assert_eq!(read(&e, "secret.txt"), b"secret v3\n");
    let in_snap = |e: &Engine, name: &str| {
        e.snapshot_namespace("snap").unwrap().lookup(cowfs_engine::InodeId::ROOT, name.as_bytes())
    };
    assert!(in_snap(&e, "secret.txt").is_some() && in_snap(&e, "own.txt").is_some());
    let secret = e.lookup(cowfs_engine::InodeId::ROOT, b"secret.txt").unwrap().lineage.unwrap();
    e.snapshot_forget(vec![secret], "test").unwrap();
    for f in [STORE_FILE, STORE_BACKUP] {
        assert_eq!(version(f), 5, "{f}");
    }
    assert!(in_snap(&e, "secret.txt").is_none(), "still in the snapshot");
    assert!(in_snap(&e, "own.txt").is_some(), "the snapshot lost another file");
    // Reopened from the fixture's checkpoint and a replay of the record, then from a new
    // checkpoint.
    e.close_without_checkpoint().unwrap();
    for _ in 0..2 {
        let e = open();
        assert_eq!(e.meta().version, 5);
        assert!(in_snap(&e, "secret.txt").is_none() && in_snap(&e, "kept.txt").is_some());
        assert_eq!(read(&e, "secret.txt"), b"secret v3\n", "the live file stays");
        e.close().unwrap();
    }
    let report = fsck::check(&DirStorage::new(&store).unwrap(), true).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}

/// A copy of the committed store `fixtures/NAME`, in a new temporary directory (kept while
/// the first value lives), as `DIR/store`.
fn fixture_copy(name: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let fixture = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    std::fs::create_dir(&store).unwrap();
    for f in std::fs::read_dir(&fixture).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), store.join(f.file_name())).unwrap();
    }
    (dir, store)
}
