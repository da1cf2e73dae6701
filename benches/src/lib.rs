//! Helpers shared by the benchmark programs.

use std::fs;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// 1 MiB.
pub const MIB: u64 = 1 << 20;

/// Runs a command; fails with its stderr when it fails.
pub fn sh(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// Whether something is mounted at `p`.
pub fn is_mounted(p: &Path) -> bool {
    let p = p.to_string_lossy().to_string();
    fs::read_to_string("/proc/self/mounts").is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(1) == Some(&p)))
}

/// The first `name` on the `PATH` that `want` accepts.
pub fn find_in_path(name: &str, want: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    std::env::var_os("PATH")?.to_str()?.split(':').map(|d| Path::new(d).join(name)).find(|p| p.is_file() && want(p))
}

/// Reads a file whole in 1 MiB reads; returns its length.
pub fn read_file(path: &Path) -> Result<u64> {
    let mut f = fs::File::open(path)?;
    let mut buf = vec![0u8; MIB as usize];
    let mut total = 0;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

/// Bytes allocated (`st_blocks`) to the files below `p`, after a `sync`.
pub fn allocated(p: &Path) -> Result<u64> {
    sh(&mut Command::new("sync"))?;
    fn walk(p: &Path) -> u64 {
        let Ok(rd) = fs::read_dir(p) else { return 0 };
        rd.flatten()
            .map(|e| match e.metadata() {
                Ok(m) if m.is_dir() => walk(&e.path()),
                Ok(m) => m.blocks() * 512,
                Err(_) => 0,
            })
            .sum()
    }
    Ok(walk(p))
}

/// Empties the kernel's page cache (needs root).
pub fn drop_caches() -> Result<()> {
    sh(&mut Command::new("sync"))?;
    fs::write("/proc/sys/vm/drop_caches", "3").context("dropping the page cache (needs root)")
}

/// The median of some values (the upper one of an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Fast deterministic bytes: incompressible (xorshift) or compressible (words).
pub fn fill(buf: &mut [u8], seed: u64, compressible: bool) {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    if compressible {
        let words: [&[u8]; 8] = [b"the ", b"quick ", b"brown ", b"fox ", b"jumps ", b"over ", b"lazy ", b"dog\n"];
        let mut i = 0;
        while i < buf.len() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let w = words[(x % 8) as usize];
            let n = w.len().min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&w[..n]);
            i += n;
        }
    } else {
        for c in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            c.copy_from_slice(&b[..c.len()]);
        }
    }
}

/// A memory field of `/proc/PID/status` (`VmRSS`, `VmHWM`), in bytes; `None` when the process
/// or the field is gone.
pub fn proc_memory(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// The flags both comparison programs take.
#[derive(Debug)]
pub struct CompareArgs {
    /// Interleaved runs of every workload (`--runs`, default 3).
    pub runs: u64,
    /// Size multiplier (`--scale`, in (0, 16], default 1).
    pub scale: f64,
    /// Where the work directory goes (`--dir`, default the temporary directory).
    pub dir: PathBuf,
    /// Where to write the results as JSON (`--json`).
    pub json: Option<PathBuf>,
}

/// Parses the command line: `--runs`, `--scale`, `--dir` and `--json` here; any other flag and
/// its value go to `other`, which fails on a flag it does not know.
pub fn parse_compare_args(mut other: impl FnMut(&str, &str) -> Result<()>) -> Result<CompareArgs> {
    let mut a = CompareArgs { runs: 3, scale: 1.0, dir: std::env::temp_dir(), json: None };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--runs" => a.runs = val.parse().with_context(|| format!("--runs: not a number: {val}"))?,
            "--scale" => a.scale = val.parse().with_context(|| format!("--scale: not a number: {val}"))?,
            "--dir" => a.dir = val.into(),
            "--json" => a.json = Some(val.into()),
            flag => other(flag, &val)?,
        }
    }
    if !(a.scale > 0.0 && a.scale <= 16.0) || a.runs == 0 {
        bail!("--scale must be in (0, 16] and --runs at least 1");
    }
    Ok(a)
}

/// `--targets a,b,c` as kinds, by their names in `table`.
pub fn parse_targets<K: Copy>(val: &str, table: &[(&str, K)]) -> Result<Vec<K>> {
    val.split(',')
        .map(|s| match table.iter().find(|(n, _)| *n == s) {
            Some((_, k)) => Ok(*k),
            None => {
                let names: Vec<&str> = table.iter().map(|(n, _)| *n).collect();
                bail!("unknown target {s:?} ({})", names.join(", "))
            }
        })
        .collect()
}

/// Runs a benchmark program's `main`: `--help` (or `-h`) anywhere prints `usage`; an error is
/// one line on stderr and exit status 1 (no backtrace).
pub fn run_main(name: &str, usage: &str, main: impl FnOnce() -> Result<()>) {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{usage}");
        return;
    }
    if let Err(e) = main() {
        eprintln!("{name}: error: {e:#}");
        std::process::exit(1);
    }
}

/// A source-like tree: nested directories, text files of 100 B to 64 KiB.
pub fn make_tree(root: &Path, files: u64) -> Result<u64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut total = 0;
    let mut buf = vec![0u8; 64 << 10];
    for i in 0..files {
        let d = root.join(format!("d{}/s{}", i % 40, (i / 40) % 20));
        if i < 800 {
            fs::create_dir_all(&d)?;
        }
        // Sizes roughly log-uniform between 100 B and 64 KiB.
        let size = (100.0 * (655.36f64).powf((next() % 1000) as f64 / 1000.0)) as usize;
        fill(&mut buf[..size], next(), true);
        fs::write(d.join(format!("file{i}.rs")), &buf[..size])?;
        total += size as u64;
    }
    Ok(total)
}
