//! Overlay content through the engine (docs/OVERLAY.md, step 1): a file whose content is a
//! recorded lower file's bytes, read from the lower tree (a real directory) while the store is
//! in memory; edits store only what they write; the lower file is never written; a lower file
//! that changed is refused (`Error::Lower`), never served; version 3 is written only once a
//! store is opened with lower trees.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::{Engine, Error, Extent, ExtentKind, Options};

/// A lower tree holding `data/big` (`len` random bytes from `seed`).
fn lower_tree(len: usize, seed: u64) -> (tempfile::TempDir, PathBuf, Vec<u8>) {
    let t = tempfile::tempdir().unwrap();
    let root = t.path().join("lower");
    std::fs::create_dir_all(root.join("data")).unwrap();
    let data = Rng::new(seed).bytes(len);
    std::fs::write(root.join("data/big"), &data).unwrap();
    (t, root, data)
}

/// The store on `sim`, with lower tree `lower` (layer 0) or none.
fn open(sim: &SimStorage, lower: Option<&Path>) -> Engine {
    let lowers: Vec<PathBuf> = lower.into_iter().map(Path::to_path_buf).collect();
    Engine::open_overlay(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny(), &lowers, false).expect("open")
}

fn version_of(sim: &SimStorage, file: &str) -> u32 {
    let b = sim.read_file(file).unwrap();
    u32::from_le_bytes(b[8..12].try_into().unwrap())
}

/// Creates `name` in the root whose content is lower file `data/big`, committed as its first
/// version.
fn adopt(e: &Engine, name: &[u8]) -> cowfs_engine::InodeId {
    let (f, whole) = e.record_lower_file(0, Path::new("data/big")).unwrap();
    let ino = e.create_file(ROOT, name, 0o644).unwrap().ino;
    let mut w = e.open_file(ino).unwrap();
    w.splice(0, whole.into_iter().collect()).unwrap();
    assert_eq!(w.size(), f.identity.size);
    w.commit(true).unwrap();
    ino
}

#[test]
fn a_lower_file_is_read_in_place_and_edits_store_only_what_they_write() {
    let (_t, lower, data) = lower_tree(4 << 20, 1);
    let sim = SimStorage::new();
    let e = open(&sim, Some(&lower));
    let before = e.stats().unwrap();
    let ino = adopt(&e, b"big");
    assert_eq!(e.read(ino, 0, data.len()).unwrap(), data, "the lower bytes, read in place");
    let adopted = e.stats().unwrap();
    assert_eq!(adopted.chunks, before.chunks, "adopting stores no chunk");

    // 4 KiB written in the middle: stored is about what was written, the rest stays lower.
    let edit = Rng::new(99).bytes(4096);
    let mut want = data.clone();
    want[1_000_000..1_004_096].copy_from_slice(&edit);
    let mut w = e.open_file(ino).unwrap();
    w.write(1_000_000, &edit).unwrap();
    w.commit(true).unwrap();
    drop(w);
    assert_eq!(e.read(ino, 0, want.len()).unwrap(), want);
    let edited = e.stats().unwrap();
    let stored = edited.chunk_raw_bytes - adopted.chunk_raw_bytes;
    assert_eq!(stored, 4096, "only the written bytes are stored");
    let mut kinds = Vec::new();
    e.for_each_extent(e.getattr(ino).unwrap().content, |_, x| kinds.push(x.kind)).unwrap();
    assert_eq!(kinds.iter().filter(|k| matches!(k, ExtentKind::Lower { .. })).count(), 2, "{kinds:?}");

    // Truncate and extend over a lower range; versions keep the lower original.
    let mut w = e.open_file(ino).unwrap();
    w.truncate(3 << 20).unwrap();
    w.truncate(5 << 20).unwrap();
    w.commit(true).unwrap();
    drop(w);
    want.truncate(3 << 20);
    want.resize(5 << 20, 0);
    assert_eq!(e.read(ino, 0, 6 << 20).unwrap(), want);
    let lineage = e.getattr(ino).unwrap().lineage.unwrap();
    let first = e.versions(lineage)[0].clone();
    assert_eq!(e.read_content(first.content, first.size, 0, data.len()).unwrap(), data, "version 1: the lower file");

    // After a reopen (replay) and after a checkpoint (a version-3 checkpoint) alike.
    drop(e);
    for _ in 0..2 {
        let e = open(&sim, Some(&lower));
        assert_eq!(e.read(ino, 0, 6 << 20).unwrap(), want);
        e.checkpoint().unwrap();
        drop(e);
    }
    assert_eq!(std::fs::read(lower.join("data/big")).unwrap(), data, "the lower file is never written");
    assert_eq!((version_of(&sim, "STORE"), version_of(&sim, "STORE.backup")), (3, 3));
    assert_fsck_clean(&sim, "overlay store");
}

