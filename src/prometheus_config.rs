//! `dtcprobe prometheus-config`: the Prometheus scrape configs (YAML) for a `dtcprobe watch
//! --metrics-listen ADDR` instance, so that nobody hand-writes the blackbox-style relabelling.
//!
//! Per instance it emits one job for the watch's own `/metrics` (its rounds, flapping gauges, and
//! the `up` series that says the prober itself answers) and one job per module (= check) for
//! `/probe`, relabelled the way blackbox_exporter documents: the static target becomes
//! `__param_target` and the `instance` label, and `__address__` becomes the dtcprobe instance.
//! Modules whose kind takes no `target` parameter (SQL Server and PostgreSQL logins: their
//! credentials are never sent to a host named in a request, see `metrics_server::with_target`)
//! are scraped at the instance itself with no `target`, and `instance` is set to the configured
//! server so the series still name what was probed.
//!
//! Every target carries a `prober` label (the `--job` name) and probe targets a `module` label:
//! the shipped alert rules (config/dtcprobe-alerts.yml) select on `prober`, whatever the job names.
//! A check with zones (`from`, `to`) gives its probe target `from`/`to` labels, so that
//! `probe_success` too says which pair of zones it is about.
//!
//! The input is a list of [`ProbeModule`]s, built from a check config ([`modules_from_checks`]);
//! a zone matrix gives one such list per zone's watch (`crate::prometheus_matrix`). Rendering
//! does not know where it came from. Pure: no I/O here.

use std::fmt::Write as _;
use std::time::Duration;

use crate::hops::Retarget;
use crate::target::CheckSpec;

/// How Prometheus reaches one module on the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeTarget {
    /// Sent as `&target=VALUE` (host, `host:port`, `[v6]:port`); also the `instance` label.
    Param(String),
    /// No `target` parameter: the instance probes the module as configured. `instance` is this
    /// secret-free description of the configured target.
    Configured(String),
}

/// One `/probe` module as Prometheus should scrape it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeModule {
    /// The check name (`module=` parameter).
    pub name: String,
    /// The check's kind, for the comment above the job.
    pub kind: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub target: ProbeTarget,
}

/// What the command line gives besides the modules.
#[derive(Debug, Clone)]
pub struct ScrapeOptions {
    /// The dtcprobe instance as Prometheus reaches it, `HOST:PORT` (its `--metrics-listen`).
    pub listen_address: String,
    /// Job name of the instance's `/metrics` job, prefix of its probe jobs, value of `prober`.
    pub job: String,
    /// `scrape_interval` of every job (and the rules' `evaluation_interval` in a full file).
    pub scrape_interval: Option<Duration>,
    /// Rule files listed under `rule_files:` (full file only).
    pub rule_files: Vec<String>,
    /// Print only the jobs (list items indented by two), to paste under an existing
    /// `scrape_configs:` or append to a full file made for another instance.
    pub jobs_only: bool,
    /// Where the modules came from, for the header comment (e.g. the config path).
    pub source: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ScrapeConfigError {
    #[error("--listen-address {0:?}: expected HOST:PORT (the watch's --metrics-listen address as Prometheus reaches it, e.g. probe-web01:9715)")]
    BadListenAddress(String),
    #[error("--job {0:?}: must not be empty or contain control characters")]
    BadJob(String),
    #[error("the config has no checks: there is nothing to scrape")]
    NoModules,
}

/// The modules of a check config: hosts (and ports) become `target` parameters for the kinds
/// whose `/probe` accepts one ([`Retarget::HostPort`], [`Retarget::Host`]); every other kind is
/// probed as configured.
pub fn modules_from_checks(checks: &[CheckSpec]) -> Vec<ProbeModule> {
    checks
        .iter()
        .map(|c| {
            let host = c.target.host();
            let target = match (c.target.info().retarget, c.target.port()) {
                (Retarget::HostPort, Some(port)) => {
                    ProbeTarget::Param(format!("{}:{port}", crate::hostport::bracket_v6(host)))
                }
                (Retarget::Host, _) => ProbeTarget::Param(host.to_string()),
                _ => ProbeTarget::Configured(c.target.display()),
            };
            ProbeModule {
                name: c.name.clone(),
                kind: c.target.kind().to_string(),
                from: c.from.clone(),
                to: c.to.clone(),
                target,
            }
        })
        .collect()
}

/// Prometheus' default `scrape_timeout` (it never exceeds the job's interval).
const PROMETHEUS_DEFAULT_SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Prometheus' default `scrape_interval`.
const PROMETHEUS_DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(60);

/// Checks whose probe may outrun the scrape timeout: a probe cut short is `up == 0` and no
/// `probe_success` at all (DtcprobeProberDown fires, the check's own alerts cannot). A blocked
/// path costs at least one hop timeout, and the steps around it (DNS, the path trace after a
/// timeout, a login's later hops) more, so a hop timeout above half the scrape timeout is named.
/// `default_timeout` is the run's (the config's `defaults.timeout`, else 3s).
pub fn slow_probe_warnings(
    checks: &[CheckSpec],
    default_timeout: Duration,
    scrape_interval: Option<Duration>,
) -> Vec<String> {
    let scrape_timeout = scrape_interval
        .unwrap_or(PROMETHEUS_DEFAULT_SCRAPE_INTERVAL)
        .min(PROMETHEUS_DEFAULT_SCRAPE_TIMEOUT);
    checks
        .iter()
        .filter_map(|c| {
            let hop = c.timeout.unwrap_or(default_timeout);
            (hop * 2 > scrape_timeout).then(|| {
                format!(
                    "check {}: its hop timeout ({}) is more than half the scrape timeout ({}): a blocked path can make the probe outrun the scrape (`up == 0`, no result); lower the check's timeout, or scrape less often (the scrape timeout is at most 10s by default and never more than the interval)",
                    c.name,
                    prom_duration(hop),
                    prom_duration(scrape_timeout)
                )
            })
        })
        .collect()
}

/// Checks `HOST:PORT` (`[v6]:PORT` for IPv6): Prometheus needs the port in `__address__`.
pub fn validate_listen_address(text: &str) -> Result<(), ScrapeConfigError> {
    let bad = || ScrapeConfigError::BadListenAddress(text.to_string());
    let (host, port) = match text.strip_prefix('[') {
        Some(rest) => {
            let (host, after) = rest.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':').ok_or_else(bad)?)
        }
        None => text.rsplit_once(':').ok_or_else(bad)?,
    };
    let host_ok = !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "/?#@\"'".contains(c))
        && (text.starts_with('[') || !host.contains(':'));
    match port.parse::<u16>() {
        Ok(p) if p > 0 && host_ok => Ok(()),
        _ => Err(bad()),
    }
}

