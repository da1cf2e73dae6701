//! The mount table: cowfs mounts by mount point and by store, `cowfs mounts`, and a mount's
//! access-time flags for its daemon.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use cowfs_fuse::fs::{AtimeRule, FlagSource, MountFlags};

use crate::background::MAINTENANCE_STATUS;

/// The FUSE type in the mount table: `findmnt -t fuse.cowfs`, `df -t fuse.cowfs`, fstab.
pub const FSTYPE: &str = "fuse.cowfs";

/// One mounted filesystem, from /proc/self/mountinfo.
#[derive(Debug)]
pub struct MountEntry {
    /// Where it is mounted.
    pub target: PathBuf,
    /// Filesystem type (`fuse.cowfs` for ours).
    pub fstype: String,
    /// The source: for cowfs, the store directory.
    pub source: String,
    /// The device number, `major:minor`.
    pub device: String,
    /// The filesystem's own options (for FUSE: `user_id=0,...,allow_other`).
    pub options: String,
    /// The mount's flags (`rw,nosuid,nodev,noatime`).
    pub flags: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every mount of this process's namespace.
pub fn mounts() -> Result<Vec<MountEntry>> {
    let text = fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 5 || r.len() < 2 {
            continue;
        }
        out.push(MountEntry {
            target: PathBuf::from(unescape(l[4])),
            fstype: r[0].to_string(),
            source: unescape(r[1]),
            device: l[2].to_string(),
            options: r.get(2).map_or(String::new(), |o| o.to_string()),
            flags: l.get(5).map_or(String::new(), |o| o.to_string()),
        });
    }
    Ok(out)
}

/// A FUSE mount whose source is a cowfs store (the daemon names the store as the source;
/// daemons started before cowfs mounted as type `fuse.cowfs` show plain `fuse`).
pub(crate) fn is_cowfs(m: &MountEntry) -> bool {
    (m.fstype == FSTYPE || m.fstype == "fuse") && Path::new(&m.source).join("STORE").exists()
}

/// The store of the cowfs mount that `path` (absolute) is in: the innermost one.
pub fn store_of(path: &Path) -> Result<Option<PathBuf>> {
    let inside = mounts()?.into_iter().filter(|m| is_cowfs(m) && path.starts_with(&m.target));
    Ok(inside.max_by_key(|m| m.target.as_os_str().len()).map(|m| PathBuf::from(m.source)))
}

/// The pid the store's daemon recorded (`STORE/daemon.pid`), if any.
pub(crate) fn daemon_pid(store: &Path) -> Option<u32> {
    fs::read_to_string(store.join("daemon.pid")).ok().and_then(|s| s.trim().parse().ok())
}

/// `cowfs mounts`: every cowfs mount of this mount namespace, in mount order.
pub fn cowfs_mounts() -> Result<Vec<crate::protocol::MountRow>> {
    let mut rows = Vec::new();
    for m in mounts()?.into_iter().filter(is_cowfs) {
        let store = Path::new(&m.source);
        let pid = daemon_pid(store).filter(|pid| Path::new(&format!("/proc/{pid}")).exists());
        let mut store_bytes = 0u64;
        for e in fs::read_dir(store).with_context(|| format!("reading store {}", store.display()))? {
            let meta = e?.metadata()?;
            if meta.is_file() {
                store_bytes = store_bytes.saturating_add(meta.len());
            }
        }
        let policy = crate::gc::load_policy(store).with_context(|| format!("store {}", store.display()))?.to_file();
        let last_maintenance =
            fs::read(store.join(MAINTENANCE_STATUS)).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let reclaimable_bytes = crate::control::socket_of(store)
            .and_then(|sock| crate::control::request(&sock, &crate::protocol::Request::Stats, &mut |_, _| {}).ok())
            .and_then(|v| v["dead_bytes"].as_u64());
        rows.push(crate::protocol::MountRow {
            mountpoint: m.target.display().to_string(),
            storage: m.source.clone(),
            fstype: m.fstype.clone(),
            flags: m.flags.clone(),
            pid,
            store_bytes,
            policy,
            last_maintenance,
            reclaimable_bytes,
        });
    }
    Ok(rows)
}

/// The flags of the mount at `mnt` the daemon follows, as the mount table shows them (a
/// remount changes them; `CowFs` asks at most once a second). Not listed (being unmounted),
/// or the table unreadable: no access times, not read-only.
pub(crate) fn mount_flags(mnt: PathBuf) -> FlagSource {
    Box::new(move || mount_at(&mnt).ok().flatten().map(|m| flags_of(&m.flags)).unwrap_or_default())
}

/// The flags the daemon follows from a mount's flags (`rw,nosuid,relatime`): a read-only or
/// `noatime` mount records no access times; neither `relatime` nor `noatime` shown is
/// `strictatime`.
fn flags_of(flags: &str) -> MountFlags {
    let has = |f: &str| flags.split(',').any(|x| x == f);
    let rule = match (has("ro") || has("noatime"), has("relatime")) {
        (true, _) => AtimeRule::Never,
        (false, true) => AtimeRule::Relative,
        (false, false) => AtimeRule::Strict,
    };
    MountFlags { rule, nodiratime: has("nodiratime"), read_only: has("ro") }
}

/// The mount at `path` (absolute), the last mounted there.
pub(crate) fn mount_at(path: &Path) -> Result<Option<MountEntry>> {
    Ok(mounts()?.into_iter().rev().find(|m| m.target == path))
}
