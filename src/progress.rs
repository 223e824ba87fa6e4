//! A progress bar on stderr for long runs: only when stderr is a terminal, only for runs with more
//! than one check, and only once the run has lasted [`SHOW_AFTER`]: short runs print nothing.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::model::{CheckResult, Status};
use crate::runner::Progress;

/// How long a run lasts before the bar appears.
pub const SHOW_AFTER: Duration = Duration::from_millis(800);

/// The bar; hidden until [`SHOW_AFTER`] has passed.
pub struct Bar {
    bar: ProgressBar,
    started: Instant,
    shown: std::sync::atomic::AtomicBool,
}

/// Whether a bar would be drawn for a run of `total` checks.
pub fn wanted(total: usize) -> bool {
    total > 1 && std::io::stderr().is_terminal()
}

impl Bar {
    /// A bar for `total` checks, or `None` when stderr is not a terminal or the run is trivial.
    pub fn for_run(total: usize) -> Option<Arc<Bar>> {
        if !wanted(total) {
            return None;
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::hidden());
        if let Ok(style) =
            ProgressStyle::with_template("{spinner} [{elapsed}] {bar:30} {pos}/{len} checks {msg}")
        {
            bar.set_style(style);
        }
        Some(Arc::new(Bar {
            bar,
            started: Instant::now(),
            shown: std::sync::atomic::AtomicBool::new(false),
        }))
    }

    fn maybe_show(&self) {
        if self.started.elapsed() >= SHOW_AFTER
            && !self.shown.swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            self.bar.set_draw_target(ProgressDrawTarget::stderr());
            self.bar.enable_steady_tick(Duration::from_millis(200));
        }
    }

    /// Shows the bar from a timer even if no check finishes for a while. Call inside a tokio
    /// runtime; the task ends with the bar.
    pub fn start_timer(self: &Arc<Self>) {
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(SHOW_AFTER).await;
            if let Some(me) = me.upgrade() {
                if !me.bar.is_finished() {
                    me.maybe_show();
                }
            }
        });
    }

    /// Removes the bar (before the report is printed).
    pub fn finish(&self) {
        self.bar.finish_and_clear();
    }
}

impl Progress for Bar {
    fn check_done(&self, done: usize, _total: usize, result: &CheckResult) {
        self.bar.set_position(done as u64);
        if result.status == Status::Fail {
            self.bar
                .set_message(format!("last failure: {}", result.name));
        }
        self.maybe_show();
    }
}

impl Drop for Bar {
    fn drop(&mut self) {
        self.bar.finish_and_clear();
    }
}
