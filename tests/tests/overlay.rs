//! Overlay mounts (`cowfs mount --lower DIR STORE MNT`) through the real binaries: pjdfstest
//! and fsx in a directory that exists only in the lower tree, random edits of a 64 MiB lower
//! file checked against a whole copy, kill -9 mid-write, a lower file changed underneath, and
//! the refusals. After every test the lower tree is checked unchanged, byte for byte.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use cowfs_e2e::{Mounted, command, cowfs_json, random_bytes, run, store_bytes};

/// Calls `f(path below root, path, metadata)` for every entry below `root`.
fn walk(root: &Path, f: &mut dyn FnMut(String, &Path, &fs::Metadata)) {
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let m = fs::symlink_metadata(&p).unwrap();
            if m.is_dir() {
                stack.push(p.clone());
            }
            f(p.strip_prefix(root).unwrap().display().to_string(), &p, &m);
        }
    }
}

/// The bytes of a file, or a symlink's target; nothing for a directory.
fn bytes_of(p: &Path, m: &fs::Metadata) -> Vec<u8> {
    if m.is_dir() {
        Vec::new()
    } else if m.file_type().is_symlink() {
        fs::read_link(p).unwrap().into_os_string().into_encoded_bytes()
    } else {
        fs::read(p).unwrap()
    }
}

/// Everything of a tree that an overlay must never change, by path: type and mode, size,
/// mtime and ctime (ns), and the blake3 of a file's bytes or a symlink's target.
fn digest(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, &mut |key, p, m| {
        let what = blake3::hash(&bytes_of(p, m)).to_hex().to_string();
        let times = format!("{}.{} {}.{}", m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec());
        out.insert(key, format!("{:o} {} {times} {what}", m.mode(), m.size()));
    });
    out
}

/// A lower tree in a directory of its own (a mount's directory goes with the mount):
/// `work/` (a few files and a subdirectory, where the suites run), `data/big` (`big` random
/// bytes), `docs/` and a symlink.
fn lower_tree(big: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let lower = dir.path().join("lower");
    for d in ["work/sub", "data", "docs/deep/er"] {
        fs::create_dir_all(lower.join(d)).unwrap();
    }
    fs::write(lower.join("work/keep"), b"a lower file the suites leave alone").unwrap();
    fs::write(lower.join("work/sub/f"), random_bytes(100_000, 3)).unwrap();
    fs::write(lower.join("data/big"), random_bytes(big, 1)).unwrap();
    fs::write(lower.join("docs/deep/er/note"), b"deep").unwrap();
    std::os::unix::fs::symlink("../data/big", lower.join("docs/big")).unwrap();
    (dir, lower)
}

fn check_tools() {
    cowfs_e2e::require_tool("pjdfstest");
    cowfs_e2e::require_tool("fsx");
}

#[test]
fn pjdfstest_passes_in_a_lower_directory() {
    check_tools();
    cowfs_e2e::require_user("tests");
    let (_t, lower) = lower_tree(1 << 20);
    let before = digest(&lower);
    let m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    let conf = m.dir.path().join("pjdfstest.toml");
    fs::write(
        &conf,
        "[features]\nposix_fallocate = {}\n[settings]\nnaptime = 0.001\nallow_remount = false\n\
         [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"tests\", \"tests\"]]\n",
    )
    .unwrap();
    let work = m.path("work");
    let (code, out, err) = run(Command::new("pjdfstest").arg("-c").arg(&conf).arg("-p").arg(&work).current_dir(&work));
    let passed = out.lines().filter(|l| l.trim_end().ends_with(" ok")).count();
    let failed: Vec<&str> = out.lines().filter(|l| l.trim_end().ends_with("FAILED")).collect();
    println!("pjdfstest in a lower directory: {passed} passed, {} failed", failed.len());
    assert!(failed.is_empty() && code == 0, "pjdfstest failures:\n{}\n{err}", failed.join("\n"));
    assert!(passed > 300, "pjdfstest ran only {passed} tests:\n{out}\n{err}");
    assert_eq!(fs::read(m.path("work/keep")).unwrap(), b"a lower file the suites leave alone");
    drop(m);
    assert_eq!(digest(&lower), before, "the lower tree changed");
}

