//! What every clone of an [`crate::Engine`] and every open file shares: the state, the
//! writer thread and its queue, the reader with its caches, and the locks of the jobs that
//! run beside the writer (compaction, chunking). The engine's handle, open files, gc,
//! compaction and the activity log are built on it.

use std::sync::Arc;

use crate::error::{Error, Result, io};
use crate::ids::LineageId;
use crate::index::ops::{Op, Outcome};
use crate::log::recovery::OpenReport;
use crate::log::reserve;
use crate::options::Options;
use crate::read::Reader;
use crate::state::Shared;
use crate::storage::LockGuard;
use crate::sync::channel::{self, Sender};
use crate::sync::{AtomicUsize, JoinHandle, Mutex, MutexGuard, spawn};
use crate::write::{EncodedObject, Reply, Request, Writer, WriterSlot};

/// The shared part of an open engine.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) shared: Arc<Shared>,
    pub(crate) options: Options,
    pub(crate) reader: Reader,
    pub(crate) report: OpenReport,
    tx: Sender<Request>,
    slot: Arc<WriterSlot>,
    pub(crate) writer: Mutex<Option<JoinHandle<()>>>,
    compacting: Mutex<()>,
    /// Held while a directory is listed from its lower trees (`crate::overlay::list`).
    pub(crate) listing: Mutex<()>,
    /// The background maintenance thread, when one was started.
    pub(crate) background: Mutex<Option<Background>>,
    /// Buffers being chunked behind sequential writers, all files together.
    chunking: AtomicUsize,
    _lock: LockGuard,
}

impl Inner {
    /// Starts the writer thread with `writer` and builds the shared part around it.
    pub(crate) fn start(writer: Writer, options: Options, report: OpenReport, lock: LockGuard) -> Inner {
        let shared = writer.shared().clone();
        let slot = Arc::new(WriterSlot::new(writer));
        let (tx, rx) = channel::bounded(16);
        let handle = {
            let slot = slot.clone();
            spawn(move || slot.run(rx))
        };
        Inner {
            reader: Reader::new(shared.clone(), options.chunk_cache_bytes),
            shared,
            options,
            report,
            tx,
            slot,
            writer: Mutex::new(Some(handle)),
            compacting: Mutex::new(()),
            listing: Mutex::new(()),
            background: Mutex::new(None),
            chunking: AtomicUsize::new(0),
            _lock: lock,
        }
    }

    /// Stops the background thread (a pass in progress finishes first) unless this is it.
    pub(crate) fn stop_background(&self) {
        let background = self.background.lock().take();
        if let Some(b) = background {
            drop(b.stop);
            if b.thread.thread().id() != std::thread::current().id() {
                let _ = b.thread.join();
            }
        }
    }

    /// Queues a request for the writer's thread.
    pub(crate) fn send(&self, req: Request) -> Result<()> {
        self.slot.send(&self.tx, req)
    }

    pub(crate) fn request(&self, objects: Vec<EncodedObject>, op: Option<Op>, durable: bool) -> Result<Outcome> {
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        let (rtx, rrx) = channel::bounded(1);
        let req = Request::Apply { objects, op, durable, reply: Some(rtx) };
        if let Some(req) = self.slot.try_inline(req) {
            self.send(req)?;
        }
        rrx.recv().map_err(|_| Error::Closed)?
    }

    /// Hands objects to the writer without waiting for them to be appended; the returned
    /// receiver gets the result. The bounded channel applies back-pressure.
    pub(crate) fn send_objects(&self, objects: Vec<EncodedObject>) -> Result<channel::Receiver<Result<Outcome>>> {
        if let Some(e) = self.shared.poisoned() {
            return Err(e);
        }
        let (rtx, rrx) = channel::bounded(1);
        self.send(Request::Apply { objects, op: None, durable: false, reply: Some(rtx) })?;
        Ok(rrx)
    }

    /// The count of buffers being chunked behind sequential writers, all files together.
    pub(crate) fn chunking_jobs(&self) -> &AtomicUsize {
        &self.chunking
    }

