//! The merge rules one by one, and a randomized test: devices making random changes and
//! exchanging them in random orders converge, and no version is lost.

use super::*;

fn stamp(hlc: u64, device: u64) -> Stamp {
    Stamp { hlc: hlc << 16, device }
}

fn place(parent: Gid, name: &str, at: Stamp) -> Place {
    Place { stamp: at, parent, name: name.into(), mode: 0o644, target: String::new(), removed: None }
}

fn version(device: u64, seq: u64, parents: &[Vid], hlc: u64, content: &str) -> Version {
    Version {
        vid: Vid { device, seq },
        parents: parents.to_vec(),
        hlc: hlc << 16,
        time: (hlc as i64, 0),
        size: content.len() as u64,
        content: Some(content.into()),
    }
}

fn file(gid: Gid, p: Option<Place>, versions: Vec<Version>) -> Change {
    Change { gid, kind: Kind::File, place: p, versions }
}

fn names(m: &Merged) -> Vec<String> {
    m.view().shown.iter().map(|s| s.name.clone()).collect()
}

fn content_at(m: &Merged, name: &str) -> Option<String> {
    m.view().shown.iter().find(|s| s.name == name).and_then(|s| s.version.as_ref()?.content.clone())
}

const A: u64 = 0xaaaa_0000_0000_0001;
const B: u64 = 0xbbbb_0000_0000_0002;

/// f made on A as version a1, known to both.
fn base() -> (Merged, Gid, Vid) {
    let g = Gid { device: A, n: 1 };
    let mut m = Merged::default();
    m.apply(&file(g, Some(place(Gid::ROOT, "f.txt", stamp(1, A))), vec![version(A, 1, &[], 1, "one")]));
    (m, g, Vid { device: A, seq: 1 })
}

#[test]
fn concurrent_edits_keep_both_the_newest_under_the_name() {
    let (mut m, g, v1) = base();
    m.apply(&file(g, None, vec![version(A, 2, &[v1], 5, "a-edit")]));
    m.apply(&file(g, None, vec![version(B, 1, &[v1], 4, "b-edit")]));
    let v = m.view();
    assert_eq!(v.shown.len(), 2, "{v:?}");
    assert_eq!(content_at(&m, "f.txt").as_deref(), Some("a-edit"));
    let copy = v.shown.iter().find(|s| s.key.copy.is_some()).unwrap();
    assert_eq!(copy.name, conflict_name("f.txt", 4 << 16, B));
    assert!(copy.name.starts_with("f.sync-conflict-19700101-000000-bbbb0000") && copy.name.ends_with(".txt"));
    assert_eq!(copy.version.as_ref().unwrap().content.as_deref(), Some("b-edit"));
    // A version after both settles it.
    let both = [Vid { device: A, seq: 2 }, Vid { device: B, seq: 1 }];
    m.apply(&file(g, None, vec![version(B, 2, &both, 6, "merged")]));
    assert_eq!(names(&m), ["f.txt"]);
    assert_eq!(content_at(&m, "f.txt").as_deref(), Some("merged"));
}

#[test]
fn an_edit_wins_over_a_concurrent_delete() {
    let (mut m, g, v1) = base();
    let mut gone = place(Gid::ROOT, "f.txt", stamp(9, A));
    gone.removed = Some(vec![v1]);
    m.apply(&file(g, Some(gone.clone()), vec![]));
    assert!(names(&m).is_empty(), "a delete that saw every version removes");
    m.apply(&file(g, None, vec![version(B, 1, &[v1], 3, "b-edit")]));
    assert_eq!(names(&m), ["f.txt"]);
    assert_eq!(content_at(&m, "f.txt").as_deref(), Some("b-edit"));
}

