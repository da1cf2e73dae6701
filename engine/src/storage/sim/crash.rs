//! What a crash of the simulated disk leaves: the images of a process kill, a torn write and a
//! power loss that lands any subset of the pending changes, and the enumeration of those
//! subsets ([`SimStorage::power_loss_images`]).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{Change, Disk, InFlightWrite, Inode, SimStorage, State, put};

/// What a crash leaves behind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CrashImage {
    /// The process died: every completed call survives (the kernel still has it).
    ProcessKill,
    /// Power loss: only synced file data under synced directory entries survives.
    PowerLoss,
    /// Power loss after the disk wrote some of the pending changes (in any order): synced data
    /// under synced names, plus the pending changes `Landed` selects.
    PowerLossPartial(Landed),
    /// The process died in the middle of the crashing call, a write: only its first `cut`
    /// bytes landed; the rest of its range holds what `fill` says.
    Torn {
        /// Bytes of the write that landed.
        cut: usize,
        /// What the rest of the range holds.
        fill: TornFill,
    },
}

impl CrashImage {
    /// True for the images of a power loss (where only synced changes are sure to survive).
    pub fn is_power_loss(&self) -> bool {
        matches!(self, CrashImage::PowerLoss | CrashImage::PowerLossPartial(_))
    }
}

/// Which pending changes (see the module doc) a partial power loss lands, by their index in
/// issue order; changes past the end of `fates` are lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Landed {
    /// The fate of each pending change.
    pub fates: Vec<Fate>,
}

impl Landed {
    /// The first `n` of the pending changes landed whole, the rest lost.
    pub fn prefix(n: usize) -> Landed {
        Landed { fates: vec![Fate::Whole; n] }
    }

    /// Of `n` pending changes, those for which `keep(k)` is true landed whole.
    pub fn subset(n: usize, keep: impl Fn(usize) -> bool) -> Landed {
        Landed { fates: (0..n).map(|k| if keep(k) { Fate::Whole } else { Fate::Lost }).collect() }
    }

    fn fate(&self, k: usize) -> Fate {
        self.fates.get(k).copied().unwrap_or(Fate::Lost)
    }
}

/// What became of one pending change at a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Not on the disk.
    Lost,
    /// On the disk whole.
    Whole,
    /// A write of which only the first `cut` bytes reached the disk (the sectors it covers
    /// landed in order up to one, not after it); a change that is not a write landed whole.
    Torn(usize),
}

/// The sector size torn power-loss writes are cut at: a disk writes a sector whole or not at
/// all.
pub const SECTOR: u64 = 512;

/// The bytes after the cut of a torn write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornFill {
    /// Whatever was there before (nothing, past the old end of file).
    Old,
    /// Zeros up to the end of the intended write.
    Zeros,
    /// Garbage up to the end of the intended write.
    Random,
}

impl Disk {
    /// The files a power loss leaves when the pending changes land as `landed` says.
    fn after_power_loss(&self, landed: &Landed) -> BTreeMap<String, Vec<u8>> {
        let mut dir = self.durable_dir.clone();
        let mut data: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        for (k, change) in self.pending.iter().enumerate() {
            let fate = landed.fate(k);
            if fate == Fate::Lost {
                continue;
            }
            match change {
                Change::Write { inode, offset, data: bytes } => {
                    let n = match fate {
                        Fate::Torn(cut) => cut.min(bytes.len()),
                        _ => bytes.len(),
                    };
                    put(durable_of(&mut data, &self.inodes, *inode), *offset as usize, &bytes[..n]);
                }
                Change::SetLen { inode, len } => durable_of(&mut data, &self.inodes, *inode).resize(*len as usize, 0),
                Change::Link { name, inode } => {
                    dir.insert(name.clone(), *inode);
                }
                Change::Unlink { name } => {
                    dir.remove(name);
                }
                Change::Rename { from, to, inode } => {
                    dir.remove(from);
                    dir.insert(to.clone(), *inode);
                }
            }
        }
        dir.into_iter()
            .map(|(name, i)| {
                let bytes = data.get(&i).cloned().unwrap_or_else(|| self.inodes[i].durable.clone());
                (name, bytes)
            })
            .collect()
    }

    /// The files a process kill leaves, with `torn` (a write in flight, cut) applied.
    fn after_kill(&self, torn: Option<(&InFlightWrite, usize, TornFill)>) -> BTreeMap<String, Vec<u8>> {
        self.live_dir
            .iter()
            .map(|(name, &ino)| {
                let mut data = self.inodes[ino].live.clone();
                if let Some((w, cut, fill)) = torn
                    && w.inode == ino
                {
                    let cut = cut.min(w.data.len());
                    let off = w.offset as usize;
                    put(&mut data, off, &w.data[..cut]);
                    if fill != TornFill::Old {
                        let rest: Vec<u8> = (cut..w.data.len())
                            .map(|k| if fill == TornFill::Zeros { 0 } else { (k as u8).wrapping_mul(151) ^ 0x5A })
                            .collect();
                        put(&mut data, off + cut, &rest);
                    }
                }
                (name.clone(), data)
            })
            .collect()
    }
}

