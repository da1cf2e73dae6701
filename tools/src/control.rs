//! The mount daemon's control socket (`STORE/control.sock`): the history commands run inside
//! the daemon, which stays the only writer of the store, and their changes show in the mount
//! at once (the kernel's caches for the touched file are invalidated). Only the store's owner
//! and root may connect (checked by peer credentials). One JSON request per connection, one
//! JSON reply: `{"ok": value}` or `{"error": "one line"}`, after `{"progress": [done, total]}`
//! lines from a long command.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cowfs_engine::Engine;
use serde_json::Value;

use crate::history::{self, Pick};
use crate::protocol::{OverlayChange, Reply, Request, RestoreOutput, StoreStats};
use crate::snapshot;

/// Name of the socket in the store.
pub const SOCKET: &str = "control.sock";

/// `req` with the mount file of a virtual copy ([`crate::paths::VIRTUAL_COPY_FILE`]) named by
/// its store path, when it names it.
fn naming_virtual_copy(e: &Engine, req: &Request) -> Result<Option<Request>> {
    let mut r = req.clone();
    let (Request::History { path }
    | Request::Diff { path, .. }
    | Request::Restore { path, .. }
    | Request::Forget { path, .. }) = &mut r
    else {
        return Ok(None);
    };
    if path != crate::paths::VIRTUAL_COPY_FILE {
        return Ok(None);
    }
    *path = crate::paths::virtual_copy_path(e)?;
    Ok(Some(r))
}

/// Runs one request against an open engine, telling a long one's `progress(done, total)`.
/// Returns the command's output (one of the output types of [`crate::protocol`]) and the
/// store paths it changed.
pub fn execute(
    e: &Engine,
    store: &Path,
    req: &Request,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Value, Vec<String>)> {
    fn out(v: impl serde::Serialize) -> Result<Value> {
        Ok(serde_json::to_value(v)?)
    }
    let none = Vec::new;
    let named;
    let req = match naming_virtual_copy(e, req)? {
        Some(r) => {
            named = r;
            &named
        }
        None => req,
    };
    Ok(match req {
        Request::SnapshotCreate { name, description } => (out(snapshot::create(e, name, description)?)?, none()),
        Request::SnapshotList => (out(snapshot::list(e))?, none()),
        Request::Stats => (out(stats(e)?)?, none()),
        Request::OverlayStatus { path } => {
            let rows: Vec<OverlayChange> = e
                .overlay_status(path)?
                .into_iter()
                .map(|c| OverlayChange {
                    path: c.path,
                    change: c.kind.name().to_string(),
                    from: c.from,
                    stored_bytes: c.stored_bytes,
                })
                .collect();
            (out(rows)?, none())
        }
        Request::OverlayAbsorb { paths } => {
            let r = e.overlay_absorb(paths, progress)?;
            (out(crate::protocol::AbsorbReport::from(r))?, none())
        }
        Request::Sync { remote, aws_env, direction, dry_run } => {
            let (report, touched) = crate::sync::run(e, store, remote, aws_env, *direction, *dry_run, progress)?;
            (out(report)?, touched)
        }
        Request::Resolve { path, keep } => {
            let (r, touched) = crate::sync::resolve(e, store, path, keep)?;
            (out(r)?, touched)
        }
        Request::SnapshotShow { name } => (out(snapshot::show(e, name)?)?, none()),
        Request::SnapshotDelete { name } => (out(snapshot::delete(e, name)?)?, none()),
        Request::SnapshotDiff { name, to } => (out(snapshot::tree_diff(e, name, to.as_deref())?)?, none()),
        Request::Log { limit, action, path_prefix, since, until } => {
            let time = |t: &Option<String>| t.as_deref().map(history::parse_time).transpose();
            let action = match action {
                None => None,
                Some(a) => Some(cowfs_engine::Action::parse(a).with_context(|| format!("unknown action {a:?}"))?),
            };
            let f = history::LogFilter {
                limit: *limit,
                action,
                path_prefix: path_prefix.clone(),
                since: time(since)?,
                until: time(until)?,
            };
            (out(history::log(e, &f)?)?, none())
        }
        Request::Gc { policy, dry_run, force } => {
            let policy = cowfs_engine::policy::Policy::from_file(policy)?;
            (out(crate::gc::gc(e, &policy, *dry_run, *force, progress)?)?, none())
        }
        Request::Compact => (out(crate::gc::compact(e, progress)?)?, none()),
        Request::Forget { path, recursive, include_snapshots, dry_run } => {
            (out(crate::gc::forget(e, path, *recursive, *include_snapshots, *dry_run, progress)?)?, none())
        }
        Request::SnapshotRestore { name, keep_new, dry_run } => {
            let (v, touched) = snapshot::restore(e, name, *keep_new, *dry_run, progress)?;
            (out(v)?, touched)
        }
        Request::History { path } => (out(history::history(e, path)?)?, none()),
        Request::Diff { path, v1, v2 } => (out(history::diff(e, path, *v1, *v2)?)?, none()),
        Request::Restore { path, version, before_secs, before_nanos, keep_new, dry_run } => {
            let pick = match (version, before_secs) {
                (Some(n), _) => Pick::Number(*n),
                (None, Some(s)) => Pick::Before(cowfs_engine::Timestamp { secs: *s, nanos: *before_nanos }),
                _ => bail!("restore needs a version or a time"),
            };
            let before = match pick {
                Pick::Before(t) => Some(t),
                Pick::Number(_) => None,
            };
            if history::is_tree(e, path, before)? {
                let Some(t) = before else { bail!("{path} is a directory: restore a tree with --before DATETIME") };
                let (v, touched) = history::restore_tree(e, path, t, *keep_new, *dry_run, progress)?;
                return Ok((out(RestoreOutput::Tree(v))?, touched));
            }
            if *keep_new {
                bail!("--keep-new is for a directory or /, and {path} is a file");
            }
            let v = history::restore(e, path, pick, *dry_run)?;
            (out(RestoreOutput::File(v))?, if *dry_run { none() } else { vec![path.clone()] })
        }
    })
}

