//! Time travel without snapshots, through the binary and the mount: `cowfs log` (the
//! activity feed and its filters), `cowfs restore DIR|/ --before T` (a tree restore), and
//! `.cowfs/at/DATETIME/` (the whole tree as it was). Times come from the log itself, so the
//! tests need no sleeps.

use std::fs;
use std::path::Path;

use cowfs_e2e::{Mounted, command, cowfs_json, run, store_bytes};

/// The time of the newest log entry.
fn last_time(store: &Path) -> String {
    let log = cowfs_json(&["log", "--limit", "1"], store);
    log[0]["time"].as_str().expect("time").to_string()
}

fn read(m: &Mounted, rel: &str) -> String {
    fs::read_to_string(m.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

#[test]
fn log_lists_every_change_and_filters_by_action_path_and_time() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("docs")).unwrap();
    fs::write(m.path("docs/a.txt"), "one").unwrap();
    let t_first = last_time(&m.store);
    fs::write(m.path("docs/a.txt"), "two").unwrap();
    fs::rename(m.path("docs/a.txt"), m.path("b.txt")).unwrap();
    fs::remove_file(m.path("b.txt")).unwrap();
    fs::remove_dir(m.path("docs")).unwrap();
    cowfs_json(&["snapshot", "create", "s"], &m.store);
    let log = cowfs_json(&["log"], &m.store);
    let rows: Vec<(&str, &str)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["action"].as_str().unwrap(), r["path"].as_str().unwrap_or("-")))
        .filter(|(a, _)| *a != "attr")
        .collect();
    assert_eq!(
        rows,
        [
            ("mkdir", "/docs"),
            ("create", "/docs/a.txt"),
            ("write", "/docs/a.txt"),
            ("write", "/docs/a.txt"),
            ("rename", "/docs/a.txt"),
            ("delete", "/b.txt"),
            ("rmdir", "/docs"),
            ("snapshot-create", "-"),
        ],
        "{log}"
    );
    let writes = cowfs_json(&["log", "--action", "write"], &m.store);
    let writes = writes.as_array().unwrap();
    assert_eq!(writes.len(), 2);
    assert_eq!((writes[0]["version"].as_u64(), writes[1]["version"].as_u64()), (Some(1), Some(2)));
    assert!(writes.iter().all(|w| w["hash"].as_str().is_some_and(|h| h.len() == 64) && w["version_id"].is_string()));
    let renamed = cowfs_json(&["log", "--action", "rename"], &m.store);
    assert_eq!(renamed[0]["to"], "/b.txt");
    // A rename is about both paths: it shows under either prefix.
    let under_docs = cowfs_json(&["log", "--path-prefix", "/docs"], &m.store);
    assert!(under_docs.as_array().unwrap().iter().all(|r| r["path"].as_str().unwrap().starts_with("/docs")));
    let under_b = cowfs_json(&["log", "--path-prefix", "/b.txt"], &m.store);
    let b_actions: Vec<&str> = under_b.as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    assert_eq!(b_actions, ["rename", "delete"], "{under_b}");
    // --path-prefix matches whole components: /doc is not a prefix of /docs.
    assert_eq!(cowfs_json(&["log", "--path-prefix", "/doc"], &m.store).as_array().unwrap().len(), 0);
    let until = cowfs_json(&["log", "--until", &t_first], &m.store);
    assert_eq!(until.as_array().unwrap().last().unwrap()["version"], 1, "{until}");
    let since = cowfs_json(&["log", "--since", &t_first, "--action", "write"], &m.store);
    assert_eq!(since.as_array().unwrap().len(), 2, "{since}");
    let limited = cowfs_json(&["log", "--limit", "2"], &m.store);
    assert_eq!(limited.as_array().unwrap().len(), 2);
    assert_eq!(limited[1]["action"], "snapshot-create", "--limit keeps the newest");
    // The same log from the unmounted store.
    m.umount();
    assert_eq!(cowfs_json(&["log"], &m.store), log);
    let (code, out, err) = run(command("cowfs").args(["log", "-s"]).arg(&m.store));
    assert_eq!(code, 0, "{err}");
    assert!(out.lines().any(|l| l.contains("rename") && l.contains("/docs/a.txt -> /b.txt")), "{out}");
}

