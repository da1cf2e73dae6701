//! Shared code of the cowfs command-line tools.

pub mod history;
pub mod mount;
