//! The mount, end to end through the `cowfs` binary on a real FUSE mount and a real store:
//! files, directories, symlinks, hard links, persistence of content and exact times across
//! remounts, one version per save, sparse files, kill -9 after an fsync, and refusals.
//! Fails (does not skip) when FUSE is unavailable.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use cowfs_e2e::{Mounted, command, random_bytes, run};

#[test]
fn fuse_is_available() {
    assert!(std::path::Path::new("/dev/fuse").exists(), "/dev/fuse is missing: the mount tests cannot run");
    let (code, _, _) = run(Command::new("fusermount3").arg("-V"));
    assert_eq!(code, 0, "fusermount3 is missing: install fuse3");
}

/// A mount right after a plain `umount` (the daemon may still be committing and closing the
/// store) and right after `kill -9` of the daemon (its dead mount still in the table)
/// succeeds, with everything acknowledged there.
#[test]
fn mount_again_right_after_umount_or_kill_9() {
    let mut m = Mounted::new();
    for i in 0..5 {
        let data = random_bytes(8 << 20, i);
        let mut f = fs::File::create(m.path(&format!("f{i}"))).unwrap();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        drop(f);
        let (code, _, err) = run(Command::new("umount").arg(&m.mnt));
        assert_eq!(code, 0, "umount: {err}");
        m.mount();
        assert!(fs::read(m.path(&format!("f{i}"))).unwrap() == data, "round {i}: f{i} after the remount");
    }
    let data = random_bytes(1 << 20, 99);
    let mut f = fs::File::create(m.path("last")).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    drop(f);
    m.kill_daemon();
    m.mount();
    assert!(fs::read(m.path("last")).unwrap() == data, "fsynced before kill -9");
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 6);
}

/// In a set-group-ID directory, new entries take the directory's group, and new directories
/// are set-group-ID too (as on local file systems); elsewhere the creator's group.
#[test]
fn a_set_group_id_directory_passes_on_its_group() {
    use std::os::unix::fs::PermissionsExt;
    let m = Mounted::new();
    let g = m.path("g");
    fs::create_dir(&g).unwrap();
    std::os::unix::fs::chown(&g, None, Some(65534)).unwrap();
    fs::set_permissions(&g, fs::Permissions::from_mode(0o2775)).unwrap();
    fs::create_dir(g.join("sub")).unwrap();
    fs::write(g.join("f"), b"x").unwrap();
    std::os::unix::fs::symlink("f", g.join("l")).unwrap();
    let sub = fs::metadata(g.join("sub")).unwrap();
    assert_eq!((sub.gid(), sub.mode() & 0o2000), (65534, 0o2000), "a directory inherits group and S_ISGID");
    assert_eq!(fs::metadata(g.join("f")).unwrap().gid(), 65534);
    assert_eq!(fs::symlink_metadata(g.join("l")).unwrap().gid(), 65534);
    assert_eq!(fs::metadata(g.join("f")).unwrap().mode() & 0o2000, 0, "a file does not become set-group-ID");
    fs::create_dir(m.path("plain")).unwrap();
    let plain = fs::metadata(m.path("plain")).unwrap();
    assert_eq!((plain.gid(), plain.mode() & 0o2000), (0, 0));
}

/// A write, a truncate or an fallocate by a user without CAP_FSETID clears S_ISUID, and
/// S_ISGID when the group-execute bit is set (the FUSE kernel module's rule, which the mount
/// keeps); fallocate by a user who may write the file works.
#[test]
fn writes_by_others_clear_set_user_id() {
    use std::os::unix::fs::PermissionsExt;
    cowfs_e2e::require_user("tests");
    let m = Mounted::new();
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).unwrap();
    let f = m.path("f");
    fs::write(&f, b"").unwrap();
    let as_tests = |cmd: &str| {
        let (code, _, err) =
            run(Command::new("runuser").args(["-u", "tests", "--", "sh", "-c", cmd]).arg("sh").arg(&f));
        assert_eq!(code, 0, "{cmd}: {err}");
    };
    for (cmd, before, after) in [
        ("echo x >> \"$1\"", 0o6666, 0o2666),
        ("echo x >> \"$1\"", 0o6676, 0o0676),
        ("truncate -s 3 \"$1\"", 0o6676, 0o0676),
        ("fallocate -l 65536 \"$1\"", 0o6666, 0o2666),
        ("fallocate -l 131072 \"$1\"", 0o6676, 0o0676),
    ] {
        fs::set_permissions(&f, fs::Permissions::from_mode(before)).unwrap();
        as_tests(cmd);
        assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, after, "{cmd} on {before:o}");
    }
}

