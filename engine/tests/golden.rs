//! Golden byte vectors: every record kind, the frame, the segment header (and a compaction
//! output's, naming a merged run), a node, STORE and checkpoints (a root only, and one with
//! an entry of every kind) are pinned byte for byte. A silent format change fails here; a
//! deliberate one bumps FORMAT_VERSION, updates docs/FORMAT.md and these vectors together.
//! (`COWFS_GOLDEN_PRINT=1` prints the current encodings.)

use std::collections::BTreeMap;
use std::sync::Arc;

use cowfs_engine::testing::checkpoint::{self, LogPosition};
use cowfs_engine::testing::chunk::ChunkMeta;
use cowfs_engine::testing::chunk::{self, ChunkParams};
use cowfs_engine::testing::frame;
use cowfs_engine::testing::index::{Index, Location};
use cowfs_engine::testing::meta::StoreMeta;
use cowfs_engine::testing::record::{LowerOrigin, LowerSource, Record};
use cowfs_engine::testing::tree::{Child, Extent, ExtentKind, Node};
use cowfs_engine::{
    Action, ChunkId, DeviceId, FileKind, Hlc, Inode, InodeId, LineageId, LowerFile, LowerFileId, LowerIdentity, NodeId,
    SegmentId, SnapshotId, SnapshotMeta, Stamp, StoreId, Timestamp, Version, VersionId,
};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn check(name: &str, bytes: &[u8], want: &str) {
    if std::env::var("COWFS_GOLDEN_PRINT").is_ok() {
        println!("{name}: {}", hex(bytes));
        return;
    }
    assert_eq!(hex(bytes), want, "{name}: encoding changed");
}

fn ts(s: i64, n: u32) -> Timestamp {
    Timestamp { secs: s, nanos: n }
}

fn inode() -> Inode {
    let mut xattrs = BTreeMap::new();
    xattrs.insert(b"user.k".to_vec(), b"v".to_vec());
    Inode {
        ino: InodeId(42),
        kind: FileKind::Regular,
        mode: 0o4755,
        uid: 1000,
        gid: 100,
        nlink: 2,
        size: 12345,
        atime: ts(978307200, 1),
        mtime: ts(-5, 999_999_999),
        ctime: ts(1, 0),
        rdev: 0,
        lineage: Some(LineageId(7)),
        content: Some(NodeId([0xAA; 32])),
        symlink: vec![],
        xattrs,
        lower: None,
    }
}

fn records() -> Vec<(&'static str, Record, &'static str)> {
    vec![
        ("inode", Record::Inode(Arc::new(inode())), GOLDEN_INODE),
        ("inode_free", Record::InodeFree(InodeId(9)), "0900000000000000"),
        (
            "dirent_set",
            Record::DirentSet {
                parent: InodeId(1),
                name: b"docs".to_vec(),
                child: InodeId(42),
                kind: FileKind::Directory,
            },
            "010000000000000004000000646f63732a0000000000000002",
        ),
        (
            "stamp",
            Record::Stamp(Arc::new(Stamp {
                time: ts(1_700_000_000, 7),
                action: Action::Rename,
                ino: InodeId(42),
                detail: "d".into(),
            })),
            "00f153650000000007000000042a000000000000000100000064",
        ),
        (
            "prune",
            Record::Prune {
                lineage: LineageId(7),
                numbers: vec![1, 3],
                grave: Some((InodeId(1), b"g".to_vec())),
                counters: (9, 10, 11),
            },
            "07000000000000000200000001000000000000000300000000000000010100000000000000010000006709000000000000000a000000000000000b00000000000000",
        ),
        ("sync_mark", Record::SyncMark(4096), "0010000000000000"),
        (
            "dirent_remove",
            Record::DirentRemove { parent: InodeId(1), name: b"x".to_vec() },
            "01000000000000000100000078",
        ),
        (
            "version",
            Record::Version(Arc::new(Version {
                id: VersionId { device: DeviceId(0xD1), seq: 3 },
                lineage: LineageId(7),
                number: 2,
                ino: InodeId(42),
                mode: 0o640,
                uid: 1000,
                gid: 100,
                time: ts(1_700_000_000, 5),
                size: 100,
                content: None,
                hlc: Hlc(0x1_0000_0001),
                parents: vec![VersionId { device: DeviceId(0xD1), seq: 2 }],
            })),
            GOLDEN_VERSION,
        ),
        (
            "snapshot_create",
            Record::SnapshotCreate(Arc::new(SnapshotMeta {
                id: SnapshotId(1),
                name: "base".into(),
                description: "d".into(),
                time: ts(2, 3),
                hlc: Hlc(4),
            })),
            "0100000000000000040000006261736501000000640200000000000000030000000400000000000000",
        ),
        ("snapshot_delete", Record::SnapshotDelete(SnapshotId(1)), "0100000000000000"),
        (
            "grave",
            Record::Grave { parent: InodeId(1), name: b"f".to_vec(), lineage: LineageId(7) },
            "010000000000000001000000660700000000000000",
        ),
        ("lower_file", Record::LowerFile(Arc::new(lower_file())), GOLDEN_LOWER_FILE),
        ("inode_lower", Record::Inode(Arc::new(lower_dir())), GOLDEN_INODE_LOWER),
        (
            "absorbed",
            Record::Absorbed { file: LowerFileId(3), root: NodeId([0xAB; 32]) },
            "0300000000000000abababababababababababababababababababababababababababababababab",
        ),
        (
            "snapshot_forget",
            Record::SnapshotForget { snapshot: SnapshotId(2), lineage: LineageId(7) },
            "02000000000000000700000000000000",
        ),
    ]
}

