//! An in-memory disk for crash and fault tests.
//!
//! Files are inodes holding two byte vectors: `live` (what a reader sees now) and `durable`
//! (what survives power loss: the content at the last `sync_data`/`sync_all`). Directory
//! entries likewise have a live and a durable map (durable after `sync_dir`). Every change not
//! yet made durable — a write, a truncation, a directory entry created, renamed or removed — is
//! also kept in issue order as *pending*: a power loss may land any subset of them (the disk
//! and the file system order nothing without a sync), a pending write whole or torn partway.
//!
//! Counting every mutating call, the simulator can *crash* at a chosen call: the state just
//! before it is frozen, that call and everything after it fail, and
//! [`SimStorage::crash_image`] builds the disk a crash would leave. It can also *fail* a chosen
//! call with EIO or ENOSPC, once or from then on.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{BLOCK, LockGuard, Storage, StorageFile};

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

/// Which error an injected fault returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultKind {
    /// `EIO`.
    Eio,
    /// `ENOSPC`.
    Enospc,
}

/// An injected failure of the `at`-th call (counting from 0 among the calls it counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Which call fails.
    pub at: u64,
    /// The error returned.
    pub kind: FaultKind,
    /// Every later counted call fails too.
    pub persistent: bool,
    /// Count only mutating calls (writes, syncs, renames, ...) rather than all calls.
    pub mutating_only: bool,
}

#[derive(Debug, Clone, Default)]
struct Inode {
    live: Vec<u8>,
    durable: Vec<u8>,
}

/// A change not yet made durable by a sync (see the module doc).
#[derive(Debug, Clone)]
enum Change {
    Write { inode: usize, offset: u64, data: Vec<u8> },
    SetLen { inode: usize, len: u64 },
    Link { name: String, inode: usize },
    Unlink { name: String },
    Rename { from: String, to: String, inode: usize },
}

