//! `cowfs`'s command line: the commands, their arguments and their help.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cowfs_tools::protocol::PolicyFile;

#[derive(Parser, Debug)]
#[command(name = "cowfs", version, about = "A copy-on-write, versioning filesystem")]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub(crate) enum Cmd {
    /// Mount a store (created when the directory is missing or empty). Returns once the
    /// mount is live; the daemon keeps running in the background (log: STORAGE/daemon.log).
    Mount {
        /// The store directory.
        storage: PathBuf,
        /// An existing, empty directory to mount on; or an existing, empty regular file, which
        /// then shows a virtual copy of the one file given by --lower.
        mountpoint: PathBuf,
        /// Stay attached; unmount cleanly on Ctrl-C / SIGTERM.
        #[arg(long)]
        foreground: bool,
        /// Log more.
        #[arg(long)]
        debug: bool,
        /// Print JSON once the mount is live (not with --foreground).
        #[arg(long, conflicts_with = "foreground")]
        json: bool,
        /// Show this read-only directory tree below the store's own files: an overlay mount,
        /// whose changes go to the store and never to the tree. Repeat for more trees, the
        /// first on top. The store records them; later mounts without --lower use them. With a
        /// file as the mount point: the one file it is a virtual copy of.
        #[arg(long = "lower", value_name = "DIR|FILE")]
        lowers: Vec<PathBuf>,
        /// Replace the lower trees the store records with those given by --lower.
        #[arg(long)]
        relower: bool,
        /// Mount options, comma-separated, as mount(8) takes them: ro, rw, nosuid, suid, nodev,
        /// dev, noexec, exec, allow_other, noatime, nodiratime, default_permissions,
        /// lower=DIR[:DIR...] (as --lower); remount (with ro/rw, nosuid, nodev, noexec: change the
        /// live mount at MOUNTPOINT).
        #[arg(short = 'o', value_name = "OPTIONS")]
        options: Vec<String>,
    },
    /// Every version of a file (also of a deleted one), oldest first.
    History {
        /// A path in the mount (relative to the current directory), or store-relative like
        /// /docs/a.txt.
        path: String,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Make an old version the file's newest version (undoable: it is a new version); brings
    /// deleted files back. Given a directory or /, with --before: the whole subtree becomes
    /// what it was then (no snapshot needed; later files are removed unless --keep-new, and
    /// keep their history).
    #[command(group(clap::ArgGroup::new("pick").required(true).args(["version", "before"])))]
    Restore {
        /// A path in the mount (relative to the current directory), or store-relative like
        /// /docs/a.txt.
        path: String,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// The version number to restore.
        #[arg(long)]
        version: Option<u64>,
        /// Restore the newest version saved before this time (a tree: as it was at this time):
        /// RFC 3339 with an offset, or YYYY-MM-DD[ HH:MM[:SS]] in the local time zone.
        #[arg(long)]
        before: Option<String>,
        /// Tree restore: keep files created after that time.
        #[arg(long)]
        keep_new: bool,
        /// Report what would be restored; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compare two versions of a file (a unified diff for text, a size and hash summary for
    /// binary; --version N compares version N with the current content), or two trees
    /// (--snapshot A [--snapshot B], B defaulting to now: added, removed, modified, renamed).
    Diff {
        /// Store-relative path, or a path inside the mount point (not with --snapshot).
        path: Option<String>,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Left version.
        #[arg(long, requires = "v2", conflicts_with_all = ["version", "snapshot"])]
        v1: Option<u64>,
        /// Right version.
        #[arg(long, requires = "v1")]
        v2: Option<u64>,
        /// Compare this version with the current content.
        #[arg(long, conflicts_with = "snapshot")]
        version: Option<u64>,
        /// Compare the tree of snapshot A (given once) with now, or with snapshot B (twice).
        #[arg(long, num_args = 1, action = clap::ArgAction::Append)]
        snapshot: Vec<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The activity feed, oldest first: writes (versions), creates, deletes, renames,
    /// mkdir/rmdir, links, attribute changes, restores, snapshot create/delete/restore.
    Log {
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Only the newest N entries.
        #[arg(long)]
        limit: Option<usize>,
        /// Only this action (create, write, delete, rename, mkdir, rmdir, link, symlink, attr,
        /// xattr, restore, snapshot-create, snapshot-delete, snapshot-restore, gc).
        #[arg(long)]
        action: Option<String>,
        /// Only entries about this path or below it (store path, or a path in the mount).
        #[arg(long)]
        path_prefix: Option<String>,
        /// Only entries at or after this time (RFC 3339, or local YYYY-MM-DD[ HH:MM[:SS]]).
        #[arg(long)]
        since: Option<String>,
        /// Only entries at or before this time (same forms as --since).
        #[arg(long)]
        until: Option<String>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Prune old versions by keep rules (a version is kept if any rule keeps it; the current
    /// content of every file and everything a snapshot holds always stay), then compact so the
    /// space comes back. Without rules, the stored policy's apply.
    Gc {
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        #[command(flatten)]
        keep: KeepArgs,
        /// Report what would be pruned and reclaimed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// List every version with why it is kept, or that it is pruned.
        #[arg(long)]
        explain: bool,
        /// Allow rules that keep no old version of any file.
        #[arg(long)]
        force: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove every version of a path from history (a secret saved by mistake, a big file
    /// deleted long ago), then compact so its data leaves the store. A live file keeps its
    /// current content (delete the file first to forget that too); versions snapshots hold
    /// stay unless --include-snapshots.
    Forget {
        /// The file (live, or deleted there), or with --recursive a directory (in the mount, or
        /// store-relative like /docs/secret.txt).
        path: String,
        /// The store directory (default: the store mounted where the path is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Every file below the directory, deleted ones included.
        #[arg(short, long)]
        recursive: bool,
        /// Take the files out of every snapshot too, so that their versions there go as well
        /// (the snapshots keep everything else).
        #[arg(long)]
        include_snapshots: bool,
        /// Report what would be forgotten; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// List every version with what happens to it.
        #[arg(long)]
        explain: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The retention policy stored in the store, which the mount's daemon applies in the
    /// background and `gc` uses when given no rules.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE", global = true)]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Named snapshots of the whole tree.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapCmd,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE", global = true)]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Remotes this store syncs with: an S3 bucket (s3://BUCKET[/PREFIX]) or a directory
    /// (file:///PATH: a USB disk, a NAS folder).
    Remote {
        #[command(subcommand)]
        cmd: RemoteCmd,
        /// The store directory (default: the store mounted where the current directory is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE", global = true)]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Upload what this device changed that the remote lacks, and apply what the other
    /// devices uploaded (on a mounted store through its daemon: the mount shows it at once).
    Sync {
        /// The remote (default: the store's only one).
        name: Option<String>,
        /// Only upload.
        #[arg(long, conflicts_with = "pull")]
        push: bool,
        /// Only download and apply (this device's changes are recorded, not uploaded).
        #[arg(long)]
        pull: bool,
        /// Say what would be uploaded and downloaded; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// The store directory (default: the store mounted where the current directory is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Make a new store from a remote (every device's tree, as the union shows it), with the
    /// remote recorded as "origin"; then `cowfs mount STORE MNT`.
    Clone {
        /// s3://BUCKET[/PREFIX] or file:///PATH.
        url: String,
        /// The new store (a missing or empty directory).
        store: PathBuf,
        #[command(flatten)]
        s3: S3Args,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The conflicts the tree shows after the last sync: copies of concurrent versions, and
    /// entries that lost their name to another.
    Conflicts {
        /// The store directory (default: the store mounted where the current directory is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Settle a sync conflict of a file: it gets the content of the version kept (a restore,
    /// undoable) and its conflict copies go; the next sync settles it on every device.
    Resolve {
        /// The file, or one of its conflict copies (in the mount, or store-relative).
        path: String,
        /// mine (this device's version), theirs (the other device's newest), or a version
        /// DEVICE-SEQ as `cowfs conflicts` names it.
        #[arg(long)]
        keep: String,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Overlay stores (mounted with --lower): how the store differs from its lower trees.
    Overlay {
        #[command(subcommand)]
        cmd: OverlayCmd,
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE", global = true)]
        storage: Option<PathBuf>,
        /// Print JSON.
        #[arg(long, global = true)]
        json: bool,
    },
    /// Commit everything pending, unmount, and wait for the daemon to exit.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
        /// Print JSON once the daemon has exited.
        #[arg(long)]
        json: bool,
    },
    /// List the cowfs mounts of this machine: mount point, store, daemon, store size, flags,
    /// retention policy.
    Mounts {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script: `cowfs completions bash > /etc/bash_completion.d/cowfs`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page cowfs(1) in roff (`cowfs man | man -l -`); with --dir, write it and
    /// one page per command (cowfs-mount.1, cowfs-history.1, ...) into DIR.
    Man {
        /// Write every page into this existing directory (e.g. /usr/local/share/man/man1).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// With --dir: print the pages written as JSON.
        #[arg(long, requires = "dir")]
        json: bool,
    },
    /// Space and object counts of a store.
    Stats {
        /// The store directory (default: the store mounted where the path, or else the
        /// current directory, is).
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: Option<PathBuf>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Keep rules (restic `forget` semantics).
#[derive(clap::Args, Debug, Clone)]
pub(crate) struct KeepArgs {
    /// Keep the newest N versions of each file.
    #[arg(long)]
    pub(crate) keep_last: Option<u64>,
    /// Prune only versions saved before this time (RFC 3339, or local YYYY-MM-DD[ HH:MM[:SS]]).
    #[arg(long)]
    pub(crate) before: Option<String>,
    /// Keep versions saved within this span of now: e.g. 12h, 30d, 2w, 6m (months), 1y6m.
    #[arg(long)]
    pub(crate) keep_within: Option<String>,
    /// Keep the newest version of each of the last N hours that have one.
    #[arg(long)]
    pub(crate) keep_hourly: Option<u64>,
    /// ... of each of the last N days (local time).
    #[arg(long)]
    pub(crate) keep_daily: Option<u64>,
    /// ... of each of the last N ISO weeks.
    #[arg(long)]
    pub(crate) keep_weekly: Option<u64>,
    /// ... of each of the last N months.
    #[arg(long)]
    pub(crate) keep_monthly: Option<u64>,
}

impl KeepArgs {
    /// The rules in a policy's form (dates and spans checked here, before anything runs).
    pub(crate) fn to_policy(&self, exclude: &[String]) -> Result<PolicyFile> {
        let before = self.before.as_deref().map(cowfs_tools::history::parse_time).transpose()?;
        if let Some(w) = &self.keep_within {
            cowfs_engine::gc::parse_within(w).map_err(anyhow::Error::msg)?;
        }
        Ok(PolicyFile {
            keep_last: self.keep_last,
            keep_after: before.map(|t| t.rfc3339()),
            keep_within: self.keep_within.clone(),
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
            exclude: exclude.to_vec(),
            ..PolicyFile::default()
        })
    }
}

#[derive(Subcommand, Debug)]
pub(crate) enum PolicyCmd {
    /// Print the stored policy.
    Show,
    /// Change the stored policy: keep rules and excludes, when any is given, replace the
    /// stored ones together; --min-free and --max-size each replace their own setting; what
    /// is not given stays.
    Set {
        #[command(flatten)]
        keep: Box<KeepArgs>,
        /// Paths that keep no history, only their current content (gitignore-style: `*.tmp`,
        /// `target/`, `node_modules/`, `/build/out`). Repeatable.
        #[arg(long, action = clap::ArgAction::Append)]
        exclude: Vec<String>,
        /// Keep every version: no keep rule (the space guard still applies).
        #[arg(long, conflicts_with_all = ["keep_last", "before", "keep_within", "keep_hourly", "keep_daily", "keep_weekly", "keep_monthly"])]
        keep_all: bool,
        /// Free space to keep on the store's device, a percent (10%) or a size (5GiB): below
        /// it the daemon prunes the oldest versions (never current contents or snapshots).
        /// `none`: no floor.
        #[arg(long)]
        min_free: Option<String>,
        /// Most space the store may take (50GiB): above it the daemon prunes the oldest
        /// versions. `none`: no limit.
        #[arg(long)]
        max_size: Option<String>,
        /// Start from the policy new stores get (the flags given change it).
        #[arg(long)]
        recommended: bool,
    },
}

/// Where an S3 remote is and how to reach it (credentials: the standard AWS_* variables).
#[derive(clap::Args, Debug, Clone, Default)]
pub(crate) struct S3Args {
    /// The S3 endpoint, e.g. https://s3.example.com (default: AWS_ENDPOINT, else AWS).
    #[arg(long)]
    pub(crate) endpoint: Option<String>,
    /// The region (default: AWS_REGION or AWS_DEFAULT_REGION, else us-east-1).
    #[arg(long)]
    pub(crate) region: Option<String>,
    /// Allow a plain http:// endpoint (credentials and data travel unencrypted).
    #[arg(long)]
    pub(crate) allow_http: bool,
}

#[derive(Subcommand, Debug)]
pub(crate) enum RemoteCmd {
    /// Record a remote (its URL is checked; the remote is first written by `cowfs sync`).
    Add {
        /// Its name in this store (letters, digits, '-', '_', '.').
        name: String,
        /// s3://BUCKET[/PREFIX] or file:///PATH.
        url: String,
        #[command(flatten)]
        s3: S3Args,
    },
    /// The remotes recorded.
    List,
    /// Forget a remote (nothing on it is removed).
    Remove {
        /// Its name.
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum OverlayCmd {
    /// What differs from the lower trees, like `git status`: entries added, modified (with
    /// the bytes stored), changed in metadata only, renamed, deleted. Reads only.
    Status {
        /// Below this path (in the mount, or store-relative like /docs; default: everything).
        path: Option<String>,
    },
    /// Copy the lower bytes the store still refers to into it (resumable; safe against a crash
    /// at any point). Without paths: everything, and a store left depending on no lower tree
    /// forgets its lower trees and mounts without them.
    Absorb {
        /// Only what is below these paths (in the mount, or store-relative like /docs).
        paths: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub(crate) enum SnapCmd {
    /// Capture the whole tree now (O(1)); durable when the command returns.
    Create {
        /// A unique name (1 to 255 bytes, no '/').
        name: String,
        /// Free text.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// All snapshots, oldest first.
    List,
    /// One snapshot and what it holds.
    Show {
        /// The snapshot.
        name: String,
    },
    /// Make the tree what the snapshot captured (non-destructive: every change is a new
    /// version; removed files keep their history).
    Restore {
        /// The snapshot.
        name: String,
        /// Keep files created after the snapshot.
        #[arg(long)]
        keep_new: bool,
        /// Report what would change; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete a snapshot (its data stays until gc).
    Delete {
        /// The snapshot.
        name: String,
    },
}
