//! The exporter contract: what a render gets ([`RenderContext`]), what every format provides
//! ([`Exporter`]), the formats' names, and the terminal facts (colour, width) a render may use.
//! The formats implement it from here, not from the registry in `report/mod.rs`
//! ([`super::exporter_for`]), so the registry depends on the formats and never the other way round.

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
