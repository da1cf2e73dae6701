//! Helpers shared by the benchmark programs.

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
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs a benchmark program's `main`: `--help` (or `-h`) anywhere prints `usage`; an error is
/// one line on stderr and exit status 1 (no backtrace).
pub fn run_main(name: &str, usage: &str, main: impl FnOnce() -> anyhow::Result<()>) {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        print!("{usage}");
        return;
    }
    if let Err(e) = main() {
        eprintln!("{name}: error: {e:#}");
        std::process::exit(1);
    }
}
