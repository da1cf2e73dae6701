//! `cowfs`: the command-line interface: mount, umount, history, restore, diff, log,
//! snapshots, stats, mounts; gc, forget and policy in `retention`; argument definitions in
//! `args`; the mount(8) helper in `mount_helper`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser as _;
use cowfs_engine::storage::{DirStorage, Storage};
use cowfs_engine::{Engine, Error, Options};
use cowfs_tools::human;
use cowfs_tools::mount::How;
use cowfs_tools::mount_options::MountOptions;
use cowfs_tools::progress::Progress;
use cowfs_tools::protocol::{
    AbsorbReport, Deleted, FileDiff, LogRow, OverlayChange, Request, RestoreOutput, SnapshotDetail, SnapshotInfo,
    SnapshotRestored, StoreStats, TreeDiff, VersionRow,
};

mod args;
mod mount_helper;

use args::{Cli, Cmd, OverlayCmd, SnapCmd};

/// Writes to stdout; a closed pipe (`cowfs history | head`) ends the program quietly, as a
/// SIGPIPE would, instead of panicking.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            crate::stdout_failed(e);
        }
    }};
}

/// [`out!`] with a newline.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($t)*) {
            crate::stdout_failed(e);
        }
    }};
}

/// A line for people: not printed with `--json` (the output was printed as JSON).
macro_rules! quiet_or {
    ($json:expr, $($t:tt)*) => {{
        if !$json {
            outln!($($t)*);
        }
    }};
}

mod retention;
mod sync;

use retention::{ForgetArgs, forget, gc, policy};

fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("cowfs: error: writing to stdout: {e}");
    std::process::exit(1)
}

fn overlay_status(storage: &Option<PathBuf>, path: &Option<String>, json: bool) -> Result<()> {
    let storage = &store_for(storage, path.as_deref())?;
    let path = store_path(storage, path.as_deref().unwrap_or("/"));
    let rows: Vec<OverlayChange> = run_command(storage, Request::OverlayStatus { path }, false, json)?;
    if json {
        return Ok(());
    }
    for r in rows {
        let from = r.from.map(|f| format!(" (from {f})")).unwrap_or_default();
        let stored =
            if r.change == "modified" { format!(" ({} stored)", human::size(r.stored_bytes)) } else { String::new() };
        outln!("{:<9} {}{from}{stored}", r.change, r.path);
    }
    Ok(())
}

/// `cowfs overlay absorb`: in the daemon when the store is mounted, else here; progress on a
/// terminal either way. Fails (after printing the report) when anything could not be absorbed.
fn overlay_absorb(storage: &Option<PathBuf>, paths: &[String], json: bool) -> Result<()> {
    let storage = &store_for(storage, paths.first().map(String::as_str))?;
    let paths: Vec<String> = paths.iter().map(|p| store_path(storage, p)).collect();
    let bar = Progress::bytes("absorbed");
    let r: AbsorbReport =
        run_command_with(storage, Request::OverlayAbsorb { paths }, true, false, &mut |d, t| bar.set(d, t))?;
    drop(bar);
    if json {
        outln!("{}", serde_json::to_string(&r)?);
    } else {
        outln!(
            "absorbed {} lower files ({} bytes){}, listed {} directories",
            r.files,
            r.bytes,
            if r.already > 0 { format!(", {} absorbed before", r.already) } else { String::new() },
            r.listed_dirs
        );
        if r.detached {
            outln!("the store no longer depends on its lower trees: it mounts without them");
        } else {
            outln!(
                "the store still reads {} lower files and {} directories from its lower trees",
                r.lower_files,
                r.unlisted_dirs
            );
        }
    }
    for f in &r.failed {
        eprintln!("cowfs: {}: {}", f.path, f.reason);
    }
    if !r.failed.is_empty() {
        bail!("{} lower files or directories could not be absorbed (named above)", r.failed.len());
    }
    Ok(())
}

