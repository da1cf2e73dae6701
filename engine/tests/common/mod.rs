//! Helpers shared by the engine's integration tests (included with `mod common;`).
#![allow(dead_code)]

use std::sync::Arc;

use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::{Engine, InodeId, Options};

/// A small deterministic PRNG (xorshift64*), so every randomized test replays from its seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
    /// Compressible-ish bytes: runs of a few symbols.
    pub fn text(&mut self, n: usize) -> Vec<u8> {
        let words: [&[u8]; 6] = [b"alpha ", b"beta ", b"gamma ", b"delta\n", b"epsilon ", b"zeta "];
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(words[self.below(6) as usize]);
        }
        v.truncate(n);
        v
    }
}

/// Seeds for randomized tests: `COWFS_SEED=n` replays one; otherwise `count` seeds from
/// `COWFS_SEED_FROM` (1 unless set: new seeds explore new cases).
pub fn seeds(count: u64) -> Vec<u64> {
    let var =
        |name: &str| std::env::var(name).ok().map(|s| s.parse().unwrap_or_else(|_| panic!("{name}={s}: not a number")));
    match var("COWFS_SEED") {
        Some(seed) => vec![seed],
        None => {
            let from = var("COWFS_SEED_FROM").unwrap_or(1);
            (from..from + count).collect()
        }
    }
}

