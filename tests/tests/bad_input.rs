//! Bad input to every command: a table of cases, then 2,000 random argument lists. Every
//! refusal is one line on stderr with a non-zero exit (usage errors: 2; fsck: 16), never a
//! panic, and a refused command leaves the store's bytes unchanged.

use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;

use cowfs_e2e::{Mounted, command, run, store_bytes};

/// Runs `bin args`; checks the refusal is one line and no panic; returns (code, stderr).
fn refused(bin: &str, args: &[OsString]) -> (i32, String) {
    let (code, _, err) = run(command(bin).args(args));
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{bin} {args:?} panicked: {err}");
    assert_ne!(code, 0, "{bin} {args:?} succeeded");
    assert_eq!(err.lines().count(), 1, "{bin} {args:?}: not one line: {err}");
    (code, err)
}

fn os(args: &[&str]) -> Vec<OsString> {
    args.iter().map(OsString::from).collect()
}

#[test]
fn a_table_of_bad_input_is_refused_in_one_line() {
    let mut m = Mounted::new();
    fs::create_dir(m.path("d")).unwrap();
    fs::write(m.path("f"), "x").unwrap();
    fs::write(m.path("f"), "y").unwrap();
    let mounted_store = m.store.to_str().unwrap().to_string();
    let mnt = m.mnt.to_str().unwrap().to_string();
    let second = m.dir.path().join("second");
    fs::create_dir(&second).unwrap();
    let second = second.to_str().unwrap().to_string();
    // The second mount of a store names the first one's mount point.
    let already = format!("already mounted at {}", m.mnt.canonicalize().unwrap().display());
    // A few refusals need the store mounted.
    let mounted_cases: Vec<(&str, Vec<OsString>, i32, &str)> = vec![
        ("cowfs", os(&["mount", &mounted_store, &second]), 1, &already),
        ("cowfs", os(&["mount", &mounted_store, &mnt]), 1, ""),
        ("cowfs-fsck", os(&[&mounted_store, "--repair"]), 0, ""), // clean: nothing to repair
    ];
    for (bin, args, want, text) in mounted_cases {
        let (code, out, err) = run(command(bin).args(&args));
        if want == 0 {
            assert_eq!(code, 0, "{bin} {args:?}: {out}{err}");
            continue;
        }
        assert_eq!((code, err.lines().count()), (want, 1), "{bin} {args:?}: {err}");
        assert!(err.contains(text), "{bin} {args:?}: want {text:?} in {err}");
    }
    let (code, _, err) = run(command("cowfs").args(["mount", "-s"]).arg(&m.store).arg(&mnt));
    assert_eq!(code, 2, "{err}");
    m.umount();

    let dir = m.dir.path();
    let s = m.store.to_str().unwrap().to_string();
    let foreign = dir.join("foreign");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("notes.txt"), "not a store").unwrap();
    let future = dir.join("future");
    fs::create_dir(&future).unwrap();
    let mut header = fs::read(m.store.join("STORE")).unwrap();
    header[8..12].copy_from_slice(&99u32.to_le_bytes());
    fs::write(future.join("STORE"), header).unwrap();
    let file = dir.join("a-file");
    fs::write(&file, "").unwrap();
    let full_dir = dir.join("full");
    fs::create_dir(&full_dir).unwrap();
    fs::write(full_dir.join("x"), "").unwrap();
    let (f, fo, fu, fd, missing) = (
        foreign.to_str().unwrap(),
        future.to_str().unwrap(),
        file.to_str().unwrap(),
        full_dir.to_str().unwrap(),
        dir.join("missing").to_str().unwrap().to_string(),
    );
    let long = "n".repeat(300);
    let long_path = format!("/{long}");
    let cases: Vec<(&str, Vec<&str>, i32, &str)> = vec![
        ("cowfs", vec!["history", "/f", "-s", &missing], 1, "no such directory"),
        ("cowfs", vec!["history", "/f", "-s", f], 1, "not a cowfs store"),
        ("cowfs", vec!["history", "/f", "-s", fo], 1, "format"),
        ("cowfs", vec!["history", "/f", "-s", fu], 1, "no such directory"),
        ("cowfs", vec!["history", "/nope", "-s", &s], 1, "no such file"),
        ("cowfs", vec!["history", "/d", "-s", &s], 1, "not a regular file"),
        ("cowfs", vec!["history", "/../f", "-s", &s], 1, "'..'"),
        ("cowfs", vec!["history", &long_path, "-s", &s], 1, "no such file"),
        ("cowfs", vec!["history", "/", "-s", &s], 1, "root"),
        ("cowfs", vec!["history"], 2, ""),
        ("cowfs", vec!["restore", "/f", "--version", "-1", "-s", &s], 2, ""),
        ("cowfs", vec!["restore", "/f", "--version", "18446744073709551616", "-s", &s], 2, ""),
        ("cowfs", vec!["restore", "/f", "--version", "0", "-s", &s], 1, "no version 0"),
        ("cowfs", vec!["restore", "/f", "--before", "2026-13-45", "-s", &s], 1, "invalid date"),
        ("cowfs", vec!["restore", "/f", "--before", "yesterday", "-s", &s], 1, "invalid date"),
        ("cowfs", vec!["restore", "/f", "--version", "1", "--before", "2026-01-01", "-s", &s], 2, ""),
        ("cowfs", vec!["diff", "/f", "--v1", "1", "-s", &s], 2, ""),
        ("cowfs", vec!["diff", "/f", "--v1", "1", "--v2", "99", "-s", &s], 1, "no version 99"),
        ("cowfs", vec!["log", "--limit", "-5", "-s", &s], 2, ""),
        ("cowfs", vec!["log", "--action", "nope", "-s", &s], 1, "unknown action"),
        ("cowfs", vec!["log", "--since", "2026-02-30", "-s", &s], 1, "invalid date"),
        ("cowfs", vec!["snapshot", "create", "a/b", "-s", &s], 1, "invalid snapshot name"),
        ("cowfs", vec!["snapshot", "create", &long, "-s", &s], 1, "invalid snapshot name"),
        ("cowfs", vec!["snapshot", "create", "..", "-s", &s], 1, "invalid snapshot name"),
        ("cowfs", vec!["snapshot", "show", "none", "-s", &s], 1, "no snapshot"),
        ("cowfs", vec!["snapshot", "delete", "none", "-s", &s], 1, "no snapshot"),
        ("cowfs", vec!["snapshot", "restore", "none", "-s", &s], 1, "no snapshot"),
        ("cowfs", vec!["snapshot", "list"], 1, "not in a cowfs mount"),
        ("cowfs", vec!["history", "/f"], 1, "/f is not in a cowfs mount"),
        ("cowfs", vec!["stats"], 1, "not in a cowfs mount"),
        ("cowfs", vec!["policy", "set", "--min-free", "101%", "-s", &s], 1, "invalid amount \"101%\""),
        ("cowfs", vec!["gc", "--keep-last", "1", "-s", &s], 1, "--force"),
        ("cowfs", vec!["gc", "--keep-daily", "x", "-s", &s], 2, ""),
        ("cowfs", vec!["gc", "--keep-within", "10q", "-s", &s], 1, "invalid duration"),
        ("cowfs", vec!["policy", "set", "--exclude", "", "-s", &s], 1, "invalid exclude"),
        ("cowfs", vec!["stats", "-s", &missing], 1, "no such directory"),
        ("cowfs", vec!["mount", &s, &missing], 1, ""),
        ("cowfs", vec!["mount", &s, fu], 1, "not one file"),
        ("cowfs", vec!["mount", &s, fd], 1, "not empty"),
        ("cowfs", vec!["mount", f, &mnt], 1, "not a cowfs store"),
        ("cowfs", vec!["umount", &mnt], 1, "not mounted"),
        ("cowfs", vec!["umount", &missing], 1, ""),
        ("cowfs", vec!["frobnicate"], 2, ""),
        ("cowfs-compact", vec![f], 1, "not a cowfs store"),
        ("cowfs-compact", vec![&missing], 1, "no such directory"),
        ("cowfs-compact", vec![fo], 1, "format"),
        ("cowfs-compact", vec![], 2, ""),
        ("cowfs-fsck", vec![&missing], 8, "no such directory"),
        ("cowfs-fsck", vec![f], 8, "not a cowfs store"),
        ("cowfs-fsck", vec![&s, "--bogus"], 16, ""),
        ("cowfs-fsck", vec![], 16, ""),
    ];
    let before = store_bytes(&m.store);
    for (bin, args, want, text) in &cases {
        let (code, err) = refused(bin, &os(args));
        assert_eq!(code, *want, "{bin} {args:?}: {err}");
        assert!(err.contains(text), "{bin} {args:?}: want {text:?} in {err}");
    }
    // A path that is not UTF-8.
    let bad = vec![OsString::from("history"), OsString::from_vec(b"/\xff\xfe".to_vec()), "-s".into(), s.clone().into()];
    refused("cowfs", &bad);
    assert!(store_bytes(&m.store) == before, "a refused command changed the store");
    assert!(fs::read_dir(&foreign).unwrap().count() == 1, "a refused command wrote into a foreign directory");
    println!("{} bad-input cases refused", cases.len() + 3);
}

