//! Background maintenance: every so often, the retention rules its owner gives (read again at
//! each pass, so a policy stored meanwhile applies), then a compaction of the mostly dead
//! segments. The engine runs it on a thread of its own (`Engine::start_maintenance`), stops it
//! when it closes, and is poisoned by a panic in it (a bug), like by one in the writer.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak, mpsc};
use std::time::Duration;

use crate::compact::{self, Policy};
use crate::error::Result;
use crate::format::record::Timestamp;
use crate::gc::{self, Rules};
use crate::index::ops::Op;
use crate::inner::{Background, Inner};
use crate::state::panic_message;

/// Retention rules, and the paths they leave alone (each keeps every version).
pub struct Retention {
    /// Which versions to keep.
    pub rules: Rules,
    /// True for a store path the rules do not apply to.
    pub excluded: Box<dyn Fn(&str) -> bool + Send>,
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
    /// The compaction that followed.
    pub compaction: compact::Report,
}

/// Where a pass's outcome goes: `Ok` when it changed something, `Err` when it failed (the
/// daemon's log). A pass that panicked is reported as an `Err` too, and is the last.
pub type Log = Box<dyn FnMut(std::result::Result<PassReport, String>) + Send>;

/// The retention to apply at a pass (`None`: compaction only); `Err` skips the pass.
pub type RetentionSource = Box<dyn FnMut() -> std::result::Result<Option<Retention>, String> + Send>;

/// How the background maintenance runs.
pub struct Maintenance {
    /// Time between passes (the first comes after one interval).
    pub every: Duration,
    /// The retention rules, asked for at every pass.
    pub retention: RetentionSource,
    /// What each pass did.
    pub log: Log,
}

impl std::fmt::Debug for Maintenance {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Maintenance").field("every", &self.every).finish_non_exhaustive()
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

/// The thread: a pass every `m.every` until stopped, the engine gone or poisoned, or a pass
/// panicked.
fn run(weak: Weak<Inner>, stopped: mpsc::Receiver<()>, mut m: Maintenance) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(m.every) {
        let Some(inner) = weak.upgrade() else { return };
        if inner.shared.poisoned().is_some() {
            return;
        }
        match std::panic::catch_unwind(AssertUnwindSafe(|| pass(&inner, &mut m.retention))) {
            Ok(Ok(None)) => {}
            Ok(Ok(Some(r))) => (m.log)(Ok(r)),
            Ok(Err(e)) => (m.log)(Err(e)),
            Err(panic) => {
                let e = inner.shared.internal(format!("background maintenance panicked: {}", panic_message(&*panic)));
                (m.log)(Err(e.to_string()));
                return;
            }
        }
    }
}

/// One pass: retention, then compaction of the mostly dead segments. `None` when it changed
/// nothing.
fn pass(inner: &Inner, retention: &mut RetentionSource) -> std::result::Result<Option<PassReport>, String> {
    let mut versions_pruned = 0;
    if let Some(r) = retention()? {
        let plan = gc::plan(inner, &r.rules, Timestamp::now(), &*r.excluded).map_err(|e| e.to_string())?;
        if !plan.prunes.is_empty() {
            versions_pruned = plan.versions_pruned;
            inner.submit(Op::Prune { prunes: plan.prunes }, true).map_err(|e| e.to_string())?;
        }
    }
    let compaction = inner.compact(Policy::BACKGROUND, &mut |_, _| {}).map_err(|e| e.to_string())?;
    if versions_pruned == 0 && compaction.segments_compacted == 0 {
        return Ok(None);
    }
    Ok(Some(PassReport { versions_pruned, compaction }))
}
