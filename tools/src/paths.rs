//! Paths inside the store: resolving them in the current tree.

use std::sync::Arc;

use anyhow::{Result, bail};
use cowfs_engine::{Engine, Error, FileKind, Inode, InodeId};

/// A path inside the store, split into its directory and last name.
#[derive(Debug)]
pub struct Resolved {
    /// The directory holding the name.
    pub parent: InodeId,
    /// The last component.
    pub name: Vec<u8>,
    /// The inode there now, if any.
    pub inode: Option<Arc<Inode>>,
}

/// What a virtual copy's mount file (`cowfs mount --lower FILE STORE MOUNTFILE`) is as a store
/// path in a request: the one file of the store's root, whatever its name
/// ([`virtual_copy_path`]).
pub const VIRTUAL_COPY_FILE: &str = "";

/// The store path of a virtual copy's one file.
pub fn virtual_copy_path(e: &Engine) -> Result<String> {
    let root = e.entries(InodeId::ROOT)?;
    match root.iter().next() {
        Some((name, d)) if root.len() == 1 && d.kind == FileKind::Regular => {
            Ok(format!("/{}", String::from_utf8_lossy(name)))
        }
        _ => bail!("the store is not a virtual copy of one file: name a path in it"),
    }
}

/// Resolves a store-relative path (`/docs/a.txt`; a missing leading `/` is allowed).
pub fn resolve(e: &Engine, path: &str) -> Result<Resolved> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        bail!("path {path:?}: '..' is not allowed");
    }
    let Some((last, dirs)) = parts.split_last() else { bail!("path {path:?} names the root, not a file") };
    let dir = walk_dirs(e, path, dirs.iter().copied())?;
    let inode = match e.lookup(dir, last.as_bytes()) {
        Ok(i) => Some(i),
        Err(Error::NotFound(_)) => None,
        Err(err) => return Err(err.into()),
    };
    Ok(Resolved { parent: dir, name: last.as_bytes().to_vec(), inode })
}

/// The directory reached from the root through `dirs` (`path` names it in messages).
pub fn walk_dirs<'a>(e: &Engine, path: &str, dirs: impl IntoIterator<Item = &'a str>) -> Result<InodeId> {
    let mut dir = InodeId::ROOT;
    for d in dirs {
        let i = e.lookup(dir, d.as_bytes()).map_err(|_| anyhow::anyhow!("path {path:?}: no directory {d:?}"))?;
        if i.kind != FileKind::Directory {
            bail!("path {path:?}: {d:?} is not a directory");
        }
        dir = i.ino;
    }
    Ok(dir)
}

/// A store path normalized for tree operations: `""` for the root, else `/a/b`.
pub fn tree_path(path: &str) -> Result<String> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        bail!("path {path:?}: '..' is not allowed");
    }
    Ok(parts.iter().map(|p| format!("/{p}")).collect())
}

/// The directory at store path `path` now (`""` or `/`: the root).
pub fn dir_at(e: &Engine, path: &str) -> Result<InodeId> {
    walk_dirs(e, path, path.split('/').filter(|p| !p.is_empty()))
}
