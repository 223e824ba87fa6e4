//! Exit codes (docs/report.md): what scripts and schedulers act on.

use crate::model::{Report, Status};

pub const OK: u8 = 0;
pub const CHECK_FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const INCONCLUSIVE: u8 = 3;
pub const CONFIG: u8 = 78;
pub const INTERRUPTED: u8 = 130;

/// `--fail-on`: what makes the exit code of a finished run non-zero. It lives here, with the codes
/// it selects, so that everything below the command line can take it without importing the CLI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Exit 0 whatever the checks found (tool faults still exit 3).
    Never,
    /// Exit 1 when a check fails or warns.
    Warning,
    /// Exit 1 when a check fails.
    Failure,
}

/// Pure: the exit code for a finished run.
/// A failure whose cause is a tool fault (`internal`, `config`) is not evidence that the network or
/// server is broken: if that is all that went wrong, the run is inconclusive (3), not failed (1).
/// So is a hop the config asks for that this host or build cannot run (`skip` with cause
/// `unsupported`): what it would have tested is unknown, and 0 would claim it works.
pub fn for_report(report: &Report, fail_on: FailOn) -> u8 {
    let mut real_failure = false;
    let mut warned = false;
    let mut tool_fault = false;
    for check in &report.checks {
        for hop in &check.hops {
            match (hop.status, hop.cause) {
                (Status::Fail | Status::Skip, Some(c)) if c.is_tool_fault() => tool_fault = true,
                (Status::Fail, _) => real_failure = true,
                (Status::Warn, _) => warned = true,
                _ => {}
            }
        }
    }
    match fail_on {
        FailOn::Failure if real_failure => CHECK_FAILED,
        FailOn::Warning if real_failure || warned => CHECK_FAILED,
        _ if tool_fault => INCONCLUSIVE,
        _ => OK,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::*;
    use std::time::{Duration, SystemTime};

    fn report(hops: Vec<HopResult>) -> Report {
        let check = CheckResult::new("c", "tcp", "t", hops);
        Report::new(SystemTime::now(), Duration::ZERO, "h".into(), vec![check])
    }

    #[test]
    fn table() {
        let pass = report(vec![HopResult::pass(HopKind::Tcp, "")]);
        let fail = report(vec![HopResult::fail(HopKind::Tcp, Cause::Timeout, "")]);
        let warn = report(vec![HopResult::warn(
            HopKind::Resolve,
            Cause::DnsMismatch,
            "",
        )]);
        let fault = report(vec![HopResult::fail(HopKind::Tcp, Cause::Internal, "")]);
        let not_run_here = report(vec![
            HopResult::pass(HopKind::Login, ""),
            HopResult::unsupported(HopKind::TxEnlist, "needs the Windows build"),
        ]);
        let failed_and_not_run_here = report(vec![
            HopResult::fail(HopKind::Tcp, Cause::Timeout, ""),
            HopResult::unsupported(HopKind::TxEnlist, "needs the Windows build"),
        ]);
        let interrupted = report(vec![
            HopResult::skip(HopKind::Tcp, "").with_cause(Cause::Interrupted)
        ]);
        let rows = [
            (&pass, FailOn::Failure, OK),
            (&fail, FailOn::Failure, CHECK_FAILED),
            (&fail, FailOn::Never, OK),
            (&warn, FailOn::Failure, OK),
            (&warn, FailOn::Warning, CHECK_FAILED),
            (&fault, FailOn::Failure, INCONCLUSIVE),
            (&fault, FailOn::Never, INCONCLUSIVE),
            (&not_run_here, FailOn::Failure, INCONCLUSIVE),
            (&not_run_here, FailOn::Warning, INCONCLUSIVE),
            (&not_run_here, FailOn::Never, INCONCLUSIVE),
            (&failed_and_not_run_here, FailOn::Failure, CHECK_FAILED),
            (&interrupted, FailOn::Failure, OK),
        ];
        for (r, fail_on, code) in rows {
            assert_eq!(
                for_report(r, fail_on),
                code,
                "{fail_on:?} {:?}",
                r.checks[0].hops[0]
            );
        }
    }
}
