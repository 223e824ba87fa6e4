//! Builds the plan for a run: the config's checks and the ad-hoc targets, merged with the flags
//! (flag > config `[defaults]` > built-in default), in one place.

use std::time::Duration;

use thiserror::Error;

use crate::cli::CheckArgs;
use crate::config::{self, ConfigError};
use crate::exit;
use crate::target::{CheckSpec, Target};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub const DEFAULT_CONCURRENCY: usize = 64;

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
}

impl PlanError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PlanError::Config(_) => exit::CONFIG,
            PlanError::Usage(_) => exit::USAGE,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub checks: Vec<CheckSpec>,
    pub timeout: Duration,
    pub concurrency: usize,
    /// This host's zone, from the config's `[defaults] zone`.
    pub zone: Option<String>,
}

/// The plan for `check` and `watch`: at least one check.
pub fn build(args: &CheckArgs) -> Result<Plan, PlanError> {
    let plan = build_allowing_empty(args)?;
    if plan.checks.is_empty() {
        return Err(PlanError::Usage(
            "nothing to check: give TARGETs (e.g. tcp://sql01:1433) or -c FILE (see `dtcprobe init`)".into(),
        ));
    }
    Ok(plan)
}

/// The plan for `peer`, where forward checks are optional (`peer AGENT` alone checks the agent
/// link both ways).
pub fn build_allowing_empty(args: &CheckArgs) -> Result<Plan, PlanError> {
    let cfg = match &args.config {
        Some(path) => config::load(path)?,
        None => config::Config::default(),
    };
    let mut checks = cfg.checks;
    if !args.only.is_empty() {
        if args.config.is_none() {
            return Err(PlanError::Usage(
                "--only selects checks from a config: give -c FILE".into(),
            ));
        }
        for name in &args.only {
            if !checks.iter().any(|c| &c.name == name) {
                let known: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                return Err(PlanError::Usage(format!(
                    "--only {name}: no such check in the config (known: {})",
                    known.join(", ")
                )));
            }
        }
        checks.retain(|c| args.only.contains(&c.name));
    }
    for url in &args.targets {
        let target = Target::from_url(url).map_err(|e| PlanError::Usage(e.to_string()))?;
        let mut name = url.clone();
        // Ad-hoc checks are named after their target; keep names unique all the same.
        let mut n = 2;
        while checks.iter().any(|c| c.name == name) {
            name = format!("{url}#{n}");
            n += 1;
        }
        checks.push(CheckSpec {
            name,
            from: cfg.defaults.zone.clone(),
            to: None,
            timeout: None,
            target,
        });
    }
    if args.list_endpoints {
        for c in &mut checks {
            if let Target::Epm(t) = &mut c.target {
                t.list_endpoints = true;
            }
        }
    }
    Ok(Plan {
        checks,
        zone: cfg.defaults.zone.clone(),
        timeout: args
            .timeout
            .or(cfg.defaults.timeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        concurrency: args
            .concurrency
            .map(|c| c as usize)
            .or(cfg.defaults.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY),
    })
}
