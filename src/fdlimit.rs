//! The open-file limit versus `--concurrency`.
//!
//! Every check in flight holds sockets, and on Unix a socket is a file descriptor counted against
//! RLIMIT_NOFILE. The usual soft limit (1024) is below what the default concurrency can use, so the
//! soft limit is raised to the hard limit at start. Where the hard limit is still too low for the
//! concurrency a run would actually use, the run goes ahead with fewer checks at a time and says so
//! on stderr: running out of descriptors mid-run would turn healthy targets into spurious faults,
//! which is false information, while running fewer at once only costs time.
//!
//! Windows has no such per-process limit on sockets; there the concurrency is used as asked.

use std::sync::atomic::{AtomicU64, Ordering};

/// Descriptors one check can hold at once: its connection plus one more (the endpoint mapper's
/// dynamic port while the mapper connection is still open, a TLS/TDS connection beside the
/// Browser's UDP socket, the agent's callback listener).
pub const FDS_PER_CHECK: u64 = 2;

/// Descriptors kept for everything that is not a check: stdio, the runtime's epoll and wake-up
/// descriptors, the DNS resolver's sockets, report and --output files, the metrics listener.
pub const RESERVED_FDS: u64 = 64;

/// The soft limit after start-up (0: unknown or no limit applies, as on Windows).
static SOFT_LIMIT: AtomicU64 = AtomicU64::new(0);

/// Raises the soft open-file limit to the hard limit (capped at 2^20, which macOS's setrlimit
/// also needs) and remembers the result for [`fit_concurrency`].
pub fn raise_open_file_limit() {
    #[cfg(unix)]
    // SAFETY: getrlimit/setrlimit only read/write the struct passed by pointer.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return;
        }
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max.min(1 << 20),
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim = raised;
            }
        }
        // rlim_t is u64 on Linux and macOS but not on every Unix.
        #[allow(clippy::unnecessary_cast)]
        SOFT_LIMIT.store(lim.rlim_cur as u64, Ordering::Relaxed);
    }
}

/// How many checks may run at once, and why fewer than asked (for stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fit {
    pub concurrency: usize,
    pub note: Option<String>,
}

/// Fits `requested` checks at a time under this process's open-file limit, for a plan of `checks`
/// checks (a run never has more in flight than it has checks, so a small plan never needs a note).
pub fn fit_concurrency(requested: usize, checks: usize) -> Fit {
    fit_to_limit(requested, checks, SOFT_LIMIT.load(Ordering::Relaxed))
}

/// [`fit_concurrency`] with the limit given (0: none known).
pub fn fit_to_limit(requested: usize, checks: usize, soft_limit: u64) -> Fit {
    let requested = requested.max(1);
    let in_flight = requested.min(checks.max(1)) as u64;
    if soft_limit == 0 || RESERVED_FDS + in_flight * FDS_PER_CHECK <= soft_limit {
        return Fit {
            concurrency: requested,
            note: None,
        };
    }
    let allowed = (soft_limit.saturating_sub(RESERVED_FDS) / FDS_PER_CHECK).max(1);
    Fit {
        concurrency: allowed as usize,
        note: Some(format!(
            "the open-file limit ({soft_limit}, after raising the soft limit to the hard limit) allows {allowed} checks at a time, \
             not {in_flight}: running {allowed} at a time, so dropped targets may cost more than one \
             timeout; raise the hard limit (`ulimit -Hn`, systemd LimitNOFILE=, \
             /etc/security/limits.conf) to at least {} to run {in_flight} at once",
            RESERVED_FDS + in_flight * FDS_PER_CHECK
        )),
    }
}

/// [`fit_concurrency`], with the note printed on stderr; returns the concurrency to use.
pub fn fit_concurrency_and_warn(requested: usize, checks: usize) -> usize {
    let fit = fit_concurrency(requested, checks);
    if let Some(note) = &fit.note {
        eprintln!("dtcprobe: {note}");
    }
    fit.concurrency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_known_limit_keeps_the_request() {
        assert_eq!(fit_to_limit(1024, 5000, 0).concurrency, 1024);
        assert_eq!(fit_to_limit(1024, 5000, 0).note, None);
    }

    #[test]
    fn a_high_limit_keeps_the_request() {
        let fit = fit_to_limit(1024, 5000, 1 << 20);
        assert_eq!((fit.concurrency, fit.note), (1024, None));
        // Exactly enough: 64 + 1024 * 2.
        assert_eq!(fit_to_limit(1024, 5000, 2112).note, None);
    }

    #[test]
    fn a_low_limit_lowers_the_concurrency_and_says_so() {
        let fit = fit_to_limit(1024, 5000, 1024);
        assert_eq!(fit.concurrency, (1024 - 64) / 2);
        let note = fit.note.unwrap();
        assert!(note.contains("open-file limit (1024"), "{note}");
        assert!(note.contains("480 at a time"), "{note}");
        assert!(note.contains("at least 2112"), "{note}");
    }

    #[test]
    fn a_small_plan_needs_no_more_than_its_checks() {
        // 100 checks need 64 + 200 descriptors, whatever --concurrency says.
        let fit = fit_to_limit(1024, 100, 1024);
        assert_eq!((fit.concurrency, fit.note), (1024, None));
        let fit = fit_to_limit(1024, 100, 200);
        assert_eq!(fit.concurrency, 68);
        assert!(fit.note.unwrap().contains("not 100"));
    }

    #[test]
    fn a_tiny_limit_still_runs_one_at_a_time() {
        assert_eq!(fit_to_limit(1024, 5000, 10).concurrency, 1);
    }
}