/// An open directory replaced by a rename, or removed by rmdir, can still be `fstat`ed
/// (`st_nlink` 0) and listed (empty) through its descriptor; nothing can be created in it.
#[test]
fn an_open_directory_outlives_its_name() {
    let m = Mounted::new();
    for d in ["d1", "d2", "d3"] {
        fs::create_dir(m.path(d)).unwrap();
    }
    let d2 = fs::File::open(m.path("d2")).unwrap();
    fs::rename(m.path("d1"), m.path("d2")).unwrap();
    let d3 = fs::File::open(m.path("d3")).unwrap();
    fs::remove_dir(m.path("d3")).unwrap();
    for d in [&d2, &d3] {
        let st = d.metadata().expect("fstat of an open directory whose name went");
        assert!(st.is_dir());
        assert_eq!(st.nlink(), 0);
        let fd = std::os::fd::AsFd::as_fd(d);
        let listing = nix::dir::Dir::openat(fd, ".", nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty());
        let names: Vec<String> = listing
            .unwrap()
            .iter()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n != "." && n != "..")
            .collect();
        assert!(names.is_empty(), "{names:?}");
        let created = nix::fcntl::openat(
            fd,
            "x",
            nix::fcntl::OFlag::O_CREAT | nix::fcntl::OFlag::O_WRONLY,
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        );
        assert_eq!(created.unwrap_err(), nix::errno::Errno::ENOENT);
    }
    let mut names: Vec<_> = fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
    names.sort();
    assert_eq!(names, ["d2"]);
}

/// POSIX rewinddir: names created after `opendir` are seen once the stream is rewound; a
/// stream read on without a rewind keeps its offsets.
#[test]
fn rewinddir_sees_names_created_since_opendir() {
    let m = Mounted::new();
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    for i in 0..100 {
        fs::write(d.join(format!("old{i}")), b"").unwrap();
    }
    let names = |it: nix::dir::Iter<'_>| -> Vec<String> {
        it.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).filter(|n| n != "." && n != "..").collect()
    };
    let mut dir = nix::dir::Dir::open(&d, nix::fcntl::OFlag::O_RDONLY, nix::sys::stat::Mode::empty()).unwrap();
    assert_eq!(names(dir.iter()).len(), 100); // dropping the iterator rewinds the stream
    for i in 0..300 {
        fs::write(d.join(format!("new{i}")), b"").unwrap();
    }
    let after = names(dir.iter());
    assert_eq!(after.len(), 400, "names seen after rewinddir");
    assert_eq!(after.iter().filter(|n| n.starts_with("new")).count(), 300);
}

/// A file handle (`name_to_handle_at`) of `path`, as the kernel encodes it.
#[allow(unsafe_code)] // no safe wrapper of the two system calls in libc or nix
fn handle_of(path: &std::path::Path) -> Vec<u32> {
    use std::os::unix::ffi::OsStrExt;
    // `struct file_handle` (two 32-bit words) and MAX_HANDLE_SZ bytes after it.
    let mut h = vec![0u32; 2 + 128 / 4];
    h[0] = 128;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut mount_id = 0;
    // SAFETY: `h` is a `struct file_handle` whose `handle_bytes` says how much room follows
    // it; `c` is a NUL-terminated path; both outlive the call.
    let r = unsafe { libc::name_to_handle_at(libc::AT_FDCWD, c.as_ptr(), h.as_mut_ptr().cast(), &mut mount_id, 0) };
    assert_eq!(r, 0, "name_to_handle_at {}: {}", path.display(), std::io::Error::last_os_error());
    h
}

