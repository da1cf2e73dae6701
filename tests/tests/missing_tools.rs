//! A test whose tool is missing fails in one line naming the command that installs it, never
//! with a backtrace: this test runs its own binary's probe with a PATH that holds nothing.

use std::process::Command;

/// Run only by the test below (ignored otherwise): needs fsx, which the empty PATH lacks.
#[test]
#[ignore = "run by a_missing_tool_fails_in_one_line_naming_its_installer"]
fn probe_needs_fsx() {
    cowfs_e2e::require_tool("fsx");
}

#[test]
fn a_missing_tool_fails_in_one_line_naming_its_installer() {
    let empty = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "probe_needs_fsx", "--ignored", "--nocapture", "--test-threads=1"])
        .env("PATH", empty.path())
        .env("RUST_BACKTRACE", "1")
        .output()
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "the probe passed without fsx: {stdout}{stderr}");
    assert!(stdout.contains("probe_needs_fsx ... FAILED"), "{stdout}");
    let said: Vec<&str> = stderr.lines().collect();
    assert_eq!(said.len(), 1, "not one line: {stderr}");
    assert!(said[0].contains("fsx is missing") && said[0].contains("cargo install --locked fsx"), "{stderr}");
    assert!(said[0].contains("scripts/test"), "{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "{stderr}");
}