/// Format version 3: an overlay directory not listed from its lower trees yet.
fn lower_dir() -> Inode {
    Inode {
        ino: InodeId(5),
        kind: FileKind::Directory,
        mode: 0o755,
        nlink: 2,
        size: 0,
        rdev: 0,
        lineage: None,
        content: None,
        xattrs: BTreeMap::new(),
        lower: Some(Arc::new(LowerOrigin {
            listed: false,
            sources: vec![LowerSource { layer: 0, path: Vec::new() }, LowerSource { layer: 1, path: b"a/b".to_vec() }],
        })),
        ..inode()
    }
}

/// Format version 3: a recorded lower file.
fn lower_file() -> LowerFile {
    LowerFile {
        id: LowerFileId(3),
        layer: 1,
        path: b"data/big.img".to_vec(),
        identity: LowerIdentity { dev: 0x803, ino: 77, size: 1 << 30, mtime: ts(1_700_000_000, 9), ctime: ts(-1, 8) },
    }
}

const GOLDEN_INODE: &str = "2a0000000000000001ed090000e80300006400000002000000393000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b0100000000000000000000000000000000000000070000000000000001aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa000000000100000006000000757365722e6b0100000076";
const GOLDEN_VERSION: &str = "d1000000000000000300000000000000070000000000000002000000000000002a00000000000000a0010000e80300006400000000f153650000000005000000640000000000000000010000000100000001000000d1000000000000000200000000000000";

#[test]
fn metadata_records_are_pinned() {
    for (name, rec, want) in records() {
        let bytes = rec.encode_meta();
        check(name, &bytes, want);
        assert_eq!(Record::decode(rec.kind(), &bytes).unwrap(), rec, "{name}: round trip");
    }
}

