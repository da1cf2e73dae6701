//! The store on disk: the `STORE` header file, the set of open segment files, verified
//! frame reads, and recovery (newest valid checkpoint + replay of the log after it, cutting
//! a torn tail and refusing corruption in the middle of the log).

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::sync::Arc;

use crate::error::{CorruptKind, DecodeError, Error, Result, io};
use crate::format::frame::{self, FRAME_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::format::record::Record;
use crate::ids::SegmentId;
use crate::index::{Index, Location};
use crate::log::checkpoint::{self, LogPosition};
use crate::log::meta::StoreMeta;
use crate::storage::{BLOCK, Storage, StorageFile, read_all, read_exact_at, read_into, read_whole, write_atomically};
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
fn read_error(name: &str, offset: u64, len: usize, e: std::io::Error) -> Error {
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

/// What recovery found besides the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Checkpoint used, if any.
    pub checkpoint: Option<String>,
    /// Checkpoints that did not verify, with the reason (older ones were tried).
    pub bad_checkpoints: Vec<(String, String)>,
    /// Records replayed after the checkpoint.
    pub replayed_records: u64,
    /// A torn tail was cut: segment, offset of the cut, bytes dropped.
    pub torn_tail: Option<(SegmentId, u64, u64)>,
    /// A newest segment whose header never completed was removed.
    pub removed_empty_segment: Option<SegmentId>,
    /// Temporary files removed.
    pub removed_temporaries: Vec<String>,
    /// Segments left over from an interrupted compaction (removed when opened for writing).
    pub superseded_segments: Vec<SegmentId>,
    /// Salvage: records that did not apply, and why.
    pub skipped_records: Vec<(Location, String)>,
    /// What is wrong with `STORE` or its backup (the store opened with the good copy; see
    /// [`crate::log::meta::Header::problems`]): `cowfs-fsck --repair` mends them.
    pub header_problems: Vec<String>,
    /// Valid frames after the end of the newest segment's log (unsynced writes that landed
    /// out of order, or damage) were kept in this file instead of being replayed.
    pub moved_aside: Option<String>,
}

/// The result of recovery.
#[derive(Debug)]
pub struct Recovered {
    /// The rebuilt index.
    pub index: Index,
    /// Where the writer appends next (`None`: no segment yet).
    pub tail: Option<LogPosition>,
    /// Number the next checkpoint gets.
    pub next_checkpoint: u64,
    /// What happened.
    pub report: OpenReport,
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

/// How recovery may change the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecoverMode {
    /// Cut a torn tail, remove temporaries: the store is about to be written.
    ReadWrite,
    /// Change nothing (fsck, inspection): a torn tail is only reported.
    ReadOnly,
    /// Ignore checkpoints and replay the whole log (read-only).
    FullReplay,
    /// Repair: like `ReadWrite`, but ignore checkpoints, replay the whole log, and skip (and
    /// report) records that do not apply (e.g. naming objects lost to corruption).
    Salvage,
}

impl RecoverMode {
    fn writes(self) -> bool {
        matches!(self, RecoverMode::ReadWrite | RecoverMode::Salvage)
    }
}

/// Rebuilds the index from `storage`, registering every segment in `segments`.
pub fn recover(storage: &dyn Storage, meta: &StoreMeta, segments: &Segments, mode: RecoverMode) -> Result<Recovered> {
    let mut report = OpenReport::default();
    let names = storage.list().map_err(io("list", "."))?;
    let mut seg_ids = Vec::new();
    let mut ckpts = Vec::new();
    for n in &names {
        if let Some(id) = SegmentId::parse_file_name(n) {
            seg_ids.push(id);
        } else if let Some(c) = checkpoint::parse_file_name(n) {
            ckpts.push(c);
        } else if n.ends_with(".tmp") && mode.writes() {
            // Not synced: a temporary a power loss brings back goes at the next open.
            storage.remove(n).map_err(io("remove", n))?;
            report.removed_temporaries.push(n.clone());
        }
    }
    seg_ids.sort();
    ckpts.sort();
    let next_checkpoint = ckpts.last().map_or(1, |c| c + 1);

    let mut start: Option<(Index, LogPosition)> = None;
    if !matches!(mode, RecoverMode::FullReplay | RecoverMode::Salvage) {
        for c in ckpts.iter().rev() {
            let name = checkpoint::file_name(*c);
            let loaded = read_all(storage, &name)
                .and_then(|b| checkpoint::decode(&b, meta.store_id).map_err(|e| e.at(&name, 0)));
            // A checkpoint older than a compaction names segments that are gone: try older
            // ones, then the whole log.
            let loaded = loaded.and_then(|(ix, pos)| match ix.live.keys().find(|s| !seg_ids.contains(s)) {
                Some(s) => {
                    let kind = CorruptKind::Missing(format!("segment {} named by the checkpoint", s.file_name()));
                    Err(Error::corrupt(&name, 0, kind))
                }
                None => Ok((ix, pos)),
            });
            match loaded {
                Ok(v) => {
                    report.checkpoint = Some(name);
                    start = Some(v);
                    break;
                }
                Err(e) => report.bad_checkpoints.push((name, e.to_string())),
            }
        }
    }
    // From the start of the log, the replay meets history compaction has thinned out.
    let from_scratch = start.is_none();
    let (mut index, pos) = match start {
        Some(s) => s,
        None => (Index::new(meta.device), LogPosition { segment: SegmentId(0), offset: 0 }),
    };
    // Which segments the newest readable checkpoint names: it decides between a compaction
    // output and the segment it replaces, also for a replay that does not start from it (so
    // every replay of one store reads the same segments). Needed only when both are present.
    let named = |seg: SegmentId| -> bool {
        if !from_scratch {
            return index.live.contains_key(&seg);
        }
        ckpts
            .iter()
            .rev()
            .find_map(|c| {
                let name = checkpoint::file_name(*c);
                read_all(storage, &name).ok().and_then(|b| checkpoint::decode(&b, meta.store_id).ok())
            })
            .is_some_and(|(ix, _)| ix.live.contains_key(&seg))
    };
    // Every segment is opened, and its header read, once.
    let mut headers = BTreeMap::new();
    for &seg in &seg_ids {
        let name = seg.file_name();
        let file = storage.open(&name, false).map_err(io("open", &name))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        let header = read_exact_at(file.as_ref(), &mut h, 0)
            .map_err(|e| read_error(&name, 0, SEGMENT_HEADER_LEN, e))
            .and_then(|()| frame::check_segment_header(&h, meta.store_id, seg).map_err(|e| e.at(&name, 0)));
        headers.insert(seg, (file, header));
    }
    // A compaction output and any of the segments it replaces both present: the switch to the
    // output is committed when the checkpoint names it (the replaced ones that are left go);
    // otherwise the output is incomplete.
    let mut superseded = Vec::new();
    for (&seg, (_, header)) in &headers {
        match header {
            Ok(Some(r)) if headers.range(r.first..=r.last).next().is_some() => {
                if named(seg) {
                    superseded.extend(headers.range(r.first..=r.last).map(|(s, _)| *s));
                } else {
                    superseded.push(seg);
                }
            }
            // A compaction output whose header never made it, next to the segment it was
            // to replace: the compaction died while writing it.
            Err(_) if seg.0 & ((1 << SegmentId::SLOT_BITS) - 1) != 0 && headers.contains_key(&SegmentId(seg.0 - 1)) => {
                superseded.push(seg);
            }
            _ => {} // a torn newest segment, or damage: handled below
        }
    }
    superseded.sort();
    superseded.dedup();
    if !superseded.is_empty() {
        seg_ids.retain(|s| !superseded.contains(s));
        if mode.writes() {
            remove_segments(storage, &superseded)?;
        }
        report.superseded_segments = superseded;
    }

    let mut tail = None;
    let last = seg_ids.last().copied();
    for &seg in &seg_ids {
        let name = seg.file_name();
        let (file, header) = headers.remove(&seg).expect("every listed segment was opened");
        let is_last = Some(seg) == last;
        if seg < pos.segment {
            header?;
            segments.insert(seg, file);
            continue;
        }
        let data = read_whole(file.as_ref(), &name)?;
        if let Err(e) = frame::check_segment_header(&data, meta.store_id, seg) {
            // The newest segment's header is written and synced before anything goes into
            // it, so a bad header there means the roll never completed.
            let all_torn = data.len() < SEGMENT_HEADER_LEN || data[..SEGMENT_HEADER_LEN].iter().all(|&b| b == 0) || {
                !(1..data.len()).any(|p| frame::valid_frame_at(&data, 0, seg, p))
            };
            if is_last && all_torn && !index.live.contains_key(&seg) {
                if mode.writes() {
                    storage.remove(&name).map_err(io("remove", &name))?;
                    storage.sync_dir().map_err(io("sync_dir", "."))?;
                }
                report.removed_empty_segment = Some(seg);
                continue;
            }
            return Err(e.at(&name, 0));
        }
        let from = if seg == pos.segment { pos.offset as usize } else { SEGMENT_HEADER_LEN };
        if from > data.len() || from < SEGMENT_HEADER_LEN {
            let kind = CorruptKind::Missing(format!("log up to offset {from} named by the checkpoint"));
            return Err(Error::corrupt(&name, data.len() as u64, kind));
        }
        index.register_segment(seg);
        let (replayed, skipped) = (&mut report.replayed_records, &mut report.skipped_records);
        let (end, _) = scan_segment(&data, seg, from, is_last, &mut |txn| {
            for (rec, loc) in txn {
                let applied = if from_scratch { index.apply_history(rec, *loc) } else { index.apply(rec, *loc) };
                match applied {
                    Ok(()) => *replayed += 1,
                    Err(k) if mode == RecoverMode::Salvage => skipped.push((*loc, format!("{k:?}"))),
                    Err(k) => return Err(Error::corrupt(seg.file_name(), loc.offset, k)),
                }
            }
            Ok(ControlFlow::Continue(()))
        })?;
        // Zeros to the end of the last block past the log: the writer's block padding, left
        // by a process that stopped without closing the store. Cut, but not a torn tail.
        let rest = &data[end as usize..];
        let padding = !rest.is_empty() && rest.len() < BLOCK && rest.iter().all(|&b| b == 0);
        if padding && mode.writes() {
            file.set_len(end).map_err(io("set_len", &name))?;
            file.sync_all().map_err(io("sync_all", &name))?;
        }
        if end < data.len() as u64 && !padding {
            report.torn_tail = Some((seg, end, data.len() as u64 - end));
            // Valid frames after the end: unsynced writes that landed out of order — or damage
            // to synced bytes, which no check can tell apart. They are not replayed (what
            // follows a hole was never acknowledged if the hole is the unsynced tail), but
            // kept aside, never deleted.
            let tail = &data[end as usize..];
            let (bad, follows, synced) = after_the_end(tail, end, seg);
            if synced {
                return Err(Error::corrupt(&name, bad, CorruptKind::MidLog));
            }
            if follows {
                let aside = format!("lost-{name}-{end}.bad");
                if mode.writes() {
                    write_atomically(storage, &aside, tail)?;
                }
                report.moved_aside = Some(aside);
            }
            if mode.writes() {
                file.set_len(end).map_err(io("set_len", &name))?;
                file.sync_all().map_err(io("sync_all", &name))?;
            }
        }
        segments.insert(seg, file);
        tail = Some(LogPosition { segment: seg, offset: end });
    }
    Ok(Recovered { index, tail, next_checkpoint, report })
}

/// What lies after the end of the newest segment's log (`tail`: its bytes from file offset
/// `base`): the offset of the first frame that does not verify, whether a valid frame follows
/// it, and whether a SyncMark after it shows the bad bytes were synced (so they are damage,
/// not writes that landed out of order).
fn after_the_end(tail: &[u8], base: u64, seg: SegmentId) -> (u64, bool, bool) {
    let mut pos = 0;
    while frame::valid_frame_at(tail, base, seg, pos) {
        let len = u32::from_le_bytes([tail[pos], tail[pos + 1], tail[pos + 2], tail[pos + 3]]) as usize;
        pos += FRAME_HEADER_LEN + len;
    }
    let bad = base + pos as u64;
    let (mut follows, mut synced) = (false, false);
    for p in (pos + 1..tail.len()).filter(|p| frame::valid_frame_at(tail, base, seg, *p)) {
        follows = true;
        // The frame verified, so its header decodes and its payload is in range.
        if let Ok(h) = frame::decode_frame_header(&tail[p..p + FRAME_HEADER_LEN], seg, base + p as u64)
            && h.kind == crate::format::record::kind::SYNC_MARK
            && let Ok(Record::SyncMark(at)) =
                Record::decode(h.kind, &tail[p + FRAME_HEADER_LEN..p + FRAME_HEADER_LEN + h.len as usize])
            && at > bad
        {
            synced = true;
        }
    }
    (bad, follows, synced)
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
