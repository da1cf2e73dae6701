//! Progress of a long command on the terminal: a bar on stderr when it is one, nothing when
//! piped or redirected.

use std::io::IsTerminal as _;

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of bytes or items done out of a total, labelled `what`; cleared when dropped.
#[derive(Debug)]
pub struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar of bytes, on stderr if it is a terminal.
    pub fn bytes(what: &str) -> Progress {
        Self::with(&format!("{{bar:40}} {{binary_bytes}}/{{binary_total_bytes}} {what}"))
    }

    /// A bar of items (files, entries), on stderr if it is a terminal.
    pub fn items(what: &str) -> Progress {
        Self::with(&format!("{{bar:40}} {{pos}}/{{len}} {what}"))
    }

    fn with(template: &str) -> Progress {
        Progress(std::io::stderr().is_terminal().then(|| {
            let style = ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar());
            ProgressBar::new(0).with_style(style)
        }))
    }

    /// `done` of `total`.
    pub fn set(&self, done: u64, total: u64) {
        if let Some(b) = &self.0 {
            b.set_length(total);
            b.set_position(done);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(b) = &self.0 {
            b.finish_and_clear();
        }
    }
}