#[test]
fn chunk_node_frame_and_headers_are_pinned() {
    let c = chunk::encode_chunk(b"hello hello hello hello hello hello");
    check("chunk", &c.payload, GOLDEN_CHUNK);
    assert_eq!(
        Record::decode(1, &c.payload).unwrap(),
        Record::Chunk(ChunkMeta { id: c.meta.id, raw_len: 35, codec: c.meta.codec, stored_len: c.meta.stored_len })
    );
    let leaf = Node::Leaf(vec![
        Extent { len: 10, kind: ExtentKind::Chunk { id: ChunkId([1; 32]), offset: 5 } },
        Extent { len: 4096, kind: ExtentKind::Hole },
    ]);
    check("leaf", &leaf.encode(), GOLDEN_LEAF);
    let inner = Node::Inner { level: 1, children: vec![Child { id: NodeId([2; 32]), len: 4106 }] };
    check("inner", &inner.encode(), GOLDEN_INNER);
    let mut f = Vec::new();
    frame::encode_frame(&mut f, SegmentId(1), 64, 4, true, &[9, 0, 0, 0, 0, 0, 0, 0]);
    check("frame", &f, "080000000401000077cb2f87240ce8610900000000000000");
    check("segment_header", &frame::encode_segment_header(StoreId([0x5A; 16]), SegmentId(1)), GOLDEN_SEGMENT);
    let merged = frame::Replaced { first: SegmentId(0x1_0001), last: SegmentId(0x3_0000) };
    let output = frame::encode_output_header(StoreId([0x5A; 16]), SegmentId(0x3_0001), Some(merged));
    check("output_header", &output, GOLDEN_OUTPUT);
    let meta = StoreMeta {
        version: 2,
        store_id: StoreId([0x5A; 16]),
        device: DeviceId(0xD1),
        chunking: ChunkParams::DEFAULT,
        segment_size: 64 << 20,
        created: ts(1_700_000_000, 0),
    };
    check("store", &meta.encode(), GOLDEN_STORE);
    assert_eq!(StoreMeta::decode(&meta.encode()).unwrap(), meta);
    // Version 3 (a store opened with lower trees) differs in the version alone.
    let v3 = StoreMeta { version: 3, ..meta };
    check("store_v3", &v3.encode(), GOLDEN_STORE_V3);
    assert_eq!(StoreMeta::decode(&v3.encode()).unwrap(), v3);
    // Version 4 (a store after its first `overlay absorb`) too.
    let v4 = StoreMeta { version: 4, ..meta };
    check("store_v4", &v4.encode(), GOLDEN_STORE_V4);
    assert_eq!(StoreMeta::decode(&v4.encode()).unwrap(), v4);
    // Version 5 (a file taken out of a snapshot) too.
    let v5 = StoreMeta { version: 5, ..meta };
    check("store_v5", &v5.encode(), GOLDEN_STORE_V5);
    assert_eq!(StoreMeta::decode(&v5.encode()).unwrap(), v5);
    let v6 = StoreMeta { version: 6, ..meta };
    assert!(StoreMeta::decode(&v6.encode()).is_err(), "a version this build does not know");
    // A leaf of an overlay file: a lower range between two edits.
    let leaf = Node::Leaf(vec![
        Extent { len: 10, kind: ExtentKind::Chunk { id: ChunkId([1; 32]), offset: 5 } },
        Extent { len: 1 << 20, kind: ExtentKind::Lower { file: LowerFileId(3), offset: 4096 } },
    ]);
    check("leaf_lower", &leaf.encode(), GOLDEN_LEAF_LOWER);
    assert_eq!(Node::decode(&leaf.encode()).unwrap(), leaf);
}

/// A checkpoint of an overlay store is version 3 and ends with the lower files; without
/// them it stays version 2 (above).
#[test]
fn an_overlay_checkpoint_is_pinned() {
    let mut ix = Index::new(DeviceId(0xD1));
    let loc = Location { segment: SegmentId(1), offset: 64, len: 100 };
    ix.apply(&Record::LowerFile(Arc::new(lower_file())), loc).unwrap();
    let leaf = Node::Leaf(vec![Extent { len: 1 << 30, kind: ExtentKind::Lower { file: LowerFileId(3), offset: 0 } }]);
    let id = cowfs_engine::testing::tree::node_id(&leaf.encode());
    ix.apply(&Record::Node(id, Arc::new(leaf)), Location { offset: 164, ..loc }).unwrap();
    let unknown = Node::Leaf(vec![Extent { len: 1, kind: ExtentKind::Lower { file: LowerFileId(4), offset: 0 } }]);
    let bad = cowfs_engine::testing::tree::node_id(&unknown.encode());
    assert!(ix.apply(&Record::Node(bad, Arc::new(unknown)), Location { offset: 264, ..loc }).is_err());
    let bytes = checkpoint::encode(&ix, StoreId([0x5A; 16]), 3, LogPosition { segment: SegmentId(1), offset: 264 });
    check("checkpoint_overlay", &bytes, GOLDEN_CHECKPOINT_OVERLAY);
    let (back, _) = checkpoint::decode(&bytes, StoreId([0x5A; 16])).unwrap();
    assert!(back == ix);
    assert_eq!(back.lower_files().len(), 1);
}

