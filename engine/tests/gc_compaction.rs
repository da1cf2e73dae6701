//! Retention rules, pruning and compaction at the engine level: the rules one by one and
//! combined, deleted files' data reclaimed, nothing reachable lost, the log and the tree at
//! a moment still readable afterwards, a crash at every storage call of a compaction, and
//! compaction racing writers and readers.

mod common;

use std::sync::Arc;

use common::*;
use cowfs_engine::compact::Policy;
use cowfs_engine::gc::{self, Reason, Rules};
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::testing::Op;
use cowfs_engine::testing::{CrashImage, TornFill};
use cowfs_engine::{DeviceId, Engine, Hlc, InodeId, LineageId, Options, Timestamp, Version, VersionId};

const HOUR: i64 = 3600;
const DAY: i64 = 24 * HOUR;

fn version(number: u64, secs: i64) -> Arc<Version> {
    Arc::new(Version {
        id: VersionId { device: DeviceId(1), seq: number },
        lineage: LineageId(1),
        number,
        ino: InodeId(2),
        mode: 0o644,
        uid: 0,
        gid: 0,
        time: Timestamp { secs, nanos: 0 },
        size: number,
        content: None,
        hlc: Hlc(number),
        parents: vec![],
    })
}

/// Numbers of the versions kept.
fn kept(versions: &[Arc<Version>], current: Option<usize>, rules: &Rules, within: Option<i64>) -> Vec<u64> {
    let none = |_: &Version| None;
    let within = within.map(|secs| Timestamp { secs, nanos: 0 });
    gc::decide(versions, current, &none, rules, within)
        .iter()
        .zip(versions)
        .filter(|(r, _)| !r.is_empty())
        .map(|(_, v)| v.number)
        .collect()
}

#[test]
fn retention_rules_alone_and_combined() {
    // Noon UTC of consecutive days, plus a few versions within one day; 1_700_000_000 is
    // 2023-11-14T22:13:20Z, so day boundaries are the same in every zone within ±1h... use
    // 12h offsets from midnight UTC to stay inside one local day in any zone but the extremes.
    let base = 1_699_920_000 + 12 * HOUR; // 2023-11-14T12:00:00Z
    let times = [base, base + 60, base + 120, base + DAY, base + 2 * DAY, base + 9 * DAY, base + 40 * DAY];
    let vs: Vec<Arc<Version>> = times.iter().enumerate().map(|(k, t)| version(k as u64 + 1, *t)).collect();
    let r = |f: fn(&mut Rules)| {
        let mut rules = Rules::default();
        f(&mut rules);
        rules
    };
    assert_eq!(kept(&vs, None, &r(|r| r.keep_last = Some(2)), None), [6, 7]);
    assert_eq!(kept(&vs, None, &r(|r| r.keep_last = Some(0)), None), Vec::<u64>::new());
    let cutoff = Timestamp { secs: base + DAY, nanos: 0 };
    assert_eq!(kept(&vs, None, &Rules { keep_after: Some(cutoff), ..Rules::default() }, None), [4, 5, 6, 7]);
    assert_eq!(kept(&vs, None, &Rules::default(), Some(base + 5 * DAY)), [6, 7], "keep-within");
    // Daily: the newest of each of the last N days that have versions.
    assert_eq!(kept(&vs, None, &r(|r| r.keep_daily = Some(3)), None), [5, 6, 7]);
    assert_eq!(kept(&vs, None, &r(|r| r.keep_daily = Some(10)), None), [3, 4, 5, 6, 7], "one per day");
    assert_eq!(kept(&vs, None, &r(|r| r.keep_hourly = Some(10)), None), [3, 4, 5, 6, 7]);
    assert_eq!(kept(&vs, None, &r(|r| r.keep_weekly = Some(2)), None), [6, 7]);
    assert_eq!(kept(&vs, None, &r(|r| r.keep_monthly = Some(2)), None), [6, 7]);
    // Combined: kept if any rule keeps it.
    let both = Rules { keep_last: Some(1), keep_daily: Some(2), ..Rules::default() };
    assert_eq!(kept(&vs, None, &both, None), [6, 7]);
    let both = Rules {
        keep_last: Some(1),
        keep_after: Some(Timestamp { secs: base + 2 * DAY, nanos: 0 }),
        ..Rules::default()
    };
    assert_eq!(kept(&vs, None, &both, None), [5, 6, 7]);
    // The current version and snapshot-held versions are always kept; a history that keeps
    // an older version keeps its newest too.
    assert_eq!(kept(&vs, Some(1), &r(|r| r.keep_last = Some(0)), None), [2, 7]);
    let held = |v: &Version| (v.number == 3).then(|| "base".to_string());
    let reasons = gc::decide(&vs, None, &held, &r(|r| r.keep_last = Some(0)), None);
    assert_eq!(reasons[2], [Reason::Snapshot("base".into())]);
    assert_eq!(reasons[6], [Reason::NewestOfKept]);
    assert!(gc::parse_within("1y6m").is_ok() && gc::parse_within("12h").is_ok());
    for bad in ["", "5", "3x", "h", "-1d"] {
        assert!(gc::parse_within(bad).is_err(), "{bad:?}");
    }
}