/// Inode `i`'s content in `data`, starting from its durable bytes.
fn durable_of<'a>(data: &'a mut BTreeMap<usize, Vec<u8>>, inodes: &[Inode], i: usize) -> &'a mut Vec<u8> {
    data.entry(i).or_insert_with(|| inodes[i].durable.clone())
}

/// A small deterministic PRNG (splitmix64) for the sampled power-loss images.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How [`SimStorage::power_loss_images`] chose its images.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PowerLossCoverage {
    /// Pending changes at the crash.
    pub pending: usize,
    /// True when every subset of them was taken (else: every prefix, every all-but-one, and
    /// a seeded sample of subsets).
    pub exhaustive: bool,
    /// Images before identical ones were merged.
    pub generated: usize,
}

impl SimStorage {
    /// How many changes were pending (not yet synced) at the crash, or now before any crash:
    /// writes and truncations, and directory entries created, renamed or removed.
    pub fn pending_changes(&self) -> (usize, usize) {
        let st = self.state.lock();
        let pending = &st.crash_disk().0.pending;
        let dir = pending.iter().filter(|c| c.is_dir()).count();
        (pending.len() - dir, dir)
    }

    /// Length of the write that was in flight at the crash, if the crashing call was a write.
    pub fn torn_write_len(&self) -> Option<usize> {
        let st = self.state.lock();
        st.crash_disk().1.map(|w| w.data.len())
    }

    /// A new, independent disk holding what the crash leaves (or, before any crash, what a
    /// crash now would leave). A `Torn` image of a crash that was not a write equals
    /// `ProcessKill`.
    pub fn crash_image(&self, image: &CrashImage) -> SimStorage {
        let st = self.state.lock();
        let (disk, inflight) = st.crash_disk();
        let files = match image {
            CrashImage::ProcessKill => disk.after_kill(None),
            CrashImage::Torn { cut, fill } => disk.after_kill(inflight.map(|w| (w, *cut, *fill))),
            CrashImage::PowerLoss => disk.after_power_loss(&Landed::default()),
            CrashImage::PowerLossPartial(landed) => disk.after_power_loss(landed),
        };
        SimStorage::from_files(files)
    }

    /// A disk holding `files`, all durable.
    pub fn from_files(files: BTreeMap<String, Vec<u8>>) -> SimStorage {
        let mut out = Disk::default();
        for (name, data) in files {
            out.inodes.push(Inode { live: data.clone(), durable: data });
            out.live_dir.insert(name.clone(), out.inodes.len() - 1);
            out.durable_dir.insert(name, out.inodes.len() - 1);
        }
        SimStorage { state: Arc::new(Mutex::new(State { disk: out, ..State::default() })) }
    }

