//! `cowfs-bench`: engine benchmarks that print numbers and assert nothing.
//!
//! ```text
//! cowfs-bench ingest [--mib N] [--threads T] [--dir D]   chunk+hash+compress+append throughput
//! cowfs-bench open [--files N] [--chunks-per-file K] [--dir D]   open time: checkpoint vs full replay;
//!                                                        activity log and tree-at-a-moment times
//! cowfs-bench history [--versions N]                      `cowfs history` of a file with N versions
//! cowfs-bench compaction [--versions N]                   small-write latency with/without compaction (N writes)
//! cowfs-bench sync [--mib N] [--files N] [--dir D]         sync against a local SeaweedFS (S3)
//! cowfs-bench smoke                                      all, small (seconds), for CI
//! ```

use std::sync::Arc;
use std::time::Instant;

mod sync_bench;

use anyhow::{Context, Result, bail};
use cowfs_benches::fill;
use cowfs_engine::ChunkParams;
use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, InodeId, Options, inspect};

struct Args {
    cmd: String,
    mib: u64,
    threads: usize,
    files: u64,
    chunks_per_file: u64,
    versions: u64,
    dir: Option<std::path::PathBuf>,
}

fn parse() -> Result<Args> {
    let mut it = std::env::args().skip(1);
    let cmd = it.next().unwrap_or_else(|| "smoke".into());
    if !["ingest", "open", "history", "compaction", "sync", "smoke"].contains(&cmd.as_str()) {
        bail!("unknown command {cmd} (ingest, open, history, compaction, sync, smoke)");
    }
    let mut a = Args { cmd, mib: 1024, threads: 2, files: 100_000, chunks_per_file: 10, versions: 10_000, dir: None };
    while let Some(flag) = it.next() {
        let val = it.next().with_context(|| format!("{flag} needs a value"))?;
        let num = || val.parse::<u64>().with_context(|| format!("{flag}: not a number: {val}"));
        match flag.as_str() {
            "--mib" => a.mib = num()?,
            "--threads" => a.threads = num()? as usize,
            "--files" => a.files = num()?,
            "--chunks-per-file" => a.chunks_per_file = num()?,
            "--versions" => a.versions = num()?,
            "--dir" => a.dir = Some(val.into()),
            other => bail!("unknown flag {other}"),
        }
    }
    Ok(a)
}

fn workdir(a: &Args) -> Result<(tempfile::TempDir, std::path::PathBuf)> {
    let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let t = tempfile::tempdir_in(&base)?;
    let p = t.path().join("store");
    Ok((t, p))
}

fn ingest(a: &Args, compressible: bool) -> Result<f64> {
    let (_t, path) = workdir(a)?;
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(&path)?);
    let e = Engine::open(st, Options::default())?;
    let per_thread = a.mib << 20;
    let start = Instant::now();
    std::thread::scope(|s| -> Result<()> {
        let mut hs = Vec::new();
        for t in 0..a.threads {
            let e = e.clone();
            hs.push(s.spawn(move || -> Result<()> {
                let ino = e.create_file(InodeId::ROOT, format!("f{t}").as_bytes(), 0o644)?.ino;
                let mut w = e.open_file(ino)?;
                let mut buf = vec![0u8; 1 << 20];
                let mut off = 0;
                while off < per_thread {
                    fill(&mut buf, off ^ (t as u64) << 40, compressible);
                    w.write(off, &buf)?;
                    off += buf.len() as u64;
                }
                w.commit(true)?;
                Ok(())
            }));
        }
        for h in hs {
            h.join().expect("ingest thread panicked")?;
        }
        Ok(())
    })?;
    let secs = start.elapsed().as_secs_f64();
    let total = per_thread * a.threads as u64;
    let stored = e.stats()?.segment_bytes;
    let rate = total as f64 / secs / 1e6;
    println!(
        "ingest {:>14}: {:>6} MiB in {:>6.2} s = {:>7.1} MB/s with {} threads (stored {:.1} MiB, fsync at end)",
        if compressible { "compressible" } else { "incompressible" },
        total >> 20,
        secs,
        rate,
        a.threads,
        stored as f64 / (1 << 20) as f64
    );
    e.close()?;
    Ok(rate)
}

