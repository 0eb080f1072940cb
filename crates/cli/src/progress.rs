//! A one-line progress display on a terminal; silent when stderr is not a terminal.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Shows `label: done / total (percent)` on stderr, redrawn at most a few times a second.
pub struct Progress {
    label: &'static str,
    total: Option<u64>,
    enabled: bool,
    last_draw: Option<Instant>,
}

impl Progress {
    /// A progress line for `total` bytes (unknown for a pipe).
    pub fn new(label: &'static str, total: Option<u64>) -> Progress {
        Progress { label, total, enabled: std::io::stderr().is_terminal(), last_draw: None }
    }

    /// Reports that `done` bytes were processed.
    pub fn update(&mut self, done: u64) {
        if !self.enabled || self.last_draw.is_some_and(|t| t.elapsed() < Duration::from_millis(200)) {
            return;
        }
        self.last_draw = Some(Instant::now());
        let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
        let line = match self.total {
            Some(total) if total > 0 => {
                format!(
                    "{}: {:.1} / {:.1} MiB ({:.0}%)",
                    self.label,
                    mib(done),
                    mib(total),
                    100.0 * done as f64 / total as f64
                )
            }
            _ => format!("{}: {:.1} MiB", self.label, mib(done)),
        };
        eprint!("\r\x1b[2K{line}");
        let _ = std::io::stderr().flush();
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last_draw.is_some() {
            eprint!("\r\x1b[2K");
        }
    }
}
