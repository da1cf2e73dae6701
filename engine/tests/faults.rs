//! I/O faults: EIO or ENOSPC at every mutating storage call of a workload, once and
//! persistent. The error reaches the caller; after it the engine refuses writes (a retried
//! sync never reports success) unless it was a full device the writer could undo, after
//! which writes work again; reads keep working; nothing acknowledged as durable is lost
//! after reopening. Plus a small simulated disk filled up, cleaned up and compacted.

mod common;

use common::*;
use cowfs_engine::storage::SimStorage;
use cowfs_engine::testing::{CrashImage, Fault, FaultKind};
use cowfs_engine::{Engine, Error};

fn workload(e: &Engine, rng: &mut Rng, acked: &mut Vec<(String, Vec<u8>)>) -> Result<(), Error> {
    for i in 0..12 {
        let name = format!("f{}", i % 4);
        let data = rng.text(200 + 300 * i);
        let ino = match e.lookup(ROOT, name.as_bytes()) {
            Ok(i) => i.ino,
            Err(Error::NotFound(_)) => e.create_file(ROOT, name.as_bytes(), 0o644)?.ino,
            Err(err) => return Err(err),
        };
        let mut w = e.open_file(ino)?;
        w.truncate(0)?;
        w.write(0, &data)?;
        w.commit(true)?;
        acked.push((name, data));
    }
    Ok(())
}

#[test]
fn faults_poison_writes_keep_reads_and_lose_nothing_durable() {
    let mut rng = Rng::new(1);
    let reference = SimStorage::new();
    let e = sim_engine(&reference);
    put_file(&e, b"before", b"kept", true);
    let start = reference.mutations();
    workload(&e, &mut rng, &mut Vec::new()).unwrap();
    let total = reference.mutations() - start;
    drop(e);
    let mut injected = 0;
    let mut undone = 0;
    for kind in [FaultKind::Eio, FaultKind::Enospc] {
        for persistent in [false, true] {
            for k in 0..total {
                let sim = SimStorage::new();
                let e = sim_engine(&sim);
                put_file(&e, b"before", b"kept", true);
                let base = sim.mutations();
                sim.set_fault(Some(Fault { at: base + k, kind, persistent, mutating_only: true }));
                let mut acked = Vec::new();
                let res = workload(&e, &mut Rng::new(1), &mut acked);
                let ctx = format!("{kind:?} persistent={persistent} at call {k}");
                // The workload makes the reference's calls up to the fault: it fires.
                assert!(sim.faults_injected() > 0, "{ctx}: no fault fired");
                injected += sim.faults_injected();
                if let Err(err) = res {
                    if kind == FaultKind::Enospc {
                        assert!(matches!(err, Error::NoSpace), "{ctx}: ENOSPC surfaced as {err}");
                    }
                    sim.set_fault(None);
                    if e.poisoned().is_some() {
                        // Poisoned: further writes and syncs fail, even once the fault is gone.
                        assert!(e.sync().is_err(), "{ctx}: a sync after a failure reported success");
                        assert!(e.create_file(ROOT, b"later", 0o644).is_err(), "{ctx}: write accepted after failure");
                    } else {
                        // A full device the writer undid (an append cut off, a roll or a
                        // checkpoint given up): once there is room, writes work and last.
                        assert_eq!(kind, FaultKind::Enospc, "{ctx}: {err} did not poison the engine");
                        undone += 1;
                        put_file(&e, b"later", b"room again", true);
                        acked.push(("later".into(), b"room again".to_vec()));
                    }
                    // Reads keep working.
                    let b = e.lookup(ROOT, b"before").unwrap();
                    assert_eq!(e.read(b.ino, 0, 10).unwrap(), b"kept", "{ctx}");
                }
                // Reopen from what a power loss now leaves (the engine still open: nothing a
                // shutdown would sync): everything acknowledged is there.
                sim.set_fault(None);
                let img = sim.crash_image(&CrashImage::PowerLoss);
                drop(e);
                let e = sim_engine(&img);
                let b = e.lookup(ROOT, b"before").unwrap();
                assert_eq!(e.read(b.ino, 0, 10).unwrap(), b"kept", "{ctx}");
                let mut last = std::collections::HashMap::new();
                for (n, d) in acked {
                    last.insert(n, d);
                }
                for (n, d) in last {
                    let i = e.lookup(ROOT, n.as_bytes()).unwrap_or_else(|err| panic!("{ctx}: {n} lost: {err}"));
                    let got = e.read(i.ino, 0, d.len() + 1).unwrap();
                    // A later unacknowledged commit may have landed; the acknowledged one must be in history.
                    let vs = e.versions(i.lineage.unwrap());
                    let found = got == d
                        || vs.iter().any(|v| e.read_content(v.content, v.size, 0, v.size as usize).unwrap() == d);
                    assert!(found, "{ctx}: acknowledged content of {n} lost");
                }
            }
        }
    }
    println!("{total} calls, faults injected: {injected}; full-device failures undone without poisoning: {undone}");
    assert!(injected >= 4 * total, "{injected} faults for {total} calls");
    assert!(undone > 0, "no ENOSPC was undone");
}

