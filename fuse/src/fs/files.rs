//! Open regular files: handles, reads and buffered writes, the commit of a version at a
//! save (flush, fsync, release), fallocate and copy_file_range, and unmounting.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use cowfs_engine::{FileKind, FileWriter, Inode, InodeId, Timestamp};
use parking_lot::Mutex;

use super::{Caller, CowFs, Handle, OpenFile};
use crate::error::{FsError, Result, errno};
use crate::virt::is_virtual;

impl CowFs {
    /// Opens a regular file; returns the handle. `truncate`: O_TRUNC.
    pub fn open(&self, ino: InodeId, write: bool, truncate: bool, append: bool) -> Result<u64> {
        if is_virtual(ino) {
            if write {
                return Err(FsError::Errno(errno::EROFS));
            }
            let f = self.virt.vfile(ino)?;
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.vfiles.lock().insert(fh, f);
            return Ok(fh);
        }
        let i = self.engine.getattr(ino)?;
        if i.kind == FileKind::Directory {
            return Err(FsError::Errno(errno::EISDIR));
        }
        if i.kind == FileKind::Regular {
            // The handle count moves under the map lock, in the same step that finds or
            // registers the writer, so a racing last close cannot remove it in between.
            let registered = self.files.lock().get_mut(&ino).map(|f| f.handles += 1).is_some();
            if !registered {
                // Built outside the lock (it reads the file's tree); a racing open may win,
                // and then its writer is used.
                let w = Arc::new(Mutex::new(self.engine.open_file(ino)?));
                let mut files = self.files.lock();
                files.entry(ino).or_insert(OpenFile { writer: w, handles: 0, mtime: None, ctime: None }).handles += 1;
            }
            if write && truncate {
                let truncated = self.with_open_writer(ino, |w| {
                    if w.size() == 0 {
                        return Ok(false);
                    }
                    w.truncate(0)?;
                    Ok(true)
                })?;
                if truncated == Some(true) {
                    self.touch_open(ino);
                }
            }
        }
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.handles.lock().insert(fh, Handle { ino, wrote: false, saved: write && truncate, append, writer_pid: 0 });
        Ok(fh)
    }

