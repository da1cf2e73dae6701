//! The writer's slot: who runs the writer, on which thread, and what a panic in it does.

use std::sync::atomic::Ordering;

use super::{Request, Writer};
use crate::error::{Error, Result};
use crate::state::{Poison, panic_message};
use crate::sync::channel::{Receiver, Sender};
use crate::sync::{AtomicUsize, Mutex};

/// The writer and the count of its queue. Requests wait in the queue for the writer's
/// thread; a caller that finds the writer idle — nothing queued, nobody running it — runs its
/// own request on its own thread instead ([`WriterSlot::try_inline`]), saving two thread
/// switches. Either way one request runs at a time, under the `writer` lock, and in order: a
/// request queued before another is tried inline runs first, since the count is zero only
/// when everything queued has run.
#[derive(Debug)]
pub struct WriterSlot {
    /// The writer; `None` once it stopped (shutdown).
    writer: Mutex<Option<Writer>>,
    /// Requests queued and not yet run: counted before they are sent, uncounted once run.
    queued: AtomicUsize,
    max_batch: usize,
}

impl WriterSlot {
    /// A slot for `writer`.
    pub fn new(writer: Writer) -> Self {
        let max_batch = writer.config.max_batch;
        WriterSlot { writer: Mutex::new(Some(writer)), queued: AtomicUsize::new(0), max_batch }
    }

    /// Queues a request for the writer's thread (`Closed` once it stopped).
    pub fn send(&self, tx: &Sender<Request>, req: Request) -> Result<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        tx.send(req).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Error::Closed
        })
    }

    /// Runs `req` on this thread when the writer is idle; otherwise gives it back.
    pub fn try_inline(&self, req: Request) -> Option<Request> {
        let Some(mut guard) = self.writer.try_lock() else { return Some(req) };
        // Under the lock nothing runs, so a non-zero count is a request still queued (or
        // taken by the thread, which waits for this lock): it goes first.
        if self.queued.load(Ordering::SeqCst) != 0 {
            return Some(req);
        }
        if guard.is_none() {
            return Some(req); // stopped: the queue says so
        }
        // (`true`, a stop, is not reached for the `Apply` requests callers run.)
        run_batch(&mut guard, vec![req]);
        None
    }

    /// The writer's thread: runs queued requests in batches until shutdown or until every
    /// sender is gone.
    pub fn run(&self, rx: Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < self.max_batch {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            let n = batch.len();
            let mut guard = self.writer.lock();
            let stopped = run_batch(&mut guard, batch);
            self.queued.fetch_sub(n, Ordering::SeqCst);
            if stopped {
                return;
            }
        }
        // All handles dropped without a shutdown: make what was appended durable.
        if let Some(w) = self.writer.lock().as_mut() {
            let _ = w.sync();
        }
    }
}

/// Runs a batch on the writer in `slot`; returns true when the writer stopped (shutdown; a
/// stopped writer's batch is dropped, which answers its callers `Closed`). A panic while
/// running (a bug) poisons the engine and stops the writer before it unwinds on: whatever
/// it left half done, nothing is appended after it — on its thread or a caller's.
fn run_batch(slot: &mut Option<Writer>, batch: Vec<Request>) -> bool {
    let Some(w) = slot.as_mut() else { return true };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.process(batch))) {
        Ok(stopped) => {
            if stopped {
                *slot = None;
            }
            stopped
        }
        Err(panic) => {
            w.shared.set_poison(Poison::Failed(format!("the writer panicked: {}", panic_message(&*panic))));
            *slot = None;
            std::panic::resume_unwind(panic)
        }
    }
}
