//! The control protocol of the mount daemon and the `--json` outputs of `cowfs`, as types.
//!
//! A client writes one [`Request`] as a JSON line (tagged by `cmd`) to the store's
//! `control.sock` and reads one [`Reply`] line: `{"ok": OUTPUT}` or `{"error": "one line"}`.
//! Offline, `cowfs` runs the same [`Request`] on the store directly. Each command's `OUTPUT`
//! is one of the output types below, and `--json` prints it as is. Field names follow the
//! Python cowfs 0.2.8 where it had the field. DESIGN.md, "The control socket", lists them.

use serde::{Deserialize, Serialize};

/// One command for the daemon (or for the store directly).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Request {
    /// Takes a snapshot: [`SnapshotInfo`].
    SnapshotCreate {
        /// Its name.
        name: String,
        /// Free text.
        #[serde(default)]
        description: String,
    },
    /// Every snapshot, oldest first: `[SnapshotInfo]`.
    SnapshotList,
    /// One snapshot and what it holds: [`SnapshotDetail`].
    SnapshotShow {
        /// Its name.
        name: String,
    },
    /// Deletes a snapshot: [`Deleted`].
    SnapshotDelete {
        /// Its name.
        name: String,
    },
    /// What changed between two snapshots, or from one to now: [`TreeDiff`].
    SnapshotDiff {
        /// From this snapshot.
        name: String,
        /// To this one (`None`: now).
        #[serde(default)]
        to: Option<String>,
    },
    /// Brings the whole tree back to a snapshot: [`SnapshotRestored`].
    SnapshotRestore {
        /// The snapshot.
        name: String,
        /// Keep files created since.
        #[serde(default)]
        keep_new: bool,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
    },
    /// Space and counts: [`StoreStats`].
    Stats,
    /// What differs from the lower trees below a path (an overlay store): `[OverlayChange]`.
    OverlayStatus {
        /// Store path (`/`: everything).
        path: String,
    },
    /// Copies the lower bytes the entries below the paths refer to into the store (an overlay
    /// store; none: everything, and the store forgets its lower trees when nothing depends on
    /// them any more): [`AbsorbReport`].
    OverlayAbsorb {
        /// Store paths.
        paths: Vec<String>,
    },
    /// Syncs the store with a remote: [`crate::sync::Report`].
    Sync {
        /// The remote, as the store records it.
        remote: crate::sync::remote::RemoteConfig,
        /// The caller's `AWS_*` variables (credentials): the daemon's own are not used.
        #[serde(default)]
        aws_env: std::collections::BTreeMap<String, String>,
        /// Which way.
        direction: crate::sync::Direction,
        /// Only say what would be done.
        #[serde(default)]
        dry_run: bool,
    },
    /// Settles a sync conflict of a file: [`crate::sync::Resolved`].
    Resolve {
        /// Store path of the file or of a conflict copy of it.
        path: String,
        /// `mine`, `theirs`, or a version `DEVICE-SEQ`.
        keep: String,
    },
    /// The activity feed, oldest first: `[LogRow]`.
    Log {
        /// Only the newest this many.
        #[serde(default)]
        limit: Option<usize>,
        /// Only this action (its name).
        #[serde(default)]
        action: Option<String>,
        /// Only this path and below.
        #[serde(default)]
        path_prefix: Option<String>,
        /// Only at or after this time (RFC 3339).
        #[serde(default)]
        since: Option<String>,
        /// Only at or before this time (RFC 3339).
        #[serde(default)]
        until: Option<String>,
    },
    /// Applies retention rules, then compacts: [`GcReport`].
    Gc {
        /// The rules (as the store's policy file holds them).
        policy: PolicyFile,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
        /// Allow rules that keep no version of some file.
        #[serde(default)]
        force: bool,
    },
    /// Removes every version of a path from history but its current content and what
    /// snapshots hold, then compacts: [`ForgetReport`].
    Forget {
        /// The store path.
        path: String,
        /// Every file below a directory.
        #[serde(default)]
        recursive: bool,
        /// Take the files out of the snapshots too.
        #[serde(default)]
        include_snapshots: bool,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
    },
    /// Compacts: [`CompactReport`].
    Compact,
    /// Every version of a file: `[VersionRow]`.
    History {
        /// The store path.
        path: String,
    },
    /// Two versions of a file compared: [`FileDiff`].
    Diff {
        /// The store path.
        path: String,
        /// The left version.
        v1: u64,
        /// The right version (`None`: the current content).
        #[serde(default)]
        v2: Option<u64>,
    },
    /// Restores a file to a version, or a tree to a moment: [`Restored`] or [`TreeRestored`].
    Restore {
        /// The store path.
        path: String,
        /// A version number.
        #[serde(default)]
        version: Option<u64>,
        /// Or the newest version before this time (seconds since the epoch)...
        #[serde(default)]
        before_secs: Option<i64>,
        /// ... and nanoseconds.
        #[serde(default)]
        before_nanos: u32,
        /// A tree: keep files created since.
        #[serde(default)]
        keep_new: bool,
        /// Report only.
        #[serde(default)]
        dry_run: bool,
    },
}

