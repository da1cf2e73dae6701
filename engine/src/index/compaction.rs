//! The index changes compaction makes: forgetting garbage that is still garbage, and
//! pointing the index at the copies of moved frames (see `crate::compact`).

use std::collections::{HashMap, HashSet};

use super::{Index, Location, ObjectMap};
use crate::ids::SegmentId;

/// An object found garbage at the mark.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// Id.
    pub id: [u8; 32],
    /// Its frame.
    pub loc: Location,
    /// Its reference count at the mark.
    pub refs: u32,
    /// Objects it references (nodes).
    pub children: Vec<[u8; 32]>,
}

/// What the writer is asked to forget.
#[derive(Debug, Clone, Default)]
pub struct Garbage {
    /// The candidates.
    pub candidates: Vec<Candidate>,
}

/// A frame moved: old place, new place, and the object id for objects.
pub type Move = (Location, Location, Option<[u8; 32]>);

impl Index {
    /// Forgets the garbage that is still garbage at the forget step of a compaction (see
    /// `crate::compact`), with `pins` (objects open files reuse) held; returns how many objects
    /// went.
    pub fn forget(&mut self, pins: &ObjectMap<u32>, g: &Garbage) -> u64 {
        let by_id: HashMap<[u8; 32], &Candidate> = g.candidates.iter().map(|c| (c.id, c)).collect();
        let changed = |c: &Candidate| {
            pins.contains_key(&c.id) || self.objects.get(&c.id).is_none_or(|e| e.refs != c.refs || e.loc != c.loc)
        };
        let mut keep: HashSet<[u8; 32]> = g.candidates.iter().filter(|c| changed(c)).map(|c| c.id).collect();
        let mut stack: Vec<[u8; 32]> = keep.iter().copied().collect();
        while let Some(id) = stack.pop() {
            for child in by_id.get(&id).map(|c| c.children.as_slice()).unwrap_or_default() {
                if by_id.contains_key(child) && keep.insert(*child) {
                    stack.push(*child);
                }
            }
        }
        // An object goes only when everything that references it goes too: a garbage node outside
        // the victims (not a candidate) keeps its children stored, so no stored node ever names a
        // missing object. Dropping one from the set can strand its children: repeat to a fixpoint.
        let mut gone: HashSet<[u8; 32]> = by_id.keys().filter(|id| !keep.contains(*id)).copied().collect();
        loop {
            let mut from_gone: HashMap<[u8; 32], u32> = HashMap::new();
            for id in &gone {
                for child in &by_id[id].children {
                    *from_gone.entry(*child).or_default() += 1;
                }
            }
            let before = gone.len();
            gone.retain(|id| self.objects.get(id).is_some_and(|e| e.refs == from_gone.get(id).copied().unwrap_or(0)));
            if gone.len() == before {
                break;
            }
        }
        for c in g.candidates.iter().filter(|c| gone.contains(&c.id)) {
            self.forget_object(&c.id, &c.children);
        }
        gone.len() as u64
    }

    /// Points the index at the copies of moved frames and replaces each run of segments by
    /// its output (`(run, output, live bytes)`).
    pub fn relocate<'a>(&mut self, moves: &[Move], swaps: impl IntoIterator<Item = (&'a [SegmentId], SegmentId, u64)>) {
        let moved: HashMap<Location, Location> = moves.iter().map(|(a, b, _)| (*a, *b)).collect();
        for (old, new, id) in moves {
            if let Some(id) = id
                && let Some(e) = self.objects.get_mut(id)
                && e.loc == *old
            {
                e.loc = *new;
            }
        }
        let swaps: Vec<_> = swaps.into_iter().collect();
        let victims: HashSet<SegmentId> = swaps.iter().flat_map(|(run, _, _)| run.iter().copied()).collect();
        for loc in self.meta_locs.values_mut().filter(|l| victims.contains(&l.segment)) {
            if let Some(n) = moved.get(loc) {
                *loc = *n;
            }
        }
        for (run, output, bytes) in swaps {
            for victim in run {
                self.live.remove(victim);
            }
            self.live.insert(output, bytes);
        }
    }
}