#[test]
fn two_thousand_random_argument_lists_never_panic_and_refusals_change_nothing() {
    let mut m = Mounted::new();
    fs::write(m.path("f"), "x").unwrap();
    fs::create_dir(m.path("d")).unwrap();
    m.umount();
    let store = m.store.clone();
    let words: &[&str] = &[
        "history",
        "restore",
        "diff",
        "log",
        "snapshot",
        "create",
        "list",
        "show",
        "delete",
        "gc",
        "policy",
        "set",
        "stats",
        "/f",
        "/d",
        "/nope",
        "/../x",
        "--version",
        "--before",
        "--v1",
        "--v2",
        "--json",
        "--dry-run",
        "--keep-new",
        "--limit",
        "--action",
        "--since",
        "--until",
        "--path-prefix",
        "--keep-last",
        "--keep-daily",
        "--keep-within",
        "--force",
        "--explain",
        "--exclude",
        "--description",
        "--snapshot",
        "1",
        "0",
        "-3",
        "99",
        "2026-01-01",
        "2026-99-99",
        "now",
        "30d",
        "x",
        "write",
        "*.tmp",
        "",
        "-",
        "--",
        "s1",
    ];
    let n = if std::env::var("COWFS_SOAK").is_ok() { 20_000 } else { 2_000 };
    let mut rng: u64 = 0x1234_5678_9ABC_DEF1;
    let mut next = move |k: usize| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        (rng % k as u64) as usize
    };
    let (mut ok, mut refusals) = (0, 0);
    for _ in 0..n {
        let len = 1 + next(6);
        let mut args: Vec<OsString> = (0..len).map(|_| OsString::from(words[next(words.len())])).collect();
        args.push("-s".into());
        args.push(store.clone().into());
        let before = store_bytes(&store);
        let (code, _, err) = run(command("cowfs").args(&args));
        assert!(!err.contains("panicked"), "cowfs {args:?} panicked: {err}");
        assert!(matches!(code, 0..=2), "cowfs {args:?}: exit {code}: {err}");
        if code == 0 {
            ok += 1;
        } else {
            refusals += 1;
            assert_eq!(err.lines().count(), 1, "cowfs {args:?}: {err}");
            assert!(store_bytes(&store) == before, "cowfs {args:?} was refused but changed the store");
        }
    }
    println!("{n} random argument lists: {ok} ran, {refusals} refused in one line");
    let (code, out, err) = run(command("cowfs-fsck").arg(Path::new(&store)));
    assert_eq!(code, 0, "{out}{err}");
}
