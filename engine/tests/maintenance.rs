//! The engine's background maintenance: retention and compaction on its own thread, stopped
//! when the engine closes, and a panic in it poisons the engine; the space guard prunes the
//! oldest versions when the device runs short, never current contents or snapshots.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{ROOT, Rng, for_each_seed, put_file, sim_engine};
use cowfs_engine::gc::Rules;
use cowfs_engine::maintenance::{Amount, Maintenance, PassReport, Retention, SpaceGuard};
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::{Action, Engine, Error};

type Outcomes = Arc<Mutex<Vec<Result<PassReport, String>>>>;

/// Waits (polling, at most a minute: the machine may be slow) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Maintenance with full passes every `every` and guard checks every 5 ms, applying `rules`
/// and `guard` (nothing excluded), its reports into `outcomes`.
fn maintenance(every: Duration, rules: Rules, guard: SpaceGuard, outcomes: &Outcomes) -> Maintenance {
    let log = outcomes.clone();
    Maintenance {
        every,
        check_every: Duration::from_millis(5),
        retention: Box::new(move || Ok(Some(Retention { rules: rules.clone(), excluded: Box::new(|_| false), guard }))),
        log: Box::new(move |r| log.lock().unwrap().push(r)),
    }
}

fn keep_last(n: u64, outcomes: &Outcomes) -> Maintenance {
    maintenance(
        Duration::from_millis(5),
        Rules { keep_last: Some(n), ..Rules::default() },
        SpaceGuard::default(),
        outcomes,
    )
}

#[test]
fn maintenance_prunes_by_the_rules_it_is_given_and_stops_with_the_engine() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut ino = put_file(&e, b"f", &[0; 3000], true);
    for k in 1..4u8 {
        ino = put_file(&e, b"f", &[k; 3000], true);
    }
    let lineage = e.getattr(ino).unwrap().lineage.unwrap();
    assert_eq!(e.versions(lineage).len(), 4);
    let outcomes = Outcomes::default();
    e.start_maintenance(keep_last(1, &outcomes)).unwrap();
    wait_until("the pruning", || e.versions(lineage).len() == 1);
    wait_until("its report", || !outcomes.lock().unwrap().is_empty());
    let first = outcomes.lock().unwrap()[0].clone();
    assert_eq!(first.map(|r| r.versions_pruned), Ok(3));
    assert_eq!(e.read(ino, 0, 10_000).unwrap(), vec![3u8; 3000]);
    // Closing stops the thread (it holds no handle on the engine between passes); the store
    // reopens with what the passes did.
    e.close().unwrap();
    let e = sim_engine(&sim);
    assert_eq!(e.versions(lineage).len(), 1);
    assert!(e.poisoned().is_none());
}

/// A panic in a pass (here in the retention source, standing for a bug anywhere in it) is
/// caught: the engine is poisoned with its message, the log gets it once, the thread ends.
#[test]
fn a_panicking_pass_poisons_the_engine_and_is_logged_once() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    put_file(&e, b"f", b"stored before", true);
    let outcomes = Outcomes::default();
    let log = outcomes.clone();
    e.start_maintenance(Maintenance {
        every: Duration::from_millis(5),
        check_every: Duration::from_millis(5),
        retention: Box::new(|| panic!("policy boom")),
        log: Box::new(move |r| log.lock().unwrap().push(r)),
    })
    .unwrap();
    wait_until("the poison", || e.poisoned().is_some());
    let cause = e.poisoned().unwrap().to_string();
    assert!(cause.contains("background maintenance panicked: policy boom"), "{cause}");
    wait_until("the log", || !outcomes.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(50));
    let logged = outcomes.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "{logged:?}");
    assert!(logged[0].as_ref().unwrap_err().contains("policy boom"));
    assert!(matches!(e.mkdir(cowfs_engine::InodeId::ROOT, b"d", 0o755, 0, 0), Err(Error::Poisoned { .. })));
    let f = e.lookup(cowfs_engine::InodeId::ROOT, b"f").unwrap().ino;
    assert_eq!(e.read(f, 0, 100).unwrap(), b"stored before");
}

/// The last handle dropped while passes run: the engine shuts down (nobody waits forever).
#[test]
fn dropping_the_engine_stops_the_maintenance() {
    let sim = SimStorage::new();
    let e: Engine = sim_engine(&sim);
    put_file(&e, b"f", b"x", true);
    let outcomes = Outcomes::default();
    e.start_maintenance(keep_last(1, &outcomes)).unwrap();
    std::thread::sleep(Duration::from_millis(30));
    drop(e);
    let e = sim_engine(&sim);
    assert!(e.poisoned().is_none());
}

/// Maintenance whose only work is the space guard `guard`, checked every few milliseconds
/// (the full pass, an hour away, never comes).
fn guard_only(guard: SpaceGuard, outcomes: &Outcomes) -> Maintenance {
    maintenance(Duration::from_secs(3600), Rules::default(), guard, outcomes)
}

fn available(sim: &SimStorage) -> u64 {
    sim.space().unwrap().unwrap().available
}

