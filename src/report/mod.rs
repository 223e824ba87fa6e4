//! One exporter per output format, all behind [`Exporter`]; everything format-specific (colour,
//! the baseline section, Nagios's exit codes) lives in the exporter, not in its callers.

pub mod atomic;
pub mod endpoints;
pub mod exporter;
pub mod firewall_request;
pub mod human;
pub mod json;
pub mod junit;
pub mod markdown;
pub mod matrix;

pub mod nagios;
pub mod outputs;
pub mod plain;
pub mod prometheus;

pub use exporter::{
    colour_for, colour_for_stdout, width_for_stdout, ColorChoice, Exporter, Format, RenderContext,
};

pub fn exporter_for(format: Format) -> Box<dyn Exporter> {
    match format {
        Format::Human => Box::new(human::Human),
        Format::Plain => Box::new(plain::Plain),
        Format::Json => Box::new(json::Json),
        Format::Junit => Box::new(junit::Junit),
        Format::Nagios => Box::new(nagios::Nagios),
        Format::Prometheus => Box::new(prometheus::Prometheus),
        Format::Markdown => Box::new(markdown::Markdown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::BaselineDiff;
    use crate::exit::{self, FailOn};
    use crate::model::Report;
    use crate::model::{Cause, CheckResult, HopKind, HopResult};
    use std::time::{Duration, SystemTime};

    fn report(hops: Vec<HopResult>) -> Report {
        let check = CheckResult::new("a", "tcp", "tcp://db:1", hops);
        Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::ZERO,
            "h".into(),
            vec![check],
        )
    }

    /// A diff with one regression (the baseline passed, this run fails).
    fn regressed(now: &Report) -> BaselineDiff {
        let before = report(vec![HopResult::pass(HopKind::Tcp, "")]);
        let diff = crate::baseline::diff(&before, now);
        assert!(diff.has_regressions());
        diff
    }

    #[test]
    fn exit_codes_per_format() {
        let pass = report(vec![HopResult::pass(HopKind::Tcp, "")]);
        let fail = report(vec![HopResult::fail(HopKind::Tcp, Cause::Refused, "")]);
        let regression = regressed(&fail);
        // (format, report, fail-on, baseline, exit code)
        let rows: [(Format, &Report, FailOn, Option<&BaselineDiff>, u8); 8] = [
            (Format::Human, &pass, FailOn::Failure, None, exit::OK),
            (
                Format::Json,
                &fail,
                FailOn::Failure,
                None,
                exit::CHECK_FAILED,
            ),
            (Format::Plain, &fail, FailOn::Never, None, exit::OK),
            // `--fail-on never --baseline`: a regression still fails the run.
            (Format::Plain, &fail, FailOn::Never, Some(&regression), 1),
            (Format::Junit, &fail, FailOn::Failure, Some(&regression), 1),
            // Nagios: plugin states, whatever --fail-on says.
            (Format::Nagios, &pass, FailOn::Failure, None, 0),
            (Format::Nagios, &fail, FailOn::Never, None, 2),
            (Format::Nagios, &fail, FailOn::Never, Some(&regression), 2),
        ];
        for (format, r, fail_on, diff, code) in rows {
            assert_eq!(
                exporter_for(format).exit_code(r, fail_on, diff),
                code,
                "{format:?} {fail_on:?} baseline={}",
                diff.is_some()
            );
        }
    }

    #[test]
    fn a_regression_makes_a_clean_nagios_run_critical() {
        // A report that passes now, with a diff claiming a regression: the state is raised.
        let pass = report(vec![HopResult::pass(HopKind::Tcp, "")]);
        let fail = report(vec![HopResult::fail(HopKind::Tcp, Cause::Refused, "")]);
        let regression = regressed(&fail);
        let nagios = exporter_for(Format::Nagios);
        assert_eq!(nagios.exit_code(&pass, FailOn::Failure, None), 0);
        assert_eq!(
            nagios.exit_code(&pass, FailOn::Failure, Some(&regression)),
            2
        );
    }

    #[test]
    fn tool_errors_before_the_run() {
        for format in [Format::Human, Format::Json, Format::Prometheus] {
            let mut stdout = Vec::new();
            let code = exporter_for(format).tool_error(exit::CONFIG, "bad", &mut stdout);
            assert_eq!(code, exit::CONFIG, "{format:?}");
            assert!(stdout.is_empty(), "{format:?}");
        }
        let mut stdout = Vec::new();
        let code = exporter_for(Format::Nagios).tool_error(exit::USAGE, "a|b\nc", &mut stdout);
        assert_eq!(code, 3);
        assert_eq!(
            String::from_utf8(stdout).unwrap(),
            "DTCPROBE UNKNOWN - a b c\n"
        );
    }
}
