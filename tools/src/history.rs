//! `cowfs history` and `cowfs restore`: a path's versions, and bringing an old one back as a
//! new version. Each command is a function of an open [`Engine`], so the same code can serve
//! the offline CLI (today) and the mount daemon (with the control socket, next).

use anyhow::{Context, Result, bail};
use cowfs_engine::{Action, Engine, FileKind, LineageId, Timestamp, Version};

use crate::protocol::{FileDiff, LogRow, Restored, TreeRestored, VersionRef, VersionRow};

use crate::paths::{Resolved, dir_at, resolve, tree_path};

/// The lineage of the file at a path: the live file's, or the deleted one's.
fn lineage(e: &Engine, r: &Resolved, path: &str) -> Result<LineageId> {
    if let Some(i) = &r.inode {
        if i.kind != FileKind::Regular {
            bail!("{path} is not a regular file");
        }
        return i.lineage.context("regular file without lineage");
    }
    let grave = e.grave(r.parent, &r.name);
    grave.with_context(|| format!("{path}: no such file, and none was deleted there"))
}

/// Parses RFC 3339 with an offset, or `YYYY-MM-DD[ HH:MM[:SS]]` in the local time zone.
pub fn parse_time(s: &str) -> Result<Timestamp> {
    Timestamp::parse(s).map_err(anyhow::Error::msg)
}

fn hash(v: &Version) -> String {
    v.content.map_or_else(|| "empty".to_string(), |c| c.to_string())
}

/// `cowfs history`: every version of the path's lineage, oldest first.
pub fn history(e: &Engine, path: &str) -> Result<Vec<VersionRow>> {
    let r = resolve(e, path)?;
    let l = lineage(e, &r, path)?;
    let versions = e.versions(l);
    let current = r.inode.as_ref().filter(|i| i.lineage == Some(l)).map(|i| (i.content, i.size));
    let rows = versions
        .iter()
        .enumerate()
        .map(|(k, v)| VersionRow {
            version: v.number,
            date: v.time.rfc3339(),
            size: v.size,
            hash: hash(v),
            current: k + 1 == versions.len() && current == Some((v.content, v.size)),
            version_id: v.id.to_string(),
        })
        .collect();
    Ok(rows)
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
pub fn restore(e: &Engine, path: &str, pick: Pick, dry_run: bool) -> Result<Restored> {
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
            .with_context(|| format!("{path} has no version before {}", t.rfc3339()))?,
    };
    if !dry_run {
        let ino = match &r.inode {
            Some(i) => i.ino,
            None => e.create_file(r.parent, &r.name, 0o644)?.ino,
        };
        e.restore_content(ino, v.size, v.content, None, &format!("version {}", v.number), true)?;
    }
    Ok(Restored {
        path: path.to_string(),
        restored_from_version: v.number,
        target_hash: hash(&v),
        target_size: v.size,
        dry_run,
    })
}

