//! `cowfs-compare-overlay`: the overlay workloads of issue 22 on the peers — the kernel's
//! overlayfs, fuse-overlayfs and unionfs-fuse `-o cow` over one read-only lower tree — next to
//! the ceilings: the lower tree read straight from the disk, and `bindfs --multithreaded -r`
//! over it (the FUSE ceiling), and cowfs (`cowfs mount --lower`, the `cowfs` next to this
//! binary; its upper layer is the store), also mounted read-only (`cowfs-ro`: reads only, where
//! untouched lower files are read by the kernel through FUSE passthrough).
//! Every run starts from an empty upper layer; runs are interleaved and the target order
//! rotates. The lower tree is checked byte for byte unchanged at the end. Needs root.
//!
//! ```text
//! cowfs-compare-overlay [--runs N] [--scale F] [--dir D] [--json FILE]
//!                       [--targets disk,bindfs,cowfs,cowfs-ro,overlayfs,fuse-overlayfs,unionfs]
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use cowfs_benches::{
    CompareArgs, MIB, allocated, drop_caches, fill, find_in_path, is_mounted, median, parse_compare_args,
    parse_targets, read_file, sh,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    /// The lower tree itself (reads only).
    Disk,
    /// `bindfs --multithreaded -r` over the lower tree (reads only).
    Bindfs,
    Cowfs,
    /// `cowfs mount -o ro --lower` (reads only).
    CowfsRo,
    Overlayfs,
    FuseOverlayfs,
    Unionfs,
}

const KINDS: [(&str, Kind); 7] = [
    ("disk", Kind::Disk),
    ("bindfs", Kind::Bindfs),
    ("cowfs", Kind::Cowfs),
    ("cowfs-ro", Kind::CowfsRo),
    ("overlayfs", Kind::Overlayfs),
    ("fuse-overlayfs", Kind::FuseOverlayfs),
    ("unionfs", Kind::Unionfs),
];

impl Kind {
    fn name(self) -> &'static str {
        KINDS.iter().find(|(_, k)| *k == self).map_or("?", |(n, _)| n)
    }
    /// The program that mounts it (`None`: no mount, or the kernel's `mount`).
    fn tool(self) -> Option<&'static str> {
        match self {
            Kind::Disk | Kind::Overlayfs | Kind::Cowfs | Kind::CowfsRo => None,
            Kind::Bindfs => Some("bindfs"),
            Kind::FuseOverlayfs => Some("fuse-overlayfs"),
            Kind::Unionfs => Some("unionfs"),
        }
    }
    /// Whether writes go to an upper layer (the read-only references take none).
    fn writable(self) -> bool {
        !matches!(self, Kind::Disk | Kind::Bindfs | Kind::CowfsRo)
    }
}

/// One overlay under test, over the shared lower tree.
struct Target {
    kind: Kind,
    lower: PathBuf,
    /// Where changes go (and whose growth is measured).
    upper: PathBuf,
    /// overlayfs's and fuse-overlayfs's work directory.
    work: PathBuf,
    /// Where the workloads run.
    root: PathBuf,
}

impl Target {
    fn new(kind: Kind, base: &Path, lower: &Path) -> Target {
        let dir = base.join(kind.name());
        let root = if kind == Kind::Disk { lower.to_path_buf() } else { dir.join("mnt") };
        Target { kind, lower: lower.to_path_buf(), upper: dir.join("upper"), work: dir.join("work"), root }
    }

    /// Mounts over an empty upper layer; returns how long the mount took.
    fn fresh_mount(&mut self) -> Result<f64> {
        if self.kind == Kind::Disk {
            return Ok(0.0);
        }
        for d in [&self.upper, &self.work] {
            if d.exists() {
                fs::remove_dir_all(d)?;
            }
            fs::create_dir_all(d)?;
        }
        fs::create_dir_all(&self.root)?;
        let t0 = Instant::now();
        self.mount()?;
        Ok(t0.elapsed().as_secs_f64())
    }

    fn mount(&self) -> Result<()> {
        let (lower, upper, work) = (self.lower.display(), self.upper.display(), self.work.display());
        let layers = format!("lowerdir={lower},upperdir={upper},workdir={work}");
        match self.kind {
            Kind::Disk => Ok(()),
            Kind::Bindfs => sh(Command::new("bindfs").args(["--multithreaded", "-r"]).arg(&self.lower).arg(&self.root)),
            Kind::Overlayfs => {
                sh(Command::new("mount").args(["-t", "overlay", "overlay", "-o", &layers]).arg(&self.root))
            }
            Kind::FuseOverlayfs => sh(Command::new("fuse-overlayfs").args(["-o", &layers]).arg(&self.root)),
            Kind::Unionfs => {
                let branches = format!("{upper}=RW:{lower}=RO");
                sh(Command::new("unionfs").args(["-o", "cow", &branches]).arg(&self.root))
            }
            Kind::Cowfs | Kind::CowfsRo => sh(Command::new(cowfs_bin()?)
                .arg("mount")
                .args(if self.kind == Kind::CowfsRo { &["-o", "ro"][..] } else { &[] })
                .arg("--lower")
                .arg(&self.lower)
                .arg(&self.upper)
                .arg(&self.root)
                .stdout(Stdio::null())),
        }
    }

