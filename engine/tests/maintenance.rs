//! The engine's background maintenance: retention and compaction on its own thread, stopped
//! when the engine closes, and a panic in it poisons the engine.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{put_file, sim_engine};
use cowfs_engine::gc::Rules;
use cowfs_engine::maintenance::{Maintenance, PassReport, Retention};
use cowfs_engine::storage::SimStorage;
use cowfs_engine::{Engine, Error};

type Outcomes = Arc<Mutex<Vec<Result<PassReport, String>>>>;

/// Waits (polling, at most a minute: the machine may be slow) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "waited a minute for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn keep_last(n: u64, outcomes: &Outcomes) -> Maintenance {
    let log = outcomes.clone();
    Maintenance {
        every: Duration::from_millis(5),
        retention: Box::new(move || {
            Ok(Some(Retention {
                rules: Rules { keep_last: Some(n), ..Rules::default() },
                excluded: Box::new(|_| false),
            }))
        }),
        log: Box::new(move |r| log.lock().unwrap().push(r)),
    }
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
