use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    match dtcprobe::cli::Cli::try_parse_from(&args) {
        Ok(cli) => ExitCode::from(dtcprobe::app::main(cli)),
        Err(e) => ExitCode::from(dtcprobe::app::usage_error(e, &args)),
    }
}
