//! Builds the plan for a run: the config's checks and the ad-hoc targets, merged with the flags
//! (flag > config `[defaults]` > built-in default), and how the report is written (baseline
//! loaded), all in one place and before any check runs. The input is plain values, so the plan
//! does not depend on the command line; `cli` converts its arguments.

use rustc_hash::{FxHashMap, FxHashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use crate::baseline::BaselineError;
use crate::config::{self, ConfigError};
use crate::exit;
use crate::report::outputs::{OutputPlan, OutputRequest};
use crate::runner::{Progress, RunOptions};
use crate::target::{CheckSpec, Target};

pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
pub use crate::runner::DEFAULT_CONCURRENCY;

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
    /// Trace the path (hop `path`) after a connect times out (`--no-trace` turns it off).
    pub trace: bool,
    /// `--hold`: every tcp and mssql check without a `hold` of its own holds its session idle
    /// this long (hop `idle`).
    pub hold: Option<Duration>,
    /// `--cert-warn-days`: a login's server certificate with fewer days left warns
    /// (`cert_expiring`), for every check without a `cert_warn_days` of its own.
    pub cert_warn_days: Option<u32>,
    pub output: OutputRequest,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub checks: std::sync::Arc<[CheckSpec]>,
    pub timeout: Duration,
    pub concurrency: usize,
    /// This host's zone, from the config's `[defaults] zone`.
    pub zone: Option<String>,
    /// How the report is written.
    pub output: OutputPlan,
    /// The config file read without `-c` (./dtcprobe.toml or $DTCPROBE_CONFIG) and why: the
    /// caller says so on stderr, so that a run never checks a file the user did not expect.
    pub found_config: Option<(PathBuf, &'static str)>,
    /// Trace the path (hop `path`) after a connect times out.
    pub trace: bool,
    /// See [`PlanInput::cert_warn_days`] (its default applied).
    pub cert_warn_days: u32,
}

impl Plan {
    /// How the runner runs this plan's checks; `progress` reports each finished check (the
    /// progress bar of an interactive `check`).
    pub fn run_options(&self, progress: Option<Arc<dyn Progress>>) -> RunOptions {
        RunOptions {
            timeout: self.timeout,
            concurrency: self.concurrency,
            trace: self.trace,
            progress,
            cert_warn_days: self.cert_warn_days,
        }
    }
}

/// The file `dtcprobe init` writes, read by `check` and `watch` when given neither TARGETs nor -c.
pub const DEFAULT_CONFIG_FILE: &str = "dtcprobe.toml";
/// The variable naming a config when ./dtcprobe.toml does not exist.
pub const CONFIG_ENV: &str = "DTCPROBE_CONFIG";

/// Pure: which config a run without TARGETs and -c reads: `./dtcprobe.toml` when it exists
/// (`exists` is asked), else `$DTCPROBE_CONFIG` when set and not empty.
pub fn default_config(
    exists: impl Fn(&std::path::Path) -> bool,
    env: Option<std::ffi::OsString>,
) -> Option<(PathBuf, &'static str)> {
    let local = PathBuf::from(DEFAULT_CONFIG_FILE);
    if exists(&local) {
        return Some((local, "found in the current directory"));
    }
    env.filter(|v| !v.is_empty())
        .map(|v| (PathBuf::from(v), "from $DTCPROBE_CONFIG"))
}

/// The plan for `check` and `watch`: at least one check. Without TARGETs and -c, the default
/// config ([`default_config`]) is read.
pub fn build(input: &PlanInput) -> Result<Plan, PlanError> {
    let found = if input.targets.is_empty() && input.config.is_none() {
        default_config(|p| p.is_file(), std::env::var_os(CONFIG_ENV))
    } else {
        None
    };
    let mut plan = match &found {
        Some((path, _)) => {
            let mut with_config = input.clone();
            with_config.config = Some(path.clone());
            build_allowing_empty(&with_config)?
        }
        None => build_allowing_empty(input)?,
    };
    if plan.checks.is_empty() {
        let file = found
            .as_ref()
            .map(|(path, _)| path)
            .or(input.config.as_ref());
        let what = match file {
            Some(path) => format!("{} has no [[check]]", path.display()),
            None => format!(
                "nothing to check: give TARGETs (e.g. tcp://sql01:1433) or -c FILE, or run \
                 `dtcprobe init` to write ./{DEFAULT_CONFIG_FILE} (read when neither is given)"
            ),
        };
        return Err(PlanError::Usage(what));
    }
    plan.found_config = found;
    Ok(plan)
}

/// `NAME=URL`: the name given to an ad-hoc target, if any. Only a prefix of letters, digits and
/// `_.-` followed by `=` and a `scheme://` counts, so that a URL with `=` in its query
/// (`epm://h?iface=UUID`) or in a password is never split.
pub fn split_target_name(arg: &str) -> (Option<&str>, &str) {
    let Some(scheme_end) = arg.find("://") else {
        return (None, arg);
    };
    let head = &arg[..scheme_end];
    let Some(eq) = head.find('=') else {
        return (None, arg);
    };
    let (name, scheme) = (&head[..eq], &head[eq + 1..]);
    let name_ok = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '.' | '-'));
    if name_ok && scheme_ok {
        (Some(name), &arg[eq + 1..])
    } else {
        (None, arg)
    }
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
        // One pass over the checks with the (small) set of names asked for, not a set of every
        // check's name: a config of 10,000 checks run with one `--only`.
        let only: FxHashSet<&str> = input.only.iter().map(String::as_str).collect();
        let found: FxHashSet<&str> = checks
            .iter()
            .map(|c| c.name.as_str())
            .filter(|name| only.contains(name))
            .collect();
        if let Some(name) = input.only.iter().find(|n| !found.contains(n.as_str())) {
            let known: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
            return Err(PlanError::Usage(format!(
                "--only {name}: no such check in the config (known: {})",
                known.join(", ")
            )));
        }
        checks.retain(|c| only.contains(c.name.as_str()));
    }
    // Ad-hoc checks are named after their target; keep names unique all the same: `URL`, then
    // the first free of `URL#2`, `URL#3`... The set of names taken so far and, per URL, the next
    // suffix to try keep this linear in the number of checks (names are only ever added, so a
    // suffix once taken stays taken and the search can resume where it stopped).
    let mut taken: FxHashSet<String> = FxHashSet::default();
    let mut next_suffix: FxHashMap<&str, usize> = FxHashMap::default();
    if !input.targets.is_empty() {
        taken.extend(checks.iter().map(|c| c.name.clone()));
    }
    for arg in &input.targets {
        let (given_name, url) = split_target_name(arg);
        let target = Target::from_url(url).map_err(|e| PlanError::Usage(e.to_string()))?;
        if let Some(given) = given_name {
            // A name the user chose is kept as is: a clash is an error, not a silent `#2`.
            if !taken.insert(given.to_string()) {
                return Err(PlanError::Usage(format!(
                    "{given}={}: the name `{given}` is already used by another check",
                    crate::hostport::mask_url(url)
                )));
            }
            checks.push(CheckSpec {
                name: given.to_string(),
                from: cfg.defaults.zone.clone(),
                to: None,
                timeout: None,
                target,
            });
            continue;
        }
        let mut name = url.to_string();
        if taken.contains(&name) {
            let n = next_suffix.entry(url).or_insert(2);
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
    if let Some(hold) = input.hold {
        apply_hold(&mut checks, hold)?;
    }
    if input.list_endpoints {
        for c in &mut checks {
            if let Target::Epm(t) = &mut c.target {
                t.list_endpoints = true;
            }
        }
    }
    let output = OutputPlan::resolve(input.output.clone())?;
    let requested = input
        .concurrency
        .map(|c| c as usize)
        .or(cfg.defaults.concurrency)
        .unwrap_or(DEFAULT_CONCURRENCY);
    // Fitted under the open-file limit here, with the rest of the plan: nothing edits a plan
    // once it is built.
    let concurrency = crate::fdlimit::fit_concurrency_and_warn(requested, checks.len());
    Ok(Plan {
        checks: checks.into(),
        output,
        found_config: None,
        zone: cfg.defaults.zone.clone(),
        trace: input.trace,
        cert_warn_days: input
            .cert_warn_days
            .unwrap_or(crate::hops::certificate::DEFAULT_WARN_DAYS),
        timeout: input
            .timeout
            .or(cfg.defaults.timeout)
            .unwrap_or(DEFAULT_TIMEOUT),
        concurrency,
    })
}

/// `--hold` for every tcp and mssql check that has no `hold` of its own (a check's own wins).
/// A run with no such check is a usage error: the flag would test nothing.
fn apply_hold(checks: &mut [CheckSpec], hold: Duration) -> Result<(), PlanError> {
    let mut applies = false;
    for c in checks.iter_mut() {
        let own = match &mut c.target {
            Target::Tcp(t) => &mut t.hold,
            Target::Mssql(t) => &mut t.hold,
            _ => continue,
        };
        applies = true;
        own.get_or_insert(hold);
    }
    if applies {
        Ok(())
    } else {
        Err(PlanError::Usage(
            "--hold applies to tcp and mssql checks, and this run has none".into(),
        ))
    }
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
            trace: true,
            hold: None,
            cert_warn_days: None,
            output: OutputRequest {
                format: Format::Human,
                color: false,
                quiet: false,
                outputs: Vec::new(),
                textfile_dir: None,
                firewall_requests: Vec::new(),
                textfile_name: crate::report::outputs::TEXTFILE_NAME.into(),
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
    fn target_names() {
        let rows = [
            ("sql=tcp://h:1", Some("sql"), "tcp://h:1"),
            ("web-1.a_b=dns://h", Some("web-1.a_b"), "dns://h"),
            ("tcp://h:1", None, "tcp://h:1"),
            // `=` in the query, not before the scheme: no name.
            ("epm://h?iface=abc", None, "epm://h?iface=abc"),
            // Not a name: a space, or nothing before `=`.
            ("my sql=tcp://h:1", None, "my sql=tcp://h:1"),
            ("=tcp://h:1", None, "=tcp://h:1"),
            ("a=b=tcp://h:1", None, "a=b=tcp://h:1"),
            ("mssql://u@h/db?tx=local", None, "mssql://u@h/db?tx=local"),
        ];
        for (arg, name, url) in rows {
            assert_eq!(split_target_name(arg), (name, url), "{arg}");
        }
    }

    #[test]
    fn named_targets_keep_their_name_and_clashes_are_refused() {
        let plan = build(&input(&["sql=tcp://h:1", "tcp://h:1"], None)).unwrap();
        assert_eq!(names(&plan), ["sql", "tcp://h:1"]);
        let err = build(&input(&["a=tcp://h:1", "a=tcp://h:2"], None)).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
    }

    #[test]
    fn hold_flag_fills_in_checks_without_their_own() {
        let mut asked = input(
            &[
                "tcp://h:1",
                "tcp://h:2?hold=5s",
                "mssql://u@h/db",
                "dns://h",
            ],
            None,
        );
        asked.hold = Some(Duration::from_secs(15));
        let plan = build(&asked).unwrap();
        let holds: Vec<Option<Duration>> = plan
            .checks
            .iter()
            .map(|c| match &c.target {
                Target::Tcp(t) => t.hold,
                Target::Mssql(t) => t.hold,
                _ => None,
            })
            .collect();
        let s = |n| Some(Duration::from_secs(n));
        assert_eq!(holds, [s(15), s(5), s(15), None]);

        let mut nothing_to_hold = input(&["dns://h"], None);
        nothing_to_hold.hold = Some(Duration::from_secs(15));
        let err = build(&nothing_to_hold).unwrap_err();
        assert_eq!(err.exit_code(), exit::USAGE);
        assert!(err.to_string().contains("--hold"), "{err}");
    }

    #[test]
    fn default_config_prefers_the_local_file() {
        let env = Some(std::ffi::OsString::from("/etc/x.toml"));
        let local = default_config(|_| true, env.clone()).unwrap();
        assert_eq!(local.0, PathBuf::from("dtcprobe.toml"));
        let from_env = default_config(|_| false, env).unwrap();
        assert_eq!(from_env.0, PathBuf::from("/etc/x.toml"));
        assert!(default_config(|_| false, Some("".into())).is_none());
        assert!(default_config(|_| false, None).is_none());
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
