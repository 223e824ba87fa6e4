//! `dtcprobe matrix`: load and resolve the file (exit 78 with file:line on any problem, before
//! any agent is contacted), then either print the allow lists or run the matrix and write it.

use std::path::PathBuf;
use std::time::Duration;

use crate::exit;
use crate::report::matrix::outputs::{emit, MatrixOutputPlan};

/// The command line's input, as plain values.
#[derive(Debug, Clone)]
pub struct MatrixInput {
    pub config: PathBuf,
    pub timeout: Option<Duration>,
    pub print_allow: bool,
    pub output: MatrixOutputPlan,
}

pub async fn matrix_main(input: MatrixInput) -> u8 {
    let plan = match super::config::load(&input.config, input.timeout) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("dtcprobe matrix: {e}");
            return exit::CONFIG;
        }
    };
    if input.print_allow {
        print!("{}", allow_lists(&plan));
        return exit::OK;
    }
    let report = super::run::run(&plan).await;
    emit(&report, &input.output)
}

/// Pure: for every zone with an agent, the `allow` lines its agent config needs.
pub fn allow_lists(plan: &super::config::MatrixPlan) -> String {
    let mut out = String::new();
    for zone in &plan.zones {
        let Some(agent) = &zone.agent else {
            out.push_str(&format!(
                "# zone {}: no agent (its row is not run)\n\n",
                zone.name
            ));
            continue;
        };
        let entries = plan.required_allow(&zone.name);
        out.push_str(&format!(
            "# zone {}: agent {} (its agent.toml)\nzone = \"{}\"\n",
            zone.name, agent.address, zone.name
        ));
        if entries.is_empty() {
            out.push_str("allow = []\n\n");
            continue;
        }
        out.push_str("allow = [\n");
        for e in entries {
            out.push_str(&format!("  \"{e}\",\n"));
        }
        out.push_str("]\n\n");
    }
    out
}
