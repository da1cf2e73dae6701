//! Corruption injection on small reference stores: bit flips, garbage, a zeroed 4 KiB block,
//! truncation, garbage appended, a deleted segment, two segments swapped, a valid frame copied
//! to the wrong place, a stale checkpoint, `STORE` or its backup overwritten, a damaged segment
//! header, a checkpoint overwritten. Whatever the damage: no panic; opening fails cleanly or
//! succeeds; every read returns the original bytes or an error — never other bytes; when fsck
//! calls the store clean, the whole tree is exactly the original; and damage to one copy of the
//! header loses nothing: the store opens with the whole tree, and `repair` makes it clean.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::testing::CrashImage;
use cowfs_engine::{Engine, Options};

/// Every content ever written under each name.
type Written = BTreeMap<Vec<u8>, Vec<Vec<u8>>>;
/// The current content of each name.
type Files = BTreeMap<Vec<u8>, Vec<u8>>;

/// A closed store over several segments, the same store's checkpoint from the middle of its
/// history, its files, and every content ever written.
fn reference() -> (SimStorage, Vec<u8>, Files, Written) {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let mut rng = Rng::new(3);
    let mut files = BTreeMap::new();
    let mut written = Written::new();
    let mut stale = Vec::new();
    for i in 0..30u64 {
        let name = format!("f{}", i % 10).into_bytes();
        let n = rng.below(6000) as usize;
        let data = if i % 3 == 0 { rng.text(2000 + n) } else { rng.bytes(200 + n) };
        put_file(&e, &name, &data, i % 5 == 0);
        written.entry(name.clone()).or_default().push(data.clone());
        files.insert(name, data);
        if i == 10 {
            e.checkpoint().unwrap();
            let newest = sim.list().unwrap().into_iter().filter(|n| n.ends_with(".ckpt")).max().unwrap();
            stale = sim.read_file(&newest).unwrap();
        }
    }
    e.close().unwrap();
    (sim, stale, files, written)
}

fn names(sim: &SimStorage, suffix: &str) -> Vec<String> {
    let mut v: Vec<String> = sim.list().unwrap().into_iter().filter(|n| n.ends_with(suffix)).collect();
    v.sort();
    v
}

/// Damage kinds that hit one copy of the store header only.
const HEADER_COPY: [u64; 2] = [9, 10];

/// Applies damage number `k` (chosen by `rng`) to `img`; returns a description.
fn damage(img: &SimStorage, stale: &[u8], rng: &mut Rng, k: u64) -> String {
    let segs = names(img, ".log");
    let ckpts = names(img, ".ckpt");
    let all: Vec<String> =
        segs.iter().chain(&ckpts).cloned().chain(["STORE".to_string(), "STORE.backup".to_string()]).collect();
    let pick = |rng: &mut Rng, v: &[String]| v[rng.below(v.len() as u64) as usize].clone();
    match k % 13 {
        0 => {
            let f = pick(rng, &all);
            let mut b = img.read_file(&f).unwrap();
            let at = rng.below(b.len() as u64) as usize;
            b[at] ^= 1 << rng.below(8);
            img.write_file(&f, b);
            format!("bit flip in {f} at {at}")
        }
        1 => {
            let f = pick(rng, &segs);
            let mut b = img.read_file(&f).unwrap();
            let at = rng.below(b.len() as u64) as usize;
            let end = (at + 64).min(b.len());
            let garbage = rng.bytes(end - at);
            b[at..end].copy_from_slice(&garbage);
            img.write_file(&f, b);
            format!("64 garbage bytes in {f} at {at}")
        }
        2 => {
            let f = pick(rng, &segs);
            let mut b = img.read_file(&f).unwrap();
            let at = rng.below(b.len() as u64) as usize / 4096 * 4096;
            let end = (at + 4096).min(b.len());
            b[at..end].fill(0);
            img.write_file(&f, b);
            format!("zeroed 4 KiB of {f} at {at}")
        }
        3 => {
            let f = pick(rng, &segs);
            let mut b = img.read_file(&f).unwrap();
            let len = rng.below(b.len() as u64) as usize;
            b.truncate(len);
            img.write_file(&f, b);
            format!("{f} truncated to {len}")
        }
        4 => {
            let f = segs.last().unwrap().clone();
            let mut b = img.read_file(&f).unwrap();
            let n = 1 + rng.below(300) as usize;
            b.extend(rng.bytes(n));
            img.write_file(&f, b);
            format!("garbage appended to {f}")
        }
        5 => {
            let f = pick(rng, &segs);
            img.remove(&f).unwrap();
            format!("{f} deleted")
        }
        6 => {
            let (a, b) = (pick(rng, &segs), pick(rng, &segs));
            let (x, y) = (img.read_file(&a).unwrap(), img.read_file(&b).unwrap());
            img.write_file(&a, y);
            img.write_file(&b, x);
            format!("{a} and {b} swapped")
        }
        7 => {
            // A valid frame copied over another place (of the same or another segment).
            let (a, b) = (pick(rng, &segs), pick(rng, &segs));
            let src = img.read_file(&a).unwrap();
            let mut dst = img.read_file(&b).unwrap();
            let from = 64 + rng.below((src.len() - 64) as u64) as usize;
            let n = (src.len() - from).min(200);
            let to = 64 + rng.below((dst.len().saturating_sub(64 + n)).max(1) as u64) as usize;
            if to + n <= dst.len() {
                dst[to..to + n].copy_from_slice(&src[from..from + n]);
            }
            img.write_file(&b, dst);
            format!("{n} bytes of {a} at {from} copied to {b} at {to}")
        }
        8 => {
            let f = ckpts.last().unwrap().clone();
            img.write_file(&f, stale.to_vec());
            format!("{f} replaced by a stale checkpoint")
        }
        9 | 10 => {
            let f = if k % 13 == 9 { "STORE" } else { "STORE.backup" };
            img.write_file(f, rng.bytes(72));
            format!("{f} overwritten with random bytes")
        }
        11 => {
            let f = pick(rng, &segs);
            let mut b = img.read_file(&f).unwrap();
            let at = rng.below(64) as usize;
            b[at] ^= 1 << rng.below(8);
            img.write_file(&f, b);
            format!("bit flip in the header of {f} at {at}")
        }
        _ => {
            let f = pick(rng, &ckpts);
            let n = img.read_file(&f).unwrap().len();
            img.write_file(&f, rng.bytes(n));
            format!("{f} overwritten with random bytes")
        }
    }
}

