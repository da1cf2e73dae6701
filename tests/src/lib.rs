//! Helpers for the end-to-end tests in `tests/`, which drive the built binaries.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Path of a binary of the `cowfs-tools` package, built (once per test process) with the
/// same cargo, target directory and profile as the tests, so `cargo test -p cowfs-e2e` alone works.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Build with the profile the tests were built with (CI tests in release).
        let release = !cfg!(debug_assertions);
        let mut args = vec!["build", "--quiet", "-p", "cowfs-tools", "--bins"];
        if release {
            args.push("--release");
        }
        let status = Command::new(cargo).args(&args).current_dir(&root).status().expect("run cargo build");
        assert!(status.success(), "building the cowfs binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| root.join("target"));
        target.join(if release { "release" } else { "debug" })
    });
    dir.join(name)
}

/// A `Command` for a cowfs binary.
pub fn command(name: &str) -> Command {
    Command::new(bin(name))
}

/// The command that installs a tool the tests run (`scripts/test` runs them all).
fn installer(tool: &str) -> &'static str {
    match tool {
        "fsx" => "cargo install --locked fsx",
        "pjdfstest" => "cargo install --locked pjdfstest",
        "fusermount3" => "apt-get install fuse3",
        "sqlite3" => "apt-get install sqlite3",
        "python3" => "apt-get install python3",
        "script" => "apt-get install bsdutils",
        "runuser" | "prlimit" | "fallocate" | "mount" | "umount" => "apt-get install util-linux",
        _ => "apt-get install the package that provides it",
    }
}

/// Fails the calling test with one line and no backtrace (the panic hook is not run): `what`
/// is missing, and the command that sets it up.
pub fn missing(what: &str, install: &str) -> ! {
    eprintln!("{what} is missing: scripts/test sets up everything the tests need (as root), or: {install}");
    std::panic::resume_unwind(Box::new(format!("{what} is missing")))
}

/// Fails the calling test in one line (see [`missing`]) unless program `tool` is on the PATH.
pub fn require_tool(tool: &str) {
    let path = std::env::var_os("PATH").unwrap_or_default();
    if !std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()) {
        missing(tool, installer(tool));
    }
}

/// Fails the calling test in one line (see [`missing`]) unless user `name` exists.
pub fn require_user(name: &str) {
    let (code, _, _) = run(Command::new("id").arg(name));
    if code != 0 {
        missing(&format!("user {name}"), &format!("useradd --system --no-create-home {name}"));
    }
}

/// Runs a command, returning (exit code, stdout, stderr). A program that is not installed
/// fails the test in one line naming what installs it.
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = match cmd.output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let tool = cmd.get_program().to_string_lossy().into_owned();
            missing(&tool, installer(&tool))
        }
        Err(e) => panic!("run {:?}: {e}", cmd.get_program()),
    };
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `cowfs ARGS -s STORE --json`, which must succeed; its output parsed.
pub fn cowfs_json(args: &[&str], store: &Path) -> serde_json::Value {
    let (code, out, err) = run(command("cowfs").args(args).arg("-s").arg(store).arg("--json"));
    assert_eq!(code, 0, "cowfs {args:?}: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("cowfs {args:?} printed {out:?}: {e}"))
}

/// Every regular file of a store directory with its bytes (not the daemon's log, which a mount
/// writes, nor the control socket).
pub fn store_bytes(store: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    fs::read_dir(store)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name() != "daemon.log" && e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| (e.file_name().into_string().unwrap(), fs::read(e.path()).unwrap()))
        .collect()
}

/// A store mounted through `cowfs mount` for the length of a test; unmounted on drop. A
/// watchdog force-unmounts a mount that lives longer than [`watchdog`], so a hung daemon fails
/// the test instead of hanging CI.
#[derive(Debug)]
pub struct Mounted {
    /// Holds the store and the mount point.
    pub dir: tempfile::TempDir,
    /// The store directory.
    pub store: PathBuf,
    /// The mount point.
    pub mnt: PathBuf,
    mounted: bool,
    env: Vec<(String, String)>,
    /// Lower trees given to every mount (an overlay mount).
    pub lowers: Vec<PathBuf>,
    /// Counts mounts: a watchdog acts only on the mount it was started with.
    generation: Arc<AtomicU64>,
}

