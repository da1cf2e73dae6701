//! Access times. The kernel never updates a FUSE inode's atime itself (its inodes are
//! `S_NOATIME`), so the daemon records reads: when a file is opened for reading (reads the
//! page cache serves never reach the daemon, and a file's cache outlives its opens), when a
//! read reaches the daemon (strictatime only), and when a directory is listed from its start.
//! Whether and when follows the mount's flags, which a remount may change: the owner of the
//! [`CowFs`] gives a source of them ([`CowFs::with_access_times`]).

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Instant;

use cowfs_engine::{Inode, InodeId, Timestamp};

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

/// The mount's access-time flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AccessTimes {
    /// For files (and directories, unless `nodiratime`).
    pub rule: AtimeRule,
    /// `nodiratime`: listing a directory leaves its atime.
    pub nodiratime: bool,
}

/// Where the flags come from (e.g. the mount table); asked at most once a second.
pub type AccessSource = Box<dyn Fn() -> AccessTimes + Send + Sync>;

/// The flags as the source last gave them, so that a read pays two atomic loads: `packed` is
/// 0 until the first answer, then 1 + rule (0 never, 1 relative, 2 strict) + 4 × nodiratime.
pub(super) struct Flags {
    source: AccessSource,
    packed: AtomicU8,
    /// Milliseconds after `start` of the last answer.
    asked_ms: AtomicU64,
    start: Instant,
}

impl Flags {
    /// How long an answer of the source is used.
    const FRESH_MS: u64 = 1000;

    fn current(&self) -> AccessTimes {
        let now = self.start.elapsed().as_millis() as u64;
        let packed = self.packed.load(Ordering::Relaxed);
        if packed != 0 && now.saturating_sub(self.asked_ms.load(Ordering::Relaxed)) < Self::FRESH_MS {
            let rule = match (packed - 1) & 3 {
                0 => AtimeRule::Never,
                1 => AtimeRule::Relative,
                _ => AtimeRule::Strict,
            };
            return AccessTimes { rule, nodiratime: (packed - 1) & 4 != 0 };
        }
        // Threads that find it stale together may all ask: the answers agree.
        let a = (self.source)();
        let rule = match a.rule {
            AtimeRule::Never => 0,
            AtimeRule::Relative => 1,
            AtimeRule::Strict => 2,
        };
        self.packed.store(1 + rule + 4 * u8::from(a.nodiratime), Ordering::Relaxed);
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
    /// Records reads' access times by the flags `source` gives (none are recorded without).
    pub fn with_access_times(mut self, source: AccessSource) -> Self {
        self.access =
            Some(Flags { source, packed: AtomicU8::new(0), asked_ms: AtomicU64::new(0), start: Instant::now() });
        self
    }

    /// `ino` was read (`how`): records the access time when the mount's flags say so. A
    /// failure to record it fails nothing (as on any filesystem): it is returned for the log.
    pub fn accessed(&self, ino: InodeId, how: Access) -> crate::error::Result<()> {
        let Some(flags) = &self.access else { return Ok(()) };
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
}
