//! Filesystem logic without a mount, over the engine on the storage simulator.

use std::sync::Arc;

use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::{Engine, FileKind, InodeId, Options};
use cowfs_fuse::fs::{Caller, CowFs};

fn fs() -> CowFs {
    let sim = SimStorage::new();
    CowFs::new(Engine::open(Arc::new(sim) as Arc<dyn Storage>, Options::tiny()).unwrap())
}

const ROOT: InodeId = InodeId::ROOT;
const ME: Caller = Caller { uid: 0, gid: 0 };

#[test]
fn truncate_by_path_extends_whether_or_not_the_release_came_first() {
    let f = fs();
    let (i, fh) = f.create(ME, ROOT, b"a", 0o644, false).unwrap();
    f.release(fh).unwrap();
    let a = f.setattr(i.ino, None, None, None, Some(1234567), None, None).unwrap();
    assert_eq!(a.size, 1234567);
    assert_eq!(f.getattr(i.ino).unwrap().size, 1234567);

    // The kernel sends RELEASE asynchronously: a truncate may arrive before it.
    let (j, fh) = f.create(ME, ROOT, b"b", 0o644, false).unwrap();
    let a = f.setattr(j.ino, None, None, None, Some(1234567), None, None).unwrap();
    assert_eq!(a.size, 1234567);
    f.release(fh).unwrap();
    assert_eq!(f.getattr(j.ino).unwrap().size, 1234567);
    assert_eq!(f.engine().getattr(j.ino).unwrap().kind, FileKind::Regular);
}

#[test]
fn reopen_with_truncate_then_write_in_either_release_order() {
    let f = fs();
    let (i, a) = f.create(ME, ROOT, b"x", 0o644, false).unwrap();
    f.release(a).unwrap();
    let b = f.open(i.ino, true, true, false).unwrap();
    assert_eq!(f.write(b, 0, b"data", 1).unwrap(), 4);
    f.release(b).unwrap();
    assert_eq!(f.engine().read(i.ino, 0, 10).unwrap(), b"data");

    let (j, a) = f.create(ME, ROOT, b"y", 0o644, false).unwrap();
    let b = f.open(j.ino, true, true, false).unwrap();
    f.release(a).unwrap();
    assert_eq!(f.write(b, 0, b"data", 1).unwrap(), 4);
    f.release(b).unwrap();
    assert_eq!(f.engine().read(j.ino, 0, 10).unwrap(), b"data");
}

#[test]
fn a_file_written_and_closed_reads_back_through_new_handles() {
    let f = fs();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (i, a) = f.create(ME, ROOT, b"x", 0o644, false).unwrap();
    f.write(a, 0, &data, 1).unwrap();
    let b = f.open(i.ino, false, false, false).unwrap();
    assert_eq!(f.read(b, 0, 10).unwrap(), &data[..10]);
    f.release(a).unwrap();
    assert_eq!(f.read(b, 0, 10).unwrap(), &data[..10]);
    let c = f.open(i.ino, false, false, false).unwrap();
    f.release(b).unwrap();
    assert_eq!(f.read(c, 50_000, 10).unwrap(), &data[50_000..50_010]);
    f.release(c).unwrap();
    let d = f.open(i.ino, false, false, false).unwrap();
    assert_eq!(f.read(d, 0, 100_001).unwrap(), data);
}

/// Regression: the kernel sends RELEASE asynchronously, so "write temp, close, rename over"
/// can arrive as write, rename, release. The rename used to carry the temp file's committed
/// (empty) content into the target's history, and the release then added the real content:
/// history v1, "", v2 instead of v1, v2.
#[test]
fn rename_over_before_the_temp_files_release_carries_its_unsaved_content() {
    let f = fs();
    let (doc, a) = f.create(ME, ROOT, b"doc", 0o644, false).unwrap();
    f.write(a, 0, b"v1", 1).unwrap();
    f.release(a).unwrap();
    let (_, t) = f.create(ME, ROOT, b".doc.swp", 0o644, false).unwrap();
    f.write(t, 0, b"v2", 1).unwrap();
    f.rename(ROOT, b".doc.swp", ROOT, b"doc", false, false).unwrap();
    f.release(t).unwrap();
    let e = f.engine();
    let lineage = doc.lineage.unwrap();
    let now = e.lookup(ROOT, b"doc").unwrap();
    assert_eq!(now.lineage, Some(lineage));
    let history: Vec<Vec<u8>> =
        e.versions(lineage).iter().map(|v| e.read_content(v.content, v.size, 0, v.size as usize).unwrap()).collect();
    assert_eq!(history, vec![b"v1".to_vec(), b"v2".to_vec()]);
}

/// Regression: a multithreaded program that forks while it writes a file gives the child a
/// copy of the descriptor, which the child closes at exec; the kernel sends a flush for that
/// close too. Only the writer's own close may commit, or the file's history fills with
/// half-written versions.
#[test]
fn a_flush_from_another_process_does_not_cut_a_version() {
    let f = fs();
    let (doc, fh) = f.create(ME, ROOT, b"doc", 0o644, false).unwrap();
    f.write(fh, 0, b"first half ", 100).unwrap();
    f.flush(fh, 200).unwrap(); // a forked child's exec
    f.write(fh, 11, b"second half", 100).unwrap();
    let e = f.engine();
    assert_eq!(e.versions(doc.lineage.unwrap()).len(), 0, "no version before the writer closes");
    f.flush(fh, 100).unwrap();
    let versions = e.versions(doc.lineage.unwrap());
    assert_eq!(versions.len(), 1);
    assert_eq!(e.read_content(versions[0].content, versions[0].size, 0, 22).unwrap(), b"first half second half");
    f.release(fh).unwrap();
    assert_eq!(e.versions(doc.lineage.unwrap()).len(), 1);
}

