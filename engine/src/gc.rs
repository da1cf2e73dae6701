//! Retention: which versions gc keeps, and why. One planner serves the dry run and the real
//! run, so both report the same numbers. Semantics follow restic's `forget`: a version is kept
//! if any rule keeps it; the current version of every live file and every version a snapshot
//! holds are always kept; deleted files' histories fall under the same rules. A lineage either
//! loses every version (its data can go, and its path starts a new history) or keeps its newest
//! (so a version number is never used twice).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::error::{CorruptKind, Error, Result};
use crate::format::record::{FileKind, Timestamp, Version};
use crate::ids::{InodeId, LineageId, NodeId};
use crate::index::{Index, Namespace};
use crate::inner::Inner;

/// The keep rules of one gc run (or of the stored policy). `None`: the rule is not given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rules {
    /// Keep the newest N versions of each file.
    pub keep_last: Option<u64>,
    /// Keep versions saved at or after this time (`gc --before T` prunes only older ones).
    pub keep_after: Option<Timestamp>,
    /// Keep versions saved within this span of now (a `jiff` span: `30d`, `1y2m`, `12h`).
    pub keep_within: Option<String>,
    /// Keep the newest version of each of the last N hours that have one.
    pub keep_hourly: Option<u64>,
    /// ... days.
    pub keep_daily: Option<u64>,
    /// ... ISO weeks.
    pub keep_weekly: Option<u64>,
    /// ... months.
    pub keep_monthly: Option<u64>,
}

impl Rules {
    /// True when no rule is given.
    pub fn is_empty(&self) -> bool {
        *self == Rules::default()
    }
}

/// Parses a `--keep-within` span: a sequence of `<n>y`, `<n>m` (months), `<n>w`, `<n>d`,
/// `<n>h`, like restic's durations (`1y6m`, `30d`, `12h`). The error names `s`.
pub fn parse_within(s: &str) -> std::result::Result<jiff::Span, String> {
    let bad = || format!("invalid duration {s:?} (use e.g. 12h, 30d, 2w, 6m, 1y, or 1y6m)");
    let mut span = jiff::Span::new();
    let mut num = String::new();
    let mut any = false;
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: i64 = num.parse().map_err(|_| bad())?;
        num.clear();
        span = match c {
            'y' => span.try_years(n),
            'm' => span.try_months(n),
            'w' => span.try_weeks(n),
            'd' => span.try_days(n),
            'h' => span.try_hours(n),
            _ => return Err(bad()),
        }
        .map_err(|_| bad())?;
        any = true;
    }
    if !num.is_empty() || !any {
        return Err(bad());
    }
    Ok(span)
}

/// Why a version is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// The current content of a live file.
    Current,
    /// A snapshot holds it.
    Snapshot(String),
    /// Among the newest N.
    Last,
    /// Saved at or after the `--before` cutoff.
    AfterCutoff,
    /// Saved within the `--keep-within` span.
    Within,
    /// Newest of its hour, day, week or month (the bucket, local time).
    Bucket(&'static str, String),
    /// The newest of a history that keeps older versions (version numbers are never reused).
    NewestOfKept,
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Reason::Current => write!(f, "current"),
            Reason::Snapshot(s) => write!(f, "snapshot {s}"),
            Reason::Last => write!(f, "last"),
            Reason::AfterCutoff => write!(f, "after cutoff"),
            Reason::Within => write!(f, "within"),
            Reason::Bucket(kind, b) => write!(f, "{kind} {b}"),
            Reason::NewestOfKept => write!(f, "newest of kept history"),
        }
    }
}

/// The decision on one version.
#[derive(Debug, Clone)]
pub struct Decision {
    /// The path of the file (live) or where it was (deleted).
    pub path: String,
    /// The file is deleted.
    pub deleted: bool,
    /// The version.
    pub version: Arc<Version>,
    /// Why it is kept (empty: pruned).
    pub kept: Vec<Reason>,
}

/// What a gc run does (or would do).
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Every version, by lineage then number.
    pub decisions: Vec<Decision>,
    /// Per lineage: the numbers pruned, and the grave to remove when none is left.
    pub prunes: Vec<crate::index::ops::PruneSpec>,
    /// Versions pruned.
    pub versions_pruned: u64,
    /// Sum of the pruned versions' sizes.
    pub versions_pruned_bytes: u64,
    /// Stored bytes no kept version, live file or snapshot references any more once the
    /// versions are pruned (reclaimed by compaction).
    pub reclaimed_bytes: u64,
    /// The rules keep no old version of any live file, although some have history (what
    /// snapshots hold aside), or say `keep_last: 0`: the caller should ask for confirmation.
    pub drops_all_history: bool,
}

