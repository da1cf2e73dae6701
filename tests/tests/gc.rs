//! `cowfs gc`, `cowfs policy` and `cowfs-compact` through the binaries, on a real mount and
//! on an unmounted store: the keep rules, dry run = real run, explanations, the --force
//! guard, snapshot pins, excludes, a deleted big file's space coming back, the daemon's
//! background pass, and bad input refused in one line with the store unchanged.

use std::fs;
use std::path::Path;

use cowfs_e2e::{Mounted, command, cowfs_json, random_bytes, run, store_bytes};

fn save(m: &Mounted, name: &str, versions: u32) {
    for v in 1..=versions {
        fs::write(m.path(name), format!("{name} version {v}\n")).unwrap();
    }
}

fn numbers(store: &Path, path: &str) -> Vec<u64> {
    cowfs_json(&["history", path], store).as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
}

fn compact_json(store: &Path) -> serde_json::Value {
    let (code, out, err) = run(command("cowfs-compact").arg(store).arg("--json"));
    assert_eq!(code, 0, "cowfs-compact: {err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn keep_last_prunes_old_versions_and_dry_run_reports_the_same() {
    let mut m = Mounted::new();
    save(&m, "a.txt", 5);
    save(&m, "b.txt", 2);
    let dry = cowfs_json(&["gc", "--keep-last", "2", "--dry-run"], &m.store);
    assert_eq!(numbers(&m.store, "/a.txt"), [1, 2, 3, 4, 5], "a dry run changed history");
    let real = cowfs_json(&["gc", "--keep-last", "2"], &m.store);
    for k in ["versions_pruned", "versions_pruned_bytes", "reclaimed_bytes", "versions"] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} vs real {real}");
    }
    assert_eq!((dry["dry_run"].as_bool(), real["dry_run"].as_bool()), (Some(true), Some(false)));
    assert_eq!(real["versions_pruned"], 3);
    assert_eq!(numbers(&m.store, "/a.txt"), [4, 5], "numbers never change");
    assert_eq!(numbers(&m.store, "/b.txt"), [1, 2]);
    assert_eq!(fs::read_to_string(m.path("a.txt")).unwrap(), "a.txt version 5\n");
    // Reasons, in JSON and in the table.
    let kept =
        real["versions"].as_array().unwrap().iter().find(|v| v["path"] == "/a.txt" && v["version"] == 5).unwrap();
    assert_eq!(kept["reasons"], serde_json::json!(["current", "last"]));
    let (code, out, err) =
        run(command("cowfs").args(["gc", "--keep-last", "1", "--force", "--dry-run", "--explain", "-s"]).arg(&m.store));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("/a.txt v4") && out.contains("pruned"), "{out}");
    assert!(out.contains("/a.txt v5") && out.contains("kept: current, last"), "{out}");
    // A version saved after gc gets the next number.
    fs::write(m.path("a.txt"), "six").unwrap();
    assert_eq!(numbers(&m.store, "/a.txt"), [4, 5, 6]);
    // The same on the unmounted store, and the log names the gc.
    m.umount();
    let r = cowfs_json(&["gc", "--keep-last", "1", "--force"], &m.store);
    assert_eq!(r["versions_pruned"], 3);
    assert_eq!(numbers(&m.store, "/a.txt"), [6]);
    let log = cowfs_json(&["log", "--action", "gc"], &m.store);
    assert_eq!(log.as_array().unwrap().len(), 2, "{log}");
}

#[test]
fn rules_that_keep_no_history_need_force_and_snapshots_pin_versions() {
    let m = Mounted::new();
    save(&m, "doc", 3);
    cowfs_json(&["snapshot", "create", "base"], &m.store); // holds version 3
    save(&m, "doc", 2); // versions 4 and 5
    let before = store_bytes(&m.store);
    let (code, _, err) = run(command("cowfs").args(["gc", "--keep-last", "1", "-s"]).arg(&m.store));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--force") && err.lines().count() == 1, "{err}");
    let (code, _, err) = run(command("cowfs").args(["gc", "--keep-last", "0", "-s"]).arg(&m.store));
    assert_eq!(code, 1, "{err}");
    assert!(store_bytes(&m.store) == before, "a refused gc changed the store");
    let r = cowfs_json(&["gc", "--keep-last", "0", "--force"], &m.store);
    assert_eq!(numbers(&m.store, "/doc"), [3, 5], "the snapshot's version and the current stay: {r}");
    let pinned = r["versions"].as_array().unwrap().iter().find(|v| v["version"] == 3).unwrap();
    assert_eq!(pinned["reasons"], serde_json::json!(["snapshot base"]));
    assert_eq!(fs::read_to_string(m.path(".cowfs/snapshots/base/doc")).unwrap(), "doc version 3\n");
    // Deleting the snapshot lets its version go.
    cowfs_json(&["snapshot", "delete", "base"], &m.store);
    cowfs_json(&["gc", "--keep-last", "0", "--force"], &m.store);
    assert_eq!(numbers(&m.store, "/doc"), [5]);
}