#[test]
fn an_edit_follows_a_rename_and_two_renames_have_one_winner() {
    let (mut m, g, v1) = base();
    let dir = Gid { device: B, n: 1 };
    m.apply(&Change { gid: dir, kind: Kind::Dir, place: Some(place(Gid::ROOT, "d", stamp(2, B))), versions: vec![] });
    m.apply(&file(g, Some(place(dir, "moved.txt", stamp(3, B))), vec![]));
    m.apply(&file(g, None, vec![version(A, 2, &[v1], 4, "edited")]));
    let v = m.view();
    let f = v.shown.iter().find(|s| s.key.gid == g).unwrap();
    assert_eq!((f.parent, f.name.as_str()), (dir, "moved.txt"));
    assert_eq!(f.version.as_ref().unwrap().content.as_deref(), Some("edited"));
    // A's rename stamped later wins; B's is in its history only.
    m.apply(&file(g, Some(place(Gid::ROOT, "a-name.txt", stamp(5, A))), vec![]));
    assert_eq!(names(&m), ["a-name.txt", "d"]);
}

#[test]
fn two_mkdirs_of_one_name_are_one_directory() {
    let mut m = Merged::default();
    let (d1, d2) = (Gid { device: A, n: 1 }, Gid { device: B, n: 1 });
    m.apply(&Change { gid: d1, kind: Kind::Dir, place: Some(place(Gid::ROOT, "d", stamp(1, A))), versions: vec![] });
    m.apply(&Change { gid: d2, kind: Kind::Dir, place: Some(place(Gid::ROOT, "d", stamp(2, B))), versions: vec![] });
    m.apply(&file(Gid { device: A, n: 2 }, Some(place(d1, "x", stamp(3, A))), vec![version(A, 1, &[], 3, "x")]));
    m.apply(&file(Gid { device: B, n: 2 }, Some(place(d2, "y", stamp(3, B))), vec![version(B, 1, &[], 3, "y")]));
    let v = m.view();
    assert_eq!(names(&m), ["d", "x", "y"]);
    assert!(v.shown[1..].iter().all(|s| s.parent == d1), "{v:?}");
}

#[test]
fn two_new_files_at_one_path_are_both_kept() {
    let mut m = Merged::default();
    m.apply(&file(Gid { device: A, n: 1 }, Some(place(Gid::ROOT, "n", stamp(1, A))), vec![version(A, 1, &[], 1, "a")]));
    m.apply(&file(Gid { device: B, n: 1 }, Some(place(Gid::ROOT, "n", stamp(2, B))), vec![version(B, 1, &[], 2, "b")]));
    assert_eq!(content_at(&m, "n").as_deref(), Some("b"));
    let copy = conflict_name("n", 1 << 16, A);
    assert_eq!(names(&m), ["n".to_string(), copy.clone()]);
    assert_eq!(content_at(&m, &copy).as_deref(), Some("a"));
}

#[test]
fn moves_into_each_other_break_the_cycle_and_lose_nothing() {
    let mut m = Merged::default();
    let (a, b) = (Gid { device: A, n: 1 }, Gid { device: A, n: 2 });
    m.apply(&Change { gid: a, kind: Kind::Dir, place: Some(place(Gid::ROOT, "a", stamp(1, A))), versions: vec![] });
    m.apply(&Change { gid: b, kind: Kind::Dir, place: Some(place(Gid::ROOT, "b", stamp(1, A))), versions: vec![] });
    m.apply(&file(Gid { device: A, n: 3 }, Some(place(a, "in-a", stamp(1, A))), vec![version(A, 1, &[], 1, "x")]));
    // A moves a into b; B moves b into a.
    m.apply(&Change { gid: a, kind: Kind::Dir, place: Some(place(b, "a", stamp(2, A))), versions: vec![] });
    m.apply(&Change { gid: b, kind: Kind::Dir, place: Some(place(a, "b", stamp(3, B))), versions: vec![] });
    let v = m.view();
    // b's move was the later one: b goes back to the root, a stays in it.
    let at = |g: Gid| v.shown.iter().find(|s| s.key.gid == g).map(|s| s.parent);
    assert_eq!(at(b), Some(Gid::ROOT));
    assert_eq!(at(a), Some(b));
    assert_eq!(v.shown.len(), 3);
}