/// Every object reachable from `roots` (content trees walked through their nodes).
pub(crate) fn reachable(e: &Inner, roots: impl IntoIterator<Item = NodeId>) -> Result<HashSet<[u8; 32]>> {
    let mut seen = HashSet::new();
    let mut stack: Vec<[u8; 32]> = roots.into_iter().map(|r| r.0).collect();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let Some(entry) = e.shared.index.read().objects().get(&id).copied() else {
            return Err(Error::corrupt(
                "index",
                0,
                CorruptKind::Missing(format!("object {} (referenced)", NodeId(id))),
            ));
        };
        if entry.is_node {
            stack.extend(e.reader.node(NodeId(id))?.references().into_iter().filter(|r| !seen.contains(r)));
        }
    }
    Ok(seen)
}

/// Content roots of the live tree, of every snapshot and of the absorbed lower files.
pub(crate) fn tree_roots(ix: &Index) -> Vec<NodeId> {
    let trees = std::iter::once(ix.ns()).chain(ix.snapshots().values().map(|s| &s.ns));
    let mut out: HashSet<NodeId> = ix.absorbed().values().copied().collect();
    for ns in trees {
        out.extend(ns.inodes.values().filter_map(|i| i.content));
    }
    out.into_iter().collect()
}

/// Path of every regular file of `ns` by lineage (one name of a hard-linked file).
fn lineage_paths(ns: &Namespace) -> HashMap<LineageId, (String, InodeId)> {
    let mut out = HashMap::new();
    let mut stack = vec![(String::new(), InodeId::ROOT)];
    while let Some((path, dir)) = stack.pop() {
        for (name, d) in ns.dirs.get(&dir).into_iter().flat_map(|m| m.iter()) {
            let p = format!("{path}/{}", String::from_utf8_lossy(name));
            match d.kind {
                FileKind::Directory => stack.push((p, d.child)),
                FileKind::Regular => {
                    if let Some(l) = ns.inode(d.child).and_then(|i| i.lineage) {
                        out.entry(l).or_insert((p, d.child));
                    }
                }
                _ => {}
            }
        }
    }
    out
}

/// Path of a directory of `ns` (`None`: not reachable).
fn dir_path(ns: &Namespace, dir: InodeId) -> Option<String> {
    let mut parts = Vec::new();
    let mut at = dir;
    while at != InodeId::ROOT {
        let parent = *ns.parent.get(&at)?;
        let name = ns.dirs.get(&parent)?.iter().find(|(_, d)| d.child == at)?.0.clone();
        parts.push(String::from_utf8_lossy(&name).into_owned());
        at = parent;
    }
    parts.reverse();
    Some(parts.iter().map(|p| format!("/{p}")).collect())
}

fn bucket(t: Timestamp, kind: &'static str) -> String {
    let Ok(ts) = jiff::Timestamp::new(t.secs, t.nanos as i32) else { return format!("@{}", t.secs) };
    let z = ts.to_zoned(jiff::tz::TimeZone::system());
    match kind {
        "hourly" => z.strftime("%Y-%m-%d %H:00").to_string(),
        "daily" => z.strftime("%Y-%m-%d").to_string(),
        "weekly" => {
            let w = z.date().iso_week_date();
            format!("{}-W{:02}", w.year(), w.week())
        }
        _ => z.strftime("%Y-%m").to_string(),
    }
}

/// Why each of one lineage's versions (oldest first) is kept; an empty list: pruned.
/// `current_at`: the index of the live file's current version; `held`: the snapshot holding
/// a version; `within_from`: the start of the `--keep-within` span.
pub fn decide(
    versions: &[Arc<Version>],
    current_at: Option<usize>,
    held: &dyn Fn(&Version) -> Option<String>,
    rules: &Rules,
    within_from: Option<Timestamp>,
) -> Vec<Vec<Reason>> {
    let mut kept: Vec<Vec<Reason>> = vec![Vec::new(); versions.len()];
    // Newest first for the counting rules.
    let mut buckets: HashMap<&'static str, (u64, Option<String>)> = HashMap::new();
    for (rank, (k, v)) in versions.iter().enumerate().rev().enumerate() {
        let r = &mut kept[k];
        if Some(k) == current_at {
            r.push(Reason::Current);
        }
        if let Some(s) = held(v) {
            r.push(Reason::Snapshot(s));
        }
        if rules.keep_last.is_some_and(|n| (rank as u64) < n) {
            r.push(Reason::Last);
        }
        if rules.keep_after.is_some_and(|t| v.time >= t) {
            r.push(Reason::AfterCutoff);
        }
        if within_from.is_some_and(|t| v.time >= t) {
            r.push(Reason::Within);
        }
        for (kind, limit) in [
            ("hourly", rules.keep_hourly),
            ("daily", rules.keep_daily),
            ("weekly", rules.keep_weekly),
            ("monthly", rules.keep_monthly),
        ] {
            let Some(limit) = limit else { continue };
            let b = bucket(v.time, kind);
            let (count, last) = buckets.entry(kind).or_insert((0, None));
            if *count < limit && last.as_deref() != Some(b.as_str()) {
                *count += 1;
                *last = Some(b.clone());
                r.push(Reason::Bucket(kind, b));
            }
        }
    }
    if let Some(newest) = kept.len().checked_sub(1)
        && kept.iter().any(|k| !k.is_empty())
        && kept[newest].is_empty()
    {
        kept[newest].push(Reason::NewestOfKept);
    }
    kept
}