/// A YAML scalar: a JSON string is a valid YAML double-quoted scalar (escapes included), so
/// check names with quotes, colons or `#` cannot break the document.
fn q(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A Prometheus duration (`1s`, `1500ms`, `2m`): whole seconds when exact, else milliseconds.
fn prom_duration(d: Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A comment line's text: one line, no control characters.
fn comment_text(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The YAML text. Errors are the options' (checked here so that every caller gets them).
pub fn render(modules: &[ProbeModule], opts: &ScrapeOptions) -> Result<String, ScrapeConfigError> {
    validate_listen_address(&opts.listen_address)?;
    if opts.job.trim().is_empty() || opts.job.chars().any(char::is_control) {
        return Err(ScrapeConfigError::BadJob(opts.job.clone()));
    }
    if modules.is_empty() {
        return Err(ScrapeConfigError::NoModules);
    }
    let mut y = String::new();
    let addr = q(&opts.listen_address);
    let job = &opts.job;
    let _ = writeln!(
        y,
        "# Generated by `dtcprobe prometheus-config` from {}",
        comment_text(&opts.source)
    );
    let _ = writeln!(
        y,
        "# for `dtcprobe watch ... --metrics-listen` reached at {} (prober {}).",
        comment_text(&opts.listen_address),
        comment_text(job)
    );
    y.push_str(
        "# A probe's scrape_timeout (default 10s, at most the interval) must exceed the check's run\n\
         # time (its hop timeouts): a probe cut short is `up == 0`, not a result.\n",
    );
    // Jobs are list items indented by two, as under the `scrape_configs:` of a usual
    // prometheus.yml, so a --jobs-only block can be appended to a full file or pasted into one.
    let indent = "  ";
    if !opts.jobs_only {
        if let Some(i) = opts.scrape_interval {
            let _ = writeln!(y, "global:\n  evaluation_interval: {}", prom_duration(i));
        }
        if !opts.rule_files.is_empty() {
            y.push_str("rule_files:\n");
            for f in &opts.rule_files {
                let _ = writeln!(y, "  - {}", q(f));
            }
        }
        y.push_str("scrape_configs:\n");
    }
    let interval = opts
        .scrape_interval
        .map(|i| format!("{indent}  scrape_interval: {}\n", prom_duration(i)))
        .unwrap_or_default();

    let _ = writeln!(
        y,
        "{indent}# The instance's own rounds (/metrics) and `up` for the prober itself."
    );
    let _ = write!(
        y,
        "{indent}- job_name: {}\n{interval}{indent}  metrics_path: /metrics\n\
         {indent}  static_configs:\n\
         {indent}    - targets: [{addr}]\n\
         {indent}      labels: {{prober: {}}}\n",
        q(job),
        q(job)
    );
    for m in modules {
        let zones = match (&m.from, &m.to) {
            (None, None) => String::new(),
            (f, t) => format!(
                " ({} -> {})",
                f.as_deref().unwrap_or("any"),
                t.as_deref().unwrap_or("any")
            ),
        };
        let _ = writeln!(
            y,
            "{indent}# {} check {}{}",
            comment_text(&m.kind),
            comment_text(&m.name),
            comment_text(&zones)
        );
        let (target, relabel) = match &m.target {
            ProbeTarget::Param(t) => (
                q(t),
                format!(
                    "{indent}    - source_labels: [__address__]\n\
                     {indent}      target_label: __param_target\n\
                     {indent}    - source_labels: [__param_target]\n\
                     {indent}      target_label: instance\n\
                     {indent}    - target_label: __address__\n\
                     {indent}      replacement: {addr}\n"
                ),
            ),
            ProbeTarget::Configured(shown) => {
                let _ = writeln!(
                    y,
                    "{indent}# A {} module takes no `target`: its credentials stay with its configured server.",
                    comment_text(&m.kind)
                );
                (
                    addr.clone(),
                    format!(
                        "{indent}    - target_label: instance\n\
                         {indent}      replacement: {}\n",
                        // `$` in a replacement refers to a regex group: `$$` is a literal one.
                        q(&shown.replace('$', "$$"))
                    ),
                )
            }
        };
        // The check's zones as target labels, so that every series of the probe (probe_success
        // too, which has no labels of its own) names the pair. The check's own series carry the
        // same `from`/`to` (same check): honor_labels keeps them as they are instead of
        // renaming them `exported_from`/`exported_to`. /probe exposes no `job`, `instance`,
        // `prober` or `module` label, so honouring cannot replace those.
        let zone_labels: String = [("from", &m.from), ("to", &m.to)]
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|v| format!(", {k}: {}", q(v))))
            .collect();
        let honor = if zone_labels.is_empty() {
            String::new()
        } else {
            format!("{indent}  honor_labels: true\n")
        };
        let _ = write!(
            y,
            "{indent}- job_name: {}\n{interval}{indent}  metrics_path: /probe\n\
             {indent}  params: {{module: [{}]}}\n{honor}\
             {indent}  static_configs:\n\
             {indent}    - targets: [{target}]\n\
             {indent}      labels: {{prober: {}, module: {}{zone_labels}}}\n\
             {indent}  relabel_configs:\n{relabel}",
            q(&format!("{job}/{}", m.name)),
            q(&m.name),
            q(job),
            q(&m.name),
        );
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> ScrapeOptions {
        ScrapeOptions {
            listen_address: "probe-web:9715".into(),
            job: "web".into(),
            scrape_interval: None,
            rule_files: vec![],
            jobs_only: false,
            source: "t.toml".into(),
        }
    }

    fn checks(toml: &str) -> Vec<CheckSpec> {
        crate::config::parse(toml, std::path::Path::new("t.toml"))
            .unwrap()
            .checks
    }

    #[test]
    fn probe_targets_follow_what_probe_accepts() {
        let cs = checks(
            "[[check]]\nname=\"a\"\nkind=\"tcp\"\nhost=\"::1\"\nport=1433\n\
             [[check]]\nname=\"b\"\nkind=\"dns\"\nhost=\"sql01\"\n\
             [[check]]\nname=\"c\"\nkind=\"epm\"\nhost=\"sql01\"\n\
             [[check]]\nname=\"d\"\nkind=\"mssql\"\nhost=\"sql01\"\nuser=\"probe\"\ndatabase=\"master\"\npassword_env=\"X\"\n",
        );
        let ms = modules_from_checks(&cs);
        assert_eq!(ms[0].target, ProbeTarget::Param("[::1]:1433".into()));
        assert_eq!(ms[1].target, ProbeTarget::Param("sql01".into()));
        assert_eq!(ms[2].target, ProbeTarget::Param("sql01:135".into()));
        assert!(matches!(&ms[3].target, ProbeTarget::Configured(s) if s.starts_with("mssql://")));
        // Sending the generated target probes exactly the configured check.
        for (c, m) in cs.iter().zip(&ms) {
            match &m.target {
                ProbeTarget::Param(t) => {
                    assert_eq!(&crate::metrics_server::with_target(c, t).unwrap(), c)
                }
                ProbeTarget::Configured(_) => {
                    assert!(crate::metrics_server::with_target(c, "sql01").is_err())
                }
            }
        }
    }

    #[test]
    fn no_target_module_is_scraped_at_the_instance_without_target() {
        let cs = checks(
            "[[check]]\nname=\"login\"\nkind=\"mssql\"\nhost=\"sql01\"\nuser=\"probe\"\ndatabase=\"master\"\npassword_env=\"X\"\n",
        );
        let y = render(&modules_from_checks(&cs), &opts()).unwrap();
        let job = y.split("job_name: \"web/login\"").nth(1).unwrap();
        assert!(job.contains("targets: [\"probe-web:9715\"]"), "{y}");
        assert!(!job.contains("__param_target"), "{y}");
        assert!(job.contains("replacement: \"mssql://"), "{y}");
    }

    #[test]
    fn zones_become_target_labels_and_the_checks_own_are_honoured() {
        let cs = checks(
            "[defaults]\nzone = \"app\"\n\
             [[check]]\nname=\"to-sql\"\nkind=\"tcp\"\nhost=\"sql01\"\nport=1433\nto=\"sql\"\n\
             [[check]]\nname=\"plain\"\nkind=\"dns\"\nhost=\"h\"\n",
        );
        let mut ms = modules_from_checks(&cs);
        ms[1].from = None;
        let y = render(&ms, &opts()).unwrap();
        let job = |name: &str| {
            y.split(&format!("job_name: \"web/{name}\""))
                .nth(1)
                .unwrap()
                .split("- job_name:")
                .next()
                .unwrap()
                .to_string()
        };
        let to_sql = job("to-sql");
        assert!(
            to_sql.contains(
                "labels: {prober: \"web\", module: \"to-sql\", from: \"app\", to: \"sql\"}"
            ),
            "{y}"
        );
        assert!(to_sql.contains("\n    honor_labels: true\n"), "{y}");
        // No zones: no zone labels, nothing honoured.
        let plain = job("plain");
        assert!(
            plain.contains("labels: {prober: \"web\", module: \"plain\"}"),
            "{y}"
        );
        assert!(!plain.contains("honor_labels"), "{y}");
    }

    #[test]
    fn a_dollar_in_the_configured_target_stays_literal() {
        let m = ProbeModule {
            name: "login".into(),
            kind: "mssql".into(),
            from: None,
            to: None,
            target: ProbeTarget::Configured("mssql://svc$probe@sql01/master".into()),
        };
        let y = render(&[m], &opts()).unwrap();
        assert!(
            y.contains("replacement: \"mssql://svc$$probe@sql01/master\""),
            "{y}"
        );
    }

    #[test]
    fn names_are_quoted_and_options_checked() {
        let cs = checks("[[check]]\nname=\"a: \\\"b\\\" # c\"\nkind=\"dns\"\nhost=\"h\"\n");
        let y = render(&modules_from_checks(&cs), &opts()).unwrap();
        assert!(y.contains(r#"params: {module: ["a: \"b\" # c"]}"#), "{y}");
        for bad in [
            "probe-web",
            "probe-web:",
            "probe-web:99999",
            ":9715",
            "::1:9715",
            "a b:1",
        ] {
            let o = ScrapeOptions {
                listen_address: bad.into(),
                ..opts()
            };
            assert!(render(&modules_from_checks(&cs), &o).is_err(), "{bad}");
        }
        assert!(validate_listen_address("[::1]:9715").is_ok());
        let o = ScrapeOptions {
            job: " ".into(),
            ..opts()
        };
        assert_eq!(
            render(&modules_from_checks(&cs), &o),
            Err(ScrapeConfigError::BadJob(" ".into()))
        );
        assert_eq!(render(&[], &opts()), Err(ScrapeConfigError::NoModules));
    }

    #[test]
    fn probes_that_can_outrun_the_scrape_are_named() {
        let cs = checks(
            "[[check]]\nname=\"fast\"\nkind=\"dns\"\nhost=\"h\"\ntimeout=\"500ms\"\n\
             [[check]]\nname=\"slow\"\nkind=\"dns\"\nhost=\"h\"\n",
        );
        let three = Duration::from_secs(3);
        // Default interval 1m: scrape timeout 10s; 3s hops fit.
        assert!(slow_probe_warnings(&cs, three, None).is_empty());
        let w = slow_probe_warnings(&cs, three, Some(Duration::from_secs(5)));
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].starts_with("check slow: its hop timeout (3s)"),
            "{w:?}"
        );
        assert!(w[0].contains("scrape timeout (5s)"), "{w:?}");
    }

    #[test]
    fn jobs_only_is_a_bare_list() {
        let cs = checks("[[check]]\nname=\"a\"\nkind=\"dns\"\nhost=\"h\"\n");
        let o = ScrapeOptions {
            jobs_only: true,
            scrape_interval: Some(Duration::from_millis(1500)),
            ..opts()
        };
        let y = render(&modules_from_checks(&cs), &o).unwrap();
        assert!(
            !y.contains("scrape_configs:") && !y.contains("global:"),
            "{y}"
        );
        assert!(
            y.contains("\n  - job_name: \"web\"\n    scrape_interval: 1500ms\n"),
            "{y}"
        );
    }
}