#[test]
fn a_tree_restore_before_a_time_brings_the_subtree_back() {
    let mut m = Mounted::new();
    fs::create_dir_all(m.path("proj/src")).unwrap();
    fs::write(m.path("proj/src/main.rs"), "fn main() {}\n").unwrap();
    fs::write(m.path("proj/README"), "readme v1\n").unwrap();
    fs::write(m.path("other"), "outside\n").unwrap();
    std::os::unix::fs::symlink("src/main.rs", m.path("proj/link")).unwrap();
    fs::write(m.path("proj/README"), "readme v2\n").unwrap();
    let t = last_time(&m.store); // the state to return to is the one after this write
    fs::write(m.path("proj/README"), "readme v3 broken\n").unwrap();
    let t_after = cowfs_json(&["log", "--limit", "1"], &m.store)[0]["time"].as_str().unwrap().to_string();
    fs::remove_file(m.path("proj/src/main.rs")).unwrap();
    fs::remove_dir(m.path("proj/src")).unwrap();
    fs::write(m.path("proj/new.txt"), "made later\n").unwrap();
    fs::write(m.path("other"), "outside changed\n").unwrap();

    // Strictly before t_after: everything up to and including the write at t.
    let dry = cowfs_json(&["restore", "/proj", "--before", &t_after, "--dry-run", "--keep-new"], &m.store);
    assert_eq!((dry["dry_run"].as_bool(), dry["files_removed"].as_u64()), (Some(true), Some(0)), "{dry}");
    assert_eq!(dry["files_restored"], 2, "{dry}");
    assert_eq!(read(&m, "proj/README"), "readme v3 broken\n", "a dry run changed the tree");

    assert_eq!(read(&m, &format!(".cowfs/at/{t}/proj/README")), "readme v2\n", "the moment to go back to");
    let r = cowfs_json(&["restore", "/proj", "--before", &t_after, "--keep-new"], &m.store);
    assert_eq!((r["files_restored"].as_u64(), r["files_removed"].as_u64()), (Some(2), Some(0)), "{r}");
    assert_eq!(read(&m, "proj/README"), "readme v2\n");
    assert_eq!(read(&m, "proj/src/main.rs"), "fn main() {}\n");
    assert_eq!(fs::read_link(m.path("proj/link")).unwrap().to_str(), Some("src/main.rs"));
    assert_eq!(read(&m, "proj/new.txt"), "made later\n", "--keep-new keeps later files");
    assert_eq!(read(&m, "other"), "outside changed\n", "outside the subtree nothing moves");

    // Without --keep-new, from a path inside the mount, later files go (and keep history).
    let inside = m.path("proj").to_str().unwrap().to_string();
    let r = cowfs_json(&["restore", &inside, "--before", &t_after], &m.store);
    assert_eq!(r["files_removed"], 1, "{r}");
    assert!(!m.path("proj/new.txt").exists());
    assert_eq!(cowfs_json(&["history", "/proj/new.txt"], &m.store).as_array().unwrap().len(), 1);
    // Non-destructive: the broken README is still in history.
    let h = cowfs_json(&["history", "/proj/README"], &m.store);
    assert_eq!(h.as_array().unwrap().len(), 4, "{h:#}\n{:#}", cowfs_json(&["log"], &m.store));

    // The whole tree, on the unmounted store.
    m.umount();
    let r = cowfs_json(&["restore", "/", "--before", &t_after], &m.store);
    assert_eq!(r["path"], "/");
    m.mount();
    assert_eq!(read(&m, "other"), "outside\n");
    let log = cowfs_json(&["log", "--action", "restore"], &m.store);
    assert!(log.as_array().unwrap().iter().any(|r| r["detail"].as_str().unwrap().starts_with("tree before")), "{log}");
}