#[test]
fn damage_never_turns_into_wrong_bytes() {
    let (reference, stale, files, written) = reference();
    let n = if std::env::var("COWFS_SOAK").is_ok() { 5000 } else { 300 };
    let (mut opened, mut refused, mut fsck_errors, mut read_errors, mut header_repairs) = (0, 0, 0, 0, 0);
    let mut rng = Rng::new(std::env::var("COWFS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(9));
    for k in 0..n {
        let img = reference.crash_image(&CrashImage::ProcessKill);
        let what = damage(&img, &stale, &mut rng, k);
        let clean = match cowfs_engine::fsck::check(&img, true) {
            Ok(r) => r.clean(),
            Err(_) => false,
        };
        fsck_errors += !clean as u32;
        let opts = Options { create: false, ..Options::tiny() };
        let Ok(e) = Engine::open(Arc::new(img.clone()) as Arc<dyn Storage>, opts) else {
            assert!(!clean, "case {k} ({what}): fsck clean but the store does not open");
            refused += 1;
            continue;
        };
        opened += 1;
        let mut seen = BTreeMap::new();
        for (name, d) in
            e.entries(ROOT).map(|m| m.iter().map(|(k, v)| (k.clone(), *v)).collect::<Vec<_>>()).unwrap_or_default()
        {
            let Ok(i) = e.getattr(d.child) else { continue };
            match e.read(i.ino, 0, i.size as usize) {
                Ok(data) => {
                    // What reads back was written under that name (damage may leave an older
                    // state) — never other bytes.
                    let ok = written.get(&name).is_some_and(|all| all.contains(&data));
                    assert!(
                        ok,
                        "case {k} ({what}): {} reads bytes never written to it",
                        String::from_utf8_lossy(&name)
                    );
                    seen.insert(name, data);
                }
                Err(_) => read_errors += 1,
            }
        }
        if clean {
            assert_eq!(seen, files, "case {k} ({what}): fsck clean but the tree differs");
        }
        if HEADER_COPY.contains(&(k % 13)) {
            assert_eq!(seen, files, "case {k} ({what}): one damaged header copy lost files");
            drop(e);
            cowfs_engine::fsck::repair(&img).unwrap_or_else(|err| panic!("case {k} ({what}): repair: {err}"));
            let report = cowfs_engine::fsck::check(&img, true).unwrap();
            assert!(report.clean(), "case {k} ({what}): after repair: {:?}", report.findings);
            header_repairs += 1;
        }
    }
    assert!(header_repairs >= n / 13 * 2, "{header_repairs} header repairs");
    println!(
        "{n} damaged stores: {opened} opened, {refused} refused to open, {fsck_errors} reported by fsck, \
         {read_errors} reads failed (EIO), {header_repairs} damaged header copies repaired"
    );
}
