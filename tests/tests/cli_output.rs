//! Output for people and for shells: tables with local times to the second and human sizes
//! (`--json` keeps RFC 3339 and bytes), shell completions and manual pages generated from the
//! command definitions, through the `cowfs` binary.

use std::fs;

use cowfs_e2e::{Mounted, command, cowfs_json, run};

/// `YYYY-MM-DD HH:MM:SS`, nothing more.
fn is_local_time(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 19
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => *c == b' ',
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        })
}

fn cowfs_out(args: &[&str], store: &std::path::Path) -> String {
    let (code, out, err) = run(command("cowfs").args(args).arg("-s").arg(store));
    assert_eq!(code, 0, "cowfs {args:?}: {err}");
    out
}

#[test]
fn tables_show_local_times_and_human_sizes_json_keeps_rfc3339_and_bytes() {
    let m = Mounted::new();
    fs::write(m.path("small"), "1234").unwrap();
    fs::write(m.path("big"), vec![7u8; 3 << 20]).unwrap();
    cowfs_json(&["snapshot", "create", "s"], &m.store);

    let out = cowfs_out(&["history", "/big"], &m.store);
    let row = out.lines().nth(1).unwrap_or_else(|| panic!("{out}"));
    let date = &row[10..29];
    assert!(is_local_time(date), "{row}");
    assert!(row.contains("3.0 MiB"), "{row}");
    let small = cowfs_out(&["history", "/small"], &m.store);
    assert!(small.lines().nth(1).unwrap().contains(" 4 B "), "{small}");
    let json = cowfs_json(&["history", "/big"], &m.store);
    assert_eq!(json[0]["size"], 3 << 20);
    let rfc = json[0]["date"].as_str().unwrap();
    assert!(rfc.contains('T') && rfc.contains('.') && rfc.len() > 25, "{rfc}");

    let log = cowfs_out(&["log"], &m.store);
    for line in log.lines().skip(1) {
        assert!(is_local_time(&line[..19]), "{line}");
    }
    let snaps = cowfs_out(&["snapshot", "list"], &m.store);
    assert!(is_local_time(&snaps.lines().nth(1).unwrap()[25..44]), "{snaps}");

    let stats = cowfs_out(&["stats"], &m.store);
    let logical = stats.lines().find(|l| l.starts_with("logical size ")).unwrap_or_else(|| panic!("{stats}"));
    assert!(logical.ends_with(" MiB"), "{stats}");
    assert!(cowfs_json(&["stats"], &m.store)["logical_size_bytes"].as_u64().unwrap() > 3 << 20);
}

#[test]
fn completions_and_manual_pages_come_from_the_command_definitions() {
    let (code, bash, err) = run(command("cowfs").args(["completions", "bash"]));
    assert_eq!(code, 0, "{err}");
    assert!(bash.contains("_cowfs()") && bash.contains("complete -F _cowfs"), "{bash}");
    assert!(bash.contains("history") && bash.contains("--storage"), "every command and option is completed");
    let (code, fish, _) = run(command("cowfs").args(["completions", "fish"]));
    assert!(code == 0 && fish.contains("complete -c cowfs"), "{fish}");
    let (code, _, err) = run(command("cowfs").args(["completions", "tcsh"]));
    assert_eq!(code, 2);
    assert!(err.contains("tcsh") && err.trim().lines().count() == 1, "{err}");

    let (code, page, err) = run(command("cowfs").arg("man"));
    assert_eq!(code, 0, "{err}");
    assert!(page.starts_with(".ie \\n(.g .ds Aq") || page.contains(".TH cowfs 1"), "{page}");
    assert!(page.contains("history") && page.contains("snapshot"), "{page}");

    let dir = tempfile::tempdir().unwrap();
    let (code, out, err) = run(command("cowfs").args(["man", "--json", "--dir"]).arg(dir.path()));
    assert_eq!(code, 0, "{err}");
    let written: Vec<String> = serde_json::from_str(&out).unwrap();
    for name in ["cowfs.1", "cowfs-mount.1", "cowfs-history.1", "cowfs-snapshot-create.1"] {
        let p = dir.path().join(name);
        assert!(written.contains(&p.display().to_string()), "{name} not in {written:?}");
        assert!(fs::read_to_string(&p).unwrap().contains(".TH"), "{name}");
    }
    let (code, _, err) = run(command("cowfs").args(["man", "--dir", "/no/such/dir"]));
    assert_eq!(code, 1);
    assert!(err.contains("/no/such/dir") && err.trim().lines().count() == 1, "{err}");
}

