//! The default policy and the space guard through the binaries: a new store gets the
//! recommended policy; a store on a small tmpfs (mounted by the test, as root) takes twice the
//! device's size in versions of one file, every write accepted, with the oldest history
//! trimmed, the snapshot's version, the newest versions and every current file kept, and the
//! guard's prunes in `cowfs log`.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cowfs_e2e::{Mounted, Tmpfs, command, cowfs_json, free_bytes, random_bytes, run};

fn save(path: &Path, data: &[u8]) {
    let mut f = fs::File::create(path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    f.write_all(data).and_then(|()| f.sync_all()).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

fn numbers(store: &Path, path: &str) -> Vec<u64> {
    cowfs_json(&["history", path], store).as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
}

#[test]
fn a_new_store_gets_the_recommended_policy_and_set_changes_only_what_it_names() {
    let m = Mounted::new();
    let p = cowfs_json(&["policy", "show"], &m.store);
    assert_eq!(p["keep_within"], "24h", "{p}");
    assert_eq!(
        (p["keep_hourly"].as_u64(), p["keep_daily"].as_u64(), p["keep_weekly"].as_u64()),
        (Some(48), Some(31), Some(52))
    );
    assert_eq!(p["min_free"], "5%", "{p}");
    // The guard alone: the rules stay.
    let p = cowfs_json(&["policy", "set", "--min-free", "10%", "--max-size", "1G"], &m.store);
    assert_eq!(
        (p["min_free"].as_str(), p["max_size"].as_str(), p["keep_within"].as_str()),
        (Some("10%"), Some("1GiB"), Some("24h"))
    );
    // Rules alone: the guard stays.
    let p = cowfs_json(&["policy", "set", "--keep-last", "3"], &m.store);
    assert_eq!(
        (p["keep_last"].as_u64(), p["keep_within"].as_str(), p["min_free"].as_str()),
        (Some(3), None, Some("10%"))
    );
    let p = cowfs_json(&["policy", "set", "--keep-all", "--max-size", "none"], &m.store);
    assert_eq!((p["keep_last"].as_u64(), p["max_size"].as_str(), p["min_free"].as_str()), (None, None, Some("10%")));
    assert_eq!(cowfs_json(&["policy", "set", "--recommended"], &m.store), cowfs_json(&["policy", "show"], &m.store));
    assert_eq!(cowfs_json(&["policy", "show"], &m.store)["keep_within"], "24h");
}

#[test]
fn bad_policy_values_are_one_line_and_change_nothing() {
    let m = Mounted::new();
    let before = fs::read(m.store.join("POLICY")).unwrap();
    let s = m.store.to_str().unwrap();
    for (args, want) in [
        (vec!["policy", "set", "--min-free", "150%"], "invalid amount \"150%\""),
        (vec!["policy", "set", "--min-free", "lots"], "invalid amount \"lots\""),
        (vec!["policy", "set", "--max-size", "10%"], "max size \"10%\" must be bytes"),
        (vec!["policy", "set", "--max-size", "0"], "invalid amount \"0\""),
        (vec!["policy", "set"], "nothing to set"),
    ] {
        let (code, _, err) = run(command("cowfs").args(&args).args(["-s", s]));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    assert_eq!(fs::read(m.store.join("POLICY")).unwrap(), before, "a refused policy changed the stored one");
}

#[test]
fn a_small_disk_keeps_taking_writes_with_its_oldest_history_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    let small = Tmpfs::new(dir.path().join("small"), "64m");
    let device = 64u64 << 20;
    let store = small.0.join("store");
    let mut m = Mounted::at(dir, store.clone(), &[("COWFS_SEGMENT_BYTES", "4194304")]);
    cowfs_json(&["policy", "set", "--min-free", "30%"], &store);
    let keep = random_bytes(4 << 20, 1000);
    save(&m.path("keep.bin"), &keep);

    // Versions of one 1 MiB file, twice the device's size in all, each written and fsynced
    // like a program saving its state every tenth of a second (the guard checks every second).
    let versions = 2 * device / (1 << 20);
    let mut last = Vec::new();
    for k in 0..versions {
        last = random_bytes(1 << 20, k);
        save(&m.path("state.bin"), &last);
        if k == 2 {
            cowfs_json(&["snapshot", "create", "early"], &store);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = numbers(&store, "/state.bin");
    assert!(left.len() < versions as usize / 2, "history was not trimmed: {} versions left", left.len());
    assert!(!left.contains(&1) && !left.contains(&2), "the oldest go first: {left:?}");
    assert!(left.contains(&3), "the snapshot's version stays: {left:?}");
    assert_eq!(left.last(), Some(&versions), "the newest stays: {left:?}");
    let trimmed: Vec<u64> = (4..versions).filter(|n| !left.contains(n)).collect();
    assert!(trimmed.iter().all(|n| left.iter().filter(|k| **k > 3).all(|k| k > n)), "not oldest first: {left:?}");
    assert_eq!(fs::read(m.path("state.bin")).unwrap(), last);
    assert_eq!(fs::read(m.path("keep.bin")).unwrap(), keep);
    assert_eq!(fs::read(m.path(".cowfs/snapshots/early/state.bin")).unwrap(), random_bytes(1 << 20, 2));
    let log = cowfs_json(&["log", "--action", "gc"], &store);
    let guard: Vec<&serde_json::Value> = log
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["detail"].as_str().unwrap_or("").starts_with("space guard:"))
        .collect();
    assert!(!guard.is_empty(), "no guard entry in the log: {log}");
    eprintln!(
        "{} versions written, {} left, {} guard passes, {} bytes free",
        versions,
        left.len(),
        guard.len(),
        free_bytes(&small.0)
    );

    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&store));
    assert_eq!(code, 0, "fsck after the guard: {out}{err}");
    m.mount();
    assert_eq!(fs::read(m.path("state.bin")).unwrap(), last);
    m.umount();
}
