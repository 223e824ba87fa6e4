//! A byte budget on the agent's log: however verbose (`-vvv` traces every crate, the agent's
//! dependencies included, and no rate limiter of ours sees those lines), a flood cannot grow the
//! log faster than the budget's bytes per second (`log_bytes_per_second` in the agent's config,
//! default [`AGENT_LOG_BYTES_PER_SECOND`]).
//!
//! The budget sits at the writer, after formatting, so it counts what really reaches stderr,
//! whoever logged it. Lines over the budget are dropped and counted; the next line let through is
//! preceded by one line that says how many were dropped (that line is paid for from the budget
//! too). The first refusal from each source (a wrong key above all: lines that carry the field
//! [`FIRST_FROM_SOURCE`]) is written outside the budget, so a flood cannot hide a genuine
//! misconfiguration; those lines have their own limit ([`super::limits::FirstPerSource`]: 50 per
//! 10 s), which keeps the whole log bounded.

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::Metadata;
use tracing_subscriber::fmt::MakeWriter;

/// The field that marks a refusal logged as the first from its source.
pub const FIRST_FROM_SOURCE: &str = "first_from_source";

/// The agent's default log budget: 32 KiB per second. A normal session at `-vvv` writes about
/// 1 KB; the `-vv` log under a flood stays near 5 KB/s (its lines are rate-limited where they are
/// logged), so the budget only bites on what nothing else bounds.
pub const AGENT_LOG_BYTES_PER_SECOND: usize = 32 * 1024;

/// The agent process's log budget (one stderr per process); the agent sets it from its config.
pub static AGENT_LOG: LogBudget = LogBudget::new(AGENT_LOG_BYTES_PER_SECOND);

/// Bytes let through per one-second window; what is over is counted, not written.
#[derive(Debug)]
pub struct LogBudget {
    per_second: AtomicUsize,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    window_start: Option<Instant>,
    spent: usize,
    dropped_lines: u64,
    dropped_bytes: u64,
}

/// What to do with one line.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit {
    /// Write it, after a notice of the lines dropped before it (if any).
    Write { notice: Option<String> },
    /// Over the budget: dropped (and counted).
    Drop,
}

impl LogBudget {
    pub const fn new(per_second: usize) -> LogBudget {
        LogBudget {
            per_second: AtomicUsize::new(per_second),
            state: Mutex::new(BudgetState {
                window_start: None,
                spent: 0,
                dropped_lines: 0,
                dropped_bytes: 0,
            }),
        }
    }

    pub fn per_second(&self) -> usize {
        self.per_second.load(Ordering::Relaxed)
    }

    pub fn set_per_second(&self, bytes: usize) {
        self.per_second.store(bytes, Ordering::Relaxed);
    }

    /// Whether a line of `len` bytes may be written at `now`; a line that carries the notice of
    /// earlier drops must fit together with it.
    pub fn admit_at(&self, now: Instant, len: usize) -> Admit {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let expired = s
            .window_start
            .is_none_or(|start| now.duration_since(start) >= Duration::from_secs(1));
        if expired {
            s.window_start = Some(now);
            s.spent = 0;
        }
        let per_second = self.per_second();
        let notice = (s.dropped_lines > 0).then(|| {
            format!(
                "dtcprobe agent: log budget: {} line(s), {} bytes dropped (more than {per_second} \
                 bytes per second: log_bytes_per_second)\n",
                s.dropped_lines, s.dropped_bytes
            )
        });
        let cost = len + notice.as_ref().map_or(0, String::len);
        if s.spent + cost > per_second {
            s.dropped_lines += 1;
            s.dropped_bytes += len as u64;
            return Admit::Drop;
        }
        s.spent += cost;
        s.dropped_lines = 0;
        s.dropped_bytes = 0;
        Admit::Write { notice }
    }
}

/// stderr under a [`LogBudget`], for `tracing_subscriber::fmt().with_writer(...)`.
#[derive(Clone, Copy)]
pub struct BudgetedStderr {
    budget: &'static LogBudget,
}

impl BudgetedStderr {
    /// stderr under the agent's budget ([`AGENT_LOG`]).
    pub fn agent() -> BudgetedStderr {
        BudgetedStderr { budget: &AGENT_LOG }
    }
}

/// One formatted event on its way to stderr (the fmt layer writes each event with one
/// `write_all` of the whole line).
pub struct BudgetedLine<'a> {
    budget: &'a LogBudget,
    exempt: bool,
}

impl<'a> MakeWriter<'a> for BudgetedStderr {
    type Writer = BudgetedLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        BudgetedLine {
            budget: self.budget,
            exempt: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        BudgetedLine {
            budget: self.budget,
            exempt: meta.fields().field(FIRST_FROM_SOURCE).is_some(),
        }
    }
}

impl Write for BudgetedLine<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut err = std::io::stderr().lock();
        if self.exempt {
            err.write_all(buf)?;
            return Ok(buf.len());
        }
        match self.budget.admit_at(Instant::now(), buf.len()) {
            Admit::Drop => {}
            Admit::Write { notice } => {
                if let Some(n) = notice {
                    err.write_all(n.as_bytes())?;
                }
                err.write_all(buf)?;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_over_the_budget_are_dropped_and_announced_with_the_next() {
        let budget = LogBudget::new(300);
        let t0 = Instant::now();
        assert_eq!(budget.admit_at(t0, 200), Admit::Write { notice: None });
        assert_eq!(budget.admit_at(t0, 100), Admit::Write { notice: None });
        assert_eq!(budget.admit_at(t0, 1), Admit::Drop);
        assert_eq!(
            budget.admit_at(t0 + Duration::from_millis(999), 5),
            Admit::Drop
        );
        // The next window: the notice comes first, counted in the budget with the line.
        let next = t0 + Duration::from_secs(1);
        let Admit::Write {
            notice: Some(notice),
        } = budget.admit_at(next, 10)
        else {
            panic!("no notice");
        };
        assert!(notice.contains("2 line(s), 6 bytes dropped"), "{notice}");
        assert!(notice.ends_with('\n'));
        let spent = 10 + notice.len();
        assert_eq!(
            budget.admit_at(next, 300 - spent),
            Admit::Write { notice: None }
        );
        assert_eq!(budget.admit_at(next, 1), Admit::Drop);
    }

    #[test]
    fn a_line_and_its_notice_must_fit_together() {
        let budget = LogBudget::new(300);
        let t0 = Instant::now();
        assert_eq!(budget.admit_at(t0, 300), Admit::Write { notice: None });
        assert_eq!(budget.admit_at(t0, 10), Admit::Drop);
        // 250 bytes fit an empty window, but not with the notice (about 130 bytes) before them.
        let next = t0 + Duration::from_secs(1);
        assert_eq!(budget.admit_at(next, 250), Admit::Drop);
        assert!(matches!(
            budget.admit_at(next, 50),
            Admit::Write { notice: Some(n) } if n.contains("2 line(s), 260 bytes")
        ));
    }
}
