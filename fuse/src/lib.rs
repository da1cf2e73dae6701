//! cowfs-fuse: filesystem semantics over the engine ([`fs::CowFs`], testable without a
//! mount) and the thin fuser adapter ([`adapter::FuseAdapter`]), plus the one mapping from
//! engine errors to errno.

pub mod adapter;
pub mod error;
pub mod fs;
mod passthrough;
pub mod virt;

pub use error::{FsError, errno, to_errno};