/// Opens what `handle` names on the file system mounted at `mnt` (as root).
#[allow(unsafe_code)]
fn open_by_handle(mnt: &std::path::Path, handle: &[u32], flags: i32) -> std::io::Result<fs::File> {
    use std::os::fd::FromRawFd;
    let at = fs::File::open(mnt)?;
    let mut h = handle.to_vec();
    // SAFETY: `h` is a handle filled in by `name_to_handle_at`; `at` is an open descriptor.
    // A descriptor it returns is new and owned by nobody else.
    let fd = unsafe { libc::open_by_handle_at(std::os::fd::AsRawFd::as_raw_fd(&at), h.as_mut_ptr().cast(), flags) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: see above.
    Ok(unsafe { fs::File::from_raw_fd(fd) })
}

/// File handles stay valid for the life of the inode, across a remount (the kernel then finds
/// the inode by looking up "." in it, and a directory's parent by ".."); a deleted file's
/// handle is stale (ESTALE), and so is a `.cowfs/` node's from an earlier mount.
#[test]
fn file_handles_outlive_the_kernel_cache_and_a_remount() {
    let mut m = Mounted::new();
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/f"), b"by handle").unwrap();
    fs::write(m.path("gone"), b"x").unwrap();
    let (f, b, gone) = (handle_of(&m.path("a/b/f")), handle_of(&m.path("a/b")), handle_of(&m.path("gone")));
    let read = |mnt: &std::path::Path, h: &[u32]| {
        let mut s = String::new();
        open_by_handle(mnt, h, libc::O_RDONLY).expect("open_by_handle_at").read_to_string(&mut s).unwrap();
        s
    };
    let version = handle_of(&m.path(".cowfs/versions/a/b/f/1"));
    assert_eq!(read(&m.mnt, &f), "by handle");
    assert_eq!(read(&m.mnt, &version), "by handle");
    m.remount();
    assert_eq!(read(&m.mnt, &f), "by handle", "after a remount");
    // `.cowfs/` numbers are the mount's own: an earlier mount's handle is stale, even once the
    // number names a node again.
    fs::metadata(m.path(".cowfs/versions/gone/1")).unwrap();
    fs::metadata(m.path(".cowfs/versions/a/b/f/1")).unwrap();
    let e = open_by_handle(&m.mnt, &version, libc::O_RDONLY).expect_err("a version by an old mount's handle");
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
    let dir = open_by_handle(&m.mnt, &b, libc::O_RDONLY | libc::O_DIRECTORY).expect("a directory by handle");
    assert_eq!(dir.metadata().unwrap().ino(), fs::metadata(m.path("a/b")).unwrap().ino());
    // The directory's own path, rebuilt by the kernel through "..": the handle leads back to it.
    let link = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&dir))).unwrap();
    assert_eq!(link, m.path("a/b"));
    fs::remove_file(m.path("gone")).unwrap();
    let e = open_by_handle(&m.mnt, &gone, libc::O_RDONLY).expect_err("a deleted file by handle");
    assert_eq!(e.raw_os_error(), Some(libc::ESTALE), "{e}");
}

