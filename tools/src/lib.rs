//! Shared code of the cowfs command-line tools.

pub mod control;
pub mod gc;
pub mod history;
pub mod mount;
pub mod snapshot;

/// A clap error as one line (its first paragraph, without the `error: ` prefix), for the
/// binaries' one-line usage errors.
pub fn usage_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let first: Vec<&str> = text.lines().map(str::trim).take_while(|l| !l.is_empty()).collect();
    first.join(" ").trim_start_matches("error: ").to_string()
}
