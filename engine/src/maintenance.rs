//! Background maintenance: every so often, the retention rules its owner gives (read again at
//! each pass, so a policy stored meanwhile applies), then a compaction of the mostly dead
//! segments. Between passes, every [`Maintenance::check_every`], the space guard: when the
//! store's device has less free space than the policy's floor, or the store is larger than its
//! limit, the oldest versions go first — never current contents, never what snapshots hold —
//! until the space is back (NILFS2's cleaner keeps free segments between thresholds the same
//! way). The engine runs it on a thread of its own (`Engine::start_maintenance`), stops it
//! when it closes, and is poisoned by a panic in it (a bug), like by one in the writer.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use crate::compact::{self, Policy};
use crate::error::Result;
use crate::format::record::{Action, Timestamp};
use crate::gc::{self, Rules};
use crate::index::ops::Op;
use crate::inner::{Background, Inner};
use crate::state::panic_message;
use crate::storage::Space;

/// Retention rules, the paths they leave alone (each keeps every version), and the space
/// guard.
pub struct Retention {
    /// Which versions to keep.
    pub rules: Rules,
    /// True for a store path the rules do not apply to.
    pub excluded: Box<dyn Fn(&str) -> bool + Send>,
    /// When history gives way to space.
    pub guard: SpaceGuard,
}

/// An amount of a device: a share of its size, or bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// Percent of the device's size (1 to 99).
    Percent(u8),
    /// Bytes.
    Bytes(u64),
}

impl Amount {
    /// In bytes, on a device of `total` bytes.
    pub fn of(self, total: u64) -> u64 {
        match self {
            Amount::Percent(p) => (u128::from(total) * u128::from(p) / 100) as u64,
            Amount::Bytes(b) => b,
        }
    }
}

/// When the space guard prunes history: below `min_free` free on the store's device, or
/// above `max_size` of store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpaceGuard {
    /// Free space to keep on the store's device.
    pub min_free: Option<Amount>,
    /// Most bytes the store's segment files may take.
    pub max_size: Option<u64>,
}

impl SpaceGuard {
    /// Bytes to free now (0: none), with the device's `space` and the store's size.
    pub fn shortfall(&self, space: Option<Space>, store_bytes: u64) -> u64 {
        let free = match (self.min_free, space) {
            (Some(floor), Some(s)) => floor.of(s.total).saturating_sub(s.available),
            _ => 0,
        };
        free.max(self.max_size.map_or(0, |m| store_bytes.saturating_sub(m)))
    }
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention").field("rules", &self.rules).finish_non_exhaustive()
    }
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassReport {
    /// Versions the retention rules pruned.
    pub versions_pruned: u64,
    /// The space guard's work, when it ran.
    pub guard: Option<GuardReport>,
    /// The compaction that followed.
    pub compaction: compact::Report,
}

impl PassReport {
    /// True when the pass pruned or compacted something.
    pub fn changed(&self) -> bool {
        self.versions_pruned > 0
            || self.guard.as_ref().is_some_and(|g| g.versions_pruned > 0)
            || self.compaction.segments_compacted > 0
    }
}

/// What the space guard did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuardReport {
    /// Bytes it had to free when it started.
    pub shortfall_bytes: u64,
    /// Versions it pruned, oldest first.
    pub versions_pruned: u64,
    /// Their sizes.
    pub versions_pruned_bytes: u64,
    /// Bytes still to free when it stopped: nothing more may go (only current contents and
    /// snapshots are left), or the rounds ran out.
    pub still_short_bytes: u64,
}

/// Where a pass's outcome goes: every full pass's, and a space guard's that ran between them;
/// `Err` when it failed (the daemon's log). A pass that panicked is reported as an `Err` too,
/// and is the last.
pub type Log = Box<dyn FnMut(std::result::Result<PassReport, String>) + Send>;

/// The retention to apply at a pass (`None`: compaction only); `Err` skips the pass.
pub type RetentionSource = Box<dyn FnMut() -> std::result::Result<Option<Retention>, String> + Send>;

/// How the background maintenance runs.
pub struct Maintenance {
    /// Time between passes (the first comes after one interval).
    pub every: Duration,
    /// Time between checks of the space guard.
    pub check_every: Duration,
    /// The retention rules, asked for at every pass.
    pub retention: RetentionSource,
    /// What each pass did.
    pub log: Log,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance")
            .field("every", &self.every)
            .field("check_every", &self.check_every)
            .finish_non_exhaustive()
    }
}

