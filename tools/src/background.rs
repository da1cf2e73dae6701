//! The daemon's background maintenance: the store's policy and compaction at every pass, its
//! space guard between passes, and the record of the last pass that `cowfs mounts` shows.

use std::fs;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use cowfs_engine::Engine;
use cowfs_engine::maintenance::{Maintenance, PassReport};

use crate::protocol::{BackgroundReport, MaintenanceStatus};

/// The daemon's record of its last background pass (`MaintenanceStatus`), in the store.
pub const MAINTENANCE_STATUS: &str = "maintenance.json";

/// Seconds between background passes (retention policy, then compaction of mostly dead
/// segments): `COWFS_BACKGROUND_SECS`, default 600.
fn background_interval() -> Duration {
    let secs = std::env::var("COWFS_BACKGROUND_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(600);
    Duration::from_secs(secs.max(1))
}

/// Seconds between checks of the space guard: `COWFS_GUARD_SECS`, default 1 (a statvfs and
/// the policy file read: nothing next to the writes that could fill the device meanwhile).
fn guard_interval() -> Duration {
    let secs = std::env::var("COWFS_GUARD_SECS").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or(1);
    Duration::from_secs(secs.max(1))
}

/// The daemon's background maintenance, run by the engine: the stored policy (read again at
/// every pass) and compaction, every [`background_interval`], and the policy's space guard
/// every [`guard_interval`]; what it did and what failed goes to the daemon's log.
pub(crate) fn start_background(engine: &Engine, store: PathBuf) -> Result<()> {
    let status = store.join(MAINTENANCE_STATUS);
    let retention = move || {
        let p = crate::gc::load_policy(&store).map_err(|e| crate::control::one_line(&e))?;
        Ok((!p.is_empty()).then(|| p.retention()))
    };
    let every = background_interval();
    let log = move |r: std::result::Result<PassReport, String>| {
        let now = jiff::Timestamp::now();
        let next = now.checked_add(jiff::SignedDuration::try_from(every).unwrap_or_default()).unwrap_or(now);
        let mut s = MaintenanceStatus { time: now.to_string(), next: next.to_string(), report: None, error: None };
        match r {
            Ok(r) => {
                let report = BackgroundReport::from(&r);
                if r.changed() || r.guard.is_some() {
                    eprintln!("cowfs: background: {}", serde_json::to_string(&report).unwrap_or_default());
                }
                s.report = Some(report);
            }
            Err(e) => {
                eprintln!("cowfs: background gc/compaction: {e}");
                s.error = Some(e);
            }
        }
        // For `cowfs mounts`: a temporary file renamed into place (a reader sees the old
        // status or the new one); not synced, as it only informs.
        let tmp = status.with_extension("json.tmp");
        let text = serde_json::to_vec(&s).unwrap_or_default();
        if let Err(e) = fs::write(&tmp, text).and_then(|()| fs::rename(&tmp, &status)) {
            eprintln!("cowfs: recording the maintenance status in {}: {e}", status.display());
        }
    };
    engine.start_maintenance(Maintenance {
        every,
        check_every: guard_interval(),
        retention: Box::new(retention),
        log: Box::new(log),
    })?;
    Ok(())
}