    /// The power-loss images of the crash (or of now), distinct by content: with at most
    /// `exhaustive_up_to` pending changes, every subset of them landing whole; with more, every
    /// prefix (in issue order), every all-but-one, and `sample` subsets drawn from `seed`.
    /// Besides, for each pending write that spans a sector boundary, the write torn at its
    /// first sector boundary after the changes before it landed (and none after), and torn at
    /// its last one after every other change landed.
    pub fn power_loss_images(
        &self,
        exhaustive_up_to: usize,
        sample: usize,
        seed: u64,
    ) -> (Vec<CrashImage>, PowerLossCoverage) {
        let st = self.state.lock();
        let disk = st.crash_disk().0;
        let n = disk.pending.len();
        let mut landed: Vec<Landed> = Vec::new();
        let exhaustive = n <= exhaustive_up_to;
        if exhaustive {
            landed.extend((0u64..1 << n).map(|mask| Landed::subset(n, |k| mask >> k & 1 == 1)));
        } else {
            landed.extend((0..=n).map(Landed::prefix));
            landed.extend((0..n).map(|j| Landed::subset(n, |k| k != j)));
            let mut state = seed;
            for _ in 0..sample {
                let bits: Vec<bool> = (0..n).map(|_| splitmix(&mut state) & 1 == 1).collect();
                landed.push(Landed::subset(n, |k| bits[k]));
            }
        }
        for (k, change) in disk.pending.iter().enumerate() {
            let Change::Write { offset, data, .. } = change else { continue };
            let (start, end) = (*offset, *offset + data.len() as u64);
            let first = (start / SECTOR + 1) * SECTOR;
            let last = (end - 1) / SECTOR * SECTOR;
            if first >= end || last <= start {
                continue;
            }
            let mut in_order = Landed::prefix(k);
            in_order.fates.push(Fate::Torn((first - start) as usize));
            landed.push(in_order);
            let mut all_but = Landed::prefix(n);
            all_but.fates[k] = Fate::Torn((last - start) as usize);
            landed.push(all_but);
        }
        let generated = landed.len();
        let mut seen = HashSet::new();
        let images = landed
            .into_iter()
            .filter(|l| {
                let mut h = blake3::Hasher::new();
                for (name, data) in disk.after_power_loss(l) {
                    h.update(&(name.len() as u64).to_le_bytes()).update(name.as_bytes());
                    h.update(&(data.len() as u64).to_le_bytes()).update(&data);
                }
                seen.insert(*h.finalize().as_bytes())
            })
            .map(CrashImage::PowerLossPartial)
            .collect();
        (images, PowerLossCoverage { pending: n, exhaustive, generated })
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::Storage;

    #[test]
    fn power_loss_keeps_only_synced_data_under_synced_names() {
        let s = SimStorage::new();
        let a = s.open("a", true).unwrap();
        a.write_at(b"hello", 0).unwrap();
        a.sync_data().unwrap();
        s.sync_dir().unwrap();
        a.write_at(b" world", 5).unwrap();
        let b = s.open("b", true).unwrap();
        b.write_at(b"x", 0).unwrap();
        b.sync_data().unwrap(); // data synced, but the name never was
        let img = s.crash_image(&CrashImage::PowerLoss);
        assert_eq!(img.read_file("a").unwrap(), b"hello");
        assert!(img.read_file("b").is_none());
        let img = s.crash_image(&CrashImage::ProcessKill);
        assert_eq!(img.read_file("a").unwrap(), b"hello world");
        assert_eq!(img.read_file("b").unwrap(), b"x");
    }

    #[test]
    fn a_crash_counts_from_now_and_images_cut_the_write() {
        let s = SimStorage::new();
        let a = s.open("a", true).unwrap(); // mutation 0
        a.write_at(b"0123456789", 0).unwrap(); // 1
        s.crash_in(1);
        a.write_at(b"x", 20).unwrap(); // 2: the 0th from the call above
        assert!(!s.has_crashed());
        assert!(a.write_at(b"abcdef", 4).is_err()); // 3: crashes
        assert!(s.has_crashed());
        assert!(a.read_at(&mut [0u8; 4], 0).is_err(), "dead process cannot read");
        assert_eq!(s.torn_write_len(), Some(6));
        let old = s.crash_image(&CrashImage::Torn { cut: 2, fill: TornFill::Old });
        assert_eq!(&old.read_file("a").unwrap()[..10], b"0123ab6789");
        let zeros = s.crash_image(&CrashImage::Torn { cut: 2, fill: TornFill::Zeros });
        assert_eq!(&zeros.read_file("a").unwrap()[..10], b"0123ab\0\0\0\0");
        let kill = s.crash_image(&CrashImage::ProcessKill);
        assert_eq!(&kill.read_file("a").unwrap()[..10], b"0123456789");
    }

    #[test]
    fn pending_changes_land_in_any_subset_writes_torn_at_sectors() {
        let s = SimStorage::new();
        let a = s.open("a", true).unwrap();
        a.write_at(&[1u8; 100], 0).unwrap();
        a.sync_data().unwrap();
        s.sync_dir().unwrap();
        a.write_at(&[2u8; 1000], 100).unwrap(); // pending 0: bytes 100..1100, sectors 512, 1024
        s.open("b", true).unwrap(); // pending 1: a name
        s.rename("a", "c").unwrap(); // pending 2
        assert_eq!(s.pending_changes(), (1, 2));
        // The rename landed, the write and the creation of b did not.
        let img = s.crash_image(&CrashImage::PowerLossPartial(Landed::subset(3, |k| k == 2)));
        assert_eq!(img.snapshot_files().keys().collect::<Vec<_>>(), ["c"]);
        assert_eq!(img.read_file("c").unwrap(), [1u8; 100]);
        // The write torn at its first sector boundary (512 - 100 bytes of it landed).
        let torn = Landed { fates: vec![Fate::Torn(412)] };
        let img = s.crash_image(&CrashImage::PowerLossPartial(torn));
        let a = img.read_file("a").unwrap();
        assert_eq!((a.len(), a[511], a[99]), (512, 2, 1));
        // 2^3 subsets plus two torn writes, of which some look alike: rename with or without
        // the write differ, but b's empty file with and without the rename...
        let (images, cov) = s.power_loss_images(8, 0, 1);
        assert!(cov.exhaustive && cov.pending == 3 && cov.generated == 10, "{cov:?}");
        assert_eq!(images.len(), 10, "every image differs here: {images:?}");
        let (sampled, cov) = s.power_loss_images(2, 5, 1);
        assert!(!cov.exhaustive && cov.generated == 4 + 3 + 5 + 2, "{cov:?}");
        assert!(sampled.len() <= cov.generated);
    }
}
