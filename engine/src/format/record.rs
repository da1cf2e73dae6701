//! Log records: what a frame's payload means. Pure encode/decode, no I/O; decoding any byte
//! string either succeeds or returns a [`DecodeError`], never panics, and never allocates
//! more than the caps below allow.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{CorruptKind, DecodeError};
use crate::format::chunk::ChunkMeta;
use crate::format::codec::{Reader, Writer};
use crate::format::tree::Node;
use crate::ids::{DeviceId, Hlc, InodeId, LineageId, LowerFileId, NodeId, SnapshotId, VersionId};

pub use super::values::{
    Action, FileKind, Inode, LowerFile, LowerIdentity, LowerOrigin, LowerSource, SnapshotMeta, Stamp, Timestamp,
    Version,
};

/// Longest file name, in bytes.
pub const MAX_NAME_LEN: usize = 255;
/// Longest symlink target, in bytes.
pub const MAX_SYMLINK_LEN: usize = 4095;
/// Longest xattr name.
pub const MAX_XATTR_NAME_LEN: usize = 255;
/// Largest xattr value.
pub const MAX_XATTR_VALUE_LEN: usize = 65536;
/// Most xattrs on one inode.
pub const MAX_XATTRS: usize = 1024;
/// Most bytes of xattr names and values on one inode (so an inode record fits a frame).
pub const MAX_XATTR_TOTAL: usize = 1 << 20;
/// Longest snapshot description.
pub const MAX_DESCRIPTION_LEN: usize = 4096;
/// Most parents of one version.
pub const MAX_PARENTS: usize = 64;
/// Most versions one prune record removes.
pub const MAX_PRUNE: usize = 1 << 16;
/// Longest path of a lower file below its tree's root (Linux's `PATH_MAX`).
pub const MAX_LOWER_PATH_LEN: usize = 4096;
/// Most lower trees of an overlay store.
pub const MAX_LOWERS: usize = 64;

/// Record kind codes, as stored in the frame header.
pub mod kind {
    /// A content chunk.
    pub const CHUNK: u8 = 1;
    /// A content-tree node.
    pub const NODE: u8 = 2;
    /// A full inode (insert or replace).
    pub const INODE: u8 = 3;
    /// An inode removed.
    pub const INODE_FREE: u8 = 4;
    /// A directory entry added or replaced.
    pub const DIRENT_SET: u8 = 5;
    /// A directory entry removed.
    pub const DIRENT_REMOVE: u8 = 6;
    /// A file version.
    pub const VERSION: u8 = 7;
    /// A snapshot taken.
    pub const SNAPSHOT_CREATE: u8 = 8;
    /// A snapshot deleted.
    pub const SNAPSHOT_DELETE: u8 = 9;
    /// The last name of a file went away; its path keeps its lineage.
    pub const GRAVE: u8 = 10;
    /// When a transaction happened and what it was (the activity log).
    pub const STAMP: u8 = 11;
    /// Versions removed from a lineage by gc.
    pub const PRUNE: u8 = 12;
    /// The segment was synced up to this offset before this frame was written.
    pub const SYNC_MARK: u8 = 13;
    /// A lower file recorded (format version 3).
    pub const LOWER_FILE: u8 = 14;
    /// A lower file's bytes copied into the store (format version 4).
    pub const ABSORBED: u8 = 15;
    /// A file's lineage taken out of a snapshot (format version 5).
    pub const SNAPSHOT_FORGET: u8 = 16;
}

