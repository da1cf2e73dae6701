//! The activity log and the tree as it was at a past moment, both read from the log itself:
//! every transaction that changes something begins with a [`Stamp`] (when, what, which
//! inode). Replaying the log from its start into a fresh index, transaction by transaction,
//! gives the tree after each one; the paths of a transaction's entries are resolved in the
//! tree just before it.
//!
//! Both read the whole log (what recovery with `FullReplay` reads), so they cost time
//! proportional to the store's size; they are for commands, not for the hot path.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::record::{Action, Inode, Record, Stamp, Timestamp, Version};
use crate::ids::InodeId;
use crate::index::{Index, Namespace};
use crate::inner::Inner;
use crate::log::store::Txn;

/// One entry of the activity log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When.
    pub time: Timestamp,
    /// What.
    pub action: Action,
    /// The path it was about, as it was then (`None`: the whole store, e.g. snapshots).
    pub path: Option<String>,
    /// Where a rename put it.
    pub to: Option<String>,
    /// The version the transaction committed, if any.
    pub version: Option<Arc<Version>>,
    /// Free text: a snapshot's name, where a restore came from.
    pub detail: String,
}

/// An index rebuilt transaction by transaction, plus the last name of every inode (for
/// paths; a hard-linked file has one of its names).
struct Replay {
    ix: Index,
    names: HashMap<InodeId, (InodeId, Vec<u8>)>,
}

impl Replay {
    fn new(e: &Inner) -> Self {
        Replay { ix: Index::new(e.shared.meta.device), names: HashMap::new() }
    }

    /// The path of `ino` in the tree now (`None` when it has no known name).
    fn path(&self, ino: InodeId) -> Option<String> {
        let mut parts = Vec::new();
        let mut at = ino;
        while at != InodeId::ROOT {
            let (parent, name) = self.names.get(&at)?;
            parts.push(String::from_utf8_lossy(name).into_owned());
            at = *parent;
            if parts.len() > 4096 {
                return None;
            }
        }
        parts.reverse();
        Some(format!("/{}", parts.join("/")))
    }

    fn entry_path(&self, parent: InodeId, name: &[u8]) -> String {
        let dir = self.path(parent).unwrap_or_else(|| format!("(inode {parent})"));
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{}", String::from_utf8_lossy(name))
    }

    /// The log entry of `txn`, which begins with `stamp` (resolved before it applies).
    fn entry(&self, stamp: &Stamp, txn: &Txn) -> LogEntry {
        let set = txn.iter().find_map(|(r, _)| match r {
            Record::DirentSet { parent, name, child, .. } if *child == stamp.ino => {
                Some(self.entry_path(*parent, name))
            }
            _ => None,
        });
        let removed = txn.iter().find_map(|(r, _)| match r {
            Record::DirentRemove { parent, name } => Some(self.entry_path(*parent, name)),
            _ => None,
        });
        let own = || self.path(stamp.ino).or_else(|| Some(format!("(inode {})", stamp.ino)));
        let (path, to) = match stamp.action {
            Action::Create | Action::Mkdir | Action::Link | Action::Symlink => (set, None),
            Action::Delete | Action::Rmdir => (removed, None),
            Action::Rename => (removed.or_else(own), set),
            Action::SnapshotCreate | Action::SnapshotDelete if stamp.ino == InodeId(0) => (None, None),
            _ => (own(), None),
        };
        let version = txn.iter().find_map(|(r, _)| match r {
            Record::Version(v) => Some(v.clone()),
            _ => None,
        });
        LogEntry { time: stamp.time, action: stamp.action, path, to, version, detail: stamp.detail.clone() }
    }

    fn apply(&mut self, txn: &Txn) -> Result<()> {
        for (rec, loc) in txn {
            match rec {
                Record::DirentSet { parent, name, child, .. } => {
                    self.names.insert(*child, (*parent, name.clone()));
                }
                Record::DirentRemove { parent, name } => {
                    if let Some(d) = self.ix.ns().lookup(*parent, name)
                        && self.names.get(&d.child).is_some_and(|(p, n)| p == parent && n == name)
                    {
                        self.names.remove(&d.child);
                    }
                }
                Record::InodeFree(ino) => {
                    self.names.remove(ino);
                }
                _ => {}
            }
            self.ix.apply_history(rec, *loc).map_err(|k| Error::corrupt(loc.segment.file_name(), loc.offset, k))?;
        }
        Ok(())
    }
}

fn stamp_of(txn: &Txn) -> Option<&Stamp> {
    match txn.first() {
        Some((Record::Stamp(s), _)) => Some(s),
        _ => None,
    }
}

/// Every entry of the activity log, oldest first.
pub(crate) fn activity(e: &Inner) -> Result<Vec<LogEntry>> {
    let mut r = Replay::new(e);
    let mut out = Vec::new();
    e.scan_log(&mut |txn| {
        if let Some(s) = stamp_of(txn) {
            out.push(r.entry(s, txn));
        }
        r.apply(txn)?;
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(out)
}

/// The whole tree as it was at `t`: after every transaction up to the first one stamped
/// later than `t`. (Transactions are stamped with the wall clock of the machine that made
/// them; if that clock stepped back, the first later stamp ends the replay.)
///
/// A directory that tree holds unlisted (an overlay directory not yet looked into) gets what a
/// later listing of it stored — the entries it showed all along — so the replay goes on past
/// `t` for listings (and the lower files and objects they need) while there is one.
pub(crate) fn namespace_at(e: &Inner, t: Timestamp) -> Result<Namespace> {
    let mut r = Replay::new(e);
    let mut past = false;
    e.scan_log(&mut |txn| {
        if !past && stamp_of(txn).is_some_and(|s| s.time > t) {
            past = true;
            if !r.ix.ns().inodes.values().any(|i| i.unlisted().is_some()) {
                return Ok(ControlFlow::Break(()));
            }
        }
        let objects = || {
            txn.iter().all(|(rec, _)| {
                matches!(rec, Record::Chunk(_) | Record::Node(..) | Record::LowerFile(_) | Record::SyncMark(_))
            })
        };
        if !past || objects() {
            r.apply(txn)?;
        } else if let Some((Record::Inode(listed), loc)) = txn.last()
            && stamp_of(txn).is_none()
            && listed.lower.as_ref().is_some_and(|l| l.listed)
            && let Some(before) = r.ix.ns().inode(listed.ino).filter(|i| i.unlisted().is_some()).cloned()
        {
            // The listing's entries; the directory keeps its attributes of then.
            r.apply(&txn[..txn.len() - 1])?;
            let then = Inode { lower: listed.lower.clone(), nlink: listed.nlink, ..(*before).clone() };
            r.apply(&[(Record::Inode(Arc::new(then)), *loc)])?;
        }
        Ok(ControlFlow::Continue(()))
    })?;
    Ok(r.ix.ns().clone())
}
