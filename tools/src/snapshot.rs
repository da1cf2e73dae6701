//! `cowfs snapshot create|list|show|delete`: named, O(1) captures of the whole tree, pinned
//! against gc. Functions of an open [`Engine`], served like the history commands.

use anyhow::{Result, bail};
use cowfs_engine::{Engine, Error, FileKind, SnapshotMeta};
use serde_json::{Value, json};

use crate::history::rfc3339;

fn meta_json(s: &SnapshotMeta) -> Value {
    json!({ "name": s.name, "description": s.description, "date": rfc3339(s.time), "id": s.id.0 })
}

/// `snapshot create`.
pub fn create(e: &Engine, name: &str, description: &str) -> Result<Value> {
    match e.snapshot_create(name, description) {
        Ok(s) => Ok(meta_json(&s)),
        Err(Error::Exists(_)) => bail!("snapshot {name:?} already exists"),
        Err(Error::Invalid(_) | Error::NameTooLong(_)) => {
            bail!("invalid snapshot name {name:?} (1 to 255 bytes, no '/', not '.' or '..')")
        }
        Err(err) => Err(err.into()),
    }
}

/// `snapshot list`, oldest first.
pub fn list(e: &Engine) -> Value {
    Value::Array(e.snapshots().iter().map(|s| meta_json(s)).collect())
}

/// `snapshot show`: the snapshot and what it holds.
pub fn show(e: &Engine, name: &str) -> Result<Value> {
    let Some(meta) = e.snapshots().into_iter().find(|s| s.name == name) else { bail!("no snapshot {name:?}") };
    let ns = e.snapshot_namespace(name)?;
    let (mut files, mut dirs, mut bytes) = (0u64, 0u64, 0u64);
    for i in ns.inodes.values() {
        match i.kind {
            FileKind::Regular => {
                files += 1;
                bytes += i.size;
            }
            FileKind::Directory => dirs += 1,
            _ => {}
        }
    }
    let mut v = meta_json(&meta);
    v["files"] = files.into();
    v["directories"] = dirs.saturating_sub(1).into();
    v["logical_size_bytes"] = bytes.into();
    Ok(v)
}

/// `snapshot delete`.
pub fn delete(e: &Engine, name: &str) -> Result<Value> {
    match e.snapshot_delete(name) {
        Ok(()) => Ok(json!({ "deleted": name })),
        Err(Error::NotFound(_)) => bail!("no snapshot {name:?}"),
        Err(err) => Err(err.into()),
    }
}
