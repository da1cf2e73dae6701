//! The log on disk: the store header (`STORE` and its backup), segment files and recovery,
//! checkpoints, and the reserve file that keeps room for them.

pub mod checkpoint;
pub mod meta;
pub mod recovery;
pub mod reserve;
pub mod store;