impl Change {
    fn is_dir(&self) -> bool {
        matches!(self, Change::Link { .. } | Change::Unlink { .. } | Change::Rename { .. })
    }
    fn inode(&self) -> Option<usize> {
        match self {
            Change::Write { inode, .. } | Change::SetLen { inode, .. } => Some(*inode),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Disk {
    inodes: Vec<Inode>,
    live_dir: BTreeMap<String, usize>,
    durable_dir: BTreeMap<String, usize>,
    /// Changes since their file's (data) or the directory's (entries) last sync, in issue order.
    pending: Vec<Change>,
}

impl Disk {
    /// Bytes held by named files.
    fn used(&self) -> u64 {
        let named: BTreeSet<usize> = self.live_dir.values().copied().collect();
        named.iter().map(|&i| self.inodes[i].live.len() as u64).sum()
    }

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

/// Writes `bytes` at `off` of `data`, growing it (with zeros) as needed.
fn put(data: &mut Vec<u8>, off: usize, bytes: &[u8]) {
    if data.len() < off + bytes.len() {
        data.resize(off + bytes.len(), 0);
    }
    data[off..off + bytes.len()].copy_from_slice(bytes);
}

#[derive(Debug, Clone)]
struct InFlightWrite {
    inode: usize,
    offset: u64,
    data: Vec<u8>,
}

#[derive(Debug, Default)]
struct State {
    disk: Disk,
    mutations: u64,
    calls: u64,
    crash_at: Option<u64>,
    frozen: Option<(Disk, Option<InFlightWrite>)>,
    fault: Option<Fault>,
    fault_fired: bool,
    injected: u64,
    locked: bool,
    /// Most bytes all named files may hold together (`None`: unlimited).
    capacity: Option<u64>,
    /// Writebacks started: (mutating call number, offset, length).
    writebacks: Vec<(u64, u64, u64)>,
    /// Block writes ([`StorageFile::write_blocks`]) made.
    block_writes: u64,
}

/// The simulated disk. Clones share the same disk.
#[derive(Debug, Clone, Default)]
pub struct SimStorage {
    state: Arc<Mutex<State>>,
}

fn crashed() -> io::Error {
    io::Error::other("simulated crash: the process is dead")
}

impl State {
    /// Accounts for one call; returns an error when the call must fail.
    fn enter(&mut self, mutating: bool, write: Option<InFlightWrite>) -> io::Result<()> {
        if self.frozen.is_some() {
            return Err(crashed());
        }
        let call = self.calls;
        self.calls += 1;
        let mutation = self.mutations;
        if mutating {
            self.mutations += 1;
            if self.crash_at == Some(mutation) {
                self.frozen = Some((self.disk.clone(), write));
                return Err(crashed());
            }
        }
        if let Some(f) = self.fault {
            let counted = if f.mutating_only { mutating.then_some(mutation) } else { Some(call) };
            if let Some(n) = counted
                && (n == f.at || (f.persistent && n > f.at))
            {
                self.fault_fired = true;
                self.injected += 1;
                return Err(match f.kind {
                    FaultKind::Eio => io::Error::from_raw_os_error(libc::EIO),
                    FaultKind::Enospc => io::Error::from_raw_os_error(libc::ENOSPC),
                });
            }
        }
        Ok(())
    }

    /// The disk as the crash froze it, or as it is now before any crash.
    fn crash_disk(&self) -> (&Disk, Option<&InFlightWrite>) {
        match &self.frozen {
            Some((d, w)) => (d, w.as_ref()),
            None => (&self.disk, None),
        }
    }
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
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Crashes at the `k`-th mutating call from now (0: the next one). Counting from now,
    /// not from the disk's creation: a test that built a store first crashes in what follows.
    pub fn crash_in(&self, k: u64) {
        let mut st = self.state.lock();
        st.crash_at = Some(st.mutations + k);
    }

    /// Injects a fault.
    pub fn set_fault(&self, fault: Option<Fault>) {
        let mut st = self.state.lock();
        st.fault = fault;
        st.fault_fired = false;
    }

    /// Limits the bytes all named files hold together, like a small disk: a write that
    /// would pass the limit writes what fits and fails with `ENOSPC`.
    pub fn set_capacity(&self, bytes: Option<u64>) {
        self.state.lock().capacity = bytes;
    }

    /// Bytes the named files hold.
    pub fn used_bytes(&self) -> u64 {
        self.state.lock().disk.used()
    }

    /// How many faults were injected so far.
    pub fn faults_injected(&self) -> u64 {
        self.state.lock().injected
    }

    /// The writebacks started ([`StorageFile::start_writeback`]), in order: the number of
    /// the mutating call each was (for [`Fault::at`]), its offset and its length.
    pub fn writebacks(&self) -> Vec<(u64, u64, u64)> {
        self.state.lock().writebacks.clone()
    }

    /// How many block writes ([`StorageFile::write_blocks`]) were made.
    pub fn block_writes(&self) -> u64 {
        self.state.lock().block_writes
    }

    /// Mutating calls so far.
    pub fn mutations(&self) -> u64 {
        self.state.lock().mutations
    }

    /// All calls so far.
    pub fn calls(&self) -> u64 {
        self.state.lock().calls
    }

    /// True once the crash point was reached.
    pub fn has_crashed(&self) -> bool {
        self.state.lock().frozen.is_some()
    }

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

    /// A copy of one file's live bytes (for corruption tests and inspection).
    pub fn read_file(&self, name: &str) -> Option<Vec<u8>> {
        let st = self.state.lock();
        st.disk.live_dir.get(name).map(|&i| st.disk.inodes[i].live.clone())
    }

    /// Overwrites one file's bytes, live and durable (for corruption tests).
    pub fn write_file(&self, name: &str, data: Vec<u8>) {
        let mut st = self.state.lock();
        let idx = match st.disk.live_dir.get(name) {
            Some(&i) => i,
            None => {
                st.disk.inodes.push(Inode::default());
                let i = st.disk.inodes.len() - 1;
                st.disk.live_dir.insert(name.to_string(), i);
                st.disk.durable_dir.insert(name.to_string(), i);
                i
            }
        };
        st.disk.inodes[idx] = Inode { live: data.clone(), durable: data };
    }

    /// The whole disk's live content, name -> bytes (for comparisons).
    pub fn snapshot_files(&self) -> BTreeMap<String, Vec<u8>> {
        let st = self.state.lock();
        st.disk.live_dir.iter().map(|(n, &i)| (n.clone(), st.disk.inodes[i].live.clone())).collect()
    }
}

#[derive(Debug)]
struct SimFile {
    state: Arc<Mutex<State>>,
    inode: usize,
}

impl StorageFile for SimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut st = self.state.lock();
        st.enter(false, None)?;
        let data = &st.disk.inodes[self.inode].live;
        let off = usize::try_from(offset).unwrap_or(usize::MAX);
        if off >= data.len() {
            return Ok(0);
        }
        let n = buf.len().min(data.len() - off);
        buf[..n].copy_from_slice(&data[off..off + n]);
        Ok(n)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, Some(InFlightWrite { inode: self.inode, offset, data: buf.to_vec() }))?;
        let off = offset as usize;
        let len = st.disk.inodes[self.inode].live.len();
        // On a full disk the part that fits is written, then the write fails.
        let fits = match st.capacity {
            Some(cap) => {
                let free = cap.saturating_sub(st.disk.used()) as usize;
                buf.len().min((len + free).saturating_sub(off))
            }
            None => buf.len(),
        };
        let buf_fit = &buf[..fits];
        put(&mut st.disk.inodes[self.inode].live, off, buf_fit);
        if !buf_fit.is_empty() {
            st.disk.pending.push(Change::Write { inode: self.inode, offset, data: buf_fit.to_vec() });
        }
        if fits < buf.len() {
            st.injected += 1;
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        Ok(())
    }
    fn write_blocks(&self, blocks: &[u8], offset: u64, unchanged: usize) -> io::Result<()> {
        assert!(
            offset.is_multiple_of(BLOCK as u64) && blocks.len().is_multiple_of(BLOCK),
            "write_blocks: offset {offset} and length {} must be whole blocks",
            blocks.len()
        );
        {
            let mut st = self.state.lock();
            st.block_writes += 1;
            let live = &st.disk.inodes[self.inode].live;
            let (from, to) = (offset as usize, offset as usize + unchanged);
            assert!(
                live.get(from..to) == Some(&blocks[..unchanged]),
                "write_blocks: the {unchanged} bytes at {offset} said unchanged differ from the file's"
            );
        }
        // A disk rewrites the unchanged bytes with themselves: a torn write cannot damage them
        // (the assumption every append to a partial block makes, see docs/DESIGN.md).
        self.write_at(&blocks[unchanged..], offset + unchanged as u64)
    }
    fn len(&self) -> io::Result<u64> {
        let mut st = self.state.lock();
        st.enter(false, None)?;
        Ok(st.disk.inodes[self.inode].live.len() as u64)
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, None)?;
        st.disk.inodes[self.inode].live.resize(len as usize, 0);
        st.disk.pending.push(Change::SetLen { inode: self.inode, len });
        Ok(())
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        // It changes nothing a crash image shows (any pending write may land anyway), but it
        // is I/O that can fail: counted as a mutating call, so faults can hit it.
        let mut st = self.state.lock();
        let call = st.mutations;
        st.enter(true, None)?;
        st.writebacks.push((call, offset, len));
        Ok(())
    }
    fn sync_data(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, None)?;
        let node = &mut st.disk.inodes[self.inode];
        node.durable = node.live.clone();
        let ino = self.inode;
        st.disk.pending.retain(|c| c.inode() != Some(ino));
        Ok(())
    }
    fn sync_all(&self) -> io::Result<()> {
        self.sync_data()
    }
}

