//! The report model and one exporter per output format, all behind [`Exporter`].

pub mod endpoints;
pub mod human;
pub mod json;
pub mod junit;

pub mod nagios;
pub mod outputs;
pub mod plain;
pub mod prometheus;

use std::io::{self, Write};

use crate::model::Report;

/// Renders a whole report in one format.
pub trait Exporter {
    fn render(&self, report: &Report, out: &mut dyn Write) -> io::Result<()>;
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

/// Presentation choices that only some formats use.
#[derive(Debug, Clone, Copy, Default)]
pub struct RenderOptions {
    /// ANSI colours (human format, on a TTY, unless NO_COLOR).
    pub color: bool,
}

/// Colour only on a terminal, and never when NO_COLOR is set (to anything but the empty string).
pub fn colour_for(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

impl RenderOptions {
    /// The options for a report written to this process's stdout.
    pub fn for_stdout() -> RenderOptions {
        use std::io::IsTerminal;
        RenderOptions {
            color: colour_for(std::io::stdout().is_terminal()),
        }
    }
}

pub fn exporter_for(format: Format, opts: RenderOptions) -> Box<dyn Exporter> {
    match format {
        Format::Human => Box::new(human::Human { color: opts.color }),
        Format::Plain => Box::new(plain::Plain),
        Format::Json => Box::new(json::Json),
        Format::Junit => Box::new(junit::Junit),
        Format::Nagios => Box::new(nagios::Nagios),
        Format::Prometheus => Box::new(prometheus::Prometheus),
    }
}