fn dir_engine(dir: &std::path::Path) -> Engine {
    let st: Arc<dyn Storage> = Arc::new(cowfs_engine::storage::DirStorage::new(dir).unwrap());
    let opts = Options { segment_size: 1 << 20, ..Options::default() };
    Engine::open(st, opts).unwrap()
}

fn prune_all_before(e: &Engine, t: Timestamp) -> gc::Plan {
    let plan = e.gc_plan(&Rules { keep_after: Some(t), ..Rules::default() }, Timestamp::now(), &|_| false).unwrap();
    e.submit(Op::Prune { prunes: plan.prunes.clone() }, true).unwrap();
    plan
}

#[test]
fn a_deleted_files_data_comes_back_after_gc_and_compaction() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir_engine(dir.path());
    put_file(&e, b"keep", b"small and kept", true);
    let big = Rng::new(7).bytes(8 << 20);
    put_file(&e, b"big", &big, true);
    let mut edited = big.clone();
    edited[100..200].fill(1);
    put_file(&e, b"big", &edited, true); // two versions sharing most chunks
    e.unlink(ROOT, b"big", false).unwrap();
    e.sync().unwrap();
    let before = e.segment_bytes().unwrap();
    let state_before = state(&e);
    let plan = prune_all_before(&e, Timestamp::now());
    assert_eq!(plan.versions_pruned, 2, "both versions of the deleted file; the live file's current stays");
    assert!(plan.reclaimed_bytes >= 8 << 20, "{}", plan.reclaimed_bytes);
    // A second identical plan now finds nothing more.
    assert_eq!(
        e.gc_plan(&Rules { keep_after: Some(Timestamp::now()), ..Rules::default() }, Timestamp::now(), &|_| false)
            .unwrap()
            .versions_pruned,
        0
    );
    // The writer's segment holds the newest data; roll it by writing, so it can be compacted.
    put_file(&e, b"filler", &Rng::new(8).bytes(1 << 20), true);
    let with_filler = e.segment_bytes().unwrap();
    let r = e.compact(Policy::FULL, &mut |_, _| {}).unwrap();
    let after = e.segment_bytes().unwrap();
    println!("{r:?}; before {before}, after {after}");
    assert!(before - after + (1 << 20) >= 8 << 20, "the store did not shrink: {before} -> {after}");
    assert!(r.objects_forgotten > 0 && r.segments_compacted > 0 && r.segments_written > 0, "{r:?}");
    // The report's sizes are the store's (the roll that seals the writer's segment adds a
    // segment header before the first).
    assert!((with_filler..=with_filler + 64).contains(&r.bytes_before) && r.bytes_after == after, "{r:?}");
    let again = e.compact(Policy::FULL, &mut |_, _| {}).unwrap();
    assert_eq!((again.segments_compacted, again.objects_forgotten), (0, 0), "a second run is a no-op: {again:?}");
    let mut want = state_before;
    want.insert("/filler".into(), state(&e)["/filler"].clone());
    assert_eq!(state(&e), want);
    let log = e.activity().unwrap();
    assert!(log.iter().any(|x| x.action == cowfs_engine::Action::Delete && x.path.as_deref() == Some("/big")));
    e.close().unwrap();
    let st = cowfs_engine::storage::DirStorage::new(dir.path()).unwrap();
    let report = cowfs_engine::fsck::check(&st, true).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
    let e = dir_engine(dir.path());
    assert_eq!(state(&e), want, "after reopen");
    assert_eq!(e.activity().unwrap().len(), log.len());
}