/// Starts the maintenance thread of `inner` (replacing one started before).
pub(crate) fn start(inner: &Arc<Inner>, m: Maintenance) -> Result<()> {
    inner.stop_background();
    let (stop, stopped) = mpsc::channel::<()>();
    let weak = Arc::downgrade(inner);
    let thread = std::thread::Builder::new()
        .name("cowfs-maintenance".into())
        .spawn(move || run(weak, stopped, m))
        .map_err(|e| crate::error::Error::io("spawn", "maintenance thread", e))?;
    *inner.background.lock() = Some(Background { stop, thread });
    Ok(())
}

/// The thread: a pass every `m.every` and a space check every `m.check_every`, until
/// stopped, the engine gone or poisoned, or a pass panicked.
fn run(weak: Weak<Inner>, stopped: mpsc::Receiver<()>, mut m: Maintenance) {
    let mut last_pass = std::time::Instant::now();
    // After a guard that found nothing more to prune, the next try waits for a full pass.
    let mut guard_exhausted = false;
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(m.check_every.min(m.every)) {
        let Some(inner) = weak.upgrade() else { return };
        if inner.shared.poisoned().is_some() {
            return;
        }
        let full = last_pass.elapsed() >= m.every;
        if !full && guard_exhausted {
            continue;
        }
        let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| pass(&inner, &mut m.retention, full)));
        if full {
            last_pass = std::time::Instant::now();
        }
        match outcome {
            Ok(Ok(None)) => guard_exhausted = false,
            Ok(Ok(Some(r))) => {
                guard_exhausted = r.guard.as_ref().is_some_and(|g| g.still_short_bytes > 0);
                (m.log)(Ok(r))
            }
            Ok(Err(e)) => (m.log)(Err(e)),
            Err(panic) => {
                let e = inner.shared.internal(format!("background maintenance panicked: {}", panic_message(&*panic)));
                (m.log)(Err(e.to_string()));
                return;
            }
        }
    }
}

/// One pass: with `full`, retention and compaction of the mostly dead segments; always the
/// space guard. `None`: not full, and the guard had nothing to do.
fn pass(inner: &Inner, retention: &mut RetentionSource, full: bool) -> std::result::Result<Option<PassReport>, String> {
    let Some(r) = retention()? else {
        return match full {
            true => compaction(inner, PassReport::default()),
            false => Ok(None),
        };
    };
    let mut report = PassReport::default();
    if full {
        let plan = gc::plan(inner, &r.rules, Timestamp::now(), &*r.excluded).map_err(|e| e.to_string())?;
        if !plan.prunes.is_empty() {
            report.versions_pruned = plan.versions_pruned;
            inner.submit(Op::Prune { prunes: plan.prunes }, true).map_err(|e| e.to_string())?;
        }
    }
    report.guard = guard(inner, &r.guard).map_err(|e| e.to_string())?;
    if !full {
        return Ok(report.guard.is_some().then_some(report));
    }
    compaction(inner, report)
}

/// The background compaction, closing a full pass's `report`.
fn compaction(inner: &Inner, mut report: PassReport) -> std::result::Result<Option<PassReport>, String> {
    report.compaction = inner.compact(Policy::BACKGROUND, &mut |_, _| {}).map_err(|e| e.to_string())?;
    Ok(Some(report))
}

/// Rounds of pruning the guard makes before it gives up until its next check.
const GUARD_ROUNDS: u32 = 8;

/// The space guard (`None`: no shortfall): while short of space, prunes the oldest versions
/// whose sizes add up to the shortfall (doubled at every round, as versions that share their
/// data free less than their size) and compacts everything reclaimable. Each prune is in the
/// activity log as a gc naming the guard.
pub(crate) fn guard(inner: &Inner, g: &SpaceGuard) -> Result<Option<GuardReport>> {
    let short = |inner: &Inner| -> Result<u64> {
        let space = inner.shared.storage.space().map_err(crate::error::io("statvfs", "the store's device"))?;
        Ok(g.shortfall(space, inner.segment_bytes()?))
    };
    let mut need = short(inner)?;
    if need == 0 {
        return Ok(None);
    }
    let mut report = GuardReport { shortfall_bytes: need, ..GuardReport::default() };
    for round in 0..GUARD_ROUNDS {
        let plan = gc::plan(inner, &Rules::default(), Timestamp::now(), &|_| false)?;
        let (prunes, versions, bytes) = gc::oldest_first(&plan, need.saturating_mul(1 << round));
        if prunes.is_empty() {
            break;
        }
        let detail = format!("space guard: {versions} oldest versions pruned, {need} bytes short");
        inner.submit(Op::Tagged { action: Action::Gc, detail, op: Box::new(Op::Prune { prunes }) }, true)?;
        report.versions_pruned += versions;
        report.versions_pruned_bytes += bytes;
        inner.compact(Policy::FULL, &mut |_, _| {})?;
        need = short(inner)?;
        if need == 0 {
            break;
        }
    }
    report.still_short_bytes = need;
    Ok(Some(report))
}