    fn umount(&self) -> Result<()> {
        match self.kind {
            Kind::Disk => Ok(()),
            Kind::Overlayfs => sh(Command::new("umount").arg(&self.root)),
            // Returns once the daemon committed everything and let go of the store.
            Kind::Cowfs | Kind::CowfsRo => sh(Command::new(cowfs_bin()?).arg("umount").arg(&self.root)),
            _ => sh(Command::new("fusermount3").arg("-u").arg(&self.root)),
        }
    }

    /// Unmounted, page cache dropped, mounted again (same upper layer).
    fn go_cold(&self) -> Result<()> {
        self.umount()?;
        drop_caches()?;
        self.mount()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if self.kind != Kind::Disk && is_mounted(&self.root) {
            let _ = self.umount();
        }
    }
}

/// The `cowfs` built with this binary.
fn cowfs_bin() -> Result<PathBuf> {
    let p = std::env::current_exe()?.with_file_name("cowfs");
    if !p.is_file() {
        bail!("{} is missing: build it (cargo build --release -p cowfs-tools)", p.display());
    }
    Ok(p)
}

/// One measured value: name, value, unit, and whether higher is better.
type Metric = (&'static str, f64, &'static str, bool);

/// The lower tree: two big files (one to read untouched, one to write into), a 16 MiB text
/// file to edit, and a source-like tree.
struct Lower {
    big: u64,
    tree_files: u64,
}

fn make_lower(dir: &Path, l: &Lower) -> Result<()> {
    let mut piece = vec![0u8; MIB as usize];
    for (name, seed) in [("big-read", 11u64), ("big-write", 13)] {
        let mut f = fs::File::create(dir.join(name))?;
        for i in 0..l.big / MIB {
            fill(&mut piece, seed * 1_000_003 + i, false);
            f.write_all(&piece)?;
        }
    }
    let mut text = vec![0u8; 16 * MIB as usize];
    fill(&mut text, 17, true);
    fs::write(dir.join("edit16"), &text)?;
    cowfs_benches::make_tree(&dir.join("tree"), l.tree_files)?;
    Ok(())
}

