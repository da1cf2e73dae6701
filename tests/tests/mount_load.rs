//! Concurrent load on a real mount while retention and compaction run constantly (tiny
//! segments, a background pass every second with a keep-last-1 policy, and cowfs-compact
//! through the daemon in a loop): 8 writer threads and 2 readers for 60 s (soak: 10 min).
//! Reads never fail but for files deleted meanwhile; at the end, and after a remount, every
//! file equals the model; fsck is clean.

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cowfs_e2e::{Mounted, command, cowfs_json, random_bytes, run};

#[test]
fn eight_writers_two_readers_and_constant_compaction_lose_nothing() {
    let secs = if std::env::var("COWFS_SOAK").is_ok() { 600 } else { 60 };
    let mut m = Mounted::with_env(&[("COWFS_SEGMENT_BYTES", "1048576"), ("COWFS_BACKGROUND_SECS", "1")]);
    cowfs_json(&["policy", "set", "--keep-last", "1"], &m.store);
    let stop = Arc::new(AtomicBool::new(false));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let writers: Vec<_> = (0..8u64)
        .map(|t| {
            let mnt = m.mnt.clone();
            std::thread::spawn(move || {
                let mut model: BTreeMap<String, Vec<u8>> = BTreeMap::new();
                let mut saves = 0u64;
                for i in 0u64.. {
                    if Instant::now() > deadline {
                        break;
                    }
                    let name = format!("w{t}-{}", i % 5);
                    match i % 11 {
                        10 => {
                            if fs::remove_file(mnt.join(&name)).is_ok() {
                                model.remove(&name);
                            }
                        }
                        7 if model.contains_key(&name) => {
                            let to = format!("w{t}-{}", (i + 2) % 5);
                            fs::rename(mnt.join(&name), mnt.join(&to)).expect("rename");
                            let data = model.remove(&name).expect("in model");
                            model.insert(to, data);
                        }
                        _ => {
                            // Repeated contents half the time: dedup against data compaction may
                            // be collecting.
                            let seed = if i % 2 == 0 { i % 3 } else { t * 1_000_000 + i };
                            let data = random_bytes(1 + (seed as usize * 7919) % 200_000, seed);
                            fs::write(mnt.join(&name), &data).expect("write");
                            model.insert(name, data);
                            saves += 1;
                        }
                    }
                }
                (model, saves)
            })
        })
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (mnt, stop) = (m.mnt.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    for e in fs::read_dir(&mnt).expect("readdir").flatten() {
                        match fs::read(e.path()) {
                            Ok(_) => reads += 1,
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                            Err(err) => panic!("reading {:?} under load failed: {err}", e.path()),
                        }
                    }
                }
                reads
            })
        })
        .collect();
    let mut compactions = 0;
    while Instant::now() < deadline {
        let (code, out, err) = run(command("cowfs-compact").arg(&m.store).arg("--json"));
        assert_eq!(code, 0, "cowfs-compact under load: {out}{err}");
        compactions += 1;
        std::thread::sleep(Duration::from_millis(500));
    }
    let mut model = BTreeMap::new();
    let mut saves = 0;
    for w in writers {
        let (part, n) = w.join().expect("writer");
        model.extend(part);
        saves += n;
    }
    stop.store(true, Ordering::Relaxed);
    let reads: u64 = readers.into_iter().map(|r| r.join().expect("reader")).sum();
    let check = |m: &Mounted, when: &str| {
        let names: Vec<String> = fs::read_dir(&m.mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        assert_eq!(names, model.keys().cloned().collect::<Vec<_>>(), "{when}: names");
        for (name, data) in &model {
            assert!(fs::read(m.mnt.join(name)).unwrap() == *data, "{when}: {name} differs");
        }
    };
    check(&m, "at the end");
    let stats = cowfs_json(&["stats"], &m.store);
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store).arg("--verify-data"));
    assert_eq!(code, 0, "fsck: {out}{err}");
    m.mount();
    check(&m, "after a remount");
    println!(
        "{secs} s: {saves} saves by 8 writers, {reads} reads, {compactions} cowfs-compact runs; store {} bytes, {} segments",
        stats["actual_size_bytes"], stats["segments"]
    );
}
