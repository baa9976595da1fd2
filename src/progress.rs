//! Progress of long commands (`verify`, `replay`, `repartition`): a bar on a terminal, and a
//! plain line on stderr every few seconds otherwise (Kubernetes jobs and CI logs have no
//! terminal, and a silent hour-long job looks hung).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a line is written when stderr is not a terminal.
const EVERY: Duration = Duration::from_secs(5);

/// One command's progress towards `len` units (partitions, bytes, ...).
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    len: u64,
    pos: u64,
    msg: String,
    started: Instant,
    last_line: Instant,
}

impl Progress {
    /// `template` is indicatif's, for the terminal; `what` names the units in plain lines.
    pub fn new(len: u64, template: &str, what: &'static str) -> Progress {
        Progress::with_terminal(len, template, what, std::io::stderr().is_terminal())
    }

    fn with_terminal(len: u64, template: &str, what: &'static str, terminal: bool) -> Progress {
        let bar = terminal.then(|| {
            let b = indicatif::ProgressBar::new(len);
            if let Ok(style) = indicatif::ProgressStyle::with_template(template) {
                b.set_style(style);
            }
            b
        });
        let now = Instant::now();
        Progress { bar, what, len, pos: 0, msg: String::new(), started: now, last_line: now }
    }

    pub fn set_message(&mut self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        } else {
            self.msg = msg;
            self.maybe_line();
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.pos += n;
        if let Some(b) = &self.bar {
            b.inc(n);
        } else {
            self.maybe_line();
        }
    }

    /// Runs `f` (which prints) without the bar drawn over its output.
    pub fn suspend<R>(&self, f: impl FnOnce() -> R) -> R {
        match &self.bar {
            Some(b) => b.suspend(f),
            None => f(),
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }

    /// The plain line, when one is due.
    fn maybe_line(&mut self) {
        if let Some(line) = self.line_due(Instant::now()) {
            tracing::info!("{line}");
        }
    }

    fn line_due(&mut self, now: Instant) -> Option<String> {
        if now.duration_since(self.last_line) < EVERY {
            return None;
        }
        self.last_line = now;
        let secs = now.duration_since(self.started).as_secs();
        Some(format!("progress: {}/{} {} after {secs} s; {}", self.pos, self.len, self.what, self.msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_terminal_a_line_every_few_seconds() {
        let mut p = Progress::with_terminal(10, "{pos}", "partitions", false);
        let t0 = p.started;
        p.pos = 3;
        p.msg = "partition 3".into();
        assert_eq!(p.line_due(t0 + Duration::from_secs(1)), None, "not yet");
        assert_eq!(p.line_due(t0 + Duration::from_secs(6)).as_deref(), Some("progress: 3/10 partitions after 6 s; partition 3"));
        assert_eq!(p.line_due(t0 + Duration::from_secs(7)), None, "one line per interval");
        assert!(p.line_due(t0 + Duration::from_secs(12)).is_some());
    }
}
