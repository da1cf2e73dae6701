//! An in-memory disk for crash and fault tests.
//!
//! Files are inodes holding two byte vectors: `live` (what a reader sees now) and `durable`
//! (what survives power loss: the content at the last `sync_data`/`sync_all`). Directory
//! entries likewise have a live and a durable map (durable after `sync_dir`). Counting every
//! mutating call, the simulator can *crash* at call k: the state just before call k is frozen,
//! call k and everything after it fail, and [`SimStorage::crash_image`] builds the disk a
//! crash would leave. It can also *fail* call k with EIO or ENOSPC, once or from then on.

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{BLOCK, LockGuard, Storage, StorageFile};

/// What a crash leaves behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashImage {
    /// The process died: every completed call survives (the kernel still has it).
    ProcessKill,
    /// Power loss: only synced file data under synced directory entries survives.
    PowerLoss,
    /// Power loss after the disk wrote only some of the writes not yet synced (they reach
    /// the platter in any order): synced data under synced names, plus the unsynced writes
    /// that `keep` selects, by their index in issue order.
    PowerLossPartial(Unsynced),
    /// The process died in the middle of the crashing call, a write: only its first `cut`
    /// bytes landed; the rest of its range holds what `fill` says.
    Torn {
        /// Bytes of the write that landed.
        cut: usize,
        /// What the rest of the range holds.
        fill: TornFill,
    },
}

/// Which unsynced writes a partial power loss keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsynced {
    /// The first n, in order.
    Prefix(usize),
    /// All but the k-th (a later write landed, an earlier one did not).
    AllBut(usize),
    /// Only the k-th.
    Only(usize),
}

impl Unsynced {
    fn keeps(self, k: usize) -> bool {
        match self {
            Unsynced::Prefix(n) => k < n,
            Unsynced::AllBut(j) => k != j,
            Unsynced::Only(j) => k == j,
        }
    }
}

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

#[derive(Debug, Clone, Default)]
struct Disk {
    inodes: Vec<Inode>,
    live_dir: BTreeMap<String, usize>,
    durable_dir: BTreeMap<String, usize>,
    /// Writes since their file's last sync, in issue order: (inode, offset, bytes).
    unsynced: Vec<(usize, u64, Vec<u8>)>,
}

impl Disk {
    /// Bytes held by named files.
    fn used(&self) -> u64 {
        let named: std::collections::BTreeSet<usize> = self.live_dir.values().copied().collect();
        named.iter().map(|&i| self.inodes[i].live.len() as u64).sum()
    }
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
                    FaultKind::Eio => io::Error::from_raw_os_error(5),
                    FaultKind::Enospc => io::Error::from_raw_os_error(28),
                });
            }
        }
        Ok(())
    }
}