/// A small store with garbage: files written, rewritten, deleted, a snapshot, and the
/// deleted ones' versions pruned.
fn populate(e: &Engine, seed: u64) {
    let mut rng = Rng::new(seed);
    for i in 0..12u64 {
        let name = format!("f{}", i % 5).into_bytes();
        let n = 200 + rng.below(3000) as usize;
        put_file(e, &name, &rng.bytes(n), false);
        if i == 6 {
            e.snapshot_create("mid", "").unwrap();
        }
        if i % 4 == 3 {
            let _ = e.unlink(ROOT, &name, false);
        }
    }
    e.sync().unwrap();
    prune_all_before(e, Timestamp::now());
    put_file(e, b"tail", &rng.bytes(5000), true);
}

#[test]
fn a_crash_at_every_storage_call_of_a_compaction_loses_nothing() {
    for_each_seed(if std::env::var("COWFS_SOAK").is_ok() { 30 } else { 3 }, |seed| {
        // The reference: the state before compacting, and how many calls a compaction makes.
        let sim = SimStorage::new();
        let e = sim_engine(&sim);
        populate(&e, seed);
        let want = state(&e);
        let start = sim.mutations();
        let r = e.compact(Policy::FULL, &mut |_, _| {}).unwrap();
        assert!(r.segments_compacted > 0, "seed {seed}: nothing to compact: {r:?}");
        let calls = sim.mutations() - start;
        assert_eq!(state(&e), want);
        drop(e);
        let build = |sim: &SimStorage| {
            let e = sim_engine(sim);
            populate(&e, seed);
            e
        };
        let (points, n) = crashes_lose_nothing(seed, calls, &want, &build, &sim_engine, Policy::FULL, &|_| {});
        println!("seed {seed}: {calls} storage calls in a compaction, {points} crash points: {n:?}");
        assert_eq!(points, calls);
    });
}

