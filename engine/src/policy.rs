//! The store's retention policy: keep rules, exclude globs and the space guard, kept in the
//! store directory as `POLICY` (JSON, [`PolicyFile`]). `cowfs policy set` writes it; a new
//! store gets [`Policy::recommended`]; the mount daemon's background maintenance applies it
//! ([`Policy::retention`]); `cowfs gc` without rules uses it. A store without the file (made
//! before stores got a policy) keeps every version and has no guard.

use serde::{Deserialize, Serialize};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::format::values::Timestamp;
use crate::gc::{self, Rules};
use crate::maintenance::{Amount, Retention, SpaceGuard};
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
    /// Free space to keep on the store's device (`10%`, `5GiB`): below it the oldest
    /// versions are pruned.
    pub min_free: Option<String>,
    /// Most space the store may take (`50GiB`): above it the oldest versions are pruned.
    pub max_size: Option<String>,
}

/// The retention policy: keep rules and exclude globs, checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep rules.
    pub rules: Rules,
    /// Paths matching one of these keep every version (see [`excluded`]).
    pub exclude: Vec<String>,
    /// When history gives way to space.
    pub guard: SpaceGuard,
}

impl Policy {
    /// The policy a new store gets. Retention after Time Machine (hourly backups for a day,
    /// daily for a month, weekly after that) and snapper's timeline (10 hourly, 10 daily,
    /// 10 monthly, 10 yearly), per file: every version of the last 24 hours, then the newest
    /// of each of the last 48 hours, 31 days and 52 weeks that have one. The guard keeps 5% of
    /// the device free: pruning history is a loss noticed only later, so it waits until the
    /// device is close to full (NILFS2's cleaner keeps 10% clean, but it only reclaims dead
    /// space); 5% of the device, over the space unprivileged writers may use, leaves room for
    /// the writes the guard's checks (every second) and its compaction need.
    pub fn recommended() -> Policy {
        Policy {
            rules: Rules {
                keep_within: Some("24h".into()),
                keep_hourly: Some(48),
                keep_daily: Some(31),
                keep_weekly: Some(52),
                ..Rules::default()
            },
            exclude: Vec::new(),
            guard: SpaceGuard { min_free: Some(Amount::Percent(5)), max_size: None },
        }
    }

    /// True when it keeps everything and guards nothing (a store without a policy file).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty() && self.exclude.is_empty() && self.guard == SpaceGuard::default()
    }

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
            min_free: self.guard.min_free.map(format_amount),
            max_size: self.guard.max_size.map(|b| format_amount(Amount::Bytes(b))),
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
        let min_free = f.min_free.as_deref().map(parse_amount).transpose().map_err(Error::Invalid)?;
        let max_size = match f.max_size.as_deref().map(parse_amount).transpose().map_err(Error::Invalid)? {
            None => None,
            Some(Amount::Bytes(b)) => Some(b),
            Some(Amount::Percent(_)) => {
                return Err(Error::Invalid(format!(
                    "max size {:?} must be bytes (e.g. 50GiB)",
                    f.max_size.as_deref().unwrap_or("")
                )));
            }
        };
        Ok(Policy { rules, exclude: f.exclude.clone(), guard: SpaceGuard { min_free, max_size } })
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
        Retention {
            rules: self.rules.clone(),
            excluded: Box::new(move |p| exclude.iter().any(|g| excluded(p, g))),
            guard: self.guard,
        }
    }

    /// What gc would do under this policy now.
    pub fn plan(&self, e: &Engine) -> Result<gc::Plan> {
        let r = self.retention();
        e.gc_plan(&r.rules, Timestamp::now(), &*r.excluded)
    }
}

/// Parses an amount of space: a percent of the device from 1 to 99 (`10%`) or a size in
/// bytes with an optional binary unit (`512M`, `5GiB`, `1T`; K, M, G, T with or without
/// `iB`). The error names `s`.
pub fn parse_amount(s: &str) -> std::result::Result<Amount, String> {
    let bad = || format!("invalid amount {s:?} (use a percent such as 10% or a size such as 5GiB)");
    let t = s.trim();
    if let Some(p) = t.strip_suffix('%') {
        return match p.trim().parse::<u8>() {
            Ok(n @ 1..=99) => Ok(Amount::Percent(n)),
            _ => Err(bad()),
        };
    }
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let shift = match t[digits..].trim() {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        "T" | "TiB" => 40,
        _ => return Err(bad()),
    };
    let bytes = n.checked_mul(1 << shift).ok_or_else(bad)?;
    if bytes == 0 {
        return Err(bad());
    }
    Ok(Amount::Bytes(bytes))
}

/// An amount as [`parse_amount`] reads it (the largest exact binary unit).
pub fn format_amount(a: Amount) -> String {
    match a {
        Amount::Percent(p) => format!("{p}%"),
        Amount::Bytes(b) => {
            let (unit, shift) = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)]
                .into_iter()
                .find(|(_, s)| b % (1 << s) == 0)
                .unwrap_or(("", 0));
            format!("{}{unit}", b >> shift)
        }
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
    fn amounts_parse_and_print_back() {
        assert_eq!(parse_amount("10%"), Ok(Amount::Percent(10)));
        assert_eq!(parse_amount("512M"), Ok(Amount::Bytes(512 << 20)));
        assert_eq!(parse_amount("5GiB"), Ok(Amount::Bytes(5 << 30)));
        assert_eq!(parse_amount("1234"), Ok(Amount::Bytes(1234)));
        for bad in ["0%", "100%", "0", "", "5X", "-1G", "1.5G", "99999999999T"] {
            assert!(parse_amount(bad).unwrap_err().contains(&format!("{bad:?}")), "{bad}");
        }
        for a in [Amount::Percent(5), Amount::Bytes(5 << 30), Amount::Bytes(1536 << 10), Amount::Bytes(1234)] {
            assert_eq!(parse_amount(&format_amount(a)), Ok(a), "{}", format_amount(a));
        }
        let f = Policy::recommended().to_file();
        assert_eq!(Policy::from_file(&f).unwrap(), Policy::recommended());
        assert!(!Policy::recommended().is_empty() && Policy::default().is_empty());
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