fn snapshot(storage: &Option<PathBuf>, cmd: &SnapCmd, json: bool) -> Result<()> {
    let storage = &store_for(storage, None)?;
    match cmd {
        SnapCmd::List => {
            let list: Vec<SnapshotInfo> = run_command(storage, Request::SnapshotList, false, json)?;
            if json {
                return Ok(());
            }
            outln!("{:<24} {:<19}  description", "name", "date");
            for s in list {
                outln!("{:<24} {:<19}  {}", s.name, human::time(&s.date), s.description);
            }
        }
        SnapCmd::Create { name, description } => {
            let req = Request::SnapshotCreate { name: name.clone(), description: description.clone() };
            let _: SnapshotInfo = run_command(storage, req, true, json)?;
            quiet_or!(json, "created snapshot {name}");
        }
        SnapCmd::Delete { name } => {
            let _: Deleted = run_command(storage, Request::SnapshotDelete { name: name.clone() }, true, json)?;
            quiet_or!(json, "deleted snapshot {name}");
        }
        SnapCmd::Restore { name, keep_new, dry_run } => {
            let req = Request::SnapshotRestore { name: name.clone(), keep_new: *keep_new, dry_run: *dry_run };
            let bar = Progress::items("entries restored");
            let out: SnapshotRestored = run_command_with(storage, req, !dry_run, json, &mut |d, t| bar.set(d, t))?;
            drop(bar);
            quiet_or!(
                json,
                "{} snapshot {name}: {} files restored, {} removed",
                if *dry_run { "would restore" } else { "restored" },
                out.files_restored,
                out.files_removed
            );
        }
        SnapCmd::Show { name } => {
            let d: SnapshotDetail = run_command(storage, Request::SnapshotShow { name: name.clone() }, false, json)?;
            if !json {
                let rows = [
                    ("name", d.info.name),
                    ("description", d.info.description),
                    ("date", human::time(&d.info.date)),
                    ("id", d.info.id.to_string()),
                    ("files", d.files.to_string()),
                    ("directories", d.directories.to_string()),
                    ("logical size", human::size(d.logical_size_bytes)),
                ];
                for (k, v) in rows {
                    outln!("{k:<20} {v}");
                }
            }
        }
    }
    Ok(())
}

fn open_existing(path: &PathBuf) -> Result<Engine> {
    if !path.is_dir() {
        bail!("{}: no such directory", path.display());
    }
    let st: Arc<dyn Storage> = Arc::new(DirStorage::new(path).with_context(|| format!("{}", path.display()))?);
    cowfs_tools::raise_fd_limit();
    match Engine::open(st, Options { create: false, ..Options::default() }) {
        Ok(e) => Ok(e),
        Err(Error::Locked) => bail!("{}: store is in use by another process (mounted?)", path.display()),
        Err(e) => Err(anyhow::Error::new(e).context(path.display().to_string())),
    }
}

fn stats(storage: &PathBuf, json: bool) -> Result<()> {
    let st: StoreStats = run_command(storage, Request::Stats, false, json)?;
    if json {
        return Ok(());
    }
    for (k, val) in serde_json::to_value(st)?.as_object().into_iter().flatten() {
        let (name, val) = match (k.strip_suffix("_bytes"), val.as_u64()) {
            (Some(name), Some(n)) => (name, human::size(n)),
            _ => (k.as_str(), val.to_string()),
        };
        outln!("{:<28} {val:>12}", name.replace('_', " "));
    }
    Ok(())
}

/// `cowfs mounts`.
fn list_mounts(json: bool) -> Result<()> {
    let rows = cowfs_tools::mount_table::cowfs_mounts()?;
    if json {
        outln!("{}", serde_json::to_string(&rows)?);
        return Ok(());
    }
    outln!(
        "{:<30} {:<30} {:>8} {:>10}  {:<24} {:<19} {:>11}  policy",
        "mount point",
        "store",
        "pid",
        "size",
        "flags",
        "last maintenance",
        "reclaimable"
    );
    for r in rows {
        let keep: Vec<String> = serde_json::to_value(&r.policy)?
            .as_object()
            .into_iter()
            .flatten()
            .filter(|(_, v)| !v.is_null() && v.as_array().is_none_or(|a| !a.is_empty()))
            .map(|(k, v)| format!("{k}={}", v.as_str().map_or(v.to_string(), str::to_string)))
            .collect();
        let policy = if keep.is_empty() { "every version".to_string() } else { keep.join(" ") };
        let pid = r.pid.map_or("dead".to_string(), |p| p.to_string());
        let last = match &r.last_maintenance {
            None => "-".to_string(),
            Some(m) if m.error.is_some() => format!("{} (failed)", human::time(&m.time)),
            Some(m) => human::time(&m.time),
        };
        outln!(
            "{:<30} {:<30} {pid:>8} {:>10}  {:<24} {last:<19} {:>11}  {policy}",
            r.mountpoint,
            r.storage,
            human::size(r.store_bytes),
            r.flags,
            r.reclaimable_bytes.map_or("-".to_string(), human::size)
        );
    }
    Ok(())
}

