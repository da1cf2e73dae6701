//! `cowfs history` and `cowfs restore` through the binary, on a store written through a real
//! mount (offline: the store is unmounted while they run). Restores are new versions; a
//! deleted file comes back; bad input is one line, exit 1, and the store's bytes unchanged.

use std::fs;

use cowfs_e2e::{Mounted, command, cowfs_json, run, store_bytes};

#[test]
fn history_and_restore_round_trip() {
    let mut m = Mounted::new();
    fs::write(m.path("notes.txt"), "v1\n").unwrap();
    fs::write(m.path("notes.txt"), "v2\n").unwrap();
    m.umount();
    let h = cowfs_json(&["history", "/notes.txt"], &m.store);
    let rows = h.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{h}");
    assert_eq!((rows[0]["version"].as_u64(), rows[1]["version"].as_u64()), (Some(1), Some(2)));
    assert_eq!((rows[0]["current"].as_bool(), rows[1]["current"].as_bool()), (Some(false), Some(true)));
    assert!(rows[0]["date"].as_str().unwrap().len() >= 20, "{h}");

    let dry = cowfs_json(&["restore", "/notes.txt", "--version", "1", "--dry-run"], &m.store);
    assert_eq!(dry["dry_run"], true);
    assert_eq!(cowfs_json(&["history", "notes.txt"], &m.store).as_array().unwrap().len(), 2, "dry run changed history");
    let r = cowfs_json(&["restore", "/notes.txt", "--version", "1"], &m.store);
    assert_eq!((r["restored_from_version"].as_u64(), r["target_size"].as_u64()), (Some(1), Some(3)));
    let rows = cowfs_json(&["history", "/notes.txt"], &m.store);
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[2]["hash"], rows[0]["hash"], "a restore is a new version with the old content");
    m.mount();
    assert_eq!(fs::read_to_string(m.path("notes.txt")).unwrap(), "v1\n");

    // A deleted file comes back.
    fs::remove_file(m.path("notes.txt")).unwrap();
    m.umount();
    assert_eq!(cowfs_json(&["history", "/notes.txt"], &m.store).as_array().unwrap().len(), 3);
    cowfs_json(&["restore", "/notes.txt", "--before", "2999-01-01"], &m.store);
    m.mount();
    assert_eq!(fs::read_to_string(m.path("notes.txt")).unwrap(), "v1\n");
}

