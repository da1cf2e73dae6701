//! Access times through the mount, by the mount's flags: `relatime` (the default) records a
//! read when the access time is not after the modification or change time; `noatime` and a
//! read-only mount never; `strictatime` at every open for reading; `nodiratime` leaves
//! directories; a remount changes the rule on the live mount; a recorded access time survives
//! a remount and is not an entry of `cowfs log`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cowfs_e2e::{Mounted, command, cowfs_json, run};

/// Access time in seconds, after the kernel's attribute cache (1 s) has expired.
fn atime(p: &Path) -> i64 {
    std::thread::sleep(Duration::from_millis(1100));
    fs::metadata(p).unwrap().atime()
}

/// Sets the access time to 2020 (which also makes the change time now).
fn age(p: &Path) {
    let (code, _, err) = run(Command::new("touch").args(["-a", "-d", "2020-01-01"]).arg(p));
    assert_eq!(code, 0, "{err}");
    assert_eq!(atime(p), 1_577_836_800, "touch -a did not set the access time");
}

fn read(p: &Path) {
    fs::read(p).unwrap();
}

fn mounted_with(opts: &str) -> Mounted {
    let mut m = Mounted::new();
    m.umount();
    m.mount_by(command("cowfs").args(["mount", "-o", opts]).arg(&m.store).arg(&m.mnt));
    m
}

#[test]
fn relatime_records_a_read_once_after_each_change_and_keeps_it() {
    let mut m = Mounted::new();
    let f = m.path("f");
    fs::write(&f, "data").unwrap();
    age(&f);
    read(&f);
    let first = atime(&f);
    assert!(first > 1_600_000_000, "a read after a change is recorded: {first}");
    // Read again: the access time is after the change, and younger than a day: unchanged.
    std::thread::sleep(Duration::from_millis(1000));
    read(&f);
    assert_eq!(atime(&f), first, "relatime recorded a second read");
    // Directories too: listing one whose access time is old records it.
    fs::create_dir(m.path("d")).unwrap();
    age(&m.path("d"));
    fs::read_dir(m.path("d")).unwrap().for_each(drop);
    assert!(atime(&m.path("d")) > 1_600_000_000, "listing a directory is a read");
    // Kept across a remount, and not in the activity log.
    m.remount();
    assert_eq!(atime(&f), first);
    let attrs = cowfs_json(&["log", "--action", "attr"], &m.store);
    assert_eq!(attrs.as_array().unwrap().len(), 2, "only the two touches: {attrs}");
}

#[test]
fn noatime_and_read_only_mounts_record_no_reads() {
    for opts in ["noatime", "ro"] {
        let mut m = Mounted::new();
        fs::write(m.path("f"), "data").unwrap();
        age(&m.path("f"));
        m.umount();
        m.mount_by(command("cowfs").args(["mount", "-o", opts]).arg(&m.store).arg(&m.mnt));
        read(&m.path("f"));
        assert_eq!(atime(&m.path("f")), 1_577_836_800, "-o {opts} recorded a read");
    }
}

#[test]
fn strictatime_records_every_open_for_reading_and_nodiratime_leaves_directories() {
    let m = mounted_with("strictatime,nodiratime");
    let f = m.path("f");
    fs::write(&f, "data").unwrap();
    read(&f);
    let first = atime(&f);
    std::thread::sleep(Duration::from_millis(1000));
    read(&f);
    assert!(atime(&f) > first, "strictatime did not record the second read");
    fs::create_dir(m.path("d")).unwrap();
    age(&m.path("d"));
    fs::read_dir(m.path("d")).unwrap().for_each(drop);
    assert_eq!(atime(&m.path("d")), 1_577_836_800, "nodiratime recorded a listing");
}

#[test]
fn a_remount_changes_the_rule_of_the_live_mount() {
    let m = Mounted::new();
    let f = m.path("f");
    fs::write(&f, "data").unwrap();
    let (code, _, err) = run(command("cowfs").args(["mount", "-o", "remount,noatime"]).arg(&m.store).arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    age(&f);
    read(&f);
    assert_eq!(atime(&f), 1_577_836_800, "noatime after the remount recorded a read");
    let (code, _, err) = run(command("cowfs").args(["mount", "-o", "remount,relatime"]).arg(&m.store).arg(&m.mnt));
    assert_eq!(code, 0, "{err}");
    std::thread::sleep(Duration::from_millis(1100)); // the daemon reads the flags once a second
    read(&f);
    assert!(atime(&f) > 1_600_000_000, "relatime after the remount did not record the read");
}
