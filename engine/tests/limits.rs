//! Limits that keep every record inside one frame: they refuse with an error and the store
//! keeps working (a record over the frame cap would stop the writer).

mod common;

use common::*;
use cowfs_engine::storage::SimStorage;
use cowfs_engine::{Error, XattrMode};

#[test]
fn xattrs_of_one_inode_share_a_budget() {
    let sim = SimStorage::new();
    let e = sim_engine(&sim);
    let ino = e.create_file(ROOT, b"f", 0o644).unwrap().ino;
    let value = vec![b'v'; 65536];
    let mut accepted = 0;
    for i in 0..40 {
        match e.set_xattr(ino, format!("user.k{i}").as_bytes(), &value, XattrMode::Any) {
            Ok(()) => accepted += 1,
            Err(Error::NoSpace) => break,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(accepted, 15, "1 MiB of names and values fit");
    // The store still takes writes, and everything survives a reopen.
    put_file(&e, b"g", b"after", true);
    drop(e);
    let e = sim_engine(&sim);
    assert_eq!(e.getattr(ino).unwrap().xattrs.len(), 15);
    assert!(matches!(
        e.set_xattr(ino, b"user.name-too-long-".repeat(20).as_slice(), b"x", XattrMode::Any),
        Err(Error::Invalid(_))
    ));
}