/// A decoded log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A chunk (data not carried: it stays on disk and is read on demand).
    Chunk(ChunkMeta),
    /// A content-tree node.
    Node(NodeId, Arc<Node>),
    /// Insert or replace an inode.
    Inode(Arc<Inode>),
    /// Remove an inode (its link count reached zero and nothing holds it).
    InodeFree(InodeId),
    /// Add or replace the entry `name` in `parent`.
    DirentSet {
        /// Directory.
        parent: InodeId,
        /// Entry name.
        name: Vec<u8>,
        /// Target inode.
        child: InodeId,
        /// Target type (for readdir without an inode lookup).
        kind: FileKind,
    },
    /// Remove the entry `name` from `parent`.
    DirentRemove {
        /// Directory.
        parent: InodeId,
        /// Entry name.
        name: Vec<u8>,
    },
    /// A file version.
    Version(Arc<Version>),
    /// A snapshot taken at this point of the log.
    SnapshotCreate(Arc<SnapshotMeta>),
    /// A snapshot deleted.
    SnapshotDelete(SnapshotId),
    /// The file named `name` in `parent` is gone; a file created there again continues
    /// `lineage` (delete-then-recreate keeps the path's history).
    Grave {
        /// Directory.
        parent: InodeId,
        /// Entry name.
        name: Vec<u8>,
        /// The lineage of the file that was there.
        lineage: LineageId,
    },
    /// When the transaction happened and what it was.
    Stamp(Arc<Stamp>),
    /// gc removed versions `numbers` from `lineage`; when that empties the lineage, the grave
    /// at `grave` (if it names this lineage) goes too, so the path starts a new history.
    Prune {
        /// The lineage.
        lineage: LineageId,
        /// Version numbers removed, ascending.
        numbers: Vec<u64>,
        /// A grave to remove with the lineage's last version.
        grave: Option<(InodeId, Vec<u8>)>,
        /// The index's version sequence, HLC and next lineage id when the prune was written:
        /// compaction drops the pruned versions' records, so a replay learns from here how far
        /// these counters had gone (ids are never handed out twice).
        counters: (u64, u64, u64),
    },
    /// Its segment was synced (fsync returned) up to this offset before this frame was
    /// written: evidence recovery uses to tell damage from writes that landed out of order.
    SyncMark(u64),
    /// A lower file that content refers to, with the identity it had (format version 3).
    LowerFile(Arc<LowerFile>),
    /// Recorded lower file `file`'s bytes that content refers to are in the store: `root` is a
    /// content tree over the lower file's offsets (its size, holes where nothing referred to
    /// it), which a read of a `Lower` extent of the file uses instead of the lower file
    /// (format version 4).
    Absorbed {
        /// The lower file.
        file: LowerFileId,
        /// Its bytes' content tree.
        root: NodeId,
    },
    /// Every regular file of `lineage` leaves snapshot `snapshot`: its inodes and the entries
    /// naming them (`cowfs forget --include-snapshots`; format version 5).
    SnapshotForget {
        /// The snapshot.
        snapshot: SnapshotId,
        /// The file's lineage.
        lineage: LineageId,
    },
}

fn opt_hash(w: &mut Writer, h: Option<&[u8; 32]>) {
    match h {
        None => {
            w.u8(0);
        }
        Some(h) => {
            w.u8(1).raw(h);
        }
    }
}

fn read_opt_hash(r: &mut Reader<'_>) -> Result<Option<[u8; 32]>, DecodeError> {
    match r.u8()? {
        0 => Ok(None),
        1 => Ok(Some(r.array()?)),
        v => Err(CorruptKind::Unknown { what: "option flag", value: v.into() }.into()),
    }
}

fn check_name(name: &[u8]) -> Result<(), DecodeError> {
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0) {
        return Err(CorruptKind::Malformed("directory entry name").into());
    }
    Ok(())
}

/// A lower file's path: relative, each component a name (no `.`, `..` or empty one).
fn check_lower_path(path: &[u8]) -> Result<(), DecodeError> {
    if path.is_empty() || path.split(|b| *b == b'/').any(|c| check_name(c).is_err()) {
        return Err(CorruptKind::Malformed("lower file path").into());
    }
    Ok(())
}

/// A directory's lower sources: at least one, each a lower directory's path (empty: the root).
fn decode_sources(r: &mut Reader<'_>) -> Result<Vec<LowerSource>, DecodeError> {
    let n = r.count(MAX_LOWERS, 8)?;
    let mut sources = Vec::with_capacity(n);
    for _ in 0..n {
        let layer = r.u32()?;
        let path = r.bytes(MAX_LOWER_PATH_LEN)?.to_vec();
        if layer as usize >= MAX_LOWERS || (!path.is_empty() && check_lower_path(&path).is_err()) {
            return Err(CorruptKind::Malformed("lower source").into());
        }
        sources.push(LowerSource { layer, path });
    }
    if sources.is_empty() {
        return Err(CorruptKind::Malformed("lower sources").into());
    }
    Ok(sources)
}

impl Inode {
    /// Encodes the inode payload.
    pub fn encode(&self, w: &mut Writer) {
        w.u64(self.ino.0).u8(self.kind.code()).u32(self.mode).u32(self.uid).u32(self.gid);
        w.u32(self.nlink).u64(self.size);
        self.atime.encode(w);
        self.mtime.encode(w);
        self.ctime.encode(w);
        w.u64(self.rdev).u64(self.lineage.map_or(0, |l| l.0));
        opt_hash(w, self.content.as_ref().map(|c| &c.0));
        w.bytes(&self.symlink);
        w.u32(self.xattrs.len() as u32);
        for (k, v) in &self.xattrs {
            w.bytes(k).bytes(v);
        }
        // Format version 3, present only when set (a version-2 inode ends before it).
        if let Some(origin) = &self.lower {
            w.u8(origin.listed as u8).u32(origin.sources.len() as u32);
            for s in &origin.sources {
                w.u32(s.layer).bytes(&s.path);
            }
        }
    }

