//! Concurrent load on a real mount while retention and compaction run constantly (tiny
//! segments, a background pass every second with a keep-last-1 policy, and cowfs-compact
//! through the daemon in a loop): 8 writer threads and 2 readers for 60 s (soak: 10 min).
//! Reads never fail but for files deleted meanwhile; a file saved atomically (written under a
//! temporary name, renamed into place) reads back as exactly one whole save, whatever
//! compaction moves meanwhile (each save starts with its seed, so a reader can check it); at
//! the end, and after a remount, every file equals the model; fsck is clean.
//!
//! Files rewritten in place (`O_TRUNC`, write) are checked at the end only: a read racing the
//! truncate of the next save may mix that save with the previous one within a page, because the
//! kernel's page cache can keep a page read just before the truncate (seen here: the first
//! 3,551 bytes of a page from the new save, the rest from the old one, read with the old size).

use std::collections::BTreeMap;
use std::fs;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use cowfs_e2e::{Mounted, command, cowfs_json, random_bytes, run};

/// The content of save `seed`: its seed, then 1 to `max` bytes drawn from it.
fn content(seed: u64, max: usize) -> Vec<u8> {
    let mut out = seed.to_le_bytes().to_vec();
    out.extend(random_bytes(1 + (seed as usize).wrapping_mul(7919) % max, seed));
    out
}

/// Largest in-place save, and largest atomic one: every atomic save leaves its content in the
/// history of the temporary name (a lineage with one version, which keep-last-1 keeps), so
/// those are kept small and rarer, or the store would grow by their bytes.
const IN_PLACE_MAX: usize = 200_000;
const ATOMIC_MAX: usize = 20_000;

/// Checks what a reader read of a file saved atomically (written under a temporary name,
/// renamed into place; never changed afterwards): exactly one whole save.
fn check_save(path: &std::path::Path, data: &[u8]) {
    let seed = data.get(..8).map(|s| u64::from_le_bytes(s.try_into().unwrap()));
    assert!(
        seed.is_some_and(|s| content(s, ATOMIC_MAX) == data),
        "{path:?}: {} bytes read under load are not one whole save (seed {seed:?})",
        data.len()
    );
}

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
                            let atomic = i % 8 == 1;
                            let data = content(seed, if atomic { ATOMIC_MAX } else { IN_PLACE_MAX });
                            let name = if atomic {
                                // An atomic save, as editors make them.
                                let (tmp, name) = (format!(".tmp{t}"), format!("a{t}-{}", i % 3));
                                fs::write(mnt.join(&tmp), &data).expect("write");
                                fs::rename(mnt.join(&tmp), mnt.join(&name)).expect("rename");
                                name
                            } else {
                                fs::write(mnt.join(&name), &data).expect("write");
                                name
                            };
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
                let (mut reads, mut saves_checked) = (0u64, 0u64);
                while !stop.load(Ordering::Relaxed) {
                    for e in fs::read_dir(&mnt).expect("readdir").flatten() {
                        let name = e.file_name().into_string().unwrap();
                        if name.starts_with(".tmp") {
                            continue; // a save being written
                        }
                        match fs::read(e.path()) {
                            Ok(data) => {
                                reads += 1;
                                if name.starts_with('a') {
                                    check_save(&e.path(), &data);
                                    saves_checked += 1;
                                }
                            }
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                            Err(err) => panic!("reading {:?} under load failed: {err}", e.path()),
                        }
                    }
                }
                (reads, saves_checked)
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
    let (mut reads, mut saves_checked) = (0, 0);
    for r in readers {
        let (n, c) = r.join().expect("reader");
        reads += n;
        saves_checked += c;
    }
    assert!(saves_checked > 0, "the readers checked no save");
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
        "{secs} s: {saves} saves by 8 writers, {reads} reads ({saves_checked} atomic saves checked whole), {compactions} cowfs-compact \
         runs; store {} bytes, {} segments",
        stats["actual_size_bytes"], stats["segments"]
    );
}