fn open_bench(a: &Args) -> Result<()> {
    // COWFS_BENCH_STORE=DIR keeps the built store there, and reuses it when it exists.
    let kept = std::env::var_os("COWFS_BENCH_STORE").map(std::path::PathBuf::from);
    let (_t, path) = match &kept {
        Some(p) => (None, p.clone()),
        None => workdir(a).map(|(t, p)| (Some(t), p))?,
    };
    let opts = Options { chunking: ChunkParams { min: 64, avg: 256, max: 1024 }, ..Options::default() };
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(&path)?);
    if kept.is_none() || !path.join("STORE").exists() {
        build_store(a, st.clone(), opts)?;
    }
    open_rest(st, opts, &path)
}

/// `files` files of `chunks_per_file` distinct small chunks, 1000 per directory.
fn build_store(a: &Args, st: Arc<dyn Storage>, opts: Options) -> Result<()> {
    let e = Engine::open(st, opts)?;
    let build = Instant::now();
    let piece = 200usize;
    let mut buf = vec![0u8; piece * a.chunks_per_file as usize];
    let dirs = a.files.div_ceil(1000);
    for d in 0..dirs {
        let dir = e.mkdir(InodeId::ROOT, format!("d{d}").as_bytes(), 0o755, 0, 0)?.ino;
        for f in 0..1000.min(a.files - d * 1000) {
            let n = d * 1000 + f;
            let ino = e.create_file(dir, format!("f{f}").as_bytes(), 0o644)?.ino;
            // Pieces shorter than the minimum chunk, separated by writes at chunk-size
            // boundaries: each piece becomes its own chunk, all distinct.
            fill(&mut buf, n, false);
            let mut w = e.open_file(ino)?;
            for (k, p) in buf.chunks(piece).enumerate() {
                w.write((k * 1024) as u64, p)?;
                w.flush()?;
            }
            w.commit(false)?;
        }
    }
    e.sync()?;
    let stats = e.stats()?;
    println!(
        "open: built {} files, {} chunks, {} nodes, {:.1} MiB in {:.1} s",
        stats.files,
        stats.chunks,
        stats.nodes,
        stats.segment_bytes as f64 / (1 << 20) as f64,
        build.elapsed().as_secs_f64()
    );
    e.close()?;
    Ok(())
}

fn open_rest(st: Arc<dyn Storage>, opts: Options, path: &std::path::Path) -> Result<()> {
    let t = Instant::now();
    let report = inspect(st.as_ref(), true)?;
    println!("open: full replay of the log: {:.3} s ({} records)", t.elapsed().as_secs_f64(), report.replayed_records);
    let t = Instant::now();
    let e = Engine::open(st, opts)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "open: from checkpoint {:?}: {:.3} s ({} records replayed after it)",
        e.open_report().checkpoint,
        secs,
        e.open_report().replayed_records
    );
    // Time travel reads the whole log: the activity feed and the tree at a moment.
    let t = Instant::now();
    let log = e.activity()?;
    println!("open: activity log of {} entries in {:.3} s", log.len(), t.elapsed().as_secs_f64());
    let mid = log[log.len() / 2].time;
    let t = Instant::now();
    let ns = e.namespace_at(mid)?;
    println!("open: tree at mid-history ({} inodes) in {:.3} s", ns.inodes.len(), t.elapsed().as_secs_f64());
    e.close()?;
    mount_rss(path)
}

