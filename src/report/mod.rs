//! One exporter per output format, all behind [`Exporter`]; everything format-specific (colour,
//! the baseline section, Nagios's exit codes) lives in the exporter, not in its callers.

pub mod human;
pub mod json;
pub mod junit;

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
        }
    }
}

/// Colour only on a terminal, and never when NO_COLOR is set (to anything but the empty string).
pub fn colour_for(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Whether a report written to this process's stdout gets colours.
pub fn colour_for_stdout() -> bool {
    use std::io::IsTerminal;
    colour_for(std::io::stdout().is_terminal())
}

pub fn exporter_for(format: Format) -> Box<dyn Exporter> {
    match format {
        Format::Human => Box::new(human::Human),
        Format::Plain => Box::new(plain::Plain),
        Format::Json => Box::new(json::Json),
        Format::Junit => Box::new(junit::Junit),
        Format::Nagios => Box::new(nagios::Nagios),
        Format::Prometheus => Box::new(prometheus::Prometheus),
    }
}
