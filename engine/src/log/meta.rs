//! The store's header: identity and fixed parameters (`STORE`), kept twice — `STORE` and
//! `STORE.backup`, as file systems keep backup superblocks — so that one damaged file does not
//! lose a store. Reading uses `STORE` and falls back to the backup; `cowfs-fsck --repair`
//! rewrites a damaged copy from the other, or, with both gone, rebuilds the header from the
//! segment headers and checkpoints (which repeat the store id), with defaults for what only
//! the header holds. Invariant: the header never changes after creation but for one step, the
//! format version going from 2 to 3 at the first open with lower trees (before anything of
//! version 3 is written); each copy is written whole and atomically (temp file, fsync, rename,
//! directory fsync).

use crate::error::{CorruptKind, DecodeError, Error, Result, io};
use crate::format::chunk::ChunkParams;
use crate::format::frame::{self, BASE_FORMAT_VERSION, FORMAT_VERSION, SEGMENT_HEADER_LEN};
use crate::format::record::Timestamp;
use crate::ids::{DeviceId, SegmentId, StoreId};
use crate::storage::{Storage, read_all, read_exact_at, write_atomically};

/// Name of the store header file.
pub const STORE_FILE: &str = "STORE";
/// Name of its copy.
pub const STORE_BACKUP: &str = "STORE.backup";
/// Segment size of a header rebuilt without its copies (and `Options::default`'s).
pub const DEFAULT_SEGMENT_SIZE: u64 = 64 << 20;
/// Store header magic.
pub const STORE_MAGIC: [u8; 8] = *b"COWFSTOR";
/// `STORE` layout:
/// ```text
///  0 magic [8] | 8 format_version u32 | 12 store_id [16] | 28 device_id u64
/// 36 cdc_min u32 | 40 cdc_avg u32 | 44 cdc_max u32 | 48 segment_size u64
/// 56 created_secs i64 | 64 created_nanos u32 | 68 crc32c u32 (of 0..68)
/// ```
pub const STORE_LEN: usize = 72;

/// The store's fixed parameters, from `STORE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreMeta {
    /// Format version: [`BASE_FORMAT_VERSION`], or [`FORMAT_VERSION`] once the store was opened
    /// with lower trees.
    pub version: u32,
    /// Random identity.
    pub store_id: StoreId,
    /// Device id of this replica.
    pub device: DeviceId,
    /// Chunking parameters.
    pub chunking: ChunkParams,
    /// Segments roll when they reach this size.
    pub segment_size: u64,
    /// Creation time.
    pub created: Timestamp,
}

impl StoreMeta {
    /// The parameters of a new store: a random store id and device id.
    pub fn new(chunking: ChunkParams, segment_size: u64) -> StoreMeta {
        StoreMeta {
            version: BASE_FORMAT_VERSION,
            store_id: StoreId(random_bytes()),
            device: random_device(),
            chunking,
            segment_size: segment_size.max(4096),
            created: Timestamp::now(),
        }
    }

    /// Encodes `STORE`.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = crate::format::codec::Writer::new();
        w.raw(&STORE_MAGIC).u32(self.version).raw(&self.store_id.0).u64(self.device.0);
        w.u32(self.chunking.min).u32(self.chunking.avg).u32(self.chunking.max).u64(self.segment_size);
        w.i64(self.created.secs).u32(self.created.nanos);
        let crc = crc32c::crc32c(&w.buf);
        w.u32(crc);
        w.buf
    }

    /// Decodes `STORE`.
    pub fn decode(b: &[u8]) -> Result<StoreMeta> {
        let bad = |k: CorruptKind| Error::corrupt(STORE_FILE, 0, k);
        if b.len() < 12 || b[..8] != STORE_MAGIC {
            return Err(bad(CorruptKind::BadMagic));
        }
        let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
        if !(BASE_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(Error::UnsupportedFormat { found: version, supported: FORMAT_VERSION });
        }
        if b.len() != STORE_LEN {
            return Err(bad(CorruptKind::Length { len: b.len() as u64, limit: STORE_LEN as u64 }));
        }
        let expected = u32::from_le_bytes([b[68], b[69], b[70], b[71]]);
        let got = crc32c::crc32c(&b[..68]);
        if expected != got {
            return Err(bad(CorruptKind::Checksum { expected, got }));
        }
        let mut r = crate::format::codec::Reader::new(&b[12..68]);
        let d = |e: DecodeError| e.at(STORE_FILE, 0);
        let store_id = StoreId(r.array().map_err(d)?);
        let device = DeviceId(r.u64().map_err(d)?);
        let chunking = ChunkParams { min: r.u32().map_err(d)?, avg: r.u32().map_err(d)?, max: r.u32().map_err(d)? };
        chunking.validate().map_err(d)?;
        let segment_size = r.u64().map_err(d)?;
        let created = Timestamp { secs: r.i64().map_err(d)?, nanos: r.u32().map_err(d)? };
        if segment_size < 4096 {
            return Err(bad(CorruptKind::Malformed("segment size")));
        }
        Ok(StoreMeta { version, store_id, device, chunking, segment_size, created })
    }
}

