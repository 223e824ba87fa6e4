//! `dtcprobe prometheus-config --matrix matrix.toml`: the scrape configs for every zone's
//! `dtcprobe watch`, from a zone matrix.
//!
//! A zone's instance is the matrix's `watch = "HOST:PORT"` of that zone (never guessed: a zone
//! whose row has checks but no `watch` is named in a comment and on stderr, and not scraped).
//! Its modules are the checks of the config `dtcprobe matrix --zone-config ZONE` derives for that
//! zone, read back through the same parser the watch uses ([`zone_checks`]), so the module names
//! are exactly the check names the watch serves. Its job (and `prober` label) is the zone's name;
//! every probe target carries `from` = the zone and `to` = the cell's destination zone.
//!
//! The instances are rendered one after the other by [`crate::prometheus_config::render`]: the
//! first as a full file (unless `--jobs-only`), the others as job lists appended to it, which is
//! exactly how two `-c` instances are combined by hand. Pure: no I/O here.

use crate::matrix::config::MatrixPlan;
use crate::matrix::zone_config::{zone_checks, ZoneConfigError};
use crate::prometheus_config::{
    modules_from_checks, render, slow_probe_warnings, ProbeModule, ScrapeConfigError, ScrapeOptions,
};

/// One zone's watch as Prometheus scrapes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneInstance {
    pub zone: String,
    /// The matrix's `watch` of the zone.
    pub listen_address: String,
    pub modules: Vec<ProbeModule>,
}