    /// Pins `id` against compaction (until [`Inner::unpin`]) and tells whether it is stored:
    /// an open file that reuses a stored object keeps it alive until its commit references it.
    pub(crate) fn pin(&self, id: &[u8; 32]) -> bool {
        let mut pins = self.shared.pins.lock();
        let present = self.shared.index.read().objects().contains_key(id);
        *pins.entry(*id).or_default() += 1;
        present
    }

    /// Releases pins taken with [`Inner::pin`].
    pub(crate) fn unpin(&self, ids: &[[u8; 32]]) {
        let mut pins = self.shared.pins.lock();
        for id in ids {
            if let Some(n) = pins.get_mut(id) {
                *n -= 1;
                if *n == 0 {
                    pins.remove(id);
                }
            }
        }
    }

    /// Sends a request built around a reply channel to the writer and waits for the reply.
    pub(crate) fn writer_call(&self, f: impl FnOnce(Reply) -> Request) -> Result<Outcome> {
        let (tx, rx) = channel::bounded(1);
        self.send(f(tx))?;
        rx.recv().map_err(|_| Error::Closed)?
    }

    /// Held while a compaction runs (one at a time).
    pub(crate) fn compaction_lock(&self) -> MutexGuard<'_, ()> {
        self.compacting.lock()
    }

    pub(crate) fn make_room(&self) -> Result<bool> {
        reserve::make_room(self.shared.storage.as_ref())
    }

    /// Makes sure the reserve file holds its share (see [`reserve::ensure_reserve`]).
    pub(crate) fn ensure_reserve(&self) -> Result<bool> {
        reserve::ensure_reserve(self.shared.storage.as_ref(), self.options.reserve_bytes, None)
    }

    /// Bytes of all segment files.
    pub(crate) fn segment_bytes(&self) -> Result<u64> {
        let mut n = 0;
        for (seg, f) in self.shared.segments.all() {
            n += f.len().map_err(io("len", &seg.file_name()))?;
        }
        Ok(n)
    }

    /// The newest version of a lineage (without copying the lineage's list).
    pub(crate) fn newest_version(&self, lineage: LineageId) -> Option<Arc<crate::format::record::Version>> {
        self.shared.index.read().lineages().get(&lineage).and_then(|v| v.last().cloned())
    }

    /// True when the object (chunk or node) is stored.
    pub(crate) fn has_object(&self, id: &[u8; 32]) -> bool {
        self.shared.index.read().objects().contains_key(id)
    }

    /// Runs one operation through the writer; with `durable`, returns only after it is on
    /// stable storage.
    pub(crate) fn submit(&self, op: Op, durable: bool) -> Result<Outcome> {
        self.request(Vec::new(), Some(op), durable)
    }

    /// Calls `f` with every complete transaction of the log, oldest first, until it breaks.
    /// Reads the segment files as they are now: a transaction being appended meanwhile is
    /// either complete and seen, or not seen.
    pub(crate) fn scan_log(
        &self,
        f: &mut dyn FnMut(&crate::log::store::Txn) -> Result<std::ops::ControlFlow<()>>,
    ) -> Result<()> {
        // The files as they are now: a compaction meanwhile does not pull them away.
        let files = self.shared.segments.all();
        for (k, (seg, file)) in files.iter().enumerate() {
            let (seg, name) = (*seg, seg.file_name());
            let data = crate::storage::read_whole(file.as_ref(), &name)?;
            let from = crate::format::frame::SEGMENT_HEADER_LEN.min(data.len());
            if crate::log::store::scan_segment(&data, seg, from, k + 1 == files.len(), f)?.1 {
                break;
            }
        }
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_background();
        let handle = self.writer.lock().take();
        if let Some(h) = handle {
            let (rtx, rrx) = channel::bounded(1);
            if self.send(Request::Shutdown(rtx, true)).is_ok() {
                let _ = rrx.recv();
            }
            let _ = h.join();
        }
    }
}

/// A background thread of the engine and how to stop it (closing `stop` wakes it to end).
/// Plain std: it sleeps between passes, which loom's types cannot (it is not modelled).
#[derive(Debug)]
pub(crate) struct Background {
    pub(crate) stop: std::sync::mpsc::Sender<()>,
    // std's, also under loom (where the `sync` facade's `JoinHandle` is loom's).
    #[allow(unused_qualifications)]
    pub(crate) thread: std::thread::JoinHandle<()>,
}
