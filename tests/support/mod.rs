//! Shared test support: network namespaces with firewall rules, and helpers to run the binary.
#![allow(dead_code)]

pub mod netns;
pub mod postgres;

use serde_json::Value;

/// Parses a `-f json` report from stdout, with the output in the panic message if it is not JSON.
pub fn parse_report(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{stdout}"))
}

/// The hop `hop` of check `check` in a JSON report.
pub fn hop<'a>(report: &'a Value, check: &str, hop: &str) -> &'a Value {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no check {check} in {report:#}"));
    c["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == hop)
        .unwrap_or_else(|| panic!("no hop {hop} in check {check}: {c:#}"))
}