/// A small disk filled through the engine: ENOSPC reaches the writer of the data that did
/// not fit and poisons nothing; reads keep working; deletes still fit (the reserve); gc and
/// compaction give the space back; writes work again; the store reopens equal to the model
/// and fsck finds nothing.
#[test]
fn a_full_disk_is_cleaned_up_and_compacted_without_reopening() {
    use cowfs_engine::compact::Policy;
    use cowfs_engine::gc::Rules;
    use cowfs_engine::storage::Storage;
    use cowfs_engine::{Options, Timestamp};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    for_each_seed(4, |seed| {
        let mut rng = Rng::new(seed);
        let sim = SimStorage::new();
        let opts = Options { reserve_bytes: 32 << 10, segment_size: 64 << 10, ..Options::tiny() };
        let open = |s: &SimStorage| Engine::open(Arc::new(s.clone()) as Arc<dyn Storage>, opts).expect("open");
        let e = open(&sim);
        assert!(sim.read_file("RESERVE").is_some_and(|r| r.len() == 32 << 10));
        sim.set_capacity(Some(sim.used_bytes() + (640 << 10)));
        let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut refused = 0;
        for k in 0.. {
            assert!(k < 500, "seed {seed}: the disk never filled");
            assert!(e.poisoned().is_none(), "seed {seed}: a full disk poisoned the engine");
            if refused >= 4 {
                break;
            }
            let name = format!("f{k}");
            let len = 4096 + rng.below(28 << 10) as usize;
            let data = rng.bytes(len);
            let ino = match e.create_file(ROOT, name.as_bytes(), 0o644) {
                Ok(i) => i.ino,
                Err(Error::NoSpace) => {
                    refused += 1;
                    continue;
                }
                Err(err) => panic!("seed {seed}: create: {err}"),
            };
            model.insert(name.clone(), Vec::new());
            let mut w = e.open_file(ino).unwrap();
            let durable = rng.below(2) == 0;
            match w.write(0, &data).and_then(|_| w.commit(durable)) {
                Ok(_) => {
                    model.insert(name, data);
                }
                Err(Error::NoSpace) => {
                    refused += 1;
                    // This working copy is spent; the file keeps its last version.
                    assert!(matches!(w.commit(true), Err(Error::NoSpace)), "seed {seed}");
                }
                Err(err) => panic!("seed {seed}: write {name}: {err}"),
            }
        }
        e.sync().unwrap();
        let check = |e: &Engine, model: &BTreeMap<String, Vec<u8>>, ctx: &str| {
            for (n, d) in model {
                let i = e.lookup(ROOT, n.as_bytes()).unwrap_or_else(|err| panic!("seed {seed} {ctx}: {n}: {err}"));
                assert_eq!(&e.read(i.ino, 0, d.len() + 1).unwrap(), d, "seed {seed} {ctx}: {n}");
            }
            assert_eq!(e.entries(ROOT).unwrap().len(), model.len(), "seed {seed} {ctx}");
        };
        check(&e, &model, "full");
        let full = sim.used_bytes();
        // Delete all but two files: every delete fits, the first by giving up the reserve.
        let keep: Vec<String> = model.keys().take(2).cloned().collect();
        for n in model.keys().filter(|n| !keep.contains(n)) {
            e.unlink(ROOT, n.as_bytes(), false).unwrap_or_else(|err| panic!("seed {seed}: unlink {n}: {err}"));
        }
        model.retain(|n, _| keep.contains(n));
        let plan = e
            .gc_plan(&Rules { keep_after: Some(Timestamp::now()), ..Rules::default() }, Timestamp::now(), &|_| false)
            .unwrap();
        e.submit(cowfs_engine::testing::Op::Prune { prunes: plan.prunes }, true).unwrap();
        let r = e.compact(Policy::FULL, &mut |_, _| {}).unwrap_or_else(|err| {
            let files: Vec<(String, usize)> = sim.snapshot_files().into_iter().map(|(n, d)| (n, d.len())).collect();
            panic!("seed {seed}: compact: {err}; used {}; files {files:?}", sim.used_bytes())
        });
        let after = sim.used_bytes();
        assert!(after < full / 2, "seed {seed}: {full} bytes before, {after} after compaction ({r:?})");
        assert!(sim.read_file("RESERVE").is_some(), "seed {seed}: the reserve is taken again after compaction");
        // Room again.
        let data = rng.bytes(100 << 10);
        put_file(&e, b"after", &data, true);
        model.insert("after".into(), data);
        check(&e, &model, "after compaction");
        drop(e);
        let e = open(&sim);
        check(&e, &model, "reopened");
        drop(e);
        let report = cowfs_engine::fsck::check(&sim, true).unwrap();
        assert!(report.clean(), "seed {seed}: fsck: {:?}", report.findings);
    });
}

