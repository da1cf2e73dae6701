//! Helpers for the end-to-end tests in `tests/`, which drive the built binaries.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

/// Path of a binary of the `cowfs-tools` package, built (once per test process) with the
/// same cargo, target directory and profile as the tests, so `cargo test -p cowfs-e2e` alone works.
pub fn bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        // Build with the profile the tests were built with (CI tests in release).
        let release = !cfg!(debug_assertions);
        let mut args = vec!["build", "--quiet", "-p", "cowfs-tools", "--bins"];
        if release {
            args.push("--release");
        }
        let status = Command::new(cargo)
            .args(&args)
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building the cowfs binaries failed");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| root.join("target"));
        target.join(if release { "release" } else { "debug" })
    });
    dir.join(name)
}

/// A `Command` for a cowfs binary.
pub fn command(name: &str) -> Command {
    Command::new(bin(name))
}
