//! The one place the engine gets its locks, threads and channels from.
//!
//! Normally these are parking_lot, std threads and crossbeam-channel; under `cfg(loom)` they are
//! loom's instrumented types, so the concurrency kernels (commit hand-off, shutdown) can be
//! model-checked without touching the code that uses them.

#[cfg(not(loom))]
mod imp {
    pub use parking_lot::{Mutex, MutexGuard, RwLock};
    pub use std::sync::atomic::AtomicUsize;
    pub use std::thread::{JoinHandle, spawn};

    /// Multi-producer channel used to hand transactions to the writer thread.
    pub mod channel {
        pub use crossbeam_channel::{Receiver, Sender, bounded};
    }
}

#[cfg(loom)]
mod imp {
    pub use loom::sync::atomic::AtomicUsize;
    pub use loom::thread::{JoinHandle, spawn};

    /// parking_lot-shaped wrappers over loom's std-shaped locks.
    #[derive(Debug, Default)]
    pub struct Mutex<T>(loom::sync::Mutex<T>);
    pub type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;
    impl<T> Mutex<T> {
        pub fn new(v: T) -> Self {
            Self(loom::sync::Mutex::new(v))
        }
        // (loom cannot model a guard dropped by a panic: its lock would be poisoned for
        // good. The engine never unwinds holding one: see `write::slot::run_batch`.)
        pub fn lock(&self) -> MutexGuard<'_, T> {
            self.0.lock().expect("loom mutex poisoned")
        }
        pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
            self.0.try_lock().ok()
        }
    }
    #[derive(Debug, Default)]
    pub struct RwLock<T>(loom::sync::RwLock<T>);
    pub type RwLockReadGuard<'a, T> = loom::sync::RwLockReadGuard<'a, T>;
    pub type RwLockWriteGuard<'a, T> = loom::sync::RwLockWriteGuard<'a, T>;
    impl<T> RwLock<T> {
        pub fn new(v: T) -> Self {
            Self(loom::sync::RwLock::new(v))
        }
        pub fn read(&self) -> RwLockReadGuard<'_, T> {
            self.0.read().expect("loom rwlock poisoned")
        }
        pub fn write(&self) -> RwLockWriteGuard<'_, T> {
            self.0.write().expect("loom rwlock poisoned")
        }
    }
    /// A bounded MPMC channel built on loom primitives, with crossbeam's API subset.
    pub mod channel {
        use loom::sync::{Arc, Condvar, Mutex};
        use std::collections::VecDeque;

        #[derive(Debug)]
        struct State<T> {
            queue: VecDeque<T>,
            senders: usize,
            receiver_alive: bool,
        }
        #[derive(Debug)]
        struct Shared<T> {
            state: Mutex<State<T>>,
            cond: Condvar,
            cap: usize,
        }
        #[derive(Debug)]
        pub struct Sender<T>(Arc<Shared<T>>);
        #[derive(Debug)]
        pub struct Receiver<T>(Arc<Shared<T>>);
        #[derive(Debug, PartialEq, Eq)]
        pub struct SendError<T>(pub T);
        #[derive(Debug, PartialEq, Eq)]
        pub struct RecvError;
        #[derive(Debug, PartialEq, Eq)]
        pub enum TryRecvError {
            Empty,
            Disconnected,
        }

        pub fn bounded<T>(cap: usize) -> (Sender<T>, Receiver<T>) {
            let shared = Arc::new(Shared {
                state: Mutex::new(State { queue: VecDeque::new(), senders: 1, receiver_alive: true }),
                cond: Condvar::new(),
                cap: cap.max(1),
            });
            (Sender(shared.clone()), Receiver(shared))
        }
        impl<T> Clone for Sender<T> {
            fn clone(&self) -> Self {
                self.0.state.lock().unwrap().senders += 1;
                Sender(self.0.clone())
            }
        }
        impl<T> Drop for Sender<T> {
            fn drop(&mut self) {
                self.0.state.lock().unwrap().senders -= 1;
                self.0.cond.notify_all();
            }
        }
        impl<T> Drop for Receiver<T> {
            // Like crossbeam's: the messages still queued are dropped with the receiver (a
            // request's reply sender with them, which answers its caller `Closed`).
            fn drop(&mut self) {
                let queued = {
                    let mut st = self.0.state.lock().unwrap();
                    st.receiver_alive = false;
                    std::mem::take(&mut st.queue)
                };
                self.0.cond.notify_all();
                drop(queued);
            }
        }
        impl<T> Sender<T> {
            pub fn send(&self, v: T) -> Result<(), SendError<T>> {
                let mut st = self.0.state.lock().unwrap();
                loop {
                    if !st.receiver_alive {
                        return Err(SendError(v));
                    }
                    if st.queue.len() < self.0.cap {
                        st.queue.push_back(v);
                        self.0.cond.notify_all();
                        return Ok(());
                    }
                    st = self.0.cond.wait(st).unwrap();
                }
            }
        }
        impl<T> Receiver<T> {
            pub fn recv(&self) -> Result<T, RecvError> {
                let mut st = self.0.state.lock().unwrap();
                loop {
                    if let Some(v) = st.queue.pop_front() {
                        self.0.cond.notify_all();
                        return Ok(v);
                    }
                    if st.senders == 0 {
                        return Err(RecvError);
                    }
                    st = self.0.cond.wait(st).unwrap();
                }
            }
            pub fn try_recv(&self) -> Result<T, TryRecvError> {
                let mut st = self.0.state.lock().unwrap();
                match st.queue.pop_front() {
                    Some(v) => {
                        self.0.cond.notify_all();
                        Ok(v)
                    }
                    None if st.senders == 0 => Err(TryRecvError::Disconnected),
                    None => Err(TryRecvError::Empty),
                }
            }
        }
    }
}

pub use imp::*;