#[test]
fn a_changed_lower_file_is_refused_never_served() {
    let (_t, lower, data) = lower_tree(1 << 20, 2);
    let sim = SimStorage::new();
    let e = open(&sim, Some(&lower));
    let ino = adopt(&e, b"big");
    let mut w = e.open_file(ino).unwrap();
    w.write(0, &[1; 8192]).unwrap();
    w.commit(true).unwrap();
    drop(w);
    // Same size, the mtime put back: the ctime still tells.
    let path = lower.join("data/big");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    let mut changed = data.clone();
    changed[500_000] ^= 1;
    std::fs::write(&path, &changed).unwrap();
    std::fs::File::options().write(true).open(&path).unwrap().set_modified(mtime).unwrap();
    match e.read(ino, 400_000, 200_000) {
        Err(Error::Lower { path: p, reason }) => {
            assert!(p.ends_with("data/big") && reason.contains("changed"), "{p}: {reason}")
        }
        other => panic!("a changed lower file's range: {:?}", other.map(|b| b.len())),
    }
    assert_eq!(e.read(ino, 0, 8192).unwrap(), vec![1; 8192], "stored ranges still read");
    // fsck names it (an error: the store's content cannot be read whole).
    drop(e);
    let report = cowfs_engine::fsck::check(&sim, false).unwrap();
    let named: Vec<_> = report.findings.iter().filter(|f| f.error && f.place.ends_with("data/big")).collect();
    assert_eq!(named.len(), 1, "{:?}", report.findings);
    assert!(named[0].problem.contains("changed") && named[0].problem.contains("EIO"), "{:?}", named[0]);
    std::fs::write(&path, &data).unwrap();
    let report = cowfs_engine::fsck::check(&sim, false).unwrap();
    assert_eq!(report.findings.iter().filter(|f| f.place.ends_with("data/big")).count(), 1, "rewritten: still not it");
    let e = open(&sim, Some(&lower));
    // Gone: the same.
    std::fs::remove_file(&path).unwrap();
    drop(e);
    let e = open(&sim, Some(&lower));
    assert!(matches!(e.read(ino, 10_000, 10), Err(Error::Lower { .. })));
    // Opened without its lower tree: refused too.
    drop(e);
    let e = open(&sim, None);
    assert!(matches!(e.read(ino, 10_000, 10), Err(Error::Lower { .. })));
    assert_eq!(e.read(ino, 0, 8192).unwrap(), vec![1; 8192]);
    drop(e);
    let report = cowfs_engine::fsck::check(&sim, false).unwrap();
    assert!(report.findings.iter().any(|f| f.error && f.place.ends_with("data/big")), "{:?}", report.findings);
}

/// A version-2 store opened without lower trees stays version 2 (readable by older builds);
/// opening it with one makes it version 3, and recording a lower file needs one.
#[test]
fn version_3_only_with_lower_trees() {
    let (_t, lower, _) = lower_tree(10, 3);
    let sim = SimStorage::new();
    let e = open(&sim, None);
    put_file(&e, b"f", b"plain", true);
    assert!(matches!(e.record_lower_file(0, Path::new("data/big")), Err(Error::Lower { .. })));
    e.checkpoint().unwrap();
    drop(e);
    assert_eq!((version_of(&sim, "STORE"), version_of(&sim, "STORE.backup")), (2, 2));
    let e = open(&sim, Some(&lower));
    assert_eq!(e.meta().version, 3);
    for bad in ["../x", "/etc/passwd", "data/missing", "data"] {
        assert!(e.record_lower_file(0, Path::new(bad)).is_err(), "{bad}");
    }
    assert!(matches!(e.record_lower_file(1, Path::new("data/big")), Err(Error::Lower { .. })));
    drop(e);
    assert_eq!((version_of(&sim, "STORE"), version_of(&sim, "STORE.backup")), (3, 3));
}

/// Lower ranges put side by side (as `copy_file_range` does) merge into one extent only when
/// they continue each other; the bytes are the ranges' either way.
#[test]
fn adjacent_lower_ranges_merge_only_when_contiguous() {
    let (_t, lower, data) = lower_tree(64 << 10, 4);
    let sim = SimStorage::new();
    let e = open(&sim, Some(&lower));
    let (f, _) = e.record_lower_file(0, Path::new("data/big")).unwrap();
    let range = |from: u64, len: u64| Extent { len, kind: ExtentKind::Lower { file: f.id, offset: from } };
    for (name, second, lower_extents) in [(&b"apart"[..], 5000, 2), (b"contiguous", 1000, 1)] {
        let ino = e.create_file(ROOT, name, 0o644).unwrap().ino;
        let mut w = e.open_file(ino).unwrap();
        w.splice(0, vec![range(0, 1000)]).unwrap();
        w.splice(1000, vec![range(second, 1000)]).unwrap();
        w.commit(true).unwrap();
        let mut want = data[..1000].to_vec();
        want.extend_from_slice(&data[second as usize..second as usize + 1000]);
        assert_eq!(e.read(ino, 0, 4000).unwrap(), want);
        let mut n = 0;
        e.for_each_extent(e.getattr(ino).unwrap().content, |_, _| n += 1).unwrap();
        assert_eq!(n, lower_extents, "{}", String::from_utf8_lossy(name));
    }
}