#[test]
fn a_deleted_big_files_space_comes_back_after_gc_and_compaction() {
    let mut m = Mounted::new();
    fs::write(m.path("small"), "stays").unwrap();
    let base = cowfs_json(&["stats"], &m.store)["actual_size_bytes"].as_u64().unwrap();
    {
        use std::io::Write;
        let mut f = fs::File::create(m.path("big")).unwrap();
        f.set_len(0).unwrap();
        for k in 0..64u64 {
            f.write_all(&random_bytes(1 << 20, k)).unwrap();
        }
    }
    let full = cowfs_json(&["stats"], &m.store)["actual_size_bytes"].as_u64().unwrap();
    assert!(full > base + (60 << 20), "{base} -> {full}");
    // Deleted right after closing it, while a file the test keeps open is deleted too.
    fs::write(m.path("held"), random_bytes(8 << 20, 99)).unwrap();
    let held = fs::File::open(m.path("held")).unwrap();
    fs::remove_file(m.path("held")).unwrap();
    fs::remove_file(m.path("big")).unwrap();
    // gc: every version of the deleted files goes (they have no current content to keep).
    // close() returns before the kernel tells the daemon (RELEASE is asynchronous): gc waits
    // for that, so the big file's space comes back at once; the held file's does not, and gc
    // says so.
    let now = cowfs_json(&["log", "--limit", "1"], &m.store)[0]["time"].as_str().unwrap().to_string();
    let gc = || cowfs_json(&["gc", "--before", &now, "--force"], &m.store);
    let r = gc();
    // (Named by its path, or as an orphan when its writer's RELEASE came after the unlink.)
    let big = r["versions"].as_array().unwrap().iter().find(|v| v["size"] == 64 << 20).unwrap_or_else(|| panic!("{r}"));
    assert_eq!((&big["deleted"], &big["kept"]), (&true.into(), &false.into()), "{r}");
    assert_eq!(r["deleted_files_still_open"], 1, "{r}");
    let reclaimed = r["reclaimed_bytes"].as_u64().unwrap();
    assert!((64 << 20..72 << 20).contains(&reclaimed), "the big file's space, not the held one's: {r}");
    let (code, out, err) = run(command("cowfs").args(["gc", "--before", &now, "--force", "-s"]).arg(&m.store));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("1 deleted file(s) still open"), "{out}");
    drop(held);
    // (Its version is dated after the cutoff: its writer's RELEASE came after the unlink.)
    let r = cowfs_json(&["gc", "--keep-last", "0", "--force"], &m.store);
    assert_eq!(r["deleted_files_still_open"], 0, "{r}");
    assert!(r["reclaimed_bytes"].as_u64().unwrap() >= 8 << 20, "the held file's space once closed: {r}");
    let c = compact_json(&m.store);
    let after = cowfs_json(&["stats"], &m.store)["actual_size_bytes"].as_u64().unwrap();
    println!("store: {base} before, {full} with the file, {after} after gc + compaction; {c}");
    assert!(after < base + (4 << 20), "the store did not shrink back: {base} -> {full} -> {after}");
    assert_eq!(compact_json(&m.store)["segments_compacted"], 0, "a second compaction is a no-op");
    assert_eq!(fs::read_to_string(m.path("small")).unwrap(), "stays");
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store).arg("--verify-data"));
    assert_eq!(code, 0, "fsck after gc and compaction: {out}{err}");
}

#[test]
fn excluded_paths_keep_no_history_and_the_policy_is_stored() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("target")).unwrap();
    save(&m, "notes.txt", 3);
    save(&m, "scratch.tmp", 3);
    save(&m, "target/out.o", 3);
    let p = cowfs_json(&["policy", "set", "--keep-last", "2", "--exclude", "*.tmp", "--exclude", "target/"], &m.store);
    assert_eq!(p["keep_last"], 2);
    assert_eq!(p["exclude"], serde_json::json!(["*.tmp", "target/"]));
    assert_eq!(cowfs_json(&["policy", "show"], &m.store), p);
    // gc without rules uses the policy.
    cowfs_json(&["gc"], &m.store);
    assert_eq!(numbers(&m.store, "/notes.txt"), [2, 3]);
    assert_eq!(numbers(&m.store, "/scratch.tmp"), [3]);
    assert_eq!(numbers(&m.store, "/target/out.o"), [3]);
    m.umount();
    assert_eq!(cowfs_json(&["policy", "show"], &m.store), p, "the policy stays with the store");
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn the_daemon_applies_the_policy_in_the_background() {
    let m = Mounted::with_env(&[("COWFS_BACKGROUND_SECS", "1")]);
    cowfs_json(&["policy", "set", "--keep-last", "1"], &m.store);
    save(&m, "f", 4);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while numbers(&m.store, "/f").len() > 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the background pass never pruned: {:?}",
            numbers(&m.store, "/f")
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert_eq!(numbers(&m.store, "/f"), [4]);
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "f version 4\n");
}

#[test]
fn bad_gc_input_is_one_line_and_changes_nothing() {
    let mut m = Mounted::new();
    save(&m, "f", 2);
    cowfs_json(&["policy", "set", "--keep-all"], &m.store);
    m.umount();
    let before = store_bytes(&m.store);
    let s = m.store.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["gc", "-s", &s], "no keep rule"),
        (vec!["gc", "--keep-within", "3x", "-s", &s], "invalid duration \"3x\""),
        (vec!["gc", "--before", "2026-02-30", "-s", &s], "invalid date"),
        (vec!["policy", "set", "--exclude", "/", "-s", &s], "invalid exclude pattern"),
        (vec!["policy", "show", "-s", "/nonexistent"], "not a cowfs store"),
    ];
    for (args, want) in cases {
        let (code, _, err) = run(command("cowfs").args(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    let (code, _, err) = run(command("cowfs").args(["gc", "--keep-last", "x", "-s", &s]));
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    let (code, _, err) = run(command("cowfs-compact").arg(m.dir.path()));
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("not a cowfs store") || err.contains("not a store"), "{err}");
    let (code, _, err) = run(&mut command("cowfs-compact"));
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(store_bytes(&m.store) == before, "a refused command changed the store");
}
