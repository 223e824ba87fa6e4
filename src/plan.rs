//! Builds the plan for a run: the config's checks and the ad-hoc targets, merged with the flags
//! (flag > config `[defaults]` > built-in default), and how the report is written (baseline
//! loaded), all in one place and before any check runs. The input is plain values, so the plan
//! does not depend on the command line; `cli` converts its arguments.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use thiserror::Error;

use crate::baseline::BaselineError;
use crate::config::{self, ConfigError};
use crate::exit;
use crate::report::outputs::{OutputPlan, OutputRequest};
use crate::target::{CheckSpec, Target};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Checks in flight at once. High enough that up to 1,024 checks all start together, so any
/// number of dropped ports up to that costs one timeout, not one per batch; each check in flight
/// costs ~15 KB and two descriptors (the soft open-file limit is raised at start, see `fdlimit`),
/// and checks that end early give their slot back at once (`runner`).
pub const DEFAULT_CONCURRENCY: usize = 1024;

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Usage(String),
    /// `--baseline` names a file that cannot be used: a usage error, found before the run.
    #[error("{0}")]
    Baseline(#[from] BaselineError),
}

impl PlanError {
    pub fn exit_code(&self) -> u8 {
        match self {
            PlanError::Config(_) => exit::CONFIG,
            PlanError::Usage(_) | PlanError::Baseline(_) => exit::USAGE,
        }
    }
}

/// What to check and how to report it, as asked for (flags, before anything is loaded).
#[derive(Debug, Clone)]
pub struct PlanInput {
    /// Ad-hoc target URLs.
    pub targets: Vec<String>,
    /// Config file with `[[check]]` tables.
    pub config: Option<PathBuf>,
    /// Only these checks of the config.
    pub only: Vec<String>,
    pub timeout: Option<Duration>,
    pub concurrency: Option<u32>,
    /// epm checks also list every endpoint mapper entry.
    pub list_endpoints: bool,
    pub output: OutputRequest,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub checks: Vec<CheckSpec>,
    pub timeout: Duration,
    pub concurrency: usize,
    /// This host's zone, from the config's `[defaults] zone`.
    pub zone: Option<String>,
    /// How the report is written.
    pub output: OutputPlan,
}

/// The plan for `check` and `watch`: at least one check.
pub fn build(input: &PlanInput) -> Result<Plan, PlanError> {
    let plan = build_allowing_empty(input)?;
    if plan.checks.is_empty() {
        return Err(PlanError::Usage(
            "nothing to check: give TARGETs (e.g. tcp://sql01:1433) or -c FILE (see `dtcprobe init`)".into(),
        ));
    }
    Ok(plan)
}

/// The plan for `peer`, where forward checks are optional (`peer AGENT` alone checks the agent
/// link both ways).
pub fn build_allowing_empty(input: &PlanInput) -> Result<Plan, PlanError> {
    let cfg = match &input.config {
        Some(path) => config::load(path)?,
        None => config::Config::default(),
    };
    let mut checks = cfg.checks;
    if !input.only.is_empty() {
        if input.config.is_none() {
            return Err(PlanError::Usage(
                "--only selects checks from a config: give -c FILE".into(),
            ));
        }
        let known: HashSet<&str> = checks.iter().map(|c| c.name.as_str()).collect();
        for name in &input.only {
            if !known.contains(name.as_str()) {
                let known: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
                return Err(PlanError::Usage(format!(
                    "--only {name}: no such check in the config (known: {})",
                    known.join(", ")
                )));
            }
        }
        let only: HashSet<&str> = input.only.iter().map(String::as_str).collect();
        checks.retain(|c| only.contains(c.name.as_str()));
    }
    // Ad-hoc checks are named after their target; keep names unique all the same: `URL`, then
    // the first free of `URL#2`, `URL#3`... The set of names taken so far and, per URL, the next
    // suffix to try keep this linear in the number of checks (names are only ever added, so a
    // suffix once taken stays taken and the search can resume where it stopped).
    let mut taken: HashSet<String> = HashSet::new();
    let mut next_suffix: HashMap<&str, usize> = HashMap::new();
    if !input.targets.is_empty() {
        taken.extend(checks.iter().map(|c| c.name.clone()));
    }
    for url in &input.targets {
        let target = Target::from_url(url).map_err(|e| PlanError::Usage(e.to_string()))?;
        let mut name = url.clone();
        if taken.contains(&name) {
            let n = next_suffix.entry(url.as_str()).or_insert(2);
            loop {
                name = format!("{url}#{n}");
                *n += 1;
                if !taken.contains(&name) {
                    break;
                }
            }
        }
        taken.insert(name.clone());
        checks.push(CheckSpec {
            name,
            from: cfg.defaults.zone.clone(),
            to: None,
            timeout: None,
            target,
        });
    }
    if input.list_endpoints {
        for c in &mut checks {
            if let Target::Epm(t) = &mut c.target {
                t.list_endpoints = true;
            }
        }
    }
    let output = OutputPlan::resolve(input.output.clone())?;
    Ok(Plan {
        checks,
        output,
        zone: cfg.defaults.zone.clone(),
        timeout: input
            .timeout
            .or(cfg.defaults.timeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        concurrency: input
            .concurrency
            .map(|c| c as usize)
            .or(cfg.defaults.concurrency)
            .unwrap_or(DEFAULT_CONCURRENCY),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::FailOn;
    use crate::report::Format;

    fn input(targets: &[&str], config: Option<PathBuf>) -> PlanInput {
        PlanInput {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            config,
            only: Vec::new(),
            timeout: None,
            concurrency: None,
            list_endpoints: false,
            output: OutputRequest {
                format: Format::Human,
                color: false,
                outputs: Vec::new(),
                textfile_dir: None,
                fail_on: FailOn::Failure,
                baseline: None,
            },
        }
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.checks.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn ad_hoc_names_are_made_unique_with_the_first_free_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        // A config check already holds the name the second ad-hoc target would get.
        std::fs::write(
            &cfg,
            "[[check]]\nname = \"tcp://h:1#2\"\nkind = \"tcp\"\nhost = \"h\"\nport = 1\n",
        )
        .unwrap();
        let plan = build(&input(
            &[
                "tcp://h:1",
                "tcp://h:2",
                "tcp://h:1",
                "tcp://h:1",
                "tcp://h:2",
            ],
            Some(cfg),
        ))
        .unwrap();
        assert_eq!(
            names(&plan),
            [
                "tcp://h:1#2",
                "tcp://h:1",
                "tcp://h:2",
                "tcp://h:1#3",
                "tcp://h:1#4",
                "tcp://h:2#2"
            ]
        );
    }

    #[test]
    fn a_missing_baseline_fails_the_plan_as_a_usage_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut asked = input(&["tcp://h:1"], None);
        asked.output.baseline = Some(dir.path().join("missing.json"));
        let err = build(&asked).unwrap_err();
        assert!(matches!(err, PlanError::Baseline(_)), "{err:?}");
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("missing.json"), "{err}");
    }
}
