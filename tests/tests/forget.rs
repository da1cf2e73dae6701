//! `cowfs forget` through the binaries on a real mount: a secret's old versions leave history
//! and their bytes leave the store's files; a deleted file's whole history goes; --recursive;
//! snapshots and current contents are kept and said so, or with --include-snapshots the file
//! leaves the snapshots; the dry run reports what the real run
//! does; `cowfs log` records it; bad input is one line and changes nothing.

use std::fs;
use std::path::Path;

use cowfs_e2e::{Mounted, command, cowfs_json, random_bytes, run, store_bytes};

fn numbers(store: &Path, path: &str) -> Vec<u64> {
    cowfs_json(&["history", path], store).as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect()
}

/// Whether any file of the store directory holds `needle`.
fn store_holds(store: &Path, needle: &[u8]) -> bool {
    store_bytes(store).values().any(|bytes| bytes.windows(needle.len()).any(|w| w == needle))
}

#[test]
fn a_secret_leaves_history_and_the_store() {
    let m = Mounted::new();
    let secret = random_bytes(64 << 10, 42);
    fs::write(m.path("config"), &secret).unwrap();
    fs::write(m.path("config"), [&secret[..], b"edited"].concat()).unwrap();
    fs::write(m.path("config"), b"no secret here").unwrap();
    let needle = &secret[1000..1064];
    assert!(store_holds(&m.store, needle), "the check cannot see the secret");

    let dry = cowfs_json(&["forget", "/config", "--dry-run"], &m.store);
    assert_eq!(numbers(&m.store, "/config"), [1, 2, 3], "a dry run changed history");
    let real = cowfs_json(&["forget", "/config"], &m.store);
    for k in ["versions_forgotten", "versions_forgotten_bytes", "kept_current", "kept_by_snapshots", "versions"] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} vs real {real}");
    }
    assert_eq!((real["versions_forgotten"].as_u64(), real["kept_current"].as_u64()), (Some(2), Some(1)), "{real}");
    assert_eq!(numbers(&m.store, "/config"), [3]);
    assert_eq!(fs::read(m.path("config")).unwrap(), b"no secret here");
    assert!(fs::read(m.path(".cowfs/versions/config/1")).is_err(), "version 1 still readable");
    assert!(!store_holds(&m.store, needle), "the secret's bytes are still in the store");
    let log = cowfs_json(&["log", "--action", "gc"], &m.store);
    assert!(log.as_array().unwrap().iter().any(|e| e["detail"] == "forget /config: 2 versions"), "{log}");
}

#[test]
fn a_deleted_file_loses_its_whole_history_and_a_snapshot_keeps_what_it_holds() {
    let m = Mounted::new();
    fs::write(m.path("big.bin"), random_bytes(2 << 20, 1)).unwrap();
    fs::write(m.path("big.bin"), random_bytes(2 << 20, 2)).unwrap();
    fs::remove_file(m.path("big.bin")).unwrap();
    fs::write(m.path("s.txt"), "one").unwrap();
    cowfs_json(&["snapshot", "create", "keepme"], &m.store);
    fs::write(m.path("s.txt"), "two").unwrap();
    fs::write(m.path("s.txt"), "three").unwrap();

    let r = cowfs_json(&["forget", "/big.bin"], &m.store);
    assert_eq!(r["versions_forgotten"], 2, "{r}");
    assert!(r["store_bytes_before"].as_u64().unwrap() >= r["store_bytes_after"].as_u64().unwrap() + (4 << 20), "{r}");
    let (code, _, err) = run(command("cowfs").args(["history", "/big.bin", "-s"]).arg(&m.store));
    assert!(code != 0 && err.contains("no such file"), "{err}");

    let r = cowfs_json(&["forget", "/s.txt"], &m.store);
    assert_eq!((r["versions_forgotten"].as_u64(), r["kept_by_snapshots"].as_u64()), (Some(1), Some(1)), "{r}");
    assert_eq!(r["snapshots"], serde_json::json!(["keepme"]));
    assert_eq!(numbers(&m.store, "/s.txt"), [1, 3]);
    assert_eq!(fs::read_to_string(m.path(".cowfs/snapshots/keepme/s.txt")).unwrap(), "one");
    // The table says what stayed and why.
    let (code, out, _) = run(command("cowfs").args(["forget", "/s.txt", "-s"]).arg(&m.store));
    assert_eq!(code, 0);
    assert!(out.contains("forgot 0 versions") && out.contains("held by snapshot(s) keepme"), "{out}");
}