#[test]
fn cowfs_mounts_lists_every_cowfs_mount() {
    let a = Mounted::with_env(&[("COWFS_BACKGROUND_SECS", "1")]);
    let b = Mounted::new();
    fs::write(a.path("f"), vec![1u8; 100_000]).unwrap();
    cowfs_json(&["policy", "set", "--keep-last", "3"], &a.store);
    // a's daemon passes every second: wait for one to be recorded.
    let start = std::time::Instant::now();
    while !a.store.join("maintenance.json").exists() {
        assert!(start.elapsed() < std::time::Duration::from_secs(30), "no background pass recorded");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let (code, out, err) = run(command("cowfs").args(["mounts", "--json"]));
    assert_eq!(code, 0, "{err}");
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let find = |m: &Mounted| {
        let mnt = m.mnt.display().to_string();
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["mountpoint"] == mnt.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{mnt} not in {rows}"))
    };
    let (ra, rb) = (find(&a), find(&b));
    assert_eq!(ra["pid"].as_i64(), Some(i64::from(a.daemon_pid())));
    assert_eq!(ra["fstype"], "fuse.cowfs");
    assert_eq!(ra["storage"], a.store.canonicalize().unwrap().display().to_string());
    assert!(ra["store_bytes"].as_u64().unwrap() > 0, "{ra}");
    assert_eq!(ra["policy"]["keep_last"], 3);
    assert!(rb["policy"]["keep_last"].is_null(), "{rb}");
    assert_eq!(rb["policy"]["keep_within"], "24h", "a new store's default: {rb}");
    let last = &ra["last_maintenance"];
    assert!(last["time"].as_str().unwrap() < last["next"].as_str().unwrap() && last["error"].is_null(), "{ra}");
    assert!(last["report"]["bytes_after"].as_u64().is_some(), "{ra}");
    assert!(rb["last_maintenance"].is_null(), "b's first pass is 10 minutes away: {rb}");
    assert!(ra["reclaimable_bytes"].as_u64().is_some() && rb["reclaimable_bytes"].as_u64().is_some(), "{ra} {rb}");
    let (code, table, _) = run(command("cowfs").arg("mounts"));
    assert_eq!(code, 0);
    let line_a = table.lines().find(|l| l.starts_with(a.mnt.to_str().unwrap())).unwrap_or_else(|| panic!("{table}"));
    assert!(line_a.contains("keep_last=3"), "{line_a}");
    let today = cowfs_out(&["log", "--limit", "1"], &a.store);
    let day = today.lines().nth(1).unwrap().split_whitespace().next().unwrap().to_string();
    assert!(line_a.contains(&day), "the last maintenance's local time: {line_a}");
    let line_b = table.lines().find(|l| l.starts_with(b.mnt.to_str().unwrap())).unwrap();
    assert!(line_b.contains("keep_within=24h") && line_b.contains("min_free=5%"), "{line_b}");
}

/// Runs `cowfs ARGS` on a terminal (a pty, through util-linux's `script`): what it drew.
fn on_a_terminal(args: &[&str]) -> String {
    on_a_terminal_run("cowfs", args)
}

fn on_a_terminal_run(bin: &str, args: &[&str]) -> String {
    cowfs_e2e::require_tool("script");
    let cowfs = cowfs_e2e::bin(bin);
    let line =
        std::iter::once(cowfs.display().to_string()).chain(args.iter().map(|a| format!("'{a}'"))).collect::<Vec<_>>();
    let (code, out, err) = run(std::process::Command::new("script").args(["-qec", &line.join(" "), "/dev/null"]));
    assert_eq!(code, 0, "cowfs {args:?} on a terminal: {out}{err}");
    out
}

/// gc, forget, a snapshot restore and fsck --verify-data draw a bar on a terminal, and write
/// nothing to stderr when it is not one.
#[test]
fn long_commands_draw_a_bar_on_a_terminal_and_nothing_extra_when_piped() {
    let mut m = Mounted::new();
    for k in 0..3u64 {
        fs::write(m.path("big"), cowfs_e2e::random_bytes(8 << 20, k)).unwrap();
        fs::write(m.path(&format!("f{k}")), "x").unwrap();
    }
    cowfs_json(&["snapshot", "create", "s"], &m.store);
    fs::write(m.path("f0"), "changed").unwrap();
    let store = m.store.to_str().unwrap().to_string();
    let s = store.as_str();
    let (code, _, err) = run(command("cowfs").args(["gc", "--keep-last", "2", "-s", s]));
    assert_eq!((code, err.as_str()), (0, ""), "piped gc wrote to stderr");
    let tty = on_a_terminal(&["gc", "--keep-last", "1", "--force", "-s", s]);
    assert!(tty.contains("compacted") && tty.contains("pruned"), "{tty:?}");
    let tty = on_a_terminal(&["snapshot", "restore", "s", "-s", s]);
    assert!(tty.contains("entries restored"), "{tty:?}");
    fs::write(m.path("big"), "small now").unwrap();
    let tty = on_a_terminal(&["forget", "/big", "-s", s]);
    assert!(tty.contains("compacted") && tty.contains("forgot"), "{tty:?}");
    let (code, _, err) = run(command("cowfs").args(["forget", "/f1", "-s", s]));
    assert_eq!((code, err.as_str()), (0, ""), "piped forget wrote to stderr");
    m.umount();
    let tty = on_a_terminal_run("cowfs-fsck", &["--verify-data", s]);
    assert!(tty.contains("hashed") && tty.contains("clean"), "{tty:?}");
}