    /// Decodes an inode payload.
    pub fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let ino = InodeId(r.u64()?);
        let kind = FileKind::from_code(r.u8()?)?;
        let mode = r.u32()?;
        if mode & !0o7777 != 0 {
            return Err(CorruptKind::Malformed("inode mode").into());
        }
        let uid = r.u32()?;
        let gid = r.u32()?;
        let nlink = r.u32()?;
        let size = r.u64()?;
        let atime = Timestamp::decode(r)?;
        let mtime = Timestamp::decode(r)?;
        let ctime = Timestamp::decode(r)?;
        let rdev = r.u64()?;
        let lineage = match r.u64()? {
            0 => None,
            l => Some(LineageId(l)),
        };
        let content = read_opt_hash(r)?.map(NodeId);
        let symlink = r.bytes(MAX_SYMLINK_LEN)?.to_vec();
        let n = r.count(MAX_XATTRS, 8)?;
        let mut xattrs = BTreeMap::new();
        for _ in 0..n {
            let k = r.bytes(MAX_XATTR_NAME_LEN)?.to_vec();
            let v = r.bytes(MAX_XATTR_VALUE_LEN)?.to_vec();
            xattrs.insert(k, v);
        }
        let lower = match r.remaining() {
            0 => None,
            _ => {
                let listed = match r.u8()? {
                    0 => false,
                    1 => true,
                    v => return Err(CorruptKind::Unknown { what: "listed flag", value: v.into() }.into()),
                };
                Some(Arc::new(LowerOrigin { listed, sources: decode_sources(r)? }))
            }
        };
        // Only a directory is unlisted, and only it has several sources.
        let bad_origin =
            lower.as_ref().is_some_and(|l| kind != FileKind::Directory && (!l.listed || l.sources.len() != 1));
        if ino.0 == 0 || (kind != FileKind::Regular && (content.is_some() || lineage.is_some())) || bad_origin {
            return Err(CorruptKind::Malformed("inode").into());
        }
        Ok(Inode {
            ino,
            kind,
            mode,
            uid,
            gid,
            nlink,
            size,
            atime,
            mtime,
            ctime,
            rdev,
            lineage,
            content,
            symlink,
            xattrs,
            lower,
        })
    }
}

impl Record {
    /// The record's kind code.
    pub fn kind(&self) -> u8 {
        match self {
            Record::Chunk(_) => kind::CHUNK,
            Record::Node(..) => kind::NODE,
            Record::Inode(_) => kind::INODE,
            Record::InodeFree(_) => kind::INODE_FREE,
            Record::DirentSet { .. } => kind::DIRENT_SET,
            Record::DirentRemove { .. } => kind::DIRENT_REMOVE,
            Record::Version(_) => kind::VERSION,
            Record::SnapshotCreate(_) => kind::SNAPSHOT_CREATE,
            Record::SnapshotDelete(_) => kind::SNAPSHOT_DELETE,
            Record::Grave { .. } => kind::GRAVE,
            Record::Stamp(_) => kind::STAMP,
            Record::Prune { .. } => kind::PRUNE,
            Record::SyncMark(_) => kind::SYNC_MARK,
            Record::LowerFile(_) => kind::LOWER_FILE,
            Record::Absorbed { .. } => kind::ABSORBED,
            Record::SnapshotForget { .. } => kind::SNAPSHOT_FORGET,
        }
    }

