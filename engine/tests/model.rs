//! Model-based test: random sequences of engine operations (create, write ranges, truncate,
//! rename with flags, link, unlink, mkdir, rmdir, commit, snapshot, checkpoint, reopen) run
//! against the engine over the storage simulator and against a plain in-memory model; the
//! whole tree, every file's bytes and every lineage's versions are compared after each step.
//! Seeds: N of them from 1 (or from `COWFS_SEED_FROM`), or COWFS_SEED=n to replay one.

mod common;

use std::collections::{BTreeMap, HashMap};

use common::*;
use cowfs_engine::storage::SimStorage;
use cowfs_engine::{Engine, Error, FileKind, InodeId};

#[derive(Debug, Clone)]
struct MInode {
    kind: FileKind,
    nlink: u32,
    data: Vec<u8>,
    /// Model lineage id (regular files).
    lineage: u64,
}

#[derive(Debug, Default, Clone)]
struct Model {
    inodes: HashMap<u64, MInode>,
    dirs: HashMap<u64, BTreeMap<Vec<u8>, u64>>,
    parent: HashMap<u64, u64>,
    snapshots: Vec<String>,
    /// Versions of each lineage.
    lineages: HashMap<u64, Vec<Vec<u8>>>,
    /// Lineage of a deleted file, by (directory, name), until the name is taken again.
    graves: HashMap<(u64, Vec<u8>), u64>,
    next_lineage: u64,
}

fn class(e: &Error) -> &'static str {
    match e {
        Error::NotFound(_) => "ENOENT",
        Error::Exists(_) => "EEXIST",
        Error::NotDir(_) => "ENOTDIR",
        Error::IsDir(_) => "EISDIR",
        Error::NotEmpty(_) => "ENOTEMPTY",
        Error::Loop | Error::Invalid(_) => "EINVAL",
        other => panic!("unexpected engine error {other:?}"),
    }
}

impl Model {
    fn new() -> Self {
        let mut m = Model::default();
        m.inodes.insert(1, MInode { kind: FileKind::Directory, nlink: 2, data: vec![], lineage: 0 });
        m.dirs.insert(1, BTreeMap::new());
        m.next_lineage = 1;
        m
    }
    /// Names `ino` as `name` in `d`; a grave there is gone.
    fn set_entry(&mut self, d: u64, name: &[u8], ino: u64) {
        self.dirs.get_mut(&d).unwrap().insert(name.to_vec(), ino);
        if let Some(l) = self.graves.remove(&(d, name.to_vec())) {
            trace(format_args!("  model grave {d}/{name:?} -> {l} taken by {ino}"));
        }
    }
    /// A new regular file at `name` in `d` continues a deleted file's lineage there.
    fn lineage_for(&mut self, d: u64, name: &[u8]) -> u64 {
        match self.graves.get(&(d, name.to_vec())) {
            Some(l) => *l,
            None => {
                self.next_lineage += 1;
                self.next_lineage
            }
        }
    }
    fn lookup(&self, d: u64, n: &[u8]) -> Option<u64> {
        self.dirs.get(&d).and_then(|x| x.get(n)).copied()
    }
    fn is_dir(&self, i: u64) -> bool {
        self.inodes[&i].kind == FileKind::Directory
    }
    fn ancestor(&self, a: u64, mut b: u64) -> bool {
        loop {
            if a == b {
                return true;
            }
            match self.parent.get(&b) {
                Some(p) => b = *p,
                None => return false,
            }
        }
    }
    fn drop_link(&mut self, i: u64) {
        let n = self.inodes.get_mut(&i).unwrap();
        n.nlink -= 1;
        if n.nlink == 0 {
            self.inodes.remove(&i);
        }
    }
    fn rename(
        &mut self,
        sp: u64,
        sn: &[u8],
        tp: u64,
        tn: &[u8],
        noreplace: bool,
        exchange: bool,
    ) -> Result<(), &'static str> {
        if noreplace && exchange {
            return Err("EINVAL");
        }
        let src = self.lookup(sp, sn).ok_or("ENOENT")?;
        let dst = self.lookup(tp, tn);
        let sdir = self.is_dir(src);
        if sdir && self.ancestor(src, tp) {
            return Err("EINVAL");
        }
        if sp == tp && sn == tn {
            return Ok(());
        }
        if exchange {
            let dst = dst.ok_or("ENOENT")?;
            let ddir = self.is_dir(dst);
            if ddir && self.ancestor(dst, sp) {
                return Err("EINVAL");
            }
            self.set_entry(tp, tn, src);
            self.set_entry(sp, sn, dst);
            let delta = sdir as i32 - ddir as i32;
            if sp != tp {
                self.inodes.get_mut(&sp).unwrap().nlink = (self.inodes[&sp].nlink as i32 - delta) as u32;
                self.inodes.get_mut(&tp).unwrap().nlink = (self.inodes[&tp].nlink as i32 + delta) as u32;
            }
            if sdir {
                self.parent.insert(src, tp);
            }
            if ddir {
                self.parent.insert(dst, sp);
            }
            return Ok(());
        }
        if let Some(dst) = dst {
            if noreplace {
                return Err("EEXIST");
            }
            if dst == src {
                return Ok(());
            }
            match (sdir, self.is_dir(dst)) {
                (true, false) => return Err("ENOTDIR"),
                (false, true) => return Err("EISDIR"),
                (true, true) => {
                    if !self.dirs[&dst].is_empty() {
                        return Err("ENOTEMPTY");
                    }
                    self.inodes.remove(&dst);
                    self.dirs.remove(&dst);
                    self.parent.remove(&dst);
                    self.inodes.get_mut(&tp).unwrap().nlink -= 1;
                }
                (false, false) => {
                    // Rename over the last name of a file: its path's history goes on.
                    let victim = self.inodes[&dst].clone();
                    if victim.nlink == 1 && self.inodes[&src].kind == FileKind::Regular {
                        let data = self.inodes[&src].data.clone();
                        let list = self.lineages.entry(victim.lineage).or_default();
                        if list.last() != Some(&data) {
                            list.push(data);
                        }
                        self.inodes.get_mut(&src).unwrap().lineage = victim.lineage;
                    }
                    self.drop_link(dst)
                }
            }
        }
        self.dirs.get_mut(&sp).unwrap().remove(sn);
        self.set_entry(tp, tn, src);
        if sdir {
            self.parent.insert(src, tp);
            if sp != tp {
                self.inodes.get_mut(&sp).unwrap().nlink -= 1;
                self.inodes.get_mut(&tp).unwrap().nlink += 1;
            }
        }
        Ok(())
    }
}

