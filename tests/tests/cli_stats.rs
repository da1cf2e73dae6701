//! `cowfs stats` on a real store on disk, through the built binary: JSON numbers match the
//! store, and bad input gives one line, a non-zero exit and no change to anything.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, InodeId, Options};

fn cowfs() -> Command {
    cowfs_e2e::command("cowfs")
}

fn make_store(dir: &Path) {
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(dir).unwrap());
    let e = Engine::open(st, Options::default()).unwrap();
    for name in ["a", "b"] {
        let ino = e.create_file(InodeId::ROOT, name.as_bytes(), 0o644).unwrap().ino;
        let mut w = e.open_file(ino).unwrap();
        w.write(0, &vec![7u8; 300_000]).unwrap();
        w.commit(true).unwrap();
    }
    e.close().unwrap();
}

#[test]
fn stats_json_reports_the_store() {
    let t = tempfile::tempdir().unwrap();
    make_store(t.path());
    let out = cowfs().args(["stats", "--json", "-s"]).arg(t.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["total_files"], 2);
    assert_eq!(v["total_versions"], 2);
    assert_eq!(v["logical_size_bytes"], 600_000);
    // Both files hold the same bytes: stored once.
    assert!(v["chunk_raw_bytes"].as_u64().unwrap() <= 300_000, "{v}");
}

#[test]
fn stats_rejects_bad_stores_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    std::fs::write(t.path().join("x.txt"), "not a store").unwrap();
    let missing = t.path().join("missing");
    for (dir, want) in [(t.path().to_path_buf(), "not a cowfs store"), (missing.clone(), "no such directory")] {
        let out = cowfs().args(["stats", "-s"]).arg(&dir).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
    assert!(!missing.exists(), "a failed command must not create the directory");
    assert_eq!(std::fs::read_dir(t.path()).unwrap().count(), 1, "nothing was added to the foreign directory");
}

/// Regression: `cowfs stats | head -1` panicked on the closed pipe ("failed printing to
/// stdout"); a closed pipe now ends the command quietly, as SIGPIPE would.
#[test]
fn a_closed_stdout_is_not_a_panic() {
    let t = tempfile::tempdir().unwrap();
    make_store(t.path());
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader); // every write to stdout fails with EPIPE
    let out = cowfs().args(["stats", "-s"]).arg(t.path()).stdout(writer).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(141), "{err}");
}

/// Holes are not data: a 1 TiB sparse file with 4 KiB written in its middle counts 4 KiB of
/// logical size, and a file copied inside the mount counts twice in the logical size and once
/// in the chunks (the savings). Regression: the sizes of sparse versions were summed, and
/// `cowfs stats` printed a logical size of 4.6 EB.
#[test]
fn holes_are_not_data_and_a_copy_is_saved_once() {
    let m = cowfs_e2e::Mounted::new();
    let sparse = std::fs::File::create(m.path("sparse")).unwrap();
    sparse.set_len(1 << 40).unwrap();
    std::os::unix::fs::FileExt::write_all_at(&sparse, &[0x5a; 4096], 1 << 39).unwrap();
    sparse.sync_all().unwrap();
    drop(sparse);
    let data = cowfs_e2e::random_bytes(1 << 20, 7);
    std::fs::write(m.path("a"), &data).unwrap();
    std::fs::copy(m.path("a"), m.path("b")).unwrap();
    assert_eq!(std::fs::read(m.path("b")).unwrap(), data);
    let s = m.stats();
    let versions = |path: &str| {
        let h = cowfs_e2e::cowfs_json(&["history", path], &m.store);
        h.as_array().unwrap().iter().map(|v| v["size"].as_u64().unwrap()).collect::<Vec<u64>>()
    };
    // One version each, saved at the fsync and the closes.
    let (va, vb, vs) = (versions("/a"), versions("/b"), versions("/sparse"));
    assert_eq!((va, vb, vs), (vec![1 << 20], vec![1 << 20], vec![1 << 40]));
    let want = (2 << 20) + 4096;
    assert_eq!(s["logical_size_bytes"], want, "{s}");
    assert_eq!(s["current_size_bytes"], (1u64 << 40) + (2 << 20), "apparent sizes: {s}");
    let saved = s["dedup_savings_bytes"].as_u64().unwrap();
    assert!(saved >= 1 << 20 && saved < want, "the copy's bytes are stored once: {s}");
    let pct = s["dedup_percentage"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&pct) && pct >= 40.0, "{s}");
}
