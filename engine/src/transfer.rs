//! Content between stores (sync): the objects of a content tree, to copy them out, and a
//! file's content set to a tree received from elsewhere with the objects this store lacks.

use std::collections::HashSet;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::chunk;
use crate::format::record::{Action, Record, Timestamp, Version};
use crate::format::tree::{self, ExtentKind, Node};
use crate::ids::{ChunkId, InodeId, NodeId};
use crate::index::ops::{ImportedVersion, Op, Outcome};
use crate::inner::Inner;
use crate::write::EncodedObject;

/// Every node and chunk of tree `root`, each once, parents before children. A tree that
/// refers to a lower file cannot be copied ([`Error::Invalid`]): its bytes are not stored.
pub(crate) fn tree_objects(inner: &Inner, root: NodeId) -> Result<(Vec<NodeId>, Vec<ChunkId>)> {
    let (mut nodes, mut chunks) = (Vec::new(), Vec::new());
    let (mut seen_nodes, mut seen_chunks) = (HashSet::new(), HashSet::new());
    let mut todo = vec![root];
    while let Some(id) = todo.pop() {
        if !seen_nodes.insert(id) {
            continue;
        }
        nodes.push(id);
        match inner.reader.node(id)?.as_ref() {
            Node::Leaf(extents) => {
                for x in extents {
                    match x.kind {
                        ExtentKind::Chunk { id, .. } => {
                            if seen_chunks.insert(id) {
                                chunks.push(id);
                            }
                        }
                        ExtentKind::Hole => {}
                        ExtentKind::Lower { file, .. } => {
                            return Err(Error::Invalid(format!(
                                "content refers to lower file {file}: absorb it first (cowfs overlay absorb)"
                            )));
                        }
                    }
                }
            }
            Node::Inner { children, .. } => todo.extend(children.iter().rev().map(|c| c.id)),
        }
    }
    Ok((nodes, chunks))
}

/// Node `id`'s encoding, checked against its id.
pub(crate) fn node_bytes(inner: &Inner, id: NodeId) -> Result<Vec<u8>> {
    let bytes = inner.reader.node(id)?.encode();
    if tree::node_id(&bytes) != id {
        return Err(inner.shared.internal(format!("node {id} does not encode to its id")));
    }
    Ok(bytes)
}

/// An object a content-tree node refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeRef {
    /// A child node (else a chunk).
    pub node: bool,
    /// Its id.
    pub id: [u8; 32],
}

/// What the node encoded as `bytes` refers to, in order ([`Error::Invalid`] if it does not
/// decode).
pub fn tree_refs(bytes: &[u8]) -> Result<Vec<TreeRef>> {
    let node = Node::decode(bytes).map_err(|e| Error::Invalid(format!("a node does not decode: {e:?}")))?;
    Ok(match node {
        Node::Leaf(extents) => extents
            .iter()
            .filter_map(|x| match x.kind {
                ExtentKind::Chunk { id, .. } => Some(TreeRef { node: false, id: id.0 }),
                _ => None,
            })
            .collect(),
        Node::Inner { children, .. } => children.iter().map(|c| TreeRef { node: true, id: c.id.0 }).collect(),
    })
}

/// Objects received for a content tree.
#[derive(Debug, Default)]
pub struct Received {
    /// Chunks: id, raw bytes.
    pub chunks: Vec<(ChunkId, Vec<u8>)>,
    /// Nodes: id, encoding.
    pub nodes: Vec<(NodeId, Vec<u8>)>,
}

/// What [`import`] makes of the content once the objects are stored.
pub(crate) enum Import {
    /// The file's content becomes tree `root` of `size` bytes (a restore; `mtime`, or now).
    Content { size: u64, root: Option<NodeId>, mtime: Option<Timestamp> },
    /// These versions join the file's history; tree `root` of `size` bytes becomes the file's
    /// content, with `mtime`.
    Versions { versions: Vec<ImportedVersion>, size: u64, root: Option<NodeId>, mtime: Timestamp },
}

