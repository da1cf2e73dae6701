//! Loom models, at preemption bound 2 (every interleaving explored): the commit hand-off
//! (an acknowledged commit is durable), index publication vs reads, shutdown, and
//! compaction's hand-off between the writer, the compactor and a reader. The latter models the protocol of
//! `engine/src/compact.rs` on small state, with the same locks in the same order:
//!
//! - an open file reuses a stored object X: `pin` takes the pins lock, then the index lock,
//!   checks X exists and pins it; later its commit adds a reference to X (on the writer,
//!   index lock) and unpins;
//! - the compactor marked X unreachable with the reference count it read at the mark; its
//!   forget step (writer: pins lock, then index lock) removes X only if X is not pinned and its
//!   count is unchanged; its switch moves live object Y to the output segment and drops the
//!   victim segment (index lock, then the segment map);
//! - a reader looks Y up (index lock), then reads its segment (segment map lock), retrying at
//!   Y's new place when the segment is gone.
//!
//! Checked: a commit never references a forgotten object, and a read of Y always succeeds.

use loom::sync::{Arc, Mutex};
use loom::thread;
use std::collections::{HashMap, HashSet};

#[derive(Default)]
struct Index {
    /// id -> (segment, references)
    objects: HashMap<u8, (u8, u32)>,
}

const X: u8 = 1; // garbage at the mark, possibly reused by an open file
const Y: u8 = 2; // live, moved by the switch
const VICTIM: u8 = 10;
const OUTPUT: u8 = 11;

struct Store {
    pins: Mutex<HashMap<u8, u32>>,
    index: Mutex<Index>,
    segments: Mutex<HashSet<u8>>,
}

fn store() -> Arc<Store> {
    let mut ix = Index::default();
    ix.objects.insert(X, (VICTIM, 0));
    ix.objects.insert(Y, (VICTIM, 1));
    Arc::new(Store {
        pins: Mutex::new(HashMap::new()),
        index: Mutex::new(ix),
        segments: Mutex::new([VICTIM].into_iter().collect()),
    })
}

/// `Engine::pin`: pins lock, then index lock.
fn pin(s: &Store, id: u8) -> bool {
    let mut pins = s.pins.lock().unwrap();
    let present = s.index.lock().unwrap().objects.contains_key(&id);
    *pins.entry(id).or_default() += 1;
    present
}

fn unpin(s: &Store, id: u8) {
    let mut pins = s.pins.lock().unwrap();
    if let Some(n) = pins.get_mut(&id) {
        *n -= 1;
        if *n == 0 {
            pins.remove(&id);
        }
    }
}

#[test]
fn forget_switch_and_reads_never_lose_a_referenced_object() {
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let s = store();
        // The compactor's mark: X unreachable, with the count it had then.
        let refs_at_mark = s.index.lock().unwrap().objects[&X].1;

        let writer = {
            let s = s.clone();
            thread::spawn(move || {
                // An open file dedups against X...
                if pin(&s, X) {
                    // ... and its commit, on the writer, references it.
                    let mut ix = s.index.lock().unwrap();
                    let e = ix.objects.get_mut(&X).expect("a commit referenced a forgotten object");
                    e.1 += 1;
                } else {
                    // X was forgotten before the pin: the file stores its own copy.
                    s.index.lock().unwrap().objects.insert(X, (OUTPUT + 1, 1));
                }
                unpin(&s, X);
            })
        };
        let reader = {
            let s = s.clone();
            thread::spawn(move || {
                let mut tries = 0;
                loop {
                    let seg = s.index.lock().unwrap().objects[&Y].0;
                    if s.segments.lock().unwrap().contains(&seg) {
                        return;
                    }
                    tries += 1;
                    assert!(tries < 3, "a read of a live object kept failing");
                }
            })
        };
        // The compactor: forget (writer thread: pins, then index), then switch.
        {
            let pins = s.pins.lock().unwrap();
            let mut ix = s.index.lock().unwrap();
            let unchanged = ix.objects.get(&X).is_some_and(|e| e.1 == refs_at_mark);
            if unchanged && !pins.contains_key(&X) {
                ix.objects.remove(&X);
            }
        }
        {
            let mut ix = s.index.lock().unwrap();
            ix.objects.get_mut(&Y).unwrap().0 = OUTPUT;
            let mut segs = s.segments.lock().unwrap();
            segs.insert(OUTPUT);
            segs.remove(&VICTIM);
        }
        writer.join().unwrap();
        reader.join().unwrap();
        // Whatever happened, X is stored if anything references it.
        let ix = s.index.lock().unwrap();
        if let Some(e) = ix.objects.get(&X) {
            assert!(e.1 <= 1);
        }
    });
}

