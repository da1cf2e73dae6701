//! The store's retention policy: keep rules and exclude globs, kept in the store directory as
//! `POLICY` (JSON, [`PolicyFile`]). `cowfs policy set` writes it; the mount daemon's
//! background maintenance applies it ([`Policy::retention`]); `cowfs gc` without rules uses it.

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::values::Timestamp;
use crate::gc::{self, Rules};
use crate::maintenance::Retention;
use crate::storage::{Storage, read_all, write_atomically};

/// The policy file in a store directory.
pub const POLICY_FILE: &str = "POLICY";

/// Retention rules and excluded paths, as the policy file holds them (and the control
/// protocol's `gc` request carries them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PolicyFile {
    /// Keep the newest N versions.
    pub keep_last: Option<u64>,
    /// Keep versions saved after this moment (RFC 3339).
    pub keep_after: Option<String>,
    /// Keep versions saved within this span of the newest (`30d`, `2w`, ...).
    pub keep_within: Option<String>,
    /// Keep the newest version of each of the last N hours.
    pub keep_hourly: Option<u64>,
    /// ... days.
    pub keep_daily: Option<u64>,
    /// ... weeks.
    pub keep_weekly: Option<u64>,
    /// ... months.
    pub keep_monthly: Option<u64>,
    /// Paths (globs) whose versions are all kept.
    pub exclude: Vec<String>,
}

/// The retention policy: keep rules and exclude globs, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep rules.
    pub rules: Rules,
    /// Paths matching one of these keep every version (see [`excluded`]).
    pub exclude: Vec<String>,
}

impl Policy {
    /// As the policy file holds it.
    pub fn to_file(&self) -> PolicyFile {
        let r = &self.rules;
        PolicyFile {
            keep_last: r.keep_last,
            keep_after: r.keep_after.map(|t| t.rfc3339()),
            keep_within: r.keep_within.clone(),
            keep_hourly: r.keep_hourly,
            keep_daily: r.keep_daily,
            keep_weekly: r.keep_weekly,
            keep_monthly: r.keep_monthly,
            exclude: self.exclude.clone(),
        }
    }

    /// From the policy file's form (or a request's), checked: the time, the span, the globs
    /// (`Invalid` naming the bad one).
    pub fn from_file(f: &PolicyFile) -> Result<Policy> {
        let keep_after = f.keep_after.as_deref().map(Timestamp::parse).transpose().map_err(Error::Invalid)?;
        if let Some(w) = &f.keep_within {
            gc::parse_within(w).map_err(Error::Invalid)?;
        }
        if let Some(g) = f.exclude.iter().find(|g| g.is_empty() || g.trim_matches('/').is_empty() || g.contains('\0')) {
            return Err(Error::Invalid(format!("invalid exclude pattern {g:?}")));
        }
        let rules = Rules {
            keep_last: f.keep_last,
            keep_after,
            keep_within: f.keep_within.clone(),
            keep_hourly: f.keep_hourly,
            keep_daily: f.keep_daily,
            keep_weekly: f.keep_weekly,
            keep_monthly: f.keep_monthly,
        };
        Ok(Policy { rules, exclude: f.exclude.clone() })
    }

    /// The policy stored in a store (the default, empty one when none is).
    pub fn load(storage: &dyn Storage) -> Result<Policy> {
        let bytes = match read_all(storage, POLICY_FILE) {
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Policy::default());
            }
            r => r?,
        };
        let f: PolicyFile = serde_json::from_slice(&bytes)
            .map_err(|e| Error::Invalid(format!("{POLICY_FILE} is not a policy: {e}")))?;
        Policy::from_file(&f).map_err(|e| Error::Invalid(format!("{POLICY_FILE}: {e}")))
    }

    /// Stores the policy (a temporary file, synced, renamed into place, the directory synced).
    pub fn save(&self, storage: &dyn Storage) -> Result<()> {
        let text = serde_json::to_string_pretty(&self.to_file()).map_err(|e| Error::Internal(e.to_string()))?;
        write_atomically(storage, POLICY_FILE, format!("{text}\n").as_bytes())
    }

    /// The policy as the background maintenance applies it.
    pub fn retention(&self) -> Retention {
        let exclude = self.exclude.clone();
        Retention { rules: self.rules.clone(), excluded: Box::new(move |p| exclude.iter().any(|g| excluded(p, g))) }
    }

    /// What gc would do under this policy now.
    pub fn plan(&self, e: &Engine) -> Result<gc::Plan> {
        let r = self.retention();
        e.gc_plan(&r.rules, Timestamp::now(), &*r.excluded)
    }
}

