//! mount(8)'s helper for type `fuse.cowfs`: this binary, called as `mount.fuse.cowfs`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use cowfs_tools::mount::How;
use cowfs_tools::mount_options::MountOptions;
use cowfs_tools::mount_table::FSTYPE;

/// `mount.fuse.cowfs STORE MOUNTPOINT [-o OPTIONS] [-n] [-s] [-f] [-v] [-t TYPE]`: mounts as
/// `cowfs mount -o OPTIONS STORE MOUNTPOINT` does. Exits 1 on bad arguments and 32 when the
/// mount fails, as mount(8) expects of helpers.
pub(crate) fn run(args: Vec<OsString>) -> ExitCode {
    let fail = |code: u8, msg: String| {
        eprintln!("mount.fuse.cowfs: {msg}");
        ExitCode::from(code)
    };
    let (mut positional, mut options, mut fake, mut verbose) = (Vec::new(), Vec::new(), false, false);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("-o") | Some("-t") => {
                let Some(v) = args.next().and_then(|v| v.into_string().ok()) else {
                    return fail(1, format!("{} needs a value", a.to_string_lossy()));
                };
                if a == "-o" {
                    options.push(v);
                } else if v != FSTYPE {
                    return fail(1, format!("type {v}: this helper mounts {FSTYPE}"));
                }
            }
            Some(o) if o.starts_with("-o") => options.push(o[2..].to_string()),
            Some("-n") | Some("-s") => {}
            Some("-f") => fake = true,
            Some("-v") => verbose = true,
            Some(o) if o.starts_with('-') => return fail(1, format!("unknown argument {o}")),
            _ => positional.push(PathBuf::from(a)),
        }
    }
    let [storage, mnt] = &positional[..] else {
        return fail(1, "usage: mount.fuse.cowfs STORE MOUNTPOINT [-o OPTIONS]".into());
    };
    if fake {
        return ExitCode::SUCCESS;
    }
    let mounted = MountOptions::parse(&options).and_then(|options| {
        let how = How { foreground: false, debug: false, lowers: &[], relower: false, options: &options };
        cowfs_tools::mount::mount(storage, mnt, how)
    });
    match mounted {
        Ok(m) => {
            if verbose && let Some(m) = m {
                eprintln!("mount.fuse.cowfs: {} mounted on {} (daemon pid {})", m.storage, m.mountpoint, m.pid);
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(32, format!("error: {}", cowfs_tools::control::one_line(&e))),
    }
}
