//! The extent map of an open file: which chunk bytes (or hole) hold each byte of the stored
//! content. Pure: no I/O, no engine.

use std::collections::BTreeMap;
use std::ops::Range;

use crate::format::tree::{Extent, ExtentKind};

/// Extents by file offset; they tile `0 .. end()` without gaps or overlaps.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ExtentMap {
    map: BTreeMap<u64, Extent>,
}

/// `kind` moved `by` bytes into its chunk or lower file (a hole stays a hole).
fn advanced(kind: ExtentKind, by: u64) -> ExtentKind {
    match kind {
        ExtentKind::Chunk { id, offset } => ExtentKind::Chunk { id, offset: offset + by as u32 },
        ExtentKind::Lower { file, offset } => ExtentKind::Lower { file, offset: offset + by },
        ExtentKind::Hole => ExtentKind::Hole,
    }
}

impl ExtentMap {
    /// Appends `e`, which starts at `at`, the current end (a content tree's extents, in order).
    pub(crate) fn push(&mut self, at: u64, e: Extent) {
        debug_assert_eq!(at, self.end(), "extents tile the file");
        self.map.insert(at, e);
    }

    /// The end of the last extent (the stored content's length).
    pub(crate) fn end(&self) -> u64 {
        self.map.iter().next_back().map_or(0, |(s, e)| s + e.len)
    }

    /// The extent containing `pos`, with its start.
    pub(crate) fn containing(&self, pos: u64) -> Option<(u64, Extent)> {
        self.map.range(..=pos).next_back().filter(|(s, e)| pos < *s + e.len).map(|(s, e)| (*s, *e))
    }

