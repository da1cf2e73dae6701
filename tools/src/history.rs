//! `cowfs history` and `cowfs restore`: a path's versions, and bringing an old one back as a
//! new version. Each command is a function of an open [`Engine`], so the same code can serve
//! the offline CLI (today) and the mount daemon (with the control socket, next).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use cowfs_engine::{Engine, Error, FileKind, Inode, InodeId, LineageId, Op, Outcome, Timestamp, Version};
use serde_json::json;

/// A path inside the store, split into its directory and last name.
#[derive(Debug)]
pub struct Resolved {
    /// The directory holding the name.
    pub parent: InodeId,
    /// The last component.
    pub name: Vec<u8>,
    /// The inode there now, if any.
    pub inode: Option<Arc<Inode>>,
}

/// Resolves a store-relative path (`/docs/a.txt`; a missing leading `/` is allowed).
pub fn resolve(e: &Engine, path: &str) -> Result<Resolved> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
    if parts.contains(&"..") {
        bail!("path {path:?}: '..' is not allowed");
    }
    let Some((last, dirs)) = parts.split_last() else { bail!("path {path:?} names the root, not a file") };
    let dir = walk_dirs(e, path, dirs.iter().copied())?;
    let inode = match e.lookup(dir, last.as_bytes()) {
        Ok(i) => Some(i),
        Err(Error::NotFound(_)) => None,
        Err(err) => return Err(err.into()),
    };
    Ok(Resolved { parent: dir, name: last.as_bytes().to_vec(), inode })
}

/// The directory reached from the root through `dirs` (`path` names it in messages).
pub fn walk_dirs<'a>(e: &Engine, path: &str, dirs: impl IntoIterator<Item = &'a str>) -> Result<InodeId> {
    let mut dir = InodeId::ROOT;
    for d in dirs {
        let i = e.lookup(dir, d.as_bytes()).map_err(|_| anyhow::anyhow!("path {path:?}: no directory {d:?}"))?;
        if i.kind != FileKind::Directory {
            bail!("path {path:?}: {d:?} is not a directory");
        }
        dir = i.ino;
    }
    Ok(dir)
}

/// The lineage of the file at a path: the live file's, or the deleted one's.
fn lineage(e: &Engine, r: &Resolved, path: &str) -> Result<LineageId> {
    if let Some(i) = &r.inode {
        if i.kind != FileKind::Regular {
            bail!("{path} is not a regular file");
        }
        return i.lineage.context("regular file without lineage");
    }
    let grave = e.with_index(|ix| ix.ns.graves.get(&(r.parent, r.name.clone())).copied());
    grave.with_context(|| format!("{path}: no such file, and none was deleted there"))
}

/// RFC 3339 in the local time zone.
pub fn rfc3339(t: Timestamp) -> String {
    match jiff::Timestamp::new(t.secs, t.nanos as i32) {
        Ok(ts) => {
            let z = ts.to_zoned(jiff::tz::TimeZone::system());
            ts.display_with_offset(z.offset()).to_string()
        }
        Err(_) => format!("@{}.{:09}", t.secs, t.nanos),
    }
}

/// Parses RFC 3339 with an offset, or `YYYY-MM-DD[ HH:MM[:SS]]` in the local time zone.
pub fn parse_time(s: &str) -> Result<Timestamp> {
    let ts: jiff::Timestamp = if let Ok(ts) = s.parse::<jiff::Timestamp>() {
        ts
    } else if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        dt.to_zoned(jiff::tz::TimeZone::system()).map_err(|e| anyhow::anyhow!("date {s:?}: {e}"))?.timestamp()
    } else if let Ok(d) = s.parse::<jiff::civil::Date>() {
        d.to_zoned(jiff::tz::TimeZone::system()).map_err(|e| anyhow::anyhow!("date {s:?}: {e}"))?.timestamp()
    } else {
        bail!("invalid date {s:?} (use RFC 3339 like 2026-11-21T14:03:00+01:00, or local YYYY-MM-DD[ HH:MM[:SS]])");
    };
    Ok(Timestamp { secs: ts.as_second(), nanos: ts.subsec_nanosecond() as u32 })
}

fn hash(v: &Version) -> String {
    v.content.map_or_else(|| "empty".to_string(), |c| c.to_string())
}