/// A checkpoint of a store with an absorbed lower file is version 4 (whatever version the
/// store's header says: the index needs it) and ends with the absorbed section.
#[test]
fn an_absorbed_checkpoint_is_pinned() {
    let mut ix = Index::new(DeviceId(0xD1));
    let loc = Location { segment: SegmentId(1), offset: 64, len: 100 };
    ix.apply(&Record::LowerFile(Arc::new(lower_file())), loc).unwrap();
    let tree = Node::Leaf(vec![Extent { len: 1 << 30, kind: ExtentKind::Hole }]);
    let root = cowfs_engine::testing::tree::node_id(&tree.encode());
    let absorbed = Record::Absorbed { file: LowerFileId(3), root };
    assert!(ix.apply(&absorbed, Location { offset: 164, ..loc }).is_err(), "its tree is not stored");
    ix.apply(&Record::Node(root, Arc::new(tree)), Location { offset: 164, ..loc }).unwrap();
    let unknown = Record::Absorbed { file: LowerFileId(4), root };
    assert!(ix.apply(&unknown, Location { offset: 264, ..loc }).is_err(), "not a recorded lower file");
    ix.apply(&absorbed, Location { offset: 264, ..loc }).unwrap();
    let bytes = checkpoint::encode(&ix, StoreId([0x5A; 16]), 3, LogPosition { segment: SegmentId(1), offset: 364 });
    assert_eq!(bytes[8..12], 4u32.to_le_bytes());
    check("checkpoint_absorbed", &bytes, GOLDEN_CHECKPOINT_ABSORBED);
    let (back, _) = checkpoint::decode(&bytes, StoreId([0x5A; 16])).unwrap();
    assert!(back == ix);
    assert_eq!(back.absorbed().get(&LowerFileId(3)), Some(&root));
}

#[test]
fn checkpoint_is_pinned() {
    let mut ix = Index::new(DeviceId(0xD1));
    let loc = Location { segment: SegmentId(1), offset: 64, len: 100 };
    let mut root = inode();
    root.ino = InodeId::ROOT;
    root.kind = FileKind::Directory;
    root.lineage = None;
    root.content = None;
    root.xattrs.clear();
    ix.apply(&Record::Inode(Arc::new(root)), loc).unwrap();
    let bytes = checkpoint::encode(&ix, StoreId([0x5A; 16]), 2, LogPosition { segment: SegmentId(1), offset: 164 });
    check("checkpoint", &bytes, GOLDEN_CHECKPOINT);
    let (back, pos) = checkpoint::decode(&bytes, StoreId([0x5A; 16])).unwrap();
    assert!(back == ix);
    assert_eq!(pos, LogPosition { segment: SegmentId(1), offset: 164 });
}