    /// The extents overlapping `r`, with their starts, in order.
    pub(crate) fn overlapping(&self, r: Range<u64>) -> impl Iterator<Item = (u64, Extent)> + '_ {
        let start = self.containing(r.start).map_or(r.start, |(s, _)| s);
        self.map.range(start..r.end.max(start)).map(|(s, e)| (*s, *e))
    }

    /// Every extent, in order.
    pub(crate) fn extents(&self) -> impl Iterator<Item = Extent> + '_ {
        self.map.values().copied()
    }

    /// Grows a dirty range `s .. e` to the chunk extents it cuts into, so that re-chunking it
    /// keeps every chunk boundary outside it. Holes and lower ranges are cut where the range
    /// starts and ends: only the written bytes are stored.
    pub(crate) fn region(&self, s: u64, e: u64) -> (u64, u64) {
        let rs = match self.containing(s) {
            Some((start, x)) if matches!(x.kind, ExtentKind::Chunk { .. }) => start,
            _ => s,
        };
        let re = match self.containing(e) {
            Some((start, x)) if start < e && matches!(x.kind, ExtentKind::Chunk { .. }) => start + x.len,
            _ => e,
        };
        (rs, re)
    }

    /// Splits the extent containing `pos` so that an extent starts at `pos`.
    fn split_at(&mut self, pos: u64) {
        if let Some((s, e)) = self.containing(pos)
            && s < pos
        {
            let head = pos - s;
            self.map.insert(s, Extent { len: head, ..e });
            self.map.insert(pos, Extent { len: e.len - head, kind: advanced(e.kind, head) });
        }
    }

    /// Removes every extent in `from .. to` (after splitting at both ends).
    fn cut(&mut self, from: u64, to: u64) {
        self.split_at(from);
        self.split_at(to);
        let inside: Vec<u64> = self.map.range(from..to).map(|(k, _)| *k).collect();
        for k in inside {
            self.map.remove(&k);
        }
    }

    /// Replaces whatever covers `rs .. re` with `new` (which covers exactly that range); a gap
    /// between the old end and `rs` becomes a hole.
    pub(crate) fn replace(&mut self, rs: u64, re: u64, new: Vec<Extent>) {
        debug_assert_eq!(new.iter().map(|e| e.len).sum::<u64>(), re - rs);
        self.cut(rs, re);
        let end = self.end();
        if end < rs {
            self.map.insert(end, Extent { len: rs - end, kind: ExtentKind::Hole });
        }
        let mut pos = rs;
        for e in new {
            self.map.insert(pos, e);
            pos += e.len;
        }
    }

    /// Drops everything from `size` on.
    pub(crate) fn truncate(&mut self, size: u64) {
        self.cut(size, u64::MAX);
    }

    /// Turns `from .. to` into a hole (nothing past the end is added).
    pub(crate) fn punch(&mut self, from: u64, to: u64) {
        if from >= to {
            return;
        }
        self.cut(from, to);
        if self.end() > from {
            self.map.insert(from, Extent { len: to - from, kind: ExtentKind::Hole });
        }
    }

    /// The extents of `offset .. offset + len`, holes where nothing is stored (past the end
    /// too): what covers those bytes, to be put elsewhere with [`ExtentMap::replace`].
    pub(crate) fn slice(&self, offset: u64, len: u64) -> Vec<Extent> {
        let end = offset.saturating_add(len);
        let mut out = Vec::new();
        let mut at = offset;
        for (s, e) in self.overlapping(offset..end) {
            let (a, b) = (s.max(offset), (s + e.len).min(end));
            if a >= b {
                continue;
            }
            if a > at {
                out.push(Extent { len: a - at, kind: ExtentKind::Hole });
            }
            out.push(Extent { len: b - a, kind: advanced(e.kind, a - s) });
            at = b;
        }
        if at < end {
            out.push(Extent { len: end - at, kind: ExtentKind::Hole });
        }
        out
    }

    /// The extents in order with neighbours that continue each other merged (same chunk or
    /// lower file, contiguous range, or two holes) and a trailing hole dropped (the size covers
    /// it), so that equal content gives an equal tree.
    pub(crate) fn normalized(&self) -> Vec<Extent> {
        let mut out: Vec<Extent> = Vec::new();
        for e in self.extents() {
            if let Some(last) = out.last_mut() {
                match (last.kind, e.kind) {
                    (ExtentKind::Hole, ExtentKind::Hole) => {
                        last.len += e.len;
                        continue;
                    }
                    (ExtentKind::Chunk { id: a, offset: oa }, ExtentKind::Chunk { id: b, offset: ob })
                        if a == b && oa as u64 + last.len == ob as u64 =>
                    {
                        last.len += e.len;
                        continue;
                    }
                    (ExtentKind::Lower { file: a, offset: oa }, ExtentKind::Lower { file: b, offset: ob })
                        if a == b && oa + last.len == ob =>
                    {
                        last.len += e.len;
                        continue;
                    }
                    _ => {}
                }
            }
            out.push(e);
        }
        if out.last().is_some_and(|e| e.kind == ExtentKind::Hole) {
            out.pop();
        }
        out
    }
}

