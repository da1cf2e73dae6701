//! Overlay trees through the engine (docs/OVERLAY.md): a store opened with lower trees shows
//! them merged below its own entries, lists a directory's lower entries only when it is first
//! looked at, keeps every change in the store and never writes the lower trees. The model test
//! compares random operations with a reference that copied the lower tree whole.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::{Engine, Error, ExtentKind, FileKind, InodeId, Options};

fn open_with(sim: &SimStorage, lowers: &[PathBuf], relower: bool) -> cowfs_engine::Result<Engine> {
    Engine::open_overlay(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny(), lowers, relower)
}

/// The inode at `path` (components separated by `/`), listing directories on the way.
fn resolve(e: &Engine, path: &str) -> cowfs_engine::Result<InodeId> {
    let mut ino = ROOT;
    for c in path.split('/').filter(|c| !c.is_empty()) {
        ino = e.lookup(ino, c.as_bytes())?.ino;
    }
    Ok(ino)
}

/// What a tree shows, by path: a directory, a file's bytes or a symlink's target.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry {
    Dir,
    File(Vec<u8>),
    Link(Vec<u8>),
}
type Tree = BTreeMap<String, Entry>;

/// The tree below `dir` on disk (what a whole copy of it is).
fn disk_tree(dir: &Path) -> Tree {
    let mut out = Tree::new();
    fn walk(base: &Path, dir: &Path, out: &mut Tree) {
        for d in std::fs::read_dir(dir).unwrap() {
            let d = d.unwrap();
            let p = d.path();
            let rel = p.strip_prefix(base).unwrap().to_str().unwrap().to_string();
            let t = d.file_type().unwrap();
            if t.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(base, &p, out);
            } else if t.is_symlink() {
                use std::os::unix::ffi::OsStrExt;
                out.insert(rel, Entry::Link(std::fs::read_link(&p).unwrap().as_os_str().as_bytes().to_vec()));
            } else {
                out.insert(rel, Entry::File(std::fs::read(&p).unwrap()));
            }
        }
    }
    walk(dir, dir, &mut out);
    out
}

/// The tree below `dir` in the engine (listing every directory).
fn engine_tree(e: &Engine, dir: InodeId, prefix: &str, out: &mut Tree) {
    for (name, d) in e.entries(dir).unwrap().iter() {
        let p = format!("{prefix}{}", String::from_utf8_lossy(name));
        let i = e.getattr(d.child).unwrap();
        match i.kind {
            FileKind::Directory => {
                out.insert(p.clone(), Entry::Dir);
                engine_tree(e, i.ino, &format!("{p}/"), out);
            }
            FileKind::Symlink => {
                out.insert(p, Entry::Link(i.symlink.clone()));
            }
            _ => {
                out.insert(p, Entry::File(e.read(i.ino, 0, i.size as usize).unwrap()));
            }
        }
    }
}

fn whole(e: &Engine) -> Tree {
    let mut t = Tree::new();
    engine_tree(e, ROOT, "", &mut t);
    t
}

/// Two lower trees: layer 0 over layer 1, overlapping in `shared/`.
fn two_layers() -> (tempfile::TempDir, Vec<PathBuf>) {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("top"), t.path().join("bottom"));
    for d in ["shared/sub", "only-top"] {
        std::fs::create_dir_all(a.join(d)).unwrap();
    }
    for d in ["shared/deep/er", "only-bottom", "hidden"] {
        std::fs::create_dir_all(b.join(d)).unwrap();
    }
    std::fs::write(a.join("shared/both"), b"from the top").unwrap();
    std::fs::write(b.join("shared/both"), b"from the bottom").unwrap();
    std::fs::write(b.join("shared/deep/er/f"), b"deep").unwrap();
    std::fs::write(a.join("only-top/f"), Rng::new(7).bytes(300_000)).unwrap();
    std::fs::write(a.join("hidden"), b"a file over the bottom's directory").unwrap();
    std::fs::write(b.join("hidden/x"), b"never shown").unwrap();
    std::fs::write(b.join("empty"), b"").unwrap();
    rustix::fs::setxattr(b.join("empty"), "user.tag", b"blue", rustix::fs::XattrFlags::empty()).unwrap();
    std::os::unix::fs::symlink("shared/both", a.join("link")).unwrap();
    (t, vec![a, b])
}

