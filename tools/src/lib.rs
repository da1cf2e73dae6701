//! Shared code of the cowfs command-line tools.

pub mod control;
pub mod history;
pub mod mount;
pub mod snapshot;
