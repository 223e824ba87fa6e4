use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = dtcprobe::cli::Cli::parse();
    ExitCode::from(dtcprobe::app::main(cli))
}
