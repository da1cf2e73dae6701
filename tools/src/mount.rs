//! `cowfs mount` and `cowfs umount`: checks, the daemon (its session, read-ahead, remounts), and
//! unmounting.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::background::start_background;
use crate::mount_options::{Atime, MountOptions};
use crate::mount_table::{FSTYPE, daemon_pid, is_cowfs, mount_at, mount_flags, mounts};
use crate::protocol::{Mounted, Unmounted};
use anyhow::{Context, Result, bail};
use cowfs_engine::policy::Policy;
use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, Options, read_meta};
use cowfs_fuse::adapter::FuseAdapter;
use cowfs_fuse::fs::CowFs;
use fuser::{Config, MountOption, SessionACL};
use nix::sys::signal::{SigSet, Signal};

/// A cowfs mount whose daemon is gone (killed): its mount point answers ENOTCONN, and it
/// still names its store in the mount table, so neither the mount point nor the store could
/// be mounted again. Detached (`fusermount3 -u -z`), as an administrator would; returns
/// whether there was one. Nothing acknowledged is lost: the store recovers at the next open.
fn detach_if_dead(target: &Path) -> Result<bool> {
    // statfs always reaches the daemon (a stat may be answered from the kernel's attribute
    // cache for a second after the daemon died). A request the kernel sent while the dying
    // daemon still held /dev/fuse open ends with ECONNABORTED when the connection is aborted
    // (its /proc/PID/exe is gone before its descriptors are closed): dead too.
    let dead =
        matches!(nix::sys::statfs::statfs(target), Err(nix::errno::Errno::ENOTCONN | nix::errno::Errno::ECONNABORTED));
    if !dead || !mount_at(target)?.is_some_and(|m| is_cowfs(&m)) {
        return Ok(false);
    }
    let out = Command::new("fusermount3").arg("-u").arg("-z").arg(target).output().context("running fusermount3")?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        bail!("detaching the dead mount at {}: {}", target.display(), msg.lines().next().unwrap_or("failed").trim());
    }
    eprintln!("cowfs: detached the mount at {} (its daemon had died)", target.display());
    Ok(true)
}

/// How long `cowfs mount` waits for a store whose lock is held (a daemon still committing
/// and closing after a plain `umount`, or a command working on the store directly).
const LOCK_WAIT: Duration = Duration::from_secs(30);

