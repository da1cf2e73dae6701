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