/// `cowfs man --dir DIR`: cowfs.1 and a page per command, into an existing directory.
fn man_pages(dir: &Path, json: bool) -> Result<()> {
    if !dir.is_dir() {
        bail!("{}: no such directory", dir.display());
    }
    fn pages(cmd: clap::Command, prefix: &str, out: &mut Vec<clap::Command>) {
        let name = if prefix.is_empty() { cmd.get_name().to_string() } else { format!("{prefix}-{}", cmd.get_name()) };
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set() && s.get_name() != "help") {
            pages(sub.clone(), &name, out);
        }
        out.push(cmd.name(name));
    }
    let mut cmds = Vec::new();
    pages(<Cli as clap::CommandFactory>::command(), "", &mut cmds);
    let mut written = Vec::new();
    for cmd in cmds.into_iter().rev() {
        let path =
            clap_mangen::Man::new(cmd).generate_to(dir).with_context(|| format!("writing into {}", dir.display()))?;
        written.push(path.display().to_string());
    }
    match json {
        true => outln!("{}", serde_json::to_string(&written)?),
        false => outln!("wrote {} pages into {}", written.len(), dir.display()),
    }
    Ok(())
}

/// Writes `bytes` to stdout as they are.
fn write_stdout(bytes: &[u8]) -> Result<()> {
    out!("{}", String::from_utf8_lossy(bytes));
    Ok(())
}

/// With `json`, prints `out` (when there is one) as one line of JSON.
fn print_json<T: serde::Serialize>(json: bool, out: Option<&T>) -> Result<()> {
    if json && let Some(out) = out {
        outln!("{}", serde_json::to_string(out)?);
    }
    Ok(())
}

/// Runs a command in the mount's daemon when the store is mounted, else on the store
/// directly; with `json`, prints its output as JSON. Returns the output as its type.
fn run_command<T: serde::de::DeserializeOwned>(
    storage: &PathBuf,
    req: Request,
    changes: bool,
    json: bool,
) -> Result<T> {
    run_command_with(storage, req, changes, json, &mut |_, _| {})
}

