//! `cowfs-compare`: the same workloads, in one run, against cowfs, the disk directly (the
//! physical ceiling), a FUSE passthrough (`bindfs --multithreaded`, the FUSE ceiling) and the
//! Python cowfs 0.2.8 (`pip install cowfs`, the peer). Prints every figure, the median of
//! `--runs` runs, and the ratio cowfs / other. Runs are interleaved (run 1 of every workload
//! on every target, then run 2, ...; the target order rotates) so machine noise spreads
//! evenly. Needs root (mounts, dropping the page cache).
//!
//! ```text
//! cowfs-compare [--runs N] [--scale F] [--targets disk,bindfs,cowfs,pycowfs]
//!               [--only big,text,small,tree,dup,edits,sqlite] [--dir D] [--json FILE]
//! ```
//!
//! `--scale` multiplies the sizes (1 GiB files, 10,000 small files, a 30,000-file tree,
//! 256 MiB duplicate, 100 MB SQLite database); `--scale 0.01` is the CI smoke. A target whose
//! tool is missing (bindfs, the Python cowfs) is left out with a note.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cowfs_benches::{
    CompareArgs, MIB, allocated, drop_caches, fill, find_in_path, is_mounted, make_tree, median, parse_compare_args,
    parse_targets, read_file, sh,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Disk,
    Bindfs,
    Cowfs,
    PyCowfs,
}

impl Kind {
    fn name(self) -> &'static str {
        KINDS.iter().find(|(_, k)| *k == self).map_or("?", |(n, _)| n)
    }
}

/// One file system under test: where the workloads run, and what to measure the space of.
struct Target {
    kind: Kind,
    /// Backing directory (store or source).
    store: PathBuf,
    /// Where the workloads run.
    root: PathBuf,
    /// The Python cowfs runs in the foreground: its process.
    child: Option<Child>,
    tool: PathBuf,
}

impl Target {
    fn new(kind: Kind, base: &Path) -> Result<Option<Target>> {
        let dir = base.join(kind.name());
        let store = dir.join("store");
        let root = dir.join("mnt");
        fs::create_dir_all(&store)?;
        fs::create_dir_all(&root)?;
        let tool = match kind {
            Kind::Disk => PathBuf::new(),
            Kind::Bindfs => match find_in_path("bindfs", |_| true) {
                Some(p) => p,
                None => return Ok(None),
            },
            Kind::Cowfs => std::env::current_exe()?.with_file_name("cowfs"),
            // The Python package's entry point is also called `cowfs`: the first one on the
            // PATH that is a script (ours is a binary), or COWFS_PY.
            Kind::PyCowfs => match std::env::var_os("COWFS_PY")
                .map(PathBuf::from)
                .or_else(|| find_in_path("cowfs", |p| fs::read(p).is_ok_and(|b| b.starts_with(b"#!"))))
            {
                Some(p) => p,
                None => return Ok(None),
            },
        };
        if kind == Kind::Cowfs && !tool.is_file() {
            bail!("{} not found (build with cargo build --release)", tool.display());
        }
        let mut t = Target { kind, store, root, child: None, tool };
        if kind == Kind::Disk {
            fs::remove_dir(&t.root)?;
            t.root = t.store.clone();
        }
        t.mount()?;
        Ok(Some(t))
    }