/// Random bytes for new identities (blake3 of the time, the process, a counter and an address).
fn random_bytes<const N: usize>() -> [u8; N] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut h = blake3::Hasher::new();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    h.update(&now.as_nanos().to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let local = 0u8;
    h.update(&(&local as *const u8 as usize).to_le_bytes());
    let mut out = [0u8; N];
    h.finalize_xof().fill(&mut out);
    out
}

/// A new random device id (non-zero).
fn random_device() -> DeviceId {
    DeviceId(u64::from_le_bytes(random_bytes()).max(1))
}

/// The state of `STORE.backup` next to the header in use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backup {
    /// It verifies and equals the header in use (or is the header in use).
    Agrees,
    /// There is none: a store made before backups were kept (the next open for writing writes
    /// it), or a creation that crashed between the two files.
    Missing,
    /// It does not verify: why.
    Unreadable(String),
    /// It verifies but holds other parameters than `STORE`.
    Differs,
    /// It equals `STORE` but for an older format version: the first open with lower trees
    /// crashed between the two copies (the next open for writing writes it again).
    Older,
}

/// What reading the header found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The parameters: from `STORE`, or from the backup when `STORE` is unusable.
    pub meta: StoreMeta,
    /// Why `STORE` could not be used, when the backup was.
    pub primary: Option<String>,
    /// The backup.
    pub backup: Backup,
}

impl Header {
    /// What is wrong with the two copies, one line each (empty: nothing; a missing backup is
    /// not wrong).
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(why) = &self.primary {
            out.push(format!("{STORE_FILE} is unusable ({why}); {STORE_BACKUP} was used"));
        }
        match &self.backup {
            Backup::Agrees | Backup::Missing | Backup::Older => {}
            Backup::Unreadable(why) => out.push(format!("{STORE_BACKUP} is unusable ({why})")),
            Backup::Differs => out.push(format!("{STORE_BACKUP} differs from {STORE_FILE}")),
        }
        out
    }
}

/// Files a directory may hold and still be taken for a new, empty store: temporaries (a
/// creation that crashed before `STORE` was renamed into place), the lock, and the mount
/// daemon's log and pid files, written before the store is created.
fn is_new_store_file(name: &str) -> bool {
    name == "LOCK" || name.ends_with(".tmp") || name == "daemon.log" || name == "daemon.pid"
}

fn decode_file(storage: &dyn Storage, names: &[String], name: &str) -> Result<StoreMeta> {
    if !names.iter().any(|n| n == name) {
        return Err(Error::corrupt(name, 0, CorruptKind::Missing(format!("the file {name}"))));
    }
    StoreMeta::decode(&read_all(storage, name)?)
}