#[derive(Debug)]
struct SimLock(Arc<Mutex<State>>);

impl Drop for SimLock {
    fn drop(&mut self) {
        self.0.lock().locked = false;
    }
}

fn not_found(name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such file"))
}

impl Storage for SimStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let mut st = self.state.lock();
        let inode = match st.disk.live_dir.get(name) {
            Some(&i) => {
                st.enter(false, None)?;
                i
            }
            None if create => {
                st.enter(true, None)?;
                st.disk.inodes.push(Inode::default());
                let i = st.disk.inodes.len() - 1;
                st.disk.live_dir.insert(name.to_string(), i);
                st.disk.pending.push(Change::Link { name: name.to_string(), inode: i });
                i
            }
            None => {
                st.enter(false, None)?;
                return Err(not_found(name));
            }
        };
        Ok(Arc::new(SimFile { state: self.state.clone(), inode }))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, None)?;
        let i = st.disk.live_dir.remove(from).ok_or_else(|| not_found(from))?;
        st.disk.live_dir.insert(to.to_string(), i);
        st.disk.pending.push(Change::Rename { from: from.to_string(), to: to.to_string(), inode: i });
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, None)?;
        st.disk.live_dir.remove(name).ok_or_else(|| not_found(name))?;
        st.disk.pending.push(Change::Unlink { name: name.to_string() });
        Ok(())
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut st = self.state.lock();
        st.enter(false, None)?;
        Ok(st.disk.live_dir.keys().cloned().collect())
    }
    fn sync_dir(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, None)?;
        st.disk.durable_dir = st.disk.live_dir.clone();
        st.disk.pending.retain(|c| !c.is_dir());
        Ok(())
    }
    fn try_lock(&self) -> io::Result<Option<LockGuard>> {
        let mut st = self.state.lock();
        if st.locked {
            return Ok(None);
        }
        st.locked = true;
        Ok(Some(Box::new(SimLock(self.state.clone()))))
    }
    fn describe(&self) -> String {
        "<simulated storage>".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn faults_fire_once_or_persistently() {
        let s = SimStorage::new();
        let a = s.open("a", true).unwrap();
        s.set_fault(Some(Fault { at: 2, kind: FaultKind::Enospc, persistent: false, mutating_only: true }));
        a.write_at(b"a", 0).unwrap(); // mutation 1
        let e = a.write_at(b"b", 1).unwrap_err(); // mutation 2
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC));
        a.write_at(b"c", 1).unwrap();
        s.set_fault(Some(Fault { at: 4, kind: FaultKind::Eio, persistent: true, mutating_only: true }));
        assert!(a.sync_data().is_err());
        assert!(a.sync_data().is_err());
        assert_eq!(s.faults_injected(), 3);
    }
}
