//! Shared code of the cowfs command-line tools.

pub mod mount;
