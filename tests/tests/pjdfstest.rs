//! The POSIX conformance suite pjdfstest (crates.io `pjdfstest`, the Rust port) against a real
//! mount. Needs the `pjdfstest` binary and its dummy users `tests` and `nobody` (`scripts/test`
//! installs both); fails, does not skip, without them. Every test must pass; the skipped
//! ones need features this suite cannot use here (remounting read-only, BSD file flags, ...).

use std::process::Command;

use cowfs_e2e::{Mounted, run};

#[test]
fn pjdfstest_passes_on_the_mount() {
    cowfs_e2e::require_tool("pjdfstest");
    cowfs_e2e::require_user("tests");
    let m = Mounted::new();
    let conf = m.dir.path().join("pjdfstest.toml");
    std::fs::write(
        &conf,
        "[features]\nposix_fallocate = {}\n[settings]\nnaptime = 0.001\nallow_remount = false\n\
         [dummy_auth]\nentries = [[\"nobody\", \"nogroup\"], [\"tests\", \"tests\"]]\n",
    )
    .unwrap();
    let dir = m.path("pjd");
    std::fs::create_dir(&dir).unwrap();
    let (code, out, err) = run(Command::new("pjdfstest").arg("-c").arg(&conf).arg("-p").arg(&dir).current_dir(&dir));
    let passed = out.lines().filter(|l| l.trim_end().ends_with(" ok")).count();
    let skipped = out.lines().filter(|l| l.trim_end().ends_with(" skipped")).count();
    let failed: Vec<&str> = out.lines().filter(|l| l.trim_end().ends_with("FAILED")).collect();
    println!("pjdfstest: {passed} passed, {} failed, {skipped} skipped", failed.len());
    assert!(failed.is_empty() && code == 0, "pjdfstest failures:\n{}\n{err}", failed.join("\n"));
    assert!(passed > 300, "pjdfstest ran only {passed} tests:\n{out}\n{err}");
}