/// The file `before` (written durably before a failure) reads back through `e`, and through
/// `reopen` of what a power loss leaves once `e` is gone.
fn kept_now_and_after_power_loss(e: Engine, sim: &SimStorage, reopen: impl Fn(&SimStorage) -> Engine) {
    let check = |e: &Engine| {
        let b = e.lookup(ROOT, b"before").unwrap();
        assert_eq!(e.read(b.ino, 0, 10).unwrap(), b"kept");
    };
    check(&e);
    drop(e);
    check(&reopen(&sim.crash_image(&CrashImage::PowerLoss)));
}

/// A long write starts the disk on each 8 MiB of log as it goes (so its final sync waits
/// only for what the disk has not written yet), and a failure to start it poisons the engine
/// like a failed sync: the write is refused, reads go on, what was durable before is still
/// there after a power loss.
#[test]
fn long_writes_start_writeback_and_a_failed_one_poisons() {
    use cowfs_engine::Options;
    use cowfs_engine::storage::Storage;
    use std::sync::Arc;

    let opts = Options { segment_size: 64 << 20, checkpoint_bytes: 1 << 30, ..Options::default() };
    let open = |s: &SimStorage| Engine::open(Arc::new(s.clone()) as Arc<dyn Storage>, opts).expect("open");
    let data = Rng::new(7).bytes(30 << 20);
    let write = |e: &Engine| -> Result<(), Error> {
        let mut w = e.open_file(e.create_file(ROOT, b"big", 0o644)?.ino)?;
        for (i, piece) in data.chunks(1 << 20).enumerate() {
            w.write((i << 20) as u64, piece)?;
        }
        w.commit(true).map(|_| ())
    };

    let sim = SimStorage::new();
    let e = open(&sim);
    write(&e).unwrap();
    let wb = sim.writebacks();
    assert!(wb.len() >= 3, "30 MiB written, writebacks started: {wb:?}");
    // Contiguous steps of at least 8 MiB from the first frame on.
    let mut next = wb[0].1;
    for &(_, offset, len) in &wb {
        assert_eq!(offset, next, "{wb:?}");
        assert!(len >= 8 << 20, "{wb:?}");
        next = offset + len;
    }
    drop(e);

    let sim = SimStorage::new();
    let e = open(&sim);
    put_file(&e, b"before", b"kept", true);
    // The mutating call number of the first writeback in the reference run, shifted by
    // where this run starts.
    let reference = SimStorage::new();
    let r = open(&reference);
    put_file(&r, b"before", b"kept", true);
    let base = reference.mutations();
    write(&r).unwrap();
    drop(r);
    let first = reference.writebacks()[0].0;
    sim.set_fault(Some(Fault {
        at: sim.mutations() + (first - base),
        kind: FaultKind::Eio,
        persistent: false,
        mutating_only: true,
    }));
    let err = write(&e).expect_err("the write went on past a failed writeback");
    assert_eq!(sim.faults_injected(), 1, "{err}");
    assert!(e.poisoned().is_some(), "a failed writeback did not poison: {err}");
    sim.set_fault(None);
    assert!(e.sync().is_err(), "a sync after a failed writeback reported success");
    kept_now_and_after_power_loss(e, &sim, open);
}

