//! cowfs through mount(8), umount(8) and fstab: the `mount.fuse.cowfs` helper (the `cowfs`
//! binary under that name, found by mount(8) in /sbin), the type `fuse.cowfs` in the mount
//! table, `-o` options honoured by the kernel, `remount,ro` and `remount,rw` on a live mount,
//! and plain `umount` committing and stopping the daemon.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use cowfs_e2e::{Mounted, bin, command, cowfs_json, run};

const HELPER: &str = "/sbin/mount.fuse.cowfs";
/// errno of a change on a read-only mount (Linux).
const EROFS: i32 = 30;

/// Points /sbin/mount.fuse.cowfs at the `cowfs` binary under test (as `cargo install` plus
/// the README's `ln -s` would), once per test process, atomically (a new symlink renamed over
/// the old one: another checkout's test run may be doing the same). A helper that is not a
/// symlink (someone's own) is left alone and fails the test.
fn install_helper() {
    static DONE: std::sync::Once = std::sync::Once::new();
    DONE.call_once(|| {
        let target = bin("cowfs");
        match fs::symlink_metadata(HELPER) {
            Ok(m) if !m.file_type().is_symlink() => panic!("{HELPER} exists and is not a symlink: not replacing it"),
            Ok(_) if fs::read_link(HELPER).is_ok_and(|t| t == target) => return,
            _ => {}
        }
        let tmp = format!("{HELPER}.{}", std::process::id());
        let _ = fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&target, &tmp).unwrap_or_else(|e| panic!("symlink {tmp}: {e}"));
        fs::rename(&tmp, HELPER).unwrap_or_else(|e| panic!("rename {tmp} to {HELPER}: {e}"));
    });
}

/// The store and mount point of a test, nothing mounted yet.
fn unmounted() -> Mounted {
    install_helper();
    let mut m = Mounted::new();
    m.umount();
    m
}

/// The type and the per-mount options (`ro`, `nosuid`, ...) the mount table shows for `mnt`.
fn table_entry(mnt: &Path) -> (String, String) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info.lines().rev().find(|l| l.split(' ').nth(4) == Some(mnt.to_str().unwrap())).expect("not mounted");
    let (left, right) = line.split_once(" - ").unwrap();
    (right.split(' ').next().unwrap().to_string(), left.split(' ').nth(5).unwrap().to_string())
}

fn write(m: &Mounted, name: &str, data: &str) -> std::io::Result<()> {
    fs::write(m.path(name), data)
}

#[test]
fn mount_t_fuse_cowfs_remount_ro_and_rw_then_plain_umount() {
    let mut m = unmounted();
    m.mount_by(Command::new("mount").args(["-t", "fuse.cowfs"]).arg(&m.store).arg(&m.mnt));
    let (fstype, opts) = table_entry(&m.mnt);
    assert_eq!(fstype, "fuse.cowfs");
    assert!(opts.split(',').any(|o| o == "relatime"), "relatime is the default: {opts}");
    let (code, out, err) = run(Command::new("findmnt").args(["-n", "-o", "SOURCE", "-t", "fuse.cowfs"]).arg(&m.mnt));
    assert_eq!(code, 0, "findmnt -t fuse.cowfs does not find the mount: {err}");
    assert_eq!(Path::new(out.trim()), m.store.canonicalize().unwrap());
    write(&m, "a", "one\n").unwrap();

    // remount,ro: reads work, every change is refused with EROFS; what was written stays.
    let (code, _, err) = run(Command::new("mount").args(["-o", "remount,ro"]).arg(&m.mnt));
    assert_eq!(code, 0, "remount,ro: {err}");
    assert!(table_entry(&m.mnt).1.split(',').any(|o| o == "ro"), "{:?}", table_entry(&m.mnt));
    assert_eq!(write(&m, "a", "two\n").unwrap_err().raw_os_error(), Some(EROFS));
    assert_eq!(fs::create_dir(m.path("d")).unwrap_err().raw_os_error(), Some(EROFS));
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "one\n");
    // History commands still work on the store of a read-only mount.
    assert_eq!(cowfs_json(&["history", "/a"], &m.store).as_array().unwrap().len(), 1);

    let (code, _, err) = run(Command::new("mount").args(["-o", "remount,rw"]).arg(&m.mnt));
    assert_eq!(code, 0, "remount,rw: {err}");
    assert!(table_entry(&m.mnt).1.split(',').any(|o| o == "rw"));
    write(&m, "a", "two\n").unwrap();

    // Plain umount(8): the daemon commits and exits; the store is free at once.
    m.umount_by(Command::new("umount").arg(&m.mnt));
    let h = cowfs_json(&["history", "/a"], &m.store);
    assert_eq!(h.as_array().unwrap().len(), 2, "{h}");
    m.mount();
    assert_eq!(fs::read_to_string(m.path("a")).unwrap(), "two\n");
}

