//! FUSE passthrough of untouched lower files (kernel 6.9 or newer): an open gets the lower
//! file as its backing file, and the kernel reads it without asking the daemon.
//!
//! The kernel's rules shape this: every open of an inode that has a passthrough open must be
//! a passthrough open of the same backing file (it fails any other with EIO), so the backing
//! id is kept per inode while any of its opens is open, and later read opens share it. A
//! write open (possible only after a remount to read-write, since [`CowFs::passthrough_file`]
//! starts passthrough only on a read-only mount) or a read open of content that changed
//! meanwhile gets EBUSY instead, which names the cause, until the passthrough opens close. Once the kernel or the daemon's privileges refuse a backing file, opens
//! fall back to reads through the daemon.

use std::collections::HashMap;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use cowfs_engine::{InodeId, LowerFile};
use fuser::{BackingId, ReplyOpen};
use parking_lot::Mutex;

use crate::errno;
use crate::error::{FsError, Result};
use crate::fs::CowFs;

/// An inode's backing file while it has passthrough opens.
#[derive(Debug)]
struct Backing {
    id: Arc<BackingId>,
    file: File,
    lower: Arc<LowerFile>,
    opens: usize,
}

/// The passthrough opens of a mount.
#[derive(Debug, Default)]
pub struct Passthrough {
    /// The kernel agreed to passthrough at INIT, and no backing file was refused since.
    enabled: AtomicBool,
    inodes: Mutex<HashMap<InodeId, Backing>>,
    /// The handles opened through it, and their inode.
    handles: Mutex<HashMap<u64, InodeId>>,
}

impl Passthrough {
    /// The kernel agreed to passthrough (INIT).
    pub fn enable(&self) {
        self.enabled.store(true, Ordering::Relaxed);
    }

    /// Before an open of `ino` (`write`: for writing): the backing id to open it through, or
    /// None for an ordinary open; EBUSY when an ordinary open would meet passthrough opens.
    /// A `Some` is counted: [`Passthrough::opened`] or [`Passthrough::abandon`] must follow.
    pub fn acquire(&self, fs: &CowFs, ino: InodeId, write: bool, reply: &ReplyOpen) -> Result<Option<Arc<BackingId>>> {
        let mut inodes = self.inodes.lock();
        if let Some(b) = inodes.get_mut(&ino) {
            // Another open must see the same bytes: still the untouched lower file (a changed
            // one fails as any read of it would).
            if write || fs.engine().whole_lower_file(ino)?.is_none() {
                return Err(FsError::Errno(errno::EBUSY));
            }
            b.opens += 1;
            return Ok(Some(b.id.clone()));
        }
        if write || !self.enabled.load(Ordering::Relaxed) {
            return Ok(None);
        }
        // A lower file that cannot be used so is read through the daemon, which reports why.
        let Ok(Some((file, lower))) = fs.passthrough_file(ino) else { return Ok(None) };
        match reply.open_backing(&file) {
            Ok(id) => {
                let id = Arc::new(id);
                inodes.insert(ino, Backing { id: id.clone(), file, lower, opens: 1 });
                Ok(Some(id))
            }
            Err(e) => {
                // No CAP_SYS_ADMIN, a lower tree on a stacked file system, an old kernel.
                self.enabled.store(false, Ordering::Relaxed);
                eprintln!("cowfs: the kernel refused a backing file ({e}): lower files are read through the daemon");
                Ok(None)
            }
        }
    }

    /// The open counted by [`Passthrough::acquire`] is handle `fh`.
    pub fn opened(&self, fh: u64, ino: InodeId) {
        self.handles.lock().insert(fh, ino);
    }

    /// The open counted by [`Passthrough::acquire`] failed before it got a handle.
    pub fn abandon(&self, fs: &CowFs, ino: InodeId) {
        self.drop_open(fs, ino);
    }

    /// Handle `fh` was released: when it was the inode's last passthrough open, its backing
    /// file goes. A lower file that changed while the kernel read it directly is reported
    /// (its readers may have read the changed bytes: the daemon checks only at open).
    pub fn release(&self, fs: &CowFs, fh: u64) {
        let ino = self.handles.lock().remove(&fh);
        if let Some(ino) = ino {
            self.drop_open(fs, ino);
        }
    }

    fn drop_open(&self, fs: &CowFs, ino: InodeId) {
        let mut inodes = self.inodes.lock();
        let Some(b) = inodes.get_mut(&ino) else { return };
        b.opens -= 1;
        if b.opens == 0
            && let Some(b) = inodes.remove(&ino)
            && let Err(e) = fs.engine().lower_file_unchanged(&b.lower, &b.file)
        {
            eprintln!("cowfs: inode {}: {e}; it was read directly (passthrough), unchecked", ino.0);
        }
    }
}