/// A crash at each of the first `calls` mutating storage calls of a compaction of the store
/// `build` makes (each crash asserted to fire, and the compaction to fail), under process kill,
/// a torn write, and power loss landing every subset of up to 8 pending changes, else a sample (see
/// `SimStorage::power_loss_images`): each image recovers (`recover_image`: fsck clean before
/// and after, twice the same, a durable write after it survives) to the state `want`; on a
/// copy of it, compacting again works (then `after` checks the engine) and reopening gives
/// `want`. Returns the crash points and the images checked.
fn crashes_lose_nothing(
    seed: u64,
    calls: u64,
    want: &State,
    build: &dyn Fn(&SimStorage) -> Engine,
    open: &dyn Fn(&SimStorage) -> Engine,
    policy: Policy,
    after: &dyn Fn(&Engine),
) -> (u64, Recoveries) {
    let mut n = Recoveries::default();
    let mut crash_points = 0;
    for k in 0..calls {
        let sim = SimStorage::new();
        let e = build(&sim);
        sim.crash_in(k);
        let res = e.compact(policy, &mut |_, _| {});
        assert!(sim.has_crashed(), "seed {seed}: no crash at compaction call {k} of {calls}");
        assert!(res.is_err(), "seed {seed}: the compaction crashed at call {k}, yet returned {res:?}");
        drop(e);
        crash_points += 1;
        let mut images = vec![CrashImage::ProcessKill];
        if let Some(len) = sim.torn_write_len().filter(|&l| l > 1) {
            images.push(CrashImage::Torn { cut: len / 2, fill: TornFill::Zeros });
            images.push(CrashImage::Torn { cut: len - 1, fill: TornFill::Random });
        }
        images.extend(power_loss_images(&sim, 8, seed << 32 | k, &mut n));
        for (j, image) in images.iter().enumerate() {
            let ctx = format!("seed {seed}: crash at compaction call {k} ({image:?})");
            let disk = sim.crash_image(image);
            let copy = disk.crash_image(&CrashImage::ProcessKill);
            let opener = |s: &SimStorage| Ok(open(s));
            assert_eq!(recover_image(&disk, &opener, (k + j as u64).is_multiple_of(8), &ctx, &mut n), *want, "{ctx}");
            let e = open(&copy);
            e.compact(policy, &mut |_, _| {}).unwrap();
            assert_eq!(state(&e), *want, "{ctx}: compacting again");
            after(&e);
            drop(e);
            assert_eq!(state(&open(&copy)), *want, "{ctx}: reopened after compacting again");
        }
    }
    (crash_points, n)
}

fn open_64k(sim: &SimStorage) -> Engine {
    let opts = Options { segment_size: 64 << 10, ..Options::tiny() };
    Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, opts).unwrap()
}

/// About fifty 64 KiB segments (51 and 52 for seeds 5 and 1), most keeping a small file and
/// otherwise old versions of a big one, pruned: compacted one for one they would leave as
/// many small segments.
fn mostly_garbage(sim: &SimStorage, seed: u64) -> Engine {
    let e = open_64k(sim);
    let mut rng = Rng::new(seed);
    for i in 0..40 {
        let n = 300 + rng.below(700) as usize;
        put_file(&e, format!("small{i}").as_bytes(), &rng.bytes(n), false);
        put_file(&e, b"big", &rng.bytes(60 << 10), false);
    }
    e.sync().unwrap();
    prune_all_before(&e, Timestamp::now());
    e
}

/// Without merging, small segments (one open file each) only pile up. The background
/// compaction merges neighbours into outputs that fit a segment, later runs soon find nothing
/// to do, nothing observable changes, and a crash at any storage call of the merge loses
/// nothing.
#[test]
fn small_segments_merge_and_a_crash_during_the_merge_loses_nothing() {
    for_each_seed(if std::env::var("COWFS_SOAK").is_ok() { 10 } else { 1 }, |seed| {
        let sim = SimStorage::new();
        let e = mostly_garbage(&sim, seed);
        let want = state(&e);
        let before = e.stats().unwrap().segments;
        let start = sim.mutations();
        let r = e.compact(Policy::BACKGROUND, &mut |_, _| {}).unwrap();
        let calls = sim.mutations() - start;
        let after = e.stats().unwrap().segments;
        println!("seed {seed}: {before} segments -> {after}: {r:?}");
        let merged = r.segments_compacted >= 40 && (1..=r.segments_compacted / 10).contains(&r.segments_written);
        assert!(merged && after <= 5, "seed {seed}: {before} -> {after}: {r:?}");
        assert_eq!(state(&e), want);
        // (Garbage a first run kept, as garbage outside its victims referenced it, goes in a
        // later one.) Runs stop finding work: merged outputs are not merged again and again.
        let settled = (0..5).any(|_| e.compact(Policy::BACKGROUND, &mut |_, _| {}).unwrap().segments_compacted == 0);
        assert!(settled, "seed {seed}: compaction keeps finding work");
        assert_eq!(state(&e), want);
        drop(e);
        assert_eq!(state(&open_64k(&sim)), want, "seed {seed}: reopened");

        let merged_again = |e: &Engine| assert!(e.stats().unwrap().segments <= 5, "seed {seed}: merging again");
        let build = |sim: &SimStorage| mostly_garbage(sim, seed);
        let (points, n) =
            crashes_lose_nothing(seed, calls, &want, &build, &open_64k, Policy::BACKGROUND, &merged_again);
        println!("seed {seed}: {calls} storage calls in the merge, {points} crash points: {n:?}");
        assert_eq!(points, calls);
    });
}