    fn mount(&mut self) -> Result<()> {
        match self.kind {
            Kind::Disk => {}
            Kind::Bindfs => sh(Command::new(&self.tool).arg("--multithreaded").arg(&self.store).arg(&self.root))?,
            Kind::Cowfs => sh(Command::new(&self.tool).arg("mount").arg(&self.store).arg(&self.root))?,
            Kind::PyCowfs => {
                let log = fs::File::create(self.store.with_file_name("pycowfs.log"))?;
                let child = Command::new(&self.tool)
                    .arg("mount")
                    .arg(&self.store)
                    .arg(&self.root)
                    .stdout(log.try_clone()?)
                    .stderr(log)
                    .spawn()
                    .context("starting the Python cowfs")?;
                self.child = Some(child);
                let t0 = Instant::now();
                while !is_mounted(&self.root) {
                    if t0.elapsed() > Duration::from_secs(30) {
                        bail!("the Python cowfs did not mount within 30 s");
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        Ok(())
    }

    fn umount(&mut self) -> Result<()> {
        match self.kind {
            Kind::Disk => {}
            Kind::Cowfs => sh(Command::new(&self.tool).arg("umount").arg(&self.root))?,
            Kind::Bindfs | Kind::PyCowfs => {
                sh(Command::new("fusermount3").arg("-u").arg(&self.root))?;
                if let Some(mut c) = self.child.take() {
                    c.wait()?;
                }
            }
        }
        Ok(())
    }

    /// After a workload failed (the Python cowfs can crash): unmount whatever is left and
    /// mount again.
    fn remount_after_failure(&mut self) -> Result<()> {
        if self.kind == Kind::Disk {
            return Ok(());
        }
        if is_mounted(&self.root) {
            sh(Command::new("fusermount3").arg("-u").arg("-z").arg(&self.root))?;
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            c.wait()?;
        }
        std::thread::sleep(Duration::from_millis(500));
        self.mount()
    }

    /// Caches emptied: the kernel's page cache and, for FUSE targets, the daemon's.
    fn go_cold(&mut self) -> Result<()> {
        self.umount()?;
        drop_caches()?;
        self.mount()
    }

    /// Bytes allocated to the store (or the directory) now.
    fn usage(&self) -> Result<u64> {
        allocated(&self.store)
    }

    /// Peak resident memory of the daemon (cowfs), in bytes.
    fn daemon_peak_rss(&self) -> Option<u64> {
        let pid = match self.kind {
            Kind::Cowfs => fs::read_to_string(self.store.join("daemon.pid")).ok()?.trim().parse::<u32>().ok()?,
            Kind::PyCowfs => self.child.as_ref()?.id(),
            _ => return None,
        };
        cowfs_benches::proc_memory(pid, "VmHWM")
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.kind != Kind::Disk && is_mounted(&self.root) {
            let _ = self.umount();
        }
    }
}

/// One measured value: name, value, unit, and whether higher is better.
type Metric = (String, f64, &'static str, bool);

fn rate(name: &str, bytes: u64, t: Duration) -> Metric {
    (name.into(), bytes as f64 / MIB as f64 / t.as_secs_f64(), "MiB/s", true)
}
fn per_sec(name: &str, n: u64, t: Duration) -> Metric {
    (name.into(), n as f64 / t.as_secs_f64(), "/s", true)
}
fn secs(name: &str, t: Duration) -> Metric {
    (name.into(), t.as_secs_f64(), "s", false)
}
fn bytes(name: &str, b: i64) -> Metric {
    (name.into(), b as f64, "B", false)
}

/// Writes `size` bytes (1 MiB per `write`) and fsyncs; returns how long that took. The
/// bytes are made first, so the time is the file system's alone (making text took as long
/// as writing it to the disk).
fn write_file(path: &Path, size: u64, seed: u64, compressible: bool) -> Result<Duration> {
    let mut data = vec![0u8; size as usize];
    for (i, piece) in data.chunks_mut(MIB as usize).enumerate() {
        fill(piece, seed.wrapping_add(i as u64), compressible);
    }
    let t0 = Instant::now();
    let mut f = fs::File::create(path)?;
    for piece in data.chunks(MIB as usize) {
        f.write_all(piece)?;
    }
    f.sync_all()?;
    Ok(t0.elapsed())
}

fn growth(t: &Target, before: u64) -> Result<i64> {
    Ok(t.usage()? as i64 - before as i64)
}

/// 1 GiB written with fsync (incompressible), read cold and warm, a 4 KiB overwrite in its
/// middle, and `cp` of it inside the file system.
fn big(t: &mut Target, size: u64, run: u64) -> Result<Vec<Metric>> {
    let dir = t.root.join(format!("big{run}"));
    fs::create_dir(&dir)?;
    let file = dir.join("big");
    let mut out = Vec::new();
    let u0 = t.usage()?;
    let took = write_file(&file, size, run * 7919, false)?;
    out.push(rate("seq write+fsync, random", size, took));
    out.push(bytes("  store growth", growth(t, u0)?));
    t.go_cold()?;
    let t0 = Instant::now();
    let n = read_file(&file)?;
    out.push(rate("seq read cold", n, t0.elapsed()));
    let t0 = Instant::now();
    let n = read_file(&file)?;
    out.push(rate("seq read warm", n, t0.elapsed()));
    let u0 = t.usage()?;
    let t0 = Instant::now();
    {
        let f = fs::OpenOptions::new().write(true).open(&file)?;
        let mut block = vec![0u8; 4096];
        fill(&mut block, run + 1_000_003, false);
        f.write_all_at(&block, size / 2)?;
        f.sync_all()?;
    }
    out.push(("4 KiB overwrite+fsync+close in the middle".into(), t0.elapsed().as_secs_f64() * 1e3, "ms", false));
    out.push(bytes("  store growth", growth(t, u0)?));
    let u0 = t.usage()?;
    let t0 = Instant::now();
    sh(Command::new("cp").arg(&file).arg(dir.join("copy")))?;
    out.push(secs("cp of the file inside", t0.elapsed()));
    out.push(bytes("  store growth", growth(t, u0)?));
    fs::remove_dir_all(&dir)?;
    Ok(out)
}

/// 1 GiB of compressible text written with fsync.
fn text(t: &mut Target, size: u64, run: u64) -> Result<Vec<Metric>> {
    let file = t.root.join(format!("text{run}"));
    let u0 = t.usage()?;
    let took = write_file(&file, size, run * 104_729, true)?;
    let out = vec![rate("seq write+fsync, text", size, took), bytes("  store growth", growth(t, u0)?)];
    fs::remove_file(&file)?;
    Ok(out)
}

/// 10,000 files of 4 KiB: create+write+close, read back, stat, unlink.
fn small(t: &mut Target, count: u64, run: u64) -> Result<Vec<Metric>> {
    let dir = t.root.join(format!("small{run}"));
    fs::create_dir(&dir)?;
    let mut buf = vec![0u8; 4096];
    let t0 = Instant::now();
    for i in 0..count {
        fill(&mut buf, run * 1_000_000 + i, false);
        fs::write(dir.join(format!("f{i}")), &buf)?;
    }
    let mut out = vec![per_sec("4 KiB files: create+write+close", count, t0.elapsed())];
    let t0 = Instant::now();
    for i in 0..count {
        if fs::read(dir.join(format!("f{i}")))?.len() != 4096 {
            bail!("short read of f{i}");
        }
    }
    out.push(per_sec("  read back", count, t0.elapsed()));
    let t0 = Instant::now();
    for i in 0..count {
        fs::metadata(dir.join(format!("f{i}")))?;
    }
    out.push(per_sec("  stat", count, t0.elapsed()));
    let t0 = Instant::now();
    for i in 0..count {
        fs::remove_file(dir.join(format!("f{i}")))?;
    }
    out.push(per_sec("  unlink", count, t0.elapsed()));
    fs::remove_dir(&dir)?;
    Ok(out)
}

/// `cp -r` of the tree into the file system, then `find` stat-ing every entry.
fn tree(t: &mut Target, source: &Path, files: u64, run: u64) -> Result<Vec<Metric>> {
    let dst = t.root.join(format!("tree{run}"));
    let t0 = Instant::now();
    sh(Command::new("cp").arg("-r").arg(source).arg(&dst))?;
    let mut out = vec![per_sec(&format!("cp -r of a {files}-file tree (files)"), files, t0.elapsed())];
    let t0 = Instant::now();
    let found = Command::new("find").arg(&dst).args(["-printf", "%s %m %T@\n"]).stderr(Stdio::null()).output()?;
    let lines = found.stdout.iter().filter(|&&b| b == b'\n').count();
    if lines < files as usize {
        bail!("find saw {lines} entries, expected {files}+");
    }
    out.push(per_sec("  find + stat of it (entries)", lines as u64, t0.elapsed()));
    fs::remove_dir_all(&dst)?;
    Ok(out)
}

/// The same 256 MiB written twice under two names: the second copy's store growth.
fn dup(t: &mut Target, size: u64, run: u64) -> Result<Vec<Metric>> {
    let (a, b) = (t.root.join(format!("dup{run}a")), t.root.join(format!("dup{run}b")));
    write_file(&a, size, run * 31 + 5, false)?;
    let u0 = t.usage()?;
    write_file(&b, size, run * 31 + 5, false)?;
    let out = vec![bytes("second copy of a file: store growth", growth(t, u0)?)];
    fs::remove_file(&a)?;
    fs::remove_file(&b)?;
    Ok(out)
}

/// 50 small edits of a 16 MiB file, saved in place and by writing a temporary + rename.
fn edits(t: &mut Target, run: u64) -> Result<Vec<Metric>> {
    const SIZE: u64 = 16 * MIB;
    const EDITS: u64 = 50;
    let file = t.root.join(format!("edit{run}"));
    write_file(&file, SIZE, run * 13 + 1, true)?;
    let mut x = run + 17;
    let mut pos = || {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (x >> 20) % (SIZE - 100)
    };
    let u0 = t.usage()?;
    let t0 = Instant::now();
    for i in 0..EDITS {
        let mut f = fs::OpenOptions::new().write(true).open(&file)?;
        f.seek(SeekFrom::Start(pos()))?;
        f.write_all(format!("edit {i} in place").as_bytes())?;
        f.sync_all()?;
    }
    let mut out = vec![
        secs("50 in-place edits of a 16 MiB file", t0.elapsed()),
        bytes("  store growth per edit", growth(t, u0)? / EDITS as i64),
    ];
    let mut content = fs::read(&file)?;
    let tmp = t.root.join(format!("edit{run}.tmp"));
    let u0 = t.usage()?;
    let t0 = Instant::now();
    for i in 0..EDITS {
        let p = pos() as usize;
        let e = format!("edit {i} by rename");
        content[p..p + e.len()].copy_from_slice(e.as_bytes());
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&content)?;
        f.sync_all()?;
        fs::rename(&tmp, &file)?;
    }
    out.push(secs("50 temp+rename saves of it", t0.elapsed()));
    out.push(bytes("  store growth per save", growth(t, u0)? / EDITS as i64));
    fs::remove_file(&file)?;
    Ok(out)
}

const SQLITE_SCRIPT: &str = r#"
import os, random, sqlite3, sys, time
path, rows, txs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
db = sqlite3.connect(path)
db.execute("create table t (id integer primary key, v blob)")
with db:
    db.executemany("insert into t values (?, ?)", ((i, os.urandom(1000)) for i in range(rows)))
db.close()
print("loaded", flush=True)
sys.stdin.readline()
db = sqlite3.connect(path)
rnd = random.Random(7)
t0 = time.monotonic()
for _ in range(txs):
    with db:
        db.execute("update t set v = ? where id = ?", (os.urandom(1000), rnd.randrange(rows)))
print(time.monotonic() - t0, flush=True)
"#;

/// A SQLite database of 100 MB under random single-row update transactions.
fn sqlite(t: &mut Target, rows: u64, txs: u64, run: u64) -> Result<Vec<Metric>> {
    let db = t.root.join(format!("db{run}.sqlite"));
    let mut child = Command::new("python3")
        .args(["-c", SQLITE_SCRIPT])
        .arg(&db)
        .arg(rows.to_string())
        .arg(txs.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("python3 (for the SQLite workload)")?;
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    let mut line = String::new();
    let mut u0 = 0;
    let mut step = || -> Result<f64> {
        std::io::BufRead::read_line(&mut stdout, &mut line)?;
        if line.trim() != "loaded" {
            bail!("the SQLite script failed while loading (its error is above)");
        }
        u0 = t.usage()?;
        child.stdin.take().expect("piped").write_all(b"go\n")?;
        line.clear();
        std::io::BufRead::read_line(&mut stdout, &mut line)?;
        line.trim().parse().with_context(|| format!("the SQLite script said {line:?}"))
    };
    let elapsed = step();
    if elapsed.is_err() {
        let _ = child.kill();
    }
    child.wait()?;
    let elapsed = elapsed?;
    let out = vec![
        (format!("SQLite {} MB, random updates (transactions)", rows / 1000), txs as f64 / elapsed, "/s", true),
        bytes("  store growth per transaction", growth(t, u0)? / txs as i64),
    ];
    fs::remove_file(&db)?;
    Ok(out)
}

struct Args {
    common: CompareArgs,
    targets: Vec<Kind>,
    only: Option<Vec<String>>,
}

const KINDS: [(&str, Kind); 4] =
    [("disk", Kind::Disk), ("bindfs", Kind::Bindfs), ("cowfs", Kind::Cowfs), ("pycowfs", Kind::PyCowfs)];

fn parse() -> Result<Args> {
    let (mut targets, mut only) = (KINDS.iter().map(|(_, k)| *k).collect(), None);
    let common = parse_compare_args(|flag, val| {
        match flag {
            "--targets" => targets = parse_targets(val, &KINDS)?,
            "--only" => only = Some(val.split(',').map(String::from).collect()),
            other => bail!("unknown flag {other}"),
        }
        Ok(())
    })?;
    Ok(Args { common, targets, only })
}

const WORKLOADS: [&str; 7] = ["big", "text", "small", "tree", "dup", "edits", "sqlite"];

fn main() {
    cowfs_benches::run_main("cowfs-compare", USAGE, run);
}

const USAGE: &str = "\
cowfs-compare [--runs 3] [--scale 1] [--targets disk,bindfs,cowfs,pycowfs]
              [--only big,text,small,tree,dup,edits,sqlite] [--dir D] [--json FILE]
Runs every workload on every target, interleaved; prints medians and ratios (docs/PERFORMANCE.md).
";

fn run() -> Result<()> {
    let Args { common: a, targets: asked, only } = parse()?;
    let s = |n: f64| ((n * a.scale) as u64).max(1);
    let big_size = s(1024.0) * MIB;
    let (n_small, n_tree, dup_size) = (s(10_000.0).max(100), s(30_000.0).max(200), s(256.0) * MIB);
    let (rows, txs) = (s(100_000.0).max(1000), s(500.0).max(50));
    let work = tempfile::tempdir_in(&a.dir)
        .with_context(|| format!("--dir {}: cannot make a work directory in it", a.dir.display()))?;
    let source = work.path().join("source");
    let tree_bytes = make_tree(&source, n_tree)?;
    println!(
        "# cowfs-compare: {} run(s), scale {}; big file {} MiB; tree {n_tree} files ({} MiB)",
        a.runs,
        a.scale,
        big_size / MIB,
        tree_bytes / MIB
    );
    let mut targets = Vec::new();
    for k in &asked {
        match Target::new(*k, work.path())? {
            Some(t) => targets.push(t),
            None => println!("# {} left out: its tool is not installed", k.name()),
        }
    }
    // results[workload metric][target] = values over runs
    let mut order: Vec<String> = Vec::new();
    let mut results: BTreeMap<String, BTreeMap<Kind, Vec<f64>>> = BTreeMap::new();
    let mut units: BTreeMap<String, (&'static str, bool)> = BTreeMap::new();
    let mut failures = Vec::new();
    for run in 0..a.runs {
        for w in WORKLOADS {
            if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == w)) {
                continue;
            }
            let n = targets.len();
            for i in 0..n {
                let t = &mut targets[(i + run as usize) % n];
                let t0 = Instant::now();
                let metrics = match w {
                    "big" => big(t, big_size, run),
                    "text" => text(t, big_size, run),
                    "small" => small(t, n_small, run),
                    "tree" => tree(t, &source, n_tree, run),
                    "dup" => dup(t, dup_size, run),
                    "edits" => edits(t, run),
                    _ => sqlite(t, rows, txs, run),
                };
                let metrics = match metrics {
                    Ok(m) => m,
                    Err(e) => {
                        // Reported and left out of the figures; the target is mounted afresh.
                        println!("# run {} {w} on {} FAILED: {e:#}", run + 1, t.kind.name());
                        failures.push(format!("{w} on {}: {e:#}", t.kind.name()));
                        t.remount_after_failure()?;
                        continue;
                    }
                };
                let rss =
                    t.daemon_peak_rss().map_or(String::new(), |r| format!(", daemon peak RSS so far {} MiB", r / MIB));
                eprintln!("# run {} {w} on {}: {:.1} s{rss}", run + 1, t.kind.name(), t0.elapsed().as_secs_f64());
                for (k, (name, v, unit, higher)) in metrics.into_iter().enumerate() {
                    let key = format!("{w}/{k:02} {name}");
                    if !order.contains(&key) {
                        order.push(key.clone());
                    }
                    units.insert(key.clone(), (unit, higher));
                    results.entry(key).or_default().entry(t.kind).or_default().push(v);
                }
            }
        }
    }
    let kinds: Vec<Kind> = targets.iter().map(|t| t.kind).collect();
    print!("{:<52}", "workload (median)");
    for k in &kinds {
        print!("{:>13}", k.name());
    }
    for k in kinds.iter().filter(|k| **k != Kind::Cowfs) {
        print!("{:>15}", format!("cowfs/{}", k.name()));
    }
    println!();
    let mut json = serde_json::Map::new();
    for key in &order {
        let (unit, higher) = units[key];
        let name = key.split_once(' ').map_or(key.as_str(), |(_, n)| n);
        print!("{:<52}", format!("{name} [{unit}]"));
        let med: BTreeMap<Kind, f64> = results[key].iter().map(|(k, v)| (*k, median(v))).collect();
        for k in &kinds {
            print!("{:>13}", med.get(k).map_or("-".into(), |v| format_value(*v, unit)));
        }
        let ours = med.get(&Kind::Cowfs).copied();
        let mut ratios = serde_json::Map::new();
        for k in kinds.iter().filter(|k| **k != Kind::Cowfs) {
            // "x" = how many times better cowfs is (>1: cowfs better), whatever the unit's direction.
            let r = match (ours, med.get(k)) {
                (Some(o), Some(v)) if *v > 0.0 && o > 0.0 => Some(if higher { o / v } else { v / o }),
                _ => None,
            };
            print!("{:>15}", r.map_or("-".into(), |r| format!("{r:.2}x")));
            ratios.insert(k.name().into(), r.into());
        }
        println!();
        let values: serde_json::Map<String, serde_json::Value> =
            results[key].iter().map(|(k, v)| (k.name().to_string(), serde_json::json!(v))).collect();
        json.insert(
            key.clone(),
            serde_json::json!({"unit": unit, "higher_is_better": higher, "runs": values, "cowfs_better_by": ratios}),
        );
    }
    println!("# ratios: cowfs's advantage (>1 cowfs better, <1 worse), whichever way the unit points");
    for t in &targets {
        if let Some(rss) = t.daemon_peak_rss() {
            println!("# {} daemon peak RSS: {} MiB", t.kind.name(), rss / MIB);
            json.insert(format!("peak_rss_mib/{}", t.kind.name()), (rss / MIB).into());
        }
    }
    for f in &failures {
        println!("# failed: {f}");
    }
    json.insert("failures".into(), serde_json::json!(failures));
    if let Some(p) = &a.json {
        fs::write(p, serde_json::to_string_pretty(&json)?)?;
    }
    drop(targets);
    Ok(())
}

fn format_value(v: f64, unit: &str) -> String {
    match unit {
        "B" if v.abs() >= MIB as f64 => format!("{:.1}Mi", v / MIB as f64),
        "B" if v.abs() >= 1024.0 => format!("{:.1}Ki", v / 1024.0),
        "B" => format!("{v:.0}"),
        _ if v >= 100.0 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    }
}