/// A checkpoint holding an entry of every kind its body has: live segments, a chunk and a
/// node object, inodes (a directory, a file, a symlink), directory entries, a grave, record
/// places of inodes and entries, a lineage with a version, a snapshot with its namespace, and
/// every counter.
#[test]
fn a_checkpoint_with_every_entry_kind_is_pinned() {
    let mut ix = Index::new(DeviceId(0xD1));
    let mut at = 64;
    let mut apply = |ix: &mut Index, rec: Record| {
        let loc = Location { segment: SegmentId(0x1_0000), offset: at, len: 40 };
        at += 40;
        ix.apply(&rec, loc).unwrap_or_else(|e| panic!("{rec:?}: {e:?}"));
    };
    let mut root = inode();
    (root.ino, root.kind, root.lineage, root.content, root.nlink) = (InodeId::ROOT, FileKind::Directory, None, None, 2);
    root.xattrs.clear();
    apply(&mut ix, Record::Inode(Arc::new(root)));
    let chunk = ChunkId([0x11; 32]);
    apply(&mut ix, Record::Chunk(ChunkMeta { id: chunk, raw_len: 5, codec: 0, stored_len: 5 }));
    let leaf = Node::Leaf(vec![Extent { len: 5, kind: ExtentKind::Chunk { id: chunk, offset: 0 } }]);
    let node = cowfs_engine::testing::tree::node_id(&leaf.encode());
    apply(&mut ix, Record::Node(node, Arc::new(leaf)));
    let mut file = inode();
    (file.nlink, file.size, file.content, file.lineage) = (1, 5, Some(node), Some(LineageId(7)));
    apply(&mut ix, Record::Inode(Arc::new(file)));
    apply(
        &mut ix,
        Record::DirentSet { parent: InodeId::ROOT, name: b"f".to_vec(), child: InodeId(42), kind: FileKind::Regular },
    );
    let mut link = inode();
    (link.ino, link.kind, link.nlink, link.size, link.lineage, link.content) =
        (InodeId(43), FileKind::Symlink, 1, 1, None, None);
    link.symlink = b"f".to_vec();
    apply(&mut ix, Record::Inode(Arc::new(link)));
    apply(
        &mut ix,
        Record::DirentSet { parent: InodeId::ROOT, name: b"l".to_vec(), child: InodeId(43), kind: FileKind::Symlink },
    );
    apply(
        &mut ix,
        Record::Version(Arc::new(Version {
            id: VersionId { device: DeviceId(0xD1), seq: 1 },
            lineage: LineageId(7),
            number: 1,
            ino: InodeId(42),
            mode: 0o644,
            uid: 1000,
            gid: 100,
            time: ts(1_700_000_000, 5),
            size: 5,
            content: Some(node),
            hlc: Hlc(0x1_0000_0001),
            parents: vec![],
        })),
    );
    apply(&mut ix, Record::Grave { parent: InodeId::ROOT, name: b"gone".to_vec(), lineage: LineageId(5) });
    let snap =
        SnapshotMeta { id: SnapshotId(1), name: "base".into(), description: "d".into(), time: ts(2, 3), hlc: Hlc(4) };
    apply(&mut ix, Record::SnapshotCreate(Arc::new(snap)));
    assert!(
        !ix.live().is_empty()
            && ix.objects().len() == 2
            && ix.ns().inodes.len() == 3
            && !ix.ns().graves.is_empty()
            && !ix.meta_locs().is_empty()
            && ix.lineages().len() == 1
            && ix.snapshots().len() == 1,
        "an entry kind is missing: {ix:?}"
    );
    let pos = LogPosition { segment: SegmentId(0x1_0000), offset: at };
    let bytes = checkpoint::encode(&ix, StoreId([0x5A; 16]), 2, pos);
    check("checkpoint_full", &bytes, GOLDEN_CHECKPOINT_FULL);
    let (back, back_pos) = checkpoint::decode(&bytes, StoreId([0x5A; 16])).unwrap();
    assert!(back == ix, "round trip");
    assert_eq!(back_pos, pos);
}

const GOLDEN_CHECKPOINT_FULL: &str = "434f574653434b50020000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0000010000000000d001000000000000d1000000000000002c00000000000000080000000000000002000000000000000100000000000000010000000100000001000000000001000000000090010000000000000200000011111111111111111111111111111111111111111111111111111111111111110000000100000000006800000000000000280000000500000001000000aed0f82f32fd87d294d37e2facc6f24527750f43afade1d12cf07fd4c818066a0100000100000000009000000000000000280000002800000002000000030000005e000000010000000000000002ed090000e80300006400000002000000393000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b010000000000000000000000000000000000000000000000000000000000000000000000008d0000002a0000000000000001ed090000e80300006400000001000000050000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b0100000000000000000000000000000000000000070000000000000001aed0f82f32fd87d294d37e2facc6f24527750f43afade1d12cf07fd4c818066a000000000100000006000000757365722e6b01000000766e0000002b0000000000000003ed090000e80300006400000001000000010000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b010000000000000000000000000000000000000000000000000000000001000000660100000006000000757365722e6b01000000760100000001000000000000000200000001000000662a0000000000000001010000006c2b000000000000000301000000010000000000000004000000676f6e650500000000000000050000000001000000000000000000010000000000400000000000000028000000002a000000000000000000010000000000b80000000000000028000000002b00000000000000000001000000000008010000000000002800000001010000000000000001000000660000010000000000e00000000000000028000000010100000000000000010000006c00000100000000003001000000000000280000000100000007000000000000000100000075000000d1000000000000000100000000000000070000000000000001000000000000002a00000000000000a4010000e80300006400000000f153650000000005000000050000000000000001aed0f82f32fd87d294d37e2facc6f24527750f43afade1d12cf07fd4c818066a01000000010000000000000001000000290000000100000000000000040000006261736501000000640200000000000000030000000400000000000000030000005e000000010000000000000002ed090000e80300006400000002000000393000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b010000000000000000000000000000000000000000000000000000000000000000000000008d0000002a0000000000000001ed090000e80300006400000001000000050000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b0100000000000000000000000000000000000000070000000000000001aed0f82f32fd87d294d37e2facc6f24527750f43afade1d12cf07fd4c818066a000000000100000006000000757365722e6b01000000766e0000002b0000000000000003ed090000e80300006400000001000000010000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b010000000000000000000000000000000000000000000000000000000001000000660100000006000000757365722e6b01000000760100000001000000000000000200000001000000662a0000000000000001010000006c2b000000000000000301000000010000000000000004000000676f6e65050000000000000065f833f5";

