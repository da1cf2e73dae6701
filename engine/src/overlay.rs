//! Overlay directories (docs/OVERLAY.md): a directory that shows lower directories gets their
//! entries as stored entries at its first listing — one transaction of inodes and entries,
//! regular files with content that refers to the whole lower file (nothing read, nothing
//! hashed) — and from then on is an ordinary directory. Mounting reads nothing of the lower
//! trees; a tree is read as far as it is looked at.

use std::sync::Arc;

use crate::error::Result;
use crate::format::record::{FileKind, LowerIdentity, Record, Timestamp};
use crate::format::tree::{self, Extent, ExtentKind, Node};
use crate::ids::InodeId;
use crate::index::ops::{LowerEntry, Op, Outcome};
use crate::inner::Inner;
use crate::storage::lower::Listed;
use crate::write::EncodedObject;

/// The type of a lower entry by its mode.
fn kind_of(mode: u32) -> Option<FileKind> {
    Some(match mode & libc::S_IFMT {
        libc::S_IFREG => FileKind::Regular,
        libc::S_IFDIR => FileKind::Directory,
        libc::S_IFLNK => FileKind::Symlink,
        libc::S_IFIFO => FileKind::Fifo,
        libc::S_IFCHR => FileKind::CharDevice,
        libc::S_IFBLK => FileKind::BlockDevice,
        libc::S_IFSOCK => FileKind::Socket,
        _ => return None,
    })
}

fn time((secs, nanos): (i64, u32)) -> Timestamp {
    Timestamp { secs, nanos }
}

/// Lists directory `dir` from its lower directories if it shows any and was not listed yet
/// (see [`Op::Expand`]). One listing at a time: a second caller for the same directory finds
/// it listed. Fails with `Error::Lower` when a lower directory cannot be listed (the
/// directory stays unlisted; nothing is shown partly).
pub(crate) fn list(inner: &Inner, dir: InodeId) -> Result<()> {
    if inner.shared.inode(dir).map(|i| i.unlisted().is_none()).unwrap_or(true) {
        return Ok(());
    }
    let _one = inner.listing.lock();
    let d = inner.shared.inode(dir)?;
    let Some(sources) = d.unlisted() else { return Ok(()) };
    let listed: Vec<(Listed, Vec<_>)> = inner
        .shared
        .lowers
        .list(sources)?
        .into_iter()
        .filter(|(l, _)| kind_of(l.stat.mode).is_some() && l.name.len() <= crate::format::record::MAX_NAME_LEN)
        .collect();
    // The regular files with bytes are recorded first: their content refers to them by id.
    let files: Vec<(u32, Vec<u8>, LowerIdentity)> = listed
        .iter()
        .filter(|(l, _)| l.stat.is_file() && l.stat.identity.size > 0)
        .map(|(l, from)| (from[0].layer, from[0].path.clone(), l.stat.identity))
        .collect();
    let recorded = match files.is_empty() {
        true => Vec::new(),
        false => match inner.submit(Op::RecordLowerFiles { files }, false)? {
            Outcome::LowerFiles(f) => f,
            other => return Err(inner.shared.internal(format!("unexpected outcome {other:?}"))),
        },
    };
    let mut recorded = recorded.into_iter();
    let mut objects = Vec::new();
    let mut entries = Vec::with_capacity(listed.len());
    for (l, from) in listed {
        let kind = kind_of(l.stat.mode).expect("filtered above");
        let mut content = None;
        if kind == FileKind::Regular && l.stat.identity.size > 0 {
            let f = recorded.next().ok_or_else(|| inner.shared.internal("a lower file went unrecorded"))?;
            let whole = Extent { len: f.identity.size, kind: ExtentKind::Lower { file: f.id, offset: 0 } };
            let (root, nodes) = tree::build([whole]);
            for (id, payload) in nodes {
                let node = Node::decode(&payload).expect("a node we just encoded decodes");
                objects.push(EncodedObject::new(Record::Node(id, Arc::new(node)), payload));
            }
            content = root;
        }
        let symlink = if kind == FileKind::Symlink { l.target } else { Vec::new() };
        entries.push(LowerEntry {
            name: l.name,
            kind,
            mode: l.stat.mode,
            uid: l.stat.uid,
            gid: l.stat.gid,
            nlink: u32::try_from(l.stat.nlink).unwrap_or(u32::MAX),
            size: if kind == FileKind::Symlink { symlink.len() as u64 } else { l.stat.identity.size },
            times: [time(l.stat.atime), l.stat.identity.mtime, l.stat.identity.ctime],
            rdev: l.stat.rdev,
            symlink,
            content,
            sources: from,
        });
    }
    inner.request(objects, Some(Op::Expand { dir, entries }), false).map(|_| ())
}