#[test]
fn a_removed_directory_keeps_what_was_put_into_it_meanwhile() {
    let mut m = Merged::default();
    let d = Gid { device: A, n: 1 };
    m.apply(&Change { gid: d, kind: Kind::Dir, place: Some(place(Gid::ROOT, "d", stamp(1, A))), versions: vec![] });
    let mut gone = place(Gid::ROOT, "d", stamp(5, A));
    gone.removed = Some(vec![]);
    m.apply(&Change { gid: d, kind: Kind::Dir, place: Some(gone), versions: vec![] });
    assert!(names(&m).is_empty());
    m.apply(&file(Gid { device: B, n: 1 }, Some(place(d, "new", stamp(4, B))), vec![version(B, 1, &[], 4, "n")]));
    assert_eq!(names(&m), ["d", "new"]);
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A device of the randomized test: what it knows, the batches it made, its clocks.
struct Device {
    id: u64,
    known: Merged,
    batches: Vec<Vec<Change>>,
    /// How many batches of each device it has applied.
    pulled: Vec<usize>,
    hlc: u64,
    next_gid: u64,
    next_seq: u64,
}

impl Device {
    fn tick(&mut self) -> u64 {
        let seen = self.known.entries.values().flat_map(|e| {
            e.place.iter().map(|p| p.stamp.hlc).chain(e.versions.values().map(|v| v.hlc)).collect::<Vec<_>>()
        });
        self.hlc = self.hlc.max(seen.max().unwrap_or(0)) + 1;
        self.hlc
    }

    /// One random change to what it shows, as a batch of its own.
    fn change(&mut self, rng: &mut Rng) {
        let view = self.known.view();
        let dirs: Vec<Gid> = std::iter::once(Gid::ROOT)
            .chain(view.shown.iter().filter(|s| s.kind == Kind::Dir).map(|s| s.key.gid))
            .collect();
        let mains: Vec<&Shown> = view.shown.iter().filter(|s| s.key.copy.is_none()).collect();
        let at = Stamp { hlc: self.tick(), device: self.id };
        let names = ["a", "b", "c.txt", "d"];
        let change = match rng.below(6) {
            0 | 1 if !mains.is_empty() => {
                let s = mains[rng.below(mains.len())];
                let e = &self.known.entries[&s.key.gid];
                if e.kind != Kind::File {
                    return;
                }
                // An edit descends from every head it shows (a conflict copy seen is merged).
                let parents: Vec<Vid> = e.heads().iter().map(|v| v.vid).collect();
                self.next_seq += 1;
                let v = Version {
                    vid: Vid { device: self.id, seq: self.next_seq },
                    parents,
                    hlc: at.hlc,
                    time: (at.hlc as i64, 0),
                    size: 1,
                    content: Some(format!("{}-{}", self.id, self.next_seq)),
                };
                Change { gid: s.key.gid, kind: Kind::File, place: None, versions: vec![v] }
            }
            2 if !mains.is_empty() => {
                let s = mains[rng.below(mains.len())];
                let e = &self.known.entries[&s.key.gid];
                let mut p = e.place.clone().expect("shown");
                p.stamp = at;
                p.removed = Some(e.heads().iter().map(|v| v.vid).collect());
                Change { gid: s.key.gid, kind: e.kind, place: Some(p), versions: vec![] }
            }
            3 if !mains.is_empty() => {
                let s = mains[rng.below(mains.len())];
                let e = &self.known.entries[&s.key.gid];
                let mut p = e.place.clone().expect("shown");
                p.stamp = at;
                p.parent = dirs[rng.below(dirs.len())];
                if p.parent == s.key.gid {
                    return;
                }
                p.name = names[rng.below(names.len())].into();
                Change { gid: s.key.gid, kind: e.kind, place: Some(p), versions: vec![] }
            }
            k => {
                self.next_gid += 1;
                let gid = Gid { device: self.id, n: self.next_gid };
                let p = place(dirs[rng.below(dirs.len())], names[rng.below(names.len())], at);
                if k == 4 {
                    Change { gid, kind: Kind::Dir, place: Some(p), versions: vec![] }
                } else {
                    self.next_seq += 1;
                    let v = Version {
                        vid: Vid { device: self.id, seq: self.next_seq },
                        parents: vec![],
                        hlc: at.hlc,
                        time: (0, 0),
                        size: 1,
                        content: Some(format!("new {}", self.next_seq)),
                    };
                    Change { gid, kind: Kind::File, place: Some(p), versions: vec![v] }
                }
            }
        };
        self.known.apply(&change);
        self.batches.push(vec![change]);
    }
}

fn converge(seed: u64) {
    let mut rng = Rng(seed | 1);
    let n = 3;
    let mut devs: Vec<Device> = (0..n)
        .map(|i| Device {
            id: 0x1000 + i as u64,
            known: Merged::default(),
            batches: Vec::new(),
            pulled: vec![0; n],
            hlc: 0,
            next_gid: 0,
            next_seq: 0,
        })
        .collect();
    for _ in 0..200 {
        let d = rng.below(n);
        if rng.below(3) == 0 {
            // Pull a random prefix of another device's batches.
            let from = rng.below(n);
            let upto = rng.below(devs[from].batches.len() + 1);
            let batches: Vec<Change> = devs[from].batches[devs[d].pulled[from].min(upto)..upto].concat();
            for c in &batches {
                devs[d].known.apply(c);
            }
            devs[d].pulled[from] = devs[d].pulled[from].max(upto);
        } else {
            devs[d].change(&mut rng);
        }
    }
    // Everyone pulls everything, in another order each.
    let all: Vec<Vec<Change>> = devs.iter().map(|d| d.batches.concat()).collect();
    for (i, d) in devs.iter_mut().enumerate() {
        for k in 0..n {
            let mut cs = all[(i + k) % n].clone();
            if i % 2 == 1 {
                cs.reverse();
            }
            for c in &cs {
                d.known.apply(c);
            }
        }
    }
    let view = devs[0].known.view();
    for d in &devs[1..] {
        assert!(d.known == devs[0].known, "seed {seed}: the unions differ");
        assert!(d.known.view() == view, "seed {seed}: the trees differ");
    }
    // No version is lost: every version made is known, and every head of a shown file is
    // shown, under the name or as a copy.
    let made: usize = all.iter().flatten().map(|c| c.versions.len()).sum();
    let known: usize = devs[0].known.entries.values().map(|e| e.versions.len()).sum();
    assert_eq!(made, known, "seed {seed}");
    for s in view.shown.iter().filter(|s| s.key.copy.is_none() && s.kind == Kind::File) {
        for h in devs[0].known.entries[&s.key.gid].heads() {
            let same = |v: &Version| (&v.content, v.size) == (&h.content, h.size);
            let shown = view.shown.iter().any(|x| x.key.gid == s.key.gid && x.version.as_ref().is_some_and(same));
            assert!(shown, "seed {seed}: head {:?} of {:?} is not shown", h.vid, s.key.gid);
        }
    }
    // The union survives its own encoding.
    let json = serde_json::to_string(&devs[0].known).unwrap();
    assert!(serde_json::from_str::<Merged>(&json).unwrap() == devs[0].known, "seed {seed}");
    // Names are unique in each directory.
    let mut seen = BTreeSet::new();
    for s in &view.shown {
        assert!(seen.insert((s.parent, s.name.clone())), "seed {seed}: {} twice", s.name);
    }
}

#[test]
fn devices_converge_whatever_the_order_and_lose_no_version() {
    let seeds: Vec<u64> = match std::env::var("COWFS_SEED") {
        Ok(s) => vec![s.parse().expect("COWFS_SEED is a number")],
        Err(_) => {
            let n = if std::env::var_os("COWFS_SOAK").is_some() { 2000 } else { 100 };
            (1..=n).collect()
        }
    };
    for seed in seeds {
        let r = std::panic::catch_unwind(|| converge(seed));
        assert!(r.is_ok(), "failed with seed {seed} (rerun with COWFS_SEED={seed})");
    }
}
