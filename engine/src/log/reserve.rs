//! The reserve file: space set aside at every checkpoint so that a compaction on a full
//! device can write the checkpoint it needs before it frees anything.

use crate::error::{Error, Result, io};
use crate::log::checkpoint;
use crate::storage::Storage;

/// The file that holds `Options::reserve_bytes`.
pub const RESERVE_FILE: &str = "RESERVE";

/// Makes sure [`RESERVE_FILE`] holds `reserve_bytes` (0: nothing to do) plus the size of a
/// checkpoint (`checkpoint`, or else the newest one's): a compaction on a full device must
/// write one before it frees anything. On a device too full for that it holds what fits
/// (false) until a later call (the next checkpoint or compaction).
pub(crate) fn ensure_reserve(st: &dyn Storage, reserve_bytes: u64, checkpoint: Option<u64>) -> Result<bool> {
    if reserve_bytes == 0 {
        return Ok(false);
    }
    let names = st.list().map_err(io("list", "."))?;
    let len_of = |name: &str| st.open(name, false).and_then(|f| f.len()).map_err(io("len", name));
    let checkpoint = match (checkpoint, names.iter().filter_map(|n| checkpoint::parse_file_name(n)).max()) {
        (Some(len), _) => len,
        (None, Some(c)) => len_of(&checkpoint::file_name(c))?,
        (None, None) => 0,
    };
    let want = reserve_bytes + checkpoint;
    let name = RESERVE_FILE;
    let mut at = if names.iter().any(|n| n == name) { len_of(name)? } else { 0 };
    if at >= want {
        return Ok(true);
    }
    let f = match st.open(name, true).map_err(io("create", name)) {
        Err(Error::NoSpace) => return Ok(false),
        f => f?,
    };
    // Not zeros: a compressing file system would not store them.
    let block: Vec<u8> = (0..256u32 << 10).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut res = Ok(());
    while at < want && res.is_ok() {
        let n = block.len().min((want - at) as usize);
        res = f.write_at(&block[..n], at).map_err(io("write_at", name));
        at += n as u64;
    }
    let res = res
        .and_then(|_| f.sync_all().map_err(io("sync_all", name)))
        .and_then(|_| st.sync_dir().map_err(io("sync_dir", ".")));
    match res {
        Ok(()) => Ok(true),
        Err(Error::NoSpace) => Ok(false), // what fits stays
        Err(e) => Err(e),
    }
}

/// Gives space back on a full device so that an operation that frees space fits: removes the
/// reserve file and every checkpoint but the newest (the older ones are only a fallback).
/// True when anything went.
pub(crate) fn make_room(storage: &dyn Storage) -> Result<bool> {
    let reserve = storage.list().map_err(io("list", "."))?.iter().any(|n| n == RESERVE_FILE);
    if reserve {
        storage.remove(RESERVE_FILE).map_err(io("remove", RESERVE_FILE))?;
    }
    Ok(checkpoint::remove_below(storage, None)? || reserve)
}