#[test]
fn bad_input_is_one_line_and_changes_nothing() {
    let mut m = Mounted::new();
    fs::write(m.path("f"), "x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    m.umount();
    let before = store_bytes(&m.store);
    let s = m.store.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["restore", "/f", "--version", "9", "-s", &s], "no version 9"),
        (vec!["restore", "/f", "--before", "2001-02-30", "-s", &s], "invalid date"),
        (vec!["restore", "/f", "--before", "1970-01-01T00:00:00Z", "-s", &s], "no version before"),
        (vec!["history", "/missing", "-s", &s], "no such file"),
        (vec!["history", "/d", "-s", &s], "not a regular file"),
        (vec!["history", "/../etc/passwd", "-s", &s], "'..' is not allowed"),
        (vec!["history", "/nodir/f", "-s", &s], "no directory"),
    ];
    for (args, want) in cases {
        let (code, _, err) = run(command("cowfs").args(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    let (code, _, err) = run(command("cowfs").args(["restore", "/f", "-s", &s]));
    assert_eq!(code, 2, "missing --version/--before is a usage error: {err}");
    assert!(store_bytes(&m.store) == before, "a refused command changed the store");
    // Through the daemon of a mounted store, refusals are one line too.
    m.mount();
    let (code, _, err) = run(command("cowfs").args(["restore", "/f", "--version", "9", "-s", &s]));
    assert_eq!(code, 1);
    assert!(err.contains("no version 9") && err.lines().count() == 1, "{err}");
}

#[test]
fn on_a_mounted_store_commands_go_through_the_daemon_and_show_at_once() {
    let m = Mounted::new();
    fs::write(m.path("doc"), "first\n").unwrap();
    fs::write(m.path("doc"), "second\n").unwrap();
    assert_eq!(fs::read_to_string(m.path("doc")).unwrap(), "second\n"); // now in the kernel's cache
    // A path inside the mount point works as well as a store path.
    let inside = m.path("doc").to_str().unwrap().to_string();
    let rows = cowfs_json(&["history", &inside], &m.store);
    assert_eq!(rows.as_array().unwrap().len(), 2, "{rows}");
    let r = cowfs_json(&["restore", "/doc", "--version", "1"], &m.store);
    assert_eq!(r["restored_from_version"], 1);
    assert_eq!(fs::read_to_string(m.path("doc")).unwrap(), "first\n", "the restore is not visible in the mount");
    assert_eq!(cowfs_json(&["history", "/doc"], &m.store).as_array().unwrap().len(), 3);
    // A deleted file comes back into the mount.
    fs::remove_file(m.path("doc")).unwrap();
    assert!(!m.path("doc").exists());
    cowfs_json(&["restore", "/doc", "--version", "2"], &m.store);
    assert_eq!(fs::read_to_string(m.path("doc")).unwrap(), "second\n");
}

#[test]
fn snapshots_create_list_show_delete_mounted_and_not() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/a"), "12345").unwrap();
    let created = cowfs_json(&["snapshot", "create", "base", "--description", "first"], &m.store);
    assert_eq!(created["name"], "base");
    fs::write(m.path("d/b"), "later").unwrap();
    let (code, _, err) = run(command("cowfs").args(["snapshot", "create", "base", "-s"]).arg(&m.store));
    assert_eq!(code, 1);
    assert!(err.contains("already exists") && err.lines().count() == 1, "{err}");
    m.umount();
    let shown = cowfs_json(&["snapshot", "show", "base"], &m.store);
    assert_eq!((shown["files"].as_u64(), shown["directories"].as_u64()), (Some(1), Some(1)), "{shown}");
    assert_eq!(shown["logical_size_bytes"], 5);
    assert_eq!(shown["description"], "first");
    cowfs_json(&["snapshot", "create", "after"], &m.store);
    let list = cowfs_json(&["snapshot", "list"], &m.store);
    let names: Vec<&str> = list.as_array().unwrap().iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["base", "after"]);
    m.mount();
    cowfs_json(&["snapshot", "delete", "base"], &m.store);
    let (code, _, err) = run(command("cowfs").args(["snapshot", "show", "base", "-s"]).arg(&m.store));
    assert_eq!(code, 1);
    assert!(err.contains("no snapshot") && err.lines().count() == 1, "{err}");
    assert_eq!(cowfs_json(&["snapshot", "list"], &m.store).as_array().unwrap().len(), 1);
}

#[test]
fn ten_copies_of_a_file_are_stored_once() {
    let m = Mounted::new();
    let data = cowfs_e2e::random_bytes(8 << 20, 5);
    for i in 0..10 {
        fs::write(m.path(&format!("copy{i}")), &data).unwrap();
    }
    // Through the daemon: the store is mounted.
    let s = cowfs_json(&["stats"], &m.store);
    println!("{s}");
    assert_eq!(s["total_files"], 10);
    assert!(s["dedup_percentage"].as_f64().unwrap() >= 89.0, "{s}");
    assert!(s["actual_size_bytes"].as_u64().unwrap() < 10 << 20, "{s}");
}

#[test]
fn diff_of_text_and_binary_versions() {
    let m = Mounted::new();
    fs::write(m.path("t.txt"), "one\ntwo\nthree\n").unwrap();
    fs::write(m.path("t.txt"), "one\n2\nthree\nfour\n").unwrap();
    fs::write(m.path("b.bin"), [0u8, 1, 2, 3]).unwrap();
    fs::write(m.path("b.bin"), [0u8, 1, 2, 3, 4, 5]).unwrap();
    let d = cowfs_json(&["diff", "/t.txt", "--v1", "1", "--v2", "2"], &m.store);
    assert_eq!(d["mode"], "text");
    assert_eq!(d["same_content"], false);
    assert_eq!(d["size_delta"], 3);
    let text = d["diff"].as_str().unwrap();
    assert!(text.contains("-two\n") && text.contains("+2\n") && text.contains("+four\n"), "{text}");
    let same = cowfs_json(&["diff", "/t.txt", "--version", "2"], &m.store);
    assert_eq!((same["same_content"].as_bool(), same["right_version"].as_str()), (Some(true), Some("current")));
    let b = cowfs_json(&["diff", "/b.bin", "--version", "1"], &m.store);
    assert_eq!((b["mode"].as_str(), b["size_delta"].as_i64()), (Some("binary"), Some(2)));
    let (code, _, err) = run(command("cowfs").args(["diff", "/t.txt", "--v1", "1", "--v2", "7", "-s"]).arg(&m.store));
    assert_eq!(code, 1);
    assert!(err.contains("no version 7") && err.lines().count() == 1, "{err}");
    let (code, _, _) = run(command("cowfs").args(["diff", "/t.txt", "-s"]).arg(&m.store));
    assert_eq!(code, 2, "diff without versions is a usage error");
}