/// Reads the header: `STORE`, or `STORE.backup` when `STORE` is missing or does not verify.
/// `Ok(None)`: a directory a new store may be created in. Fails with `NotAStore` for a
/// directory that holds neither and no segment, with `UnsupportedFormat` for a `STORE` of
/// another format version (not damage: the backup is not used), and with `STORE`'s own
/// error when neither copy can be used.
pub fn read_header(storage: &dyn Storage) -> Result<Option<Header>> {
    let names = storage.list().map_err(io("list", "."))?;
    let has = |name: &str| names.iter().any(|n| n == name);
    if !has(STORE_FILE) && !has(STORE_BACKUP) {
        if names.iter().all(|n| is_new_store_file(n)) {
            return Ok(None);
        }
        // Segments without a header: a store that lost both copies (fsck --repair rebuilds it).
        if !names.iter().any(|n| SegmentId::parse_file_name(n).is_some()) {
            return Err(Error::NotAStore { path: storage.describe() });
        }
    }
    let backup = decode_file(storage, &names, STORE_BACKUP);
    match decode_file(storage, &names, STORE_FILE) {
        Ok(meta) => {
            let backup = match backup {
                Ok(b) if b == meta => Backup::Agrees,
                Ok(b) if b.version < meta.version && StoreMeta { version: meta.version, ..b } == meta => Backup::Older,
                Ok(_) => Backup::Differs,
                Err(_) if !has(STORE_BACKUP) => Backup::Missing,
                Err(e) => Backup::Unreadable(e.to_string()),
            };
            Ok(Some(Header { meta, primary: None, backup }))
        }
        Err(e @ Error::UnsupportedFormat { .. }) => Err(e),
        Err(e) => match backup {
            Ok(meta) => Ok(Some(Header { meta, primary: Some(e.to_string()), backup: Backup::Agrees })),
            Err(_) => Err(e),
        },
    }
}

/// Name of the file that records an overlay store's lower trees.
pub const LOWERS_FILE: &str = "LOWERS";
/// `LOWERS` magic.
pub const LOWERS_MAGIC: [u8; 8] = *b"COWFSLOW";

/// Reads the lower trees the store records, layer 0 first (none: not an overlay store).
/// `LOWERS` layout: `magic [8] | count u32 | count × path bytes | crc32c u32 (of all before)`;
/// written whole and atomically, by the first open with lower trees and by each open that
/// replaces them (`--relower`).
pub fn read_lowers(storage: &dyn Storage) -> Result<Vec<std::path::PathBuf>> {
    use std::os::unix::ffi::OsStrExt;
    let names = storage.list().map_err(io("list", "."))?;
    if !names.iter().any(|n| n == LOWERS_FILE) {
        return Ok(Vec::new());
    }
    let b = read_all(storage, LOWERS_FILE)?;
    let bad = |k: CorruptKind| Error::corrupt(LOWERS_FILE, 0, k);
    if b.len() < 16 || b[..8] != LOWERS_MAGIC {
        return Err(bad(CorruptKind::BadMagic));
    }
    let (body, crc) = b.split_at(b.len() - 4);
    let (expected, got) = (u32::from_le_bytes(crc.try_into().expect("4 bytes")), crc32c::crc32c(body));
    if expected != got {
        return Err(bad(CorruptKind::Checksum { expected, got }));
    }
    let mut r = crate::format::codec::Reader::new(&body[8..]);
    let d = |e: DecodeError| e.at(LOWERS_FILE, 0);
    let n = r.count(crate::format::record::MAX_LOWERS, 4).map_err(d)?;
    let mut paths = Vec::with_capacity(n);
    for _ in 0..n {
        let p = r.bytes(crate::format::record::MAX_LOWER_PATH_LEN).map_err(d)?;
        if p.first() != Some(&b'/') || p.contains(&0) {
            return Err(bad(CorruptKind::Malformed("lower tree path")));
        }
        paths.push(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(p)));
    }
    r.finish(LOWERS_FILE).map_err(d)?;
    Ok(paths)
}

/// Records `paths` as the store's lower trees (see [`read_lowers`]).
pub fn write_lowers(storage: &dyn Storage, paths: &[std::path::PathBuf]) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut w = crate::format::codec::Writer::new();
    w.raw(&LOWERS_MAGIC).u32(paths.len() as u32);
    for p in paths {
        w.bytes(p.as_os_str().as_bytes());
    }
    let crc = crc32c::crc32c(&w.buf);
    w.u32(crc);
    write_atomically(storage, LOWERS_FILE, &w.buf)
}

/// Removes `LOWERS` (a store that no longer depends on its lower trees), durably.
pub fn remove_lowers(storage: &dyn Storage) -> Result<()> {
    if storage.list().map_err(io("list", "."))?.iter().any(|n| n == LOWERS_FILE) {
        storage.remove(LOWERS_FILE).map_err(io("remove", LOWERS_FILE))?;
        storage.sync_dir().map_err(io("sync", "."))?;
    }
    Ok(())
}