#[test]
fn the_cowfs_at_directory_shows_the_tree_of_any_moment() {
    let m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/a"), "first").unwrap();
    let t = last_time(&m.store);
    fs::write(m.path("d/a"), "second").unwrap();
    fs::write(m.path("d/b"), "later").unwrap();
    let at = format!(".cowfs/at/{t}");
    assert_eq!(read(&m, &format!("{at}/d/a")), "first");
    assert!(!m.path(&format!("{at}/d/b")).exists());
    let names: Vec<String> = fs::read_dir(m.path(&format!("{at}/d")))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["a"]);
    // Moments are not listed, only reachable; the future and nonsense are not there.
    assert_eq!(fs::read_dir(m.path(".cowfs/at")).unwrap().count(), 0);
    assert!(!m.path(".cowfs/at/2999-01-01").exists());
    assert!(!m.path(".cowfs/at/1999-01-01").exists(), "before the store existed");
    assert!(!m.path(".cowfs/at/yesterday").exists());
    // A local date-time without an offset names the same kind of moment: now, all of it.
    let now = local_now_next_second();
    assert_eq!(read(&m, &format!(".cowfs/at/{now}/d/b")), "later");
    let err = fs::write(m.path(&format!("{at}/d/new")), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS: {err}");
}

/// Now (rounded up to the next second, so it is not before the last write) as local
/// `YYYY-MM-DD HH:MM:SS`, from `date`.
fn local_now_next_second() -> String {
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let (code, out, _) = run(std::process::Command::new("date").arg("+%Y-%m-%d %H:%M:%S"));
    assert_eq!(code, 0);
    out.trim().to_string()
}

#[test]
fn bad_time_travel_input_is_one_line_and_changes_nothing() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("f"), "x").unwrap();
    m.umount();
    let before = store_bytes(&m.store);
    let s = m.store.to_str().unwrap().to_string();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["log", "--action", "explode", "-s", &s], "unknown action \"explode\""),
        (vec!["log", "--since", "2026-13-01", "-s", &s], "invalid date \"2026-13-01\""),
        (vec!["log", "--until", "soon", "-s", &s], "invalid date \"soon\""),
        (vec!["log", "--path-prefix", "/a/../b", "-s", &s], "'..' is not allowed"),
        (vec!["restore", "/d", "--version", "1", "-s", &s], "is a directory"),
        (vec!["restore", "/", "--version", "1", "-s", &s], "is a directory"),
        (vec!["restore", "/f", "--version", "1", "--keep-new", "-s", &s], "--keep-new"),
        (vec!["restore", "/", "--before", "1999-01-01", "-s", &s], "before the store was created"),
        (vec!["restore", "/nothing", "--before", "2999-01-01", "-s", &s], "not a directory then"),
    ];
    for (args, want) in cases {
        let (code, _, err) = run(command("cowfs").args(&args));
        assert_eq!(code, 1, "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    }
    let (code, _, err) = run(command("cowfs").args(["log", "--limit", "x", "-s", &s]));
    assert_eq!((code, err.lines().count()), (2, 1), "{err}");
    assert!(store_bytes(&m.store) == before, "a refused command changed the store");
}

/// Restores through the mounted daemon are seen at once even where the kernel has the file's
/// pages cached (files are opened with FOPEN_KEEP_CACHE) and the file stays open throughout
/// (so the kernel keeps its inode and pages: only the daemon's invalidation drops them; the
/// same size would not give it away). A file restore, a tree restore and a snapshot restore.
#[test]
fn restores_while_mounted_are_not_hidden_by_the_page_cache() {
    let m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("d/f"), "AAAA\n").unwrap();
    let _held = fs::File::open(m.path("d/f")).unwrap();
    cowfs_json(&["snapshot", "create", "s1"], &m.store);
    fs::write(m.path("d/f"), "BBBB\n").unwrap();
    let cached = |want: &str| {
        // Twice, the second from the page cache if the first filled it.
        assert_eq!(read(&m, "d/f"), want);
        assert_eq!(read(&m, "d/f"), want);
    };
    cached("BBBB\n");
    cowfs_json(&["restore", "/d/f", "--version", "1"], &m.store);
    let restored_at = last_time(&m.store);
    cached("AAAA\n");
    fs::write(m.path("d/f"), "CCCC\n").unwrap();
    cached("CCCC\n");
    // The tree as it was just before that restore.
    cowfs_json(&["restore", "/d", "--before", &restored_at], &m.store);
    cached("BBBB\n");
    cowfs_json(&["snapshot", "restore", "s1"], &m.store);
    cached("AAAA\n");
}
