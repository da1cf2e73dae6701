//! The mount flags the daemon follows, which a remount may change: the owner of the [`CowFs`]
//! gives a source of them ([`CowFs::with_mount_flags`]).
//!
//! Access times. The kernel never updates a FUSE inode's atime itself (its inodes are
//! `S_NOATIME`), so the daemon records reads: when a file is opened for reading (reads the
//! page cache serves never reach the daemon, and a file's cache outlives its opens), when a
//! read reaches the daemon (strictatime only), and when a directory is listed from its start.
//!
//! Read-only. On a read-only mount an untouched lower file may be read by the kernel itself
//! (FUSE passthrough, [`CowFs::passthrough_file`]).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use std::sync::Arc;

use cowfs_engine::{Inode, InodeId, LowerFile, Timestamp};

use super::CowFs;
use crate::virt::is_virtual;

/// When reads change a file's access time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtimeRule {
    /// Never (`noatime`, a read-only mount, or no source given).
    #[default]
    Never,
    /// `relatime`: when the access time is not after the modification or change time, or is
    /// a day old.
    Relative,
    /// `strictatime`: at every read the daemon sees.
    Strict,
}

impl AtimeRule {
    /// Whether a read at `now` of a file with attributes `i` records `now` as its atime.
    pub fn wants(self, i: &Inode, now: Timestamp) -> bool {
        match self {
            AtimeRule::Never => false,
            AtimeRule::Strict => true,
            AtimeRule::Relative => i.atime <= i.mtime || i.atime <= i.ctime || now.secs - i.atime.secs >= 24 * 3600,
        }
    }
}

/// The mount's flags that the daemon follows: its access-time flags, and whether it is
/// read-only (which lets reads of untouched lower files skip the daemon: FUSE passthrough).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountFlags {
    /// For files (and directories, unless `nodiratime`).
    pub rule: AtimeRule,
    /// `nodiratime`: listing a directory leaves its atime.
    pub nodiratime: bool,
    /// `ro`.
    pub read_only: bool,
}

/// Where the flags come from (e.g. the mount table); asked at most once a second.
pub type FlagSource = Box<dyn Fn() -> MountFlags + Send + Sync>;

/// The flags as the source last gave them, so that a read pays two atomic loads: `packed` is
/// 0 until the first answer, then 1 + rule (0 never, 1 relative, 2 strict) + 4 × nodiratime
/// + 8 × read_only.
pub(super) struct Flags {
    source: FlagSource,
    packed: AtomicU8,
    /// Milliseconds after `start` of the last answer.
    asked_ms: AtomicU64,
    start: Instant,
}

impl Flags {
    /// How long an answer of the source is used.
    const FRESH_MS: u64 = 1000;

    fn current(&self) -> MountFlags {
        let now = self.start.elapsed().as_millis() as u64;
        let packed = self.packed.load(Ordering::Relaxed);
        if packed != 0 && now.saturating_sub(self.asked_ms.load(Ordering::Relaxed)) < Self::FRESH_MS {
            let rule = match (packed - 1) & 3 {
                0 => AtimeRule::Never,
                1 => AtimeRule::Relative,
                _ => AtimeRule::Strict,
            };
            return MountFlags { rule, nodiratime: (packed - 1) & 4 != 0, read_only: (packed - 1) & 8 != 0 };
        }
        // Threads that find it stale together may all ask: the answers agree.
        let a = (self.source)();
        let rule = match a.rule {
            AtimeRule::Never => 0,
            AtimeRule::Relative => 1,
            AtimeRule::Strict => 2,
        };
        self.packed.store(1 + rule + 4 * u8::from(a.nodiratime) + 8 * u8::from(a.read_only), Ordering::Relaxed);
        self.asked_ms.store(now, Ordering::Relaxed);
        a
    }
}

/// How a read reached the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// A file opened for reading.
    Open,
    /// A read request (after the page cache missed).
    Read,
    /// A directory listed from its start.
    List,
}

impl CowFs {
    /// Follows the mount flags `source` gives: access times, read-only (without a source no
    /// access times are recorded and the mount is not taken as read-only).
    pub fn with_mount_flags(mut self, source: FlagSource) -> Self {
        self.flags =
            Some(Flags { source, packed: AtomicU8::new(0), asked_ms: AtomicU64::new(0), start: Instant::now() });
        self
    }

    /// `ino` was read (`how`): records the access time when the mount's flags say so. A
    /// failure to record it fails nothing (as on any filesystem): it is returned for the log.
    pub fn accessed(&self, ino: InodeId, how: Access) -> crate::error::Result<()> {
        let Some(flags) = &self.flags else { return Ok(()) };
        if is_virtual(ino) {
            return Ok(());
        }
        let a = flags.current();
        let applies = match how {
            Access::Open => a.rule != AtimeRule::Never,
            Access::Read => a.rule == AtimeRule::Strict,
            Access::List => !a.nodiratime,
        };
        if !applies {
            return Ok(());
        }
        let now = Timestamp::now();
        if a.rule.wants(&self.getattr(ino)?, now) {
            self.engine.set_atime(ino, now)?;
        }
        Ok(())
    }

    /// Whether the mount is read-only now (by the source's last answer, at most a second old).
    pub fn read_only(&self) -> bool {
        self.flags.as_ref().is_some_and(|f| f.current().read_only)
    }

    /// For a read-only open of `ino` on a read-only mount: the lower file that is all of its
    /// content, untouched, opened and checked (see `Engine::whole_lower_file`), for the
    /// kernel to read directly (FUSE passthrough). None when it must be read through the
    /// daemon: a writable mount (a write open could follow, and the kernel refuses other opens
    /// of an inode while a passthrough open exists), a virtual file, stored bytes.
    pub fn passthrough_file(&self, ino: InodeId) -> crate::error::Result<Option<(std::fs::File, Arc<LowerFile>)>> {
        if is_virtual(ino) || !self.read_only() {
            return Ok(None);
        }
        Ok(self.engine.whole_lower_file(ino)?)
    }
}
