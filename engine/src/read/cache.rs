//! A byte-budgeted FIFO cache of verified objects (chunks and nodes), keyed by id.

use std::collections::VecDeque;

use crate::index::ObjectMap;

/// A byte-budgeted FIFO cache.
#[derive(Debug)]
pub(crate) struct Cache<V> {
    map: ObjectMap<(V, usize)>,
    order: VecDeque<[u8; 32]>,
    bytes: usize,
    budget: usize,
}

impl<V: Clone> Cache<V> {
    pub(crate) fn new(budget: usize) -> Self {
        Cache { map: Default::default(), order: VecDeque::new(), bytes: 0, budget }
    }
    pub(crate) fn get(&self, k: &[u8; 32]) -> Option<V> {
        self.map.get(k).map(|(v, _)| v.clone())
    }
    pub(crate) fn insert(&mut self, k: [u8; 32], v: V, size: usize) {
        if size > self.budget || self.map.contains_key(&k) {
            return;
        }
        while self.bytes + size > self.budget {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, s)) = self.map.remove(&old) {
                self.bytes -= s;
            }
        }
        self.map.insert(k, (v, size));
        self.order.push_back(k);
        self.bytes += size;
    }
}