/// Reads the store's parameters (see [`read_header`]).
pub fn read_meta(storage: &dyn Storage) -> Result<Option<StoreMeta>> {
    Ok(read_header(storage)?.map(|h| h.meta))
}

/// Makes the store at least format `version` (both copies of the header) before the first
/// record that needs it is written; a crash between the copies leaves the backup older, which
/// the next open rewrites.
pub(crate) fn raise_version(storage: &dyn Storage, version: u32) -> Result<()> {
    let Some(mut m) = read_meta(storage)? else {
        return Err(Error::NotAStore { path: storage.describe() });
    };
    if m.version < version {
        m.version = version;
        write_header(storage, &m)?;
    }
    Ok(())
}

/// Writes both copies of the header: `STORE` first (a directory is a store once it is there),
/// then the backup.
pub fn write_header(storage: &dyn Storage, meta: &StoreMeta) -> Result<()> {
    let bytes = meta.encode();
    write_atomically(storage, STORE_FILE, &bytes)?;
    write_atomically(storage, STORE_BACKUP, &bytes)
}

/// Writes one copy of the header, `STORE_FILE` or `STORE_BACKUP`.
pub fn write_copy(storage: &dyn Storage, name: &str, meta: &StoreMeta) -> Result<()> {
    write_atomically(storage, name, &meta.encode())
}

/// A header for a store that lost both copies, from what the rest of the store repeats: the
/// store id from the segment headers that verify (the most common one), the device id from
/// the newest checkpoint that decodes; the chunking parameters, segment size and creation
/// time are held nowhere else and get defaults. Returns it and a note on each guess.
pub fn rebuild(storage: &dyn Storage) -> Result<(StoreMeta, Vec<String>)> {
    let names = storage.list().map_err(io("list", "."))?;
    let mut ids: Vec<(StoreId, u64)> = Vec::new();
    for name in &names {
        if SegmentId::parse_file_name(name).is_none() {
            continue;
        }
        let f = storage.open(name, false).map_err(io("open", name))?;
        let mut h = [0u8; SEGMENT_HEADER_LEN];
        if read_exact_at(f.as_ref(), &mut h, 0).is_err() {
            continue;
        }
        if let Some(id) = frame::segment_header_store(&h) {
            match ids.iter_mut().find(|(s, _)| *s == id) {
                Some((_, n)) => *n += 1,
                None => ids.push((id, 1)),
            }
        }
    }
    ids.sort_by_key(|(id, n)| (std::cmp::Reverse(*n), id.0));
    let Some(&(store_id, votes)) = ids.first() else {
        let kind = CorruptKind::Missing("a segment header naming the store".into());
        return Err(Error::corrupt(STORE_FILE, 0, kind));
    };
    let mut notes = vec![format!("store id from {votes} segment header(s)")];
    let mut checkpoints: Vec<u64> = names.iter().filter_map(|n| crate::log::checkpoint::parse_file_name(n)).collect();
    checkpoints.sort_unstable();
    let device = checkpoints.iter().rev().find_map(|&c| {
        let name = crate::log::checkpoint::file_name(c);
        let (index, _) =
            read_all(storage, &name).ok().and_then(|b| crate::log::checkpoint::decode(&b, store_id).ok())?;
        Some((index.device(), name))
    });
    let device = match device {
        Some((d, from)) => {
            notes.push(format!("device id from {from}"));
            d
        }
        None => {
            let d = random_device();
            notes.push(format!("no checkpoint holds the device id: new device {}", d.0));
            d
        }
    };
    notes.push(format!(
        "chunking parameters, segment size and creation time are kept only in {STORE_FILE}: defaults used \
         (files stay readable; new writes may share fewer chunks with old data)"
    ));
    // The newest version: the store may hold records of it, and a build that rebuilds the
    // header reads them all.
    notes.push(format!("format version {FORMAT_VERSION} (the newest this build knows)"));
    let meta = StoreMeta {
        version: FORMAT_VERSION,
        store_id,
        device,
        chunking: ChunkParams::DEFAULT,
        segment_size: DEFAULT_SEGMENT_SIZE,
        created: Timestamp::now(),
    };
    Ok((meta, notes))
}