/// `*` and `?` within one path component.
fn glob_component(pat: &[u8], s: &[u8]) -> bool {
    match (pat.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob_component(&pat[1..], s) || (!s.is_empty() && glob_component(pat, &s[1..])),
        (Some(b'?'), Some(_)) => glob_component(&pat[1..], &s[1..]),
        (Some(p), Some(c)) if p == c => glob_component(&pat[1..], &s[1..]),
        _ => false,
    }
}

/// Whether store path `path` (`/a/b.tmp`) matches an exclude pattern, gitignore-style:
/// `*.tmp` matches a file name anywhere; `target/` matches a directory named `target`
/// anywhere (and everything below it); a pattern with an inner `/` (`/build/out`, `a/b`)
/// matches from the root.
pub fn excluded(path: &str, pattern: &str) -> bool {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let dir_only = pattern.ends_with('/');
    let pat = pattern.trim_matches('/');
    if pat.contains('/') {
        let pp: Vec<&str> = pat.split('/').collect();
        return parts.len() >= pp.len()
            && pp.iter().zip(&parts).all(|(p, s)| glob_component(p.as_bytes(), s.as_bytes()))
            && (!dir_only || parts.len() > pp.len());
    }
    let Some((name, dirs)) = parts.split_last() else { return false };
    let in_dir = dirs.iter().any(|d| glob_component(pat.as_bytes(), d.as_bytes()));
    in_dir || (!dir_only && glob_component(pat.as_bytes(), name.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::SimStorage;

    #[test]
    fn exclude_patterns_match_like_gitignore() {
        assert!(excluded("/a/b.tmp", "*.tmp"));
        assert!(excluded("/b.tmp", "*.tmp"));
        assert!(excluded("/a.tmp/b", "*.tmp/") && !excluded("/a.tmp", "*.tmp/"), "a directory pattern");
        assert!(excluded("/x/target/debug/app", "target/"));
        assert!(!excluded("/x/target", "target/"), "target/ names a directory, not a file");
        assert!(excluded("/build/out/x", "/build/out"));
        assert!(!excluded("/src/build/out", "/build/out"), "an inner / anchors at the root");
        assert!(excluded("/a/file1", "file?"));
        assert!(!excluded("/a/file12", "file?"));
        assert!(!excluded("/", "*"));
    }

    #[test]
    fn a_policy_round_trips_through_its_file_and_bad_ones_are_refused() {
        let s = SimStorage::new();
        assert_eq!(Policy::load(&s).unwrap(), Policy::default(), "no file: the empty policy");
        let f = PolicyFile {
            keep_last: Some(3),
            keep_after: Some("2026-01-02T03:04:05+00:00".into()),
            keep_within: Some("30d".into()),
            exclude: vec!["*.tmp".into(), "target/".into()],
            ..PolicyFile::default()
        };
        let p = Policy::from_file(&f).unwrap();
        p.save(&s).unwrap();
        assert_eq!(Policy::load(&s).unwrap(), p);
        assert_eq!(Policy::load(&s).unwrap().to_file(), f);
        for bad in [
            PolicyFile { keep_within: Some("30x".into()), ..PolicyFile::default() },
            PolicyFile { keep_after: Some("yesterday-ish".into()), ..PolicyFile::default() },
            PolicyFile { exclude: vec!["/".into()], ..PolicyFile::default() },
        ] {
            assert!(matches!(Policy::from_file(&bad), Err(Error::Invalid(_))), "{bad:?}");
        }
        write_atomically(&s, POLICY_FILE, b"{not json").unwrap();
        let e = Policy::load(&s).unwrap_err().to_string();
        assert!(e.contains("POLICY is not a policy"), "{e}");
    }
}