/// A reply line: any number of `progress` lines (a long command), then `ok` or `error`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reply {
    /// How far a long command got: done and total, in its unit (bytes).
    Progress([u64; 2]),
    /// The command's output.
    Ok(serde_json::Value),
    /// Why it failed, on one line.
    Error(String),
}

/// A snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    /// Its name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// When it was taken (RFC 3339).
    pub date: String,
    /// Its id.
    pub id: u64,
}

/// A snapshot and what it holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotDetail {
    /// The snapshot.
    #[serde(flatten)]
    pub info: SnapshotInfo,
    /// Regular files in it.
    pub files: u64,
    /// Directories in it (the root not counted).
    pub directories: u64,
    /// Sum of its files' sizes.
    pub logical_size_bytes: u64,
}

/// `cowfs mount --json`: the mount is live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mounted {
    /// The mount point (absolute).
    pub mountpoint: String,
    /// The store directory (absolute).
    pub storage: String,
    /// The mount daemon's process id.
    pub pid: u32,
    /// The lower trees shown below the store (an overlay mount), the first on top.
    #[serde(default)]
    pub lowers: Vec<String>,
}

/// `cowfs mounts --json`: one cowfs mount.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MountRow {
    /// The mount point.
    pub mountpoint: String,
    /// The store directory.
    pub storage: String,
    /// The type in the mount table (`fuse.cowfs`).
    pub fstype: String,
    /// The mount's flags, as the mount table shows them (`rw,nosuid,nodev,noatime`).
    pub flags: String,
    /// The daemon's process id (none: its daemon is gone, the mount is dead).
    pub pid: Option<u32>,
    /// Bytes of the store directory's files.
    pub store_bytes: u64,
    /// The stored retention policy (all empty: every version is kept).
    pub policy: PolicyFile,
    /// The daemon's last background pass (none yet since the store was mounted).
    pub last_maintenance: Option<MaintenanceStatus>,
    /// Pending work: bytes of dead records the next compaction gives back (none: the daemon
    /// did not answer).
    pub reclaimable_bytes: Option<u64>,
}

/// The daemon's last background pass, as it records it in `STORE/maintenance.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MaintenanceStatus {
    /// When it ended (RFC 3339).
    pub time: String,
    /// When the next full pass is due (RFC 3339).
    pub next: String,
    /// What it did.
    pub report: Option<BackgroundReport>,
    /// Why it failed.
    pub error: Option<String>,
}

/// `cowfs umount --json`: unmounted, and the daemon has let go of the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unmounted {
    /// The mount point (absolute).
    pub mountpoint: String,
    /// The store directory.
    pub storage: String,
}

/// A deleted snapshot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deleted {
    /// Its name.
    pub deleted: String,
}

/// What a snapshot restore did (or would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SnapshotRestored {
    /// The snapshot.
    pub snapshot: String,
    /// Files given their content back (or recreated).
    pub files_restored: u64,
    /// Files removed (created since the snapshot).
    pub files_removed: u64,
    /// Files created since were kept.
    pub keep_new: bool,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// A path that moved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Renamed {
    /// Old path.
    pub from: String,
    /// New path.
    pub to: String,
}

/// What changed from one tree to another (like `zfs diff`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeDiff {
    /// From this snapshot.
    pub from: String,
    /// To this snapshot, or `now`.
    pub to: String,
    /// Paths only in the second tree.
    pub added: Vec<String>,
    /// Paths only in the first.
    pub removed: Vec<String>,
    /// Paths whose content, type or target changed.
    pub modified: Vec<String>,
    /// The same inode at another path.
    pub renamed: Vec<Renamed>,
}