/// Mounts the store with the real daemon (when `cowfs` is next to this program and we may
/// mount): the time `cowfs mount` takes, the daemon's memory after mounting and after a walk
/// of the whole tree.
fn mount_rss(store: &std::path::Path) -> Result<()> {
    let cowfs = std::env::current_exe()?.with_file_name("cowfs");
    if !cowfs.is_file() || !std::path::Path::new("/dev/fuse").exists() {
        println!("open: mount not measured ({} or /dev/fuse missing)", cowfs.display());
        return Ok(());
    }
    let mnt = store.with_file_name("mnt");
    std::fs::create_dir_all(&mnt)?;
    let t = Instant::now();
    let st = std::process::Command::new(&cowfs).arg("mount").arg(store).arg(&mnt).status()?;
    if !st.success() {
        bail!("cowfs mount failed");
    }
    let secs = t.elapsed().as_secs_f64();
    let pid: u32 = std::fs::read_to_string(store.join("daemon.pid"))?.trim().parse()?;
    let rss = |field: &str| -> Result<u64> {
        cowfs_benches::proc_memory(pid, field).map(|b| b >> 20).with_context(|| format!("{field} of the daemon"))
    };
    println!("open: cowfs mount took {secs:.3} s; daemon RSS {} MiB", rss("VmRSS")?);
    let t = Instant::now();
    let out = std::process::Command::new("find").arg(&mnt).arg("-type").arg("f").output()?;
    let n = out.stdout.iter().filter(|&&b| b == b'\n').count();
    println!(
        "open: find over the mount ({n} files) in {:.2} s; daemon RSS {} MiB, peak {} MiB",
        t.elapsed().as_secs_f64(),
        rss("VmRSS")?,
        rss("VmHWM")?
    );
    let st = std::process::Command::new(&cowfs).arg("umount").arg(&mnt).status()?;
    if !st.success() {
        bail!("cowfs umount failed");
    }
    Ok(())
}

fn history_bench(a: &Args, versions: u64) -> Result<()> {
    let (_t, path) = workdir(a)?;
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(&path)?);
    let e = Engine::open(st, Options::default())?;
    let ino = e.create_file(InodeId::ROOT, b"busy.txt", 0o644)?.ino;
    let build = Instant::now();
    for i in 0..versions {
        let mut w = e.open_file(ino)?;
        w.truncate(0)?;
        w.write(0, format!("version {i}\n").as_bytes())?;
        w.commit(false)?;
    }
    e.sync()?;
    let built = build.elapsed().as_secs_f64();
    let t = Instant::now();
    let rows = cowfs_tools::history::history(&e, "/busy.txt")?;
    let once = t.elapsed().as_secs_f64();
    let n = rows.len();
    let json = Instant::now();
    let text = serde_json::to_string(&rows)?;
    let ser = json.elapsed().as_secs_f64();
    println!(
        "history: {n} versions listed in {:.1} ms (+{:.1} ms to JSON, {} KiB); built in {built:.1} s",
        once * 1e3,
        ser * 1e3,
        text.len() >> 10
    );
    e.close()?;
    Ok(())
}

