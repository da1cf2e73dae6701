//! Filesystem logic against a model, without a mount: proptest sequences of opens (create,
//! O_TRUNC, O_APPEND), writes and reads through several handles, truncates, renames, unlinks
//! of open files, fsyncs, closes (FLUSH) and — later, in any order, as the kernel sends them —
//! releases, over the engine on the storage simulator. After every step the model's bytes must
//! be what the handles and names read; after a close or fsync of a handle with an uncommitted
//! save, the file's newest version must hold its current bytes; a release of a handle whose
//! saves are all committed, while other handles of the file are open, must add no version.

use std::collections::HashMap;
use std::sync::Arc;

use cowfs_engine::storage::{SimStorage, Storage};
use cowfs_engine::{Engine, InodeId, Options};
use cowfs_fuse::fs::{Caller, CowFs};
use proptest::prelude::*;

const ROOT: InodeId = InodeId::ROOT;
const ME: Caller = Caller { uid: 0, gid: 0 };
const NAMES: [&[u8]; 3] = [b"a", b"b", b"c"];

#[derive(Debug, Clone)]
enum FsOp {
    Open { name: usize, write: bool, trunc: bool, append: bool },
    Write { h: usize, off: u16, len: u16, byte: u8 },
    Read { h: usize, off: u16, len: u16 },
    Close { h: usize },
    Release { h: usize },
    Fsync { h: usize },
    Truncate { name: usize, size: u16 },
    Rename { from: usize, to: usize },
    Unlink { name: usize },
}

fn op() -> impl Strategy<Value = FsOp> {
    prop_oneof![
        (0..3usize, any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(name, write, trunc, append)| FsOp::Open {
            name,
            write,
            trunc,
            append
        }),
        (0..4usize, 0..9000u16, 0..5000u16, any::<u8>()).prop_map(|(h, off, len, byte)| FsOp::Write {
            h,
            off,
            len,
            byte
        }),
        (0..4usize, 0..9000u16, 0..5000u16).prop_map(|(h, off, len)| FsOp::Read { h, off, len }),
        (0..4usize).prop_map(|h| FsOp::Close { h }),
        (0..4usize).prop_map(|h| FsOp::Release { h }),
        (0..4usize).prop_map(|h| FsOp::Fsync { h }),
        (0..3usize, 0..9000u16).prop_map(|(name, size)| FsOp::Truncate { name, size }),
        (0..3usize, 0..3usize).prop_map(|(from, to)| FsOp::Rename { from, to }),
        (0..3usize).prop_map(|name| FsOp::Unlink { name }),
    ]
}

#[derive(Debug)]
struct OpenH {
    fh: u64,
    ino: InodeId,
    write: bool,
    append: bool,
    /// Wrote since its last commit: its close (FLUSH) commits.
    wrote: bool,
    /// Created the file or opened it with O_TRUNC, not committed yet: a save at its fsync,
    /// at its close if it wrote, else at its release.
    saved: bool,
}

fn head_bytes(fs: &CowFs, ino: InodeId) -> Vec<u8> {
    let e = fs.engine();
    let i = e.getattr(ino).unwrap();
    let v = e.versions(i.lineage.unwrap()).last().cloned().expect("a version");
    e.read_content(v.content, v.size, 0, v.size as usize).unwrap()
}