/// The lower tree's fingerprint: every path with its size, mode, mtime and content hash.
fn fingerprint(dir: &Path) -> Result<String> {
    let out = Command::new("sh")
        .arg("-c")
        .arg("find . -printf '%p %s %m %T@\\n' | sort && find . -type f -print0 | sort -z | xargs -0 md5sum")
        .current_dir(dir)
        .stderr(Stdio::inherit())
        .output()?;
    if !out.status.success() {
        bail!("fingerprinting the lower tree failed");
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One run of every workload on `t`: mount time, cold and warm reads of an untouched big lower
/// file, a cold `find` and `ls -lR` of the tree, then (overlays only) the first 4 KiB write into
/// a big lower file and 50 in-place edits of a 16 MiB one, with the upper layer's growth.
fn run_once(t: &mut Target, l: &Lower) -> Result<Vec<Metric>> {
    let mount_ms = t.fresh_mount()? * 1e3;
    let mut out = Vec::new();
    if t.kind != Kind::Disk {
        out.push(("mount time", mount_ms, "ms", false));
    }
    t.go_cold()?;
    for name in ["seq read cold, untouched lower file", "seq read warm"] {
        let t0 = Instant::now();
        let n = read_file(&t.root.join("big-read"))?;
        out.push((name, n as f64 / MIB as f64 / t0.elapsed().as_secs_f64(), "MiB/s", true));
    }
    t.go_cold()?;
    let t0 = Instant::now();
    let found = Command::new("find").arg(t.root.join("tree")).args(["-printf", "%s %m %T@\n"]).output()?;
    let entries = found.stdout.iter().filter(|&&b| b == b'\n').count() as f64;
    if entries < l.tree_files as f64 {
        bail!("find saw {entries} entries, expected {}+", l.tree_files);
    }
    out.push(("find + stat of the lower tree, cold (entries)", entries / t0.elapsed().as_secs_f64(), "/s", true));
    t.go_cold()?;
    let t0 = Instant::now();
    sh(Command::new("ls").arg("-lR").arg(t.root.join("tree")).stdout(Stdio::null()))?;
    out.push(("ls -lR of it, cold", t0.elapsed().as_secs_f64(), "s", false));
    if !t.kind.writable() {
        t.umount()?;
        return Ok(out);
    }
    let u0 = allocated(&t.upper)?;
    let t0 = Instant::now();
    {
        let f = fs::OpenOptions::new().write(true).open(t.root.join("big-write"))?;
        let mut block = vec![0u8; 4096];
        fill(&mut block, 99, false);
        f.write_all_at(&block, l.big / 2)?;
        f.sync_all()?;
    }
    out.push(("first 4 KiB write into a big lower file, to fsync", t0.elapsed().as_secs_f64() * 1e3, "ms", false));
    out.push(("  upper growth", (allocated(&t.upper)? - u0) as f64, "B", false));
    let u0 = allocated(&t.upper)?;
    let t0 = Instant::now();
    let mut x = 17u64;
    for i in 0..50 {
        x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        let f = fs::OpenOptions::new().write(true).open(t.root.join("edit16"))?;
        f.write_all_at(format!("edit {i} in place").as_bytes(), (x >> 20) % (16 * MIB - 100))?;
        f.sync_all()?;
    }
    out.push(("50 in-place edits of a 16 MiB lower file", t0.elapsed().as_secs_f64(), "s", false));
    out.push(("  upper growth per edit", (allocated(&t.upper)? - u0) as f64 / 50.0, "B", false));
    t.umount()?;
    Ok(out)
}

struct Args {
    common: CompareArgs,
    targets: Vec<Kind>,
}

fn parse() -> Result<Args> {
    let mut targets = KINDS.iter().map(|(_, k)| *k).collect();
    let common = parse_compare_args(|flag, val| {
        match flag {
            "--targets" => targets = parse_targets(val, &KINDS)?,
            other => bail!("unknown flag {other}"),
        }
        Ok(())
    })?;
    Ok(Args { common, targets })
}

const USAGE: &str = "\
cowfs-compare-overlay [--runs 3] [--scale 1] [--dir D] [--json FILE]
                      [--targets disk,bindfs,cowfs,cowfs-ro,overlayfs,fuse-overlayfs,unionfs]
The overlay workloads over one read-only lower tree, on each overlay; prints medians (docs/PERFORMANCE.md).
";

fn main() {
    cowfs_benches::run_main("cowfs-compare-overlay", USAGE, run);
}

fn run() -> Result<()> {
    let Args { common: a, targets: kinds_asked } = parse()?;
    let l =
        Lower { big: ((1024.0 * a.scale) as u64).max(16) * MIB, tree_files: ((30_000.0 * a.scale) as u64).max(200) };
    let work = tempfile::tempdir_in(&a.dir)
        .with_context(|| format!("--dir {}: cannot make a work directory in it", a.dir.display()))?;
    let lower = work.path().join("lower");
    fs::create_dir(&lower)?;
    make_lower(&lower, &l)?;
    let before = fingerprint(&lower)?;
    println!(
        "# cowfs-compare-overlay: {} run(s); lower: 2 files of {} MiB, a {}-file tree",
        a.runs,
        l.big / MIB,
        l.tree_files
    );
    let mut targets = Vec::new();
    for k in &kinds_asked {
        match k.tool() {
            Some(tool) if find_in_path(tool, |_| true).is_none() => {
                println!("# {} left out: {tool} is not installed", k.name())
            }
            _ => targets.push(Target::new(*k, work.path(), &lower)),
        }
    }
    let mut order: Vec<String> = Vec::new();
    let mut results: BTreeMap<String, BTreeMap<Kind, Vec<f64>>> = BTreeMap::new();
    let mut units = BTreeMap::new();
    for run in 0..a.runs as usize {
        let n = targets.len();
        for i in 0..n {
            let t = &mut targets[(i + run) % n];
            let t0 = Instant::now();
            let metrics = run_once(t, &l).with_context(|| format!("run {} on {}", run + 1, t.kind.name()))?;
            eprintln!("# run {} on {}: {:.1} s", run + 1, t.kind.name(), t0.elapsed().as_secs_f64());
            for (name, v, unit, higher) in metrics {
                let key = name.to_string();
                if !order.contains(&key) {
                    order.push(key.clone());
                }
                units.insert(key.clone(), (unit, higher));
                results.entry(key).or_default().entry(t.kind).or_default().push(v);
            }
        }
    }
    drop(targets);
    // The disk has no mount time: the overlays' first row stays first.
    order.sort_by_key(|k| k != "mount time");
    if fingerprint(&lower)? != before {
        bail!("the lower tree changed: an overlay wrote into it");
    }
    println!("# the lower tree is unchanged (paths, sizes, modes, mtimes, md5 of every file)");
    let kinds: Vec<Kind> =
        kinds_asked.iter().copied().filter(|k| results.values().any(|r| r.contains_key(k))).collect();
    print!("{:<58}", "workload (median)");
    for k in &kinds {
        print!("{:>15}", k.name());
    }
    println!();
    let mut json = serde_json::Map::new();
    for key in &order {
        let (unit, higher) = units[key];
        print!("{:<58}", format!("{key} [{unit}]"));
        for k in &kinds {
            let cell = results[key].get(k).map_or("-".to_string(), |v| {
                let m = median(v);
                if m >= 100.0 { format!("{m:.0}") } else { format!("{m:.2}") }
            });
            print!("{cell:>15}");
        }
        println!();
        let values: serde_json::Map<String, serde_json::Value> =
            results[key].iter().map(|(k, v)| (k.name().to_string(), serde_json::json!(v))).collect();
        json.insert(key.clone(), serde_json::json!({"unit": unit, "higher_is_better": higher, "runs": values}));
    }
    if let Some(p) = &a.json {
        fs::write(p, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}
