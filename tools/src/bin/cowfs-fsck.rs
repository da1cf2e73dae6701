//! `cowfs-fsck STORE [--verify-data] [--json]`: read-only consistency check of a store.
//! Exit codes like e2fsck: 0 clean, 4 errors left uncorrected, 8 operational error, 16 usage
//! error. The store's bytes are not changed. (`--repair` comes with the compaction work.)

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cowfs_engine::fsck;
use cowfs_engine::storage::DirStorage;

#[derive(Parser, Debug)]
#[command(name = "cowfs-fsck", version, about = "Check a cowfs store (read-only)")]
struct Cli {
    /// The store directory.
    storage: PathBuf,
    /// Also read, decompress and hash every chunk.
    #[arg(long)]
    verify_data: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(),
        Err(e) => {
            eprintln!("cowfs-fsck: error: {}", cowfs_tools::usage_line(&e));
            return ExitCode::from(16);
        }
    };
    if !cli.storage.is_dir() {
        eprintln!("cowfs-fsck: error: {}: no such directory", cli.storage.display());
        return ExitCode::from(8);
    }
    // DirStorage::new would create a missing directory; it exists (checked above).
    let st = match DirStorage::new(&cli.storage) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cowfs-fsck: error: {}: {e}", cli.storage.display());
            return ExitCode::from(8);
        }
    };
    let report = match fsck::check(&st, cli.verify_data) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cowfs-fsck: error: {}: {e}", cli.storage.display());
            return ExitCode::from(8);
        }
    };
    if cli.json {
        let findings: Vec<serde_json::Value> = report
            .findings
            .iter()
            .map(|f| serde_json::json!({ "place": f.place, "problem": f.problem, "error": f.error }))
            .collect();
        let v = serde_json::json!({
            "clean": report.clean(),
            "segments": report.segments,
            "objects": report.objects,
            "chunks_verified": report.chunks_verified,
            "inodes": report.inodes,
            "findings": findings,
        });
        println!("{v}");
    } else {
        for f in &report.findings {
            println!("{}: {}: {}", if f.error { "ERROR" } else { "note" }, f.place, f.problem);
        }
        println!(
            "{}: {} segments, {} objects, {} chunks hashed, {} inodes",
            if report.clean() { "clean" } else { "ERRORS FOUND" },
            report.segments,
            report.objects,
            report.chunks_verified,
            report.inodes
        );
    }
    ExitCode::from(if report.clean() { 0 } else { 4 })
}
