//! The writer's slot: who runs the writer, on which thread, and what a panic in it does.

use std::sync::atomic::Ordering;

use super::{Request, Writer};
use crate::error::{Error, Result};
use crate::state::{Poison, panic_message};
use crate::sync::channel::{Receiver, Sender};
use crate::sync::{AtomicUsize, Mutex};

/// What a slot runs: batches of requests, one batch at a time. The engine's is the
/// [`Writer`]; the loom tests below run this module's code with a small model of it.
pub trait Batches {
    /// What callers ask for.
    type Request;
    /// Runs a batch; true when the runner stopped (a shutdown).
    fn process(&mut self, batch: Vec<Self::Request>) -> bool;
    /// Records why the store refuses writes from now on (the first cause stays).
    fn poison(&self, cause: String);
    /// The queue closed without a shutdown: makes what was appended durable.
    fn finish(&mut self);
    /// Most requests run in one batch.
    fn max_batch(&self) -> usize;
}

impl Batches for Writer {
    type Request = Request;
    fn process(&mut self, batch: Vec<Request>) -> bool {
        Writer::process(self, batch)
    }
    fn poison(&self, cause: String) {
        self.shared.set_poison(Poison::Failed(cause));
    }
    fn finish(&mut self) {
        let _ = self.sync();
    }
    fn max_batch(&self) -> usize {
        self.config.max_batch
    }
}

/// The writer and the count of its queue. Requests wait in the queue for the writer's
/// thread; a caller that finds the writer idle — nothing queued, nobody running it — runs its
/// own request on its own thread instead ([`WriterSlot::try_inline`]), saving two thread
/// switches. Either way one request runs at a time, under the `writer` lock, and in order: a
/// request queued before another is tried inline runs first, since the count is zero only
/// when everything queued has run.
#[derive(Debug)]
pub struct WriterSlot<W: Batches = Writer> {
    /// The writer; `None` once it stopped (shutdown, or a panic).
    writer: Mutex<Option<W>>,
    /// Requests queued and not yet run: counted before they are sent, uncounted once run.
    queued: AtomicUsize,
    max_batch: usize,
}

impl<W: Batches> WriterSlot<W> {
    /// A slot for `writer`.
    pub fn new(writer: W) -> Self {
        let max_batch = writer.max_batch();
        WriterSlot { writer: Mutex::new(Some(writer)), queued: AtomicUsize::new(0), max_batch }
    }

    /// Queues a request for the writer's thread (`Closed` once it stopped).
    pub fn send(&self, tx: &Sender<W::Request>, req: W::Request) -> Result<()> {
        self.queued.fetch_add(1, Ordering::SeqCst);
        tx.send(req).map_err(|_| {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            Error::Closed
        })
    }

    /// Runs `req` on this thread when the writer is idle; otherwise gives it back.
    pub fn try_inline(&self, req: W::Request) -> Option<W::Request> {
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
        let ran = run_batch(&mut guard, vec![req]);
        drop(guard);
        if let Err(panic) = ran {
            std::panic::resume_unwind(panic);
        }
        None
    }

    /// The writer's thread: runs queued requests in batches until shutdown or until every
    /// sender is gone.
    pub fn run(&self, rx: Receiver<W::Request>) {
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
            let ran = run_batch(&mut guard, batch);
            drop(guard);
            self.queued.fetch_sub(n, Ordering::SeqCst);
            match ran {
                Ok(false) => {}
                Ok(true) => return,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        // All handles dropped without a shutdown: make what was appended durable.
        if let Some(w) = self.writer.lock().as_mut() {
            w.finish();
        }
    }
}

/// Runs a batch on the writer in `slot`; `Ok(true)` when the writer stopped (shutdown; a
/// stopped writer's batch is dropped, which answers its callers `Closed`). A panic while
/// running (a bug) poisons the engine and stops the writer: whatever it left half done,
/// nothing is appended after it, on its thread or a caller's. The panic is returned, for the
/// caller to raise again once it let go of the writer's lock.
fn run_batch<W: Batches>(slot: &mut Option<W>, batch: Vec<W::Request>) -> std::thread::Result<bool> {
    let Some(w) = slot.as_mut() else { return Ok(true) };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.process(batch))) {
        Ok(stopped) => {
            if stopped {
                *slot = None;
            }
            Ok(stopped)
        }
        Err(panic) => {
            w.poison(format!("the writer panicked: {}", panic_message(&*panic)));
            *slot = None;
            Err(panic)
        }
    }
}

/// The slot's real code under loom (`RUSTFLAGS="--cfg loom" cargo test -p cowfs-engine --lib
/// --release write::slot`, run by `.ci/run`): the interleavings (up to two preemptions) of
/// callers, the writer's thread, a shutdown and a panic, through the `sync` facade's loom types. The batches run a
/// model of the writer (it records what ran; `Stop` is a shutdown; `Panic` panics).
#[cfg(all(test, loom))]
mod loom_tests {
    use super::*;
    use crate::sync::channel::{self, Sender};
    use loom::sync::Arc;

