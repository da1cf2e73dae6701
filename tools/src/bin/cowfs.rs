//! `cowfs`: the command-line interface: mount, umount, stats. History, restore, snapshots
//! and gc arrive with their issues.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, Error, Options};

#[derive(Parser, Debug)]
#[command(name = "cowfs", version, about = "A copy-on-write, versioning filesystem")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Mount a store (created when the directory is missing or empty). Returns once the
    /// mount is live; the daemon keeps running in the background (log: STORAGE/daemon.log).
    Mount {
        /// The store directory.
        storage: PathBuf,
        /// An existing, empty directory to mount on.
        mountpoint: PathBuf,
        /// Stay attached; unmount cleanly on Ctrl-C / SIGTERM.
        #[arg(long)]
        foreground: bool,
        /// Log more.
        #[arg(long)]
        debug: bool,
    },
    /// Commit everything pending, unmount, and wait for the daemon to exit.
    Umount {
        /// The mount point.
        mountpoint: PathBuf,
    },
    /// Space and object counts of a store (offline: the store must not be in use).
    Stats {
        /// The store directory.
        #[arg(short = 's', long = "storage", env = "COWFS_STORAGE")]
        storage: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn open_existing(path: &PathBuf) -> Result<Engine> {
    if !path.is_dir() {
        bail!("{}: no such directory", path.display());
    }
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(path).with_context(|| format!("{}", path.display()))?);
    match Engine::open(st, Options { create: false, ..Options::default() }) {
        Ok(e) => Ok(e),
        Err(Error::Locked) => bail!("{}: store is in use by another process (mounted?)", path.display()),
        Err(e) => Err(anyhow::Error::new(e).context(path.display().to_string())),
    }
}

fn stats(path: &PathBuf, json: bool) -> Result<()> {
    let e = open_existing(path)?;
    let s = e.stats()?;
    e.close()?;
    let saved = s.logical_bytes.saturating_sub(s.chunk_raw_bytes);
    if json {
        let v = serde_json::json!({
            "logical_size_bytes": s.logical_bytes,
            "actual_size_bytes": s.segment_bytes,
            "chunk_raw_bytes": s.chunk_raw_bytes,
            "chunk_stored_bytes": s.chunk_stored_bytes,
            "dedup_savings_bytes": saved,
            "total_files": s.files,
            "total_inodes": s.inodes,
            "total_versions": s.versions,
            "lineages": s.lineages,
            "chunks": s.chunks,
            "unreferenced_chunks": s.unreferenced_chunks,
            "nodes": s.nodes,
            "segments": s.segments,
            "live_bytes": s.live_bytes,
            "dead_bytes": s.dead_bytes,
            "snapshots": s.snapshots,
        });
        println!("{v}");
    } else {
        let rows = [
            ("logical size (current files)", s.logical_bytes),
            ("store size on disk", s.segment_bytes),
            ("chunk bytes (raw)", s.chunk_raw_bytes),
            ("chunk bytes (stored)", s.chunk_stored_bytes),
            ("files", s.files),
            ("inodes", s.inodes),
            ("versions", s.versions),
            ("chunks", s.chunks),
            ("tree nodes", s.nodes),
            ("segments", s.segments),
            ("dead bytes", s.dead_bytes),
            ("snapshots", s.snapshots),
        ];
        for (k, v) in rows {
            println!("{k:<30} {v:>16}");
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let res = match &cli.cmd {
        Cmd::Stats { storage, json } => stats(storage, *json),
        Cmd::Mount { storage, mountpoint, foreground, debug } => {
            cowfs_tools::mount::mount(storage, mountpoint, *foreground, *debug)
        }
        Cmd::Umount { mountpoint } => cowfs_tools::mount::umount(mountpoint),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined, no backtrace.
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("cowfs: error: {}", msg.join(": "));
            ExitCode::FAILURE
        }
    }
}