/// A small device fills with versions of one file: the guard prunes the oldest until the
/// floor is free again; the current contents of every file, the version a snapshot holds and
/// the newest versions stay, and the activity log names the guard.
#[test]
fn the_space_guard_prunes_the_oldest_versions_until_the_floor_is_free() {
    for_each_seed(2, |seed| {
        let mut rng = Rng::new(seed);
        let sim = SimStorage::new();
        let capacity = 24 << 20;
        sim.set_capacity(Some(capacity));
        let e = sim_engine(&sim);
        let keep = rng.bytes(200_000);
        put_file(&e, b"keep", &keep, true);
        let mut contents = Vec::new();
        let mut ino = ROOT;
        // Random (incompressible) versions of 256 KiB until less than half the device is free.
        while available(&sim) > capacity / 2 {
            contents.push(rng.bytes(256 << 10));
            ino = put_file(&e, b"f", contents.last().unwrap(), true);
            if contents.len() == 3 {
                e.snapshot_create("third", "").unwrap();
            }
        }
        let lineage = e.getattr(ino).unwrap().lineage.unwrap();
        let before = e.versions(lineage).len();
        let outcomes = Outcomes::default();
        let guard = SpaceGuard { min_free: Some(Amount::Percent(60)), max_size: None };
        e.start_maintenance(guard_only(guard, &outcomes)).unwrap();
        wait_until("the guard's report", || !outcomes.lock().unwrap().is_empty());
        let report = outcomes.lock().unwrap()[0].clone().unwrap().guard.expect("a guard report");
        assert!(report.versions_pruned > 0 && report.still_short_bytes == 0, "{report:?}");
        assert!(available(&sim) >= capacity * 3 / 5, "free {} of {capacity}", available(&sim));
        let left: Vec<u64> = e.versions(lineage).iter().map(|v| v.number).collect();
        assert_eq!(before - left.len(), report.versions_pruned as usize, "{left:?}");
        assert!(!left.contains(&1) && !left.contains(&2), "the oldest go first: {left:?}");
        assert!(left.contains(&3), "the snapshot's version stays: {left:?}");
        assert!(left.len() > 4, "only what the floor needs goes: {left:?}");
        assert_eq!(left.last(), Some(&(before as u64)), "the current version stays: {left:?}");
        assert_eq!(e.read(ino, 0, 1 << 20).unwrap(), *contents.last().unwrap());
        let kept = e.lookup(ROOT, b"keep").unwrap().ino;
        assert_eq!(e.read(kept, 0, 1 << 20).unwrap(), keep);
        let snap = e.snapshot_namespace("third").unwrap();
        let in_snap = snap.lookup(ROOT, b"f").unwrap().child;
        let root = snap.inode(in_snap).unwrap().content;
        assert_eq!(e.read_content(root, 256 << 10, 0, 1 << 20).unwrap(), contents[2]);
        let log = e.activity().unwrap();
        let gc = log.iter().filter(|l| l.action == Action::Gc).collect::<Vec<_>>();
        assert!(!gc.is_empty() && gc.iter().all(|l| l.detail.starts_with("space guard:")), "{gc:?}");
        e.close().unwrap();
        assert!(common::assert_fsck_clean(&sim, "after the guard"));
    });
}

/// Short of space with nothing that may go (only current contents): the guard prunes
/// nothing, says how short it is once, and waits for the next full pass instead of trying
/// again at every check.
#[test]
fn a_guard_with_nothing_to_prune_loses_nothing_and_says_so_once() {
    let sim = SimStorage::new();
    let capacity = 8 << 20;
    sim.set_capacity(Some(capacity));
    let e = sim_engine(&sim);
    let data = Rng::new(7).bytes(3 << 20);
    let ino = put_file(&e, b"only", &data, true);
    let outcomes = Outcomes::default();
    let guard = SpaceGuard { min_free: Some(Amount::Percent(90)), max_size: None };
    e.start_maintenance(guard_only(guard, &outcomes)).unwrap();
    wait_until("the guard's report", || !outcomes.lock().unwrap().is_empty());
    std::thread::sleep(Duration::from_millis(100));
    let logged = outcomes.lock().unwrap().clone();
    assert_eq!(logged.len(), 1, "one report, not one per check: {logged:?}");
    let g = logged[0].clone().unwrap().guard.unwrap();
    assert_eq!(g.versions_pruned, 0);
    assert!(g.still_short_bytes > 0 && g.still_short_bytes == g.shortfall_bytes, "{g:?}");
    assert_eq!(e.read(ino, 0, 4 << 20).unwrap(), data);
}

/// `max_size`: the store's own size, whatever the device has free.
#[test]
fn the_guard_keeps_the_store_under_its_size_limit() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(11);
    let mut last = Vec::new();
    for _ in 0..24 {
        last = rng.bytes(256 << 10);
        put_file(&e, b"f", &last, true);
    }
    let limit = 3 << 20;
    assert!(e.segment_bytes().unwrap() > 2 * limit);
    let outcomes = Outcomes::default();
    e.start_maintenance(guard_only(SpaceGuard { min_free: None, max_size: Some(limit) }, &outcomes)).unwrap();
    wait_until("the guard's report", || !outcomes.lock().unwrap().is_empty());
    assert!(e.segment_bytes().unwrap() <= limit, "{} > {limit}", e.segment_bytes().unwrap());
    let f = e.lookup(ROOT, b"f").unwrap().ino;
    assert_eq!(e.read(f, 0, 1 << 20).unwrap(), last);
}
