//! Segment files: the set of open ones, verified frame reads, scanning a segment's
//! transactions, and removing segments (with the checkpoints that name them).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{CorruptKind, DecodeError, Error, Result, io};
use crate::format::frame::{self, FRAME_HEADER_LEN};
use crate::format::record::Record;
use crate::ids::SegmentId;
use crate::index::Location;
use crate::log::checkpoint;
use crate::storage::{Storage, StorageFile, read_into};
use crate::sync::RwLock;

/// Open segment files, shared by the writer (which adds them) and readers.
#[derive(Debug, Default)]
pub struct Segments {
    files: RwLock<BTreeMap<SegmentId, Arc<dyn StorageFile>>>,
}

impl Segments {
    /// Registers an open segment.
    pub fn insert(&self, id: SegmentId, f: Arc<dyn StorageFile>) {
        self.files.write().insert(id, f);
    }
    /// The segment's file.
    pub fn get(&self, id: SegmentId) -> Option<Arc<dyn StorageFile>> {
        self.files.read().get(&id).cloned()
    }
    /// Ids of all segments.
    pub fn ids(&self) -> Vec<SegmentId> {
        self.files.read().keys().copied().collect()
    }
    /// Every segment with its file, in log order.
    pub fn all(&self) -> Vec<(SegmentId, Arc<dyn StorageFile>)> {
        self.files.read().iter().map(|(k, v)| (*k, v.clone())).collect()
    }
    /// Drops a segment (readers holding its file keep reading it).
    pub fn remove(&self, id: SegmentId) {
        self.files.write().remove(&id);
    }

    /// Reads the frame at `loc` and returns its verified payload.
    pub fn read_frame(&self, loc: Location) -> Result<Vec<u8>> {
        check_frame_len(loc)?;
        let mut buf = self.read_span(loc.segment, loc.offset, loc.len as usize)?;
        frame_payload(&buf, loc, true)?;
        buf.drain(..FRAME_HEADER_LEN);
        Ok(buf)
    }

    /// Reads `len` bytes at `offset` of a segment (frames that follow each other, checked
    /// one by one with [`frame_payload`]).
    pub fn read_span(&self, seg: SegmentId, offset: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.read_span_into(seg, offset, len, &mut buf)?;
        Ok(buf)
    }

    /// [`Segments::read_span`] into `buf` (its capacity reused).
    pub fn read_span_into(&self, seg: SegmentId, offset: u64, len: usize, buf: &mut Vec<u8>) -> Result<()> {
        let f = self.file(seg, offset)?;
        read_into(f.as_ref(), buf, offset, len).map_err(|e| read_error(&seg.file_name(), offset, len, e))
    }

    fn file(&self, seg: SegmentId, offset: u64) -> Result<Arc<dyn StorageFile>> {
        let name = seg.file_name();
        self.get(seg).ok_or_else(|| Error::corrupt(&name, offset, CorruptKind::Missing(format!("segment {name}"))))
    }
}

/// The error of a read of `len` bytes at `offset` of `name` that failed with `e`: a file
/// shorter than what the log or the index says it holds is corruption (it was cut), not I/O.
pub(crate) fn read_error(name: &str, offset: u64, len: usize, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::corrupt(name, offset, CorruptKind::Length { len: len as u64, limit: 0 })
    } else {
        Error::io("read_at", name, e)
    }
}

/// Fails when the index gives a frame a length no frame can have.
pub fn check_frame_len(loc: Location) -> Result<()> {
    if loc.len as usize > FRAME_HEADER_LEN + frame::MAX_PAYLOAD || (loc.len as usize) < FRAME_HEADER_LEN {
        let limit = (FRAME_HEADER_LEN + frame::MAX_PAYLOAD) as u64;
        return Err(Error::corrupt(
            loc.segment.file_name(),
            loc.offset,
            CorruptKind::Length { len: loc.len.into(), limit },
        ));
    }
    Ok(())
}

/// The verified payload of the frame the index places at `loc`, whose bytes (header and
/// payload) are `bytes`. Without `payload_crc` the payload's checksum is not computed: for
/// a chunk whose decode checks blake3 of its content, which catches all the checksum would.
pub fn frame_payload(bytes: &[u8], loc: Location, payload_crc: bool) -> Result<&[u8]> {
    let name = || loc.segment.file_name();
    if bytes.len() != loc.len as usize {
        let limit = bytes.len() as u64;
        return Err(Error::corrupt(name(), loc.offset, CorruptKind::Length { len: loc.len.into(), limit }));
    }
    let h = frame::decode_frame_header(bytes, loc.segment, loc.offset).map_err(|e| e.at(name(), loc.offset))?;
    if h.frame_len() != loc.len as u64 {
        return Err(Error::corrupt(name(), loc.offset, CorruptKind::Malformed("frame length differs from index")));
    }
    let payload = &bytes[FRAME_HEADER_LEN..];
    if payload_crc {
        frame::check_payload(&h, payload).map_err(|e| e.at(name(), loc.offset))?;
    }
    Ok(payload)
}