impl SimStorage {
    /// An empty disk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Crash at mutating call number `k` (counting from 0, from now on the counter's value).
    pub fn crash_at(&self, k: u64) {
        let mut st = self.state.lock();
        st.crash_at = Some(k);
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

    /// How many writes were not yet synced at the crash (or now, before any crash).
    pub fn unsynced_writes(&self) -> usize {
        let st = self.state.lock();
        st.frozen.as_ref().map_or(&st.disk, |(d, _)| d).unsynced.len()
    }

    /// Length of the write that was in flight at the crash, if the crashing call was a write.
    pub fn torn_write_len(&self) -> Option<usize> {
        let st = self.state.lock();
        st.frozen.as_ref().and_then(|(_, w)| w.as_ref().map(|w| w.data.len()))
    }

    /// A new, independent disk holding what the crash leaves (or, before any crash, what a
    /// crash now would leave). A `Torn` image of a crash that was not a write equals
    /// `ProcessKill`.
    pub fn crash_image(&self, image: CrashImage) -> SimStorage {
        let st = self.state.lock();
        let (disk, inflight) = match &st.frozen {
            Some((d, w)) => (d.clone(), w.clone()),
            None => (st.disk.clone(), None),
        };
        let mut out = Disk::default();
        let power_loss = matches!(image, CrashImage::PowerLoss | CrashImage::PowerLossPartial(_));
        let src_dir = if power_loss { &disk.durable_dir } else { &disk.live_dir };
        for (name, &ino) in src_dir {
            let node = &disk.inodes[ino];
            let mut data = if power_loss { node.durable.clone() } else { node.live.clone() };
            if let CrashImage::PowerLossPartial(keep) = image {
                for (k, (i, off, bytes)) in disk.unsynced.iter().enumerate() {
                    if *i == ino && keep.keeps(k) {
                        let (off, end) = (*off as usize, *off as usize + bytes.len());
                        if data.len() < end {
                            data.resize(end, 0);
                        }
                        data[off..end].copy_from_slice(bytes);
                    }
                }
            }
            if let (CrashImage::Torn { cut, fill }, Some(w)) = (image, &inflight)
                && w.inode == ino
            {
                let cut = cut.min(w.data.len());
                let off = w.offset as usize;
                let end_cut = off + cut;
                if data.len() < end_cut {
                    data.resize(end_cut, 0);
                }
                data[off..end_cut].copy_from_slice(&w.data[..cut]);
                if fill != TornFill::Old {
                    let end = off + w.data.len();
                    if data.len() < end {
                        data.resize(end, 0);
                    }
                    for (k, b) in data[end_cut..end].iter_mut().enumerate() {
                        *b = if fill == TornFill::Zeros { 0 } else { (k as u8).wrapping_mul(151) ^ 0x5A };
                    }
                }
            }
            let idx = out.inodes.len();
            out.inodes.push(Inode { live: data.clone(), durable: data });
            out.live_dir.insert(name.clone(), idx);
            out.durable_dir.insert(name.clone(), idx);
        }
        SimStorage { state: Arc::new(Mutex::new(State { disk: out, ..State::default() })) }
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
        let data = &mut st.disk.inodes[self.inode].live;
        if data.len() < off + buf_fit.len() {
            data.resize(off + buf_fit.len(), 0);
        }
        data[off..off + buf_fit.len()].copy_from_slice(buf_fit);
        if !buf_fit.is_empty() {
            st.disk.unsynced.push((self.inode, offset, buf_fit.to_vec()));
        }
        if fits < buf.len() {
            st.injected += 1;
            return Err(io::Error::from_raw_os_error(28));
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
        Ok(())
    }
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        // It changes nothing a crash image shows (any unsynced write may land anyway), but it
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
        st.disk.unsynced.retain(|(i, _, _)| *i != ino);
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
        Ok(())
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        let mut st = self.state.lock();
        st.enter(true, None)?;
        st.disk.live_dir.remove(name).map(|_| ()).ok_or_else(|| not_found(name))
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
        let img = s.crash_image(CrashImage::PowerLoss);
        assert_eq!(img.read_file("a").unwrap(), b"hello");
        assert!(img.read_file("b").is_none());
        let img = s.crash_image(CrashImage::ProcessKill);
        assert_eq!(img.read_file("a").unwrap(), b"hello world");
        assert_eq!(img.read_file("b").unwrap(), b"x");
    }

    #[test]
    fn crash_freezes_state_and_torn_images_cut_the_write() {
        let s = SimStorage::new();
        let a = s.open("a", true).unwrap(); // mutation 0
        a.write_at(b"0123456789", 0).unwrap(); // 1
        s.crash_at(2);
        assert!(a.write_at(b"abcdef", 4).is_err()); // 2: crashes
        assert!(a.read_at(&mut [0u8; 4], 0).is_err(), "dead process cannot read");
        assert_eq!(s.torn_write_len(), Some(6));
        let old = s.crash_image(CrashImage::Torn { cut: 2, fill: TornFill::Old });
        assert_eq!(old.read_file("a").unwrap(), b"0123ab6789");
        let zeros = s.crash_image(CrashImage::Torn { cut: 2, fill: TornFill::Zeros });
        assert_eq!(zeros.read_file("a").unwrap(), b"0123ab\0\0\0\0");
        let kill = s.crash_image(CrashImage::ProcessKill);
        assert_eq!(kill.read_file("a").unwrap(), b"0123456789");
    }

    #[test]
    fn faults_fire_once_or_persistently() {
        let s = SimStorage::new();
        let a = s.open("a", true).unwrap();
        s.set_fault(Some(Fault { at: 2, kind: FaultKind::Enospc, persistent: false, mutating_only: true }));
        a.write_at(b"a", 0).unwrap(); // mutation 1
        let e = a.write_at(b"b", 1).unwrap_err(); // mutation 2
        assert_eq!(e.raw_os_error(), Some(28));
        a.write_at(b"c", 1).unwrap();
        s.set_fault(Some(Fault { at: 4, kind: FaultKind::Eio, persistent: true, mutating_only: true }));
        assert!(a.sync_data().is_err());
        assert!(a.sync_data().is_err());
        assert_eq!(s.faults_injected(), 3);
    }
}
