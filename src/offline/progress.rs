//! Progress of the long offline commands (`simulate`, and the history
//! reading behind `train`, `score` and `backtest`): a bar (indicatif) for a
//! person at a terminal, a plain line every 10 s otherwise (logs, CI, a
//! pipe), so redirected output never holds a bar's control codes.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(10);
/// How often a bar's message is rebuilt (the position is set every time).
const MESSAGE_EVERY: Duration = Duration::from_millis(250);

/// What is counted: bytes print as sizes, other units as counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Events,
    Days,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Events => "events",
            Unit::Days => "days",
        }
    }
}

/// One phase of work, shown while it runs.
pub struct Progress {
    what: &'static str,
    unit: Unit,
    total: Option<u64>,
    bar: Option<ProgressBar>,
    started: Instant,
    last: Instant,
    /// Plain lines written (not a terminal).
    lines: u64,
}

impl Progress {
    /// Progress of `what` (e.g. "reading"), counted in `unit` out of `total`
    /// when known; a bar only when stderr is a terminal.
    pub fn new(what: &'static str, unit: Unit, total: Option<u64>) -> Self {
        Self::with_terminal(what, unit, total, std::io::stderr().is_terminal())
    }

    fn with_terminal(what: &'static str, unit: Unit, total: Option<u64>, terminal: bool) -> Self {
        let bar = terminal.then(|| {
            let (bar, template) = match (total, unit) {
                (Some(n), Unit::Bytes) => (
                    ProgressBar::new(n),
                    "{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} ({elapsed}, {eta} left)",
                ),
                (Some(n), _) => (
                    ProgressBar::new(n),
                    "{prefix} [{bar:30}] {human_pos}/{human_len} {msg} ({elapsed}, {eta} left)",
                ),
                (None, Unit::Bytes) => (
                    ProgressBar::new_spinner(),
                    "{prefix} {spinner} {bytes} {msg} ({elapsed})",
                ),
                (None, _) => (
                    ProgressBar::new_spinner(),
                    "{prefix} {spinner} {human_pos} {msg} ({elapsed})",
                ),
            };
            bar.set_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            bar.set_style(
                ProgressStyle::with_template(template)
                    .expect("a valid template")
                    .progress_chars("=> "),
            );
            bar.set_prefix(what);
            bar
        });
        let now = Instant::now();
        Self {
            what,
            unit,
            total,
            bar,
            started: now,
            last: now,
            lines: 0,
        }
    }

    /// Whether a bar is drawn (stderr is a terminal).
    pub fn is_bar(&self) -> bool {
        self.bar.is_some()
    }

    /// The work done so far; `detail` (built only when shown) says more,
    /// e.g. the date reached.
    pub fn set(&mut self, pos: u64, detail: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(pos);
                if self.last.elapsed() >= MESSAGE_EVERY {
                    self.last = Instant::now();
                    bar.set_message(detail());
                }
            }
            None => {
                if self.last.elapsed() >= PLAIN_EVERY {
                    self.last = Instant::now();
                    self.lines += 1;
                    eprintln!("{}", self.line(pos, &detail()));
                }
            }
        }
    }

    /// The plain line for `pos`.
    fn line(&self, pos: u64, detail: &str) -> String {
        let of = self.total.map(|t| format!(" of {t}")).unwrap_or_default();
        let detail = if detail.is_empty() {
            String::new()
        } else {
            format!(", {detail}")
        };
        format!(
            "  {}: {pos}{of} {}{detail} ({:.0} s)",
            self.what,
            self.unit.name(),
            self.started.elapsed().as_secs_f64()
        )
    }

    /// Ends the phase; a bar is cleared, leaving the commands' summaries.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_when_not_a_terminal() {
        let mut p = Progress::with_terminal("reading", Unit::Events, Some(10), false);
        assert!(!p.is_bar());
        p.set(3, || "up to 2026-03-01".into());
        assert_eq!(p.lines, 0, "no line before 10 s");
        p.last -= PLAIN_EVERY;
        p.set(4, || "up to 2026-03-02".into());
        assert_eq!(p.lines, 1);
        let line = p.line(4, "up to 2026-03-02");
        assert!(line.starts_with("  reading: 4 of 10 events, up to 2026-03-02 ("));
        assert!(!line.contains('\x1b') && !line.contains('\r'));
        p.finish();
    }

    #[test]
    fn a_bar_at_a_terminal() {
        let mut p = Progress::with_terminal("simulating", Unit::Days, Some(30), true);
        assert!(p.is_bar());
        p.set(5, String::new);
        assert_eq!(p.bar.as_ref().map(|b| b.position()), Some(5));
        assert_eq!(p.lines, 0, "no plain lines beside a bar");
        p.finish();
    }
}