#[test]
fn lower_trees_show_merged_and_every_change_stays_in_the_store() {
    let (_t, lowers) = two_layers();
    let before: Vec<Tree> = lowers.iter().map(|l| disk_tree(l)).collect();
    let sim = SimStorage::new();
    let e = open_with(&sim, &lowers, false).unwrap();
    let stats = e.stats().unwrap();
    assert_eq!(stats.chunks, 0, "mounting lists nothing and copies nothing");

    // Lookups list only the directories on the way.
    let deep = resolve(&e, "shared/deep/er/f").unwrap();
    assert_eq!(e.read(deep, 0, 100).unwrap(), b"deep");
    assert!(e.getattr(resolve(&e, "only-bottom").unwrap()).unwrap().unlisted().is_some(), "not listed yet");
    assert!(e.getattr(resolve(&e, "shared/sub").unwrap()).unwrap().unlisted().is_some());
    let t = whole(&e);
    assert_eq!(t["shared/both"], Entry::File(b"from the top".to_vec()), "the top layer wins");
    assert_eq!(t["hidden"], Entry::File(b"a file over the bottom's directory".to_vec()));
    assert!(!t.contains_key("hidden/x"), "a file hides the directory below it");
    assert_eq!(t["link"], Entry::Link(b"shared/both".to_vec()));
    assert_eq!(t["empty"], Entry::File(Vec::new()));
    assert_eq!(e.stats().unwrap().chunks, 0, "listing and reading store no bytes");
    let root = e.getattr(ROOT).unwrap();
    assert_eq!(root.nlink, 2 + 3, "shared, only-top, only-bottom (hidden is a file)");

    // Changes: an edit, a delete, a rename of a directory not listed yet, a directory deleted
    // and made again, a non-empty lower directory refused.
    let big = resolve(&e, "only-top/f").unwrap();
    let mut w = e.open_file(big).unwrap();
    w.write(100_000, b"EDIT").unwrap();
    w.commit(true).unwrap();
    drop(w);
    let versions = e.versions(e.getattr(big).unwrap().lineage.unwrap());
    assert_eq!(versions.len(), 2, "the lower original is version 1");
    let v1 = &versions[0];
    assert_eq!(e.read_content(v1.content, v1.size, 0, 300_000).unwrap(), Rng::new(7).bytes(300_000));
    let mut kinds = Vec::new();
    e.for_each_extent(e.getattr(big).unwrap().content, |_, x| kinds.push(x.kind)).unwrap();
    assert_eq!(kinds.iter().filter(|k| matches!(k, ExtentKind::Lower { .. })).count(), 2);
    assert!(e.stats().unwrap().chunk_raw_bytes < 70_000, "an edit stores about a chunk, not the file");

    let shared = resolve(&e, "shared").unwrap();
    e.unlink(shared, b"both", false).unwrap();
    assert!(matches!(e.rmdir(shared, b"deep", false), Err(Error::NotEmpty(_))));
    e.rename(ROOT, b"only-bottom", shared, b"moved", false, false, false).unwrap();
    let sub = resolve(&e, "shared/sub").unwrap();
    e.rmdir(shared, b"sub", false).unwrap();
    let again = e.mkdir(shared, b"sub", 0o755, 0, 0).unwrap();
    assert_ne!(again.ino, sub);
    assert!(e.entries(again.ino).unwrap().is_empty());
    let deep = resolve(&e, "shared/deep").unwrap();
    e.rename(shared, b"deep", ROOT, b"deep-moved", false, false, false).unwrap();
    assert_eq!(e.read(resolve(&e, "deep-moved/er/f").unwrap(), 0, 10).unwrap(), b"deep", "children follow, not copied");
    assert_eq!(resolve(&e, "deep-moved").unwrap(), deep);
    let want = whole(&e);

    // Reopened: without lower trees given, the recorded ones; the same tree, the same inodes.
    drop(e);
    let e = open_with(&sim, &[], false).unwrap();
    assert_eq!(whole(&e), want);
    assert_eq!(resolve(&e, "deep-moved").unwrap(), deep);
    e.checkpoint().unwrap();
    drop(e);
    let e = open_with(&sim, &lowers, false).unwrap();
    assert_eq!(whole(&e), want);
    drop(e);
    // Others are refused unless replaced on purpose.
    let e = open_with(&sim, &lowers[..1], false).unwrap_err().to_string();
    assert!(e.contains("--relower") && e.contains("bottom"), "{e}");
    let e = open_with(&sim, &lowers[1..], true).unwrap();
    drop(e);
    assert_eq!(cowfs_engine::testing::meta::read_lowers(&sim).unwrap(), &lowers[1..]);
    // Not the same files: fsck says so (the top layer's files are not in the bottom tree).
    let report = cowfs_engine::fsck::check(&sim, false).unwrap();
    assert!(report.findings.iter().any(|f| f.error && f.place.ends_with("only-top/f")), "{:?}", report.findings);
    drop(open_with(&sim, &lowers, true).unwrap());
    assert_fsck_clean(&sim, "overlay store");
    let after: Vec<Tree> = lowers.iter().map(|l| disk_tree(l)).collect();
    assert_eq!(after, before, "the lower trees never change");
}

/// A store with files of its own, opened with lower trees for the first time: its entries stay
/// on top of the lower ones of the same name.
#[test]
fn a_store_keeps_its_own_entries_on_top_of_lower_trees() {
    let (_t, lowers) = two_layers();
    let sim = SimStorage::new();
    let e = open_with(&sim, &[], false).unwrap();
    put_file(&e, b"shared", b"mine", true);
    e.mkdir(ROOT, b"own", 0o700, 0, 0).unwrap();
    drop(e);
    let e = open_with(&sim, &lowers, false).unwrap();
    let t = whole(&e);
    assert_eq!(t["shared"], Entry::File(b"mine".to_vec()), "the store's file hides the lower directory");
    assert!(!t.contains_key("shared/both"));
    assert_eq!(
        (&t["own"], &t["only-top/f"], &t["only-bottom"]),
        (&Entry::Dir, &Entry::File(Rng::new(7).bytes(300_000)), &Entry::Dir)
    );
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 2 + 3, "own, only-top, only-bottom");
}

