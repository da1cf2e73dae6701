//! Directory handles: entries captured at opendir (and again at a rewind), so offsets stay
//! stable.

use std::sync::atomic::Ordering;

use cowfs_engine::{Dirent, FileKind, InodeId};

use super::{CowFs, DirEntry, DirHandle, Entries};
use crate::error::{FsError, Result, errno};
use crate::virt::{VNode, is_virtual};

impl CowFs {
    /// A directory's entries now, and its parent.
    fn listing(&self, ino: InodeId) -> Result<(Entries, InodeId)> {
        if is_virtual(ino) {
            let entries =
                self.virt.ventries(ino)?.into_iter().map(|(n, child, kind)| (n, Dirent { child, kind })).collect();
            let parent = if self.virt.vnode(ino)? == VNode::Top { InodeId::ROOT } else { ino };
            return Ok((entries, parent));
        }
        let entries = self.engine.entries(ino)?.into_iter().collect();
        Ok((entries, self.engine.parent(ino).unwrap_or(ino)))
    }

    /// Opens a directory: its entries are captured now, so offsets stay stable.
    pub fn opendir(&self, ino: InodeId) -> Result<u64> {
        let (entries, parent) = self.listing(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, DirHandle { ino, entries, parent, read: false });
        Ok(fh)
    }

    /// Entries from `offset` on (0 = start), with `.` and `..`. Reading from the start again
    /// (`rewinddir`, a seek to 0) captures the entries anew: POSIX wants names added since
    /// the `opendir` to be seen after a rewind. Other offsets read the captured entries, so
    /// they stay stable while the directory changes.
    pub fn readdir(&self, ino: InodeId, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let rewind = offset == 0 && self.dirs.lock().get(&fh).ok_or(FsError::Errno(errno::EBADF))?.read;
        let fresh = match rewind.then(|| self.listing(ino)) {
            None => None,
            Some(Ok((entries, parent))) => Some((entries, Some(parent))),
            // Removed since (so empty when it was): only `.` and `..`.
            Some(Err(FsError::Engine(cowfs_engine::Error::NotFound(_)))) => Some((Vec::new(), None)),
            Some(Err(e)) => return Err(e),
        };
        let mut dirs = self.dirs.lock();
        let d = dirs.get_mut(&fh).ok_or(FsError::Errno(errno::EBADF))?;
        if let Some((entries, parent)) = fresh {
            d.entries = entries;
            d.parent = parent.unwrap_or(d.parent);
        }
        d.read = true;
        // Only the names sent are copied.
        let dots = [(&b"."[..], ino, FileKind::Directory), (&b".."[..], d.parent, FileKind::Directory)];
        let all = dots.into_iter().chain(d.entries.iter().map(|(n, e)| (n.as_slice(), e.child, e.kind)));
        let from = all.enumerate().skip(offset as usize);
        Ok(from.map(|(i, (name, child, kind))| (i as u64 + 1, child, kind, name.to_vec())).collect())
    }

    /// Closes a directory handle; the last close of a directory removed while open frees it.
    pub fn releasedir(&self, fh: u64) -> Result<()> {
        let Some(d) = self.dirs.lock().remove(&fh) else { return Err(FsError::Errno(errno::EBADF)) };
        if is_virtual(d.ino) || self.is_open(d.ino) {
            return Ok(());
        }
        let freed = match self.engine.getattr(d.ino) {
            Ok(i) if i.nlink == 0 => self.engine.free(d.ino),
            Ok(_) => Ok(()),
            Err(e) => Err(e),
        };
        match freed {
            // Freed already (another handle's close got there first).
            Err(cowfs_engine::Error::NotFound(_)) => Ok(()),
            r => Ok(r?),
        }
    }
}