/// `cowfs mount --json` and `cowfs umount --json` say what they did, for scripts.
#[test]
fn mount_and_umount_print_json() {
    let mut m = Mounted::new();
    m.umount();
    let (code, out, err) = run(command("cowfs").arg("mount").arg("--json").arg(&m.store).arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let (store, mnt) = (m.store.canonicalize().unwrap(), m.mnt.canonicalize().unwrap());
    assert_eq!(v["mountpoint"], mnt.to_str().unwrap(), "{out}");
    assert_eq!(v["storage"], store.to_str().unwrap(), "{out}");
    let pid = v["pid"].as_u64().unwrap_or_else(|| panic!("no pid: {out}"));
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists(), "{out}");
    let (code, out, err) = run(command("cowfs").arg("umount").arg("--json").arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    assert_eq!(v["mountpoint"], mnt.to_str().unwrap(), "{out}");
    assert_eq!(v["storage"], store.to_str().unwrap(), "{out}");
    // Without --json both are silent, like mount(8).
    let (code, out, _) = run(command("cowfs").arg("mount").arg(&m.store).arg(&m.mnt));
    assert_eq!((code, out.as_str()), (0, ""));
    let (code, out, _) = run(command("cowfs").arg("umount").arg(&m.mnt));
    assert_eq!((code, out.as_str()), (0, ""));
    // A foreground mount has no moment to report: refused as a usage error.
    let (code, _, err) = run(command("cowfs").args(["mount", "--json", "--foreground"]).arg(&m.store).arg(&m.mnt));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--foreground"), "{err}");
}

/// Every segment keeps a descriptor open: a daemon started with a soft limit of 256 open
/// files may open as many as the kernel allows a process (`fs.nr_open`) when it may raise its
/// hard limit (CAP_SYS_RESOURCE, which root has outside containers that drop it), else as many
/// as its hard limit.
#[test]
fn the_daemon_may_keep_a_segment_open_per_64_mib_of_a_big_store() {
    let mut m = Mounted::new();
    m.umount();
    let limits = |pid: &str| {
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
        let f: Vec<u64> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        (f[0], f[1])
    };
    let (code, _, err) = run(Command::new("prlimit")
        .arg("--nofile=256:")
        .arg(cowfs_e2e::bin("cowfs"))
        .arg("mount")
        .arg(&m.store)
        .arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    let daemon = limits(&m.daemon_pid().to_string());
    m.umount();
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let caps = status.lines().find_map(|l| l.strip_prefix("CapEff:")).unwrap().trim();
    let may_raise = u64::from_str_radix(caps, 16).unwrap() & (1 << 24) != 0; // CAP_SYS_RESOURCE
    let want = if may_raise {
        fs::read_to_string("/proc/sys/fs/nr_open").unwrap().trim().parse().unwrap()
    } else {
        limits("self").1
    };
    assert_eq!(daemon, (want, want), "may raise the hard limit: {may_raise}");
}

#[test]
fn two_saves_make_two_versions_and_content_persists() {
    let mut m = Mounted::new();
    fs::write(m.path("f"), "v1\n").unwrap();
    fs::write(m.path("f"), "v2\n").unwrap();
    fs::File::create(m.path("g")).unwrap(); // touch: one (empty) version
    {
        // A flush and close without writes makes no version.
        let f = fs::OpenOptions::new().read(true).write(true).open(m.path("f")).unwrap();
        f.sync_all().unwrap();
    }
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "v2\n");
    m.umount();
    let s = m.stats();
    assert_eq!(s["total_versions"], 3, "{s}");
    assert_eq!(s["total_files"], 2, "{s}");
    m.mount();
    assert_eq!(fs::read_to_string(m.path("f")).unwrap(), "v2\n");
    assert_eq!(fs::metadata(m.path("g")).unwrap().len(), 0);
}

#[test]
fn tree_operations_and_exact_times_survive_remount() {
    let mut m = Mounted::new();
    fs::create_dir_all(m.path("a/b")).unwrap();
    fs::write(m.path("a/b/file"), b"hello").unwrap();
    std::os::unix::fs::symlink("b/file", m.path("a/link")).unwrap();
    fs::hard_link(m.path("a/b/file"), m.path("a/hard")).unwrap();
    assert_eq!(fs::metadata(m.path("a/hard")).unwrap().nlink(), 2);
    fs::write(m.path("a/tmp"), b"new content").unwrap();
    fs::rename(m.path("a/tmp"), m.path("a/b/file")).unwrap(); // rename over an existing file
    assert_eq!(fs::metadata(m.path("a/hard")).unwrap().nlink(), 1);
    let (code, _, err) =
        run(Command::new("touch").args(["-d", "2001-01-01 00:00:00.123456789Z"]).arg(m.path("a/hard")));
    assert_eq!(code, 0, "{err}");
    let mut p = fs::metadata(m.path("a/b")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut p, 0o700);
    fs::set_permissions(m.path("a/b"), p).unwrap();
    let before = fs::metadata(m.path("a/hard")).unwrap();
    m.remount();
    assert_eq!(fs::read(m.path("a/b/file")).unwrap(), b"new content");
    assert_eq!(fs::read(m.path("a/hard")).unwrap(), b"hello");
    assert_eq!(fs::read_link(m.path("a/link")).unwrap().to_str(), Some("b/file"));
    let after = fs::metadata(m.path("a/hard")).unwrap();
    assert_eq!((after.mtime(), after.mtime_nsec()), (978307200, 123456789));
    assert_eq!(
        (after.mtime(), after.mtime_nsec(), after.ctime(), after.ctime_nsec()),
        (before.mtime(), before.mtime_nsec(), before.ctime(), before.ctime_nsec())
    );
    assert_eq!(fs::metadata(m.path("a/b")).unwrap().mode() & 0o7777, 0o700);
    let names: Vec<String> =
        fs::read_dir(m.path("a")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 3, "{names:?}");
    fs::remove_file(m.path("a/hard")).unwrap();
    fs::remove_file(m.path("a/link")).unwrap();
    fs::remove_file(m.path("a/b/file")).unwrap();
    fs::remove_dir(m.path("a/b")).unwrap();
    assert_eq!(fs::remove_dir(m.path("nope")).unwrap_err().raw_os_error(), Some(2));
}

/// Listings carry each entry's attributes (READDIRPLUS): what `find` prints for a fresh
/// mount's directory of many entries (several replies' worth) is each entry's own size, mode
/// and type, and a removed entry is gone from the next listing.
#[test]
fn listings_carry_each_entrys_own_attributes() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    let mut want = Vec::new();
    for i in 0..300u64 {
        let name = format!("f{i:03}");
        fs::write(m.path(&format!("d/{name}")), vec![b'x'; (i * 7) as usize]).unwrap();
        let mode = if i % 3 == 0 { 0o600 } else { 0o644 };
        fs::set_permissions(m.path(&format!("d/{name}")), std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
        want.push(format!("{name} {} {mode:o} f", i * 7));
    }
    fs::create_dir(m.path("d/sub")).unwrap();
    std::os::unix::fs::symlink("f001", m.path("d/link")).unwrap();
    want.push("link 4 777 l".into());
    want.push("sub 0 755 d".into());
    want.sort();
    let list = |m: &Mounted| {
        let (code, out, err) =
            run(Command::new("find").arg(m.path("d")).args(["-mindepth", "1", "-printf", "%f %s %m %y\n"]));
        assert_eq!(code, 0, "{err}");
        let mut got: Vec<String> = out.lines().map(str::to_owned).collect();
        got.sort();
        got
    };
    m.remount();
    assert_eq!(list(&m), want);
    fs::remove_file(m.path("d/f005")).unwrap();
    want.retain(|l| !l.starts_with("f005 "));
    assert_eq!(list(&m), want);
}

/// A listing opened before a rename and an unlink, read after them, leaves no stale name in
/// the kernel's cache: the old name of the renamed file stays absent, and a file created
/// under it is a new file, not the renamed one.
#[test]
fn a_listing_older_than_a_rename_leaves_no_stale_name() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    for n in ["a", "b", "x"] {
        fs::write(m.path(&format!("d/{n}")), n).unwrap();
    }
    m.remount();
    let listing = fs::read_dir(m.path("d")).unwrap(); // opendir: the names as they are now
    fs::rename(m.path("d/a"), m.path("d/c")).unwrap();
    fs::remove_file(m.path("d/b")).unwrap();
    let names: Vec<String> = listing.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.contains(&"x".to_string()), "{names:?}");
    assert_eq!(fs::metadata(m.path("d/a")).unwrap_err().kind(), std::io::ErrorKind::NotFound);
    fs::write(m.path("d/a"), "new").unwrap();
    fs::write(m.path("d/b"), "new b").unwrap();
    assert_eq!(fs::read_to_string(m.path("d/c")).unwrap(), "a");
    assert_eq!(fs::read_to_string(m.path("d/a")).unwrap(), "new");
    assert_eq!(fs::read_to_string(m.path("d/b")).unwrap(), "new b");
}

