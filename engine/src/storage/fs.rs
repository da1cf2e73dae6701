//! [`Storage`] over a real directory, with `flock`-style locking through `File::try_lock`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IoSlice};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use super::{LockGuard, Space, Storage, StorageFile};

/// The store directory on the real filesystem.
#[derive(Debug, Clone)]
pub struct DirStorage {
    dir: PathBuf,
}

impl DirStorage {
    /// Uses `dir`, creating it (and its parents) when missing. A new store directory is
    /// private (0700) and so are the files in it (0600): the store holds every old version,
    /// so only its owner (and root) may read it.
    pub fn new(dir: impl AsRef<Path>) -> io::Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.exists() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        }
        Ok(Self { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

/// A store file; for block writes past the page cache, the same file (the same inode,
/// through `/proc/self/fd`, whatever its name is now) opened with `O_DIRECT` at its first such
/// use (`None` when the file system refuses it).
#[derive(Debug)]
struct DirFile {
    file: File,
    direct: OnceLock<Option<File>>,
}

impl DirFile {
    fn direct(&self) -> Option<&File> {
        self.direct
            .get_or_init(|| {
                let same = format!("/proc/self/fd/{}", self.file.as_raw_fd());
                OpenOptions::new().read(true).write(true).custom_flags(libc::O_DIRECT).open(same).ok()
            })
            .as_ref()
    }
}

impl StorageFile for DirFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.file.read_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn write_blocks(&self, blocks: &[u8], offset: u64, _unchanged: usize) -> io::Result<()> {
        if let Some(direct) = self.direct() {
            match direct.write_all_at(blocks, offset) {
                // The file system refuses direct writes after all: write through the cache.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {}
                r => return r,
            }
        }
        self.file.write_all_at(blocks, offset)
    }
    fn write_vectored_at(&self, bufs: &[IoSlice<'_>], mut offset: u64) -> io::Result<()> {
        let mut bufs = bufs.to_vec();
        let mut rest = &mut bufs[..];
        while !rest.is_empty() {
            let at = i64::try_from(offset).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
            // The kernel takes at most IOV_MAX (1024 on Linux) slices per call.
            let n = rest.len().min(1024);
            match nix::sys::uio::pwritev(&self.file, &rest[..n], at) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    offset += n as u64;
                    IoSlice::advance_slices(&mut rest, n);
                }
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    // The one unsafe call of the engine: neither nix nor rustix wraps sync_file_range.
    #[allow(unsafe_code)]
    fn start_writeback(&self, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: a plain syscall on a descriptor this struct owns; no memory is passed.
        let r = unsafe { libc::sync_file_range(self.file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE) };
        if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

impl Storage for DirStorage {
    fn open(&self, name: &str, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).mode(0o600).open(self.dir.join(name))?;
        Ok(Arc::new(DirFile { file, direct: OnceLock::new() }))
    }
    fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        fs::rename(self.dir.join(from), self.dir.join(to))
    }
    fn remove(&self, name: &str) -> io::Result<()> {
        fs::remove_file(self.dir.join(name))
    }
    fn list(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for e in fs::read_dir(&self.dir)? {
            let e = e?;
            // Non-UTF-8 names cannot be ours; they are listed lossily so that
            // "is this directory empty" still sees them.
            out.push(e.file_name().to_string_lossy().into_owned());
        }
        Ok(out)
    }
    fn sync_dir(&self) -> io::Result<()> {
        File::open(&self.dir)?.sync_all()
    }
    fn try_lock(&self) -> io::Result<Option<LockGuard>> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(self.dir.join("LOCK"))?;
        match f.try_lock() {
            Ok(()) => Ok(Some(Box::new(f))),
            Err(fs::TryLockError::WouldBlock) => Ok(None),
            Err(fs::TryLockError::Error(e)) => Err(e),
        }
    }
    fn describe(&self) -> String {
        self.dir.display().to_string()
    }
    fn space(&self) -> io::Result<Option<Space>> {
        let v = rustix::fs::statvfs(&self.dir)?;
        Ok(Some(Space { total: v.f_blocks * v.f_frsize, available: v.f_bavail * v.f_frsize }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::BLOCK;

    #[test]
    fn writeback_starts_on_written_ranges_and_rejects_impossible_ones() {
        let dir = tempfile::tempdir().unwrap();
        let st = DirStorage::new(dir.path()).unwrap();
        let f = st.open("seg-0000000000000001.log", true).unwrap();
        f.write_at(&vec![7u8; 1 << 20], 0).unwrap();
        f.start_writeback(0, 1 << 20).unwrap();
        f.start_writeback(4096, 8192).unwrap();
        let e = f.start_writeback(u64::MAX, 1).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{e}");
        f.sync_data().unwrap();
    }

    /// A vectored write lands its slices one after the other, beyond the kernel's limit of
    /// slices per call too.
    #[test]
    fn vectored_writes_land_every_slice_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let st = DirStorage::new(dir.path()).unwrap();
        let f = st.open("seg-0000000000000001.log", true).unwrap();
        let pieces: Vec<Vec<u8>> = (0..3000u32).map(|i| vec![i as u8; (i % 7) as usize]).collect();
        let slices: Vec<IoSlice<'_>> = pieces.iter().map(|p| IoSlice::new(p)).collect();
        f.write_vectored_at(&slices, 5).unwrap();
        let want: Vec<u8> = pieces.concat();
        let mut got = vec![0u8; want.len()];
        super::super::read_exact_at(f.as_ref(), &mut got, 5).unwrap();
        assert_eq!(got, want);
        assert_eq!(f.len().unwrap(), 5 + want.len() as u64);
    }

    /// Block writes (past the page cache on this file system) land whole blocks, and what
    /// buffered reads and writes see before and after agrees with them.
    #[test]
    fn block_writes_replace_whole_blocks_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let st = DirStorage::new(dir.path()).unwrap();
        let f = st.open("seg-0000000000000001.log", true).unwrap();
        f.write_at(&[1u8; 5000], 0).unwrap();
        let mut buf = Vec::new();
        let at = super::super::align_in(&mut buf, 3 * BLOCK);
        let blocks = &mut buf[at..at + 3 * BLOCK];
        blocks[..5000 - BLOCK].fill(1);
        blocks[5000 - BLOCK..].fill(2);
        f.write_blocks(blocks, BLOCK as u64, 5000 - BLOCK).unwrap();
        assert_eq!(f.len().unwrap(), 4 * BLOCK as u64);
        let mut got = vec![0u8; 4 * BLOCK];
        super::super::read_exact_at(f.as_ref(), &mut got, 0).unwrap();
        assert!(got[..5000].iter().all(|b| *b == 1) && got[5000..].iter().all(|b| *b == 2));
        f.write_at(b"xyz", 4 * BLOCK as u64 - 3).unwrap();
        let mut end = [0u8; 4];
        super::super::read_exact_at(f.as_ref(), &mut end, 4 * BLOCK as u64 - 4).unwrap();
        assert_eq!(&end, b"\x02xyz");
    }
}
