//! Content trees: a file version's content as a tree of extent lists.
//!
//! Leaves list extents (a range of a chunk, or a hole); inner nodes list children with the
//! number of bytes each covers. Node boundaries are content-defined (an entry whose hash has
//! its low [`FANOUT_BITS`] bits zero ends a node), so an edit changes only the leaf it falls in
//! and the path above it: the other nodes hash the same and are already stored. Nodes are
//! identified by a keyed blake3 of their encoding, so no node id can equal a chunk id.
//! Pure: no I/O.

use crate::error::{CorruptKind, DecodeError};
use crate::format::codec::{Reader, Writer};
use crate::ids::{ChunkId, LowerFileId, NodeId};

/// Key of the keyed blake3 hash that names nodes (domain separation from chunk ids).
pub const NODE_KEY: [u8; 32] = *b"cowfs content tree node v1 key!!";
/// Average fanout is 2^FANOUT_BITS.
pub const FANOUT_BITS: u32 = 6;
/// Hard cap on entries per node.
pub const MAX_ENTRIES: usize = 512;
/// Deepest tree accepted from disk.
pub const MAX_LEVEL: u8 = 16;

/// What an extent's bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExtentKind {
    /// Bytes `offset .. offset + len` of a chunk.
    Chunk {
        /// The chunk.
        id: ChunkId,
        /// Start within the chunk's raw bytes.
        offset: u32,
    },
    /// Zeros that cost nothing.
    Hole,
    /// Bytes `offset .. offset + len` of a recorded lower file (overlay mounts, format
    /// version 3): read from the lower tree, never stored.
    Lower {
        /// The lower file.
        file: LowerFileId,
        /// Start within it.
        offset: u64,
    },
}

/// A run of file bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Length in bytes (> 0).
    pub len: u64,
    /// Where the bytes come from.
    pub kind: ExtentKind,
}

/// A child of an inner node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Child {
    /// The child node.
    pub id: NodeId,
    /// Bytes it covers.
    pub len: u64,
}

/// A decoded node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Level 0: extents.
    Leaf(Vec<Extent>),
    /// Level >= 1: children.
    Inner {
        /// Height above the leaves.
        level: u8,
        /// Children.
        children: Vec<Child>,
    },
}

const EXT_CHUNK: u8 = 0;
const EXT_HOLE: u8 = 1;
const EXT_LOWER: u8 = 2;

/// The id of an encoded node.
pub fn node_id(encoded: &[u8]) -> NodeId {
    NodeId(*blake3::keyed_hash(&NODE_KEY, encoded).as_bytes())
}

impl Node {
    /// Bytes covered.
    pub fn byte_len(&self) -> u64 {
        match self {
            Node::Leaf(e) => e.iter().map(|e| e.len).sum(),
            Node::Inner { children, .. } => children.iter().map(|c| c.len).sum(),
        }
    }

    /// Chunk ids and node ids this node references.
    pub fn references(&self) -> Vec<[u8; 32]> {
        match self {
            Node::Leaf(e) => e
                .iter()
                .filter_map(|e| match e.kind {
                    ExtentKind::Chunk { id, .. } => Some(id.0),
                    ExtentKind::Hole | ExtentKind::Lower { .. } => None,
                })
                .collect(),
            Node::Inner { children, .. } => children.iter().map(|c| c.id.0).collect(),
        }
    }