/// Space and counts of a store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// The data of every version, holes excluded: what whole-file versioning would store.
    pub logical_size_bytes: u64,
    /// Of `logical_size_bytes`, the bytes versions read from lower trees (overlay stores):
    /// never stored, so no part of the savings.
    pub lower_bytes: u64,
    /// Sum of the current files' sizes (apparent sizes, holes included, as `ls -l`).
    pub current_size_bytes: u64,
    /// Bytes of the segment files.
    pub actual_size_bytes: u64,
    /// What chunks avoid storing: `logical_size_bytes - lower_bytes` less the raw size of the
    /// chunks referenced (0 when negative).
    pub dedup_savings_bytes: u64,
    /// The savings as a percentage of `logical_size_bytes - lower_bytes`.
    pub dedup_percentage: f64,
    /// Raw over stored chunk bytes.
    pub compression_ratio: f64,
    /// Raw bytes of the stored chunks.
    pub chunk_raw_bytes: u64,
    /// Their stored (compressed) bytes.
    pub chunk_stored_bytes: u64,
    /// Regular files.
    pub total_files: u64,
    /// Inodes.
    pub total_inodes: u64,
    /// Versions.
    pub total_versions: u64,
    /// Lineages with a version.
    pub lineages: u64,
    /// Chunks.
    pub chunks: u64,
    /// Chunks nothing references.
    pub unreferenced_chunks: u64,
    /// Content-tree nodes.
    pub nodes: u64,
    /// Segment files.
    pub segments: u64,
    /// Bytes of frames compaction keeps.
    pub live_bytes: u64,
    /// The rest.
    pub dead_bytes: u64,
    /// Snapshots.
    pub snapshots: u64,
}

/// An entry of the activity feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogRow {
    /// When (RFC 3339).
    pub time: String,
    /// What (its name).
    pub action: String,
    /// The store path it was about (`None`: the whole store, e.g. a snapshot).
    pub path: Option<String>,
    /// A rename's new path.
    pub to: Option<String>,
    /// The version it made.
    pub version: Option<u64>,
    /// That version's id.
    pub version_id: Option<String>,
    /// That version's content hash (`empty` for an empty file).
    pub hash: Option<String>,
    /// Free text.
    pub detail: String,
}

/// How an entry of an overlay store differs from its lower trees (`cowfs overlay status`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverlayChange {
    /// Store path (a deleted entry: where it was).
    pub path: String,
    /// `added`, `modified`, `metadata`, `renamed` or `deleted`.
    pub change: String,
    /// Where it is in the lower trees, when it was moved since.
    pub from: Option<String>,
    /// A modified file: its bytes stored in the store (the rest is read from the lower file).
    pub stored_bytes: u64,
}

/// What `cowfs overlay absorb` did and what is left.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorbReport {
    /// Directories listed from the lower trees first.
    pub listed_dirs: u64,
    /// Lower files absorbed now.
    pub files: u64,
    /// Lower bytes read (and stored, deduplicated) for them.
    pub bytes: u64,
    /// Lower files in scope absorbed by an earlier run.
    pub already: u64,
    /// Lower files (or directories) that could not be read: the store still depends on them.
    pub failed: Vec<AbsorbFailure>,
    /// Directories anywhere in the store still not listed from the lower trees.
    pub unlisted_dirs: u64,
    /// Lower files anywhere in the store that content still reads from the lower trees.
    pub lower_files: u64,
    /// The store no longer depends on lower trees and forgot them: it mounts without them.
    pub detached: bool,
}

/// A lower file or directory `cowfs overlay absorb` could not read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AbsorbFailure {
    /// Its path in the lower tree.
    pub path: String,
    /// Why.
    pub reason: String,
}

impl From<cowfs_engine::absorb::Report> for AbsorbReport {
    fn from(r: cowfs_engine::absorb::Report) -> Self {
        AbsorbReport {
            listed_dirs: r.listed_dirs,
            files: r.files,
            bytes: r.bytes,
            already: r.already,
            failed: r.failed.into_iter().map(|(path, reason)| AbsorbFailure { path, reason }).collect(),
            unlisted_dirs: r.unlisted_dirs,
            lower_files: r.lower_files,
            detached: r.detached,
        }
    }
}

