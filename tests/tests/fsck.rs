//! `cowfs-fsck` (read-only) through its binary: clean on a store written through a mount,
//! exit 4 naming the place for corruption in a chunk, a node or a checkpoint, exit 8/16 for
//! operational and usage errors, and the store's bytes unchanged by the check.

use std::fs;
use std::path::Path;

use cowfs_e2e::{Mounted, command, random_bytes, run, store_bytes};

fn fsck(store: &Path, args: &[&str]) -> (i32, serde_json::Value) {
    let (code, out, err) = run(command("cowfs-fsck").arg(store).args(args).arg("--json"));
    let v = serde_json::from_str(&out).unwrap_or_else(|e| panic!("cowfs-fsck printed {out:?} ({err}): {e}"));
    (code, v)
}

#[test]
fn fsck_is_clean_then_finds_corruption_and_changes_nothing() {
    let mut m = Mounted::new();
    fs::write(m.path("a"), random_bytes(300_000, 1)).unwrap();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/b"), "hello").unwrap();
    fs::hard_link(m.path("d/b"), m.path("d/c")).unwrap();
    m.umount();
    let before = store_bytes(&m.store);
    let (code, v) = fsck(&m.store, &["--verify-data"]);
    assert_eq!(code, 0, "{v}");
    assert!(v["chunks_verified"].as_u64().unwrap() > 0, "{v}");
    assert!(store_bytes(&m.store) == before, "fsck changed the store");

    // A flipped byte in the middle of the first segment: chunk data of file a.
    let seg = m.store.join("seg-0000000000010000.log");
    let mut bytes = fs::read(&seg).unwrap();
    let mid = bytes.len() / 3;
    bytes[mid] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let (code, v) = fsck(&m.store, &["--verify-data"]);
    assert_eq!(code, 4, "{v}");
    let text = v["findings"].to_string();
    assert!(text.contains("seg-0000000000010000.log"), "{v}");

    // A corrupt checkpoint is reported too.
    bytes[mid] ^= 0x40;
    fs::write(&seg, &bytes).unwrap();
    let ckpt = fs::read_dir(&m.store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .unwrap();
    let mut c = fs::read(&ckpt).unwrap();
    let n = c.len() / 2;
    c[n] ^= 1;
    fs::write(&ckpt, &c).unwrap();
    let (code, v) = fsck(&m.store, &[]);
    assert_eq!(code, 4, "{v}");
    assert!(v["findings"].to_string().contains("checkpoint"), "{v}");

    let (code, _, err) = run(command("cowfs-fsck").arg(m.dir.path().join("nope")));
    assert_eq!((code, err.lines().count()), (8, 1), "{err}");
    let (code, _, err) = run(command("cowfs-fsck").arg(&m.store).arg("--repair-everything"));
    assert_eq!((code, err.lines().count()), (16, 1), "{err}");
}

#[test]
fn repair_fixes_what_it_can_and_refuses_a_mounted_store() {
    let mut m = Mounted::new();
    fs::write(m.path("a"), random_bytes(200_000, 2)).unwrap();
    fs::write(m.path("b"), "keep me").unwrap();
    // A clean store: --repair changes nothing.
    m.umount();
    let before = store_bytes(&m.store);
    let (code, v) = fsck(&m.store, &["--repair"]);
    assert_eq!(code, 0, "{v}");
    assert!(store_bytes(&m.store) == before, "repair of a clean store changed it");
    let damage = |store: &Path| {
        for p in fs::read_dir(store).unwrap().map(|e| e.unwrap().path()) {
            if p.extension().is_some_and(|x| x == "ckpt") {
                let mut c = fs::read(&p).unwrap();
                c[30] ^= 0xFF;
                fs::write(&p, &c).unwrap();
            }
        }
    };
    // Every checkpoint damaged. Mounted (the engine falls back to a full replay), a repair is
    // refused.
    damage(&m.store);
    m.mount();
    let (code, _, err) = run(command("cowfs-fsck").arg(&m.store).arg("--repair"));
    assert_eq!((code, err.lines().count()), (8, 1), "{err}");
    assert!(err.contains("in use"), "{err}");
    m.umount(); // its close wrote a good checkpoint: damage them again
    damage(&m.store);
    let (code, v) = fsck(&m.store, &["--repair"]);
    assert_eq!(code, 1, "errors corrected: {v}");
    assert!(v["repaired"].to_string().contains("checkpoint rebuilt"), "{v}");
    let (code, v) = fsck(&m.store, &["--verify-data"]);
    assert_eq!(code, 0, "{v}");
    m.mount();
    assert_eq!(fs::read_to_string(m.path("b")).unwrap(), "keep me");
}

/// The store's header overwritten with random bytes (every segment and checkpoint intact):
/// the mount still comes up (from `STORE.backup`, with a warning in the daemon's log),
/// `cowfs-fsck` reports it (exit 4), `--repair` rewrites it (exit 1), then all is clean. With
/// the backup gone too, `--repair` rebuilds both from the segments. Before the backup was kept,
/// this store was lost: `--repair` exited 8 with "bad magic in STORE".
#[test]
fn a_store_whose_header_was_overwritten_mounts_and_is_repaired() {
    let mut m = Mounted::new();
    fs::write(m.path("keep"), "every byte of me").unwrap();
    m.umount();
    let good = fs::read(m.store.join("STORE")).unwrap();
    fs::write(m.store.join("STORE"), random_bytes(72, 5)).unwrap();
    m.mount();
    assert_eq!(fs::read_to_string(m.path("keep")).unwrap(), "every byte of me");
    let log = fs::read_to_string(m.store.join("daemon.log")).unwrap();
    assert!(log.contains("WARNING") && log.contains("STORE is unusable"), "{log}");
    m.umount();
    let (code, v) = fsck(&m.store, &[]);
    assert_eq!(code, 4, "{v}");
    let (code, v) = fsck(&m.store, &["--repair"]);
    assert_eq!(code, 1, "{v}");
    assert_eq!(fs::read(m.store.join("STORE")).unwrap(), good);
    assert_eq!(fsck(&m.store, &["--verify-data"]).0, 0);

    for name in ["STORE", "STORE.backup"] {
        fs::write(m.store.join(name), random_bytes(72, 6)).unwrap();
    }
    let (code, _, err) = run(command("cowfs").args(["mount"]).arg(&m.store).arg(&m.mnt));
    assert_ne!(code, 0, "mounted a store with no usable header");
    assert!(err.lines().count() == 1 && err.contains("STORE"), "{err}");
    let (code, v) = fsck(&m.store, &["--repair"]);
    assert_eq!(code, 1, "{v}");
    assert!(v["repaired"].to_string().contains("rebuilt"), "{v}");
    assert_eq!(fsck(&m.store, &["--verify-data"]).0, 0);
    m.mount();
    assert_eq!(fs::read_to_string(m.path("keep")).unwrap(), "every byte of me");
}