    #[derive(Debug)]
    enum Req {
        Run(u32, Sender<()>),
        Stop,
        Panic,
    }

    #[derive(Debug, Default)]
    struct Model {
        /// What ran, in order, kept after the writer (and the model) is gone.
        done: Arc<loom::sync::Mutex<Vec<u32>>>,
        poison: Arc<loom::sync::Mutex<Vec<String>>>,
    }

    impl Batches for Model {
        type Request = Req;
        fn process(&mut self, batch: Vec<Req>) -> bool {
            for r in batch {
                match r {
                    Req::Run(id, reply) => {
                        self.done.lock().unwrap().push(id);
                        let _ = reply.send(());
                    }
                    Req::Stop => return true,
                    Req::Panic => panic!("boom"),
                }
            }
            false
        }
        fn poison(&self, cause: String) {
            self.poison.lock().unwrap().push(cause);
        }
        fn finish(&mut self) {}
        fn max_batch(&self) -> usize {
            4
        }
    }

    /// How the engine sends a request (`Inner::request`): inline when the writer is idle,
    /// else queued. Returns whether it ran (false: `Closed`).
    fn request(slot: &WriterSlot<Model>, tx: &Sender<Req>, id: u32) -> bool {
        let (rtx, rrx) = channel::bounded(1);
        if let Some(req) = slot.try_inline(Req::Run(id, rtx))
            && slot.send(tx, req).is_err()
        {
            return false;
        }
        rrx.recv().is_ok()
    }

    /// Every interleaving with at most two preemptions (loom's bound; the whole space of
    /// three threads is too large to finish).
    fn model(f: impl Fn() + Sync + Send + 'static) {
        let mut b = loom::model::Builder::new();
        b.preemption_bound = Some(2);
        b.check(f);
    }

    /// A request a caller queued before it ran another inline runs first, and each runs
    /// exactly once (a file's chunks go before the commit that names them).
    #[test]
    fn inline_runs_keep_the_order_of_queued_requests() {
        model(|| {
            let m = Model::default();
            let done = m.done.clone();
            let slot = Arc::new(WriterSlot::new(m));
            let (tx, rx) = channel::bounded(4);
            let writer = {
                let slot = slot.clone();
                loom::thread::spawn(move || slot.run(rx))
            };
            let (rtx, rrx) = channel::bounded(1);
            slot.send(&tx, Req::Run(1, rtx)).unwrap();
            assert!(request(&slot, &tx, 2));
            rrx.recv().unwrap();
            let order = done.lock().unwrap().clone();
            assert_eq!(order, vec![1, 2], "queued 1 runs before 2");
            slot.send(&tx, Req::Stop).unwrap();
            writer.join().unwrap();
        });
    }

    /// Two callers racing a shutdown: each request is answered, run or refused (`Closed`),
    /// and nobody waits forever (loom reports a deadlock).
    #[test]
    fn requests_racing_a_shutdown_are_all_answered() {
        model(|| {
            let m = Model::default();
            let done = m.done.clone();
            let slot = Arc::new(WriterSlot::new(m));
            let (tx, rx) = channel::bounded(4);
            let writer = {
                let slot = slot.clone();
                loom::thread::spawn(move || slot.run(rx))
            };
            let client = {
                let (slot, tx) = (slot.clone(), tx.clone());
                loom::thread::spawn(move || request(&slot, &tx, 1))
            };
            let _ = slot.send(&tx, Req::Stop);
            let second = request(&slot, &tx, 2);
            let first = client.join().unwrap();
            writer.join().unwrap();
            drop(tx);
            // After the stop the writer is gone; what ran is what was answered as run.
            assert!(slot.writer.lock().is_none());
            let done = done.lock().unwrap().clone();
            assert_eq!(first, done.contains(&1), "request 1 answered as run exactly when it ran ({done:?})");
            assert_eq!(second, done.contains(&2), "request 2 answered as run exactly when it ran ({done:?})");
        });
    }

    /// A batch that panics (a bug) poisons the store with the panic's message, once, and
    /// stops the writer: later requests are refused, never run after whatever it left half
    /// done — whether the panic was on the writer's thread or on a caller running inline.
    #[test]
    fn a_panicking_batch_poisons_and_stops_the_writer() {
        model(|| {
            let model = Model::default();
            let poison = model.poison.clone();
            let slot = Arc::new(WriterSlot::new(model));
            let (tx, rx) = channel::bounded(4);
            let writer = {
                let slot = slot.clone();
                loom::thread::spawn(move || std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| slot.run(rx))))
            };
            let inline = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match slot.try_inline(Req::Panic) {
                Some(req) => slot.send(&tx, req).is_ok(),
                None => true,
            }));
            assert!(!request(&slot, &tx, 1), "a request after the panic does not run");
            drop(tx);
            let thread = writer.join().unwrap();
            assert!(inline.is_err() != thread.is_err(), "the panic happened on exactly one thread");
            assert!(slot.writer.lock().is_none(), "the writer stopped");
            let causes = poison.lock().unwrap().clone();
            assert_eq!(causes, vec!["the writer panicked: boom".to_string()]);
        });
    }
}