    /// Encodes a metadata record's payload. Chunks and nodes are encoded by
    /// [`crate::format::chunk::encode_chunk`] and [`Node::encode`], which also produce their bytes.
    pub fn encode_meta(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Record::Chunk(_) | Record::Node(..) => {
                unreachable!("objects are encoded with their data")
            }
            Record::Inode(i) => i.encode(&mut w),
            Record::InodeFree(ino) => {
                w.u64(ino.0);
            }
            Record::DirentSet { parent, name, child, kind } => {
                w.u64(parent.0).bytes(name).u64(child.0).u8(kind.code());
            }
            Record::DirentRemove { parent, name } => {
                w.u64(parent.0).bytes(name);
            }
            Record::Version(v) => {
                w.u64(v.id.device.0).u64(v.id.seq).u64(v.lineage.0).u64(v.number).u64(v.ino.0);
                w.u32(v.mode).u32(v.uid).u32(v.gid);
                v.time.encode(&mut w);
                w.u64(v.size);
                opt_hash(&mut w, v.content.as_ref().map(|c| &c.0));
                w.u64(v.hlc.0).u32(v.parents.len() as u32);
                for p in &v.parents {
                    w.u64(p.device.0).u64(p.seq);
                }
            }
            Record::SnapshotCreate(s) => {
                w.u64(s.id.0).bytes(s.name.as_bytes()).bytes(s.description.as_bytes());
                s.time.encode(&mut w);
                w.u64(s.hlc.0);
            }
            Record::SnapshotDelete(id) => {
                w.u64(id.0);
            }
            Record::Grave { parent, name, lineage } => {
                w.u64(parent.0).bytes(name).u64(lineage.0);
            }
            Record::Stamp(s) => {
                s.time.encode(&mut w);
                w.u8(s.action.code()).u64(s.ino.0).bytes(s.detail.as_bytes());
            }
            Record::Prune { lineage, numbers, grave, counters } => {
                w.u64(lineage.0).u32(numbers.len() as u32);
                for n in numbers {
                    w.u64(*n);
                }
                match grave {
                    None => {
                        w.u8(0);
                    }
                    Some((parent, name)) => {
                        w.u8(1).u64(parent.0).bytes(name);
                    }
                }
                w.u64(counters.0).u64(counters.1).u64(counters.2);
            }
            Record::SyncMark(at) => {
                w.u64(*at);
            }
            Record::LowerFile(f) => {
                w.u64(f.id.0).u32(f.layer).bytes(&f.path);
                let i = &f.identity;
                w.u64(i.dev).u64(i.ino).u64(i.size);
                i.mtime.encode(&mut w);
                i.ctime.encode(&mut w);
            }
            Record::Absorbed { file, root } => {
                w.u64(file.0).raw(&root.0);
            }
            Record::SnapshotForget { snapshot, lineage } => {
                w.u64(snapshot.0).u64(lineage.0);
            }
        }
        w.buf
    }

    /// Decodes a payload of the given kind. For a chunk, only the header is decoded (the data
    /// length is checked); for a node, the node and its id.
    pub fn decode(kind: u8, payload: &[u8]) -> Result<Record, DecodeError> {
        let mut r = Reader::new(payload);
        let rec = match kind {
            kind::CHUNK => return Ok(Record::Chunk(ChunkMeta::decode(payload)?)),
            kind::NODE => {
                let node = Node::decode(payload)?;
                return Ok(Record::Node(crate::format::tree::node_id(payload), Arc::new(node)));
            }
            kind::INODE => Record::Inode(Arc::new(Inode::decode(&mut r)?)),
            kind::INODE_FREE => Record::InodeFree(InodeId(r.u64()?)),
            kind::DIRENT_SET => {
                let parent = InodeId(r.u64()?);
                let name = r.bytes(MAX_NAME_LEN)?.to_vec();
                check_name(&name)?;
                let child = InodeId(r.u64()?);
                let kind = FileKind::from_code(r.u8()?)?;
                Record::DirentSet { parent, name, child, kind }
            }
            kind::DIRENT_REMOVE => {
                let parent = InodeId(r.u64()?);
                let name = r.bytes(MAX_NAME_LEN)?.to_vec();
                check_name(&name)?;
                Record::DirentRemove { parent, name }
            }
            kind::VERSION => {
                let id = VersionId { device: DeviceId(r.u64()?), seq: r.u64()? };
                let lineage = LineageId(r.u64()?);
                let number = r.u64()?;
                let ino = InodeId(r.u64()?);
                let (mode, uid, gid) = (r.u32()?, r.u32()?, r.u32()?);
                if mode & !0o7777 != 0 {
                    return Err(CorruptKind::Malformed("version mode").into());
                }
                let time = Timestamp::decode(&mut r)?;
                let size = r.u64()?;
                let content = read_opt_hash(&mut r)?.map(NodeId);
                let hlc = Hlc(r.u64()?);
                let n = r.count(MAX_PARENTS, 16)?;
                let mut parents = Vec::with_capacity(n);
                for _ in 0..n {
                    parents.push(VersionId { device: DeviceId(r.u64()?), seq: r.u64()? });
                }
                if number == 0 || lineage.0 == 0 {
                    return Err(CorruptKind::Malformed("version").into());
                }
                Record::Version(Arc::new(Version {
                    id,
                    lineage,
                    number,
                    ino,
                    mode,
                    uid,
                    gid,
                    time,
                    size,
                    content,
                    hlc,
                    parents,
                }))
            }
            kind::SNAPSHOT_CREATE => {
                let id = SnapshotId(r.u64()?);
                let name = String::from_utf8(r.bytes(MAX_NAME_LEN)?.to_vec())
                    .map_err(|_| DecodeError(CorruptKind::Malformed("snapshot name")))?;
                let description = String::from_utf8(r.bytes(MAX_DESCRIPTION_LEN)?.to_vec())
                    .map_err(|_| DecodeError(CorruptKind::Malformed("snapshot description")))?;
                let time = Timestamp::decode(&mut r)?;
                let hlc = Hlc(r.u64()?);
                Record::SnapshotCreate(Arc::new(SnapshotMeta { id, name, description, time, hlc }))
            }
            kind::SNAPSHOT_DELETE => Record::SnapshotDelete(SnapshotId(r.u64()?)),
            kind::GRAVE => {
                let parent = InodeId(r.u64()?);
                let name = r.bytes(MAX_NAME_LEN)?.to_vec();
                check_name(&name)?;
                let lineage = LineageId(r.u64()?);
                if lineage.0 == 0 {
                    return Err(CorruptKind::Malformed("grave lineage").into());
                }
                Record::Grave { parent, name, lineage }
            }
            kind::STAMP => {
                let time = Timestamp::decode(&mut r)?;
                let action = Action::from_code(r.u8()?)?;
                let ino = InodeId(r.u64()?);
                let detail = String::from_utf8(r.bytes(MAX_DESCRIPTION_LEN)?.to_vec())
                    .map_err(|_| DecodeError(CorruptKind::Malformed("stamp detail")))?;
                Record::Stamp(Arc::new(Stamp { time, action, ino, detail }))
            }
            kind::PRUNE => {
                let lineage = LineageId(r.u64()?);
                let n = r.count(MAX_PRUNE, 8)?;
                let mut numbers = Vec::with_capacity(n);
                for _ in 0..n {
                    let v = r.u64()?;
                    if numbers.last().is_some_and(|l| *l >= v) || v == 0 {
                        return Err(CorruptKind::Malformed("prune numbers").into());
                    }
                    numbers.push(v);
                }
                let grave = match r.u8()? {
                    0 => None,
                    1 => {
                        let parent = InodeId(r.u64()?);
                        let name = r.bytes(MAX_NAME_LEN)?.to_vec();
                        check_name(&name)?;
                        Some((parent, name))
                    }
                    v => return Err(CorruptKind::Unknown { what: "option flag", value: v.into() }.into()),
                };
                let counters = (r.u64()?, r.u64()?, r.u64()?);
                if lineage.0 == 0 || numbers.is_empty() {
                    return Err(CorruptKind::Malformed("prune").into());
                }
                Record::Prune { lineage, numbers, grave, counters }
            }
            kind::SYNC_MARK => Record::SyncMark(r.u64()?),
            kind::LOWER_FILE => {
                let id = LowerFileId(r.u64()?);
                let layer = r.u32()?;
                let path = r.bytes(MAX_LOWER_PATH_LEN)?.to_vec();
                check_lower_path(&path)?;
                let (dev, ino, size) = (r.u64()?, r.u64()?, r.u64()?);
                let (mtime, ctime) = (Timestamp::decode(&mut r)?, Timestamp::decode(&mut r)?);
                if id.0 == 0 {
                    return Err(CorruptKind::Malformed("lower file id").into());
                }
                let identity = LowerIdentity { dev, ino, size, mtime, ctime };
                Record::LowerFile(Arc::new(LowerFile { id, layer, path, identity }))
            }
            kind::ABSORBED => {
                let (file, root) = (LowerFileId(r.u64()?), NodeId(r.array()?));
                if file.0 == 0 {
                    return Err(CorruptKind::Malformed("lower file id").into());
                }
                Record::Absorbed { file, root }
            }
            kind::SNAPSHOT_FORGET => {
                Record::SnapshotForget { snapshot: SnapshotId(r.u64()?), lineage: LineageId(r.u64()?) }
            }
            k => {
                return Err(CorruptKind::Unknown { what: "record kind", value: k.into() }.into());
            }
        };
        r.finish("record payload")?;
        Ok(rec)
    }
}
