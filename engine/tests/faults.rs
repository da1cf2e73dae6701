//! I/O faults: EIO or ENOSPC at every mutating storage call of a workload, once and
//! persistent. The error reaches the caller; after it the engine refuses writes (a retried
//! sync never reports success); reads keep working; nothing acknowledged as durable is
//! lost after reopening.

mod common;

use common::*;
use cowfs_engine::storage::{CrashImage, Fault, FaultKind, SimStorage};
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
    workload(&e, &mut rng, &mut Vec::new()).unwrap();
    drop(e);
    let total = reference.mutations();
    let mut injected = 0;
    for kind in [FaultKind::Eio, FaultKind::Enospc] {
        for persistent in [false, true] {
            for k in 0..total {
                let sim = SimStorage::new();
                let e = sim_engine(&sim);
                let base = sim.mutations();
                put_file(&e, b"before", b"kept", true);
                sim.set_fault(Some(Fault { at: base + k, kind, persistent, mutating_only: true }));
                let mut acked = Vec::new();
                let res = workload(&e, &mut Rng::new(1), &mut acked);
                injected += sim.faults_injected();
                let ctx = format!("{kind:?} persistent={persistent} at call {k}");
                if let Err(err) = res {
                    if kind == FaultKind::Enospc {
                        assert!(matches!(err, Error::NoSpace), "{ctx}: ENOSPC surfaced as {err}");
                    }
                    // Poisoned: further writes and syncs fail, even once the fault is gone.
                    sim.set_fault(None);
                    assert!(e.sync().is_err(), "{ctx}: a sync after a failure reported success");
                    assert!(e.create_file(ROOT, b"later", 0o644).is_err(), "{ctx}: write accepted after failure");
                    assert!(e.poisoned().is_some(), "{ctx}");
                    // Reads keep working.
                    let b = e.lookup(ROOT, b"before").unwrap();
                    assert_eq!(e.read(b.ino, 0, 10).unwrap(), b"kept", "{ctx}");
                }
                drop(e);
                // Reopen from what a power loss leaves: everything acknowledged is there.
                sim.set_fault(None);
                let img = sim.crash_image(CrashImage::PowerLoss);
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
    println!("faults injected: {injected}");
    assert!(injected > 0);
}