/// [`run_command`], telling a long command's `progress(done, total)`.
fn run_command_with<T: serde::de::DeserializeOwned>(
    storage: &PathBuf,
    req: Request,
    changes: bool,
    json: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<T> {
    let out = match cowfs_tools::control::socket_of(storage) {
        Some(sock) => cowfs_tools::control::request(&sock, &req, progress)?,
        None => {
            let e = open_existing(storage)?;
            let out = cowfs_tools::control::execute(&e, storage, &req, progress);
            // Only a real change is checkpointed; refusals and reads leave the store's bytes alone.
            if out.is_ok() && changes {
                e.close()?
            } else {
                e.close_without_checkpoint()?
            }
            out?.0
        }
    };
    if json {
        outln!("{out}");
    }
    serde_json::from_value(out).context("the output of the command has an unexpected shape")
}

/// The store a command works on: the one given (`-s`, `COWFS_STORAGE`); else the store mounted
/// where `path` is (relative to the current directory), or else where the current directory is.
fn store_for(given: &Option<PathBuf>, path: Option<&str>) -> Result<PathBuf> {
    if let Some(s) = given {
        return Ok(s.clone());
    }
    let cwd = std::env::current_dir().context("the current directory")?;
    let candidates = path.map(|p| std::path::absolute(cwd.join(p))).transpose()?.into_iter().chain([cwd.clone()]);
    for p in candidates {
        if let Some(store) = cowfs_tools::mount_table::store_of(&p)? {
            return Ok(store);
        }
    }
    let at = path.map_or(cwd.display().to_string(), String::from);
    bail!("{at} is not in a cowfs mount: name the store with -s STORE or COWFS_STORAGE")
}

/// A path given on the command line as a store path: inside the store's mount point, the part
/// below it (the mount file of a virtual copy: its one file); otherwise taken as store-relative.
fn store_path(storage: &Path, path: &str) -> String {
    let abs = std::path::absolute(path).unwrap_or_else(|_| PathBuf::from(path));
    let store = storage.canonicalize().unwrap_or_else(|_| storage.to_path_buf());
    if let Ok(mounts) = cowfs_tools::mount_table::mounts() {
        for m in mounts {
            if Path::new(&m.source) == store
                && let Ok(rest) = abs.strip_prefix(&m.target)
            {
                if rest.as_os_str().is_empty() && abs.is_file() {
                    return cowfs_tools::paths::VIRTUAL_COPY_FILE.to_string();
                }
                return format!("/{}", rest.display());
            }
        }
    }
    if path.starts_with('/') { path.to_string() } else { format!("/{path}") }
}

fn history(storage: &PathBuf, path: &str, json: bool) -> Result<()> {
    let path = store_path(storage, path);
    let rows: Vec<VersionRow> = run_command(storage, Request::History { path }, false, json)?;
    if json {
        return Ok(());
    }
    outln!("{:>8}  {:<19}  {:>10}  {:<16} current", "version", "date", "size", "hash");
    for r in rows {
        outln!(
            "{:>8}  {:<19}  {:>10}  {:<16} {}",
            r.version,
            human::time(&r.date),
            human::size(r.size),
            &r.hash[..r.hash.len().min(16)],
            if r.current { "*" } else { "" }
        );
    }
    Ok(())
}

fn restore(storage: &PathBuf, path: &str, pick: &RestoreArgs, json: bool) -> Result<()> {
    let path = store_path(storage, path);
    let (version, before) = match (pick.version, &pick.before) {
        (Some(n), None) => (Some(n), None),
        (None, Some(t)) => (None, Some(cowfs_tools::history::parse_time(t)?)),
        _ => bail!("give exactly one of --version and --before"),
    };
    let req = Request::Restore {
        path,
        version,
        before_secs: before.map(|t| t.secs),
        before_nanos: before.map_or(0, |t| t.nanos),
        keep_new: pick.keep_new,
        dry_run: pick.dry_run,
    };
    let verb = if pick.dry_run { "would restore" } else { "restored" };
    let bar = Progress::items("entries restored");
    let out = run_command_with(storage, req, !pick.dry_run, json, &mut |d, t| bar.set(d, t))?;
    drop(bar);
    match out {
        RestoreOutput::Tree(t) => quiet_or!(
            json,
            "{verb} {} to {}: {} files restored, {} removed",
            t.path,
            t.before,
            t.files_restored,
            t.files_removed
        ),
        RestoreOutput::File(f) => {
            quiet_or!(json, "{verb} {} to version {} ({} bytes)", f.path, f.restored_from_version, f.target_size)
        }
    }
    Ok(())
}

/// `restore`'s choice of what to bring back.
struct RestoreArgs {
    version: Option<u64>,
    before: Option<String>,
    keep_new: bool,
    dry_run: bool,
}

/// `log`'s filters, as given.
struct LogArgs<'a> {
    limit: Option<usize>,
    action: Option<&'a str>,
    path_prefix: Option<&'a str>,
    since: Option<&'a str>,
    until: Option<&'a str>,
}