#[test]
fn compaction_racing_eight_writers_and_two_readers_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let e = dir_engine(dir.path());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let rounds = if std::env::var("COWFS_SOAK").is_ok() { 1500 } else { 60 };
    let mut writers = Vec::new();
    for t in 0..8u64 {
        let e = e.clone();
        writers.push(std::thread::spawn(move || {
            let mut rng = Rng::new(100 + t);
            let mut model = std::collections::BTreeMap::new();
            for i in 0..rounds {
                let name = format!("w{t}-{}", i % 4);
                // Half the writes repeat earlier content (dedup against possible garbage).
                let n = 1000 + rng.below(60_000) as usize;
                let data = if i % 2 == 0 { Rng::new(i % 7).bytes(40_000) } else { rng.bytes(n) };
                put_file(&e, name.as_bytes(), &data, i % 5 == 0);
                model.insert(name.clone(), data);
                if i % 9 == 8 {
                    e.unlink(ROOT, name.as_bytes(), false).unwrap();
                    model.remove(&name);
                }
            }
            model
        }));
    }
    let mut readers = Vec::new();
    for _ in 0..2 {
        let (e, stop) = (e.clone(), stop.clone());
        readers.push(std::thread::spawn(move || {
            let mut reads = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for (_, d) in e.entries(ROOT).unwrap().iter() {
                    // A file may be deleted or rewritten meanwhile (not found, or another
                    // size); a read must never fail otherwise (a missing or moved object).
                    if let Ok(i) = e.getattr(d.child) {
                        match e.read(i.ino, 0, i.size as usize) {
                            Ok(_) => reads += 1,
                            Err(cowfs_engine::Error::NotFound(_)) => {}
                            Err(err) => panic!("a read during compaction failed: {err}"),
                        }
                    }
                }
            }
            reads
        }));
    }
    let mut compactions = 0;
    while writers.iter().any(|w| !w.is_finished()) {
        prune_all_before(&e, Timestamp::now());
        e.compact(Policy::FULL, &mut |_, _| {}).unwrap();
        compactions += 1;
    }
    let mut model = std::collections::BTreeMap::new();
    for w in writers {
        model.extend(w.join().unwrap());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    prune_all_before(&e, Timestamp::now());
    e.compact(Policy::FULL, &mut |_, _| {}).unwrap();
    let check = |e: &Engine| {
        let names: Vec<String> =
            e.entries(ROOT).unwrap().keys().map(|k| String::from_utf8(k.clone()).unwrap()).collect();
        assert_eq!(names, model.keys().cloned().collect::<Vec<_>>());
        for (name, data) in &model {
            let i = e.lookup(ROOT, name.as_bytes()).unwrap();
            assert!(e.read(i.ino, 0, i.size as usize).unwrap() == *data, "{name}");
        }
    };
    check(&e);
    println!("{compactions} compactions, {reads} reads while 8 writers ran");
    e.close().unwrap();
    let report = cowfs_engine::fsck::check(&cowfs_engine::storage::DirStorage::new(dir.path()).unwrap(), true).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
    check(&dir_engine(dir.path()));
}