#[test]
fn sparse_files_cost_nothing_and_read_as_zeros() {
    let mut m = Mounted::new();
    let (code, _, err) = run(Command::new("truncate").args(["-s", "1G"]).arg(m.path("sparse")));
    assert_eq!(code, 0, "{err}");
    let mut f = fs::OpenOptions::new().read(true).write(true).open(m.path("sparse")).unwrap();
    f.seek(SeekFrom::Start(300 << 20)).unwrap();
    f.write_all(b"data").unwrap();
    drop(f);
    let mut f = fs::File::open(m.path("sparse")).unwrap();
    let mut buf = vec![1u8; 8];
    f.seek(SeekFrom::Start((300 << 20) - 2)).unwrap();
    f.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\0\0data\0\0");
    drop(f);
    assert_eq!(fs::metadata(m.path("sparse")).unwrap().len(), 1 << 30);
    m.umount();
    let s = m.stats();
    assert!(s["actual_size_bytes"].as_u64().unwrap() < 64 << 10, "a 1 GiB sparse file stored {s}");
}

#[test]
fn kill_9_after_fsync_loses_nothing_and_fsync_reaches_the_store() {
    let mut m = Mounted::new();
    let src = m.dir.path().join("random.bin");
    let data = random_bytes(3 << 20, 11);
    fs::write(&src, &data).unwrap();
    let (code, _, err) = run(Command::new("dd")
        .arg(format!("if={}", src.display()))
        .arg(format!("of={}", m.path("x").display()))
        .args(["bs=64k", "conv=fsync"]));
    assert_eq!(code, 0, "{err}");
    // fsync must reach the store: write and fsync through a handle that stays open, then
    // kill the daemon. Without a real fsync the bytes would sit in the daemon's write buffer
    // (no close has committed them) and be lost.
    let pid = m.daemon_pid();
    let script = format!(
        "import os,sys\nfd=os.open('{}',os.O_WRONLY|os.O_CREAT,0o644)\nos.write(fd,b'y'*100000)\nos.fsync(fd)\n\
         print('synced',flush=True)\nos.kill({pid},9)\n",
        m.path("held").display()
    );
    let (code, out, err) = run(Command::new("python3").arg("-c").arg(script));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("synced"));
    let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&m.mnt).status();
    for _ in 0..500 {
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    m.mount();
    assert!(fs::read(m.path("x")).unwrap() == data, "fsynced data differs after kill -9");
    assert!(fs::read(m.path("held")).unwrap() == vec![b'y'; 100000], "fsync of an open file did not reach the store");
}

