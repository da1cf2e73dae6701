//! Directory handles: entries captured at opendir, so offsets stay stable.

use std::sync::atomic::Ordering;

use cowfs_engine::{Dirent, FileKind, InodeId};

use super::{CowFs, DirEntry, DirHandle};
use crate::error::{FsError, Result, errno};
use crate::virt::{VNode, is_virtual};

impl CowFs {
    /// Opens a directory: its entries are captured now, so offsets stay stable.
    pub fn opendir(&self, ino: InodeId) -> Result<u64> {
        if is_virtual(ino) {
            let entries =
                self.virt.ventries(ino)?.into_iter().map(|(n, child, kind)| (n, Dirent { child, kind })).collect();
            let parent = if self.virt.vnode(ino)? == VNode::Top { InodeId::ROOT } else { ino };
            let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
            self.dirs.lock().insert(fh, DirHandle { entries, parent });
            return Ok(fh);
        }
        let entries: Vec<(Vec<u8>, Dirent)> = self.engine.entries(ino)?.into_iter().collect();
        let parent = self.engine.parent(ino).unwrap_or(ino);
        let fh = self.next_fh.fetch_add(1, Ordering::Relaxed);
        self.dirs.lock().insert(fh, DirHandle { entries, parent });
        Ok(fh)
    }

    /// Entries from `offset` on (0 = start), with `.` and `..`.
    pub fn readdir(&self, ino: InodeId, fh: u64, offset: u64) -> Result<Vec<DirEntry>> {
        let d = self.dirs.lock().get(&fh).cloned().ok_or(FsError::Errno(errno::EBADF))?;
        let mut out = Vec::new();
        let all = [(b".".to_vec(), ino, FileKind::Directory), (b"..".to_vec(), d.parent, FileKind::Directory)]
            .into_iter()
            .chain(d.entries.into_iter().map(|(n, e)| (n, e.child, e.kind)));
        for (i, (name, child, kind)) in all.enumerate().skip(offset as usize) {
            out.push((i as u64 + 1, child, kind, name));
        }
        Ok(out)
    }

    /// Closes a directory handle.
    pub fn releasedir(&self, fh: u64) {
        self.dirs.lock().remove(&fh);
    }
}
