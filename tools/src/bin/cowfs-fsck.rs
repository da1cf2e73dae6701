//! `cowfs-fsck STORE [--verify-data] [--repair] [--json]`: consistency check of a store.
//! Read-only unless `--repair` is given (the store's bytes are unchanged by a check). With
//! `--repair`, a store with errors is repaired (see `cowfs_engine::fsck::repair`: nothing is
//! deleted, unreadable bytes are moved aside) and checked again; a store in use (mounted) is
//! refused. Exit codes like e2fsck: 0 clean, 1 errors corrected, 4 errors left uncorrected,
//! 8 operational error, 16 usage error.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use cowfs_engine::fsck::{self, Finding, Report};
use cowfs_engine::storage::DirStorage;
use cowfs_tools::protocol::{FsckFinding, FsckOutput};

#[derive(Parser, Debug)]
#[command(name = "cowfs-fsck", version, about = "Check (and with --repair, repair) a cowfs store")]
struct Cli {
    /// The store directory.
    storage: PathBuf,
    /// Also read, decompress and hash every chunk.
    #[arg(long)]
    verify_data: bool,
    /// Repair a store with errors: move unreadable records aside, cut a torn tail, rebuild
    /// the checkpoint from the log. Refused while the store is mounted.
    #[arg(long)]
    repair: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn operational(msg: String) -> ExitCode {
    eprintln!("cowfs-fsck: error: {msg}");
    ExitCode::from(8)
}

fn findings_json(f: &[Finding]) -> Vec<FsckFinding> {
    f.iter().map(|f| FsckFinding { place: f.place.clone(), problem: f.problem.clone(), error: f.error }).collect()
}

fn print(report: &Report, repaired: &[Finding], json: bool) {
    if json {
        let v = FsckOutput {
            clean: report.clean(),
            segments: report.segments,
            objects: report.objects,
            chunks_verified: report.chunks_verified,
            inodes: report.inodes,
            findings: findings_json(&report.findings),
            repaired: findings_json(repaired),
        };
        match serde_json::to_string(&v) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("cowfs-fsck: error: {e}"),
        }
        return;
    }
    for f in repaired {
        println!("REPAIRED: {}: {}", f.place, f.problem);
    }
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
        return operational(format!("{}: no such directory", cli.storage.display()));
    }
    // DirStorage::new would create a missing directory; it exists (checked above).
    let st = match DirStorage::new(&cli.storage) {
        Ok(s) => s,
        Err(e) => return operational(format!("{}: {e}", cli.storage.display())),
    };
    cowfs_tools::raise_fd_limit();
    let checked = {
        // Hashing every chunk is the long part: a bar for it on a terminal.
        let bar = cli.verify_data.then(|| cowfs_tools::progress::Progress::bytes("hashed"));
        fsck::check_with_progress(&st, cli.verify_data, &mut |d, t| bar.iter().for_each(|b| b.set(d, t)))
    };
    let report = match checked {
        Ok(r) => r,
        Err(e) => return operational(format!("{}: {e}", cli.storage.display())),
    };
    if !cli.repair || report.clean() {
        print(&report, &[], cli.json);
        return ExitCode::from(if report.clean() { 0 } else { 4 });
    }
    let repaired = match fsck::repair(&st) {
        Ok(r) => r,
        Err(cowfs_engine::Error::Locked) => {
            return operational(format!("{}: store is in use (mounted?): not repairing", cli.storage.display()));
        }
        Err(e) => return operational(format!("{}: repair failed: {e}", cli.storage.display())),
    };
    let after = match fsck::check(&st, cli.verify_data) {
        Ok(r) => r,
        Err(e) => return operational(format!("{}: {e}", cli.storage.display())),
    };
    print(&after, &repaired, cli.json);
    ExitCode::from(if after.clean() { 1 } else { 4 })
}