/// Decides, for every version of every lineage, whether `rules` keep it (at time `now`).
/// Files whose path `excluded` matches keep only their current content (and what snapshots
/// hold): no rule applies to them.
pub(crate) fn plan(e: &Inner, rules: &Rules, now: Timestamp, excluded: &dyn Fn(&str) -> bool) -> Result<Plan> {
    plan_with(e, rules, now, excluded, &|_| false)
}

/// What `cowfs forget` of the files of `lineages` prunes (see `Engine::forget_plan`): a plan
/// with no keep rule, without the snapshots' holds of `lineages` when `include_snapshots`,
/// narrowed to `lineages`.
pub(crate) fn forget_plan(e: &Inner, lineages: &HashSet<LineageId>, include_snapshots: bool) -> Result<Plan> {
    let unheld = |l: LineageId| include_snapshots && lineages.contains(&l);
    let mut plan = plan_with(e, &Rules::default(), Timestamp::now(), &|_| false, &unheld)?;
    plan.decisions.retain(|d| lineages.contains(&d.version.lineage));
    plan.prunes.retain(|p| lineages.contains(&p.0));
    let pruned = || plan.decisions.iter().filter(|d| d.kept.is_empty());
    (plan.versions_pruned, plan.versions_pruned_bytes) =
        (pruned().count() as u64, pruned().map(|d| d.version.size).sum());
    Ok(plan)
}

/// [`plan`], as if no snapshot held a version of a lineage `unheld` names (what `forget
/// --include-snapshots` plans: those files leave the snapshots first).
pub(crate) fn plan_with(
    e: &Inner,
    rules: &Rules,
    now: Timestamp,
    excluded: &dyn Fn(&str) -> bool,
    unheld: &dyn Fn(LineageId) -> bool,
) -> Result<Plan> {
    let within_from = match &rules.keep_within {
        None => None,
        Some(w) => {
            let span = parse_within(w).map_err(Error::Invalid)?;
            let ts = jiff::Timestamp::new(now.secs, now.nanos as i32).map_err(|e| Error::Invalid(e.to_string()))?;
            let from = ts
                .to_zoned(jiff::tz::TimeZone::system())
                .checked_sub(span)
                .map_err(|e| Error::Invalid(e.to_string()))?;
            Some(Timestamp { secs: from.timestamp().as_second(), nanos: from.timestamp().subsec_nanosecond() as u32 })
        }
    };
    let (lineages, live, graves, snap_held) = {
        let ix = e.shared.index.read();
        let live = lineage_paths(ix.ns());
        let graves: HashMap<LineageId, (InodeId, Vec<u8>)> =
            ix.ns().graves.iter().map(|(k, l)| (*l, k.clone())).collect();
        // (lineage, content, size) -> the snapshot holding it.
        let mut held: HashMap<(LineageId, Option<NodeId>, u64), String> = HashMap::new();
        for s in ix.snapshots().values() {
            for i in s.ns.inodes.values().filter(|i| i.kind == FileKind::Regular) {
                if let Some(l) = i.lineage.filter(|l| !unheld(*l)) {
                    held.entry((l, i.content, i.size)).or_insert_with(|| s.meta.name.clone());
                }
            }
        }
        let mut lineages: Vec<(LineageId, Vec<Arc<Version>>)> =
            ix.lineages().iter().map(|(l, v)| (*l, v.clone())).collect();
        lineages.sort_by_key(|(l, _)| *l);
        let live: HashMap<LineageId, (String, Option<NodeId>, u64)> = live
            .into_iter()
            .filter_map(|(l, (p, ino))| ix.ns().inode(ino).map(|i| (l, (p, i.content, i.size))))
            .collect();
        (lineages, live, graves, held)
    };
    let ns = e.shared.index.read().ns().clone();
    let mut plan = Plan::default();
    let (mut kept_roots, mut pruned_roots) = (Vec::new(), Vec::new());
    let mut live_history = (false, false); // (some live file has history, the plan keeps some)
    for (lineage, versions) in lineages {
        let current = live.get(&lineage);
        let path = match (current, graves.get(&lineage)) {
            (Some((p, _, _)), _) => p.clone(),
            (None, Some((dir, name))) => match dir_path(&ns, *dir) {
                Some(d) => format!("{d}/{}", String::from_utf8_lossy(name)),
                None => format!("(deleted, lineage {lineage})"),
            },
            (None, None) => format!("(orphan, lineage {lineage})"),
        };
        let current_at = current.and_then(|(_, c, s)| versions.iter().rposition(|v| v.content == *c && v.size == *s));
        let held = |v: &Version| snap_held.get(&(lineage, v.content, v.size)).cloned();
        let kept = if excluded(&path) {
            decide(&versions, current_at, &held, &Rules::default(), None)
        } else {
            decide(&versions, current_at, &held, rules, within_from)
        };
        if current.is_some() && versions.len() > 1 {
            live_history.0 = true;
            let by_rule = |r: &Reason| !matches!(r, Reason::Current | Reason::Snapshot(_) | Reason::NewestOfKept);
            live_history.1 |= kept.iter().enumerate().any(|(k, r)| Some(k) != current_at && r.iter().any(by_rule));
        }
        let mut numbers = Vec::new();
        for (v, k) in versions.iter().zip(kept) {
            if k.is_empty() {
                numbers.push(v.number);
                plan.versions_pruned += 1;
                plan.versions_pruned_bytes += v.size;
                pruned_roots.extend(v.content);
            } else {
                kept_roots.extend(v.content);
            }
            plan.decisions.push(Decision {
                path: path.clone(),
                deleted: current.is_none(),
                version: v.clone(),
                kept: k,
            });
        }
        if !numbers.is_empty() {
            let grave = (numbers.len() == versions.len()).then(|| graves.get(&lineage).cloned()).flatten();
            plan.prunes.push((lineage, numbers, grave));
        }
    }
    plan.drops_all_history = (live_history.0 && !live_history.1) || rules.keep_last == Some(0);
    if !pruned_roots.is_empty() {
        kept_roots.extend(tree_roots(&e.shared.index.read()));
        let keep = reachable(e, kept_roots)?;
        let freed = reachable(e, pruned_roots)?;
        let ix = e.shared.index.read();
        plan.reclaimed_bytes =
            freed.difference(&keep).filter_map(|id| ix.objects().get(id)).map(|o| u64::from(o.loc.len)).sum();
    }
    Ok(plan)
}

