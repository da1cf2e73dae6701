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

mod crash;

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

use super::{BLOCK, LockGuard, Space, Storage, StorageFile};

pub use crash::{CrashImage, Fate, Landed, PowerLossCoverage, SECTOR, TornFill};

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
    fn space(&self) -> io::Result<Option<Space>> {
        let st = self.state.lock();
        Ok(st.capacity.map(|total| Space { total, available: total.saturating_sub(st.disk.used()) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