/// EIO or ENOSPC at every storage call of a compaction, once and persistent: the compaction
/// fails with the error, reads keep working, and after reopening (the fault gone) the state is
/// unchanged, fsck is clean and compaction completes — from what a process kill leaves, and
/// from what a power loss right after the failure leaves: an old segment is never removed
/// before its replacement is durable (if it were, that image would miss data).
#[test]
fn faults_during_a_compaction_lose_nothing() {
    let build = |sim: &SimStorage| {
        let e = sim_engine(sim);
        populate(&e, 5);
        e
    };
    faults_lose_nothing(&build, &sim_engine, Policy::FULL);
}

/// The same for a compaction that merges 50 segments into 2.
#[test]
fn faults_during_a_merge_lose_nothing() {
    faults_lose_nothing(&|sim| mostly_garbage(sim, 5), &open_64k, Policy::BACKGROUND);
}

/// Compacts the store `build` makes with a fault at each storage call in turn (see above);
/// `open` reopens it.
fn faults_lose_nothing(build: &dyn Fn(&SimStorage) -> Engine, open: &dyn Fn(&SimStorage) -> Engine, policy: Policy) {
    use cowfs_engine::testing::{Fault, FaultKind};
    let reference = SimStorage::new();
    let e = build(&reference);
    let start = reference.mutations();
    e.compact(policy, &mut |_, _| {}).unwrap();
    let calls = reference.mutations() - start;
    drop(e);
    let mut injected = 0;
    for kind in [FaultKind::Eio, FaultKind::Enospc] {
        for persistent in [false, true] {
            for k in 0..calls {
                let sim = SimStorage::new();
                let e = build(&sim);
                let want = state(&e);
                let base = sim.mutations();
                sim.set_fault(Some(Fault { at: base + k, kind, persistent, mutating_only: true }));
                let res = e.compact(policy, &mut |_, _| {});
                let ctx = format!("{kind:?} persistent={persistent} at compaction call {k}");
                assert!(sim.faults_injected() > 0, "{ctx}: no fault fired");
                injected += sim.faults_injected();
                assert!(res.is_err() || !persistent, "{ctx}: a compaction under a persistent fault succeeded");
                assert_eq!(state(&e), want, "{ctx}: reads changed");
                // A power loss right after the failure, while the engine still runs: only what
                // the compaction made durable before it removed anything is there.
                let lost_power = sim.crash_image(&CrashImage::PowerLoss);
                drop(e);
                sim.set_fault(None);
                let killed = sim.crash_image(&CrashImage::ProcessKill);
                for (disk, image) in [(lost_power, "power loss"), (killed, "process kill")] {
                    let e = open(&disk);
                    assert_eq!(state(&e), want, "{ctx}: after reopening ({image})");
                    e.compact(policy, &mut |_, _| {}).unwrap();
                    assert_eq!(state(&e), want, "{ctx}: after compacting again ({image})");
                    drop(e);
                    let report = cowfs_engine::fsck::check(&disk, true).unwrap();
                    assert!(report.clean(), "{ctx} ({image}): {:?}", report.findings);
                }
            }
        }
    }
    println!("{calls} storage calls per compaction; {injected} faults injected");
}