/// Stores what of `objects` the store lacks, each checked against its id (one that does not
/// match, or an object of a tree `what` names neither received nor stored, is
/// [`Error::Invalid`] and nothing is written), then does `what` to regular file `ino`, logged
/// with `detail`. One request: nothing can drop the objects in between. Not durable by itself.
pub(crate) fn import(
    inner: &Inner,
    ino: InodeId,
    objects: Received,
    what: Import,
    detail: &str,
) -> Result<Option<Arc<Version>>> {
    let trees: Vec<(Option<NodeId>, u64)> = match &what {
        Import::Content { size, root, .. } => vec![(*root, *size)],
        Import::Versions { versions, size, root, .. } => {
            versions.iter().map(|v| (v.content, v.size)).chain([(*root, *size)]).collect()
        }
    };
    let encoded = checked(inner, objects, &trees)?;
    let (op, action) = match what {
        Import::Content { size, root, mtime } => {
            (Op::CommitContent { ino, size, content: root, mtime }, Action::Restore)
        }
        Import::Versions { versions, size, root, mtime } => {
            (Op::ImportVersions { ino, versions, size, content: root, mtime }, Action::Write)
        }
    };
    let op = Op::Tagged { action, detail: detail.to_string(), op: Box::new(op) };
    match inner.request(encoded, Some(op), false)? {
        Outcome::Version(v) => Ok(v),
        other => Err(inner.shared.internal(format!("unexpected outcome {other:?}"))),
    }
}

/// The records of what of `objects` the store lacks, chunks first and nodes children first
/// (the log stores nothing before what it refers to), once every object is checked against its
/// id and every object of each tree (root, size) in `trees` is received or stored.
fn checked(inner: &Inner, objects: Received, trees: &[(Option<NodeId>, u64)]) -> Result<Vec<EncodedObject>> {
    let stored = |id: &[u8; 32]| inner.shared.index.read().objects().contains_key(id);
    let mut encoded = Vec::new();
    let mut have: HashSet<[u8; 32]> = HashSet::new();
    let mut nodes = std::collections::HashMap::new();
    for (id, bytes) in objects.nodes {
        if tree::node_id(&bytes) != id {
            return Err(Error::Invalid(format!("received node {id} does not hash to its id")));
        }
        let node = Node::decode(&bytes).map_err(|e| Error::Invalid(format!("received node {id}: {e:?}")))?;
        nodes.insert(id, (Arc::new(node), bytes));
        have.insert(id.0);
    }
    for (id, raw) in objects.chunks {
        if chunk::chunk_id(&raw) != id {
            return Err(Error::Invalid(format!("received chunk {id} does not hash to its id")));
        }
        if have.insert(id.0) && !stored(&id.0) {
            let c = chunk::encode_chunk_with_id(id, &raw);
            encoded.push(EncodedObject::new(Record::Chunk(c.meta), c.payload));
        }
    }
    // The received nodes are stored after their children (post-order).
    let mut todo: Vec<(NodeId, bool)> = trees.iter().filter_map(|t| t.0).map(|r| (r, false)).collect();
    let mut seen = HashSet::new();
    while let Some((id, children_done)) = todo.pop() {
        if children_done {
            if let Some((node, bytes)) = nodes.get(&id)
                && !stored(&id.0)
            {
                encoded.push(EncodedObject::new(Record::Node(id, node.clone()), bytes.clone()));
            }
            continue;
        }
        if !seen.insert(id) {
            continue;
        }
        let node = match nodes.get(&id) {
            Some((n, _)) => n.clone(),
            None if stored(&id.0) => continue,
            None => return Err(Error::Invalid(format!("node {id} of the received tree is missing"))),
        };
        todo.push((id, true));
        match node.as_ref() {
            Node::Leaf(extents) => {
                for x in extents {
                    match x.kind {
                        ExtentKind::Chunk { id, .. } if !have.contains(&id.0) && !stored(&id.0) => {
                            return Err(Error::Invalid(format!("chunk {id} of the received tree is missing")));
                        }
                        ExtentKind::Lower { .. } => {
                            return Err(Error::Invalid("a received tree refers to a lower file".into()));
                        }
                        _ => {}
                    }
                }
            }
            Node::Inner { children, .. } => todo.extend(children.iter().map(|c| (c.id, false))),
        }
    }
    for (root, size) in trees {
        if let Some(r) = root
            && nodes.get(r).is_some_and(|(n, _)| n.byte_len() > *size)
        {
            return Err(Error::Invalid(format!("the received tree {r} holds more than {size} bytes")));
        }
    }
    Ok(encoded)
}