#[test]
fn snapshot_restore_brings_the_tree_back_with_and_without_keep_new() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/a"), "original a").unwrap();
    fs::write(m.path("b"), "original b").unwrap();
    fs::hard_link(m.path("b"), m.path("b2")).unwrap();
    std::os::unix::fs::symlink("d/a", m.path("link")).unwrap();
    fs::set_permissions(m.path("d/a"), fs::Permissions::from_mode(0o600)).unwrap();
    cowfs_json(&["snapshot", "create", "base"], &m.store);

    fs::write(m.path("d/a"), "changed a").unwrap();
    fs::remove_file(m.path("b2")).unwrap();
    fs::remove_file(m.path("b")).unwrap();
    fs::remove_file(m.path("link")).unwrap();
    std::os::unix::fs::symlink("elsewhere", m.path("link")).unwrap();
    fs::set_permissions(m.path("d/a"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(m.path("new.txt"), "created later").unwrap();

    let dry = cowfs_json(&["snapshot", "restore", "base", "--keep-new", "--dry-run"], &m.store);
    assert_eq!((dry["dry_run"].as_bool(), dry["files_removed"].as_u64()), (Some(true), Some(0)), "{dry}");
    assert_eq!(fs::read_to_string(m.path("d/a")).unwrap(), "changed a", "dry run changed the tree");

    let r = cowfs_json(&["snapshot", "restore", "base", "--keep-new"], &m.store);
    assert_eq!(r["keep_new"], true);
    assert!(r["files_restored"].as_u64().unwrap() >= 2, "{r}");
    assert_eq!(fs::read_to_string(m.path("d/a")).unwrap(), "original a");
    assert_eq!(fs::read_to_string(m.path("b")).unwrap(), "original b");
    assert_eq!(fs::metadata(m.path("b")).unwrap().ino(), fs::metadata(m.path("b2")).unwrap().ino(), "hard link");
    assert_eq!(fs::metadata(m.path("b")).unwrap().nlink(), 2);
    assert_eq!(fs::read_link(m.path("link")).unwrap().to_str(), Some("d/a"));
    assert_eq!(fs::metadata(m.path("d/a")).unwrap().mode() & 0o777, 0o600);
    assert_eq!(fs::read_to_string(m.path("new.txt")).unwrap(), "created later", "--keep-new kept it");

    let r = cowfs_json(&["snapshot", "restore", "base"], &m.store);
    assert_eq!(r["files_removed"], 1, "{r}");
    assert!(!m.path("new.txt").exists());
    // Non-destructive: the changed content is still in history, as is the removed file's.
    let h = cowfs_json(&["history", "/d/a"], &m.store);
    let sizes: Vec<u64> = h.as_array().unwrap().iter().map(|v| v["size"].as_u64().unwrap()).collect();
    assert_eq!(sizes, [10, 9, 10], "{h}");
    assert_eq!(cowfs_json(&["history", "/new.txt"], &m.store).as_array().unwrap().len(), 1);
    let (code, _, err) = run(command("cowfs").args(["snapshot", "restore", "nope", "-s"]).arg(&m.store));
    assert_eq!(code, 1);
    assert!(err.contains("no snapshot") && err.lines().count() == 1, "{err}");
}

#[test]
fn hidden_cowfs_directory_shows_snapshots_and_versions_read_only() {
    let m = Mounted::new();
    fs::create_dir(m.path("docs")).unwrap();
    fs::write(m.path("docs/a.txt"), "v1").unwrap();
    fs::write(m.path("docs/a.txt"), "v2").unwrap();
    cowfs_json(&["snapshot", "create", "base"], &m.store);
    fs::write(m.path("docs/a.txt"), "v3").unwrap();

    let names: Vec<String> =
        fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names, ["docs"], "`.cowfs` must not be listed");
    assert_eq!(fs::read_to_string(m.path(".cowfs/snapshots/base/docs/a.txt")).unwrap(), "v2");
    let mut versions: Vec<String> = fs::read_dir(m.path(".cowfs/versions/docs/a.txt"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    versions.sort();
    assert_eq!(versions, ["1", "2", "3"]);
    assert_eq!(fs::read_to_string(m.path(".cowfs/versions/docs/a.txt/1")).unwrap(), "v1");
    assert_eq!(fs::metadata(m.path(".cowfs/versions/docs/a.txt/1")).unwrap().len(), 2);
    // Read-only everywhere below `.cowfs`; `.cowfs` itself cannot be created or removed.
    let err = fs::write(m.path(".cowfs/versions/docs/a.txt/1"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "{err}");
    let err = fs::write(m.path(".cowfs/snapshots/base/new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "{err}");
    assert_eq!(fs::create_dir(m.path(".cowfs")).unwrap_err().raw_os_error(), Some(17));
    // Copying an old version out works (copy_file_range falls back to read + write).
    let (code, _, err) =
        run(std::process::Command::new("cp").arg(m.path(".cowfs/versions/docs/a.txt/1")).arg(m.path("docs/old.txt")));
    assert_eq!(code, 0, "{err}");
    assert_eq!(fs::read_to_string(m.path("docs/old.txt")).unwrap(), "v1");
}

#[test]
fn tree_diff_between_snapshots_and_now() {
    let m = Mounted::new();
    fs::write(m.path("keep"), "same").unwrap();
    fs::write(m.path("edit"), "before").unwrap();
    fs::write(m.path("gone"), "bye").unwrap();
    fs::write(m.path("move"), "moving").unwrap();
    cowfs_json(&["snapshot", "create", "a"], &m.store);
    fs::write(m.path("edit"), "after").unwrap();
    fs::remove_file(m.path("gone")).unwrap();
    fs::rename(m.path("move"), m.path("moved")).unwrap();
    fs::write(m.path("new"), "hello").unwrap();
    cowfs_json(&["snapshot", "create", "b"], &m.store);
    fs::write(m.path("later"), "x").unwrap();
    let d = cowfs_json(&["diff", "--snapshot", "a", "--snapshot", "b"], &m.store);
    assert_eq!(d["added"], serde_json::json!(["/new"]), "{d}");
    assert_eq!(d["removed"], serde_json::json!(["/gone"]), "{d}");
    assert_eq!(d["modified"], serde_json::json!(["/edit"]), "{d}");
    assert_eq!(d["renamed"], serde_json::json!([{"from": "/move", "to": "/moved"}]), "{d}");
    let now = cowfs_json(&["diff", "--snapshot", "b"], &m.store);
    assert_eq!(now["added"], serde_json::json!(["/later"]), "{now}");
    assert_eq!(now["to"], "now");
    let (code, _, err) = run(command("cowfs").args(["diff", "--snapshot", "zzz", "-s"]).arg(&m.store));
    assert_eq!(code, 1);
    assert!(err.contains("no snapshot") && err.lines().count() == 1, "{err}");
    let (code, _, err) = run(command("cowfs").args(["diff", "/keep", "--snapshot", "a", "-s"]).arg(&m.store));
    assert_eq!(code, 2, "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn another_user_cannot_read_history_through_the_daemon_or_the_store() {
    let m = Mounted::new();
    fs::write(m.path("secret"), "v1").unwrap();
    fs::write(m.path("secret"), "v2").unwrap();
    cowfs_e2e::require_user("tests");
    let bin = cowfs_e2e::bin("cowfs");
    let as_tests = |args: &[&str]| {
        run(std::process::Command::new("runuser")
            .args(["-u", "tests", "--"])
            .arg(&bin)
            .args(args)
            .arg("-s")
            .arg(&m.store))
    };
    // runuser itself works (else the refusals below would prove nothing).
    let (code, out, err) =
        run(std::process::Command::new("runuser").args(["-u", "tests", "--"]).arg(&bin).arg("--version"));
    assert_eq!(code, 0, "runuser -u tests cannot run cowfs: {out}{err}");
    let (code, out, err) = as_tests(&["history", "/secret", "--json"]);
    assert_ne!(code, 0, "user 'tests' read the history: {out}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("cowfs: ") && err.contains("ermission denied"), "not cowfs refusing: {err}");
    let (code, _, err) = as_tests(&["restore", "/secret", "--version", "1"]);
    assert_ne!(code, 0);
    assert!(err.starts_with("cowfs: ") && err.contains("ermission denied"), "not cowfs refusing: {err}");
    assert_eq!(fs::read_to_string(m.path("secret")).unwrap(), "v2");
}

#[test]
fn an_old_version_keeps_the_permissions_it_was_saved_with() {
    use std::os::unix::fs::PermissionsExt;
    cowfs_e2e::require_user("tests");
    let m = Mounted::new();
    // The mount root must be searchable by user `tests`.
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path("doc"), "private draft").unwrap();
    fs::set_permissions(m.path("doc"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(m.path("doc"), "private draft, edited").unwrap(); // version 2, saved while 0600
    fs::set_permissions(m.path("doc"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::write(m.path("doc"), "public text").unwrap(); // version 3, saved while 0644
    let cat =
        |rel: &str| run(std::process::Command::new("runuser").args(["-u", "tests", "--", "cat"]).arg(m.path(rel)));
    let (code, out, _) = cat("doc");
    assert_eq!((code, out.as_str()), (0, "public text"));
    let (code, out, _) = cat(".cowfs/versions/doc/3");
    assert_eq!((code, out.as_str()), (0, "public text"));
    let (code, out, err) = cat(".cowfs/versions/doc/2");
    assert_ne!(code, 0, "user 'tests' read a version saved while the file was private: {out}");
    assert!(err.contains("Permission denied"), "{err}");
    // The tree at a moment has the attributes of that moment too.
    let t =
        cowfs_json(&["log", "--action", "write", "--limit", "2"], &m.store)[0]["time"].as_str().unwrap().to_string();
    let (code, out, _) = cat(&format!(".cowfs/at/{t}/doc"));
    assert_ne!(code, 0, "user 'tests' read the private file through .cowfs/at: {out}");
    assert_eq!(fs::read_to_string(m.path(".cowfs/versions/doc/2")).unwrap(), "private draft, edited", "root reads it");
}

/// `cowfs CMD ARGS --json` run in directory `cwd` without `-s`, which must succeed.
fn cowfs_in(cwd: &std::path::Path, args: &[&str]) -> serde_json::Value {
    let (code, out, err) = run(command("cowfs").args(args).arg("--json").current_dir(cwd).env_remove("COWFS_STORAGE"));
    assert_eq!(code, 0, "cowfs {args:?} in {}: {err}", cwd.display());
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("cowfs {args:?} printed {out:?}: {e}"))
}

#[test]
fn inside_a_mount_commands_find_their_store_without_s() {
    let m = Mounted::new();
    let other = Mounted::new();
    fs::create_dir(m.path("docs")).unwrap();
    fs::write(m.path("docs/a.txt"), "one\n").unwrap();
    fs::write(m.path("docs/a.txt"), "two\n").unwrap();
    fs::write(other.path("a.txt"), "elsewhere\n").unwrap();
    let docs = m.path("docs");
    // A path relative to the current directory, in the mount.
    assert_eq!(cowfs_in(&docs, &["history", "a.txt"]).as_array().unwrap().len(), 2);
    // A path in a mount, from a directory outside every mount.
    let mountfile = m.path("docs/a.txt").to_str().unwrap().to_string();
    assert_eq!(cowfs_in(std::path::Path::new("/"), &["history", &mountfile]).as_array().unwrap().len(), 2);
    // A store path, from inside the mount; the same for restore, stats, snapshots and the log.
    assert_eq!(cowfs_in(&docs, &["history", "/docs/a.txt"]).as_array().unwrap().len(), 2);
    assert_eq!(cowfs_in(&docs, &["restore", "a.txt", "--version", "1"])["restored_from_version"], 1);
    assert_eq!(fs::read_to_string(m.path("docs/a.txt")).unwrap(), "one\n");
    assert_eq!(cowfs_in(&docs, &["stats"])["total_files"], cowfs_json(&["stats"], &m.store)["total_files"]);
    cowfs_in(&docs, &["snapshot", "create", "here"]);
    assert_eq!(cowfs_json(&["snapshot", "list"], &m.store).as_array().unwrap().len(), 1);
    assert!(cowfs_json(&["snapshot", "list"], &other.store).as_array().unwrap().is_empty(), "wrong store");
    let log = cowfs_in(m.path("").as_path(), &["log", "--path-prefix", "/docs"]);
    assert!(log.as_array().unwrap().iter().all(|e| e["path"].as_str().unwrap().starts_with("/docs")), "{log}");
    assert!(!log.as_array().unwrap().is_empty(), "{log}");
    // -s (or COWFS_STORAGE) names another store and wins over the mount the directory is in.
    let (code, out, err) = run(command("cowfs")
        .args(["history", "/a.txt", "--json"])
        .current_dir(&docs)
        .env("COWFS_STORAGE", &other.store));
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap().as_array().unwrap().len(), 1);
    // Outside every mount, without -s: one line saying what to do.
    let (code, _, err) = run(command("cowfs").args(["history", "a.txt"]).current_dir("/").env_remove("COWFS_STORAGE"));
    assert_eq!(code, 1);
    assert!(
        err.contains("a.txt is not in a cowfs mount") && err.contains("-s STORE") && err.lines().count() == 1,
        "{err}"
    );
}