/// fsx in the lower directory (it truncates its file first: a lower file's whole life as an
/// ordinary file), then random edits of a 64 MiB lower file through the mount compared with a
/// copy after each read and as a whole after a remount; inode numbers stay; the lower tree
/// never changes.
#[test]
fn fsx_and_random_edits_of_a_lower_file() {
    check_tools();
    let (_t, lower) = lower_tree(64 << 20);
    fs::write(lower.join("work/fsx"), random_bytes(1 << 20, 9)).unwrap();
    let before = digest(&lower);
    let mut m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    let conf = m.dir.path().join("fsx.toml");
    fs::write(&conf, "flen = 1048576\n[opsize]\nmin = 1\nmax = 131072\n").unwrap();
    let ops = if std::env::var("COWFS_SOAK").is_ok() { 100_000 } else { 10_000 };
    let (code, out, err) = run(Command::new("fsx")
        .args(["-N", &ops.to_string(), "-S", "1", "-f"])
        .arg(&conf)
        .arg("-P")
        .arg(m.dir.path())
        .arg(m.path("work/fsx")));
    assert!(code == 0 && format!("{out}{err}").contains("A-OK"), "fsx failed:\n{out}\n{err}");

    let segments = |store: &Path| -> u64 {
        store_bytes(store).iter().filter(|(k, _)| k.starts_with("seg-")).map(|(_, v)| v.len() as u64).sum()
    };
    let fsx_bytes = segments(&m.store);
    let seed: u64 = std::env::var("COWFS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let steps = if std::env::var("COWFS_SOAK").is_ok() { 20_000 } else { 1500 };
    let path = m.path("data/big");
    let ino = fs::metadata(&path).unwrap().ino();
    let mut model = random_bytes(64 << 20, 1);
    let f = fs::OpenOptions::new().read(true).write(true).open(&path).unwrap();
    let other = fs::File::open(m.path("work/sub/f")).unwrap();
    let other_bytes = random_bytes(100_000, 3);
    let mut rng = seed;
    let mut next = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    for step in 0..steps {
        let len = model.len() as u64;
        let ctx = format!("seed {seed} step {step} (replay with COWFS_SEED={seed})");
        match next(10) {
            0..=3 => {
                let (at, n) = (next(len + 4096), 1 + next(16384) as usize);
                let bytes = random_bytes(n, seed * 1_000_003 + step);
                f.write_all_at(&bytes, at).unwrap();
                if model.len() < at as usize + n {
                    model.resize(at as usize + n, 0);
                }
                model[at as usize..at as usize + n].copy_from_slice(&bytes);
            }
            4..=6 => {
                let (at, n) = (next(len + 100), 1 + next(200_000) as usize);
                let mut buf = vec![0u8; n];
                let got = f.read_at(&mut buf, at).unwrap();
                let end = (at as usize + n).min(model.len());
                let want = model.get(at as usize..end).unwrap_or(&[]);
                assert!(buf[..got] == *want, "{ctx}: read {n} at {at}");
            }
            7 => {
                let size = if next(4) == 0 { next(len + 1_000_000) } else { len - next(len / 8 + 1) };
                f.set_len(size).unwrap();
                model.resize(size as usize, 0);
            }
            8 => {
                let (at, n) = (next(len), 1 + next(300_000));
                use nix::fcntl::{FallocateFlags, fallocate};
                let flags = FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
                fallocate(&f, flags, at as i64, n as i64).unwrap();
                let end = (at + n).min(len) as usize;
                model[at as usize..end].fill(0);
            }
            _ => {
                // A range of another lower file copied in (copy_file_range), then fsync.
                let (from, at) = (next(90_000), next(len));
                let n = 1 + next(10_000) as usize;
                let mut done = 0;
                while done < n {
                    let (mut fo, mut to) = (from as i64 + done as i64, at as i64 + done as i64);
                    let c = nix::fcntl::copy_file_range(&other, Some(&mut fo), &f, Some(&mut to), n - done).unwrap();
                    assert!(c > 0, "{ctx}: copy_file_range copied nothing");
                    done += c;
                }
                if model.len() < at as usize + n {
                    model.resize(at as usize + n, 0);
                }
                model[at as usize..at as usize + n].copy_from_slice(&other_bytes[from as usize..from as usize + n]);
                f.sync_all().unwrap();
            }
        }
    }
    f.sync_all().unwrap();
    drop((f, other));
    m.remount();
    assert_eq!(fs::metadata(&path).unwrap().ino(), ino, "the inode number survives a remount");
    assert!(fs::read(&path).unwrap() == model, "seed {seed}: the file after a remount");
    let grew = segments(&m.store) - fsx_bytes;
    println!("random edits of a 64 MiB lower file: {steps} steps, the segments grew {grew} bytes");
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store).arg("--verify-data"));
    assert_eq!(code, 0, "fsck after the edits: {out}{err}");
    assert_eq!(digest(&lower), before, "the lower tree changed");
}

