//! One exporter per output format, all behind [`Exporter`]; everything format-specific (colour,
//! the baseline section, Nagios's exit codes) lives in the exporter, not in its callers.

pub mod endpoints;
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

use std::io::{self, Write};

use crate::baseline::BaselineDiff;
use crate::exit::{self, FailOn};
use crate::model::Report;

/// What a render may depend on besides the report itself. Formats use what applies to them and
/// ignore the rest, so callers never need to know which format wants what.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderContext<'a> {
    /// ANSI colours (human format, on a TTY, unless NO_COLOR).
    pub color: bool,
    /// The comparison with `--baseline`, when one was given.
    pub baseline: Option<&'a BaselineDiff>,
    /// `--quiet`: human and plain list only the hops that failed or warned.
    pub quiet: bool,
    /// Columns the human table must fit in (`None`: no limit, e.g. a file or a pipe).
    pub width: Option<usize>,
}

/// One output format: how it renders a report and, since some formats (Nagios) have their own
/// exit-code contract, what the process exits with.
pub trait Exporter {
    /// Renders a whole report (and whatever of `ctx` applies to this format).
    fn render(
        &self,
        report: &Report,
        ctx: &RenderContext<'_>,
        out: &mut dyn Write,
    ) -> io::Result<()>;

    /// The exit code of a finished run: `--fail-on` decides, and a baseline regression makes an
    /// otherwise clean run fail.
    fn exit_code(&self, report: &Report, fail_on: FailOn, baseline: Option<&BaselineDiff>) -> u8 {
        let code = exit::for_report(report, fail_on);
        let regressed = baseline.is_some_and(BaselineDiff::has_regressions);
        if regressed && code == exit::OK {
            exit::CHECK_FAILED
        } else {
            code
        }
    }

    /// A tool error before any check ran (usage 2, config 78): the message is already on stderr;
    /// returns the exit code. Formats that promise something on stdout override this.
    fn tool_error(&self, code: u8, _message: &str, _stdout: &mut dyn Write) -> u8 {
        code
    }
}

/// Output formats (`-f`, `--output FORMAT=PATH`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Human,
    Plain,
    Json,
    Junit,
    Nagios,
    Prometheus,
    Markdown,
}

impl Format {
    pub fn name(self) -> &'static str {
        match self {
            Format::Human => "human",
            Format::Plain => "plain",
            Format::Json => "json",
            Format::Junit => "junit",
            Format::Nagios => "nagios",
            Format::Prometheus => "prometheus",
            Format::Markdown => "markdown",
        }
    }
}

/// `--color`: when the human report gets ANSI colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless NO_COLOR is set or TERM is `dumb`.
    Auto,
    Always,
    Never,
}

/// Colour only on a terminal, never when NO_COLOR is set (to anything but the empty string),
/// never on a terminal that says it cannot (TERM=dumb: Emacs shells, some CI log viewers).
pub fn colour_for(is_terminal: bool) -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
    let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
    is_terminal && !no_color && !dumb
}

/// Whether a report written to this process's stdout gets colours.
pub fn colour_for_stdout(choice: ColorChoice) -> bool {
    use std::io::IsTerminal;
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => colour_for(std::io::stdout().is_terminal()),
    }
}

/// The width the human table fits in: `COLUMNS` when set (shells export it; tests and scripts
/// can too), else the terminal's width when stdout is one, else no limit (a file or a pipe
/// keeps whole lines for grep).
pub fn width_for_stdout() -> Option<usize> {
    if let Some(cols) = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|c| *c > 0)
    {
        return Some(cols);
    }
    terminal_width()
}

#[cfg(unix)]
fn terminal_width() -> Option<usize> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        return None;
    }
    // SAFETY: TIOCGWINSZ fills a winsize struct we own; a failure leaves it zeroed.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) } == 0;
    (ok && ws.ws_col > 0).then_some(ws.ws_col as usize)
}

/// A Windows console: the visible window's width from GetConsoleScreenBufferInfo (not the
/// buffer's, which is often 120+ columns wider than what shows). Anything but a console (a pipe,
/// a file, wine's redirected stdout) fails the call: no limit, as on Unix.
#[cfg(windows)]
fn terminal_width() -> Option<usize> {
    use windows_sys::Win32::System::Console::{
        GetConsoleScreenBufferInfo, GetStdHandle, CONSOLE_SCREEN_BUFFER_INFO, STD_OUTPUT_HANDLE,
    };
    // SAFETY: GetStdHandle has no preconditions; the info struct is ours and only read when the
    // call reports success.
    unsafe {
        let handle = GetStdHandle(STD_OUTPUT_HANDLE);
        let mut info: CONSOLE_SCREEN_BUFFER_INFO = std::mem::zeroed();
        if GetConsoleScreenBufferInfo(handle, &mut info) == 0 {
            return None;
        }
        let cols = i32::from(info.srWindow.Right) - i32::from(info.srWindow.Left) + 1;
        (cols > 0).then_some(cols as usize)
    }
}

#[cfg(not(any(unix, windows)))]
fn terminal_width() -> Option<usize> {
    None
}

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