/// A version of a file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionRow {
    /// Its number.
    pub version: u64,
    /// When it was saved (RFC 3339).
    pub date: String,
    /// Its size.
    pub size: u64,
    /// Its content hash (`empty` for an empty file).
    pub hash: String,
    /// It is the file's current content.
    pub current: bool,
    /// Its id.
    pub version_id: String,
}

/// A file restored to a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Restored {
    /// The store path.
    pub path: String,
    /// The version its content came from.
    pub restored_from_version: u64,
    /// That content's hash.
    pub target_hash: String,
    /// Its size.
    pub target_size: u64,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// A tree restored to a moment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TreeRestored {
    /// The store path of the tree (`/`: everything).
    pub path: String,
    /// The moment (RFC 3339): the tree as it was just before it.
    pub before: String,
    /// Files given their content back (or recreated).
    pub files_restored: u64,
    /// Files removed (created since).
    pub files_removed: u64,
    /// Files created since were kept.
    pub keep_new: bool,
    /// Nothing was changed.
    pub dry_run: bool,
}

/// What `restore` did: a file's or a tree's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RestoreOutput {
    /// A tree (it has `before`).
    Tree(TreeRestored),
    /// A file.
    File(Restored),
}

/// A version's number, or `current` (the file's content now).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum VersionRef {
    /// A version number.
    Number(u64),
    /// The word `current`.
    Current(String),
}

/// Two versions of a file compared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileDiff {
    /// The store path.
    pub path: String,
    /// `text` (a unified diff follows) or `binary`.
    pub mode: String,
    /// The left version.
    pub left_version: u64,
    /// The right version.
    pub right_version: VersionRef,
    /// Left size.
    pub left_size: u64,
    /// Right size.
    pub right_size: u64,
    /// Right size minus left size.
    pub size_delta: i64,
    /// Left content hash.
    pub left_hash: String,
    /// Right content hash.
    pub right_hash: String,
    /// The contents are equal.
    pub same_content: bool,
    /// The unified diff (`text` mode; empty otherwise).
    pub diff: String,
}

/// Retention rules and excluded paths, as the store's policy file holds them.
pub use cowfs_engine::policy::PolicyFile;

/// A version a retention run looked at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcVersion {
    /// The file's path (its last path, for a deleted file).
    pub path: String,
    /// The file is deleted.
    pub deleted: bool,
    /// The version's number.
    pub version: u64,
    /// When it was saved (RFC 3339).
    pub date: String,
    /// Its size.
    pub size: u64,
    /// Kept (else pruned).
    pub kept: bool,
    /// Why it is kept.
    pub reasons: Vec<String>,
}

/// What a retention run did (or would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GcReport {
    /// Versions pruned.
    pub versions_pruned: u64,
    /// Sum of their sizes.
    pub versions_pruned_bytes: u64,
    /// Bytes of objects only they held.
    pub reclaimed_bytes: u64,
    /// Nothing was changed.
    pub dry_run: bool,
    /// Deleted files still open (their content is kept until closed).
    pub deleted_files_still_open: u64,
    /// Every version looked at.
    pub versions: Vec<GcVersion>,
    /// Bytes of the segment files before the compaction that followed (not in a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_bytes_before: Option<u64>,
    /// ... and after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_bytes_after: Option<u64>,
}

/// What `cowfs forget` did (or would do).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForgetReport {
    /// The path forgotten.
    pub path: String,
    /// Nothing was changed.
    pub dry_run: bool,
    /// The files leave the snapshots too.
    pub include_snapshots: bool,
    /// Histories (files, deleted ones included) it looked at.
    pub files: u64,
    /// Versions forgotten.
    pub versions_forgotten: u64,
    /// Sum of their sizes.
    pub versions_forgotten_bytes: u64,
    /// Versions kept as some file's current content (delete the file to forget them).
    pub kept_current: u64,
    /// Versions kept because a snapshot holds them.
    pub kept_by_snapshots: u64,
    /// The snapshots holding the files (that keep them, or that they leave with
    /// `include_snapshots`).
    pub snapshots: Vec<String>,
    /// Every version of those histories, forgotten or kept, and why.
    pub versions: Vec<GcVersion>,
    /// Bytes of the segment files before the compaction that followed (not in a dry run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_bytes_before: Option<u64>,
    /// ... and after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_bytes_after: Option<u64>,
}