/// kill -9 of the daemon while a lower file is being written: after a remount every write that
/// fsync acknowledged is there, and the rest of the file is the lower bytes or a later write.
#[test]
fn kill_9_mid_write_keeps_what_fsync_acknowledged() {
    let (_t, lower) = lower_tree(16 << 20);
    let before = digest(&lower);
    let mut m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    let path = m.path("data/big");
    let original = random_bytes(16 << 20, 1);
    let f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    let mut acked = Vec::new();
    for k in 0..20u64 {
        let (at, bytes) = (k * 800_000 + 1234, random_bytes(5000, 100 + k));
        f.write_all_at(&bytes, at).unwrap();
        if k % 2 == 0 {
            f.sync_data().unwrap();
            acked.push((at, bytes));
        }
    }
    // Writes in flight, never synced, while the daemon dies.
    let tail = random_bytes(1 << 20, 7);
    f.write_all_at(&tail, 3 << 20).unwrap();
    m.kill_daemon();
    drop(f);
    m.detach();
    m.mount();
    let got = fs::read(&path).unwrap();
    assert_eq!(got.len(), original.len());
    for (at, bytes) in &acked {
        assert!(got[*at as usize..*at as usize + bytes.len()] == bytes[..], "the fsynced write at {at} is lost");
    }
    // Elsewhere: the lower bytes, or a write that was made (synced or not).
    let changed = (0..got.len()).filter(|&i| got[i] != original[i]).count();
    assert!(changed <= 20 * 5000 + tail.len(), "{changed} bytes differ from the lower file");
    drop(m);
    assert_eq!(digest(&lower), before, "the lower tree changed");
}

/// A lower file changed underneath the mount: its ranges read as EIO (never the new or the old
/// bytes silently), with one log line naming it; the rest of the mount works.
#[test]
fn a_lower_file_changed_underneath_reads_as_eio() {
    let (_t, lower) = lower_tree(4 << 20);
    let m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    let f = fs::File::open(m.path("data/big")).unwrap();
    let mut buf = vec![0u8; 4096];
    f.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, random_bytes(4096, 1));
    // Same size, different bytes (a ctime change even if the mtime were put back).
    let w = fs::OpenOptions::new().write(true).open(lower.join("data/big")).unwrap();
    w.write_all_at(b"changed", 3 << 20).unwrap();
    drop(w);
    // A range the kernel has not cached yet goes to the daemon.
    let err = f.read_exact_at(&mut buf, 2 << 20).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert_eq!(fs::read(m.path("docs/deep/er/note")).unwrap(), b"deep", "the rest works");
    let log = fs::read_to_string(m.store.join("daemon.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("data/big") && l.contains("changed")).collect();
    assert_eq!(lines.len(), 1, "one log line names the file: {log}");
    // cowfs-fsck lists it (errors: exit 4), and only it.
    drop(f);
    let mut m = m;
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store));
    assert_eq!(code, 4, "{out}{err}");
    let named: Vec<&str> = out.lines().filter(|l| l.starts_with("ERROR:")).collect();
    assert!(named.len() == 1 && named[0].contains("data/big") && named[0].contains("EIO"), "{out}");
}

