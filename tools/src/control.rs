//! The mount daemon's control socket (`STORE/control.sock`): the history commands run inside
//! the daemon, which stays the only writer of the store, and their changes show in the mount
//! at once (the kernel's caches for the touched file are invalidated). Only the store's owner
//! and root may connect (checked by peer credentials). One JSON request per connection, one
//! JSON reply: `{"ok": value}` or `{"error": "one line"}`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use cowfs_engine::Engine;
use serde_json::{Value, json};

use crate::history::{self, Pick};
use crate::snapshot;

/// Name of the socket in the store.
pub const SOCKET: &str = "control.sock";

/// Runs one request against an open engine. Returns the reply value and the store paths it
/// changed.
pub fn execute(e: &Engine, req: &Value) -> Result<(Value, Vec<String>)> {
    let name = || req["name"].as_str().context("request without a name");
    match req["cmd"].as_str() {
        Some("snapshot-create") => {
            return Ok((snapshot::create(e, name()?, req["description"].as_str().unwrap_or(""))?, vec![]));
        }
        Some("snapshot-list") => return Ok((snapshot::list(e), vec![])),
        Some("stats") => return Ok((stats(e)?, vec![])),
        Some("snapshot-show") => return Ok((snapshot::show(e, name()?)?, vec![])),
        Some("snapshot-delete") => return Ok((snapshot::delete(e, name()?)?, vec![])),
        Some("snapshot-diff") => {
            return Ok((snapshot::tree_diff(e, name()?, req["to"].as_str())?, vec![]));
        }
        Some("log") => {
            let time = |k: &str| req[k].as_str().map(history::parse_time).transpose();
            let action = match req["action"].as_str() {
                None => None,
                Some(a) => Some(cowfs_engine::Action::parse(a).with_context(|| format!("unknown action {a:?}"))?),
            };
            let f = history::LogFilter {
                limit: req["limit"].as_u64().map(|n| n as usize),
                action,
                path_prefix: req["path_prefix"].as_str().map(str::to_string),
                since: time("since")?,
                until: time("until")?,
            };
            return Ok((history::log(e, &f)?, vec![]));
        }
        Some("gc") => {
            let policy = crate::gc::Policy::from_json(req)?;
            let dry = req["dry_run"].as_bool().unwrap_or(false);
            return Ok((crate::gc::gc(e, &policy, dry, req["force"].as_bool().unwrap_or(false))?, vec![]));
        }
        Some("compact") => return Ok((crate::gc::compact(e, &mut |_, _| {})?, vec![])),
        Some("snapshot-restore") => {
            let keep_new = req["keep_new"].as_bool().unwrap_or(false);
            let dry = req["dry_run"].as_bool().unwrap_or(false);
            return snapshot::restore(e, name()?, keep_new, dry);
        }
        _ => {}
    }
    let path = req["path"].as_str().context("request without a path")?;
    match req["cmd"].as_str() {
        Some("history") => Ok((history::history(e, path)?, vec![])),
        Some("diff") => {
            let left = req["v1"].as_u64().context("diff needs a left version")?;
            Ok((history::diff(e, path, left, req["v2"].as_u64())?, vec![]))
        }
        Some("restore") => {
            let pick = match (req["version"].as_u64(), req["before_secs"].as_i64()) {
                (Some(n), _) => Pick::Number(n),
                (None, Some(s)) => Pick::Before(cowfs_engine::Timestamp {
                    secs: s,
                    nanos: req["before_nanos"].as_u64().unwrap_or(0) as u32,
                }),
                _ => bail!("restore needs a version or a time"),
            };
            let dry = req["dry_run"].as_bool().unwrap_or(false);
            let before = match pick {
                Pick::Before(t) => Some(t),
                Pick::Number(_) => None,
            };
            if history::is_tree(e, path, before)? {
                let Some(t) = before else { bail!("{path} is a directory: restore a tree with --before DATETIME") };
                return history::restore_tree(e, path, t, req["keep_new"].as_bool().unwrap_or(false), dry);
            }
            if req["keep_new"].as_bool() == Some(true) {
                bail!("--keep-new is for a directory or /, and {path} is a file");
            }
            let out = history::restore(e, path, pick, dry)?;
            Ok((out, if dry { vec![] } else { vec![path.to_string()] }))
        }
        other => bail!("unknown command {other:?}"),
    }
}

/// `cowfs stats`: space and counts. `logical_size_bytes` is the sum of the sizes of every
/// version (what whole-file versioning would store); dedup savings are what content-defined,
/// content-addressed chunks avoid storing of it.
pub fn stats(e: &Engine) -> Result<Value> {
    let s = e.stats()?;
    let saved = s.version_bytes.saturating_sub(s.chunk_raw_bytes);
    let pct = if s.version_bytes == 0 { 0.0 } else { saved as f64 * 100.0 / s.version_bytes as f64 };
    let ratio = if s.chunk_stored_bytes == 0 { 1.0 } else { s.chunk_raw_bytes as f64 / s.chunk_stored_bytes as f64 };
    Ok(json!({
        "logical_size_bytes": s.version_bytes,
        "current_size_bytes": s.logical_bytes,
        "actual_size_bytes": s.segment_bytes,
        "dedup_savings_bytes": saved,
        "dedup_percentage": (pct * 100.0).round() / 100.0,
        "compression_ratio": (ratio * 1000.0).round() / 1000.0,
        "chunk_raw_bytes": s.chunk_raw_bytes,
        "chunk_stored_bytes": s.chunk_stored_bytes,
        "total_files": s.files,
        "total_inodes": s.inodes,
        "total_versions": s.versions,
        "lineages": s.lineages,
        "chunks": s.chunks,
        "unreferenced_chunks": s.unreferenced_chunks,
        "nodes": s.nodes,
        "segments": s.segments,
        "live_bytes": s.live_bytes,
        "dead_bytes": s.dead_bytes,
        "snapshots": s.snapshots,
    }))
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
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if !allowed(&stream, owner) {
                let _ = (&stream).write_all(b"{\"error\":\"permission denied: not the store's owner\"}\n");
                continue;
            }
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let reply = match serde_json::from_str::<Value>(&line) {
                Ok(req) => match execute(&engine, &req) {
                    Ok((v, touched)) => {
                        for p in &touched {
                            changed(&engine, p);
                        }
                        json!({ "ok": v })
                    }
                    Err(e) => json!({ "error": one_line(&e) }),
                },
                Err(e) => json!({ "error": format!("bad request: {e}") }),
            };
            let _ = (&stream).write_all(format!("{reply}\n").as_bytes());
        }
    });
    Ok(())
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

/// Sends one request to the daemon and returns its reply value.
pub fn request(sock: &Path, req: &Value) -> Result<Value> {
    let mut stream = UnixStream::connect(sock).with_context(|| format!("connecting to {}", sock.display()))?;
    stream.write_all(format!("{req}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    let v: Value = serde_json::from_str(&line).with_context(|| format!("bad reply from the daemon: {line:?}"))?;
    match v.get("ok") {
        Some(ok) => Ok(ok.clone()),
        None => bail!("{}", v["error"].as_str().unwrap_or("the daemon failed")),
    }
}