    /// Lower files this node's extents refer to.
    pub fn lower_files(&self) -> impl Iterator<Item = LowerFileId> + '_ {
        let extents = match self {
            Node::Leaf(e) => e.as_slice(),
            Node::Inner { .. } => &[],
        };
        extents.iter().filter_map(|e| match e.kind {
            ExtentKind::Lower { file, .. } => Some(file),
            _ => None,
        })
    }

    /// Encodes the node.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Writer::new();
        match self {
            Node::Leaf(ext) => {
                w.u8(0).u32(ext.len() as u32);
                for e in ext {
                    match e.kind {
                        ExtentKind::Chunk { id, offset } => {
                            w.u8(EXT_CHUNK).u64(e.len).raw(&id.0).u32(offset);
                        }
                        ExtentKind::Hole => {
                            w.u8(EXT_HOLE).u64(e.len);
                        }
                        ExtentKind::Lower { file, offset } => {
                            w.u8(EXT_LOWER).u64(e.len).u64(file.0).u64(offset);
                        }
                    }
                }
            }
            Node::Inner { level, children } => {
                w.u8(*level).u32(children.len() as u32);
                for c in children {
                    w.raw(&c.id.0).u64(c.len);
                }
            }
        }
        w.buf
    }

    /// Decodes a node; never panics.
    pub fn decode(buf: &[u8]) -> Result<Node, DecodeError> {
        let mut r = Reader::new(buf);
        let level = r.u8()?;
        if level > MAX_LEVEL {
            return Err(CorruptKind::Length { len: level.into(), limit: MAX_LEVEL.into() }.into());
        }
        let n = r.count(MAX_ENTRIES, 9)?;
        if n == 0 {
            return Err(CorruptKind::Malformed("empty node").into());
        }
        let node = if level == 0 {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let k = r.u8()?;
                let len = r.u64()?;
                let kind = match k {
                    EXT_CHUNK => {
                        let id = ChunkId(r.array()?);
                        let offset = r.u32()?;
                        if (offset as u64).saturating_add(len) > crate::format::chunk::MAX_CHUNK as u64 {
                            return Err(CorruptKind::Malformed("chunk extent range").into());
                        }
                        ExtentKind::Chunk { id, offset }
                    }
                    EXT_HOLE => ExtentKind::Hole,
                    EXT_LOWER => {
                        let (file, offset) = (LowerFileId(r.u64()?), r.u64()?);
                        if file.0 == 0 || offset.checked_add(len).is_none() {
                            return Err(CorruptKind::Malformed("lower extent").into());
                        }
                        ExtentKind::Lower { file, offset }
                    }
                    v => {
                        return Err(CorruptKind::Unknown { what: "extent kind", value: v.into() }.into());
                    }
                };
                if len == 0 {
                    return Err(CorruptKind::Malformed("empty extent").into());
                }
                v.push(Extent { len, kind });
            }
            Node::Leaf(v)
        } else {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                let id = NodeId(r.array()?);
                let len = r.u64()?;
                if len == 0 {
                    return Err(CorruptKind::Malformed("empty child").into());
                }
                v.push(Child { id, len });
            }
            Node::Inner { level, children: v }
        };
        r.finish("node")?;
        // Total length must not overflow.
        let mut total: u64 = 0;
        let lens: Vec<u64> = match &node {
            Node::Leaf(e) => e.iter().map(|e| e.len).collect(),
            Node::Inner { children, .. } => children.iter().map(|c| c.len).collect(),
        };
        for l in lens {
            total = total.checked_add(l).ok_or(DecodeError(CorruptKind::Malformed("node length overflow")))?;
        }
        Ok(node)
    }
}

fn boundary(h: &[u8; 32]) -> bool {
    h[0] & ((1u8 << FANOUT_BITS) - 1) == 0
}

/// Only chunk extents end nodes: holes of equal length would otherwise all be boundaries (or
/// none), and holes and lower ranges stand between chunks (a lower file's untouched ranges
/// between the edits), so chunks alone keep the fanout.
fn ends_node(e: &Extent) -> bool {
    match e.kind {
        ExtentKind::Chunk { id, .. } => boundary(&id.0),
        ExtentKind::Hole | ExtentKind::Lower { .. } => false,
    }
}

/// Streams extents into a tree, level by level, emitting every node it makes.
#[derive(Debug, Default)]
pub struct TreeBuilder {
    leaf: Vec<Extent>,
    inner: Vec<Vec<Child>>,
    out: Vec<(NodeId, Vec<u8>)>,
}