/// Waits until `done` holds, asking every 20 ms; fails after `secs` seconds.
fn within_seconds(secs: u64, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "still not so after {secs} s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// On a read-only mount the kernel reads an untouched lower file itself (FUSE passthrough):
/// the daemon checks it at open and, at its last close, reports a change made while it was
/// open (a read through the daemon would have failed with EIO instead — the test above). A
/// remount to read-write with a passthrough open: a write open of that file gets EBUSY, not
/// the kernel's EIO, while another read open shares it; once closed, the file takes writes.
#[test]
fn a_read_only_mount_passes_untouched_lower_files_through() {
    let (_t, lower) = lower_tree(4 << 20);
    let mut m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    m.umount();
    m.mount_by(command("cowfs").args(["mount", "-o", "ro"]).arg(&m.store).arg(&m.mnt));
    let mut buf = vec![0u8; 4096];
    let big = fs::File::open(m.path("data/big")).unwrap();
    big.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(buf, random_bytes(4096, 1));
    let w = fs::OpenOptions::new().write(true).open(lower.join("data/big")).unwrap();
    w.write_all_at(b"changed", 3 << 20).unwrap();
    drop(w);
    // Read where nothing was cached: the kernel reads the lower file, the daemon is not asked.
    big.read_exact_at(&mut buf, 3 << 20).expect("a passthrough read does not go to the daemon");
    assert_eq!(&buf[..7], b"changed");
    let log = || fs::read_to_string(m.store.join("daemon.log")).unwrap();
    assert!(!log().contains("changed while open"), "{}", log());
    drop(big);
    // The kernel sends the release after close returns.
    let reported = || log().lines().filter(|l| l.contains("data/big") && l.contains("changed while open")).count();
    within_seconds(5, || reported() > 0);
    assert_eq!(reported(), 1, "the last close reports the change once: {}", log());

    let keep = m.path("work/keep");
    let reader = fs::File::open(&keep).unwrap();
    let (code, _, err) = run(command("cowfs").args(["mount", "-o", "remount,rw"]).arg(&m.store).arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(std::time::Duration::from_millis(1100)); // the daemon reads the flags once a second
    let busy = fs::OpenOptions::new().append(true).open(&keep).unwrap_err();
    assert_eq!(busy.raw_os_error(), Some(libc::EBUSY), "{busy}");
    assert_eq!(fs::read(&keep).unwrap(), b"a lower file the suites leave alone", "a read open shares it");
    drop(reader);
    within_seconds(5, || fs::OpenOptions::new().append(true).open(&keep).is_ok());
    fs::OpenOptions::new().append(true).open(&keep).unwrap().write_all_at(b"!", 0).unwrap();
    assert_eq!(fs::read(&keep).unwrap(), b"a lower file the suites leave alone!");
    assert_eq!(fs::read(lower.join("work/keep")).unwrap(), b"a lower file the suites leave alone");
}

/// Bad lower trees are refused with one line naming them, before anything changes; a store's
/// recorded lower trees are used again, and others only with --relower.
#[test]
fn bad_lower_trees_are_refused_with_one_line() {
    let (t, lower) = lower_tree(1000);
    let dir = t.path();
    let (store, mnt) = (dir.join("store"), dir.join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let mount = |lowers: &[&Path], extra: &[&str]| {
        let mut cmd = command("cowfs");
        cmd.arg("mount");
        for l in lowers {
            cmd.arg("--lower").arg(l);
        }
        run(cmd.args(extra).arg(&store).arg(&mnt))
    };
    fs::write(dir.join("file"), b"").unwrap();
    for (lowers, says) in [
        (vec![dir.join("missing")], "missing"),
        (vec![dir.join("file")], "is not a directory"),
        (vec![mnt.clone()], "is the mount point"),
        (vec![dir.to_path_buf()], "contains the mount point"),
        (vec![lower.clone(), lower.clone()], "is given twice"),
    ] {
        let ls: Vec<&Path> = lowers.iter().map(|p| p.as_path()).collect();
        let (code, out, err) = mount(&ls, &[]);
        assert!(code != 0 && err.contains(says) && err.trim().lines().count() == 1, "{lowers:?}: {code} {out}{err}");
        assert!(!err.contains("panicked"), "{err}");
    }
    // Recorded at the first overlay mount, used again without --lower.
    assert_eq!(mount(&[&lower], &[]).0, 0);
    assert_eq!(fs::read(mnt.join("docs/deep/er/note")).unwrap(), b"deep");
    assert_eq!(run(command("cowfs").arg("umount").arg(&mnt)).0, 0);
    let (code, out, err) = mount(&[], &["--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&lower.display().to_string()), "the mount reports its lower tree: {out}");
    assert_eq!(fs::read(mnt.join("docs/deep/er/note")).unwrap(), b"deep");
    assert_eq!(run(command("cowfs").arg("umount").arg(&mnt)).0, 0);
    // The tree moved: its recorded path is refused, so is the new one without --relower, and
    // the store does not change; with it, the moved tree serves (its files are the same files).
    let moved = dir.join("moved");
    fs::rename(&lower, &moved).unwrap();
    let stored = store_bytes(&store);
    let (code, _, err) = mount(&[], &[]);
    assert!(code != 0 && err.contains("lower") && err.trim().lines().count() == 1, "{err}");
    let (code, _, err) = mount(&[&moved], &[]);
    assert!(code != 0 && err.contains("--relower") && err.trim().lines().count() == 1, "{err}");
    assert_eq!(store_bytes(&store), stored, "a refused mount changed the store");
    let (code, _, err) = mount(&[&moved], &["--relower"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read(mnt.join("data/big")).unwrap(), random_bytes(1000, 1));
    assert_eq!(run(command("cowfs").arg("umount").arg(&mnt)).0, 0);
    fs::rename(&moved, &lower).unwrap();
    // The store inside the lower tree.
    let inside = lower.join("work/store");
    let mut cmd = command("cowfs");
    let (code, _, err) = run(cmd.arg("mount").arg("--lower").arg(&lower).arg(&inside).arg(&mnt));
    assert!(code != 0 && err.contains("contains the store"), "{err}");
}

/// A snapshot taken before anything looked into the lower tree shows it in
/// `.cowfs/snapshots/`, as it was then; `snapshot restore` brings back what was deleted since.
#[test]
fn a_snapshot_of_a_fresh_overlay_mount_shows_the_lower_tree() {
    let (_t, lower) = lower_tree(1000);
    let before = digest(&lower);
    let m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    cowfs_json(&["snapshot", "create", "fresh"], &m.store);
    fs::remove_file(m.path("docs/deep/er/note")).unwrap();
    fs::write(m.path("work/keep"), b"changed").unwrap();
    let snap = m.path(".cowfs/snapshots/fresh");
    assert_eq!(fs::read(snap.join("docs/deep/er/note")).unwrap(), b"deep");
    assert_eq!(fs::read(snap.join("work/keep")).unwrap(), b"a lower file the suites leave alone");
    let mut names: Vec<String> =
        fs::read_dir(snap.join("data")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["big"], "a directory never looked into in the mount, listed through the snapshot");
    // What differs from the lower tree, through the daemon: JSON, and the table for a path in
    // the mount.
    let rows = cowfs_json(&["overlay", "status"], &m.store);
    let rows: Vec<(String, String)> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["path"].as_str().unwrap().to_string(), r["change"].as_str().unwrap().to_string()))
        .collect();
    let want = [("/docs/deep/er/note", "deleted"), ("/work/keep", "modified")];
    assert_eq!(rows, want.map(|(p, c)| (p.to_string(), c.to_string())));
    let (code, out, err) = run(command("cowfs").args(["overlay", "status", "-s"]).arg(&m.store).arg(m.path("work")));
    assert_eq!(code, 0, "{err}");
    assert!(out.trim().starts_with("modified  /work/keep (") && out.trim().lines().count() == 1, "{out}");
    cowfs_json(&["snapshot", "restore", "fresh"], &m.store);
    assert_eq!(fs::read(m.path("docs/deep/er/note")).unwrap(), b"deep");
    assert_eq!(fs::read(m.path("work/keep")).unwrap(), b"a lower file the suites leave alone");
    assert_eq!(fs::read(m.path("data/big")).unwrap(), random_bytes(1000, 1));
    drop(m);
    assert_eq!(digest(&lower), before, "the lower tree changed");
}

/// Two lower trees through the mount: the first on top, directories of the same path merged,
/// a file over a directory hiding it; changes stay in the store, both trees unchanged.
#[test]
fn two_lower_trees_merge_through_the_mount() {
    let (_t1, top) = lower_tree(1000);
    let (_t2, bottom) = lower_tree(2000);
    fs::write(top.join("docs/only-top"), b"top").unwrap();
    fs::write(bottom.join("docs/only-bottom"), b"bottom").unwrap();
    fs::remove_dir_all(bottom.join("work")).unwrap();
    fs::write(bottom.join("work"), b"a file under the top's directory: hidden").unwrap();
    let (before_top, before_bottom) = (digest(&top), digest(&bottom));
    let m = Mounted::overlay(tempfile::tempdir().unwrap(), &[top.clone(), bottom.clone()]);
    let mut names: Vec<String> =
        fs::read_dir(m.path("docs")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["big", "deep", "only-bottom", "only-top"]);
    assert_eq!(fs::read(m.path("data/big")).unwrap(), random_bytes(1000, 1), "the top layer's file");
    assert!(m.path("work").is_dir(), "the top layer's directory hides the bottom's file");
    fs::write(m.path("docs/only-bottom"), b"changed in the store").unwrap();
    fs::remove_file(m.path("docs/only-top")).unwrap();
    assert_eq!(fs::read(m.path("docs/only-bottom")).unwrap(), b"changed in the store");
    assert!(!m.path("docs/only-top").exists());
    drop(m);
    assert_eq!((digest(&top), digest(&bottom)), (before_top, before_bottom), "a lower tree changed");
}

/// The bytes of every file and symlink below `root`, by path.
fn contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    walk(root, &mut |key, p, m| {
        if !m.is_dir() {
            out.insert(key, bytes_of(p, m));
        }
    });
    out
}

/// `cowfs overlay absorb`: of one path with the store unmounted, then of everything through
/// the daemon, which detaches the store from its lower tree; it then mounts and reads the same
/// with the lower tree gone: files, a snapshot, version 1 (the lower original), fsck clean.
#[test]
fn absorb_detaches_a_store_from_its_lower_tree() {
    let (_t, lower) = lower_tree(8 << 20);
    let before = digest(&lower);
    let mut m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    let f = fs::OpenOptions::new().write(true).open(m.path("data/big")).unwrap();
    f.write_all_at(&random_bytes(4096, 9), 1 << 20).unwrap();
    f.sync_all().unwrap();
    drop(f);
    fs::remove_file(m.path("docs/deep/er/note")).unwrap();
    m.umount();
    // One path, unmounted (no daemon): data/big's 8 MiB, every byte some version refers to.
    let (code, out, err) = run(command("cowfs").args(["overlay", "absorb", "--json", "-s"]).arg(&m.store).arg("/data"));
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    let got = (r["files"].as_u64(), r["bytes"].as_u64(), r["detached"].as_bool());
    assert_eq!(got, (Some(1), Some(8 << 20), Some(false)), "{r}");
    m.mount();
    cowfs_json(&["snapshot", "create", "absorbed"], &m.store);
    let (code, out, err) = run(command("cowfs").args(["overlay", "absorb", "-s"]).arg(&m.store));
    assert_eq!(code, 0, "{err}");
    // work/sub/f and work/keep; docs/deep/er/note went before any save, so nothing refers to it.
    assert!(out.contains("absorbed 2 lower files (100035 bytes), 1 absorbed before"), "{out}");
    assert!(out.contains("no longer depends on its lower trees"), "{out}");
    let want = contents(&m.mnt);
    m.umount();
    assert!(!m.store.join("LOWERS").exists());
    let gone = lower.with_extension("gone");
    fs::rename(&lower, &gone).unwrap();
    m.lowers.clear();
    m.mount();
    assert_eq!(contents(&m.mnt), want, "the same without the lower tree");
    assert_eq!(contents(&m.path(".cowfs/snapshots/absorbed")), want, "and in a snapshot");
    let mut big = random_bytes(8 << 20, 1);
    big[1 << 20..(1 << 20) + 4096].copy_from_slice(&random_bytes(4096, 9));
    assert_eq!(want["data/big"], big);
    cowfs_json(&["restore", "/data/big", "--version", "1"], &m.store);
    assert_eq!(fs::read(m.path("data/big")).unwrap(), random_bytes(8 << 20, 1), "version 1: the lower original");
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store));
    assert_eq!(code, 0, "{out}{err}");
    fs::rename(&gone, &lower).unwrap();
    assert_eq!(digest(&lower), before, "the lower tree changed");
}

/// A lower file that changed underneath cannot be absorbed: `overlay absorb` names it on one
/// line, absorbs the rest and exits 1; the store keeps its lower tree.
#[test]
fn absorb_names_a_lower_file_changed_underneath() {
    let (_t, lower) = lower_tree(1000);
    let m = Mounted::overlay(tempfile::tempdir().unwrap(), std::slice::from_ref(&lower));
    assert_eq!(fs::read(m.path("work/keep")).unwrap(), b"a lower file the suites leave alone");
    fs::write(lower.join("work/keep"), b"changed underneath").unwrap();
    let (code, out, err) = run(command("cowfs").args(["overlay", "absorb", "-s"]).arg(&m.store));
    assert_eq!(code, 1, "{out}{err}");
    let named: Vec<&str> = err.lines().filter(|l| l.contains("work/keep")).collect();
    assert!(named.len() == 1 && named[0].contains("size 35 -> 18"), "{err}");
    assert!(out.contains("absorbed 3 lower files") && out.contains("still reads 1 lower files"), "{out}");
    assert!(m.store.join("LOWERS").exists());
}

/// Runs `sql` through the `sqlite3` shell on database `db`; returns its output.
fn sqlite(db: &Path, sql: &str) -> String {
    cowfs_e2e::require_tool("sqlite3");
    let mut child = Command::new("sqlite3")
        .arg(db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run sqlite3");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), sql.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && err.is_empty(), "sqlite3 {}: {err}", db.display());
    String::from_utf8(out.stdout).unwrap()
}

/// The single-file form (cowblock's use): `cowfs mount --lower original.db STORE copy.db`.
/// SQLite commits 2,000 transactions into the copy and `PRAGMA integrity_check` is ok; the copy
/// keeps them across a remount without `--lower`; `restore --version 1` through the daemon
/// shows the original's rows in the mount at once; fsck is clean; the original never changes.
#[test]
fn sqlite_commits_2000_transactions_into_a_virtual_copy_of_a_database() {
    let t = tempfile::tempdir().unwrap();
    let orig = t.path().join("original.db");
    let rows = "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20000) \
                INSERT INTO t(v) SELECT randomblob(100) FROM n;";
    sqlite(&orig, &format!("CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); {rows}"));
    let before = digest(t.path());
    let mut m = Mounted::virtual_copy(tempfile::tempdir().unwrap(), &orig);
    assert_eq!(fs::read(&m.mnt).unwrap(), fs::read(&orig).unwrap(), "the copy shows the original");
    let mut sql = String::new();
    for i in 0..2000 {
        let id = i * 7 % 20000 + 1;
        sql += &format!(
            "BEGIN; UPDATE t SET v = randomblob(120) WHERE id = {id}; INSERT INTO t(v) VALUES (randomblob(50)); COMMIT;\n"
        );
    }
    sqlite(&m.mnt, &sql);
    let check = "PRAGMA integrity_check; SELECT count(*) FROM t;";
    assert_eq!(sqlite(&m.mnt, check), "ok\n22000\n");
    let status = cowfs_json(&["overlay", "status"], &m.store);
    assert_eq!(status[0]["path"], "/original.db", "{status}");
    assert_eq!(status[0]["change"], "modified", "{status}");
    let size = fs::metadata(&m.mnt).unwrap().len();
    assert!(status[0]["stored_bytes"].as_u64().unwrap() < size, "only what SQLite wrote is stored: {status}");
    m.umount();
    m.lowers.clear();
    m.mount();
    assert_eq!(sqlite(&m.mnt, check), "ok\n22000\n", "after a remount without --lower");
    // The mount file names the copy's one file, as a path in any mount names its file.
    let mount_file = m.mnt.to_str().unwrap();
    let history = cowfs_json(&["history", mount_file], &m.store);
    assert!(history.as_array().unwrap().len() >= 2, "the original and the saves: {history}");
    cowfs_json(&["restore", mount_file, "--version", "1"], &m.store);
    assert_eq!(sqlite(&m.mnt, check), "ok\n20000\n", "version 1: the original");
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(digest(t.path()), before, "the original changed");
}

/// What a virtual copy refuses, each with one line naming it and nothing mounted: a mount
/// file that is not empty, a directory as the file to copy, two files, and a file other than
/// the one the store copies.
#[test]
fn a_virtual_copy_refuses_bad_files() {
    let t = tempfile::tempdir().unwrap();
    let (orig, other) = (t.path().join("original"), t.path().join("other"));
    let (o, x) = (orig.as_path(), other.as_path());
    fs::write(&orig, b"the original").unwrap();
    fs::write(&other, b"another file").unwrap();
    let (store, copy) = (t.path().join("store"), t.path().join("copy"));
    let mount = |lowers: &[&Path]| {
        let mut cmd = command("cowfs");
        cmd.arg("mount");
        for l in lowers {
            cmd.arg("--lower").arg(l);
        }
        run(cmd.arg(&store).arg(&copy))
    };
    fs::write(&copy, b"data").unwrap();
    let (code, _, err) = mount(&[o]);
    assert!(code != 0 && err.contains("is not empty") && err.lines().count() == 1, "{err}");
    fs::write(&copy, b"").unwrap();
    for (lowers, says) in [
        (&[t.path()][..], "is not a regular file"),
        (&[o, x][..], "copies one file"),
        (&[copy.as_path()][..], "is the mount point"),
    ] {
        let (code, _, err) = mount(lowers);
        assert!(code != 0 && err.contains(says) && err.lines().count() == 1, "{lowers:?}: {err}");
        assert!(!store.exists(), "{lowers:?}: a refused mount made a store");
    }
    let mut m = Mounted::virtual_copy(tempfile::tempdir().unwrap(), &orig);
    assert_eq!(fs::read(&m.mnt).unwrap(), b"the original");
    m.umount();
    let mut cmd = command("cowfs");
    let (code, _, err) = run(cmd.arg("mount").arg("--lower").arg(&other).arg(&m.store).arg(&m.mnt));
    assert!(code != 0 && err.contains("virtual copy of original, not of other"), "{err}");
    assert_eq!(fs::read(&m.mnt).unwrap(), b"", "nothing mounted");
}