fn log(storage: &PathBuf, a: &LogArgs<'_>, json: bool) -> Result<()> {
    if let Some(x) = a.action
        && cowfs_engine::Action::parse(x).is_none()
    {
        let all: Vec<&str> = cowfs_engine::Action::ALL.iter().map(|a| a.name()).collect();
        bail!("unknown action {x:?} (one of: {})", all.join(", "));
    }
    let time = |t: Option<&str>| t.map(|t| cowfs_tools::history::parse_time(t).map(|t| t.rfc3339())).transpose();
    let req = Request::Log {
        limit: a.limit,
        action: a.action.map(str::to_string),
        path_prefix: a.path_prefix.map(|p| store_path(storage, p)),
        since: time(a.since)?,
        until: time(a.until)?,
    };
    let rows: Vec<LogRow> = run_command(storage, req, false, json)?;
    if json {
        return Ok(());
    }
    outln!("{:<19}  {:<16} {:>7}  path", "time", "action", "version");
    for r in rows {
        let mut what = r.path.unwrap_or_default();
        if let Some(to) = r.to {
            what = format!("{what} -> {to}");
        }
        if !r.detail.is_empty() {
            what = if what.is_empty() { r.detail } else { format!("{what} ({})", r.detail) };
        }
        let version = r.version.map(|v| v.to_string()).unwrap_or_default();
        outln!("{:<19}  {:<16} {version:>7}  {what}", human::time(&r.time), r.action);
    }
    Ok(())
}

fn diff(
    storage: &PathBuf,
    path: &str,
    v1: Option<u64>,
    v2: Option<u64>,
    version: Option<u64>,
    json: bool,
) -> Result<()> {
    let path = store_path(storage, path);
    let (left, right) = match (v1, v2, version) {
        (Some(a), Some(b), None) => (a, Some(b)),
        (None, None, Some(n)) => (n, None),
        _ => bail!("give --v1 N --v2 M, or --version N"),
    };
    let out: FileDiff = run_command(storage, Request::Diff { path: path.clone(), v1: left, v2: right }, false, json)?;
    if json {
        return Ok(());
    }
    if out.same_content {
        outln!("{path}: versions have the same content");
    } else if out.mode == "text" {
        out!("{}", out.diff);
    } else {
        outln!(
            "{path}: binary content differs: {} -> {} bytes ({:+}), {} -> {}",
            out.left_size,
            out.right_size,
            out.size_delta,
            out.left_hash,
            out.right_hash
        );
    }
    Ok(())
}

fn tree_diff(storage: &PathBuf, a: &str, b: Option<&str>, json: bool) -> Result<()> {
    let req = Request::SnapshotDiff { name: a.to_string(), to: b.map(str::to_string) };
    let out: TreeDiff = run_command(storage, req, false, json)?;
    if json {
        return Ok(());
    }
    for (mark, paths) in [("+", &out.added), ("-", &out.removed), ("M", &out.modified)] {
        for p in paths {
            outln!("{mark}\t{p}");
        }
    }
    for r in &out.renamed {
        outln!("R\t{} -> {}", r.from, r.to);
    }
    Ok(())
}

/// A usage error: one line, exit 2.
fn usage(msg: &str) -> ! {
    eprintln!("cowfs: error: {msg}");
    std::process::exit(2)
}