/// The oldest of the versions `plan` prunes, oldest first, until their sizes add up to `bytes`
/// (all of them when they do not): what the space guard gives up. `plan` must keep no version
/// by rule (made with empty rules), so that it prunes all that may go; current contents and
/// snapshots' versions stay. A lineage keeps its newest version unless it loses all of them.
/// Returns the prunes, the versions pruned, and their sizes.
pub(crate) fn oldest_first(plan: &Plan, bytes: u64) -> (Vec<crate::index::ops::PruneSpec>, u64, u64) {
    // Per lineage: how many versions, and its newest number.
    let mut lineages: HashMap<LineageId, (usize, u64)> = HashMap::new();
    for d in &plan.decisions {
        let e = lineages.entry(d.version.lineage).or_insert((0, 0));
        *e = (e.0 + 1, e.1.max(d.version.number));
    }
    let mut candidates: Vec<&Decision> = plan.decisions.iter().filter(|d| d.kept.is_empty()).collect();
    candidates.sort_by_key(|d| (d.version.time, d.version.lineage, d.version.number));
    let (mut taken, mut sum) = (HashMap::<LineageId, Vec<(u64, u64)>>::new(), 0u64);
    for d in candidates {
        if sum >= bytes {
            break;
        }
        taken.entry(d.version.lineage).or_default().push((d.version.number, d.version.size));
        sum = sum.saturating_add(d.version.size);
    }
    let mut prunes = Vec::new();
    let (mut versions, mut total) = (0, 0);
    for (lineage, _, grave) in &plan.prunes {
        let Some(mut numbers) = taken.remove(lineage) else { continue };
        let (count, newest) = lineages[lineage];
        let everything = numbers.len() == count;
        if !everything {
            // Only some of a lineage's versions: its newest stays.
            numbers.retain(|(n, _)| *n != newest);
        }
        if numbers.is_empty() {
            continue;
        }
        versions += numbers.len() as u64;
        total += numbers.iter().map(|(_, size)| size).sum::<u64>();
        prunes.push((*lineage, numbers.into_iter().map(|(n, _)| n).collect(), grave.clone().filter(|_| everything)));
    }
    (prunes, versions, total)
}
