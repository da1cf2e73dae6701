//! Checkpoints: the whole index serialized, so that open reads one file and replays only
//! the log written after it. Pure encode/decode; the engine does the file handling
//! (temp file, fsync, rename, directory fsync).
//!
//! ```text
//!  0  magic          [u8; 8]  "COWFSCKP"
//!  8  format_version u32
//! 12  store_id       [u8; 16]
//! 28  log_segment    u64      replay starts at this segment ...
//! 36  log_offset     u64      ... at this offset
//! 44  body           (see docs/FORMAT.md)
//! end-4 crc32c       u32      of every byte before it
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::error::{CorruptKind, DecodeError};
use crate::format::codec::{Reader, Writer};
use crate::format::frame::{ABSORB_FORMAT_VERSION, BASE_FORMAT_VERSION, FORMAT_VERSION, LOWER_FORMAT_VERSION};
use crate::format::record::{FileKind, Inode, MAX_NAME_LEN, Record, kind};
use crate::ids::{DeviceId, InodeId, LineageId, LowerFileId, NodeId, SegmentId, SnapshotId, StoreId};
use crate::index::{Counters, Dirent, Index, IndexParts, Location, MetaKey, Namespace, ObjEntry, Snapshot};

/// Checkpoint magic.
pub const CHECKPOINT_MAGIC: [u8; 8] = *b"COWFSCKP";
const HEADER_LEN: usize = 44;

/// Where replay resumes after a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct LogPosition {
    /// Segment.
    pub segment: SegmentId,
    /// Byte offset in it.
    pub offset: u64,
}

/// Name of checkpoint number `n`.
pub fn file_name(n: u64) -> String {
    format!("ckpt-{n:016x}.ckpt")
}