/// The daemon allocates and frees megabyte buffers all the time (FUSE writes, chunk batches):
/// glibc's malloc hands large ones back to the kernel, which zeroes fresh pages for the next
/// (a third of the daemon's time in a sequential write, measured with perf). mimalloc keeps them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let mut args = std::env::args_os();
    let argv0 = args.next().map(PathBuf::from).unwrap_or_default();
    if argv0.file_name().is_some_and(|n| n == "mount.fuse.cowfs") {
        return mount_helper::run(args.collect());
    }
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => usage(&cowfs_tools::usage_line(&e)),
    };
    let res = match &cli.cmd {
        Cmd::Mounts { json } => list_mounts(*json),
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(*shell, &mut <Cli as clap::CommandFactory>::command(), "cowfs", &mut out);
            write_stdout(&out)
        }
        Cmd::Man { dir: None, .. } => {
            let mut out = Vec::new();
            clap_mangen::Man::new(<Cli as clap::CommandFactory>::command())
                .render(&mut out)
                .context("rendering the manual page")
                .and_then(|()| write_stdout(&out))
        }
        Cmd::Man { dir: Some(dir), json } => man_pages(dir, *json),
        Cmd::Stats { storage, json } => store_for(storage, None).and_then(|s| stats(&s, *json)),
        Cmd::Mount { storage, mountpoint, foreground, debug, json, lowers, relower, options } => {
            MountOptions::parse(options).and_then(|options| {
                let how = How { foreground: *foreground, debug: *debug, lowers, relower: *relower, options: &options };
                cowfs_tools::mount::mount(storage, mountpoint, how).and_then(|m| print_json(*json, m.as_ref()))
            })
        }
        Cmd::Umount { mountpoint, json } => {
            cowfs_tools::mount::umount(mountpoint).and_then(|u| print_json(*json, Some(&u)))
        }
        Cmd::History { path, storage, json } => store_for(storage, Some(path)).and_then(|s| history(&s, path, *json)),
        Cmd::Snapshot { cmd, storage, json } => snapshot(storage, cmd, *json),
        Cmd::Overlay { cmd: OverlayCmd::Status { path }, storage, json } => overlay_status(storage, path, *json),
        Cmd::Overlay { cmd: OverlayCmd::Absorb { paths }, storage, json } => overlay_absorb(storage, paths, *json),
        Cmd::Diff { path, storage, v1, v2, version, snapshot, json } => match (snapshot.as_slice(), path) {
            ([], Some(path)) if v1.is_some() || version.is_some() => {
                store_for(storage, Some(path)).and_then(|s| diff(&s, path, *v1, *v2, *version, *json))
            }
            ([], Some(_)) => usage("diff of a file needs --v1 N --v2 M, or --version N"),
            ([], None) => usage("diff needs a file path, or --snapshot A [--snapshot B]"),
            ([a], None) => store_for(storage, None).and_then(|s| tree_diff(&s, a, None, *json)),
            ([a, b], None) => store_for(storage, None).and_then(|s| tree_diff(&s, a, Some(b), *json)),
            (_, Some(_)) => usage("--snapshot compares trees: give no file path"),
            _ => usage("give --snapshot at most twice"),
        },
        Cmd::Restore { path, storage, version, before, keep_new, dry_run, json } => {
            let pick =
                RestoreArgs { version: *version, before: before.clone(), keep_new: *keep_new, dry_run: *dry_run };
            store_for(storage, Some(path)).and_then(|s| restore(&s, path, &pick, *json))
        }
        Cmd::Gc { storage, keep, dry_run, explain, force, json } => {
            store_for(storage, None).and_then(|s| gc(&s, keep, *dry_run, *explain, *force, *json))
        }
        Cmd::Policy { cmd, storage, json } => policy(storage, cmd, *json),
        Cmd::Remote { cmd, storage, json } => sync::remote_cmd(storage, cmd, *json),
        Cmd::Sync { name, push, pull, dry_run, storage, json } => {
            use cowfs_tools::sync::Direction;
            let dir = match (push, pull) {
                (true, _) => Direction::Push,
                (_, true) => Direction::Pull,
                _ => Direction::Both,
            };
            sync::sync(storage, name.as_deref(), dir, *dry_run, *json)
        }
        Cmd::Clone { url, store, s3, json } => sync::clone(url, store, s3, *json),
        Cmd::Conflicts { storage, json } => sync::conflicts(storage, *json),
        Cmd::Resolve { path, keep, storage, json } => {
            store_for(storage, Some(path)).and_then(|s| sync::resolve(&s, path, keep, *json))
        }
        Cmd::Forget { path, storage, recursive, include_snapshots, dry_run, explain, json } => {
            let how = ForgetArgs { recursive: *recursive, include_snapshots: *include_snapshots, dry_run: *dry_run };
            store_for(storage, Some(path)).and_then(|s| forget(&s, path, &how, *explain, *json))
        }
        Cmd::Log { storage, limit, action, path_prefix, since, until, json } => {
            let a = LogArgs {
                limit: *limit,
                action: action.as_deref(),
                path_prefix: path_prefix.as_deref(),
                since: since.as_deref(),
                until: until.as_deref(),
            };
            store_for(storage, a.path_prefix).and_then(|s| log(&s, &a, *json))
        }
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined, no backtrace.
            eprintln!("cowfs: error: {}", cowfs_tools::control::one_line(&e));
            ExitCode::FAILURE
        }
    }
}