/// `cowfs history`: every version of the path's lineage, oldest first.
pub fn history(e: &Engine, path: &str) -> Result<serde_json::Value> {
    let r = resolve(e, path)?;
    let l = lineage(e, &r, path)?;
    let versions = e.versions(l);
    let current = r.inode.as_ref().filter(|i| i.lineage == Some(l)).map(|i| (i.content, i.size));
    let rows: Vec<serde_json::Value> = versions
        .iter()
        .enumerate()
        .map(|(k, v)| {
            let is_current = k + 1 == versions.len() && current == Some((v.content, v.size));
            json!({
                "version": v.number,
                "date": rfc3339(v.time),
                "size": v.size,
                "hash": hash(v),
                "current": is_current,
                "version_id": v.id.to_string(),
            })
        })
        .collect();
    Ok(serde_json::Value::Array(rows))
}

/// Which version `restore` takes.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// By number.
    Number(u64),
    /// The newest committed before this time.
    Before(Timestamp),
}

/// `cowfs restore`: the chosen version's content becomes the file's new (newest) version;
/// a deleted file comes back. Nothing is removed from history.
pub fn restore(e: &Engine, path: &str, pick: Pick, dry_run: bool) -> Result<serde_json::Value> {
    let r = resolve(e, path)?;
    let l = lineage(e, &r, path)?;
    let versions = e.versions(l);
    let v = match pick {
        Pick::Number(n) => versions.iter().find(|v| v.number == n).cloned().with_context(|| {
            let have: Vec<u64> = versions.iter().map(|v| v.number).collect();
            format!("{path} has no version {n} (versions: {have:?})")
        })?,
        Pick::Before(t) => versions
            .iter()
            .rev()
            .find(|v| v.time < t)
            .cloned()
            .with_context(|| format!("{path} has no version before {}", rfc3339(t)))?,
    };
    if !dry_run {
        let ino = match &r.inode {
            Some(i) => i.ino,
            None => e.create_file(r.parent, &r.name, 0o644)?.ino,
        };
        let op = Op::CommitContent { ino, size: v.size, content: v.content, mtime: None };
        match e.submit(op, true)? {
            Outcome::Version(_) => {}
            other => bail!("unexpected outcome {other:?}"),
        }
    }
    Ok(json!({
        "path": path,
        "restored_from_version": v.number,
        "target_hash": hash(&v),
        "target_size": v.size,
        "dry_run": dry_run,
    }))
}

/// Largest version `diff` compares as text (bigger ones get the binary summary).
const MAX_TEXT_DIFF: u64 = 8 << 20;

/// `cowfs diff`: version `left` against version `right` (`None`: the current content).
pub fn diff(e: &Engine, path: &str, left: u64, right: Option<u64>) -> Result<serde_json::Value> {
    let r = resolve(e, path)?;
    let l = lineage(e, &r, path)?;
    let versions = e.versions(l);
    let find = |n: u64| {
        versions.iter().find(|v| v.number == n).cloned().with_context(|| {
            let have: Vec<u64> = versions.iter().map(|v| v.number).collect();
            format!("{path} has no version {n} (versions: {have:?})")
        })
    };
    let lv = find(left)?;
    let (right_number, rsize, rcontent): (serde_json::Value, u64, Option<cowfs_engine::NodeId>) = match right {
        Some(n) => {
            let v = find(n)?;
            (n.into(), v.size, v.content)
        }
        None => {
            let i = r.inode.as_ref().with_context(|| format!("{path} is deleted: give --v2"))?;
            ("current".into(), i.size, i.content)
        }
    };
    let same = lv.content == rcontent && lv.size == rsize;
    let read = |c, s: u64| e.read_content(c, s, 0, s as usize);
    let mut text = None;
    if lv.size <= MAX_TEXT_DIFF && rsize <= MAX_TEXT_DIFF {
        let (a, b) = (read(lv.content, lv.size)?, read(rcontent, rsize)?);
        if let (Ok(a), Ok(b)) = (String::from_utf8(a), String::from_utf8(b))
            && !a.contains('\0')
            && !b.contains('\0')
        {
            let d = similar::TextDiff::from_lines(&a, &b);
            let right_label = match right {
                Some(n) => format!("{path}@{n}"),
                None => format!("{path}@current"),
            };
            text = Some(d.unified_diff().header(&format!("{path}@{left}"), &right_label).to_string());
        }
    }
    Ok(json!({
        "path": path,
        "mode": if text.is_some() { "text" } else { "binary" },
        "left_version": left,
        "right_version": right_number,
        "left_size": lv.size,
        "right_size": rsize,
        "size_delta": rsize as i64 - lv.size as i64,
        "left_hash": hash(&lv),
        "right_hash": rcontent.map_or_else(|| "empty".to_string(), |c| c.to_string()),
        "same_content": same,
        "diff": text.unwrap_or_default(),
    }))
}