/// What a compaction did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompactReport {
    /// Bytes of the segment files before.
    pub bytes_before: u64,
    /// ... after.
    pub bytes_after: u64,
    /// The difference.
    pub reclaimed_bytes: u64,
    /// Segments rewritten.
    pub segments_compacted: u64,
    /// Objects forgotten.
    pub objects_forgotten: u64,
    /// Longest hold of the writer by the forget step (µs).
    pub forget_pause_us: u64,
    /// Hold of the writer by the switch (µs).
    pub switch_pause_us: u64,
}

/// What a background pass of the daemon did (for its log).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackgroundReport {
    /// Versions the stored policy pruned.
    pub versions_pruned: u64,
    /// Bytes the space guard had to free (0: it had nothing to do).
    pub space_short_bytes: u64,
    /// Versions the space guard pruned, oldest first.
    pub space_versions_pruned: u64,
    /// Bytes still short when the guard stopped (only current contents and snapshots left).
    pub space_still_short_bytes: u64,
    /// Segments rewritten.
    pub segments_compacted: u64,
    /// Bytes of the segment files before.
    pub bytes_before: u64,
    /// ... after.
    pub bytes_after: u64,
    /// Longest hold of the writer by the forget step (µs).
    pub forget_pause_us: u64,
    /// Hold of the writer by the switch (µs).
    pub switch_pause_us: u64,
}

impl From<&cowfs_engine::maintenance::PassReport> for BackgroundReport {
    fn from(r: &cowfs_engine::maintenance::PassReport) -> Self {
        let g = r.guard.clone().unwrap_or_default();
        BackgroundReport {
            versions_pruned: r.versions_pruned,
            space_short_bytes: g.shortfall_bytes,
            space_versions_pruned: g.versions_pruned,
            space_still_short_bytes: g.still_short_bytes,
            segments_compacted: r.compaction.segments_compacted,
            bytes_before: r.compaction.bytes_before,
            bytes_after: r.compaction.bytes_after,
            forget_pause_us: r.compaction.forget_micros,
            switch_pause_us: r.compaction.switch_micros,
        }
    }
}

/// A problem `cowfs-fsck` found (or repaired).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsckFinding {
    /// Where: a file and offset, or a path / inode.
    pub place: String,
    /// What is wrong.
    pub problem: String,
    /// False for what opening the store repairs by itself (a torn tail).
    pub error: bool,
}

/// What `cowfs-fsck --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsckOutput {
    /// No error found.
    pub clean: bool,
    /// Segments read.
    pub segments: u64,
    /// Objects checked.
    pub objects: u64,
    /// Chunks whose data was read and hashed.
    pub chunks_verified: u64,
    /// Inodes checked.
    pub inodes: u64,
    /// Problems, in the order found.
    pub findings: Vec<FsckFinding>,
    /// What `--repair` repaired.
    pub repaired: Vec<FsckFinding>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wire format: requests tagged by `cmd` in kebab case, unknown fields refused,
    /// replies as `{"ok": ...}` / `{"error": ...}`.
    #[test]
    fn requests_and_replies_have_their_wire_shape() {
        let r: Request = serde_json::from_str(r#"{"cmd":"snapshot-create","name":"a"}"#).unwrap();
        assert_eq!(r, Request::SnapshotCreate { name: "a".into(), description: String::new() });
        let r: Request = serde_json::from_str(r#"{"cmd":"gc","policy":{"keep_last":3},"dry_run":true}"#).unwrap();
        let Request::Gc { policy, dry_run: true, force: false } = r else { panic!("{r:?}") };
        assert_eq!(policy.keep_last, Some(3));
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"history","path":"/a","pth":"/b"}"#).is_err());
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"histroy","path":"/a"}"#).is_err());
        let line = serde_json::to_string(&Reply::Error("no".into())).unwrap();
        assert_eq!(line, r#"{"error":"no"}"#);
        let line = serde_json::to_string(&Reply::Ok(serde_json::json!([]))).unwrap();
        assert_eq!(line, r#"{"ok":[]}"#);
    }
}