fn compare(e: &Engine, m: &Model, step: usize) {
    let ns = e.namespace();
    assert_eq!(ns.inodes.len(), m.inodes.len(), "step {step}: inode count");
    for (ino, mi) in &m.inodes {
        let i = ns.inode(InodeId(*ino)).unwrap_or_else(|| panic!("step {step}: inode {ino} missing"));
        assert_eq!((i.kind, i.nlink), (mi.kind, mi.nlink), "step {step}: inode {ino}");
        if mi.kind == FileKind::Regular {
            assert_eq!(i.size, mi.data.len() as u64, "step {step}: size of {ino}");
            assert!(e.read(InodeId(*ino), 0, mi.data.len() + 10).unwrap() == mi.data, "step {step}: bytes of {ino}");
            let vs = e.versions(i.lineage.unwrap());
            let digest = |v: &Vec<u8>| (v.len(), blake3::hash(v).to_hex()[..12].to_string());
            let got: Vec<_> =
                vs.iter().map(|v| digest(&e.read_content(v.content, v.size, 0, v.size as usize).unwrap())).collect();
            let want: Vec<_> = m.lineages.get(&mi.lineage).map(|l| l.iter().map(digest).collect()).unwrap_or_default();
            assert_eq!(got, want, "step {step}: versions of {ino} (length, hash)");
            assert!(vs.windows(2).all(|w| w[0].number + 1 == w[1].number));
        }
    }
    for (d, entries) in &m.dirs {
        let got: BTreeMap<Vec<u8>, u64> =
            e.entries(InodeId(*d)).unwrap().iter().map(|(k, v)| (k.clone(), v.child.0)).collect();
        assert_eq!(&got, entries, "step {step}: entries of dir {d}");
    }
    let snaps: Vec<String> = e.snapshots().iter().map(|s| s.name.clone()).collect();
    assert_eq!(snaps, m.snapshots, "step {step}: snapshots");
}

