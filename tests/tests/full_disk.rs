//! A real full device: the store on a 48 MiB tmpfs (mounted by the test, as root), filled
//! through the mount until ENOSPC. Then: what was saved reads back, deleting still works
//! (the store's reserve), `cowfs gc` + `cowfs-compact` give the space back without a
//! remount, new files fit again, and after unmounting fsck finds nothing and a remount
//! has every saved file.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;

use cowfs_e2e::{Mounted, Tmpfs, command, cowfs_json, free_bytes, random_bytes, run};

/// Writes and fsyncs a file; `Ok(false)` when the device was full at any step.
fn save(path: &Path, data: &[u8]) -> std::io::Result<bool> {
    let full = |e: &std::io::Error| e.raw_os_error() == Some(28);
    let res = fs::File::create(path).and_then(|mut f| {
        f.write_all(data)?;
        f.sync_all()
    });
    match res {
        Ok(()) => Ok(true),
        Err(e) if full(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

#[test]
fn a_full_tmpfs_is_cleaned_up_and_compacted_through_the_mount() {
    let dir = tempfile::tempdir().unwrap();
    let small = Tmpfs::new(dir.path().join("small"), "48m");
    let store = small.0.join("store");
    let mut m = Mounted::at(dir, store.clone(), &[("COWFS_SEGMENT_BYTES", "4194304")]);
    assert!(store.join("RESERVE").exists(), "the store holds space back for cleaning up");

    let mut saved = Vec::new();
    let mut refused = 0;
    for k in 0..40u64 {
        let name = format!("f{k}");
        let data = random_bytes(3 << 20, k);
        if save(&m.path(&name), &data).unwrap() {
            saved.push((name, data));
        } else {
            refused += 1;
            if refused == 3 {
                break;
            }
        }
    }
    assert_eq!(refused, 3, "48 MiB never filled up");
    assert!(saved.len() >= 8, "only {} files fit", saved.len());
    // What was saved reads back; the refused files are not half there under their names.
    for (n, d) in &saved {
        assert_eq!(&fs::read(m.path(n)).unwrap(), d, "{n} after the device filled");
    }
    let free_full = free_bytes(&small.0);

    // Delete all but two; the deletes fit even on the full device.
    let keep = 2;
    for (n, _) in &saved[keep..] {
        fs::remove_file(m.path(n)).unwrap_or_else(|e| panic!("rm {n} on a full device: {e}"));
    }
    for entry in fs::read_dir(&m.mnt).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if !saved[..keep].iter().any(|(n, _)| *n == name) {
            fs::remove_file(m.path(&name)).unwrap_or_else(|e| panic!("rm {name}: {e}"));
        }
    }
    saved.truncate(keep);
    let now = cowfs_json(&["log", "--limit", "1"], &store)[0]["time"].as_str().unwrap().to_string();
    let gc = cowfs_json(&["gc", "--before", &now, "--force"], &store);
    let (code, out, err) = run(command("cowfs-compact").arg(&store).arg("--json"));
    assert_eq!(code, 0, "cowfs-compact on a full device: {err}");
    let free_after = free_bytes(&small.0);
    println!("free: {free_full} bytes when full, {free_after} after gc + compaction; gc {gc}; compact {out}");
    assert!(free_after > free_full + (20 << 20), "space did not come back: {free_full} -> {free_after}");

    // Room again, without a remount.
    let data = random_bytes(8 << 20, 99);
    assert!(save(&m.path("after"), &data).unwrap(), "no room after compaction");
    saved.push(("after".into(), data));
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&store).arg("--verify-data"));
    assert_eq!(code, 0, "fsck after filling up: {out}{err}");
    m.mount();
    for (n, d) in &saved {
        assert_eq!(&fs::read(m.path(n)).unwrap(), d, "{n} after remount");
    }
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), saved.len());
    m.umount();
    drop(m);
}

/// `fallocate` promises space: asking for more than the store's disk has free is ENOSPC
/// (with and without FALLOC_FL_KEEP_SIZE) and changes nothing; what fits is granted; punching
/// a hole needs no space.
#[test]
fn fallocate_beyond_the_free_space_is_enospc() {
    let dir = tempfile::tempdir().unwrap();
    let small = Tmpfs::new(dir.path().join("small"), "48m");
    let m = Mounted::at(dir, small.0.join("store"), &[]);
    let f = m.path("f");
    fs::write(&f, b"kept").unwrap();
    let fallocate = |args: &[&str]| run(Command::new("fallocate").args(args).arg(&f));
    for args in [&["-l", "1G"][..], &["-n", "-l", "1G"], &["-o", "4", "-l", "60M"]] {
        let (code, _, err) = fallocate(args);
        assert_ne!(code, 0, "fallocate {args:?} beyond {} free bytes succeeded", free_bytes(&small.0));
        assert!(err.contains("No space left on device"), "fallocate {args:?}: {err}");
        assert_eq!(fs::read(&f).unwrap(), b"kept", "after the refused fallocate {args:?}");
    }
    let (code, _, err) = fallocate(&["-l", "8M"]);
    assert_eq!(code, 0, "fallocate of 8 MiB on a 48 MiB disk: {err}");
    assert_eq!(fs::metadata(&f).unwrap().len(), 8 << 20);
    let (code, _, err) = fallocate(&["-p", "-o", "0", "-l", "1G"]);
    assert_eq!(code, 0, "punching a hole bigger than the free space: {err}");
    assert_eq!(fs::read(&f).unwrap(), vec![0; 8 << 20]);
    drop(m);
}