#[test]
fn an_fstab_line_mounts_with_its_options() {
    let mut m = unmounted();
    fs::write(m.dir.path().join("tool"), "#!/bin/sh\necho ran\n").unwrap();
    // A line as in /etc/fstab (mount --fstab reads this file instead).
    let fstab = m.dir.path().join("fstab");
    let line = format!(
        "{} {} fuse.cowfs defaults,noexec,nosuid,nodev,nofail,x-systemd.automount 0 0\n",
        m.store.display(),
        m.mnt.display()
    );
    fs::write(&fstab, line).unwrap();
    m.mount_by(Command::new("mount").arg("--fstab").arg(&fstab).arg(&m.mnt));
    let (fstype, opts) = table_entry(&m.mnt);
    assert_eq!(fstype, "fuse.cowfs");
    for o in ["noexec", "nosuid", "nodev", "rw"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing from {opts}");
    }
    // noexec is the kernel's: a script on the mount cannot be run.
    fs::copy(m.dir.path().join("tool"), m.path("tool")).unwrap();
    fs::set_permissions(m.path("tool"), fs::Permissions::from_mode(0o755)).unwrap();
    let err = Command::new(m.path("tool")).output().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    // A remount keeps what it does not name.
    let (code, _, err) = run(Command::new("mount").args(["-o", "remount,ro"]).arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    let opts = table_entry(&m.mnt).1;
    for o in ["ro", "noexec", "nosuid", "nodev"] {
        assert!(opts.split(',').any(|x| x == o), "{o} missing from {opts} after remount,ro");
    }
    m.umount_by(Command::new("umount").arg(&m.mnt));
}

#[test]
fn cowfs_mount_o_takes_the_same_options() {
    let mut m = unmounted();
    m.mount_by(command("cowfs").args(["mount", "-o", "ro", "-o", "noexec"]).arg(&m.store).arg(&m.mnt));
    let opts = table_entry(&m.mnt).1;
    assert!(opts.starts_with("ro,") && opts.contains("noexec"), "{opts}");
    assert_eq!(write(&m, "x", "x").unwrap_err().raw_os_error(), Some(EROFS));
    let (code, out, err) =
        run(command("cowfs").args(["mount", "--json", "-o", "remount,rw"]).arg(&m.store).arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["pid"].as_i64(), Some(i64::from(m.daemon_pid())), "{r}");
    write(&m, "x", "x").unwrap();
}

#[test]
fn bad_options_are_refused_in_one_line_and_create_nothing() {
    install_helper();
    let dir = tempfile::tempdir().unwrap();
    let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
    fs::create_dir(&mnt).unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["-o", "colour=blue"], "unknown mount option \"colour=blue\""),
        (&["-o", "rw,relatime=1"], "unknown mount option \"relatime=1\""),
        (&["-o", "lower="], "lower= names no directory"),
        (&["-o", "remount,ro"], "is not a cowfs mount"),
    ];
    for (opts, want) in cases {
        for through_mount8 in [false, true] {
            let mut cmd = match through_mount8 {
                true => {
                    let mut c = Command::new("mount");
                    c.args(["-t", "fuse.cowfs"]);
                    c
                }
                false => {
                    let mut c = command("cowfs");
                    c.arg("mount");
                    c
                }
            };
            let (code, _, err) = run(cmd.args(opts).arg(&store).arg(&mnt));
            assert_ne!(code, 0, "{opts:?}");
            assert!(
                err.contains(want) && err.trim().lines().count() == 1,
                "{opts:?} (mount(8): {through_mount8}): {err}"
            );
            assert!(!store.exists(), "{opts:?} created the store");
        }
    }
}