/// `cowfs stats`: space and counts. `logical_size_bytes` is the data of every version, holes
/// excluded (what whole-file versioning would store); dedup savings are what content-defined,
/// content-addressed chunks avoid storing of the part of it kept in chunks (not the bytes
/// read from lower trees).
pub fn stats(e: &Engine) -> Result<StoreStats> {
    let s = e.stats()?;
    let in_chunks = s.version_bytes - s.version_lower_bytes;
    let saved = in_chunks.saturating_sub(s.referenced_chunk_raw_bytes);
    let pct = if in_chunks == 0 { 0.0 } else { saved as f64 * 100.0 / in_chunks as f64 };
    let ratio = if s.chunk_stored_bytes == 0 { 1.0 } else { s.chunk_raw_bytes as f64 / s.chunk_stored_bytes as f64 };
    Ok(StoreStats {
        logical_size_bytes: s.version_bytes,
        lower_bytes: s.version_lower_bytes,
        current_size_bytes: s.logical_bytes,
        actual_size_bytes: s.segment_bytes,
        dedup_savings_bytes: saved,
        dedup_percentage: (pct * 100.0).round() / 100.0,
        compression_ratio: (ratio * 1000.0).round() / 1000.0,
        chunk_raw_bytes: s.chunk_raw_bytes,
        chunk_stored_bytes: s.chunk_stored_bytes,
        total_files: s.files,
        total_inodes: s.inodes,
        total_versions: s.versions,
        lineages: s.lineages,
        chunks: s.chunks,
        unreferenced_chunks: s.unreferenced_chunks,
        nodes: s.nodes,
        segments: s.segments,
        live_bytes: s.live_bytes,
        dead_bytes: s.dead_bytes,
        snapshots: s.snapshots,
    })
}

fn allowed(stream: &UnixStream, owner: u32) -> bool {
    match nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials) {
        Ok(c) => c.uid() == 0 || c.uid() == owner,
        Err(_) => false,
    }
}

/// Creates the store's socket. Done before the mount goes live, so a command run as soon as
/// `cowfs mount` returns finds it (its connection waits until [`serve`] accepts it).
pub fn bind(store: &Path) -> Result<UnixListener> {
    let sock = store.join(SOCKET);
    let _ = std::fs::remove_file(&sock); // a stale socket of a crashed daemon (we hold LOCK)
    UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))
}

/// Serves the socket until the process exits. `changed` is called with the store path of
/// every file a request changed (to invalidate the kernel's caches).
pub fn serve(
    store: &Path,
    listener: UnixListener,
    engine: Engine,
    changed: impl Fn(&Engine, &str) + Send + 'static,
) -> Result<()> {
    let owner = std::fs::metadata(store)?.uid();
    let store = store.to_path_buf();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if !allowed(&stream, owner) {
                let _ = write_line(&stream, &Reply::Error("permission denied: not the store's owner".into()));
                continue;
            }
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let mut progress = |done, total| {
                // A client gone is seen when the reply cannot be written either.
                let _ = write_line(&stream, &Reply::Progress([done, total]));
            };
            let reply = match serde_json::from_str::<Request>(&line) {
                Ok(req) => match execute(&engine, &store, &req, &mut progress) {
                    Ok((v, touched)) => {
                        for p in &touched {
                            changed(&engine, p);
                        }
                        Reply::Ok(v)
                    }
                    Err(e) => Reply::Error(one_line(&e)),
                },
                Err(e) => Reply::Error(format!("bad request: {e}")),
            };
            let _ = write_line(&stream, &reply);
        }
    });
    Ok(())
}

/// Writes one reply line.
fn write_line(stream: &UnixStream, reply: &Reply) -> std::io::Result<()> {
    // (A reply is a JSON value, a string or numbers: serialising it cannot fail.)
    let line = serde_json::to_string(reply).unwrap_or_default();
    (&*stream).write_all(format!("{line}\n").as_bytes())
}

/// The error and its causes on one line (a cause already quoted by its parent is not
/// repeated).
pub fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let c = c.to_string();
        if out.ends_with(&c) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&c);
    }
    out
}

/// The socket of a mounted store, if its daemon answers there.
pub fn socket_of(store: &Path) -> Option<PathBuf> {
    let sock = store.join(SOCKET);
    UnixStream::connect(&sock).ok().map(|_| sock)
}

/// Sends one request to the daemon and returns its output, telling `progress(done, total)`
/// as the daemon reports it.
pub fn request(sock: &Path, req: &Request, progress: &mut dyn FnMut(u64, u64)) -> Result<Value> {
    let mut stream = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    stream.write_all(format!("{}\n", serde_json::to_string(req)?).as_bytes())?;
    let mut lines = BufReader::new(&stream);
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            bail!("the daemon closed the connection without a reply");
        }
        match serde_json::from_str(&line).with_context(|| format!("bad reply from the daemon: {line:?}"))? {
            Reply::Progress([done, total]) => progress(done, total),
            Reply::Ok(v) => return Ok(v),
            Reply::Error(e) => bail!("{e}"),
        }
    }
}