/// Whether nobody holds the store's lock, polling until `deadline`.
fn lock_free_by(storage: &Path, deadline: Instant) -> Result<bool> {
    let st = DirStorage::new(storage)?;
    while st.try_lock()?.is_none() {
        if Instant::now() > deadline {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(true)
}

/// Checks the mount point: exists, is a directory or (a virtual copy) a regular file, is
/// empty, is not a mount already (a dead cowfs mount there is detached first).
fn check_mountpoint(mnt: &Path) -> Result<PathBuf> {
    detach_if_dead(&std::path::absolute(mnt)?)?;
    let meta = fs::metadata(mnt).with_context(|| format!("mount point {}", mnt.display()))?;
    if !meta.is_dir() && !meta.is_file() {
        bail!("mount point {} is not a directory or a regular file", mnt.display());
    }
    let abs = mnt.canonicalize().with_context(|| format!("mount point {}", mnt.display()))?;
    if mount_at(&abs)?.is_some() {
        bail!("mount point {} is already a mount", abs.display());
    }
    if meta.is_dir() && fs::read_dir(&abs)?.next().is_some() {
        bail!("mount point {} is not empty", abs.display());
    }
    if meta.is_file() && meta.len() > 0 {
        bail!("mount point {} is a file that is not empty (a virtual copy mounts on an empty file)", abs.display());
    }
    Ok(abs)
}

/// The file a virtual copy mounted on file `mnt` copies (checked, absolute), when given: one
/// regular file, not the mount point, not inside the store, in the directory the store
/// records if it records one. None given: the store's own.
fn choose_lower_file(storage: &Path, mnt: &Path, how: How<'_>) -> Result<Option<PathBuf>> {
    if how.relower {
        bail!("--relower is for lower trees; a virtual copy (mounted on a file) keeps the file it copies");
    }
    let file = match how.lowers {
        [] if !storage.join("STORE").exists() => {
            bail!("store {} is new: name the file it is to copy (--lower FILE)", storage.display())
        }
        [] => return Ok(None),
        [f] => f,
        _ => bail!("a virtual copy (mounted on file {}) copies one file: give one --lower FILE", mnt.display()),
    };
    let abs = file.canonicalize().with_context(|| format!("lower {}", file.display()))?;
    if !abs.is_file() {
        bail!("lower {} is not a regular file (the mount point {} is one)", file.display(), mnt.display());
    }
    if abs == mnt {
        bail!("lower {} is the mount point", file.display());
    }
    let store = storage.canonicalize().or_else(|_| std::path::absolute(storage))?;
    if abs.starts_with(&store) {
        bail!("lower {} is inside the store", file.display());
    }
    if storage.join("STORE").exists() {
        let recorded = cowfs_engine::read_lowers(&DirStorage::new(storage)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", storage.display()))?;
        if let Some(dir) = recorded.first()
            && Some(dir.as_path()) != abs.parent()
        {
            bail!("store {} copies a file of {}, not {}", storage.display(), dir.display(), abs.display());
        }
    }
    Ok(Some(abs))
}

/// Checks the store without changing it: missing, empty, or a store of our format.
fn check_store(storage: &Path) -> Result<PathBuf> {
    if storage.exists() {
        if !storage.is_dir() {
            bail!("{} is not a directory", storage.display());
        }
        let st = DirStorage::new(storage)?;
        read_meta(&st).map_err(|e| anyhow::anyhow!("{}: {e}", storage.display()))?;
        let abs = storage.canonicalize()?;
        for m in mounts()?.iter().filter(|m| is_cowfs(m) && Path::new(&m.source) == abs) {
            if !detach_if_dead(&m.target)? {
                bail!("store {} is already mounted at {}", abs.display(), m.target.display());
            }
        }
        if !lock_free_by(&abs, Instant::now() + LOCK_WAIT)? {
            let secs = LOCK_WAIT.as_secs();
            bail!("store {} is still in use {secs} s later (another cowfs process holds its LOCK)", abs.display());
        }
        return Ok(abs);
    }
    // Private: the store holds every old version of every file.
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(storage)
        .with_context(|| format!("creating {}", storage.display()))?;
    Ok(storage.canonicalize()?)
}

/// How to mount.
#[derive(Debug, Clone, Copy)]
pub struct How<'a> {
    /// Stay attached.
    pub foreground: bool,
    /// Log more.
    pub debug: bool,
    /// Lower trees (an overlay mount), the first on top; none: those the store records.
    pub lowers: &'a [PathBuf],
    /// Record `lowers` in place of the trees the store records.
    pub relower: bool,
    /// `-o`; its `lower=` trees come after `lowers`.
    pub options: &'a MountOptions,
}

/// The lower trees to mount `storage` (checked, absolute) with: those given, or those it
/// records. Refuses others than the recorded ones without `relower`, and any that is missing,
/// not a readable directory, the mount point or inside the store (see `check_lowers`).
fn choose_lowers(storage: &Path, mnt: &Path, how: How<'_>) -> Result<Vec<PathBuf>> {
    let recorded = match storage.join("STORE").exists() {
        true => cowfs_engine::read_lowers(&DirStorage::new(storage)?)
            .map_err(|e| anyhow::anyhow!("{}: {e}", storage.display()))?,
        false => Vec::new(),
    };
    let lowers = if how.lowers.is_empty() { &recorded } else { how.lowers };
    let checked = cowfs_engine::storage::lower::check_lowers(lowers, storage, mnt).map_err(|e| anyhow::anyhow!(e))?;
    if !how.lowers.is_empty() && !recorded.is_empty() && checked != recorded && !how.relower {
        let list = |p: &[PathBuf]| p.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(":");
        bail!(
            "store {} has the lower trees {}, not {} (--relower replaces them)",
            storage.display(),
            list(&recorded),
            list(&checked)
        );
    }
    Ok(checked)
}

/// `cowfs mount`: returns once the mount is live, with what was mounted (in the foreground,
/// once it is unmounted again, with `None`).
pub fn mount(storage: &Path, mnt: &Path, how: How<'_>) -> Result<Option<Mounted>> {
    // The lower trees: those of --lower, then those of -o lower=.
    let merged: Vec<PathBuf> = how.lowers.iter().chain(&how.options.lowers).cloned().collect();
    let how = How { lowers: &merged, ..how };
    if how.relower && how.lowers.is_empty() {
        bail!("--relower replaces the store's lower trees: name them with --lower or -o lower=");
    }
    if how.options.remount {
        if !how.lowers.is_empty() {
            bail!("lower trees are set when mounting; a remount changes ro/rw, nosuid, nodev, noexec");
        }
        return remount(storage, mnt, how.options).map(Some);
    }
    let mnt = check_mountpoint(mnt)?;
    // Lower trees first: a refused mount leaves no new store behind.
    let lowers = match mnt.is_file() {
        true => choose_lower_file(storage, &mnt, how)?.into_iter().collect(),
        false => choose_lowers(storage, &mnt, how)?,
    };
    let storage = check_store(storage)?;
    // Only what was given is passed on: the daemon opens the store with the recorded ones
    // itself (and records given ones).
    let given = if how.lowers.is_empty() { &[][..] } else { &lowers[..] };
    if how.foreground {
        return run_daemon(&storage, &mnt, how, given).map(|()| None);
    }
    let log_path = storage.join("daemon.log");
    let log =
        fs::OpenOptions::new().create(true).append(true).mode(0o600).open(&log_path).context("opening daemon.log")?;
    let start_len = log.metadata()?.len();
    let exe = std::env::current_exe().context("locating the cowfs binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("mount").arg("--foreground").arg(&storage).arg(&mnt);
    for l in given {
        cmd.arg("--lower").arg(l);
    }
    if how.relower {
        cmd.arg("--relower");
    }
    let options = how.options.to_arg();
    if !options.is_empty() {
        cmd.arg("-o").arg(options);
    }
    // mimalloc (the daemon's allocator) keeps freed memory for reuse by default: writing
    // 100 MiB left 181 MiB resident. Unless the user set them, these make it return freed
    // memory 100 ms after it was freed (read at its start-up, so set for the daemon's
    // process). Returning it at once (0) cost 8-10% more daemon CPU in a 1 GiB sequential
    // write (pages faulted in and zeroed again) for 20 MiB less peak: 168 vs 185-192 MiB
    // writing, rewriting and reading 4 GiB.
    //
    // Blocks over 16 MiB come straight from the kernel (fresh zero pages, resident only where
    // written) and go back to it when freed: fuser gives each of its threads a zeroed request
    // buffer of 16 MiB + 4 KiB, of which a FUSE write uses at most 1 MiB. In mimalloc's
    // arenas, on memory freed earlier (the checkpoint's decoding, at every mount of a store
    // that has one), the zeroing wrote every page of them: 64 MiB resident for the daemon's
    // life (a store of 60,000 files: 146-166 MiB after mounting, 86 MiB with this). The
    // buffers every write goes through stay under it (`Options::write_buffer_bytes`); only a
    // checkpoint's, once per checkpoint, is mapped and returned whole.
    for (k, v) in [
        ("MIMALLOC_PURGE_DELAY", "100"),
        ("MIMALLOC_ARENA_EAGER_COMMIT", "0"),
        ("MIMALLOC_PURGE_DECOMMITS", "1"),
        ("MIMALLOC_ARENA_MAX_OBJECT_SIZE", "16384"), // KiB
    ] {
        if std::env::var_os(k).is_none() {
            cmd.env(k, v);
        }
    }
    if how.debug {
        cmd.arg("--debug");
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting the mount daemon")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if mount_at(&mnt)?.is_some_and(|m| is_cowfs(&m)) {
            let (mountpoint, storage) = (mnt.display().to_string(), storage.display().to_string());
            let lowers = lowers.iter().map(|l| l.display().to_string()).collect();
            return Ok(Some(Mounted { mountpoint, storage, pid: child.id(), lowers }));
        }
        if let Some(status) = child.try_wait()? {
            let msg =
                last_log_line(&log_path, start_len).unwrap_or_else(|| format!("mount daemon exited with {status}"));
            bail!("{}", msg.trim_start_matches("cowfs: error: "));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            bail!("the mount did not become live within 30 s (see {})", log_path.display());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn last_log_line(path: &Path, from: u64) -> Option<String> {
    let f = fs::File::open(path).ok()?;
    let mut r = BufReader::new(f);
    std::io::Seek::seek(&mut r, std::io::SeekFrom::Start(from)).ok()?;
    r.lines().map_while(|l| l.ok()).filter(|l| !l.trim().is_empty()).last()
}

/// The daemon: opens the store, mounts, serves until unmounted or signalled.
fn run_daemon(storage: &Path, mnt: &Path, how: How<'_>, lowers: &[PathBuf]) -> Result<()> {
    // Signals are waited for on one thread; block them before any thread starts so that
    // every thread inherits the mask.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGINT);
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGHUP);
    signals.thread_block().context("blocking signals")?;

    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(storage)?);
    let new_store = !storage.join(cowfs_engine::STORE_FILE).exists();
    // One descriptor per segment: a store too big for the limit fails to open (EMFILE).
    match crate::raise_fd_limit() {
        Some(n) => eprintln!("cowfs: up to {n} open files (one per segment)"),
        None => eprintln!("cowfs: the open file limit could not be read or raised"),
    }
    // Test knob: segment size of a store created by this mount (small segments make
    // compaction run constantly under load).
    let mut options = Options::default();
    if let Some(n) = std::env::var("COWFS_SEGMENT_BYTES").ok().and_then(|s| s.parse().ok()) {
        options.segment_size = n;
    }
    // A mount point that is a file mounts a virtual copy of one file; its inode is the
    // mount's root.
    let (engine, root_file) = match mnt.is_file() {
        true => Engine::open_virtual_copy(st, options, lowers.first().map(PathBuf::as_path)).map(|(e, f)| (e, Some(f))),
        false => Engine::open_overlay(st, options, lowers, how.relower).map(|e| (e, None)),
    }
    .map_err(|e| anyhow::anyhow!("{}: {e}", storage.display()))?;
    // A new store gets the recommended retention and space guard (one made before stores had
    // a policy keeps every version until `cowfs policy set` gives it one).
    if new_store && !storage.join(cowfs_engine::policy::POLICY_FILE).exists() {
        Policy::recommended().save(&DirStorage::new(storage)?).context("storing the new store's policy")?;
    }
    for problem in &engine.open_report().header_problems {
        eprintln!("cowfs: WARNING: {}: {problem}; run cowfs-fsck --repair on it when unmounted", storage.display());
    }
    let mut pid = fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(storage.join("daemon.pid"))
        .context("writing daemon.pid")?;
    std::io::Write::write_all(&mut pid, format!("{}\n", std::process::id()).as_bytes())
        .context("writing daemon.pid")?;
    let control_engine = engine.clone();
    start_background(&engine, storage.to_path_buf())?;
    let fs_ = CowFs::new(engine).with_mount_flags(mount_flags(mnt.to_path_buf()));
    let mut cfg = Config::default();
    cfg.n_threads = Some(4);
    if how.debug {
        eprintln!("cowfs: mounting {} on {}", storage.display(), mnt.display());
    }
    let listener = crate::control::bind(storage)?;
    let mut adapter = FuseAdapter::new(fs_, storage);
    if let Some(f) = root_file {
        adapter = adapter.with_root_file(f);
    }
    let session = start_session(adapter, storage, mnt, how.options, cfg).map_err(|e| {
        let _ = fs::remove_file(storage.join(crate::control::SOCKET));
        anyhow::anyhow!("mounting on {}: {e:#}", mnt.display())
    })?;
    raise_read_ahead(mnt);
    // The history commands run here, through the control socket; what they change is
    // dropped from the kernel's caches so the mount shows it at once.
    let notifier = session.notifier();
    crate::control::serve(storage, listener, control_engine, move |e, path| {
        if let Ok(r) = crate::paths::resolve(e, path) {
            let name = std::ffi::OsStr::from_bytes(&r.name);
            let _ = notifier.inval_entry(fuser::INodeNo(r.parent.0), name);
            if let Some(i) = r.inode {
                // The file of a virtual copy is the kernel's root node.
                let node = if Some(i.ino) == root_file { fuser::INodeNo::ROOT } else { fuser::INodeNo(i.ino.0) };
                let _ = notifier.inval_inode(node, 0, 0);
            }
        }
    })?;
    let target = mnt.to_path_buf();
    std::thread::spawn(move || {
        if signals.wait().is_ok() {
            // Unmounting ends the session; the main thread then finishes cleanly.
            let _ = Command::new("fusermount3").arg("-u").arg("-z").arg(&target).status();
        }
    });
    let res = session.guard.join();
    let _ = fs::remove_file(storage.join("daemon.pid"));
    let _ = fs::remove_file(storage.join(crate::control::SOCKET));
    match res {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("FUSE session failed: {e}"),
        Err(_) => bail!("FUSE session thread panicked"),
    }
}

/// Mounts `mnt` and starts serving it. As root, mounts with mount(2) itself, as type
/// [`FSTYPE`] with the store as the source, open to every user (`allow_other`; the kernel
/// checks the modes: `default_permissions`). Otherwise through fusermount3 (which is given the
/// same type), open to other users only with `allow_other`.
fn start_session(
    fs: FuseAdapter,
    storage: &Path,
    mnt: &Path,
    o: &MountOptions,
    mut cfg: Config,
) -> Result<fuser::BackgroundSession> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        cfg.mount_options = vec![
            MountOption::FSName(storage.display().to_string()),
            MountOption::Subtype("cowfs".into()),
            MountOption::DefaultPermissions,
            MountOption::CUSTOM(
                match o.atime {
                    Some(Atime::No) => "noatime",
                    Some(Atime::Strict) => "strictatime",
                    Some(Atime::Relative) | None => "relatime",
                }
                .into(),
            ),
        ];
        if o.nodiratime == Some(true) {
            cfg.mount_options.push(MountOption::CUSTOM("nodiratime".into()));
        }
        // fusermount3 adds nosuid and nodev for every user.
        if o.read_only == Some(true) {
            cfg.mount_options.push(MountOption::RO);
        }
        if o.noexec == Some(true) {
            cfg.mount_options.push(MountOption::NoExec);
        }
        if o.allow_other {
            cfg.acl = SessionACL::All;
        }
        return Ok(fuser::spawn_mount(fs, mnt, &cfg)?);
    }
    let dev = fs::OpenOptions::new().read(true).write(true).open("/dev/fuse").context("opening /dev/fuse")?;
    let data = format!(
        "fd={},rootmode={:o},user_id={},group_id={},default_permissions,allow_other",
        std::os::fd::AsRawFd::as_raw_fd(&dev),
        fs::metadata(mnt)?.mode(),
        nix::unistd::geteuid(),
        nix::unistd::getegid()
    );
    let source = storage.display().to_string();
    nix::mount::mount(Some(source.as_str()), mnt, Some(FSTYPE), o.flags(), Some(data.as_str())).context("mount(2)")?;
    // The kernel sends its first request (INIT) at once; the session answers it here.
    fuser::Session::from_fd(fs, dev.into(), SessionACL::All, cfg).and_then(|s| s.spawn()).map_err(|e| {
        let _ = nix::mount::umount2(mnt, nix::mount::MntFlags::MNT_DETACH);
        anyhow::anyhow!("starting the FUSE session: {e}")
    })
}

/// `-o remount,...`: changes the flags of the live cowfs mount at `mnt` (of `storage`) —
/// `ro`/`rw`, `nosuid`, `nodev`, `noexec` — keeping those not given. Data written before a
/// remount to `ro` is committed as at any time (the kernel flushes it first).
fn remount(storage: &Path, mnt: &Path, o: &MountOptions) -> Result<Mounted> {
    let abs = mnt.canonicalize().with_context(|| format!("mount point {}", mnt.display()))?;
    let m = match mount_at(&abs)? {
        Some(m) if is_cowfs(&m) => m,
        _ => bail!("{} is not a cowfs mount: nothing to remount", abs.display()),
    };
    let store = storage.canonicalize().with_context(|| format!("store {}", storage.display()))?;
    if Path::new(&m.source) != store {
        bail!("{} mounts store {}, not {}", abs.display(), m.source, store.display());
    }
    if o.allow_other && !m.options.split(',').any(|x| x == "allow_other") {
        bail!("allow_other is set when mounting; a remount changes ro/rw, nosuid, nodev, noexec");
    }
    let pid = daemon_pid(&store).with_context(|| format!("store {} has no daemon.pid", store.display()))?;
    let lowers = cowfs_engine::read_lowers(&DirStorage::new(&store)?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", store.display()))?;
    let now = nix::sys::statvfs::statvfs(&abs).with_context(|| format!("statvfs {}", abs.display()))?.flags();
    nix::mount::mount(None::<&str>, &abs, None::<&str>, o.remount_flags(now), None::<&str>)
        .with_context(|| format!("remounting {}", abs.display()))?;
    Ok(Mounted {
        mountpoint: abs.display().to_string(),
        storage: m.source,
        pid,
        lowers: lowers.iter().map(|l| l.display().to_string()).collect(),
    })
}

/// The kernel reads ahead of a sequential reader of the mount by this much (its default for
/// a FUSE mount is 128 KiB): the window is sent as several 1 MiB reads at once, which the
/// daemon serves in parallel while the disk works on the next. Measured on the development
/// machine, cold 1 GiB reads: 128 KiB 0.3-0.7 GB/s, 4 MiB 1.2-1.4, 8 MiB 1.4-1.6, 16 MiB
/// 1.3-1.6.
const READ_AHEAD_KB: u32 = 8192;

/// Sets the mount's read-ahead ([`READ_AHEAD_KB`]) through sysfs, which only root may
/// write; otherwise the mount works with the kernel's default and the log says so.
fn raise_read_ahead(mnt: &Path) {
    let res = mount_at(mnt).and_then(|m| {
        let m = m.context("the mount is not listed")?;
        let path = format!("/sys/class/bdi/{}/read_ahead_kb", m.device);
        fs::write(&path, READ_AHEAD_KB.to_string()).with_context(|| format!("writing {path}"))
    });
    if let Err(e) = res {
        eprintln!("cowfs: sequential reads will be slower: could not set the mount's read-ahead: {e:#}");
    }
}

/// `cowfs umount`: unmounts (the daemon commits open files and closes the store) and waits
/// for the daemon to exit.
pub fn umount(mnt: &Path) -> Result<Unmounted> {
    let abs = mnt.canonicalize().with_context(|| format!("mount point {}", mnt.display()))?;
    let Some(m) = mount_at(&abs)? else { bail!("{} is not mounted", abs.display()) };
    if !is_cowfs(&m) {
        bail!("{} is not a cowfs mount (it is {})", abs.display(), m.fstype);
    }
    let pid = daemon_pid(Path::new(&m.source));
    let out = Command::new("fusermount3").arg("-u").arg(&abs).output().context("running fusermount3")?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr);
        bail!("unmounting {}: {}", abs.display(), msg.lines().next().unwrap_or("fusermount3 failed").trim());
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    if let Some(pid) = pid {
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if Instant::now() > deadline {
                bail!("the mount daemon (pid {pid}) did not exit within 120 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The daemon is done with the store when it lets go of the store's lock: wait for that
    // too (it is what a command run right after this one needs).
    if !lock_free_by(Path::new(&m.source), deadline)? {
        bail!("the store {} is still in use 120 s after unmounting", m.source);
    }
    Ok(Unmounted { mountpoint: abs.display().to_string(), storage: m.source.clone() })
}

fn is_zombie(pid: u32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}