#[test]
fn recursive_forgets_every_file_below_a_directory_deleted_ones_included() {
    let m = Mounted::new();
    fs::create_dir_all(m.path("d/sub")).unwrap();
    for f in ["d/x", "d/sub/y", "d/z", "other"] {
        fs::write(m.path(f), "1").unwrap();
        fs::write(m.path(f), "2").unwrap();
    }
    fs::remove_file(m.path("d/z")).unwrap();
    let (code, _, err) = run(command("cowfs").args(["forget", "/d", "-s"]).arg(&m.store));
    assert_eq!((code, err.lines().count()), (1, 1), "{err}");
    assert!(err.contains("give --recursive"), "{err}");
    // From inside the mount, relative to the current directory, without -s.
    let (code, out, err) = run(command("cowfs").args(["forget", "-r", "d", "--json"]).current_dir(&m.mnt));
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!((r["files"].as_u64(), r["versions_forgotten"].as_u64()), (Some(3), Some(4)), "{r}");
    assert_eq!(numbers(&m.store, "/d/x"), [2]);
    assert_eq!(numbers(&m.store, "/d/sub/y"), [2]);
    assert_eq!(numbers(&m.store, "/other"), [1, 2], "outside the directory");
    assert_eq!(fs::read_to_string(m.path("d/sub/y")).unwrap(), "2");
}

#[test]
fn bad_forget_input_is_one_line_and_changes_nothing() {
    let mut m = Mounted::new();
    fs::write(m.path("f"), "1").unwrap();
    fs::write(m.path("f"), "2").unwrap();
    fs::create_dir(m.path("dir")).unwrap();
    m.umount();
    let before = store_bytes(&m.store);
    let s = m.store.to_str().unwrap();
    for (args, want) in [
        (vec!["forget", "/nope"], "/nope: no such file, and none was deleted there"),
        (vec!["forget", "/dir"], "give --recursive"),
        (vec!["forget", "/../f"], "'..'"),
        (vec!["forget", "/f", "-s", "/nonexistent"], "/nonexistent"),
    ] {
        let mut cmd = command("cowfs");
        cmd.args(&args);
        if !args.contains(&"-s") {
            cmd.args(["-s", s]);
        }
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    assert_eq!(store_bytes(&m.store), before, "a refused forget changed the store");
}

/// --include-snapshots: the file leaves every snapshot (which keeps everything else), its
/// versions there go too, their bytes leave the store, the store becomes format version 5,
/// and all of it survives a remount; the dry run says the same and changes nothing.
#[test]
fn include_snapshots_takes_the_file_out_of_every_snapshot() {
    let mut m = Mounted::new();
    let secret = random_bytes(64 << 10, 7);
    fs::write(m.path("s.bin"), &secret).unwrap();
    fs::write(m.path("other"), "stays").unwrap();
    cowfs_json(&["snapshot", "create", "one"], &m.store);
    cowfs_json(&["snapshot", "create", "two"], &m.store);
    fs::write(m.path("s.bin"), "clean now").unwrap();
    let needle = &secret[5000..5064];
    assert!(store_holds(&m.store, needle));

    let dry = cowfs_json(&["forget", "/s.bin", "--include-snapshots", "--dry-run"], &m.store);
    assert_eq!(dry["snapshots"], serde_json::json!(["one", "two"]), "{dry}");
    assert!(m.path(".cowfs/snapshots/one/s.bin").exists(), "a dry run changed a snapshot");
    let real = cowfs_json(&["forget", "/s.bin", "--include-snapshots"], &m.store);
    for k in ["versions_forgotten", "kept_current", "kept_by_snapshots", "snapshots", "versions"] {
        assert_eq!(dry[k], real[k], "{k}: dry {dry} vs real {real}");
    }
    assert_eq!((real["versions_forgotten"].as_u64(), real["kept_by_snapshots"].as_u64()), (Some(1), Some(0)), "{real}");
    // The kernel may keep the entries it looked up for a second (their time to live).
    std::thread::sleep(std::time::Duration::from_millis(1100));
    for snap in ["one", "two"] {
        assert!(!m.path(&format!(".cowfs/snapshots/{snap}/s.bin")).exists(), "s.bin still in {snap}");
        assert_eq!(fs::read_to_string(m.path(&format!(".cowfs/snapshots/{snap}/other"))).unwrap(), "stays");
    }
    assert!(!store_holds(&m.store, needle), "the secret's bytes are still in the store");
    assert_eq!(fs::read(m.store.join("STORE")).unwrap()[8..12], 5u32.to_le_bytes());
    let log = cowfs_json(&["log", "--action", "gc"], &m.store);
    assert!(log.as_array().unwrap().iter().any(|e| e["detail"] == "forget /s.bin: out of snapshots one, two"), "{log}");
    m.remount();
    assert!(!m.path(".cowfs/snapshots/two/s.bin").exists());
    assert_eq!(numbers(&m.store, "/s.bin"), [2]);
    assert_eq!(fs::read_to_string(m.path("s.bin")).unwrap(), "clean now");
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg("--verify-data").arg(&m.store));
    assert_eq!(code, 0, "{out}{err}");
}