/// p50/p99/max of small writes (4 KiB file, write + commit), with and without compaction
/// running: the compactor loops (prune everything of deleted files, full compaction) while a
/// churn thread writes and deletes 1 MiB files to give it work.
fn compaction_bench(a: &Args) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let (_t, path) = workdir(a)?;
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(&path)?);
    let e = Engine::open(st, Options { segment_size: 8 << 20, ..Options::default() })?;
    let measure = |label: &str, n: usize| -> Result<()> {
        let mut lat = Vec::with_capacity(n);
        let mut buf = vec![0u8; 4096];
        for i in 0..n {
            fill(&mut buf, i as u64, false);
            let t = Instant::now();
            let name = format!("small{}", i % 500);
            let ino = match e.lookup(InodeId::ROOT, name.as_bytes()) {
                Ok(f) => f.ino,
                Err(_) => e.create_file(InodeId::ROOT, name.as_bytes(), 0o644)?.ino,
            };
            let mut w = e.open_file(ino)?;
            w.write(0, &buf)?;
            w.commit(false)?;
            lat.push(t.elapsed().as_secs_f64() * 1e3);
            std::thread::sleep(std::time::Duration::from_micros(500)); // a user's pace, not a flood
        }
        lat.sort_by(f64::total_cmp);
        let q = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize];
        println!(
            "compaction: small writes {label}: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({n} writes)",
            q(0.5),
            q(0.99),
            lat[lat.len() - 1]
        );
        Ok(())
    };
    let stop = Arc::new(AtomicBool::new(false));
    let churn = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || -> Result<u64> {
            let mut buf = vec![0u8; 1 << 20];
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                fill(&mut buf, 1_000_000 + n, false);
                let ino = e.create_file(InodeId::ROOT, format!("churn{n}").as_bytes(), 0o644)?.ino;
                let mut w = e.open_file(ino)?;
                w.write(0, &buf)?;
                w.commit(false)?;
                drop(w);
                e.unlink(InodeId::ROOT, format!("churn{n}").as_bytes(), false)?;
                n += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            Ok(n)
        })
    };
    measure("with churn, no compaction", a.versions as usize)?;
    let compactor = {
        let (e, stop) = (e.clone(), stop.clone());
        std::thread::spawn(move || -> Result<(u64, u64, u64)> {
            let (mut runs, mut forget_max, mut switch_max) = (0, 0, 0);
            while !stop.load(Ordering::Relaxed) {
                let rules = cowfs_engine::gc::Rules { keep_last: Some(1), ..Default::default() };
                let plan = e.gc_plan(&rules, cowfs_engine::Timestamp::now(), &|_| false)?;
                if !plan.prunes.is_empty() {
                    e.prune(plan.prunes)?;
                }
                let r = e.compact(cowfs_engine::compact::Policy::FULL, &mut |_, _| {})?;
                forget_max = forget_max.max(r.forget_micros);
                switch_max = switch_max.max(r.switch_micros);
                runs += 1;
            }
            Ok((runs, forget_max, switch_max))
        })
    };
    measure("with churn and compaction running", a.versions as usize)?;
    stop.store(true, Ordering::Relaxed);
    let churned = churn.join().map_err(|_| anyhow::anyhow!("churn thread panicked"))??;
    let (runs, forget_max, switch_max) = compactor.join().map_err(|_| anyhow::anyhow!("compactor panicked"))??;
    println!(
        "compaction: {runs} compactions while {churned} MiB were written and deleted; longest forget {:.3} ms, longest switch (with checkpoint) {:.3} ms",
        forget_max as f64 / 1e3,
        switch_max as f64 / 1e3
    );
    e.close()?;
    Ok(())
}

fn main() {
    cowfs_benches::run_main("cowfs-bench", USAGE, run);
}

const USAGE: &str = "\
cowfs-bench ingest [--mib N] [--threads T] [--dir D]   chunk+hash+compress+append throughput
cowfs-bench open [--files N] [--chunks-per-file K] [--dir D]   open time (checkpoint, replay), mount time and RSS
cowfs-bench history [--versions N]                      `cowfs history` of a file with N versions
cowfs-bench compaction [--versions N]                   small-write latency with/without compaction
cowfs-bench sync [--mib N] [--files N] [--dir D]         push, no-op sync, pull of edits, clone (S3, SeaweedFS)
cowfs-bench smoke                                      all, small (seconds), for CI
";

fn run() -> Result<()> {
    let mut a = parse()?;
    match a.cmd.as_str() {
        "ingest" => {
            ingest(&a, false)?;
            ingest(&a, true)?;
        }
        "open" => open_bench(&a)?,
        "history" => history_bench(&a, a.versions)?,
        "compaction" => compaction_bench(&a)?,
        "sync" => {
            let base = a.dir.clone().unwrap_or_else(std::env::temp_dir);
            sync_bench::sync_bench(&base, a.mib, a.files)?;
        }
        "smoke" => {
            a.mib = 32;
            ingest(&a, false)?;
            ingest(&a, true)?;
            a.files = 2000;
            open_bench(&a)?;
            history_bench(&a, 1000)?;
            a.versions = 300;
            compaction_bench(&a)?;
        }
        other => bail!("unknown command {other} (ingest, open, history, compaction, sync, smoke)"),
    }
    Ok(())
}