#[test]
fn mount_refuses_bad_arguments_with_one_line() {
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("store");
    let file = t.path().join("file");
    fs::write(&file, "x").unwrap();
    let empty_file = t.path().join("empty-file");
    fs::write(&empty_file, "").unwrap();
    let full = t.path().join("full");
    fs::create_dir(&full).unwrap();
    fs::write(full.join("x"), "x").unwrap();
    let foreign = t.path().join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("notes"), "mine").unwrap();
    let empty = t.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let future = t.path().join("future");
    fs::create_dir(&future).unwrap();
    let mut header = vec![0u8; 72];
    header[..8].copy_from_slice(b"COWFSTOR");
    header[8..12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(future.join("STORE"), header).unwrap();
    let cases = [
        (future.clone(), empty.clone(), "format version 99 is not supported"),
        (store.clone(), t.path().join("missing"), "mount point"),
        (store.clone(), file.clone(), "a file that is not empty"),
        (store.clone(), empty_file.clone(), "name the file it is to copy"),
        (store.clone(), full.clone(), "not empty"),
        (foreign.clone(), empty.clone(), "not a cowfs store"),
    ];
    for (s, mnt, want) in cases {
        let (code, _, err) = run(command("cowfs").arg("mount").arg(&s).arg(&mnt));
        assert_eq!(code, 1, "{s:?} {mnt:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{want}: {err}");
    }
    assert_eq!(fs::read_dir(&foreign).unwrap().count(), 1, "the foreign directory was changed");
    assert!(!store.exists(), "a refused mount created the store");
    let m = Mounted::new();
    let (code, _, err) = run(command("cowfs").arg("mount").arg(&store).arg(&m.mnt));
    assert_eq!(code, 1);
    assert!(err.contains("already a mount"), "{err}");
    let other = t.path().join("other");
    fs::create_dir(&other).unwrap();
    let (code, _, err) = run(command("cowfs").arg("mount").arg(&m.store).arg(&other));
    assert_eq!(code, 1);
    assert!(err.contains("already mounted"), "{err}");
}

/// The versions (as text) of the file at `name` in the root of an unmounted store.
fn history(store: &std::path::Path, name: &str) -> Vec<String> {
    use cowfs_engine::storage::DirStorage;
    let st: std::sync::Arc<dyn cowfs_engine::storage::Storage> = std::sync::Arc::new(DirStorage::new(store).unwrap());
    let e = cowfs_engine::Engine::open(st, cowfs_engine::Options { create: false, ..Default::default() }).unwrap();
    let i = e.lookup(cowfs_engine::InodeId::ROOT, name.as_bytes()).unwrap();
    let out = e
        .versions(i.lineage.unwrap())
        .iter()
        .map(|v| String::from_utf8(e.read_content(v.content, v.size, 0, v.size as usize).unwrap()).unwrap())
        .collect();
    e.close().unwrap();
    out
}

#[test]
fn atomic_save_and_recreate_continue_the_path_history() {
    let mut m = Mounted::new();
    fs::write(m.path("doc"), "v1").unwrap();
    // An editor's atomic save: write a temp file, rename it over the document.
    fs::write(m.path(".doc.swp"), "v2").unwrap();
    fs::rename(m.path(".doc.swp"), m.path("doc")).unwrap();
    // Delete, then create again at the same path.
    fs::remove_file(m.path("doc")).unwrap();
    fs::write(m.path("doc"), "v3").unwrap();
    m.umount();
    assert_eq!(history(&m.store, "doc"), ["v1", "v2", "v3"]);
    m.mount();
    assert_eq!(fs::read_to_string(m.path("doc")).unwrap(), "v3");
}

#[test]
fn copy_inside_the_mount_shares_chunks() {
    let mut m = Mounted::new();
    let data = random_bytes(48 << 20, 7);
    fs::write(m.path("big"), &data).unwrap();
    m.umount();
    let before = m.stats()["actual_size_bytes"].as_u64().unwrap();
    m.mount();
    // cp uses copy_file_range; so does this explicit call at an offset.
    let (code, _, err) = run(Command::new("cp").arg(m.path("big")).arg(m.path("copy")));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(Command::new("python3").arg("-c").arg(format!(
        "import os\na=os.open('{}',os.O_RDONLY)\nb=os.open('{}',os.O_WRONLY|os.O_CREAT,0o644)\n\
         n=os.copy_file_range(a,b,1<<20,5<<20,100)\nassert n==1<<20,n\n",
        m.path("big").display(),
        m.path("part").display()
    )));
    assert_eq!(code, 0, "{err}");
    assert!(fs::read(m.path("copy")).unwrap() == data, "copy differs");
    let part = fs::read(m.path("part")).unwrap();
    assert_eq!(part.len(), 100 + (1 << 20));
    assert!(part[..100].iter().all(|b| *b == 0) && part[100..] == data[5 << 20..6 << 20], "partial copy differs");
    m.umount();
    let grown = m.stats()["actual_size_bytes"].as_u64().unwrap() - before;
    println!("copying 48 MiB inside the mount stored {grown} bytes");
    assert!(grown < 1 << 20, "copy stored {grown} bytes");
}

