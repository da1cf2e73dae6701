//! Content copied between stores (what sync does with it): a tree's objects out of one store,
//! into another as a file's content; received objects that are damaged, missing or too big
//! are refused before anything is written, and the store keeps working.

mod common;

use common::*;
use cowfs_engine::storage::SimStorage;
use cowfs_engine::{Engine, Error, NodeId, Received};

/// Everything of `ino`'s content tree in `from`: the objects another store needs.
fn objects_of(from: &Engine, root: NodeId) -> Received {
    let (nodes, chunks) = from.tree_objects(root).unwrap();
    Received {
        nodes: nodes.iter().map(|n| (*n, from.node_bytes(*n).unwrap())).collect(),
        chunks: chunks.iter().map(|c| (*c, from.chunk(*c).unwrap().to_vec())).collect(),
    }
}

#[test]
fn a_tree_copied_into_another_store_reads_the_same_and_survives_a_reopen() {
    let (sa, sb) = (SimStorage::new(), SimStorage::new());
    let (a, b) = (sim_engine(&sa), sim_engine(&sb));
    let data = Rng::new(3).bytes(3 << 20);
    let ino = put_file(&a, b"big", &data, true);
    let root = a.getattr(ino).unwrap().content.unwrap();
    let received = objects_of(&a, root);
    assert!(received.chunks.len() > 10 && !received.nodes.is_empty());
    let target = b.create_file(ROOT, b"copy", 0o644).unwrap().ino;
    b.import_content(target, data.len() as u64, Some(root), received, None, "test").unwrap();
    assert_eq!(b.read(target, 0, data.len()).unwrap(), data);
    // Only what is missing is needed the second time: nothing.
    let again = b.create_file(ROOT, b"again", 0o644).unwrap().ino;
    b.import_content(again, data.len() as u64, Some(root), Received::default(), None, "test").unwrap();
    b.sync().unwrap();
    drop(b);
    let b = sim_engine(&sb);
    assert_eq!(b.read(target, 0, data.len()).unwrap(), data);
    assert_eq!(b.read(again, 0, data.len()).unwrap(), data);
    assert!(assert_fsck_clean(&sb, "after the import"));
}

#[test]
fn damaged_missing_or_oversized_objects_are_refused_and_nothing_is_written() {
    let (sa, sb) = (SimStorage::new(), SimStorage::new());
    let (a, b) = (sim_engine(&sa), sim_engine(&sb));
    let data = Rng::new(5).bytes(1 << 20);
    let ino = put_file(&a, b"f", &data, true);
    let root = a.getattr(ino).unwrap().content.unwrap();
    let target = b.create_file(ROOT, b"t", 0o644).unwrap().ino;
    let before = b.stats().unwrap();
    let refuse = |r: Received, size: u64, says: &str| match b.import_content(target, size, Some(root), r, None, "test")
    {
        Err(Error::Invalid(m)) => assert!(m.contains(says), "{m}"),
        other => panic!("expected a refusal naming {says:?}, got {other:?}"),
    };
    let mut bad = objects_of(&a, root);
    bad.chunks[0].1[0] ^= 1;
    refuse(bad, data.len() as u64, "does not hash to its id");
    let mut bad = objects_of(&a, root);
    bad.nodes[0].1[0] ^= 1;
    refuse(bad, data.len() as u64, "does not hash to its id");
    let mut missing = objects_of(&a, root);
    missing.chunks.pop();
    refuse(missing, data.len() as u64, "is missing");
    let mut no_root = objects_of(&a, root);
    no_root.nodes.clear();
    refuse(no_root, data.len() as u64, "is missing");
    refuse(objects_of(&a, root), 100, "holds more than 100 bytes");
    // Nothing was stored, and the engine still works.
    assert_eq!(b.stats().unwrap().chunks, before.chunks);
    assert!(b.poisoned().is_none());
    b.import_content(target, data.len() as u64, Some(root), objects_of(&a, root), None, "test").unwrap();
    assert_eq!(b.read(target, 0, data.len()).unwrap(), data);
}