/// Parses a checkpoint file name.
pub fn parse_file_name(name: &str) -> Option<u64> {
    let hex = name.strip_prefix("ckpt-")?.strip_suffix(".ckpt")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Where the `live` list starts: after the header and the six counters.
const LIVE_OFFSET: usize = HEADER_LEN + 6 * 8;

/// Bytes from the start of a checkpoint that tell the length of its `live` list.
pub(crate) const LIVE_LIST_HEAD: usize = LIVE_OFFSET + 4;

/// How many bytes from the start of a checkpoint [`named_segments`] needs, from its first
/// [`LIVE_LIST_HEAD`] bytes `head`.
pub(crate) fn live_list_len(head: &[u8]) -> Option<usize> {
    let count = head.get(LIVE_OFFSET..LIVE_OFFSET + 4)?;
    let count = u32::from_le_bytes([count[0], count[1], count[2], count[3]]) as usize;
    Some(LIVE_OFFSET + 4 + count.checked_mul(16)?)
}

/// The segments the `live` list of a checkpoint names, from the first [`live_list_len`]
/// bytes of it, without verifying its checksum: for deciding which checkpoints a segment's
/// removal would leave naming a missing segment (use [`decode`] to trust one).
pub(crate) fn named_segments(head: &[u8]) -> Option<Vec<SegmentId>> {
    let end = live_list_len(head)?;
    let list = head.get(LIVE_OFFSET + 4..end)?;
    Some(list.chunks_exact(16).map(|e| SegmentId(u64::from_le_bytes(e[..8].try_into().expect("8 bytes")))).collect())
}

/// Removes every checkpoint numbered below `from` (`None`: below the newest there is); true
/// when any went.
pub(crate) fn remove_below(storage: &dyn crate::storage::Storage, from: Option<u64>) -> crate::error::Result<bool> {
    use crate::error::io;
    let names = storage.list().map_err(io("list", "."))?;
    let all: Vec<u64> = names.iter().filter_map(|n| parse_file_name(n)).collect();
    let Some(from) = from.or_else(|| all.iter().copied().max()) else { return Ok(false) };
    let mut removed = false;
    for c in all.into_iter().filter(|&c| c < from) {
        let name = file_name(c);
        storage.remove(&name).map_err(io("remove", &name))?;
        removed = true;
    }
    Ok(removed)
}

fn put_loc(w: &mut Writer, l: &Location) {
    w.u64(l.segment.0).u64(l.offset).u32(l.len);
}

fn get_loc(r: &mut Reader<'_>) -> Result<Location, DecodeError> {
    Ok(Location { segment: SegmentId(r.u64()?), offset: r.u64()?, len: r.u32()? })
}

fn put_ns(w: &mut Writer, ns: &Namespace) {
    let mut inodes: Vec<_> = ns.inodes.values().collect();
    inodes.sort_by_key(|i| i.ino);
    w.u32(inodes.len() as u32);
    for i in inodes {
        let mut iw = Writer::new();
        i.encode(&mut iw);
        w.bytes(&iw.buf);
    }
    let mut dirs: Vec<_> = ns.dirs.iter().collect();
    dirs.sort_by_key(|(k, _)| **k);
    w.u32(dirs.len() as u32);
    for (dir, entries) in dirs {
        w.u64(dir.0).u32(entries.len() as u32);
        for (name, d) in entries {
            w.bytes(name).u64(d.child.0).u8(d.kind.code());
        }
    }
    let mut graves: Vec<_> = ns.graves.iter().collect();
    graves.sort();
    w.u32(graves.len() as u32);
    for ((dir, name), lineage) in graves {
        w.u64(dir.0).bytes(name).u64(lineage.0);
    }
}

const MAX_INODE_BYTES: usize = 1 << 27;

fn get_ns(r: &mut Reader<'_>) -> Result<Namespace, DecodeError> {
    let mut ns = Namespace::default();
    let n = r.count(usize::MAX, 4)?;
    for _ in 0..n {
        let b = r.bytes(MAX_INODE_BYTES)?;
        let mut ir = Reader::new(b);
        let i = Inode::decode(&mut ir)?;
        ir.finish("checkpoint inode")?;
        ns.inodes.insert(i.ino, Arc::new(i));
    }
    let n = r.count(usize::MAX, 12)?;
    for _ in 0..n {
        let dir = InodeId(r.u64()?);
        let m = r.count(usize::MAX, 13)?;
        let mut entries = imbl::OrdMap::new();
        for _ in 0..m {
            let name = r.bytes(MAX_NAME_LEN)?.to_vec();
            let child = InodeId(r.u64()?);
            let kind = FileKind::from_code(r.u8()?)?;
            if kind == FileKind::Directory {
                ns.parent.insert(child, dir);
            }
            entries.insert(name, Dirent { child, kind });
        }
        ns.dirs.insert(dir, entries);
    }
    let n = r.count(usize::MAX, 20)?;
    for _ in 0..n {
        let dir = InodeId(r.u64()?);
        let name = r.bytes(MAX_NAME_LEN)?.to_vec();
        let lineage = LineageId(r.u64()?);
        ns.graves.insert((dir, name), lineage);
    }
    Ok(ns)
}

/// Serializes `index` as a checkpoint of a store of format `version` (or the version the
/// index needs, if newer) that resumes replay at `pos`. (Version 3, an overlay store's, adds
/// the lower-files section at the end, version 4 the absorbed section after it; a store that
/// never had lower trees stays version 2, readable by version-2 builds.)
pub fn encode(index: &Index, store: StoreId, version: u32, pos: LogPosition) -> Vec<u8> {
    let mut w = Writer::new();
    let version = version.max(index.format_needed());
    w.raw(&CHECKPOINT_MAGIC).u32(version).raw(&store.0).u64(pos.segment.0).u64(pos.offset);
    let c = index.counters();
    w.u64(index.device().0).u64(c.next_ino).u64(c.next_lineage).u64(c.next_snapshot).u64(c.version_seq).u64(c.hlc);
    w.u32(index.live().len() as u32);
    for (s, l) in index.live() {
        w.u64(s.0).u64(*l);
    }
    let mut objs: Vec<_> = index.objects().iter().collect();
    objs.sort_unstable_by_key(|(k, _)| **k);
    w.buf.reserve(objs.len() * 64);
    w.u32(objs.len() as u32);
    for (id, e) in objs {
        w.raw(id).u8(e.is_node as u8);
        put_loc(&mut w, &e.loc);
        w.u32(e.raw_len).u32(e.refs);
    }
    put_ns(&mut w, index.ns());
    let mut locs: Vec<_> = index.meta_locs().iter().collect();
    locs.sort_unstable_by(|a, b| a.0.cmp(b.0));
    w.u32(locs.len() as u32);
    for (k, l) in locs {
        match k {
            MetaKey::Inode(i) => {
                w.u8(0).u64(i.0);
            }
            MetaKey::Dirent(p, n) => {
                w.u8(1).u64(p.0).bytes(n);
            }
        }
        put_loc(&mut w, l);
    }
    let mut lineages: Vec<_> = index.lineages().iter().collect();
    lineages.sort_by_key(|(k, _)| **k);
    w.u32(lineages.len() as u32);
    for (l, versions) in lineages {
        w.u64(l.0).u32(versions.len() as u32);
        for v in versions {
            w.bytes(&Record::Version(v.clone()).encode_meta());
        }
    }
    w.u32(index.snapshots().len() as u32);
    for s in index.snapshots().values() {
        w.bytes(&Record::SnapshotCreate(s.meta.clone()).encode_meta());
        put_ns(&mut w, &s.ns);
    }
    if version >= LOWER_FORMAT_VERSION {
        w.u32(index.lower_files().len() as u32);
        for f in index.lower_files().values() {
            w.bytes(&Record::LowerFile(f.clone()).encode_meta());
        }
    }
    if version >= ABSORB_FORMAT_VERSION {
        w.u32(index.absorbed().len() as u32);
        for (file, root) in index.absorbed() {
            w.u64(file.0).raw(&root.0);
        }
    }
    let crc = crc32c::crc32c(&w.buf);
    w.u32(crc);
    w.buf
}

/// Decodes a checkpoint of store `store`; returns the index and where replay resumes.
pub fn decode(buf: &[u8], store: StoreId) -> Result<(Index, LogPosition), DecodeError> {
    if buf.len() < HEADER_LEN + 4 {
        return Err(CorruptKind::Length { len: buf.len() as u64, limit: HEADER_LEN as u64 + 4 }.into());
    }
    let (body, crc) = buf.split_at(buf.len() - 4);
    let expected = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let got = crc32c::crc32c(body);
    if expected != got {
        return Err(CorruptKind::Checksum { expected, got }.into());
    }
    let mut r = Reader::new(body);
    if r.array::<8>()? != CHECKPOINT_MAGIC {
        return Err(CorruptKind::BadMagic.into());
    }
    let version = r.u32()?;
    if !(BASE_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(CorruptKind::Unknown { what: "checkpoint format version", value: version.into() }.into());
    }
    if r.array::<16>()? != store.0 {
        return Err(CorruptKind::Malformed("checkpoint of another store").into());
    }
    let pos = LogPosition { segment: SegmentId(r.u64()?), offset: r.u64()? };
    let mut p = IndexParts { device: DeviceId(r.u64()?), ..IndexParts::default() };
    p.counters = Counters {
        next_ino: r.u64()?,
        next_lineage: r.u64()?,
        next_snapshot: r.u64()?,
        version_seq: r.u64()?,
        hlc: r.u64()?,
    };
    let n = r.count(usize::MAX, 16)?;
    let mut live = BTreeMap::new();
    for _ in 0..n {
        live.insert(SegmentId(r.u64()?), r.u64()?);
    }
    p.live = live;
    let n = r.count(usize::MAX, 61)?;
    let mut objects = crate::index::ObjectMap::with_capacity_and_hasher(n, Default::default());
    for _ in 0..n {
        let id: [u8; 32] = r.array()?;
        let is_node = match r.u8()? {
            0 => false,
            1 => true,
            v => {
                return Err(CorruptKind::Unknown { what: "object type", value: v.into() }.into());
            }
        };
        let loc = get_loc(&mut r)?;
        let raw_len = r.u32()?;
        let refs = r.u32()?;
        objects.insert(id, ObjEntry { loc, refs, is_node, raw_len });
    }
    p.objects = objects;
    p.ns = get_ns(&mut r)?;
    let n = r.count(usize::MAX, 29)?;
    for _ in 0..n {
        let key = match r.u8()? {
            0 => MetaKey::Inode(InodeId(r.u64()?)),
            1 => MetaKey::Dirent(InodeId(r.u64()?), r.bytes(MAX_NAME_LEN)?.to_vec()),
            v => {
                return Err(CorruptKind::Unknown { what: "meta key", value: v.into() }.into());
            }
        };
        let loc = get_loc(&mut r)?;
        p.meta_locs.insert(key, loc);
    }
    let n = r.count(usize::MAX, 12)?;
    for _ in 0..n {
        let l = LineageId(r.u64()?);
        let m = r.count(usize::MAX, 4)?;
        let mut versions = Vec::with_capacity(m);
        for _ in 0..m {
            match Record::decode(kind::VERSION, r.bytes(1 << 20)?)? {
                Record::Version(v) => versions.push(v),
                _ => return Err(CorruptKind::Malformed("checkpoint version").into()),
            }
        }
        p.lineages.insert(l, versions);
    }
    let n = r.count(usize::MAX, 4)?;
    for _ in 0..n {
        let meta = match Record::decode(kind::SNAPSHOT_CREATE, r.bytes(1 << 20)?)? {
            Record::SnapshotCreate(m) => m,
            _ => return Err(CorruptKind::Malformed("checkpoint snapshot").into()),
        };
        let ns = get_ns(&mut r)?;
        p.snapshots.insert(SnapshotId(meta.id.0), Snapshot { meta, ns });
    }
    if version >= LOWER_FORMAT_VERSION {
        let n = r.count(usize::MAX, 4)?;
        for _ in 0..n {
            match Record::decode(kind::LOWER_FILE, r.bytes(1 << 20)?)? {
                Record::LowerFile(f) => p.lower_files.insert(f.id, f),
                _ => return Err(CorruptKind::Malformed("checkpoint lower file").into()),
            };
        }
    }
    if version >= ABSORB_FORMAT_VERSION {
        let n = r.count(usize::MAX, 40)?;
        for _ in 0..n {
            let (file, root) = (LowerFileId(r.u64()?), NodeId(r.array()?));
            let known = p.objects.get(&root.0).is_some_and(|o| o.is_node);
            if !p.lower_files.contains_key(&file) || !known {
                return Err(CorruptKind::Malformed("checkpoint absorbed lower file").into());
            }
            p.absorbed.insert(file, root);
        }
    }
    r.finish("checkpoint")?;
    Ok((Index::from_parts(p), pos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `named_segments` reads exactly the `live` list from the start of a checkpoint: what a
    /// segment removal decides from (a checkpoint it misreads is left naming a removed segment,
    /// or removed for a segment it never named).
    #[test]
    fn the_live_list_is_read_from_the_head_of_a_checkpoint() {
        for n in [0u64, 1, 3, 40] {
            let live = (0..n).map(|k| (SegmentId((k + 1) << 16), 1000 + k)).collect();
            let ix = Index::from_parts(IndexParts { device: DeviceId(7), live, ..IndexParts::default() });
            let bytes = encode(&ix, StoreId([3; 16]), 2, LogPosition { segment: SegmentId(1 << 16), offset: 64 });
            let len = live_list_len(&bytes[..LIVE_LIST_HEAD]).unwrap();
            assert_eq!(len, LIVE_LIST_HEAD + 16 * n as usize, "{n} segments");
            // The list ends where the objects' count begins (none here).
            assert_eq!(bytes[len..len + 4], [0, 0, 0, 0]);
            let named = named_segments(&bytes[..len]).unwrap();
            assert_eq!(named, ix.live().keys().copied().collect::<Vec<_>>());
            assert_eq!(named_segments(&bytes[..len - 1]), None, "a list cut short is not read");
        }
        assert_eq!(live_list_len(&[0u8; LIVE_LIST_HEAD - 1]), None);
    }
}