fn run(ops: Vec<FsOp>) {
    let sim = SimStorage::new();
    let fs = CowFs::new(Engine::open(Arc::new(sim) as Arc<dyn Storage>, Options::tiny()).unwrap());
    // Model: bytes per inode, names.
    let mut bytes: HashMap<InodeId, Vec<u8>> = HashMap::new();
    let mut names: HashMap<usize, InodeId> = HashMap::new();
    let mut handles: Vec<OpenH> = Vec::new();
    // Closed (FLUSH sent), RELEASE not yet.
    let mut closed: Vec<OpenH> = Vec::new();
    for (step, op) in ops.into_iter().enumerate() {
        match op {
            FsOp::Open { name, write, trunc, append } => {
                let ino = match names.get(&name) {
                    Some(i) => {
                        let fh = fs.open(*i, write, trunc, append).unwrap();
                        if write && trunc {
                            bytes.get_mut(i).unwrap().clear();
                        }
                        handles.push(OpenH { fh, ino: *i, write, append, wrote: false, saved: write && trunc });
                        *i
                    }
                    None => {
                        let (i, fh) = fs.create(ME, ROOT, NAMES[name], 0o644, append).unwrap();
                        bytes.insert(i.ino, Vec::new());
                        handles.push(OpenH { fh, ino: i.ino, write: true, append, wrote: false, saved: true });
                        i.ino
                    }
                };
                names.insert(name, ino);
            }
            FsOp::Write { h, off, len, byte } if h < handles.len() && handles[h].write => {
                handles[h].wrote = true;
                let hd = &handles[h];
                let data = vec![byte; len as usize];
                fs.write(hd.fh, off as u64, &data, 1).unwrap();
                let b = bytes.get_mut(&hd.ino).unwrap();
                let at = if hd.append { b.len() } else { off as usize };
                if !data.is_empty() {
                    if b.len() < at + data.len() {
                        b.resize(at + data.len(), 0);
                    }
                    b[at..at + data.len()].copy_from_slice(&data);
                }
            }
            FsOp::Read { h, off, len } if h < handles.len() => {
                let hd = &handles[h];
                let got = fs.read(hd.fh, off as u64, len as usize).unwrap();
                let b = &bytes[&hd.ino];
                let (s, e) = ((off as usize).min(b.len()), (off as usize + len as usize).min(b.len()));
                assert!(got == b[s..e], "step {step}: read through handle {h}");
            }
            FsOp::Close { h } if h < handles.len() => {
                let mut hd = handles.remove(h);
                fs.flush(hd.fh, 1).unwrap();
                if hd.wrote {
                    if fs.engine().getattr(hd.ino).is_ok() {
                        assert!(head_bytes(&fs, hd.ino) == bytes[&hd.ino], "step {step}: newest version after close");
                    }
                    (hd.wrote, hd.saved) = (false, false);
                }
                closed.push(hd);
            }
            FsOp::Release { h } if h < closed.len() => {
                let hd = closed.remove(h);
                // (An unlinked file's open inode leaves the path's history for one of its own,
                // whose first version any close may commit: not checked here.)
                let others =
                    handles.iter().chain(&closed).any(|o| o.ino == hd.ino) && names.values().any(|i| *i == hd.ino);
                let lineage = fs.engine().getattr(hd.ino).ok().and_then(|i| i.lineage);
                let before = lineage.map(|l| fs.engine().versions(l).len());
                fs.release(hd.fh).unwrap();
                if hd.saved && fs.engine().getattr(hd.ino).is_ok() {
                    assert!(head_bytes(&fs, hd.ino) == bytes[&hd.ino], "step {step}: newest version after release");
                } else if !hd.saved && others {
                    let after = lineage.map(|l| fs.engine().versions(l).len());
                    assert_eq!(before, after, "step {step}: a release with nothing to commit made a version");
                }
            }
            FsOp::Fsync { h } if h < handles.len() => {
                let hd = &mut handles[h];
                fs.fsync(hd.fh).unwrap();
                if hd.wrote || hd.saved {
                    assert!(head_bytes(&fs, hd.ino) == bytes[&hd.ino], "step {step}: newest version after fsync");
                }
                (hd.wrote, hd.saved) = (false, false);
            }
            FsOp::Truncate { name, size } => {
                if let Some(i) = names.get(&name) {
                    fs.setattr(*i, None, None, None, Some(size as u64), None, None).unwrap();
                    bytes.get_mut(i).unwrap().resize(size as usize, 0);
                }
            }
            FsOp::Rename { from, to } => {
                if let Some(i) = names.get(&from).copied() {
                    fs.rename(ROOT, NAMES[from], ROOT, NAMES[to], false, false).unwrap();
                    if from != to {
                        names.remove(&from);
                        names.insert(to, i);
                    }
                }
            }
            FsOp::Unlink { name } if names.remove(&name).is_some() => {
                fs.unlink(ROOT, NAMES[name]).unwrap();
            }
            _ => {}
        }
        // Every name reads as the model says.
        for (n, i) in &names {
            let attr = fs.lookup(ROOT, NAMES[*n]).unwrap();
            assert_eq!(attr.ino, *i, "step {step}: name {n}");
            assert_eq!(attr.size, bytes[i].len() as u64, "step {step}: size of {n}");
        }
    }
    for hd in handles.into_iter().chain(closed) {
        fs.release(hd.fh).unwrap();
    }
    // Files unlinked while open are gone once closed; the rest read back from the store.
    let live: Vec<InodeId> = names.values().copied().collect();
    fs.engine().with_index(|ix| {
        for (ino, i) in ix.ns().inodes.iter() {
            if i.kind == cowfs_engine::FileKind::Regular {
                assert!(live.contains(ino), "orphan {ino} was not freed");
            }
        }
    });
    for i in live {
        assert!(fs.engine().read(i, 0, 1 << 20).unwrap() == bytes[&i], "final bytes of {i}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]
    #[test]
    fn filesystem_logic_matches_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