/// How long one mount (not the whole test: a test may mount again and again) may live before
/// the watchdog unmounts it: 5 minutes, an hour under `COWFS_SOAK` (whose load runs for 10).
pub fn watchdog() -> Duration {
    Duration::from_secs(if std::env::var_os("COWFS_SOAK").is_some() { 3600 } else { 300 })
}

impl Default for Mounted {
    fn default() -> Self {
        Self::new()
    }
}

impl Mounted {
    /// A new store mounted on a new directory.
    pub fn new() -> Mounted {
        Self::with_env(&[])
    }

    /// A new store mounted by a daemon that has these environment variables.
    pub fn with_env(env: &[(&str, &str)]) -> Mounted {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = dir.path().join("store");
        Self::at(dir, store, env)
    }

    /// A new store at `store` (e.g. on a file system of its own) mounted on `dir/mnt`.
    pub fn at(dir: tempfile::TempDir, store: PathBuf, env: &[(&str, &str)]) -> Mounted {
        let mnt = dir.path().join("mnt");
        fs::create_dir(&mnt).unwrap();
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut m = Mounted { dir, store, mnt, mounted: false, env, lowers: Vec::new(), generation: Arc::default() };
        m.mount();
        m
    }

    /// A new store mounted over lower trees `lowers` (the first on top): `cowfs mount --lower`.
    pub fn overlay(dir: tempfile::TempDir, lowers: &[PathBuf]) -> Mounted {
        let (store, mnt) = (dir.path().join("store"), dir.path().join("mnt"));
        fs::create_dir(&mnt).unwrap();
        let lowers = lowers.to_vec();
        let mut m = Mounted { dir, store, mnt, mounted: false, env: Vec::new(), lowers, generation: Arc::default() };
        m.mount();
        m
    }

    /// A virtual copy of regular file `file` (`cowfs mount --lower FILE STORE MOUNTFILE`): a new
    /// store mounted on the new empty file `dir/copy`, which then shows `file`.
    pub fn virtual_copy(dir: tempfile::TempDir, file: &Path) -> Mounted {
        let (store, mnt) = (dir.path().join("store"), dir.path().join("copy"));
        fs::write(&mnt, b"").unwrap();
        let lowers = vec![file.to_path_buf()];
        let mut m = Mounted { dir, store, mnt, mounted: false, env: Vec::new(), lowers, generation: Arc::default() };
        m.mount();
        m
    }

    /// Mounts (again).
    pub fn mount(&mut self) {
        let mut cmd = command("cowfs");
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.arg("mount");
        for l in &self.lowers {
            cmd.arg("--lower").arg(l);
        }
        self.mount_by(cmd.arg(&self.store).arg(&self.mnt));
    }

