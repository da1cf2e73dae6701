//! kill -9 of the mount daemon at a random moment (after at least one save of the round was
//! acknowledged, then 0-59 ms more), again and again: every version whose fsync returned is
//! there after the remount, byte for byte, and the store checks clean.
//! 50 iterations by default; `COWFS_SOAK=1`: 500. `COWFS_SEED=n` replays one sequence.

use std::fs;
use std::io::Write;
use std::sync::{Arc, Mutex};

use cowfs_e2e::{Mounted, command, random_bytes, run};

/// (path, blake3 of the content) of every save whose fsync returned.
type Journal = Arc<Mutex<Vec<(String, [u8; 32])>>>;

fn hash(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

/// Contents of every version of `rel`, newest first (through `.cowfs/versions`).
fn versions_newest_first(m: &Mounted, rel: &str) -> impl Iterator<Item = Vec<u8>> {
    let dir = m.path(&format!(".cowfs/versions/{rel}"));
    let mut numbers: Vec<u64> = fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    numbers.sort_unstable_by(|a, b| b.cmp(a));
    numbers.into_iter().map(move |n| fs::read(dir.join(n.to_string())).unwrap_or_default())
}

#[test]
fn kill_9_of_the_daemon_never_loses_an_acknowledged_version() {
    let soak = std::env::var("COWFS_SOAK").is_ok();
    let seed: u64 = std::env::var("COWFS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let iterations = if soak { 500 } else { 50 };
    let mut m = Mounted::new();
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut acknowledged = 0usize;
    for it in 0..iterations {
        let journal: Journal = Arc::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let (mnt, journal, stop) = (m.mnt.clone(), journal.clone(), stop.clone());
            let base = next();
            std::thread::spawn(move || {
                let mut k = 0u64;
                loop {
                    // Once the mount is detached its directory is a plain one: stop before.
                    if stop.load(std::sync::atomic::Ordering::SeqCst) {
                        return;
                    }
                    let name = format!("f{}", (base + k) % 6);
                    let data = random_bytes(1 + ((base >> 8) + k * 7919) as usize % 150_000, base ^ k);
                    let res = fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .open(mnt.join(&name))
                        .and_then(|mut f| f.write_all(&data).and_then(|_| f.sync_all()));
                    match res {
                        // fsync returned: this content is acknowledged.
                        Ok(()) => journal.lock().unwrap().push((name, hash(&data))),
                        Err(_) => return, // the daemon is gone
                    }
                    k += 1;
                }
            })
        };
        // Kill at a random moment after the first save of this round was acknowledged (a
        // slow machine must not turn rounds into kills that check nothing).
        let started = std::time::Instant::now();
        while journal.lock().unwrap().is_empty() {
            assert!(!writer.is_finished(), "seed {seed}, iteration {it}: the writer stopped before its first save");
            assert!(started.elapsed().as_secs() < 60, "seed {seed}, iteration {it}: no save acknowledged in 60 s");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        std::thread::sleep(std::time::Duration::from_millis(next() % 60));
        m.kill_daemon();
        stop.store(true, std::sync::atomic::Ordering::SeqCst);
        writer.join().unwrap();
        m.detach();
        m.mount();
        let journal = journal.lock().unwrap().clone();
        assert!(!journal.is_empty(), "seed {seed}, iteration {it}: nothing acknowledged to check");
        acknowledged += journal.len();
        // Every acknowledged content is a version of its path (the newest ones first: fast).
        for (name, h) in &journal {
            assert!(
                versions_newest_first(&m, name).any(|v| hash(&v) == *h),
                "seed {seed}, iteration {it}: an acknowledged version of {name} is missing"
            );
        }
        if it % 10 == 9 {
            m.umount();
            let (code, out, err) = run(command("cowfs-fsck").arg(&m.store).arg("--verify-data"));
            assert_eq!(code, 0, "seed {seed}, iteration {it}: fsck: {out}{err}");
            m.mount();
        }
    }
    println!(
        "{iterations} kill -9 iterations, each after at least one acknowledged save: \
         {acknowledged} acknowledged versions checked"
    );
}