/// An open file keeps the chunks of the content it opened even when that version is pruned
/// and compacted away meanwhile (another writer replaced it): the writer pins its content
/// root, and the root's tree holds them.
#[test]
fn an_open_file_keeps_its_chunks_across_prune_and_compaction() {
    for_each_seed(3, |seed| {
        let mut rng = Rng::new(seed);
        let sim = SimStorage::new();
        let e = sim_engine(&sim);
        let a = rng.bytes(40_000);
        let ino = put_file(&e, b"f", &a, true);
        let mut w = e.open_file(ino).unwrap(); // opened on content A
        put_file(&e, b"f", &rng.bytes(30_000), true); // B replaces A
        let plan = e.gc_plan(&Rules { keep_last: Some(1), ..Rules::default() }, Timestamp::now(), &|_| false).unwrap();
        assert_eq!(plan.versions_pruned, 1, "seed {seed}: version A goes");
        e.submit(Op::Prune { prunes: plan.prunes }, true).unwrap();
        let r = e.compact(Policy::FULL, &mut |_, _| {}).unwrap();
        assert!(r.segments_compacted > 0, "seed {seed}: {r:?}");
        // The writer still edits A: its untouched chunks must still be stored.
        let mut expect = a.clone();
        expect[20_000..20_005].copy_from_slice(b"edit!");
        w.write(20_000, b"edit!").unwrap();
        w.commit(true).unwrap();
        drop(w);
        assert_eq!(e.read(ino, 0, 50_000).unwrap(), expect, "seed {seed}");
        drop(e);
        let report = cowfs_engine::fsck::check(&sim, true).unwrap();
        assert!(report.clean(), "seed {seed}: {:?}", report.findings);
        assert_eq!(sim_engine(&sim).read(ino, 0, 50_000).unwrap(), expect, "seed {seed}: reopened");
    });
}

/// The log can hold a second frame of an object (writers racing to store the same bytes; the
/// first frame is the object's). Once compaction collected the object as garbage with the
/// segment of its first frame, a full replay of the log meets the second frame and holds the
/// object again, unreferenced: fsck must see that as garbage, not as a checkpoint that
/// disagrees with the log.
#[test]
fn a_stray_copy_of_collected_garbage_is_not_an_fsck_error() {
    use cowfs_engine::SegmentId;
    use cowfs_engine::testing::record::{Record, kind};
    use cowfs_engine::testing::{frame, store};
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = put_file(&e, b"a", &Rng::new(21).bytes(3000), true);
    let mut chunks = std::collections::HashSet::new();
    e.for_each_extent(e.getattr(ino).unwrap().content, |_, x| {
        if let cowfs_engine::testing::tree::ExtentKind::Chunk { id, .. } = x.kind {
            chunks.insert(id);
        }
    })
    .unwrap();
    put_file(&e, b"keep", &Rng::new(22).bytes(40_000), true);
    drop(e);
    // A second frame of each of a's chunks at the end of the newest segment.
    let files = sim.snapshot_files();
    let mut payloads = Vec::new();
    for (name, data) in &files {
        let Some(seg) = SegmentId::parse_file_name(name) else { continue };
        store::scan_segment(data, seg, frame::SEGMENT_HEADER_LEN, true, &mut |txn| {
            for (rec, loc) in txn {
                if let Record::Chunk(m) = rec
                    && chunks.contains(&m.id)
                {
                    let at = (loc.offset as usize) + frame::FRAME_HEADER_LEN;
                    payloads.push(data[at..loc.offset as usize + loc.len as usize].to_vec());
                }
            }
            Ok(std::ops::ControlFlow::Continue(()))
        })
        .unwrap();
    }
    assert_eq!(payloads.len(), chunks.len(), "every chunk of a found once");
    let (name, mut newest) = files.into_iter().filter(|(n, _)| n.starts_with("seg-")).max().unwrap();
    let seg = SegmentId::parse_file_name(&name).unwrap();
    for p in &payloads {
        let at = newest.len() as u64;
        frame::encode_frame(&mut newest, seg, at, kind::CHUNK, true, p);
    }
    sim.write_file(&name, newest);
    // a goes, and with it (pruned, compacted) the first frames of its chunks.
    let e = sim_engine(&sim);
    e.unlink(ROOT, b"a", false).unwrap();
    prune_all_before(&e, Timestamp::now());
    // Every sealed segment with a dead byte; not the writer's, which holds the second frames.
    e.compact(Policy { live_below: 0.999 }, &mut |_, _| {}).unwrap();
    assert!(chunks.iter().all(|c| !e.has_object(&c.0)), "a's chunks were collected");
    drop(e);
    let report = cowfs_engine::fsck::check(&sim, true).unwrap();
    assert!(report.clean(), "{:?}", report.findings);
}
