//! Tree diff and restore through an engine on the storage simulator.

use std::sync::Arc;

use super::*;
use crate::storage::{SimStorage, Storage};
use crate::{Options, XattrMode};

fn engine() -> Engine {
    Engine::open(Arc::new(SimStorage::new()) as Arc<dyn Storage>, Options::tiny()).unwrap()
}

fn write(e: &Engine, dir: InodeId, name: &[u8], data: &[u8]) -> InodeId {
    let ino = match e.lookup(dir, name) {
        Ok(i) => i.ino,
        Err(_) => e.create_file(dir, name, 0o644).unwrap().ino,
    };
    let mut w = e.open_file(ino).unwrap();
    w.truncate(0).unwrap();
    w.write(0, data).unwrap();
    w.commit(true).unwrap();
    ino
}

fn content(e: &Engine, dir: InodeId, name: &[u8]) -> Vec<u8> {
    let i = e.lookup(dir, name).unwrap();
    e.read_content(i.content, i.size, 0, i.size as usize).unwrap()
}

/// A tree with a directory, a hard link, a symlink, an xattr and a name that is not UTF-8.
fn populate(e: &Engine) -> InodeId {
    let docs = e.mkdir(InodeId::ROOT, b"docs", 0o755, 0, 0).unwrap().ino;
    let a = write(e, docs, b"a.txt", b"first a");
    e.link(a, InodeId::ROOT, b"a-link").unwrap();
    write(e, docs, b"caf\xe9", b"latin-1 name");
    let odd = e.mkdir(docs, b"d\xff", 0o700, 0, 0).unwrap().ino;
    write(e, odd, b"inside", b"below a name that is not UTF-8");
    e.set_xattr(a, b"user.tag", b"one", XattrMode::Any).unwrap();
    let attrs = crate::NewInode {
        kind: FileKind::Symlink,
        mode: 0o777,
        uid: 0,
        gid: 0,
        rdev: 0,
        symlink: b"docs/a.txt".to_vec(),
        lineage: None,
    };
    e.create(InodeId::ROOT, b"sym", attrs).unwrap();
    docs
}

#[test]
fn diff_names_added_removed_modified_and_renamed() {
    let e = engine();
    let docs = populate(&e);
    let before = e.namespace();
    write(&e, docs, b"a.txt", b"second a");
    write(&e, InodeId::ROOT, b"new", b"n");
    e.unlink(InodeId::ROOT, b"sym", false).unwrap();
    e.rename(docs, b"caf\xe9", InodeId::ROOT, b"moved", false, false, false).unwrap();
    let d = diff(&before, &e.namespace());
    assert_eq!(d.added, ["/new"]);
    assert_eq!(d.removed, ["/sym"]);
    // Both names of the hard-linked file.
    assert_eq!(d.modified, ["/a-link", "/docs/a.txt"]);
    assert_eq!(d.renamed, [("/docs/caf\u{fffd}".to_string(), "/moved".to_string())]);
    assert_eq!(diff(&before, &before), Diff::default());
}

#[test]
fn restore_brings_back_a_tree_with_its_links_and_odd_names() {
    let e = engine();
    let docs = populate(&e);
    let before = e.namespace();
    // Change everything: content, xattr, a removal, a replacement of a directory by a file,
    // the hard link broken, and a new file.
    write(&e, docs, b"a.txt", b"changed");
    e.remove_xattr(e.lookup(docs, b"a.txt").unwrap().ino, b"user.tag").unwrap();
    e.unlink(docs, b"caf\xe9", false).unwrap();
    let odd = e.lookup(docs, b"d\xff").unwrap().ino;
    e.unlink(odd, b"inside", false).unwrap();
    e.rmdir(docs, b"d\xff", false).unwrap();
    e.unlink(InodeId::ROOT, b"a-link", false).unwrap();
    write(&e, InodeId::ROOT, b"a-link", b"not a link");
    write(&e, InodeId::ROOT, b"new", b"n");

    let dry = restore(&e, &before, "", false, true, "test", &mut |_, _| {}).unwrap();
    // Restored: the hard-linked file (once), café and inside; removed: /new.
    assert_eq!((dry.restored, dry.removed, dry.touched.len()), (3, 1, 0));
    assert_eq!(content(&e, docs, b"a.txt"), b"changed", "a dry run changes nothing");

    let r = restore(&e, &before, "", false, false, "test", &mut |_, _| {}).unwrap();
    assert_eq!((r.restored, r.removed), (dry.restored, dry.removed), "{r:?}");
    assert_eq!(diff(&before, &e.namespace()), Diff::default());
    let a = e.lookup(docs, b"a.txt").unwrap();
    assert_eq!(content(&e, docs, b"a.txt"), b"first a");
    assert_eq!(e.lookup(InodeId::ROOT, b"a-link").unwrap().ino, a.ino, "the hard link is one inode again");
    assert_eq!(a.xattrs.get(b"user.tag".as_slice()).map(|v| v.as_slice()), Some(b"one".as_slice()));
    assert_eq!(content(&e, docs, b"caf\xe9"), b"latin-1 name");
    let odd = e.lookup(docs, b"d\xff").unwrap().ino;
    assert_eq!(content(&e, odd, b"inside"), b"below a name that is not UTF-8");
    assert!(e.lookup(InodeId::ROOT, b"new").is_err());
    // The file at the first name (/a-link) now stands for the hard-linked one: the restored
    // content is a new version of it, after its own.
    assert_eq!(e.versions(a.lineage.unwrap()).len(), 2);
}

#[test]
fn restore_of_a_subtree_recreates_it_and_refuses_a_file() {
    let e = engine();
    let docs = populate(&e);
    let before = e.namespace();
    e.unlink(docs, b"a.txt", false).unwrap();
    e.unlink(docs, b"caf\xe9", false).unwrap();
    let odd = e.lookup(docs, b"d\xff").unwrap().ino;
    e.unlink(odd, b"inside", false).unwrap();
    e.rmdir(docs, b"d\xff", false).unwrap();
    e.rmdir(InodeId::ROOT, b"docs", false).unwrap();
    write(&e, InodeId::ROOT, b"docs", b"a file where the directory was");
    let r = restore(&e, &before, "/docs", false, false, "test", &mut |_, _| {}).unwrap();
    assert_eq!(r.touched[0], "/docs");
    let docs = e.lookup(InodeId::ROOT, b"docs").unwrap();
    assert_eq!(docs.kind, FileKind::Directory);
    assert_eq!(content(&e, docs.ino, b"a.txt"), b"first a");
    assert!(matches!(restore(&e, &before, "/sym", false, false, "t", &mut |_, _| {}), Err(Error::NotDir(_))));
    assert!(matches!(
        restore(&e, &before, "/nope", false, false, "t", &mut |_, _| {}),
        Err(Error::NotFound(Missing::Path(_)))
    ));
}
