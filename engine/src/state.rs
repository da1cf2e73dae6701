//! The state every thread of an open engine shares: the storage, the store header, the
//! index, the open segments, the poison and the pins.

use std::sync::Arc;

use crate::error::{Error, Missing, Result};
use crate::format::record::Inode;
use crate::ids::InodeId;
use crate::index::{Index, ObjectMap};
use crate::log::meta::StoreMeta;
use crate::log::store::Segments;
use crate::storage::Storage;
use crate::sync::{Mutex, RwLock};

/// Why the engine refuses writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Poison {
    /// The device was full.
    NoSpace,
    /// Another failure, described.
    Failed(String),
}

impl Poison {
    /// The error later mutations get.
    pub fn error(&self) -> Error {
        match self {
            Poison::NoSpace => Error::NoSpace,
            Poison::Failed(c) => Error::Poisoned { cause: c.clone() },
        }
    }
    pub(crate) fn from_error(e: &Error) -> Poison {
        match e {
            Error::NoSpace => Poison::NoSpace,
            e => Poison::Failed(e.to_string()),
        }
    }
}

/// The message a panic carried (its payload when that is a string).
pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    match (payload.downcast_ref::<&str>(), payload.downcast_ref::<String>()) {
        (Some(s), _) => (*s).to_string(),
        (_, Some(s)) => s.clone(),
        _ => "a panic without a message".to_string(),
    }
}

/// State shared by the engine handle, readers and the writer.
#[derive(Debug)]
pub struct Shared {
    /// The storage.
    pub storage: Arc<dyn Storage>,
    /// Store parameters.
    pub meta: StoreMeta,
    /// The index.
    pub index: RwLock<Index>,
    /// Open segments.
    pub segments: Segments,
    /// Set at the first failed append or sync.
    pub poison: Mutex<Option<Poison>>,
    /// Objects an open file uses before its commit references them: compaction keeps them.
    /// Lock order: `pins`, then `index`.
    pub pins: Mutex<ObjectMap<u32>>,
    /// The lower trees content may refer to (overlay stores; none otherwise).
    pub lowers: crate::storage::lower::Lowers,
}

impl Shared {
    /// The poison error, if poisoned.
    pub fn poisoned(&self) -> Option<Error> {
        self.poison.lock().as_ref().map(Poison::error)
    }

    /// Poisons the engine unless it already is (the first cause is kept).
    pub fn set_poison(&self, cause: Poison) {
        let mut p = self.poison.lock();
        if p.is_none() {
            *p = Some(cause);
        }
    }

    /// An internal error (a bug): poisons the engine with it and returns it.
    pub fn internal(&self, what: impl Into<String>) -> Error {
        let what = what.into();
        self.set_poison(Poison::Failed(format!("internal error: {what}")));
        Error::Internal(what)
    }

    /// An inode's attributes, from the current namespace.
    pub fn inode(&self, ino: InodeId) -> Result<Arc<Inode>> {
        self.index.read().ns().inode(ino).cloned().ok_or(Error::NotFound(Missing::Inode(ino)))
    }
}
