//! `cowfs-compact STORE [--json]`: a full compaction now — through the mount's daemon when the
//! store is mounted, on the store directly when not. Shows progress on a terminal; reports the
//! store's bytes before and after. A second run right after finds nothing to do.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, Error, Options};
use cowfs_tools::progress::Progress;
use cowfs_tools::protocol::{CompactReport, Request};

#[derive(Parser, Debug)]
#[command(name = "cowfs-compact", version, about = "Reclaim the space of data nothing references any more")]
struct Cli {
    /// The store directory.
    storage: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn run(cli: &Cli) -> Result<CompactReport> {
    let bar = Progress::bytes("compacted");
    if let Some(sock) = cowfs_tools::control::socket_of(&cli.storage) {
        let out = cowfs_tools::control::request(&sock, &Request::Compact, &mut |d, t| bar.set(d, t))?;
        return serde_json::from_value(out).context("the daemon's output has an unexpected shape");
    }
    if !cli.storage.is_dir() {
        bail!("{}: no such directory", cli.storage.display());
    }
    let st: Arc<dyn Storage> =
        Arc::new(DirStorage::new(&cli.storage).with_context(|| cli.storage.display().to_string())?);
    cowfs_tools::raise_fd_limit();
    let e = match Engine::open(st, Options { create: false, ..Options::default() }) {
        Ok(e) => e,
        Err(Error::Locked) => bail!("{}: store is in use by another process", cli.storage.display()),
        Err(e) => return Err(anyhow::Error::new(e).context(cli.storage.display().to_string())),
    };
    let out = cowfs_tools::gc::compact(&e, &mut |d, t| bar.set(d, t));
    drop(bar);
    let out = out?;
    // A compaction that changed nothing leaves the store's bytes alone.
    if out.segments_compacted == 0 {
        e.close_without_checkpoint()?
    } else {
        e.close()?
    }
    Ok(out)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("cowfs-compact: error: {}", cowfs_tools::usage_line(&e));
            return ExitCode::from(2);
        }
    };
    match run(&cli) {
        Ok(v) if cli.json => match serde_json::to_string(&v) {
            Ok(line) => {
                println!("{line}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cowfs-compact: error: {e}");
                ExitCode::FAILURE
            }
        },
        Ok(v) => {
            println!(
                "compacted {} segments: {} -> {} bytes ({} reclaimed)",
                v.segments_compacted, v.bytes_before, v.bytes_after, v.reclaimed_bytes
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("cowfs-compact: error: {}", cowfs_tools::control::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