/// Random operations on an overlay store, compared after every step (the directories the step
/// touched) and at the end and after each reopen (the whole tree) with a reference that copied
/// the lower tree whole at the start.
fn model_run(seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let t = tempfile::tempdir().unwrap();
    let lower = t.path().join("lower");
    // A tree of 3 levels, a few files each, some empty, some large enough for several chunks.
    let (mut dirs, mut level) = (vec![String::new()], vec![String::new()]);
    for _ in 0..3 {
        let next: Vec<String> =
            level.iter().flat_map(|p| (0..1 + rng.below(3)).map(move |i| format!("{p}d{i}/"))).collect();
        dirs.extend(next.iter().cloned());
        level = next;
    }
    for d in &dirs {
        std::fs::create_dir_all(lower.join(d)).unwrap();
        for i in 0..rng.below(4) {
            let len = [0, 1, 5000, 150_000][rng.below(4) as usize];
            std::fs::write(lower.join(format!("{d}f{i}")), rng.bytes(len)).unwrap();
        }
    }
    let mut model = disk_tree(&lower);
    let original = model.clone();
    let sim = SimStorage::new();
    let mut e = open_with(&sim, std::slice::from_ref(&lower), false).unwrap();
    let mut fresh = 0;
    let pick = |rng: &mut Rng, model: &Tree, want: fn(&Entry) -> bool| {
        let c: Vec<String> = model.iter().filter(|(_, v)| want(v)).map(|(k, _)| k.clone()).collect();
        (!c.is_empty()).then(|| c[rng.below(c.len() as u64) as usize].clone())
    };
    let dir_of = |p: &str| p.rsplit_once('/').map_or(String::new(), |(d, _)| d.to_string());
    let name_of = |p: &str| p.rsplit_once('/').map_or(p.to_string(), |(_, n)| n.to_string());
    let join = |d: &str, n: &str| if d.is_empty() { n.to_string() } else { format!("{d}/{n}") };
    for step in 0..steps {
        let pick_dir = |rng: &mut Rng, model: &Tree| {
            let mut c: Vec<String> = model.iter().filter(|(_, v)| **v == Entry::Dir).map(|(k, _)| k.clone()).collect();
            c.push(String::new());
            c[rng.below(c.len() as u64) as usize].clone()
        };
        let mut touched = Vec::new();
        match rng.below(9) {
            0 | 1 => {
                let Some(p) = pick(&mut rng, &model, |v| matches!(v, Entry::File(_))) else { continue };
                let Entry::File(data) = model.get_mut(&p).unwrap() else { unreachable!() };
                let at = rng.below(data.len() as u64 + 100) as usize;
                let n = 1 + rng.below(9000) as usize;
                let bytes = rng.bytes(n);
                if data.len() < at + bytes.len() {
                    data.resize(at + bytes.len(), 0);
                }
                data[at..at + bytes.len()].copy_from_slice(&bytes);
                let mut w = e.open_file(resolve(&e, &p).unwrap()).unwrap();
                w.write(at as u64, &bytes).unwrap();
                w.commit(false).unwrap();
                touched.push(dir_of(&p));
            }
            2 => {
                let Some(p) = pick(&mut rng, &model, |v| matches!(v, Entry::File(_))) else { continue };
                let Entry::File(data) = model.get_mut(&p).unwrap() else { unreachable!() };
                let len = rng.below(data.len() as u64 + 5000) as usize;
                data.resize(len, 0);
                let mut w = e.open_file(resolve(&e, &p).unwrap()).unwrap();
                w.truncate(len as u64).unwrap();
                w.commit(false).unwrap();
                touched.push(dir_of(&p));
            }
            3 => {
                let d = pick_dir(&mut rng, &model);
                fresh += 1;
                let p = join(&d, &format!("new{fresh}"));
                let n = rng.below(3000) as usize;
                let data = rng.bytes(n);
                let ino = e.create_file(resolve(&e, &d).unwrap(), name_of(&p).as_bytes(), 0o644).unwrap().ino;
                let mut w = e.open_file(ino).unwrap();
                w.write(0, &data).unwrap();
                w.commit(false).unwrap();
                model.insert(p, Entry::File(data));
                touched.push(d);
            }
            4 => {
                let Some(p) = pick(&mut rng, &model, |v| !matches!(v, Entry::Dir)) else { continue };
                e.unlink(resolve(&e, &dir_of(&p)).unwrap(), name_of(&p).as_bytes(), false).unwrap();
                model.remove(&p);
                touched.push(dir_of(&p));
            }
            5 => {
                let d = pick_dir(&mut rng, &model);
                fresh += 1;
                let p = join(&d, &format!("dir{fresh}"));
                e.mkdir(resolve(&e, &d).unwrap(), name_of(&p).as_bytes(), 0o755, 0, 0).unwrap();
                model.insert(p, Entry::Dir);
                touched.push(d);
            }
            6 => {
                let Some(p) = pick(&mut rng, &model, |v| *v == Entry::Dir) else { continue };
                let empty = !model.keys().any(|k| k.starts_with(&format!("{p}/")));
                let r = e.rmdir(resolve(&e, &dir_of(&p)).unwrap(), name_of(&p).as_bytes(), false);
                if empty {
                    r.unwrap();
                    model.remove(&p);
                } else {
                    assert!(matches!(r, Err(Error::NotEmpty(_))), "{p}: {r:?}");
                }
                touched.push(dir_of(&p));
            }
            7 => {
                // Rename a file or a directory (with what is below it) to a new name elsewhere.
                let Some(p) = pick(&mut rng, &model, |_| true) else { continue };
                let d = pick_dir(&mut rng, &model);
                if d == p || d.starts_with(&format!("{p}/")) {
                    continue;
                }
                fresh += 1;
                let to = join(&d, &format!("moved{fresh}"));
                let (from_dir, from_name) = (resolve(&e, &dir_of(&p)).unwrap(), name_of(&p));
                e.rename(
                    from_dir,
                    from_name.as_bytes(),
                    resolve(&e, &d).unwrap(),
                    name_of(&to).as_bytes(),
                    false,
                    false,
                    false,
                )
                .unwrap();
                let moved: Vec<String> =
                    model.keys().filter(|k| **k == p || k.starts_with(&format!("{p}/"))).cloned().collect();
                for k in moved {
                    let v = model.remove(&k).unwrap();
                    model.insert(format!("{to}{}", &k[p.len()..]), v);
                }
                touched.extend([dir_of(&p), d]);
            }
            _ => {
                drop(e);
                e = open_with(&sim, &[], false).unwrap();
                assert_eq!(whole(&e), model, "seed {seed} step {step}: after a reopen");
            }
        }
        for d in touched {
            let mut got = Tree::new();
            engine_tree(
                &e,
                resolve(&e, &d).unwrap(),
                &if d.is_empty() { String::new() } else { format!("{d}/") },
                &mut got,
            );
            let prefix = if d.is_empty() { String::new() } else { format!("{d}/") };
            let want: Tree =
                model.iter().filter(|(k, _)| k.starts_with(&prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
            assert_eq!(got, want, "seed {seed} step {step}: below {d:?}");
        }
    }
    assert_eq!(whole(&e), model, "seed {seed}: the whole tree");
    drop(e);
    assert_eq!(disk_tree(&lower), original, "seed {seed}: the lower tree never changes");
    assert_fsck_clean(&sim, "overlay model");
}

#[test]
fn random_operations_match_a_whole_copy() {
    let steps = if std::env::var("COWFS_SOAK").is_ok() { 400 } else { 60 };
    for_each_seed(if std::env::var("COWFS_SOAK").is_ok() { 100 } else { 12 }, |seed| model_run(seed, steps));
}

/// One step of the crash workload; `true` when it returns only once durable.
fn crash_step(e: &Engine, step: usize) -> cowfs_engine::Result<bool> {
    let write = |path: &str, at: u64, bytes: &[u8]| -> cowfs_engine::Result<()> {
        let mut w = e.open_file(resolve(e, path)?)?;
        w.write(at, bytes)?;
        w.commit(true).map(|_| ())
    };
    match step {
        // Lists the root, shared/ and shared/deep/er/ (nothing durable).
        0 => resolve(e, "shared/deep/er/f").map(|_| false),
        1 => write("only-top/f", 100_000, b"edited in place").map(|_| true),
        2 => e.unlink(resolve(e, "shared")?, b"both", false).map(|_| false),
        3 => e.rename(ROOT, b"only-bottom", resolve(e, "shared")?, b"moved", false, false, false).map(|_| false),
        4 => e.create_file(resolve(e, "shared/moved")?, b"new", 0o644).map(|_| false),
        5 => write("shared/moved/new", 0, b"made in a directory moved before it was listed").map(|_| true),
        _ => e.checkpoint().map(|_| true),
    }
}
const CRASH_STEPS: usize = 7;

/// Crash-point enumeration over an overlay store: the first open with lower trees (version 3,
/// the root's lower trees, LOWERS), listings (not durable), an edit of a lower file, changes of
/// listed and unlisted directories, a checkpoint. A crash at every storage call, every image it
/// can leave, recovered with the lower trees: the state after a prefix of the steps between the
/// last acknowledged durable and the last issued, fsck clean (`recover_image` checks more).
#[test]
fn every_crash_point_of_an_overlay_store_recovers_to_a_prefix() {
    let (_t, lowers) = two_layers();
    let open = |sim: &SimStorage| open_with(sim, &lowers, false);
    // The observable states (listing while observing: listing is invisible) ...
    let sim = SimStorage::new();
    let e = open(&sim).unwrap();
    let mut states = vec![state(&e)];
    for step in 0..CRASH_STEPS {
        crash_step(&e, step).unwrap();
        states.push(state(&e));
    }
    drop(e);
    // ... and the storage calls of the run itself, which the crash runs repeat.
    let sim = SimStorage::new();
    let e = open(&sim).unwrap();
    for step in 0..CRASH_STEPS {
        crash_step(&e, step).unwrap();
    }
    drop(e);
    let total = sim.mutations();
    let mut n = Recoveries::default();
    let mut crashes = 0;
    for k in 0..total {
        let sim = SimStorage::new();
        sim.crash_in(k);
        let (mut acked, mut durable) = (0, 0);
        if let Ok(e) = open(&sim) {
            for step in 0..CRASH_STEPS {
                match crash_step(&e, step) {
                    Err(_) => break,
                    Ok(synced) => {
                        acked = step + 1;
                        if synced {
                            durable = acked;
                        }
                    }
                }
            }
            drop(e);
        }
        assert!(sim.has_crashed(), "no crash at call {k} of {total}");
        crashes += 1;
        let mut images = vec![cowfs_engine::testing::CrashImage::ProcessKill];
        images.extend(power_loss_images(&sim, 6, k, &mut n));
        for image in images {
            let img = sim.crash_image(&image);
            let ctx = format!("crash at call {k} of {total}, {image:?}, acked {acked}, durable {durable}");
            // A crash before STORE exists leaves no store: nothing to recover.
            if img.read_file("STORE").is_none() {
                continue;
            }
            let got = recover_image(&img, &open, k % 8 == 0, &ctx, &mut n);
            let low = if image.is_power_loss() { durable } else { acked };
            let high = (acked + 1).min(CRASH_STEPS);
            if !(low..=high).any(|p| states[p] == got) {
                let near = (0..states.len()).find(|p| states[*p] == got);
                let diff: Vec<_> =
                    got.iter().filter(|(k, v)| states[high].get(*k) != Some(v)).map(|(k, _)| k).collect();
                let gone: Vec<_> = states[high].keys().filter(|k| !got.contains_key(*k)).collect();
                panic!(
                    "{ctx}: not the state after a step in {low}..={high} (matches {near:?}); differs {diff:?}, missing {gone:?}"
                );
            }
        }
    }
    println!("overlay crash points: {crashes} crashes, {} images recovered, {} fsck runs", n.images, n.fscks);
    assert_eq!(crashes, total);
    assert!(n.images > total, "{} images for {total} crash points", n.images);
}

/// A snapshot and the tree at a moment taken before directories were listed show what those
/// directories showed then — the listing, done later, gives them its entries — and not what
/// changed after; after a reopen too (replay and checkpoint).
#[test]
fn older_trees_show_directories_listed_after_them() {
    use cowfs_engine::tree::find;
    let (_t, lowers) = two_layers();
    let sim = SimStorage::new();
    let e = open_with(&sim, &lowers, false).unwrap();
    e.snapshot_create("before", "").unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let t = cowfs_engine::Timestamp::now();
    std::thread::sleep(std::time::Duration::from_millis(20));
    assert!(e.snapshot_namespace("before").unwrap().inode(ROOT).unwrap().unlisted().is_some(), "taken unlisted");
    // Listed after both, then changed.
    let shared = resolve(&e, "shared").unwrap();
    resolve(&e, "shared/deep/er/f").unwrap();
    e.unlink(shared, b"both", false).unwrap();
    put_file(&e, b"later", b"made after", true);
    let check = |e: &Engine, ns: &cowfs_engine::Namespace, what: &str| {
        let both = find(ns, "shared/both").unwrap_or_else(|| panic!("{what}: shared/both"));
        assert_eq!(e.read_content(both.content, both.size, 0, 100).unwrap(), b"from the top", "{what}");
        assert!(find(ns, "shared/deep/er/f").is_some(), "{what}: the deeper listing too");
        assert!(find(ns, "later").is_none(), "{what}: a later file");
        assert!(find(ns, "shared").unwrap().unlisted().is_none(), "{what}");
    };
    check(&e, &e.snapshot_namespace("before").unwrap(), "the snapshot");
    check(&e, &e.namespace_at(t).unwrap(), "the tree at a moment");
    let unlisted = |ns: &cowfs_engine::Namespace| find(ns, "only-bottom").unwrap().unlisted().is_some();
    assert!(unlisted(&e.snapshot_namespace("before").unwrap()) && unlisted(&e.namespace_at(t).unwrap()));
    drop(e);
    for pass in ["replayed", "from a checkpoint"] {
        let e = open_with(&sim, &[], false).unwrap();
        check(&e, &e.snapshot_namespace("before").unwrap(), pass);
        check(&e, &e.namespace_at(t).unwrap(), pass);
        // A directory listed now, through neither: both take it.
        resolve(&e, "only-bottom").unwrap();
        e.entries(resolve(&e, "only-bottom").unwrap()).unwrap();
        assert!(!unlisted(&e.snapshot_namespace("before").unwrap()) && !unlisted(&e.namespace_at(t).unwrap()));
        e.checkpoint().unwrap();
    }
    assert_fsck_clean(&sim, "snapshots of an overlay store");
}

/// `overlay_status` lists what differs from the lower trees, by path, reading only: an edit
/// with the bytes stored, a chmod, a delete, a move, what was made in the store; nothing for
/// what is as it was, listed or not.
#[test]
fn the_status_lists_what_differs_from_the_lower_trees() {
    use cowfs_engine::overlay::ChangeKind::*;
    let (_t, lowers) = two_layers();
    let sim = SimStorage::new();
    let e = open_with(&sim, &lowers, false).unwrap();
    assert!(e.overlay_status("/").unwrap().is_empty(), "nothing changed");
    let empty = resolve(&e, "empty").unwrap();
    assert_eq!(e.getattr(empty).unwrap().xattrs.get(&b"user.tag"[..]).map(|v| &v[..]), Some(&b"blue"[..]));
    assert!(e.overlay_status("/").unwrap().is_empty(), "listed with its extended attributes: unchanged");
    e.set_xattr(empty, b"user.tag", b"red", cowfs_engine::XattrMode::Any).unwrap();
    let f = resolve(&e, "only-top/f").unwrap();
    let mut w = e.open_file(f).unwrap();
    w.write(150_000, b"EDIT").unwrap();
    w.commit(true).unwrap();
    drop(w);
    let hidden = resolve(&e, "hidden").unwrap();
    e.setattr(hidden, cowfs_engine::SetAttr { mode: Some(0o600), ..Default::default() }).unwrap();
    e.unlink(resolve(&e, "shared").unwrap(), b"both", false).unwrap();
    e.rename(ROOT, b"only-bottom", ROOT, b"moved", false, false, false).unwrap();
    put_file(&e, b"new", b"made here", true);
    e.mkdir(ROOT, b"newdir", 0o755, 0, 0).unwrap();
    resolve(&e, "shared/deep/er/f").unwrap(); // listed, unchanged
    let before = e.stats().unwrap();
    let got: Vec<(String, &str, Option<String>)> = e
        .overlay_status("/")
        .unwrap()
        .into_iter()
        .map(|c| {
            if c.kind == Modified {
                assert!(c.stored_bytes > 0 && c.stored_bytes < 70_000, "{c:?}");
            }
            (c.path, c.kind.name(), c.from)
        })
        .collect();
    let want = |p: &str, k: cowfs_engine::overlay::ChangeKind, from: Option<&str>| {
        (p.to_string(), k.name(), from.map(String::from))
    };
    assert_eq!(
        got,
        [
            want("/empty", Metadata, None),
            want("/hidden", Metadata, None),
            want("/moved", Renamed, Some("/only-bottom")),
            want("/new", Added, None),
            want("/newdir", Added, None),
            want("/only-top/f", Modified, None),
            want("/shared/both", Deleted, None),
        ]
    );
    assert_eq!(e.overlay_status("/shared").unwrap().len(), 1, "below a path");
    assert_eq!(e.stats().unwrap(), before, "status changes nothing");
    assert!(e.getattr(resolve(&e, "moved").unwrap()).unwrap().unlisted().is_some(), "and lists nothing");
    assert!(matches!(e.overlay_status("/missing"), Err(Error::NotFound(_))));
}

/// The writer checks a listing before it applies it: a name twice, content that is not stored
/// or not a file's, an entry without its place (or a non-directory with several), more
/// extended attributes than an inode keeps — each refused, changing nothing. A listing that
/// passes gives files one link and fresh lineages, directories at least two links and no
/// size, and the directory 2 + its subdirectories, the store's own included.
#[test]
fn the_writer_refuses_a_bad_listing_and_counts_links() {
    use cowfs_engine::testing::ops::{LowerEntry, Op};
    use cowfs_engine::{FileKind, Inode, LowerSource, NodeId, Timestamp};
    let (_t, lowers) = two_layers();
    let sim = SimStorage::new();
    let e = open_with(&sim, &[], false).unwrap();
    let mine = put_file(&e, b"mine", b"the store's own", true);
    e.mkdir(ROOT, b"own-dir", 0o755, 0, 0).unwrap();
    put_file(&e, b"mine-too", b"", true);
    drop(e);
    let e = open_with(&sim, &lowers, false).unwrap();
    let t = Timestamp { secs: 1, nanos: 0 };
    let attrs = |kind: FileKind, nlink: u32, size: u64| Inode {
        ino: InodeId(0),
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        nlink,
        size,
        atime: t,
        mtime: t,
        ctime: t,
        rdev: 0,
        lineage: None,
        content: None,
        symlink: Vec::new(),
        xattrs: Default::default(),
        lower: None,
    };
    let at = |p: &str| vec![LowerSource { layer: 0, path: p.as_bytes().to_vec() }];
    let entry = |name: &str, a: Inode, sources| LowerEntry { name: name.as_bytes().to_vec(), attrs: a, sources };
    let file = |name: &str| entry(name, attrs(FileKind::Regular, 3, 0), at(name));
    let dir = |name: &str| entry(name, attrs(FileKind::Directory, 1, 4096), at(name));
    let with = |mut a: Inode, f: &dyn Fn(&mut Inode)| {
        f(&mut a);
        a
    };
    let big = vec![0u8; 70_000];
    let bad: Vec<(&str, Vec<LowerEntry>)> = vec![
        ("a name twice", vec![file("x"), file("x")]),
        (
            "content not stored",
            vec![entry("x", with(attrs(FileKind::Regular, 1, 5), &|a| a.content = Some(NodeId([7; 32]))), at("x"))],
        ),
        (
            "content of a directory",
            vec![entry(
                "d",
                with(attrs(FileKind::Directory, 2, 0), &|a| a.content = e.getattr(mine).unwrap().content),
                at("d"),
            )],
        ),
        ("no place", vec![entry("x", attrs(FileKind::Regular, 1, 0), Vec::new())]),
        ("a file in two places", vec![entry("x", attrs(FileKind::Regular, 1, 0), [at("x"), at("y")].concat())]),
        (
            "too many xattrs",
            vec![entry(
                "x",
                with(attrs(FileKind::Regular, 1, 0), &|a| {
                    a.xattrs = (0..1025).map(|i| (format!("user.{i}").into_bytes(), Vec::new())).collect()
                }),
                at("x"),
            )],
        ),
        (
            "too many xattr bytes",
            vec![entry(
                "x",
                with(attrs(FileKind::Regular, 1, 0), &|a| {
                    a.xattrs = (0..16).map(|i| (format!("user.{i}").into_bytes(), vec![0; 65_536])).collect()
                }),
                at("x"),
            )],
        ),
        (
            "an empty xattr name",
            vec![entry(
                "x",
                with(attrs(FileKind::Regular, 1, 0), &|a| {
                    a.xattrs.insert(Vec::new(), Vec::new());
                }),
                at("x"),
            )],
        ),
        (
            "a long xattr name",
            vec![entry(
                "x",
                with(attrs(FileKind::Regular, 1, 0), &|a| {
                    a.xattrs.insert(vec![b'u'; 256], Vec::new());
                }),
                at("x"),
            )],
        ),
        (
            "a long xattr value",
            vec![entry(
                "x",
                with(attrs(FileKind::Regular, 1, 0), &|a| {
                    a.xattrs.insert(b"user.v".to_vec(), big.clone());
                }),
                at("x"),
            )],
        ),
    ];
    let before = e.with_index(|ix| ix.ns().clone());
    for (what, entries) in bad {
        let r = e.submit(Op::Expand { dir: ROOT, entries }, false);
        assert!(matches!(r, Err(Error::Invalid(_))), "{what}: {r:?}");
        assert!(e.with_index(|ix| ix.ns().clone()) == before, "{what}: the tree changed");
    }
    let next = e.with_index(|ix| ix.counters().next_lineage);
    let old = e.getattr(mine).unwrap().lineage.unwrap();
    // At the limits, accepted: 1,024 attributes; 1 MiB of names and values; the longest name
    // and value.
    let mut f1 = file("f1");
    f1.attrs.xattrs = (0..1024).map(|i| (format!("user.{i}").into_bytes(), Vec::new())).collect();
    let mut f2 = file("f2");
    f2.attrs.xattrs = (0..16).map(|i| (format!("user.{i:02}").into_bytes(), vec![1; 65_536 - 7])).collect();
    let mut f3 = file("f3");
    f3.attrs.xattrs.insert([&b"user."[..], &[b'k'; 250]].concat(), vec![2; 65_536]);
    e.submit(Op::Expand { dir: ROOT, entries: vec![f1, f2, f3, dir("d1"), dir("d2")] }, false).unwrap();
    let get = |n: &str| e.getattr(resolve(&e, n).unwrap()).unwrap();
    assert_eq!(get("f1").xattrs.len(), 1024);
    assert_eq!(get("f2").xattrs.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>(), 1 << 20);
    let (f1, f2, d1) = (get("f1"), get("f2"), get("d1"));
    assert_eq!((f1.nlink, d1.nlink, d1.size), (1, 2, 0), "one link per name; a directory has no size");
    assert_eq!((f1.lineage.unwrap().0, f2.lineage.unwrap().0), (next, next + 1), "fresh lineages, in order");
    assert_ne!(f1.lineage.unwrap(), old);
    assert_eq!(e.getattr(ROOT).unwrap().nlink, 2 + 3, "own-dir, d1, d2");
}

/// The lower files of `two_layers` that hold bytes.
const LOWER_FILES_WITH_BYTES: u64 = 4;

/// `overlay absorb` of the whole store: every lower byte content refers to (the tree's, a
/// version's, a snapshot's) is copied into the store, once; the store forgets its lower trees
/// and shows, with them gone, exactly what it showed; the lower originals stay version 1; a
/// second run finds nothing to do; the store is version 4 and fsck is clean; and it refuses
/// to show lower trees again.
#[test]
fn absorb_makes_the_store_independent_of_its_lower_trees() {
    let (t, lowers) = two_layers();
    // The same store twice: one looked at whole (which lists every directory) for what it
    // shows, one absorbed without that, so that the absorb lists the rest itself.
    let made = || {
        let sim = SimStorage::new();
        let e = open_with(&sim, &lowers, false).unwrap();
        let f = resolve(&e, "only-top/f").unwrap();
        let mut w = e.open_file(f).unwrap();
        w.write(123_456, b"edited in the middle").unwrap();
        w.commit(true).unwrap();
        drop(w);
        e.snapshot_create("before", "").unwrap();
        e.unlink(resolve(&e, "shared").unwrap(), b"both", false).unwrap();
        (sim, e)
    };
    let want = state(&made().1);
    let (sim, e) = made();
    let stored = e.segment_bytes().unwrap();
    let mut calls = 0;
    let r = e
        .overlay_absorb(&[], &mut |done, total| {
            assert!(done <= total);
            calls += 1;
        })
        .unwrap();
    assert!(calls >= 2, "progress reported");
    assert_eq!(r.failed, Vec::<(String, String)>::new());
    assert_eq!(
        (r.files, r.already, r.unlisted_dirs, r.lower_files, r.detached),
        (LOWER_FILES_WITH_BYTES, 0, 0, 0, true)
    );
    // The root, only-top/ and shared/ were listed; the rest: only-bottom/, shared/sub/,
    // shared/deep/ and shared/deep/er/.
    assert_eq!(r.listed_dirs, 4, "{r:?}");
    // only-top/f, the top's shared/both (gone, but in the snapshot), hidden, shared/deep/er/f.
    assert_eq!(r.bytes, 300_000 + 12 + 34 + 4, "{r:?}");
    let grown = e.segment_bytes().unwrap() - stored;
    assert!((250_000..400_000).contains(&grown), "the lower bytes stored once: {grown}");
    assert_eq!(state(&e), want, "absorbing changes nothing one sees");
    let again = e.overlay_absorb(&[], &mut |_, _| {}).unwrap();
    assert_eq!((again.files, again.already, again.detached), (0, 4, true), "{again:?}");
    e.close().unwrap();
    assert!(!sim.snapshot_files().contains_key("LOWERS"));
    drop(t); // the lower trees are gone
    let e = open_with(&sim, &[], false).unwrap();
    assert_eq!(e.meta().version, 4);
    assert_eq!(state(&e), want, "the store shows the same without its lower trees");
    let versions = e.versions(e.getattr(resolve(&e, "only-top/f").unwrap()).unwrap().lineage.unwrap());
    let v1 = &versions[0];
    assert_eq!(e.read_content(v1.content, v1.size, 0, v1.size as usize).unwrap(), Rng::new(7).bytes(300_000));
    e.close().unwrap();
    assert_fsck_clean(&sim, "after a whole absorb");
    let (_t2, lowers2) = two_layers();
    let err = open_with(&sim, &lowers2, false).expect_err("a detached store shows no lower trees");
    assert!(err.to_string().contains("detached"), "{err}");
    let plain = SimStorage::new();
    let e = open_with(&plain, &[], false).unwrap();
    let err = e.overlay_absorb(&[], &mut |_, _| {}).expect_err("a store that never had lower trees");
    assert!(err.to_string().contains("not an overlay store"), "{err}");
}

/// Absorbing one path copies only the lower files below it: they no longer read the lower
/// tree (a change of it underneath does not touch them), the others still do (EIO when
/// theirs changes); the store keeps its lower trees; a lower file changed before an absorb is
/// reported by path and left as it was, the rest absorbed.
#[test]
fn absorb_of_a_path_copies_only_its_files_and_reports_a_changed_one() {
    let (t, lowers) = two_layers();
    let sim = SimStorage::new();
    let e = open_with(&sim, &lowers, false).unwrap();
    let big = resolve(&e, "only-top/f").unwrap();
    let both = resolve(&e, "shared/both").unwrap();
    let r = e.overlay_absorb(&["/only-top".to_string()], &mut |_, _| {}).unwrap();
    assert_eq!((r.files, r.bytes, r.detached), (1, 300_000, false), "{r:?}");
    assert!(r.unlisted_dirs > 0 && r.lower_files > 0, "{r:?}");
    let before = e.read(big, 0, 300_000).unwrap();
    // Both lower files change underneath.
    std::fs::write(lowers[0].join("only-top/f"), b"changed underneath").unwrap();
    std::fs::write(lowers[0].join("shared/both"), b"changed too").unwrap();
    assert_eq!(e.read(big, 0, 300_000).unwrap(), before, "an absorbed file reads the store");
    assert!(matches!(e.read(both, 0, 100), Err(Error::Lower { .. })), "the other one: EIO");
    let r = e.overlay_absorb(&[], &mut |_, _| {}).unwrap();
    assert_eq!(r.failed.len(), 1, "{r:?}");
    assert!(r.failed[0].0.ends_with("top/shared/both"), "{r:?}");
    assert_eq!((r.already, r.lower_files, r.detached), (1, 1, false), "{r:?}");
    assert_eq!(r.files, LOWER_FILES_WITH_BYTES - 2, "the rest absorbed: {r:?}");
    e.close().unwrap();
    assert!(sim.snapshot_files().contains_key("LOWERS"), "still depends on its lower trees");
    drop(t);
}

/// One step of the absorb crash workload: a whole absorb, then a checkpoint.
fn absorb_step(e: &Engine, step: usize) -> cowfs_engine::Result<bool> {
    match step {
        0 => e.overlay_absorb(&[], &mut |_, _| {}).map(|r| r.detached),
        _ => e.checkpoint().map(|_| true),
    }
}

/// Crash-point enumeration of `overlay absorb`: a crash at every storage call of an open, a
/// whole absorb (the header going to version 4, the chunks, the durable records, `LOWERS`
/// removed) and a checkpoint, every image it leaves recovered (`recover_image`: fsck clean,
/// a crash right after recovery, a durable write after it) to what the store showed before —
/// absorbing changes nothing one sees — and an absorb run again on it completes and detaches
/// the store, which then shows the same with no lower tree.
#[test]
fn every_crash_point_of_an_absorb_recovers_and_resumes() {
    let (_t, lowers) = two_layers();
    let base = SimStorage::new();
    let e = open_with(&base, &lowers, false).unwrap();
    resolve(&e, "shared/deep/er/f").unwrap();
    let mut w = e.open_file(resolve(&e, "only-top/f").unwrap()).unwrap();
    w.write(200_000, b"an edit before the absorb").unwrap();
    w.commit(true).unwrap();
    drop(w);
    let want = state(&e);
    e.close().unwrap();
    let base = base.snapshot_files();
    let open = |sim: &SimStorage| open_with(sim, &[], false);
    let run = |sim: &SimStorage| -> bool {
        let Ok(e) = open(sim) else { return false };
        let done = (0..2).all(|step| absorb_step(&e, step).is_ok());
        drop(e);
        done
    };
    let sim = SimStorage::from_files(base.clone());
    assert!(run(&sim));
    let total = sim.mutations();
    let mut n = Recoveries::default();
    let mut crashes = 0;
    for k in 0..total {
        let sim = SimStorage::from_files(base.clone());
        sim.crash_in(k);
        run(&sim);
        assert!(sim.has_crashed(), "no crash at call {k} of {total}");
        crashes += 1;
        let mut images = vec![cowfs_engine::testing::CrashImage::ProcessKill];
        images.extend(power_loss_images(&sim, 6, k, &mut n));
        for image in images {
            let img = sim.crash_image(&image);
            let ctx = format!("absorb: crash at call {k} of {total}, {image:?}");
            let mut got = recover_image(&img, &open, k % 8 == 0, &ctx, &mut n);
            got.remove("/post-crash");
            assert_eq!(got, want, "{ctx}: the store shows something else");
            let resumed = img.crash_image(&cowfs_engine::testing::CrashImage::ProcessKill);
            let e = open(&resumed).unwrap();
            let r = e.overlay_absorb(&[], &mut |_, _| {}).unwrap_or_else(|err| panic!("{ctx}: absorb again: {err}"));
            assert!(r.detached && r.failed.is_empty(), "{ctx}: {r:?}");
            drop(e);
            assert!(!resumed.snapshot_files().contains_key("LOWERS"), "{ctx}");
            let e = Engine::open_overlay(
                Arc::new(resumed.clone()) as Arc<dyn Storage>,
                Options { create: false, ..Options::tiny() },
                &[],
                false,
            )
            .unwrap();
            let mut again = state(&e);
            again.remove("/post-crash");
            assert_eq!(again, want, "{ctx}: after the absorb resumed");
        }
    }
    println!("absorb crash points: {crashes} crashes, {} images recovered, {} fsck runs", n.images, n.fscks);
    assert_eq!(crashes, total);
    assert!(n.images > total, "{} images for {total} crash points", n.images);
}