/// What a matrix gives Prometheus: the instances, and what the user should hear about.
#[derive(Debug, Clone, Default)]
pub struct MatrixScrape {
    pub instances: Vec<ZoneInstance>,
    /// Zones with checks in their row but no `watch`: not scraped.
    pub unwatched: Vec<String>,
    /// Checks whose probe may outrun the scrape (see [`slow_probe_warnings`]).
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MatrixScrapeError {
    #[error("{file}: no zone has a `watch` address (the zone's `dtcprobe watch --metrics-listen` as Prometheus reaches it, e.g. watch = \"probe-web01:9715\"): nothing to scrape")]
    NoWatch { file: String },
    #[error(transparent)]
    ZoneConfig(#[from] ZoneConfigError),
    #[error(transparent)]
    Render(#[from] ScrapeConfigError),
}

/// The instances of a matrix. `source` names the file (comments, errors).
pub fn instances(
    plan: &MatrixPlan,
    source: &str,
    scrape_interval: Option<std::time::Duration>,
) -> Result<MatrixScrape, MatrixScrapeError> {
    let mut out = MatrixScrape::default();
    for zone in &plan.zones {
        let has_row = plan.cells_from(&zone.name).any(|c| !c.checks.is_empty());
        if !has_row {
            continue;
        }
        let Some(watch) = &zone.watch else {
            out.unwatched.push(zone.name.clone());
            continue;
        };
        let checks = zone_checks(plan, &zone.name, source)?;
        out.warnings.extend(
            slow_probe_warnings(&checks, plan.timeout, scrape_interval)
                .into_iter()
                .map(|w| format!("zone {}: {w}", zone.name)),
        );
        out.instances.push(ZoneInstance {
            zone: zone.name.clone(),
            listen_address: watch.clone(),
            modules: modules_from_checks(&checks),
        });
    }
    if out.instances.is_empty() {
        return Err(MatrixScrapeError::NoWatch {
            file: source.to_string(),
        });
    }
    Ok(out)
}

/// The YAML for every instance. `opts.listen_address` and `opts.job` are each zone's (`watch`,
/// name); the rest of `opts` applies to all.
pub fn render_matrix(
    scrape: &MatrixScrape,
    opts: &ScrapeOptions,
) -> Result<String, MatrixScrapeError> {
    let mut y = String::new();
    for zone in &scrape.unwatched {
        y.push_str(&format!(
            "# Zone {zone} has checks in {} but no `watch` address: its row is not scraped.\n",
            opts.source
        ));
    }
    for (i, instance) in scrape.instances.iter().enumerate() {
        let zone_opts = ScrapeOptions {
            listen_address: instance.listen_address.clone(),
            job: instance.zone.clone(),
            jobs_only: opts.jobs_only || i > 0,
            source: format!(
                "{} (zone {}: `dtcprobe matrix -c {} --zone-config {}`)",
                opts.source, instance.zone, opts.source, instance.zone
            ),
            ..opts.clone()
        };
        y.push_str(&render(&instance.modules, &zone_opts)?);
    }
    Ok(y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::config::parse;
    use crate::prometheus_config::ProbeTarget;
    use std::path::Path;

    const MATRIX: &str = r#"timeout = "500ms"

[[zone]]
name = "web"
hosts = ["198.18.1.2"]
watch = "198.18.1.2:9715"

[[zone]]
name = "app"
hosts = ["198.18.2.2"]
watch = "probe-app:9715"

[[zone]]
name = "sql"
hosts = ["198.18.3.2"]

[[zone]]
name = "partner"
hosts = ["gw.partner.example"]

[[reach]]
from = "*"
to = "sql"
mssql = true
epm = true

[[reach]]
from = "web"
to = "app"
tcp = [8080]

[[reach]]
from = "partner"
to = "web"
tcp = [443]
"#;

    fn plan(text: &str) -> MatrixPlan {
        parse(text, Path::new("m.toml"), None, &|_| Err("no keys".into()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn opts() -> ScrapeOptions {
        ScrapeOptions {
            listen_address: String::new(),
            job: String::new(),
            scrape_interval: Some(std::time::Duration::from_secs(2)),
            rule_files: vec!["dtcprobe-alerts.yml".into()],
            jobs_only: false,
            source: "m.toml".into(),
        }
    }

    #[test]
    fn one_instance_per_watched_zone_with_its_rows_checks_as_modules() {
        let p = plan(MATRIX);
        let s = instances(&p, "m.toml", Some(std::time::Duration::from_secs(2))).unwrap();
        let zones: Vec<(&str, &str)> = s
            .instances
            .iter()
            .map(|i| (i.zone.as_str(), i.listen_address.as_str()))
            .collect();
        assert_eq!(
            zones,
            [("web", "198.18.1.2:9715"), ("app", "probe-app:9715")]
        );
        // sql checks nothing (no rule from it): no instance, no note. partner has a row but no
        // watch: named, not scraped.
        assert_eq!(s.unwatched, ["partner"]);
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        for i in &s.instances {
            let row: Vec<(String, String)> = p
                .cells_from(&i.zone)
                .flat_map(|c| c.checks.iter().map(|k| (k.name.clone(), c.to.clone())))
                .collect();
            let modules: Vec<(String, String)> = i
                .modules
                .iter()
                .map(|m| {
                    assert_eq!(m.from.as_deref(), Some(i.zone.as_str()));
                    (m.name.clone(), m.to.clone().unwrap())
                })
                .collect();
            assert_eq!(modules, row, "{}", i.zone);
        }
        // Cells in zone order: web -> app, then web -> sql.
        let web: Vec<(&str, &ProbeTarget)> = s.instances[0]
            .modules
            .iter()
            .map(|m| (m.name.as_str(), &m.target))
            .collect();
        assert_eq!(
            web,
            [
                (
                    "app: tcp 198.18.2.2:8080",
                    &ProbeTarget::Param("198.18.2.2:8080".into())
                ),
                (
                    // The credential-free login: probed as configured (an mssql check is never
                    // pointed elsewhere by a scrape).
                    "sql: mssql 198.18.3.2:1433",
                    &ProbeTarget::Configured(
                        crate::target::Target::from_url(&crate::matrix::config::mssql_url(
                            "198.18.3.2",
                            1433
                        ))
                        .unwrap()
                        .display()
                    )
                ),
                (
                    "sql: epm 198.18.3.2",
                    &ProbeTarget::Param("198.18.3.2:135".into())
                ),
            ]
        );
    }

    #[test]
    fn the_yaml_has_one_full_file_then_job_lists_and_names_the_unwatched() {
        let p = plan(MATRIX);
        let s = instances(&p, "m.toml", None).unwrap();
        let y = render_matrix(&s, &opts()).unwrap();
        assert!(y.starts_with(
            "# Zone partner has checks in m.toml but no `watch` address: its row is not scraped.\n"
        ));
        assert_eq!(y.matches("scrape_configs:").count(), 1, "{y}");
        assert_eq!(y.matches("rule_files:").count(), 1, "{y}");
        for job in [
            "\"web\"",
            "\"web/sql: mssql 198.18.3.2:1433\"",
            "\"web/app: tcp 198.18.2.2:8080\"",
            "\"app\"",
            "\"app/sql: epm 198.18.3.2\"",
        ] {
            assert_eq!(
                y.matches(&format!("job_name: {job}\n")).count(),
                1,
                "{job}\n{y}"
            );
        }
        assert!(y.contains(
            "labels: {prober: \"app\", module: \"sql: epm 198.18.3.2\", from: \"app\", to: \"sql\"}"
        ));
        assert!(y.contains("replacement: \"probe-app:9715\""), "{y}");
        // --jobs-only: no file header at all.
        let y = render_matrix(
            &s,
            &ScrapeOptions {
                jobs_only: true,
                ..opts()
            },
        )
        .unwrap();
        assert!(!y.contains("scrape_configs:"), "{y}");
    }

    #[test]
    fn no_watch_anywhere_is_an_error_naming_the_file() {
        let p = plan(&MATRIX.replace("watch = ", "# watch = "));
        assert_eq!(
            instances(&p, "m.toml", None).unwrap_err(),
            MatrixScrapeError::NoWatch {
                file: "m.toml".into()
            }
        );
    }

    #[test]
    fn a_hop_timeout_too_long_for_the_scrape_is_named_with_its_zone() {
        let p = plan(&MATRIX.replace("timeout = \"500ms\"", "timeout = \"3s\""));
        let s = instances(&p, "m.toml", Some(std::time::Duration::from_secs(4))).unwrap();
        assert!(!s.warnings.is_empty());
        assert!(
            s.warnings
                .iter()
                .all(|w| w.starts_with("zone web: check ") || w.starts_with("zone app: check ")),
            "{:?}",
            s.warnings
        );
    }
}