impl TreeBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next extent (adjacent holes are merged).
    pub fn push(&mut self, e: Extent) {
        if e.len == 0 {
            return;
        }
        if let (ExtentKind::Hole, Some(last)) = (e.kind, self.leaf.last_mut())
            && last.kind == ExtentKind::Hole
        {
            last.len += e.len;
            return;
        }
        self.leaf.push(e);
        if ends_node(&e) || self.leaf.len() >= MAX_ENTRIES {
            self.close_leaf();
        }
    }

    fn close_leaf(&mut self) {
        if self.leaf.is_empty() {
            return;
        }
        let node = Node::Leaf(std::mem::take(&mut self.leaf));
        let len = node.byte_len();
        let child = self.emit(&node, len);
        self.push_child(1, child);
    }

    fn emit(&mut self, node: &Node, len: u64) -> Child {
        let enc = node.encode();
        let id = node_id(&enc);
        self.out.push((id, enc));
        Child { id, len }
    }

    fn push_child(&mut self, level: usize, c: Child) {
        while self.inner.len() < level {
            self.inner.push(Vec::new());
        }
        let list = &mut self.inner[level - 1];
        list.push(c);
        if boundary(&c.id.0) || list.len() >= MAX_ENTRIES {
            self.close_inner(level);
        }
    }

    fn close_inner(&mut self, level: usize) {
        let children = std::mem::take(&mut self.inner[level - 1]);
        if children.is_empty() {
            return;
        }
        let node = Node::Inner { level: level as u8, children };
        let len = node.byte_len();
        let c = self.emit(&node, len);
        self.push_child(level + 1, c);
    }

    /// Finishes the tree: returns its root (`None` when no extents were pushed) and every
    /// node made, children before parents.
    pub fn finish(mut self) -> (Option<NodeId>, Vec<(NodeId, Vec<u8>)>) {
        // A file of only a trailing hole needs no tree: the size says it all.
        if self.inner.is_empty() && self.leaf.iter().all(|e| e.kind == ExtentKind::Hole) {
            return (None, self.out);
        }
        self.close_leaf();
        let mut level = 1;
        loop {
            if level > self.inner.len() {
                break;
            }
            let is_top = level == self.inner.len();
            let pending = self.inner[level - 1].len();
            if is_top && pending == 1 {
                let root = self.inner[level - 1][0].id;
                return (Some(root), self.out);
            }
            if pending > 0 {
                self.close_inner(level);
            }
            level += 1;
        }
        unreachable!("a non-empty tree always has a root")
    }
}

/// Builds a tree over `extents`.
pub fn build(extents: impl IntoIterator<Item = Extent>) -> (Option<NodeId>, Vec<(NodeId, Vec<u8>)>) {
    let mut b = TreeBuilder::new();
    for e in extents {
        b.push(e);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(i: u32, len: u64) -> Extent {
        Extent { len, kind: ExtentKind::Chunk { id: crate::format::chunk::chunk_id(&i.to_le_bytes()), offset: 0 } }
    }

    #[test]
    fn an_edit_rewrites_only_one_path() {
        let ext: Vec<Extent> = (0..20_000).map(|i| chunk(i, 65536)).collect();
        let (root, nodes) = build(ext.clone());
        assert!(root.is_some());
        assert!(nodes.len() > 300, "many leaves expected, got {}", nodes.len());
        let mut edited = ext.clone();
        edited[12_345] = chunk(999_999, 65536);
        let (root2, nodes2) = build(edited);
        assert_ne!(root, root2);
        let old: std::collections::HashSet<NodeId> = nodes.iter().map(|n| n.0).collect();
        let new: Vec<_> = nodes2.iter().filter(|n| !old.contains(&n.0)).collect();
        let bytes: usize = new.iter().map(|n| n.1.len()).sum();
        assert!(new.len() <= 6, "{} new nodes", new.len());
        assert!(bytes < 64 * 1024, "{bytes} bytes of new metadata");
    }

    #[test]
    fn hole_only_files_have_no_tree_and_holes_merge() {
        let (root, nodes) = build(vec![Extent { len: 1 << 30, kind: ExtentKind::Hole }]);
        assert!(root.is_none() && nodes.is_empty());
        let (root, _) = build(vec![
            Extent { len: 5, kind: ExtentKind::Hole },
            Extent { len: 7, kind: ExtentKind::Hole },
            chunk(1, 10),
        ]);
        assert!(root.is_some());
    }

    #[test]
    fn nodes_round_trip() {
        let (_, nodes) = build((0..3000).map(|i| chunk(i, 100)));
        for (id, enc) in nodes {
            let n = Node::decode(&enc).unwrap();
            assert_eq!(n.encode(), enc);
            assert_eq!(node_id(&enc), id);
        }
    }
}
