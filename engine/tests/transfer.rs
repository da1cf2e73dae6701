//! Content copied between stores (what sync does with it): a tree's objects out of one store,
//! into another as a file's content; received objects that are damaged, missing or too big
//! are refused before anything is written, and the store keeps working.

mod common;

use common::*;
use cowfs_engine::storage::SimStorage;
use cowfs_engine::{Engine, Error, ImportedVersion, NodeId, Received, Timestamp};

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

/// Everything the versions' trees need, from `from`.
fn objects_of_all(from: &Engine, roots: &[NodeId]) -> Received {
    let mut all = Received::default();
    for r in roots {
        let one = objects_of(from, *r);
        all.nodes.extend(one.nodes);
        all.chunks.extend(one.chunks);
    }
    all
}

#[test]
fn versions_of_another_store_join_a_files_history_with_their_ids_and_survive_a_reopen() {
    let (sa, sb) = (SimStorage::new(), SimStorage::new());
    let (a, b) = (sim_engine(&sa), sim_engine(&sb));
    let mut rng = Rng::new(9);
    let contents: Vec<Vec<u8>> = (0..3).map(|_| rng.bytes(200_000)).collect();
    let ino_a = put_file(&a, b"f", &contents[0], false);
    for c in &contents[1..] {
        put_file(&a, b"f", c, false);
    }
    let lineage_a = a.getattr(ino_a).unwrap().lineage.unwrap();
    let theirs = a.versions(lineage_a);
    assert_eq!(theirs.len(), 3);
    let imported: Vec<ImportedVersion> = theirs
        .iter()
        .map(|v| ImportedVersion {
            id: v.id,
            time: v.time,
            size: v.size,
            content: v.content,
            hlc: v.hlc,
            parents: v.parents.clone(),
        })
        .collect();
    let roots: Vec<NodeId> = theirs.iter().filter_map(|v| v.content).collect();
    // b's file has a version of its own first.
    let ino = put_file(&b, b"g", b"b's own start", false);
    let mtime = Timestamp { secs: 1_700_000_000, nanos: 5 };
    let (size, root) = (theirs[2].size, theirs[2].content);
    let last = b.import_versions(ino, imported.clone(), size, root, objects_of_all(&a, &roots), mtime, "test").unwrap();
    assert_eq!(last.unwrap().id, theirs[2].id);
    // Again: nothing new (every version held already).
    assert!(
        b.import_versions(ino, imported.clone(), size, root, Received::default(), mtime, "test").unwrap().is_none()
    );
    // b's own next version keeps b's numbering and descends from the newest imported one.
    let own_before = b.versions(b.getattr(ino).unwrap().lineage.unwrap())[0].id;
    put_file(&b, b"g", b"b edits after the import", true);
    let check = |b: &Engine| {
        let i = b.getattr(ino).unwrap();
        let vs = b.versions(i.lineage.unwrap());
        assert_eq!(vs.len(), 5, "{vs:?}");
        for ((got, want), data) in vs[1..4].iter().zip(&theirs).zip(&contents) {
            assert_eq!(
                (got.id, got.hlc, &got.parents, got.content, got.time),
                (want.id, want.hlc, &want.parents, want.content, want.time)
            );
            assert_eq!(&b.read_content(got.content, got.size, 0, got.size as usize).unwrap(), data);
        }
        let own = &vs[4];
        assert_eq!((own.id.device, own.id.seq), (own_before.device, own_before.seq + 1));
        assert_eq!(own.parents, vec![theirs[2].id]);
        assert!(own.hlc > theirs[2].hlc);
        assert_eq!(b.read(ino, 0, 100).unwrap(), b"b edits after the import");
    };
    check(&b);
    drop(b);
    let b = sim_engine(&sb);
    check(&b);
    assert!(assert_fsck_clean(&sb, "after the import"));
    // A version with this store's own id is refused, and nothing changes.
    let mut mine = imported[0].clone();
    mine.id = own_before;
    match b.import_versions(ino, vec![mine], size, root, Received::default(), mtime, "test") {
        Err(Error::Invalid(m)) => assert!(m.contains("this store's own"), "{m}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    check(&b);
}
