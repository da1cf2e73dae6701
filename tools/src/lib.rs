//! Shared code of the cowfs command-line tools.

pub mod background;
pub mod control;
pub mod gc;
pub mod history;
pub mod human;
pub mod mount;
pub mod mount_options;
pub mod mount_table;
pub mod paths;
pub mod progress;
pub mod protocol;
pub mod snapshot;
pub mod sync;

/// Every segment of an open store keeps a descriptor open (one per 64 MiB segment): allows
/// this process as many as the system lets it have, the hard limit raised to `fs.nr_open`
/// where that is allowed (root), else the hard limit. Returns the limit now in force.
pub fn raise_fd_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    let most = std::fs::read_to_string("/proc/sys/fs/nr_open").ok().and_then(|s| s.trim().parse().ok());
    // Raising the hard limit needs CAP_SYS_RESOURCE: refused without it, the hard limit it is.
    let raised = most.is_some_and(|n| n > hard && setrlimit(Resource::RLIMIT_NOFILE, n, n).is_ok());
    if !raised {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).ok()?;
    }
    getrlimit(Resource::RLIMIT_NOFILE).ok().map(|(soft, _)| soft)
}

/// A clap error as one line (its first paragraph, without the `error: ` prefix), for the
/// binaries' one-line usage errors.
pub fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    first.join(" ").trim_start_matches("error: ").to_string()
}