/// The extent of `list` (sorted `(offset, extent)`) covering `at`, as (its end, its kind
/// shifted to start at `at`); `None` past the end. Advances the cursor `i`.
pub(crate) fn piece(list: &[(u64, Extent)], i: &mut usize, at: u64) -> Option<(u64, ExtentKind)> {
    while *i < list.len() && list[*i].0 + list[*i].1.len <= at {
        *i += 1;
    }
    let (s, e) = list.get(*i)?;
    Some((s + e.len, advanced(e.kind, at - s)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ChunkId;
    use proptest::prelude::*;

    /// What a byte holds: `(chunk, offset in it)`, or `None` for a hole.
    type Byte = Option<(u8, u64)>;

    fn expand(extents: impl IntoIterator<Item = Extent>) -> Vec<Byte> {
        let mut out = Vec::new();
        for e in extents {
            for k in 0..e.len {
                out.push(match e.kind {
                    ExtentKind::Chunk { id, offset } => Some((id.0[0], offset as u64 + k)),
                    ExtentKind::Hole | ExtentKind::Lower { .. } => None,
                });
            }
        }
        out
    }

    /// The map tiles `0 .. end` without gaps, and expands to `model`.
    fn check(m: &ExtentMap, model: &[Byte]) {
        let mut pos = 0;
        for (s, e) in &m.map {
            assert_eq!(*s, pos, "extents tile the file");
            assert!(e.len > 0, "no empty extent");
            pos += e.len;
        }
        assert_eq!(expand(m.extents()), model);
        let mut trimmed = model.to_vec();
        while trimmed.last() == Some(&None) {
            trimmed.pop();
        }
        assert_eq!(expand(m.normalized()), trimmed, "normalized keeps the bytes");
    }

    #[derive(Debug, Clone)]
    enum MapOp {
        Replace { at: u64, pieces: Vec<(u8, u64, u64)> },
        Truncate(u64),
        Punch(u64, u64),
        Copy { from: u64, len: u64, to: u64 },
    }

    fn op() -> impl Strategy<Value = MapOp> {
        prop_oneof![
            (0..300u64, prop::collection::vec((0..4u8, 0..50u64, 1..40u64), 1..5))
                .prop_map(|(at, pieces)| MapOp::Replace { at, pieces }),
            (0..300u64).prop_map(MapOp::Truncate),
            (0..300u64, 0..120u64).prop_map(|(a, n)| MapOp::Punch(a, a + n)),
            (0..300u64, 0..100u64, 0..300u64).prop_map(|(from, len, to)| MapOp::Copy { from, len, to }),
        ]
    }

    fn kind(chunk: u8, offset: u64) -> ExtentKind {
        if chunk == 0 {
            ExtentKind::Hole
        } else {
            ExtentKind::Chunk { id: ChunkId([chunk; 32]), offset: offset as u32 }
        }
    }

    proptest! {
        /// Every operation of the map against a byte-by-byte model.
        #[test]
        fn the_map_matches_a_byte_model(ops in prop::collection::vec(op(), 1..40)) {
            let mut m = ExtentMap::default();
            let mut model: Vec<Byte> = Vec::new();
            for o in ops {
                match o {
                    MapOp::Replace { at, pieces } => {
                        let new: Vec<Extent> =
                            pieces.iter().map(|&(c, off, len)| Extent { len, kind: kind(c, off) }).collect();
                        let bytes = expand(new.iter().copied());
                        let end = at + bytes.len() as u64;
                        m.replace(at, end, new);
                        if model.len() < end as usize {
                            model.resize(end as usize, None);
                        }
                        model[at as usize..end as usize].copy_from_slice(&bytes);
                    }
                    MapOp::Truncate(size) => {
                        m.truncate(size);
                        model.truncate(size as usize);
                    }
                    MapOp::Punch(a, b) => {
                        m.punch(a, b);
                        if model.len() as u64 > b {
                            model[a as usize..b as usize].fill(None);
                        } else if a < b {
                            // Nothing stored after it: the map just ends at `a` (the size covers the rest).
                            model.truncate(a as usize);
                        }
                    }
                    MapOp::Copy { from, len, to } => {
                        let s = m.slice(from, len);
                        let got = expand(s.iter().copied());
                        let want: Vec<Byte> =
                            (from..from + len).map(|i| model.get(i as usize).copied().flatten()).collect();
                        prop_assert_eq!(&got, &want, "slice");
                        if len > 0 {
                            m.replace(to, to + len, s);
                            if model.len() < (to + len) as usize {
                                model.resize((to + len) as usize, None);
                            }
                            model[to as usize..(to + len) as usize].copy_from_slice(&want);
                        }
                    }
                }
                check(&m, &model);
            }
        }

        /// `region` covers the range and ends only at chunk boundaries or at the range's ends.
        #[test]
        fn a_region_grows_to_chunk_boundaries(
            pieces in prop::collection::vec((0..4u8, 0..50u64, 1..40u64), 1..8),
            s in 0..200u64,
            n in 0..100u64,
        ) {
            let mut m = ExtentMap::default();
            for &(c, off, len) in &pieces {
                m.push(m.end(), Extent { len, kind: kind(c, off) });
            }
            let (rs, re) = m.region(s, s + n);
            prop_assert!(rs <= s && re >= s + n);
            for edge in [rs, re] {
                if let Some((start, x)) = m.containing(edge) {
                    prop_assert!(start == edge || x.kind == ExtentKind::Hole || edge == s || edge == s + n);
                }
            }
        }
    }
}