/// The commit hand-off (the writer's invariant 2: a durable request is acknowledged only
/// after the fsync that covers it) with group commit: two clients queue requests, the writer
/// drains whatever is queued, appends each, syncs once, then replies. A disk that fails
/// (set by a third thread at any moment) makes the sync fail: then nothing in that batch, or
/// after it, is acknowledged (poison).
#[test]
fn an_acknowledged_commit_is_durable() {
    use loom::sync::Condvar;
    use std::collections::VecDeque;

    #[derive(Default)]
    struct Disk {
        log: Vec<u32>,
        synced: usize,
        failed: bool,
    }
    /// Where the writer puts a request's reply (`true`: acknowledged).
    type Slot = Arc<(Mutex<Option<bool>>, Condvar)>;
    /// The request queue.
    type Queue = Arc<(Mutex<VecDeque<(u32, Slot)>>, Condvar)>;

    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let queue: Queue = Arc::default();
        let disk: Arc<Mutex<Disk>> = Arc::default();
        let writer = {
            let (queue, disk) = (queue.clone(), disk.clone());
            thread::spawn(move || {
                let mut served = 0;
                let mut poisoned = false;
                while served < 2 {
                    let batch: Vec<(u32, Slot)> = {
                        let (q, cv) = &*queue;
                        let mut q = q.lock().unwrap();
                        while q.is_empty() {
                            q = cv.wait(q).unwrap();
                        }
                        q.drain(..).collect()
                    };
                    served += batch.len();
                    let ok = {
                        let mut d = disk.lock().unwrap();
                        for (id, _) in &batch {
                            if !poisoned {
                                d.log.push(*id);
                            }
                        }
                        // The fsync: fails once the disk has failed, and never succeeds again.
                        if d.failed || poisoned {
                            poisoned = true;
                            false
                        } else {
                            d.synced = d.log.len();
                            true
                        }
                    };
                    for (_, slot) in batch {
                        *slot.0.lock().unwrap() = Some(ok);
                        slot.1.notify_one();
                    }
                }
            })
        };
        let clients: Vec<_> = (1..=2u32)
            .map(|id| {
                let (queue, disk) = (queue.clone(), disk.clone());
                thread::spawn(move || {
                    let slot: Slot = Arc::default();
                    queue.0.lock().unwrap().push_back((id, slot.clone()));
                    queue.1.notify_one();
                    let mut r = slot.0.lock().unwrap();
                    while r.is_none() {
                        r = slot.1.wait(r).unwrap();
                    }
                    if *r == Some(true) {
                        let d = disk.lock().unwrap();
                        let at = d.log.iter().position(|x| *x == id).expect("an acknowledged commit is in the log");
                        assert!(at < d.synced, "commit {id} acknowledged before the sync that covers it");
                    }
                })
            })
            .collect();
        let failer = {
            let disk = disk.clone();
            thread::spawn(move || disk.lock().unwrap().failed = true)
        };
        for c in clients {
            c.join().unwrap();
        }
        failer.join().unwrap();
        writer.join().unwrap();
    });
}

/// Index publish vs read: the writer appends a frame to the segment, then publishes its
/// location in the index; a reader that finds the location reads the frame. The frame is
/// always there: publication follows the append (the writer's order in `append_and_apply`).
#[test]
fn a_published_location_is_always_readable() {
    use loom::sync::RwLock;
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let segment: Arc<Mutex<Vec<u8>>> = Arc::default();
        let index: Arc<RwLock<Vec<(u8, usize)>>> = Arc::default();
        let writer = {
            let (segment, index) = (segment.clone(), index.clone());
            thread::spawn(move || {
                for id in 1..=2u8 {
                    let at = {
                        let mut s = segment.lock().unwrap();
                        s.push(id);
                        s.len() - 1
                    };
                    index.write().unwrap().push((id, at));
                }
            })
        };
        let reader = {
            let (segment, index) = (segment.clone(), index.clone());
            thread::spawn(move || {
                for _ in 0..2 {
                    let found: Vec<(u8, usize)> = index.read().unwrap().clone();
                    let s = segment.lock().unwrap();
                    for (id, at) in found {
                        assert_eq!(s.get(at), Some(&id), "the index named a frame not yet in the segment");
                    }
                }
            })
        };
        writer.join().unwrap();
        reader.join().unwrap();
    });
}

