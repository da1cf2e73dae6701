//! The activity log and the tree at a past moment, rebuilt from the log's stamps.

mod common;

use common::{ROOT, Rng, for_each_seed, put_file, sim_engine};
use cowfs_engine::storage::SimStorage;
use cowfs_engine::{Action, Engine, Timestamp};

/// action, path, rename target, version number.
type Row = (String, Option<String>, Option<String>, Option<u64>);

fn actions(e: &Engine) -> Vec<Row> {
    e.activity()
        .unwrap()
        .into_iter()
        .map(|x| (x.action.name().to_string(), x.path, x.to, x.version.map(|v| v.number)))
        .collect()
}

fn row(
    a: &str,
    p: Option<&str>,
    to: Option<&str>,
    v: Option<u64>,
) -> (String, Option<String>, Option<String>, Option<u64>) {
    (a.to_string(), p.map(str::to_string), to.map(str::to_string), v)
}

#[test]
fn log_names_every_change_with_its_path_then() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let docs = e.mkdir(ROOT, b"docs", 0o755, 0, 0).unwrap();
    let a = e.create_file(docs.ino, b"a.txt", 0o644).unwrap();
    let mut w = e.open_file(a.ino).unwrap();
    w.write(0, b"one").unwrap();
    w.commit(true).unwrap();
    drop(w);
    e.rename(docs.ino, b"a.txt", ROOT, b"b.txt", false, false, false).unwrap();
    e.set_xattr(a.ino, b"user.k", b"v", cowfs_engine::XattrMode::Any).unwrap();
    e.link(a.ino, docs.ino, b"hard").unwrap();
    e.snapshot_create("s1", "").unwrap();
    e.unlink(ROOT, b"b.txt", false).unwrap();
    e.rmdir(ROOT, b"empty", false).unwrap_err();
    e.snapshot_delete("s1").unwrap();
    let expect = vec![
        row("mkdir", Some("/docs"), None, None),
        row("create", Some("/docs/a.txt"), None, None),
        row("write", Some("/docs/a.txt"), None, Some(1)),
        row("rename", Some("/docs/a.txt"), Some("/b.txt"), None),
        row("xattr", Some("/b.txt"), None, None),
        row("link", Some("/docs/hard"), None, None),
        row("snapshot-create", None, None, None),
        row("delete", Some("/b.txt"), None, None),
        row("snapshot-delete", None, None, None),
    ];
    assert_eq!(actions(&e), expect);
    let log = e.activity().unwrap();
    assert_eq!(log[6].detail, "s1");
    assert!(log.windows(2).all(|p| p[0].time <= p[1].time));
    // The log is the same after a reopen (from a checkpoint) as before.
    e.close().unwrap();
    let e = sim_engine(&sim);
    assert_eq!(actions(&e), expect);
}

#[test]
fn notes_and_tagged_operations_are_logged_as_asked() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = put_file(&e, b"f", b"v1", true);
    put_file(&e, b"f", b"v2", true);
    let v1 = e.versions(e.getattr(ino).unwrap().lineage.unwrap())[0].clone();
    let op = cowfs_engine::testing::Op::CommitContent { ino, size: v1.size, content: v1.content, mtime: None };
    let tagged =
        cowfs_engine::testing::Op::Tagged { action: Action::Restore, detail: "version 1".into(), op: Box::new(op) };
    e.submit(tagged, true).unwrap();
    let note = cowfs_engine::testing::Op::Note { action: Action::SnapshotRestore, ino: ROOT, detail: "base".into() };
    e.submit(note, true).unwrap();
    let log = e.activity().unwrap();
    let last: Vec<_> = log.iter().rev().take(2).rev().collect();
    assert_eq!((last[0].action, last[0].path.as_deref(), &*last[0].detail), (Action::Restore, Some("/f"), "version 1"));
    assert_eq!(last[0].version.as_ref().map(|v| v.number), Some(3));
    assert_eq!(
        (last[1].action, last[1].path.as_deref(), &*last[1].detail),
        (Action::SnapshotRestore, Some("/"), "base")
    );
    // An unchanged commit writes nothing, so it logs nothing.
    let n = log.len();
    put_file(&e, b"f", b"v1", true);
    assert_eq!(e.activity().unwrap().len(), n);
}

/// Random operations; after each, the tree is remembered with the time of its stamp. The tree
/// rebuilt at each such time must equal the remembered one.
#[test]
fn tree_at_each_moment_equals_the_tree_then() {
    for_each_seed(6, |seed| {
        let mut rng = Rng::new(seed);
        let sim = SimStorage::new();
        let mut e = sim_engine(&sim);
        let mut seen = Vec::new();
        for step in 0..120 {
            let name = format!("n{}", rng.below(6)).into_bytes();
            let dir = if rng.below(3) == 0 {
                e.lookup(ROOT, b"d").map(|d| d.ino).unwrap_or_else(|_| e.mkdir(ROOT, b"d", 0o755, 0, 0).unwrap().ino)
            } else {
                ROOT
            };
            let changed = match rng.below(6) {
                0 | 1 => {
                    let ino = match e.lookup(dir, &name) {
                        Ok(i) if i.kind == cowfs_engine::FileKind::Regular => i.ino,
                        Ok(_) => continue,
                        Err(_) => e.create_file(dir, &name, 0o644).unwrap().ino,
                    };
                    let mut w = e.open_file(ino).unwrap();
                    let n = 1 + rng.below(3000) as usize;
                    w.write(0, &rng.bytes(n)).unwrap();
                    w.commit(false).is_ok()
                }
                2 => e.unlink(dir, &name, false).is_ok(),
                3 => {
                    let to = format!("n{}", rng.below(6)).into_bytes();
                    e.rename(dir, &name, ROOT, &to, false, false, false).is_ok()
                }
                4 => e.snapshot_create(&format!("s{step}"), "").is_ok(),
                _ => e.mkdir(dir, &name, 0o700, 0, 0).is_ok(),
            };
            if changed {
                let t = e.activity().unwrap().last().unwrap().time;
                seen.push((t, e.namespace()));
            }
            if rng.below(40) == 0 {
                e.close().unwrap();
                e = sim_engine(&sim);
            }
        }
        // Several stamps may share one clock reading: only the last state of each time counts.
        for (k, (t, ns)) in seen.iter().enumerate() {
            if seen.get(k + 1).is_some_and(|(next, _)| next == t) {
                continue;
            }
            assert_eq!(&e.namespace_at(*t).unwrap(), ns, "seed {seed}: tree at step {k}");
        }
        let before = Timestamp { secs: 0, nanos: 0 };
        let empty = e.namespace_at(before).unwrap();
        assert!(empty.inodes.len() == 1 && empty.dirs.values().all(|d| d.is_empty()), "only the root before it all");
    });
}