/// Runs `f(seed)` for each seed, printing the seed of a failure before re-raising it.
pub fn for_each_seed(count: u64, f: impl Fn(u64)) {
    for seed in seeds(count) {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(seed)));
        if let Err(e) = r {
            eprintln!("failed with seed {seed}; replay with COWFS_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

pub fn sim_engine(sim: &SimStorage) -> Engine {
    Engine::open(Arc::new(sim.clone()) as Arc<dyn Storage>, Options::tiny()).expect("open")
}

pub const ROOT: InodeId = InodeId::ROOT;

/// Writes `data` as the whole content of a new or existing file `name` in the root, commits.
pub fn put_file(e: &Engine, name: &[u8], data: &[u8], durable: bool) -> InodeId {
    let ino = match e.lookup(ROOT, name) {
        Ok(i) => i.ino,
        Err(_) => e.create_file(ROOT, name, 0o644).expect("create").ino,
    };
    let mut w = e.open_file(ino).expect("open_file");
    w.truncate(0).unwrap();
    w.write(0, data).unwrap();
    w.commit(durable).unwrap();
    ino
}

/// Everything a user can observe, by path: kind, bytes (files; symlink target) and the
/// blake3 of every version's bytes; plus the snapshot names under the key `@snapshots`.
pub type State = std::collections::BTreeMap<String, (cowfs_engine::FileKind, Vec<u8>, Vec<[u8; 32]>)>;

pub fn state(e: &Engine) -> State {
    use cowfs_engine::FileKind;
    let mut out = State::new();
    let mut stack = vec![(String::new(), ROOT)];
    while let Some((path, dir)) = stack.pop() {
        for (name, d) in e.entries(dir).expect("entries").iter() {
            let p = format!("{path}/{}", String::from_utf8_lossy(name));
            let i = e.getattr(d.child).expect("getattr");
            let (data, versions) = match i.kind {
                FileKind::Regular => {
                    let data = e.read(i.ino, 0, i.size as usize).expect("read");
                    let vs = e
                        .versions(i.lineage.expect("lineage"))
                        .iter()
                        .map(|v| {
                            *blake3::hash(&e.read_content(v.content, v.size, 0, v.size as usize).expect("read version"))
                                .as_bytes()
                        })
                        .collect();
                    (data, vs)
                }
                FileKind::Symlink => (i.symlink.clone(), vec![]),
                FileKind::Directory => {
                    stack.push((p.clone(), i.ino));
                    (vec![], vec![])
                }
                _ => (vec![], vec![]),
            };
            out.insert(p, (i.kind, data, versions));
        }
    }
    let snaps: Vec<u8> = e.snapshots().iter().flat_map(|s| format!("{},", s.name).into_bytes()).collect();
    out.insert("@snapshots".into(), (FileKind::Directory, snaps, vec![]));
    out
}

/// Asserts that fsck finds nothing wrong with the store on `sim` (a torn tail is a note, not
/// an error). A disk without `STORE` (a crash while the store was being created) is skipped;
/// returns whether it was checked.
pub fn assert_fsck_clean(sim: &SimStorage, ctx: &str) -> bool {
    if sim.read_file("STORE").is_none() {
        return false;
    }
    let report = cowfs_engine::fsck::check(sim, false).unwrap_or_else(|err| panic!("{ctx}: fsck: {err}"));
    assert!(report.clean(), "{ctx}: fsck: {:?}", report.findings);
    true
}

/// What [`recover_image`] did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Recoveries {
    /// Images recovered (each opened several times, see `recover_image`).
    pub images: u64,
    /// Opens of a crashed or recovered store.
    pub opens: u64,
    /// fsck runs.
    pub fscks: u64,
    /// Crashes injected inside recovery (each fired: asserted).
    pub recovery_crashes: u64,
    /// Crash points whose power-loss images were every subset of the pending changes.
    pub exhaustive_power_losses: u64,
    /// Crash points with more pending changes than that bound: prefixes, all-but-one and a
    /// seeded sample.
    pub sampled_power_losses: u64,
    /// The most pending changes met at a crash point.
    pub most_pending: usize,
}

/// The power-loss images of the crash `sim` froze (see `SimStorage::power_loss_images`: every
/// subset of up to `exhaustive_up_to` pending changes, else prefixes, all-but-one and 16 drawn
/// from `seed`), counting in `n` how they were chosen.
pub fn power_loss_images(
    sim: &SimStorage,
    exhaustive_up_to: usize,
    seed: u64,
    n: &mut Recoveries,
) -> Vec<cowfs_engine::testing::CrashImage> {
    let (images, coverage) = sim.power_loss_images(exhaustive_up_to, 16, seed);
    if coverage.exhaustive {
        n.exhaustive_power_losses += 1;
    } else {
        n.sampled_power_losses += 1;
    }
    n.most_pending = n.most_pending.max(coverage.pending);
    images
}

/// Recovers the crash image `img` with `open` and checks what every recovery must give,
/// whatever the workload: fsck is clean on the image, and on what a crash right after recovery
/// leaves (process kill, power loss), which opens to the same state; the image recovered a
/// second time from scratch gives the same state; a durable write after recovery survives a
/// power loss taken while the engine still runs (before a shutdown could sync it). With
/// `crash_recovery`, also a crash at each mutating storage call of recovery (asserted to fire)
/// and recovery again. Returns the recovered state for the caller's own check.
pub fn recover_image(
    img: &SimStorage,
    open: &dyn Fn(&SimStorage) -> Result<Engine, cowfs_engine::Error>,
    crash_recovery: bool,
    ctx: &str,
    n: &mut Recoveries,
) -> State {
    use cowfs_engine::testing::CrashImage;
    n.images += 1;
    n.fscks += u64::from(assert_fsck_clean(img, &format!("{ctx}: the crash image")));
    let pristine = img.crash_image(&CrashImage::ProcessKill);
    let e = open(img).unwrap_or_else(|err| panic!("{ctx}: recovery failed: {err}"));
    n.opens += 1;
    let got = state(&e);
    // A crash right after recovery: the store is clean and recovers to the same state.
    for after in [CrashImage::ProcessKill, CrashImage::PowerLoss] {
        let disk = img.crash_image(&after);
        let what = format!("{ctx}: a crash ({after:?}) right after recovery");
        n.fscks += u64::from(assert_fsck_clean(&disk, &what));
        let again = open(&disk).unwrap_or_else(|err| panic!("{what}: reopen failed: {err}"));
        n.opens += 1;
        assert_eq!(state(&again), got, "{what}: the state differs");
    }
    // New writes work, and a durable one is durable at once: the power-loss image is taken
    // while the engine runs, so only the commit's own sync can have made it durable.
    let ino = e.create_file(InodeId::ROOT, b"post-crash", 0o600).expect("create after recovery").ino;
    let mut w = e.open_file(ino).unwrap();
    w.write(0, b"after").unwrap();
    w.commit(true).expect("durable commit after recovery");
    drop(w);
    let after = state(&e);
    let lost_power = img.crash_image(&CrashImage::PowerLoss);
    drop(e);
    let again = open(&lost_power).unwrap_or_else(|err| panic!("{ctx}: reopen after a durable write failed: {err}"));
    n.opens += 1;
    assert_eq!(state(&again), after, "{ctx}: a durable write after recovery is lost in a power loss");
    drop(again);
    // Recovery is deterministic: the same crash image recovered again gives the same state.
    let twice = open(&pristine).unwrap_or_else(|err| panic!("{ctx}: second recovery failed: {err}"));
    n.opens += 1;
    assert_eq!(state(&twice), got, "{ctx}: a second recovery of the same image differs");
    drop(twice);
    if crash_recovery {
        let probe = pristine.crash_image(&CrashImage::ProcessKill);
        drop(open(&probe).unwrap_or_else(|err| panic!("{ctx}: recovery failed: {err}")));
        let calls = probe.mutations();
        for j in 0..calls {
            let again = pristine.crash_image(&CrashImage::ProcessKill);
            again.crash_in(j);
            // The crash fails the open, or the shutdown of the engine it opened.
            if let Ok(e) = open(&again) {
                drop(e);
            }
            assert!(again.has_crashed(), "{ctx}: no crash at call {j} of the {calls} of recovery");
            n.recovery_crashes += 1;
            for second in [CrashImage::ProcessKill, CrashImage::PowerLoss] {
                let disk = again.crash_image(&second);
                let what = format!("{ctx}: a crash in recovery at call {j} ({second:?})");
                n.fscks += u64::from(assert_fsck_clean(&disk, &what));
                let e = open(&disk).unwrap_or_else(|err| panic!("{what}: {err}"));
                n.opens += 1;
                assert_eq!(state(&e), got, "{what}");
            }
        }
    }
    got
}