/// Shutdown: requests racing a shutdown are each answered — done before the writer stops, or
/// refused because it stopped — and nobody waits forever (loom reports a deadlock).
#[test]
fn requests_racing_a_shutdown_are_all_answered() {
    use loom::sync::Condvar;
    use std::collections::VecDeque;

    /// A request's reply slot (`true`: done, `false`: refused).
    type Slot = Arc<(Mutex<Option<bool>>, Condvar)>;
    #[derive(Default)]
    struct Chan {
        /// (is a shutdown, reply slot)
        queue: VecDeque<(bool, Slot)>,
        closed: bool,
    }
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let chan: Arc<(Mutex<Chan>, Condvar)> = Arc::default();
        let send = |chan: &Arc<(Mutex<Chan>, Condvar)>, shutdown: bool| -> Option<bool> {
            let slot: Slot = Arc::default();
            {
                let mut c = chan.0.lock().unwrap();
                if c.closed {
                    return Some(false); // refused: the writer is gone
                }
                c.queue.push_back((shutdown, slot.clone()));
            }
            chan.1.notify_one();
            let mut r = slot.0.lock().unwrap();
            while r.is_none() {
                r = slot.1.wait(r).unwrap();
            }
            *r
        };
        let writer = {
            let chan = chan.clone();
            thread::spawn(move || {
                loop {
                    let (shutdown, slot) = {
                        let mut c = chan.0.lock().unwrap();
                        while c.queue.is_empty() {
                            c = chan.1.wait(c).unwrap();
                        }
                        c.queue.pop_front().unwrap()
                    };
                    *slot.0.lock().unwrap() = Some(true);
                    slot.1.notify_one();
                    if shutdown {
                        // Stop: refuse whatever is still queued, and anything sent later.
                        let mut c = chan.0.lock().unwrap();
                        c.closed = true;
                        for (_, s) in c.queue.drain(..) {
                            *s.0.lock().unwrap() = Some(false);
                            s.1.notify_one();
                        }
                        return;
                    }
                }
            })
        };
        let client = {
            let chan = chan.clone();
            thread::spawn(move || assert!(send(&chan, false).is_some()))
        };
        assert_eq!(send(&chan, true), Some(true), "the shutdown itself is answered");
        client.join().unwrap();
        writer.join().unwrap();
    });
}

/// The writer run inline (`writer::WriterSlot`): a caller that finds the writer idle — its
/// lock free and nothing queued — runs its request itself; otherwise it queues it. Modelled
/// with the same lock, counter and order of steps: the count goes up before a request is
/// queued and down after it ran, under the lock; an inline run checks the count under the
/// lock. Checked: every request runs exactly once, and a request a caller queued before it
/// ran another inline runs first (a file's chunks before the commit that names them).
#[test]
fn inline_runs_keep_the_order_of_queued_requests() {
    use loom::sync::Condvar;
    use loom::sync::atomic::{AtomicUsize, Ordering};
    use std::collections::VecDeque;

    struct Slot {
        /// The writer's state: the requests it ran, in order.
        ran: Mutex<Vec<u8>>,
        queued: AtomicUsize,
        /// The queue (a request id; 0 stops the writer's thread).
        queue: Mutex<VecDeque<u8>>,
        cond: Condvar,
    }
    impl Slot {
        fn send(&self, id: u8) {
            self.queued.fetch_add(1, Ordering::SeqCst);
            self.queue.lock().unwrap().push_back(id);
            self.cond.notify_one();
        }
        fn try_inline(&self, id: u8) -> bool {
            let Ok(mut ran) = self.ran.try_lock() else { return false };
            if self.queued.load(Ordering::SeqCst) != 0 {
                return false;
            }
            ran.push(id);
            true
        }
        fn request(&self, id: u8) {
            if !self.try_inline(id) {
                self.send(id);
            }
        }
        fn run(&self) {
            loop {
                let id = {
                    let mut q = self.queue.lock().unwrap();
                    while q.is_empty() {
                        q = self.cond.wait(q).unwrap();
                    }
                    q.pop_front().unwrap()
                };
                if id == 0 {
                    return;
                }
                let mut ran = self.ran.lock().unwrap();
                ran.push(id);
                self.queued.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
    let mut b = loom::model::Builder::new();
    b.preemption_bound = Some(2);
    b.check(|| {
        let slot = Arc::new(Slot {
            ran: Mutex::new(Vec::new()),
            queued: AtomicUsize::new(0),
            queue: Mutex::new(VecDeque::new()),
            cond: Condvar::new(),
        });
        let writer = {
            let slot = slot.clone();
            thread::spawn(move || slot.run())
        };
        let other = {
            let slot = slot.clone();
            thread::spawn(move || slot.request(3))
        };
        // A file's chunks queued without waiting, then its commit.
        slot.send(1);
        slot.request(2);
        other.join().unwrap();
        // Wait until everything queued ran, then stop the thread.
        while slot.queued.load(Ordering::SeqCst) != 0 {
            thread::yield_now();
        }
        slot.send(0);
        writer.join().unwrap();
        let ran = slot.ran.lock().unwrap().clone();
        let mut sorted = ran.clone();
        sorted.sort();
        assert_eq!(sorted, [1, 2, 3], "each request runs once: {ran:?}");
        let at = |id| ran.iter().position(|&r| r == id).unwrap();
        assert!(at(1) < at(2), "the queued request ran after the inline one: {ran:?}");
    });
}