fn trace(a: std::fmt::Arguments<'_>) {
    if std::env::var("COWFS_TRACE").is_ok() {
        eprintln!("{a}");
    }
}

const NAMES: [&[u8]; 4] = [b"a", b"b", b"c", b"d"];

fn run(seed: u64, steps: usize) {
    let mut rng = Rng::new(seed);
    let sim = SimStorage::new();
    let mut e = sim_engine(&sim);
    let mut m = Model::new();
    for step in 0..steps {
        // Sorted: HashMap order differs between runs, and a seed must replay exactly.
        let mut dirs: Vec<u64> = m.dirs.keys().copied().collect();
        dirs.sort();
        let mut files: Vec<u64> =
            m.inodes.iter().filter(|(_, v)| v.kind == FileKind::Regular).map(|(k, _)| *k).collect();
        files.sort();
        let d = dirs[rng.below(dirs.len() as u64) as usize];
        let name = NAMES[rng.below(4) as usize];
        let choice = rng.below(13);
        trace(format_args!("step {step}: op {choice} dir {d} name {:?}", String::from_utf8_lossy(name)));
        match choice {
            0 | 1 => {
                let r = e.create_file(InodeId(d), name, 0o644);
                match m.lookup(d, name) {
                    Some(_) => assert_eq!(class(&r.unwrap_err()), "EEXIST"),
                    None => {
                        let i = r.unwrap().ino.0;
                        let lineage = m.lineage_for(d, name);
                        trace(format_args!(
                            "  created {i} lineage {lineage} engine lineage {:?} graves {:?}",
                            e.getattr(InodeId(i)).unwrap().lineage,
                            e.with_index(|ix| ix.ns().graves.clone())
                        ));
                        m.inodes.insert(i, MInode { kind: FileKind::Regular, nlink: 1, data: vec![], lineage });
                        m.set_entry(d, name, i);
                    }
                }
            }
            2 => {
                let r = e.mkdir(InodeId(d), name, 0o755, 0, 0);
                match m.lookup(d, name) {
                    Some(_) => assert_eq!(class(&r.unwrap_err()), "EEXIST"),
                    None => {
                        let i = r.unwrap().ino.0;
                        m.inodes.insert(i, MInode { kind: FileKind::Directory, nlink: 2, data: vec![], lineage: 0 });
                        m.dirs.insert(i, BTreeMap::new());
                        m.set_entry(d, name, i);
                        m.parent.insert(i, d);
                        m.inodes.get_mut(&d).unwrap().nlink += 1;
                    }
                }
            }
            3..=5 if !files.is_empty() => {
                let f = files[rng.below(files.len() as u64) as usize];
                let mut w = e.open_file(InodeId(f)).unwrap();
                let mi = m.inodes.get_mut(&f).unwrap();
                for _ in 0..1 + rng.below(4) {
                    match rng.below(5) {
                        0 => {
                            let len = rng.below(mi.data.len() as u64 + 3000) as usize;
                            trace(format_args!("  truncate {f} to {len}"));
                            w.truncate(len as u64).unwrap();
                            mi.data.resize(len, 0);
                        }
                        1 => {
                            let off = rng.below(mi.data.len() as u64 + 1) as usize;
                            let len = rng.below(2000) as usize;
                            trace(format_args!("  punch {f} {off}+{len}"));
                            w.punch_hole(off as u64, len as u64).unwrap();
                            let end = (off + len).min(mi.data.len());
                            if off < end {
                                mi.data[off..end].fill(0);
                            }
                        }
                        _ => {
                            let off = rng.below(mi.data.len() as u64 + 2000) as usize;
                            let n = rng.below(6000) as usize;
                            let data = if rng.below(2) == 0 { rng.bytes(n) } else { rng.text(n) };
                            trace(format_args!("  write {f} {off}+{}", data.len()));
                            w.write(off as u64, &data).unwrap();
                            // A zero-length write does not extend the file (POSIX).
                            if !data.is_empty() {
                                if mi.data.len() < off + data.len() {
                                    mi.data.resize(off + data.len(), 0);
                                }
                                mi.data[off..off + data.len()].copy_from_slice(&data);
                            }
                        }
                    }
                }
                let v = w.commit(rng.below(2) == 0).unwrap();
                let (data, lineage) = (mi.data.clone(), mi.lineage);
                let list = m.lineages.entry(lineage).or_default();
                let changed = list.last() != Some(&data);
                assert_eq!(v.is_some(), changed, "step {step}: version made iff content changed");
                if changed {
                    list.push(data);
                }
            }
            6 => {
                let r = e.unlink(InodeId(d), name, false);
                match m.lookup(d, name) {
                    None => assert_eq!(class(&r.unwrap_err()), "ENOENT"),
                    Some(c) if m.is_dir(c) => assert_eq!(class(&r.unwrap_err()), "EISDIR"),
                    Some(c) => {
                        r.unwrap();
                        trace(format_args!("  unlinked {c}"));
                        m.dirs.get_mut(&d).unwrap().remove(name);
                        let victim = m.inodes[&c].clone();
                        if victim.nlink == 1 && victim.kind == FileKind::Regular {
                            m.graves.insert((d, name.to_vec()), victim.lineage);
                        }
                        m.drop_link(c);
                    }
                }
            }
            7 => {
                let r = e.rmdir(InodeId(d), name, false);
                match m.lookup(d, name) {
                    None => assert_eq!(class(&r.unwrap_err()), "ENOENT"),
                    Some(c) if !m.is_dir(c) => assert_eq!(class(&r.unwrap_err()), "ENOTDIR"),
                    Some(c) if !m.dirs[&c].is_empty() => {
                        assert_eq!(class(&r.unwrap_err()), "ENOTEMPTY")
                    }
                    Some(c) => {
                        r.unwrap();
                        m.dirs.get_mut(&d).unwrap().remove(name);
                        m.inodes.remove(&c);
                        m.dirs.remove(&c);
                        m.parent.remove(&c);
                        m.inodes.get_mut(&d).unwrap().nlink -= 1;
                    }
                }
            }
            8 | 9 => {
                let td = dirs[rng.below(dirs.len() as u64) as usize];
                let tn = NAMES[rng.below(4) as usize];
                let (noreplace, exchange) = match rng.below(4) {
                    0 => (true, false),
                    1 => (false, true),
                    _ => (false, false),
                };
                trace(format_args!("  rename {d}/{name:?} -> {td}/{tn:?} noreplace={noreplace} exchange={exchange}"));
                let r = e.rename(InodeId(d), name, InodeId(td), tn, noreplace, exchange, false);
                let want = m.rename(d, name, td, tn, noreplace, exchange);
                match (r, want) {
                    (Ok(()), Ok(())) => {}
                    (Err(got), Err(w)) => assert_eq!(class(&got), w, "step {step}: rename error"),
                    (got, w) => panic!("step {step}: rename {d}/{name:?} -> {td}/{tn:?}: engine {got:?}, model {w:?}"),
                }
            }
            10 if !files.is_empty() => {
                let f = files[rng.below(files.len() as u64) as usize];
                let r = e.link(InodeId(f), InodeId(d), name);
                match m.lookup(d, name) {
                    Some(_) => assert_eq!(class(&r.unwrap_err()), "EEXIST"),
                    None => {
                        r.unwrap();
                        m.set_entry(d, name, f);
                        m.inodes.get_mut(&f).unwrap().nlink += 1;
                    }
                }
            }
            11 => {
                let n = format!("s{}", rng.below(5));
                let r = e.snapshot_create(&n, "");
                if m.snapshots.contains(&n) {
                    assert_eq!(class(&r.unwrap_err()), "EEXIST");
                    if rng.below(2) == 0 {
                        e.snapshot_delete(&n).unwrap();
                        m.snapshots.retain(|s| *s != n);
                    }
                } else {
                    r.unwrap();
                    m.snapshots.push(n);
                }
            }
            12 => {
                if rng.below(2) == 0 {
                    e.checkpoint().unwrap();
                }
                e.close().unwrap();
                e = sim_engine(&sim);
            }
            _ => {}
        }
        compare(&e, &m, step);
    }
    e.close().unwrap();
    let e = sim_engine(&sim);
    compare(&e, &m, steps);
}

#[test]
fn engine_matches_model() {
    let steps = if std::env::var("COWFS_SOAK").is_ok() { 2000 } else { 150 };
    for_each_seed(if std::env::var("COWFS_SOAK").is_ok() { 200 } else { 12 }, |seed| run(seed, steps));
}