/// Removes the segments `segs`, and before them every checkpoint that names any of them: a
/// checkpoint naming a missing segment is never used again, and fsck reports it as an error.
/// Checkpoints go, the directory is synced, then the segments go and it is synced again, so
/// no crash (nor a power loss that keeps any subset of the unsynced removals) leaves a
/// checkpoint naming a removed segment.
pub fn remove_segments(storage: &dyn Storage, segs: &[SegmentId]) -> Result<()> {
    if segs.is_empty() {
        return Ok(());
    }
    let names = storage.list().map_err(io("list", "."))?;
    let mut stale = Vec::new();
    for name in names.iter().filter(|n| checkpoint::parse_file_name(n).is_some()) {
        let f = storage.open(name, false).map_err(io("open", name))?;
        let len = f.len().map_err(io("len", name))?;
        let mut head = Vec::new();
        read_into(f.as_ref(), &mut head, 0, (len as usize).min(checkpoint::LIVE_LIST_HEAD))
            .map_err(io("read_at", name))?;
        // A checkpoint too short to hold its list is damaged, and names nothing usable.
        let Some(need) = checkpoint::live_list_len(&head) else { continue };
        if need as u64 > len {
            continue;
        }
        read_into(f.as_ref(), &mut head, 0, need).map_err(io("read_at", name))?;
        if checkpoint::named_segments(&head).is_some_and(|named| named.iter().any(|s| segs.contains(s))) {
            stale.push(name.clone());
        }
    }
    if !stale.is_empty() {
        for name in &stale {
            storage.remove(name).map_err(io("remove", name))?;
        }
        storage.sync_dir().map_err(io("sync_dir", "."))?;
    }
    for s in segs {
        storage.remove(&s.file_name()).map_err(io("remove", &s.file_name()))?;
    }
    storage.sync_dir().map_err(io("sync_dir", "."))
}

/// A complete transaction: its records and where their frames are.
pub type Txn = [(Record, Location)];

/// Calls `on_txn` with each complete transaction of one segment from `from`, in order, until
/// it breaks. Returns where the valid log ends (a torn tail of the newest segment, `is_last`,
/// is not part of it) and whether `on_txn` broke.
pub fn scan_segment(
    data: &[u8],
    seg: SegmentId,
    from: usize,
    is_last: bool,
    on_txn: &mut dyn FnMut(&Txn) -> Result<ControlFlow<()>>,
) -> Result<(u64, bool)> {
    let name = seg.file_name();
    let mut pos = from;
    let mut txn: Vec<(Record, Location)> = Vec::new();
    let mut txn_start = pos;
    loop {
        if pos == data.len() && txn.is_empty() {
            return Ok((pos as u64, false));
        }
        let bad = match read_frame_at(data, seg, pos) {
            Ok((kind, end_of_txn, payload, frame_len)) => {
                // The frame verified: a record that does not decode is corruption, never a torn tail.
                let rec = Record::decode(kind, payload).map_err(|e| e.at(&name, pos as u64))?;
                txn.push((rec, Location { segment: seg, offset: pos as u64, len: frame_len as u32 }));
                pos += frame_len;
                if end_of_txn {
                    if on_txn(&txn)?.is_break() {
                        return Ok((txn_start as u64, true));
                    }
                    txn.clear();
                    txn_start = pos;
                }
                continue;
            }
            Err(k) => k,
        };
        // Either a bad frame or the log ends inside a transaction. In the newest segment this
        // is where the log ends: writes after the last sync may reach the disk in any order,
        // so valid frames can follow a hole there (recovery moves them aside, see
        // `recover`). In an older segment, whose bytes were synced before the next segment
        // began, it is corruption.
        if is_last {
            return Ok((txn_start as u64, false));
        }
        let follows = (pos + 1..data.len()).any(|p| frame::valid_frame_at(data, 0, seg, p));
        let kind = if follows { CorruptKind::MidLog } else { bad.0 };
        return Err(Error::corrupt(&name, pos as u64, kind));
    }
}

pub fn read_frame_at(data: &[u8], seg: SegmentId, pos: usize) -> Result<(u8, bool, &[u8], usize), DecodeError> {
    let h = data.get(pos..pos + FRAME_HEADER_LEN).ok_or(DecodeError(CorruptKind::Length {
        len: FRAME_HEADER_LEN as u64,
        limit: (data.len() - pos.min(data.len())) as u64,
    }))?;
    let fh = frame::decode_frame_header(h, seg, pos as u64)?;
    let start = pos + FRAME_HEADER_LEN;
    let payload = data
        .get(start..start + fh.len as usize)
        .ok_or(DecodeError(CorruptKind::Length { len: fh.len.into(), limit: (data.len() - start) as u64 }))?;
    frame::check_payload(&fh, payload)?;
    Ok((fh.kind, fh.end_of_txn, payload, fh.frame_len() as usize))
}