/// `cowfs restore DIR --before T`: the subtree at `path` (`/`: everything) becomes what it
/// was just before `t` (after every change stamped earlier), without a snapshot (see [`crate::snapshot::restore_tree`]). Returns the
/// summary and the paths it changed.
pub fn restore_tree(
    e: &Engine,
    path: &str,
    t: Timestamp,
    keep_new: bool,
    dry_run: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(TreeRestored, Vec<String>)> {
    let top = tree_path(path)?;
    let created = e.meta().created;
    if t < created {
        bail!("{} is before the store was created ({})", t.rfc3339(), created.rfc3339());
    }
    // Strictly before `t`, like a file's `--before`: the tree after every change stamped earlier.
    let just_before =
        Timestamp { secs: t.secs - i64::from(t.nanos == 0), nanos: t.nanos.checked_sub(1).unwrap_or(999_999_999) };
    let old = e.namespace_at(just_before)?;
    let when = t.rfc3339();
    let r = crate::snapshot::restore_tree(e, &old, &top, keep_new, dry_run, &format!("before {when}"), progress)?;
    if !dry_run {
        let ino = dir_at(e, &top)?;
        e.note(Action::Restore, ino, &format!("tree before {when}"))?;
    }
    let v = TreeRestored {
        path: if top.is_empty() { "/".to_string() } else { top },
        before: when,
        files_restored: r.restored,
        files_removed: r.removed,
        keep_new,
        dry_run,
    };
    Ok((v, r.touched))
}

/// True when `restore PATH` means a tree: the root, a directory now, or nothing now (and no
/// deleted file there) but a directory at `t`.
pub fn is_tree(e: &Engine, path: &str, t: Option<Timestamp>) -> Result<bool> {
    let top = tree_path(path)?;
    if top.is_empty() {
        return Ok(true);
    }
    let r = resolve(e, &top)?;
    if let Some(i) = &r.inode {
        return Ok(i.kind == FileKind::Directory);
    }
    let grave = e.grave(r.parent, &r.name).is_some();
    Ok(!grave && t.is_some())
}

/// Filters of `cowfs log`.
#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    /// Only the newest this many entries (still shown oldest first).
    pub limit: Option<usize>,
    /// Only this action.
    pub action: Option<Action>,
    /// Only entries whose path (or rename target) is this path or below it.
    pub path_prefix: Option<String>,
    /// Only entries at or after this time.
    pub since: Option<Timestamp>,
    /// Only entries at or before this time.
    pub until: Option<Timestamp>,
}

fn under(path: &str, prefix: &str) -> bool {
    prefix.is_empty() || path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('/'))
}

/// `cowfs log`: the activity feed, oldest first.
pub fn log(e: &Engine, f: &LogFilter) -> Result<Vec<LogRow>> {
    let prefix = f.path_prefix.as_deref().map(tree_path).transpose()?;
    let mut rows: Vec<LogRow> = e
        .activity()?
        .into_iter()
        .filter(|x| f.action.is_none_or(|a| a == x.action))
        .filter(|x| f.since.is_none_or(|t| x.time >= t) && f.until.is_none_or(|t| x.time <= t))
        .filter(|x| {
            prefix.as_deref().is_none_or(|p| {
                x.path.as_deref().is_some_and(|q| under(q, p)) || x.to.as_deref().is_some_and(|q| under(q, p))
            })
        })
        .map(|x| LogRow {
            time: x.time.rfc3339(),
            action: x.action.name().to_string(),
            version: x.version.as_ref().map(|v| v.number),
            version_id: x.version.as_ref().map(|v| v.id.to_string()),
            hash: x.version.as_deref().map(hash),
            path: x.path,
            to: x.to,
            detail: x.detail,
        })
        .collect();
    if let Some(n) = f.limit {
        rows.drain(..rows.len().saturating_sub(n));
    }
    Ok(rows)
}

/// Largest version `diff` compares as text (bigger ones get the binary summary).
const MAX_TEXT_DIFF: u64 = 8 << 20;

/// `cowfs diff`: version `left` against version `right` (`None`: the current content).
pub fn diff(e: &Engine, path: &str, left: u64, right: Option<u64>) -> Result<FileDiff> {
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
    let (right_number, rsize, rcontent): (VersionRef, u64, Option<cowfs_engine::NodeId>) = match right {
        Some(n) => {
            let v = find(n)?;
            (VersionRef::Number(n), v.size, v.content)
        }
        None => {
            let i = r.inode.as_ref().with_context(|| format!("{path} is deleted: give --v2"))?;
            (VersionRef::Current("current".to_string()), i.size, i.content)
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
    Ok(FileDiff {
        path: path.to_string(),
        mode: if text.is_some() { "text" } else { "binary" }.to_string(),
        left_version: left,
        right_version: right_number,
        left_size: lv.size,
        right_size: rsize,
        size_delta: rsize as i64 - lv.size as i64,
        left_hash: hash(&lv),
        right_hash: rcontent.map_or_else(|| "empty".to_string(), |c| c.to_string()),
        same_content: same,
        diff: text.unwrap_or_default(),
    })
}