/// A panic inside the writer (a bug; simulated by a disk whose writes panic) poisons the
/// engine and stops the writer, whichever thread it ran on: the panicking call unwinds, later
/// writes are refused, reads go on, and what was durable before is there after reopening.
#[test]
fn a_panicking_writer_poisons_the_engine() {
    use cowfs_engine::Options;
    use cowfs_engine::storage::{LockGuard, Storage, StorageFile};
    use std::io;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    /// SimStorage whose file writes panic while `armed`.
    #[derive(Debug)]
    struct Panicky(SimStorage, Arc<AtomicBool>);
    #[derive(Debug)]
    struct PanickyFile(Arc<dyn StorageFile>, Arc<AtomicBool>);
    impl StorageFile for PanickyFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.0.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            assert!(!self.1.load(Ordering::SeqCst), "simulated bug in the writer");
            self.0.write_at(buf, offset)
        }
        fn len(&self) -> io::Result<u64> {
            self.0.len()
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
        fn sync_all(&self) -> io::Result<()> {
            self.0.sync_all()
        }
    }
    impl Storage for Panicky {
        fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
            Ok(Arc::new(PanickyFile(self.0.open(name, create)?, self.1.clone())))
        }
        fn rename(&self, from: &str, to: &str) -> io::Result<()> {
            self.0.rename(from, to)
        }
        fn remove(&self, name: &str) -> io::Result<()> {
            self.0.remove(name)
        }
        fn list(&self) -> io::Result<Vec<String>> {
            self.0.list()
        }
        fn sync_dir(&self) -> io::Result<()> {
            self.0.sync_dir()
        }
        fn try_lock(&self) -> io::Result<Option<LockGuard>> {
            self.0.try_lock()
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }

    let sim = SimStorage::new();
    let armed = Arc::new(AtomicBool::new(false));
    let e = Engine::open(Arc::new(Panicky(sim.clone(), armed.clone())), Options::tiny()).expect("open");
    put_file(&e, b"before", b"kept", true);
    armed.store(true, Ordering::SeqCst);
    let e2 = e.clone();
    let panicked =
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || e2.create_file(ROOT, b"later", 0o644))).is_err();
    assert!(panicked, "the simulated bug did not surface");
    armed.store(false, Ordering::SeqCst);
    let p = e.poisoned().expect("a writer panic poisons the engine");
    assert!(p.to_string().contains("panicked"), "{p}");
    assert!(e.create_file(ROOT, b"after", 0o644).is_err(), "a write went through after the panic");
    assert!(e.sync().is_err(), "a sync reported success after the panic");
    kept_now_and_after_power_loss(e, &sim, sim_engine);
}