    /// Creates and opens a regular file.
    pub fn create(&self, c: Caller, parent: InodeId, name: &[u8], mode: u32, append: bool) -> Result<(Inode, u64)> {
        let i = self.mknod(c, parent, name, FileKind::Regular, mode, 0)?;
        let fh = self.open(i.ino, true, false, append)?;
        // Creating is a save: at close the (maybe empty) new content becomes a version unless
        // it equals the newest one of the lineage (a re-created path continues its history).
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.saved = true;
        }
        Ok((i, fh))
    }

    fn writer_of(&self, fh: u64) -> Result<(Handle, Arc<Mutex<FileWriter>>)> {
        let h = *self.handles.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        let w = self.files.lock().get(&h.ino).map(|f| f.writer.clone());
        // Handles on fifos and devices have no content here.
        let w = w.ok_or(FsError::Errno(errno::EINVAL))?;
        Ok((h, w))
    }

    /// Reads through the handle (buffered writes included).
    pub fn read(&self, fh: u64, offset: u64, size: usize) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_into(fh, offset, size, &mut out)?;
        Ok(out)
    }

    /// [`CowFs::read`] into `out` (replacing what it held; its capacity is reused).
    pub fn read_into(&self, fh: u64, offset: u64, size: usize, out: &mut Vec<u8>) -> Result<()> {
        let virtual_file = self.vfiles.lock().get(&fh).copied();
        if let Some(f) = virtual_file {
            return Ok(self.engine.read_content_into(f.root, f.size, offset, size, out)?);
        }
        let (h, w) = self.writer_of(fh)?;
        let mut w = w.lock();
        if w.is_dirty() {
            *out = w.read(offset, size)?;
            Ok(())
        } else {
            drop(w);
            Ok(self.engine.read_into(h.ino, offset, size, out)?)
        }
    }

    /// Writes through the handle; returns the bytes written.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], pid: u32) -> Result<usize> {
        let (h, w) = self.writer_of(fh)?;
        {
            let mut w = w.lock();
            let at = if h.append { w.size() } else { offset };
            w.write(at, data)?;
        }
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.wrote = true;
            h.writer_pid = pid;
        }
        self.touch_open(h.ino);
        Ok(data.len())
    }

    /// Runs `f` on the open file's writer, with the writer locked and still registered
    /// (a racing last close removes it while holding the same lock). `None`: not open.
    pub(super) fn with_open_writer<R>(
        &self,
        ino: InodeId,
        f: impl FnOnce(&mut FileWriter) -> Result<R>,
    ) -> Result<Option<R>> {
        loop {
            let Some(w) = self.files.lock().get(&ino).map(|f| f.writer.clone()) else { return Ok(None) };
            let mut guard = w.lock();
            if self.files.lock().get(&ino).is_some_and(|f| Arc::ptr_eq(&f.writer, &w)) {
                return f(&mut guard).map(Some);
            }
        }
    }

    /// Records that an open file changed now (its mtime, reported until the commit).
    pub(super) fn touch_open(&self, ino: InodeId) {
        if let Some(f) = self.files.lock().get_mut(&ino) {
            let now = Timestamp::now();
            f.mtime = Some(now);
            f.ctime = Some(now);
        }
    }

    /// Commits the open file's buffered content as a version, if it changed; with
    /// `durable`, everything is durable when this returns.
    /// `saved`: the handle asking wrote (or created the file), so its content is a save even
    /// when nothing is buffered.
    pub(super) fn commit(&self, ino: InodeId, durable: bool, saved: bool) -> Result<()> {
        let first = self.needs_first_version(ino);
        let mtime = self.files.lock().get(&ino).and_then(|f| f.mtime);
        let committed = self.with_open_writer(ino, |w| {
            if w.is_dirty() || first || saved {
                w.commit_with_mtime(durable, mtime)?;
                Ok(true)
            } else {
                Ok(false)
            }
        })?;
        if durable && committed != Some(true) {
            self.engine.sync()?;
        }
        Ok(())
    }

    /// A new file gets its first version (its initial, maybe empty, content) at its first
    /// close even without writes: `touch f` makes one version.
    fn needs_first_version(&self, ino: InodeId) -> bool {
        self.engine.getattr(ino).ok().and_then(|i| i.lineage).is_some_and(|l| self.engine.newest_version(l).is_none())
    }

    /// fsync / fdatasync: the file's content is a durable version when this returns.
    pub fn fsync(&self, fh: u64) -> Result<()> {
        if self.vfiles.lock().contains_key(&fh) {
            return Ok(());
        }
        let h = *self.handles.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        if !self.files.lock().contains_key(&h.ino) {
            return Ok(self.engine.sync()?);
        }
        self.commit(h.ino, true, h.wrote || h.saved)?;
        // Committed, as at a flush: nothing of this handle is left for its close or release.
        self.committed(fh);
        Ok(())
    }

    /// flush (every close(2) of a descriptor, synchronously): a handle that wrote data commits
    /// its version now, so the version exists when close returns (RELEASE comes later,
    /// asynchronously). A flush of a handle that wrote nothing does nothing — not even for a
    /// create or O_TRUNC, which release commits: a shell's `echo v > f` closes its first
    /// descriptor before writing through a duplicate, and must make one version, not two.
    /// Only the close by the process that wrote (`pid`) commits (see `Handle::writer_pid`).
    pub fn flush(&self, fh: u64, pid: u32) -> Result<()> {
        if self.vfiles.lock().contains_key(&fh) {
            return Ok(());
        }
        let h = *self.handles.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        if !h.wrote || h.writer_pid != pid || !self.file_open(h.ino) {
            return Ok(());
        }
        self.commit(h.ino, false, true)?;
        self.committed(fh);
        Ok(())
    }

    /// Handle `fh`'s writes and its save (its create or O_TRUNC) are in a committed version:
    /// its release, which may come after another handle truncated the file again, has
    /// nothing left to commit.
    fn committed(&self, fh: u64) {
        if let Some(h) = self.handles.lock().get_mut(&fh) {
            h.wrote = false;
            h.saved = false;
        }
    }

    /// fsyncdir and sync of anything else: everything acknowledged is durable.
    pub fn sync(&self) -> Result<()> {
        Ok(self.engine.sync()?)
    }

    /// Closes a handle: a handle that wrote commits a version (a new file's first version
    /// is committed by the first close even without writes); the last close of an unlinked
    /// file frees it.
    pub fn release(&self, fh: u64) -> Result<()> {
        if self.vfiles.lock().remove(&fh).is_some() {
            return Ok(());
        }
        let Some(h) = self.handles.lock().remove(&fh) else {
            return Err(FsError::Errno(errno::EBADF));
        };
        let mut result = Ok(());
        let open = self.files.lock().get(&h.ino).map(|f| f.writer.clone());
        if let Some(w) = open {
            // Lock order: writer, then the files map. The entry goes while the writer is
            // held, so a concurrent truncate either sees it and commits through it first,
            // or sees it gone.
            let mut guard = w.lock();
            let first = self.needs_first_version(h.ino);
            let (last, mtime) = {
                let mut files = self.files.lock();
                let f = files.get_mut(&h.ino).expect("a handle keeps its file open");
                f.handles -= 1;
                (f.handles == 0, f.mtime)
            };
            // A handle with an uncommitted save commits; so does the last close when changes
            // were made without a writing handle (a truncate through setattr), or when the
            // file has no version yet (made by mknod). Not another handle's close while the
            // creator may still be writing: a reader's close would cut a partial version.
            if h.wrote || h.saved || (last && (first || guard.is_dirty())) {
                result = guard.commit_with_mtime(false, mtime).map(|_| ()).map_err(FsError::from);
            }
            if last {
                // An open may have taken the file again since the count reached zero.
                let mut files = self.files.lock();
                if files.get(&h.ino).is_some_and(|f| f.handles == 0) {
                    files.remove(&h.ino);
                }
            }
        }
        if let Ok(i) = self.engine.getattr(h.ino)
            && i.nlink == 0
            && !self.file_open(h.ino)
        {
            result = result.and(self.engine.free(h.ino).map_err(FsError::from));
        }
        result
    }

    /// fallocate: mode 0 extends the size; KEEP_SIZE alone does nothing; PUNCH_HOLE|KEEP_SIZE
    /// makes a hole. Mode 0 and KEEP_SIZE promise the range's space: with fewer than `len`
    /// bytes `available()` on the store's disk (asked only for them) they are ENOSPC (a
    /// copy-on-write store writes new space for every later write into the range, allocated
    /// before or not).
    pub fn fallocate(
        &self,
        fh: u64,
        offset: u64,
        len: u64,
        mode: i32,
        available: impl FnOnce() -> Result<u64>,
    ) -> Result<()> {
        const KEEP_SIZE: i32 = 1;
        const PUNCH_HOLE: i32 = 2;
        let (h, w) = self.writer_of(fh)?;
        let end = offset.checked_add(len).ok_or(FsError::Errno(errno::EFBIG))?;
        if (mode == 0 || mode == KEEP_SIZE) && len > available()? {
            return Err(FsError::Errno(errno::ENOSPC));
        }
        {
            let mut w = w.lock();
            match mode {
                0 => {
                    if end > w.size() {
                        w.truncate(end)?;
                    }
                }
                KEEP_SIZE => return Ok(()),
                m if m == PUNCH_HOLE | KEEP_SIZE => w.punch_hole(offset, len)?,
                _ => return Err(FsError::Errno(errno::EOPNOTSUPP)),
            }
        }
        if let Some(hh) = self.handles.lock().get_mut(&fh) {
            hh.wrote = true;
        }
        self.touch_open(h.ino);
        Ok(())
    }

    /// copy_file_range inside the mount: the destination takes the source's chunks, so the
    /// copy costs metadata only. Returns the bytes copied (0 at or past the source's end).
    pub fn copy_file_range(&self, fh_in: u64, off_in: u64, fh_out: u64, off_out: u64, len: u64) -> Result<u64> {
        if self.vfiles.lock().contains_key(&fh_in) {
            // Out of `.cowfs/`: no chunks to share here; the caller copies by read and write.
            return Err(FsError::Errno(errno::EXDEV));
        }
        let (_, src) = self.writer_of(fh_in)?;
        let (out, dst) = self.writer_of(fh_out)?;
        let (n, extents) = {
            let mut s = src.lock();
            let size = s.size();
            if off_in >= size || len == 0 {
                return Ok(0);
            }
            let n = len.min(size - off_in);
            (n, s.extents_in(off_in, n)?)
        };
        dst.lock().splice(off_out, extents)?;
        if let Some(h) = self.handles.lock().get_mut(&fh_out) {
            h.wrote = true;
        }
        self.touch_open(out.ino);
        Ok(n)
    }

    /// Commits every open file and stops the engine (unmount).
    pub fn shutdown(&self) -> Result<()> {
        let open: Vec<InodeId> = self.files.lock().keys().copied().collect();
        let mut result = Ok(());
        for ino in open {
            result = result.and(self.commit(ino, false, false));
        }
        self.files.lock().clear();
        result.and(self.engine.clone().close().map_err(FsError::from))
    }
}