    /// Mounts (again) by running `cmd` (e.g. mount(8)), which must succeed.
    pub fn mount_by(&mut self, cmd: &mut Command) {
        let (code, _, err) = run(cmd);
        assert_eq!(code, 0, "{cmd:?} failed: {err}");
        self.mounted = true;
        let (mnt, generation) = (self.mnt.clone(), self.generation.clone());
        let this = generation.fetch_add(1, Ordering::SeqCst) + 1;
        let after = watchdog();
        std::thread::spawn(move || {
            std::thread::sleep(after);
            if generation.load(Ordering::SeqCst) == this {
                let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&mnt).status();
            }
        });
    }

    /// Unmounts through `cowfs umount`. A mount some process still uses ("busy": seen once
    /// in a full run, with other tests starting processes at the same time) is tried again
    /// for up to a second; who holds it is printed each time.
    pub fn umount(&mut self) {
        let mut tries = 0;
        loop {
            let (code, _, err) = run(command("cowfs").arg("umount").arg(&self.mnt));
            if code == 0 {
                break;
            }
            tries += 1;
            assert!(err.contains("busy") && tries < 5, "cowfs umount failed: {err}");
            eprintln!("umount of {} busy (try {tries}); held by: {:?}", self.mnt.display(), holders(&self.mnt));
            std::thread::sleep(Duration::from_millis(200));
        }
        self.mounted = false;
    }

    /// Unmounts by running `cmd` (e.g. umount(8)), which must succeed, and waits until the
    /// daemon has exited.
    pub fn umount_by(&mut self, cmd: &mut Command) {
        let pid = self.daemon_pid();
        let (code, _, err) = run(cmd);
        assert_eq!(code, 0, "{cmd:?} failed: {err}");
        self.mounted = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z ")) {
            assert!(std::time::Instant::now() < deadline, "daemon {pid} still runs 60 s after {cmd:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Unmounts and mounts again.
    pub fn remount(&mut self) {
        self.umount();
        self.mount();
    }

    /// A path inside the mount.
    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    /// `cowfs stats --json` of the (unmounted) store.
    pub fn stats(&self) -> serde_json::Value {
        let (code, out, err) = run(command("cowfs").args(["stats", "--json", "-s"]).arg(&self.store));
        assert_eq!(code, 0, "cowfs stats failed: {err}");
        serde_json::from_str(&out).expect("stats json")
    }

    /// Kills the daemon with SIGKILL (no unmount, no commit, no checkpoint) and waits until it
    /// is gone. The mount point stays a dead mount (every access fails) until [`Mounted::detach`].
    pub fn kill_daemon(&mut self) {
        let pid = self.daemon_pid();
        let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while Path::new(&format!("/proc/{pid}/exe")).exists() {
            assert!(std::time::Instant::now() < deadline, "daemon {pid} survived kill -9");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Detaches a dead mount, as an administrator would after a crash.
    pub fn detach(&mut self) {
        let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mnt).status();
        self.mounted = false;
    }

    /// The daemon's pid.
    pub fn daemon_pid(&self) -> i32 {
        fs::read_to_string(self.store.join("daemon.pid")).expect("daemon.pid").trim().parse().expect("pid")
    }
}

/// Processes whose working directory or an open file is under `dir`: `pid command path`.
fn holders(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let links = fs::read_dir(p.path().join("fd")).into_iter().flatten().flatten().map(|e| e.path());
        for link in links.chain([p.path().join("cwd")]) {
            if let Ok(target) = fs::read_link(&link)
                && target.starts_with(dir)
            {
                let comm = fs::read_to_string(p.path().join("comm")).unwrap_or_default();
                out.push(format!("{pid} {} {}", comm.trim(), target.display()));
            }
        }
    }
    out
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            let ok = command("cowfs").arg("umount").arg(&self.mnt).status().is_ok_and(|s| s.success());
            if !ok {
                let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&self.mnt).status();
            }
        }
        if std::thread::panicking() {
            // A failed test: what the daemon said, and the store kept for a post-mortem.
            let log = fs::read_to_string(self.store.join("daemon.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(40)..];
            eprintln!("daemon.log of {} (last {} lines):", self.store.display(), tail.len());
            for line in tail {
                eprintln!("  {line}");
            }
            if std::env::var_os("COWFS_KEEP_FAILED").is_some() {
                self.dir.disable_cleanup(true);
                eprintln!("kept {} (COWFS_KEEP_FAILED)", self.dir.path().display());
            }
        }
    }
}

/// Deterministic incompressible bytes (xorshift64), for content that must not dedup or compress.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A tmpfs of its own (mounted as root), unmounted on drop (after the cowfs mount that uses it).
#[derive(Debug)]
pub struct Tmpfs(pub PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`48m`) on the new directory `at`.
    pub fn new(at: PathBuf, size: &str) -> Tmpfs {
        fs::create_dir(&at).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(&at).status();
        assert!(st.is_ok_and(|s| s.success()), "mounting a tmpfs at {} failed (this test needs root)", at.display());
        Tmpfs(at)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Bytes free on the file system holding `p`.
pub fn free_bytes(p: &Path) -> u64 {
    let out = Command::new("stat").args(["-f", "-c", "%a %S"]).arg(p).output().unwrap();
    let s = String::from_utf8(out.stdout).unwrap();
    let v: Vec<u64> = s.split_whitespace().map(|x| x.parse().unwrap()).collect();
    v[0] * v[1]
}
