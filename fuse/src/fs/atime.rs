//! Access times. The kernel never updates a FUSE inode's atime itself (its inodes are
//! `S_NOATIME`), so the daemon records reads: when a file is opened for reading (reads the
//! page cache serves never reach the daemon, and a file's cache outlives its opens), when a
//! read reaches the daemon (strictatime only), and when a directory is listed from its start.
//! Whether and when follows the mount's flags, which a remount may change: the owner of the
//! [`CowFs`] gives a source of them ([`CowFs::with_access_times`]).

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

/// Where the flags come from (asked at each read; the source caches).
pub type AccessSource = Box<dyn Fn() -> AccessTimes + Send + Sync>;

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
        self.access = Some(source);
        self
    }

    /// `ino` was read (`how`): records the access time when the mount's flags say so. A
    /// failure to record it fails nothing (as on any filesystem): it is returned for the log.
    pub fn accessed(&self, ino: InodeId, how: Access) -> crate::error::Result<()> {
        let Some(source) = &self.access else { return Ok(()) };
        if is_virtual(ino) {
            return Ok(());
        }
        let a = source();
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