#[test]
fn mmap_reads_and_writes_go_through() {
    let mut m = Mounted::new();
    fs::write(m.path("map"), vec![b'a'; 10000]).unwrap();
    let script = format!(
        "import mmap,os\nfd=os.open('{}',os.O_RDWR)\nmm=mmap.mmap(fd,10000)\nassert mm[0:3]==b'aaa'\n\
         mm[5000:5005]=b'hello'\nmm.flush()\nmm.close()\nos.close(fd)\n",
        m.path("map").display()
    );
    let (code, _, err) = run(Command::new("python3").arg("-c").arg(script));
    assert_eq!(code, 0, "{err}");
    m.remount();
    let got = fs::read(m.path("map")).unwrap();
    assert_eq!(&got[5000..5005], b"hello");
    assert_eq!(got.len(), 10000);
}

#[test]
fn xattrs_honour_create_and_replace_and_persist() {
    let mut m = Mounted::new();
    fs::write(m.path("x"), "x").unwrap();
    let p = m.path("x").display().to_string();
    let script = format!(
        "import os,errno\np='{p}'\nos.setxattr(p,'user.a',b'1')\n\
         try:\n    os.setxattr(p,'user.a',b'2',os.XATTR_CREATE); raise SystemExit('no EEXIST')\n\
         except OSError as e:\n    assert e.errno==errno.EEXIST,e\n\
         try:\n    os.setxattr(p,'user.b',b'2',os.XATTR_REPLACE); raise SystemExit('no ENODATA')\n\
         except OSError as e:\n    assert e.errno==errno.ENODATA,e\n\
         os.setxattr(p,'user.a',b'3',os.XATTR_REPLACE)\nos.setxattr(p,'trusted.t',b'root only')\n\
         assert os.getxattr(p,'user.a')==b'3'\nassert sorted(os.listxattr(p))==['trusted.t','user.a']\n"
    );
    let (code, _, err) = run(Command::new("python3").arg("-c").arg(script));
    assert_eq!(code, 0, "{err}");
    m.remount();
    let (code, out, err) =
        run(Command::new("python3").arg("-c").arg(format!("import os\nprint(os.getxattr('{p}','user.a'))")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(out.trim(), "b'3'");
}

#[test]
fn foreground_mount_unmounts_cleanly_on_sigterm() {
    let t = tempfile::tempdir().unwrap();
    let (store, mnt) = (t.path().join("store"), t.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let mut child = command("cowfs").arg("mount").arg("--foreground").arg(&store).arg(&mnt).spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !fs::read_to_string("/proc/self/mountinfo").unwrap().contains(mnt.to_str().unwrap()) {
        assert!(std::time::Instant::now() < deadline, "foreground mount did not come up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fs::write(mnt.join("f"), "kept").unwrap();
    let (code, _, _) = run(Command::new("kill").args(["-TERM", &child.id().to_string()]));
    assert_eq!(code, 0);
    let status = child.wait().unwrap();
    assert!(status.success(), "daemon exit status {status}");
    assert!(!fs::read_to_string("/proc/self/mountinfo").unwrap().contains(mnt.to_str().unwrap()), "still mounted");
    let (code, out, err) = run(command("cowfs").args(["stats", "--json", "-s"]).arg(&store));
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"total_versions\":1"), "{out}");
}

/// A memory field of a process's `/proc/PID/status` (`VmRSS`: resident now, `VmHWM`: its
/// peak), in bytes.
fn memory(pid: i32, field: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.split(':').next() == Some(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[test]
fn writing_and_rewriting_a_big_file_keeps_the_daemon_small() {
    // 1 GiB by default; 4 GiB with COWFS_SOAK=1 (the target: under 300 MiB of RSS).
    let gib: u64 = if std::env::var("COWFS_SOAK").is_ok() { 4 } else { 1 };
    let m = Mounted::new();
    let pid = m.daemon_pid();
    let mut f = fs::File::create(m.path("big")).unwrap();
    // Every MiB its own random bytes: nothing deduplicates, the whole file goes to the log.
    for i in 0..(gib << 10) {
        f.write_all(&random_bytes(1 << 20, 1000 + i)).unwrap();
    }
    let block = random_bytes(4096, 3);
    f.sync_all().unwrap();
    drop(f);
    let mut f = fs::OpenOptions::new().write(true).open(m.path("big")).unwrap();
    for i in (0..(gib << 10)).step_by(7) {
        f.seek(SeekFrom::Start(i << 20)).unwrap();
        f.write_all(&block[..4096]).unwrap();
    }
    drop(f);
    let mut f = fs::File::open(m.path("big")).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    assert_eq!(total, gib << 30);
    let rss = memory(pid, "VmHWM");
    println!("peak daemon RSS writing, rewriting and reading {gib} GiB: {} MiB", rss >> 20);
    assert!(rss < 300 << 20, "daemon peak RSS {} MiB", rss >> 20);
}

#[test]
fn mounting_a_store_of_many_files_keeps_the_daemon_small() {
    // 30,000 small files in 300 directories, made through the engine (fast), then mounted.
    // The daemon decodes the checkpoint into its index, frees the decoding's buffers, and
    // starts fuser's threads, each with a zeroed 16 MiB request buffer: zeroing them on the
    // freed memory made 64 MiB resident that no request ever uses: 104 MiB in all here,
    // 50 MiB with those buffers mapped fresh (`cowfs mount` sets the allocator so).
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    {
        use cowfs_engine::storage::{DirStorage, Storage};
        use cowfs_engine::{Engine, InodeId, Options};
        let st: std::sync::Arc<dyn Storage> = std::sync::Arc::new(DirStorage::new(&store).unwrap());
        let e = Engine::open(st, Options::default()).unwrap();
        for d in 0..300u64 {
            let dir = e.mkdir(InodeId::ROOT, format!("d{d}").as_bytes(), 0o755, 0, 0).unwrap().ino;
            for f in 0..100u64 {
                let ino = e.create_file(dir, format!("f{f}").as_bytes(), 0o644).unwrap().ino;
                let mut w = e.open_file(ino).unwrap();
                w.write(0, &random_bytes(200, d * 100 + f)).unwrap();
                w.commit(false).unwrap();
            }
        }
        e.close().unwrap();
    }
    let m = Mounted::at(dir, store, &[]);
    assert_eq!(fs::read(m.path("d299/f99")).unwrap(), random_bytes(200, 29_999));
    let rss = memory(m.daemon_pid(), "VmRSS");
    println!("daemon RSS after mounting a store of 30,000 files: {} MiB", rss >> 20);
    assert!(rss < 80 << 20, "daemon RSS {} MiB after mounting", rss >> 20);
}

#[test]
fn renameat2_flags_punch_hole_fifo_and_statfs_through_the_mount() {
    let m = Mounted::new();
    fs::write(m.path("a"), "A").unwrap();
    fs::write(m.path("b"), "B").unwrap();
    fs::write(m.path("h"), vec![7u8; 100_000]).unwrap();
    let d = m.mnt.display().to_string();
    let script = format!(
        r#"
import ctypes, errno, os
libc = ctypes.CDLL(None, use_errno=True)
AT = -100
def renameat2(a, b, flags):
    r = libc.renameat2(AT, a.encode(), AT, b.encode(), flags)
    return 0 if r == 0 else ctypes.get_errno()
d = '{d}'
assert renameat2(d + '/a', d + '/b', 1) == errno.EEXIST            # RENAME_NOREPLACE
assert renameat2(d + '/a', d + '/b', 2) == 0                       # RENAME_EXCHANGE
assert open(d + '/a').read() == 'B' and open(d + '/b').read() == 'A'
assert renameat2(d + '/a', d + '/c', 1) == 0 and not os.path.exists(d + '/a')
fd = os.open(d + '/h', os.O_RDWR)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
assert libc.fallocate(fd, 3, 4096, 8192) == 0                      # PUNCH_HOLE | KEEP_SIZE
assert libc.fallocate(fd, 0x10, 0, 10) != 0                        # FALLOC_FL_ZERO_RANGE: unsupported
assert ctypes.get_errno() == errno.EOPNOTSUPP, ctypes.get_errno()
os.close(fd)
data = open(d + '/h', 'rb').read()
assert len(data) == 100000 and data[4096:12288] == bytes(8192) and data[:4096] == bytes([7]) * 4096
assert data[12288:] == bytes([7]) * (100000 - 12288)
os.mkfifo(d + '/fifo')
import stat
assert stat.S_ISFIFO(os.stat(d + '/fifo').st_mode)
st = os.statvfs(d)
assert st.f_blocks > 0 and st.f_namemax == 255, st
"#
    );
    let (code, _, err) = run(Command::new("python3").arg("-c").arg(script));
    assert_eq!(code, 0, "{err}");
}

/// Regression: a shell's `echo v > f` opens f (O_CREAT|O_TRUNC), duplicates the descriptor to
/// stdout and closes the original before writing. Committing creation and truncation at that
/// first close (FLUSH) put an empty version before every content version.
#[test]
fn shell_redirections_make_one_version_per_save() {
    let mut m = Mounted::new();
    let f = m.path("f");
    let script = format!("echo v1 > '{0}'; echo v2 > '{0}'; : > '{0}.empty'; echo v3 >> '{0}'", f.display());
    let (code, _, err) = run(Command::new("sh").arg("-c").arg(script));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_to_string(&f).unwrap(), "v2\nv3\n");
    m.umount();
    let s = m.stats();
    // f: v1, v2, v2+v3; f.empty: one (empty) version.
    assert_eq!(s["total_versions"], 4, "{s}");
}