/// A virtual copy of one file (`cowfs mount --lower FILE STORE MOUNTFILE`): the root holds
/// that file alone (its siblings are never listed), read in place and edited like any lower
/// file (version 1 is the original, once saved); it reopens without the file named, refuses
/// another file or a store holding a tree, absorbs, and stays fsck-clean; the original
/// never changes.
#[test]
fn a_virtual_copy_holds_one_lower_file() {
    let (_t, lower, data) = lower_tree(1 << 20, 11);
    let dir = lower.join("data");
    std::fs::write(dir.join("sibling"), b"never shown").unwrap();
    let orig = dir.join("big");
    let sim = SimStorage::new();
    let st = || Arc::new(sim.clone()) as Arc<dyn Storage>;
    let (e, ino) = Engine::open_virtual_copy(st(), Options::tiny(), Some(&orig)).unwrap();
    let names: Vec<Vec<u8>> = e.entries(cowfs_engine::InodeId::ROOT).unwrap().keys().cloned().collect();
    assert_eq!(names, vec![b"big".to_vec()], "the one file, not its directory");
    let a = e.getattr(ino).unwrap();
    let lower_meta = std::fs::metadata(&orig).unwrap();
    assert_eq!(
        (a.size, a.mode & 0o7777),
        (data.len() as u64, std::os::unix::fs::PermissionsExt::mode(&lower_meta.permissions()) & 0o7777)
    );
    assert_eq!(e.read(ino, 0, data.len()).unwrap(), data);
    let mut w = e.open_file(ino).unwrap();
    w.write(4096, b"edited").unwrap();
    w.commit(true).unwrap();
    drop(w);
    let mut want = data.clone();
    want[4096..4102].copy_from_slice(b"edited");
    let versions = e.versions(e.getattr(ino).unwrap().lineage.unwrap());
    assert_eq!(versions.len(), 2, "the original, then the edit");
    assert_eq!(e.read_content(versions[0].content, versions[0].size, 0, data.len()).unwrap(), data);
    e.close().unwrap();
    assert_eq!(version_of(&sim, "STORE"), 3);

    let (e, again) = Engine::open_virtual_copy(st(), Options::tiny(), None).unwrap();
    assert_eq!((again, e.read(again, 0, want.len()).unwrap()), (ino, want.clone()), "reopened without the file");
    // Both versions are data (no holes); nearly all of it is read from the lower file.
    let s = e.stats().unwrap();
    let len = data.len() as u64;
    assert_eq!(s.version_bytes, 2 * len, "{s:?}");
    assert!(s.version_lower_bytes < s.version_bytes && s.version_lower_bytes > 2 * len - 65536, "{s:?}");
    e.close().unwrap();
    let other = Engine::open_virtual_copy(st(), Options::tiny(), Some(&dir.join("sibling")));
    assert!(other.unwrap_err().to_string().contains("virtual copy of big, not of sibling"));
    let relative = Engine::open_virtual_copy(st(), Options::tiny(), Some(Path::new("data/big")));
    assert!(relative.is_err(), "a relative path");
    let (e, _) = Engine::open_virtual_copy(st(), Options::tiny(), Some(&orig)).unwrap();
    let r = e.overlay_absorb(&[], &mut |_, _| {}).unwrap();
    assert_eq!((r.files, r.bytes, r.detached), (1, data.len() as u64, true), "{r:?}");
    e.close().unwrap();
    assert!(assert_fsck_clean(&sim, "a virtual copy"));
    assert_eq!(std::fs::read(&orig).unwrap(), data, "the original is unchanged");

    // A store with a tree, and an empty store without a file named, are refused.
    let tree = SimStorage::new();
    let e = open(&tree, None);
    put_file(&e, b"a", b"1", true);
    put_file(&e, b"b", b"2", true);
    e.close().unwrap();
    let before = tree.snapshot_files();
    for file in [None, Some(orig.as_path())] {
        let err = Engine::open_virtual_copy(Arc::new(tree.clone()) as Arc<dyn Storage>, Options::tiny(), file);
        let err = err.unwrap_err();
        assert!(err.to_string().contains("not one file"), "{err}");
        assert!(tree.snapshot_files() == before, "a refused virtual copy ({file:?}) changed the store");
    }
    let empty = SimStorage::new();
    let err = Engine::open_virtual_copy(Arc::new(empty.clone()) as Arc<dyn Storage>, Options::tiny(), None);
    assert!(err.unwrap_err().to_string().contains("name the file"));
    assert!(empty.snapshot_files().is_empty(), "a refused virtual copy created a store");
    let err = Engine::open_virtual_copy(Arc::new(SimStorage::new()) as Arc<dyn Storage>, Options::tiny(), Some(&dir));
    assert!(err.is_err(), "a directory is not a file to copy");
}
