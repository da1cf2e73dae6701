//! The one I/O seam: every byte the engine reads or writes goes through [`Storage`].
//!
//! [`DirStorage`] is the real filesystem; [`SimStorage`] is an in-memory disk that can freeze
//! at its k-th mutating call and hand out the image a crash would leave, or fail a chosen
//! call with EIO or ENOSPC. Production code never knows which one it has.

mod fs;
pub mod lower;
#[cfg(any(test, feature = "testing"))]
pub(crate) mod sim;

use std::any::Any;
use std::fmt::Debug;
use std::io::{self, IoSlice};
use std::sync::Arc;

use crate::error::{Result, io};

pub use fs::DirStorage;
#[cfg(any(test, feature = "testing"))]
pub use sim::SimStorage;

/// An open file of the store. All offsets are absolute; there is no cursor.
pub trait StorageFile: Send + Sync + Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read (0 at EOF).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Writes all of `bufs`, one after the other, at `offset`: one [`StorageFile::write_at`]
    /// of their concatenation (a crash can tear it anywhere, as any write), without copying
    /// them into one buffer where the storage can.
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], offset: u64) -> io::Result<()> {
        let mut all = Vec::with_capacity(bufs.iter().map(|b| b.len()).sum());
        for b in bufs {
            all.extend_from_slice(b);
        }
        self.write_at(&all, offset)
    }
    /// Writes whole blocks at `offset`: `offset` and `blocks.len()` are multiples of
    /// [`BLOCK`], `blocks` starts at an address aligned to it, and its first `unchanged` bytes
    /// are what the file holds there already (the start of the partial block an append
    /// continues). Past the page cache where the storage allows (the disk reads straight from
    /// `blocks`: no copy, no dirty pages for the kernel to throttle and write back later);
    /// otherwise the changed bytes as [`StorageFile::write_at`] does.
    fn write_blocks(&self, blocks: &[u8], offset: u64, unchanged: usize) -> io::Result<()> {
        self.write_at(&blocks[unchanged..], offset + unchanged as u64)
    }
    /// Current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True when the file has no bytes.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) to `len`.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Starts writing `len` bytes at `offset` to the disk without waiting for them (a hint:
    /// only [`StorageFile::sync_data`] makes them durable). Lets the disk work while more is
    /// appended, so the sync that follows has less to wait for.
    fn start_writeback(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Ok(())
    }
    /// Makes the file's data durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes the file's data and metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
}

/// The block of [`StorageFile::write_blocks`]: the alignment `O_DIRECT` needs of offsets,
/// lengths and buffers (the logical block size of any disk is at most this).
pub(crate) const BLOCK: usize = 4096;

/// Makes room in `buf` for `len` bytes at a [`BLOCK`]-aligned address; returns where they
/// start in it.
pub(crate) fn align_in(buf: &mut Vec<u8>, len: usize) -> usize {
    if buf.len() < len + BLOCK {
        buf.resize(len + BLOCK, 0);
    }
    buf.as_ptr().align_offset(BLOCK)
}

/// Token that holds the store's exclusive lock until dropped.
pub type LockGuard = Box<dyn Any + Send + Sync>;

/// A flat directory of named files: the store directory.
pub trait Storage: Send + Sync + Debug {
    /// Opens `name`; with `create`, creates it empty when missing.
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &str, to: &str) -> io::Result<()>;
    /// Removes `name`.
    fn remove(&self, name: &str) -> io::Result<()>;
    /// Names of all files, in no particular order.
    fn list(&self) -> io::Result<Vec<String>>;
    /// Makes creations, renames and removals in the directory durable.
    fn sync_dir(&self) -> io::Result<()>;
    /// Takes the store's exclusive lock; `Ok(None)` when someone else holds it.
    fn try_lock(&self) -> io::Result<Option<LockGuard>>;
    /// Human-readable location, for messages.
    fn describe(&self) -> String;
    /// The size of the device the store is on and what is free on it (`None`: unknown or
    /// unlimited); the space guard of the background maintenance reads it.
    fn space(&self) -> io::Result<Option<Space>> {
        Ok(None)
    }
}

/// A device's size and the bytes still free on it for the store's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    /// Size of the device's filesystem.
    pub total: u64,
    /// Free for an unprivileged writer (without the root reserve).
    pub available: u64,
}

/// Reads exactly `len` bytes at `offset` into `buf` (replacing what it held; its memory is
/// reused, and only what it grows by is zeroed first).
pub(crate) fn read_into<F: StorageFile + ?Sized>(
    file: &F,
    buf: &mut Vec<u8>,
    offset: u64,
    len: usize,
) -> io::Result<()> {
    buf.truncate(len);
    buf.resize(len, 0);
    read_exact_at(file, buf, offset)
}

/// Reads exactly `buf.len()` bytes at `offset`, or fails with `UnexpectedEof`.
pub(crate) fn read_exact_at<F: StorageFile + ?Sized>(file: &F, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.read_at(buf, offset)?;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "short read"));
        }
        buf = &mut buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Reads a whole file.
pub(crate) fn read_all(storage: &dyn Storage, name: &str) -> Result<Vec<u8>> {
    read_whole(storage.open(name, false).map_err(io("open", name))?.as_ref(), name)
}

/// Reads the whole of an open file (`name` for messages).
pub(crate) fn read_whole(f: &dyn StorageFile, name: &str) -> Result<Vec<u8>> {
    let len = f.len().map_err(io("len", name))?;
    let mut buf = vec![0u8; len as usize];
    read_exact_at(f, &mut buf, 0).map_err(io("read_at", name))?;
    Ok(buf)
}

/// Writes `name` whole and atomically: a temporary file, synced, renamed into place, the
/// directory synced.
pub(crate) fn write_atomically(storage: &dyn Storage, name: &str, bytes: &[u8]) -> Result<()> {
    let tmp = format!("{name}.tmp");
    let f = storage.open(&tmp, true).map_err(io("create", &tmp))?;
    let written = f
        .set_len(0)
        .map_err(io("set_len", &tmp))
        .and_then(|_| f.write_at(bytes, 0).map_err(io("write_at", &tmp)))
        .and_then(|_| f.sync_all().map_err(io("sync_all", &tmp)));
    if let Err(e) = written {
        // Give the space back now (a full device is the usual cause). Should the removal
        // fail too, the next open removes the temporary; the first error is the one to report.
        let _ = storage.remove(&tmp);
        return Err(e);
    }
    storage.rename(&tmp, name).map_err(io("rename", &tmp))?;
    storage.sync_dir().map_err(io("sync_dir", "."))
}
