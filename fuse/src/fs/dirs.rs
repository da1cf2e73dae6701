//! Directory handles: entries captured at opendir (and again at a rewind), so offsets stay
//! stable.

use std::sync::atomic::Ordering;

use cowfs_engine::{Dirent, FileKind, InodeId};

use super::{CowFs, DirEntry, DirHandle};
use crate::error::{FsError, Result, errno};
use crate::virt::{VNode, is_virtual};

impl CowFs {
    /// A directory's entries now, and its parent.
    fn listing(&self, ino: InodeId) -> Result<DirHandle> {
        if is_virtual(ino) {
            let entries =
                self.virt.ventries(ino)?.into_iter().map(|(n, child, kind)| (n, Dirent { child, kind })).collect();
            let parent = if self.virt.vnode(ino)? == VNode::Top { InodeId::ROOT } else { ino };
            return Ok(DirHandle { ino, entries, parent, read: false });
        }
        let entries: Vec<(Vec<u8>, Dirent)> = self.engine.entries(ino)?.into_iter().collect();
        let parent = self.engine.parent(ino).unwrap_or(ino);
        Ok(DirHandle { ino, entries, parent, read: false })
    }

    /// Opens a directory: its entries are captured now, so offsets stay stable.
    pub fn opendir(&self, ino: InodeId) -> Result<u64> {
        let d = self.listing(ino)?;
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, d);
        Ok(fh)
    }

    /// Entries from `offset` on (0 = start), with `.` and `..`. Reading from the start again
    /// (`rewinddir`, a seek to 0) captures the entries anew: POSIX wants names added since
    /// the `opendir` to be seen after a rewind. Other offsets read the captured entries, so
    /// they stay stable while the directory changes.
    pub fn readdir(&self, ino: InodeId, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let (read, parent) =
            self.dirs.lock().get(&fh).map(|d| (d.read, d.parent)).ok_or(FsError::Errno(errno::EBADF))?;
        let fresh = match offset == 0 && read {
            false => None,
            true => match self.listing(ino) {
                Ok(d) => Some(d),
                // Removed since (so empty when it was): only `.` and `..`.
                Err(FsError::Engine(cowfs_engine::Error::NotFound(_))) => {
                    Some(DirHandle { ino, entries: Vec::new(), parent, read: false })
                }
                Err(e) => return Err(e),
            },
        };
        let d = {
            let mut dirs = self.dirs.lock();
            let d = dirs.get_mut(&fh).ok_or(FsError::Errno(errno::EBADF))?;
            if let Some(fresh) = fresh {
                *d = fresh;
            }
            d.read = true;
            d.clone()
        };
        let mut out = Vec::new();
        let all = [(b".".to_vec(), ino, FileKind::Directory), (b"..".to_vec(), d.parent, FileKind::Directory)]
            .into_iter()
            .chain(d.entries.into_iter().map(|(n, e)| (n, e.child, e.kind)));
        for (i, (name, child, kind)) in all.enumerate().skip(offset as usize) {
            out.push((i as u64 + 1, child, kind, name));
        }
        Ok(out)
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
