//! fsx (crates.io `fsx`, the Rust port of the File System eXerciser) on a real mount: four
//! processes at once, each 10,000 random operations on its own file (`COWFS_SOAK=1`:
//! 100,000), checking every read against its own model: pread/pwrite, mmap reads and writes
//! with msync, truncate, fsync, fdatasync, fallocate, hole punching, sendfile, fadvise,
//! copy_file_range, close and reopen. Then the files survive an unmount (byte for byte) and
//! fsck finds nothing. Needs the `fsx` binary (`scripts/test` installs it).

use std::fs;
use std::process::Command;

use cowfs_e2e::{Mounted, command, run};

// `min = 1`: fsx 0.3.2 draws sizes from `min..=max` and calls posix_fallocate even with a
// size of 0, which every file system refuses (EINVAL: ext4 too), and takes that as "does not
// support posix_fallocate" (seed 9102 of a soak run, op 94,291). Its other operations skip a
// size of 0, so nothing is lost.
const CONFIG: &str = r#"
flen = 1048576
[opsize]
min = 1
max = 131072
[weights]
close_open = 2
read = 10
write = 10
mapread = 5
mapwrite = 5
invalidate = 1
truncate = 5
fsync = 2
fdatasync = 2
posix_fallocate = 2
punch_hole = 2
sendfile = 2
posix_fadvise = 1
copy_file_range = 3
"#;

#[test]
fn fsx_four_processes_on_the_mount() {
    cowfs_e2e::require_tool("fsx");
    let ops = if std::env::var("COWFS_SOAK").is_ok() { 100_000 } else { 10_000 };
    let seed0: u64 = std::env::var("COWFS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut m = Mounted::new();
    let conf = m.dir.path().join("fsx.toml");
    fs::write(&conf, CONFIG).unwrap();
    let artifacts = m.dir.path().join("fsx-artifacts");
    fs::create_dir(&artifacts).unwrap();
    let children: Vec<(u64, std::process::Child)> = (0..4)
        .map(|k| {
            let seed = seed0 + k;
            let child = Command::new("fsx")
                .args(["-N", &ops.to_string(), "-S", &seed.to_string(), "-f"])
                .arg(&conf)
                .arg("-P")
                .arg(&artifacts)
                .arg(m.path(&format!("fsx{k}")))
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("spawn fsx");
            (seed, child)
        })
        .collect();
    for (seed, child) in children {
        let out = child.wait_with_output().unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(
            out.status.success() && text.contains("All operations completed A-OK!"),
            "fsx -S {seed} failed (replay with COWFS_SEED={seed}):\n{}",
            text.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    println!("fsx: 4 x {ops} operations passed (seeds {seed0}..{})", seed0 + 3);
    let before: Vec<Vec<u8>> = (0..4).map(|k| fs::read(m.path(&format!("fsx{k}"))).unwrap()).collect();
    m.umount();
    let (code, out, err) = run(command("cowfs-fsck").arg(&m.store).arg("--verify-data"));
    assert_eq!(code, 0, "fsck after fsx: {out}{err}");
    m.mount();
    for (k, b) in before.iter().enumerate() {
        assert_eq!(&fs::read(m.path(&format!("fsx{k}"))).unwrap(), b, "fsx{k} after remount");
    }
}