/// Regression (seen once in a full run of time_travel: five versions instead of four): the
/// kernel sends RELEASE asynchronously, so `echo v1 > f; echo v2 > f` can arrive as create,
/// write, flush (v1 committed), open with O_TRUNC, *release of the first handle*, write,
/// flush. The first handle's release committed the file as the second open had just left it
/// — empty — because its create still counted as an uncommitted save after its flush had
/// committed it: history v1, "", v2 instead of v1, v2.
#[test]
fn a_late_release_of_a_committed_save_does_not_commit_the_next_ones_truncation() {
    let f = fs();
    let (doc, a) = f.create(ME, ROOT, b"doc", 0o644, false).unwrap();
    f.write(a, 0, b"v1", 100).unwrap();
    f.flush(a, 100).unwrap();
    let b = f.open(doc.ino, true, true, false).unwrap();
    f.release(a).unwrap();
    f.write(b, 0, b"v2", 100).unwrap();
    f.flush(b, 100).unwrap();
    f.release(b).unwrap();
    let e = f.engine();
    let history: Vec<Vec<u8>> = e
        .versions(doc.lineage.unwrap())
        .iter()
        .map(|v| e.read_content(v.content, v.size, 0, v.size as usize).unwrap())
        .collect();
    assert_eq!(history, vec![b"v1".to_vec(), b"v2".to_vec()]);
}

/// The same for a save committed by fsync: a created file fsynced (its first, empty version)
/// and closed without writes, whose release comes while another handle is half-way through
/// writing, must not commit that half (history "", "x", "xy" instead of "", "xy"). And a
/// reader's close must not cut a new file's first version while its creator still writes.
#[test]
fn releases_commit_only_their_own_uncommitted_saves() {
    let f = fs();
    let (doc, a) = f.create(ME, ROOT, b"doc", 0o644, false).unwrap();
    f.fsync(a).unwrap();
    f.flush(a, 100).unwrap();
    let b = f.open(doc.ino, true, false, false).unwrap();
    f.write(b, 0, b"x", 100).unwrap();
    f.release(a).unwrap();
    f.write(b, 1, b"y", 100).unwrap();
    f.flush(b, 100).unwrap();
    f.release(b).unwrap();
    let history = |lineage| -> Vec<Vec<u8>> {
        let e = f.engine();
        e.versions(lineage).iter().map(|v| e.read_content(v.content, v.size, 0, v.size as usize).unwrap()).collect()
    };
    assert_eq!(history(doc.lineage.unwrap()), vec![b"".to_vec(), b"xy".to_vec()]);

    let (new, w) = f.create(ME, ROOT, b"new", 0o644, false).unwrap();
    f.write(w, 0, b"half", 100).unwrap();
    let r = f.open(new.ino, false, false, false).unwrap();
    f.flush(r, 200).unwrap();
    f.release(r).unwrap();
    f.write(w, 4, b" and the rest", 100).unwrap();
    f.flush(w, 100).unwrap();
    f.release(w).unwrap();
    assert_eq!(history(new.lineage.unwrap()), vec![b"half and the rest".to_vec()]);
}

/// A directory removed while open (by rmdir, or replaced by a rename) lives on until its last
/// close, as on a local file system: it can be `fstat`ed (no link left) and listed (empty),
/// nothing can be created in it, and its last close frees it.
#[test]
fn an_open_directory_outlives_its_name() {
    let f = fs();
    let d1 = f.mkdir(ME, ROOT, b"d1", 0o755).unwrap();
    let d2 = f.mkdir(ME, ROOT, b"d2", 0o755).unwrap();
    let d3 = f.mkdir(ME, ROOT, b"d3", 0o755).unwrap();
    let h2 = f.opendir(d2.ino).unwrap();
    let h3 = f.opendir(d3.ino).unwrap();
    f.rename(ROOT, b"d1", ROOT, b"d2", false, false).unwrap();
    f.rmdir(ROOT, b"d3").unwrap();
    for (ino, h) in [(d2.ino, h2), (d3.ino, h3)] {
        assert_eq!(f.getattr(ino).unwrap().nlink, 0);
        let names: Vec<Vec<u8>> = f.readdir(ino, h, 0).unwrap().into_iter().map(|e| e.3).collect();
        assert_eq!(names, [b".".to_vec(), b"..".to_vec()]);
        assert!(f.create(ME, ino, b"x", 0o644, false).is_err(), "a file created in a removed directory");
        assert!(f.mkdir(ME, ino, b"y", 0o755).is_err(), "a directory created in a removed directory");
        f.releasedir(h).unwrap();
        assert!(f.engine().getattr(ino).is_err(), "freed at its last close");
    }
    assert_eq!(f.lookup(ROOT, b"d2").unwrap().ino, d1.ino);
    assert!(f.engine().orphans().is_empty());
}