const GOLDEN_CHUNK: &str =
    "411ccac2b7fcb012547442086d3e0d1aab1730ae2ed02d07f5540f4bc531694c23000000016f68656c6c6f20060004602068656c6c6f";
const GOLDEN_LEAF: &str = "0002000000000a00000000000000010101010101010101010101010101010101010101010101010101010101010105000000010010000000000000";
const GOLDEN_INNER: &str = "010100000002020202020202020202020202020202020202020202020202020202020202020a10000000000000";
const GOLDEN_SEGMENT: &str = "434f57465353454702000000400000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a010000000000000000000000000000000000000000000000000000000846636c";
const GOLDEN_OUTPUT: &str = "434f57465353454702000000400000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a01000300000000000000030000000000010001000000000000000000f1630cf1";
const GOLDEN_STORE: &str = "434f574653544f52020000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5ad100000000000000004000000000010000000400000000040000000000f153650000000000000000171f24a5";
const GOLDEN_CHECKPOINT: &str = "434f574653434b50020000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a0100000000000000a400000000000000d10000000000000002000000000000000100000000000000010000000000000000000000000000000000000000000000010000000100000000000000640000000000000000000000010000005e000000010000000000000002ed090000e80300006400000002000000393000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b01000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001000000000100000000000000010000000000000040000000000000006400000000000000000000000db5e580";
const GOLDEN_CHECKPOINT_ABSORBED: &str = "434f574653434b50040000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a01000000000000006c01000000000000d100000000000000010000000000000001000000000000000100000000000000000000000000000000000000000000000100000001000000000000002c0100000000000001000000afd047b31e1d334edfa383ac3c13371409091f22444ff61327e0da22f999629f010100000000000000a400000000000000640000006400000001000000000000000000000000000000000000000000000000000000010000004c0000000300000000000000010000000c000000646174612f6269672e696d6703080000000000004d00000000000000000000400000000000f153650000000009000000ffffffffffffffff08000000010000000300000000000000afd047b31e1d334edfa383ac3c13371409091f22444ff61327e0da22f999629f676c5e87";
const GOLDEN_LOWER_FILE: &str = "0300000000000000010000000c000000646174612f6269672e696d6703080000000000004d00000000000000000000400000000000f153650000000009000000ffffffffffffffff08000000";
const GOLDEN_STORE_V5: &str = "434f574653544f52050000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5ad100000000000000004000000000010000000400000000040000000000f1536500000000000000006714eae8";
const GOLDEN_STORE_V4: &str = "434f574653544f52040000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5ad100000000000000004000000000010000000400000000040000000000f1536500000000000000003cb0519d";
const GOLDEN_STORE_V3: &str = "434f574653544f52030000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5ad100000000000000004000000000010000000400000000040000000000f1536500000000000000004cbb9fd0";
const GOLDEN_LEAF_LOWER: &str = "0002000000000a0000000000000001010101010101010101010101010101010101010101010101010101010101010500000002000010000000000003000000000000000010000000000000";
const GOLDEN_CHECKPOINT_OVERLAY: &str = "434f574653434b50030000005a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a01000000000000000801000000000000d10000000000000001000000000000000100000000000000010000000000000000000000000000000000000000000000010000000100000000000000c8000000000000000100000027c5a603c9f7719af7c6acf6fb7cfb15b14a5d8c209cfecd1c174b770a505c33010100000000000000a400000000000000640000006400000000000000000000000000000000000000000000000000000000000000010000004c0000000300000000000000010000000c000000646174612f6269672e696d6703080000000000004d00000000000000000000400000000000f153650000000009000000ffffffffffffffff080000009aaa15ab";

const GOLDEN_INODE_LOWER: &str = "050000000000000002ed010000e80300006400000002000000000000000000000080c84f3a0000000001000000fbffffffffffffffffc99a3b01000000000000000000000000000000000000000000000000000000000000000000000000000200000000000000000000000100000003000000612f62";
