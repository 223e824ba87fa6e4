//! One zone's row of a matrix as a dtcprobe config (`[[check]]` tables) for a `dtcprobe watch`
//! running in that zone: `dtcprobe matrix -c matrix.toml --zone-config ZONE`.
//!
//! Why derive it rather than write it: `prometheus-config --matrix` scrapes every zone's watch
//! with one `/probe` module per check of the zone's row, and a module is a check *name* the
//! watch serves. Both sides are produced here from the same [`MatrixPlan`], and
//! [`zone_checks`] reads the modules back by parsing this very text with the config parser the
//! watch uses, so the module list and the served checks cannot disagree for one matrix file.
//! (A watch left on an older derived config answers an unknown module with HTTP 400: that
//! target is `up == 0` and DtcprobeProberDown fires; never a silent pass.)
//!
//! Each check keeps the matrix's name and URL; `from` is the zone (the `[defaults] zone`) and
//! `to` the cell's destination zone, so the series carry the pair. Callback checks (MSDTC
//! calling back, `direction: reverse` in a matrix report) are ordinary forward checks of the
//! calling zone here: the watch runs them from that zone, towards the other zone's hosts.
//! Pure: no I/O.

use std::fmt::Write as _;

use super::config::MatrixPlan;
use crate::target::CheckSpec;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ZoneConfigError {
    #[error("--zone-config {zone:?}: no such zone in {file} (zones: {known})")]
    UnknownZone {
        zone: String,
        file: String,
        known: String,
    },
    #[error("zone `{zone}` checks nothing in {file} (no [[reach]] from it, nor a callback to it): there is no watch config to derive")]
    NothingToCheck { zone: String, file: String },
    /// The derived text did not parse back: a bug here, reported rather than printed.
    #[error("internal: the config derived for zone `{zone}` does not parse: {message}")]
    Internal { zone: String, message: String },
}

/// A TOML basic string (a JSON string is one: same quotes and escapes).
fn toml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// A duration as config files write it: `3s`, or `1500ms` when not whole seconds.
fn duration_text(d: std::time::Duration) -> String {
    let ms = d.as_millis().max(1);
    if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// The port of a `HOST:PORT` / `[v6]:PORT` address (validated when the matrix was read).
fn port_of(address: &str) -> &str {
    address.rsplit_once(':').map(|(_, p)| p).unwrap_or("9715")
}

/// The dtcprobe config text for `zone`'s watch. `source` names the matrix file in the header.
pub fn zone_config(plan: &MatrixPlan, zone: &str, source: &str) -> Result<String, ZoneConfigError> {
    let Some(z) = plan.zone(zone) else {
        return Err(ZoneConfigError::UnknownZone {
            zone: zone.to_string(),
            file: source.to_string(),
            known: plan
                .zones
                .iter()
                .map(|z| z.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let cells: Vec<_> = plan
        .cells_from(zone)
        .filter(|c| !c.checks.is_empty())
        .collect();
    if cells.is_empty() {
        return Err(ZoneConfigError::NothingToCheck {
            zone: zone.to_string(),
            file: source.to_string(),
        });
    }
    let source_line: String = source.chars().filter(|c| !c.is_control()).collect();
    let mut t = String::new();
    let _ = writeln!(
        t,
        "# dtcprobe config for the `dtcprobe watch` of zone {zone}, derived from {source_line}\n\
         # by `dtcprobe matrix -c {source_line} --zone-config {zone}`. Do not edit: derive it again when\n\
         # the matrix changes. `dtcprobe prometheus-config --matrix {source_line}` scrapes these\n\
         # checks by name (one /probe module each)."
    );
    match &z.watch {
        Some(w) => {
            let _ = writeln!(
                t,
                "# Run in zone {zone}: dtcprobe watch -c {zone}.toml --interval 1m --metrics-listen 0.0.0.0:{}\n\
                 # (the matrix's `watch` says Prometheus reaches it at {w}).",
                port_of(w)
            );
        }
        None => {
            let _ = writeln!(
                t,
                "# Zone {zone} has no `watch` address in the matrix: prometheus-config --matrix does not\n\
                 # scrape it."
            );
        }
    }
    let _ = writeln!(
        t,
        "\n[defaults]\nzone = {}\ntimeout = {}",
        toml_string(zone),
        toml_string(&duration_text(plan.timeout))
    );
    for cell in cells {
        let _ = writeln!(t, "\n# {} -> {}", cell.from, cell.to);
        for (i, c) in cell.checks.iter().enumerate() {
            let _ = writeln!(
                t,
                "{}[[check]]\nname = {}\ntarget = {}\nto = {}",
                if i == 0 { "" } else { "\n" },
                toml_string(&c.name),
                toml_string(&c.url),
                toml_string(&cell.to)
            );
        }
    }
    Ok(t)
}

/// The checks `zone`'s watch serves when it runs [`zone_config`]'s text: that text parsed by the
/// config parser `watch -c` uses. These are the zone's `/probe` modules.
pub fn zone_checks(
    plan: &MatrixPlan,
    zone: &str,
    source: &str,
) -> Result<Vec<CheckSpec>, ZoneConfigError> {
    let text = zone_config(plan, zone, source)?;
    crate::config::parse(&text, std::path::Path::new(&format!("{zone}.toml")))
        .map(|c| c.checks)
        .map_err(|e| ZoneConfigError::Internal {
            zone: zone.to_string(),
            message: e.to_string(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::config::parse;
    use std::path::Path;

    fn plan(text: &str) -> MatrixPlan {
        parse(text, Path::new("m.toml"), None, &|_| {
            Err("no keys here".into())
        })
        .unwrap_or_else(|e| panic!("{e}"))
    }

    const MATRIX: &str = r#"timeout = "1500ms"

[[zone]]
name = "web"
hosts = ["198.18.1.2"]
watch = "198.18.1.2:9715"

[[zone]]
name = "app"
hosts = ["198.18.2.2", "app02"]

[[zone]]
name = "sql"
hosts = ["198.18.3.2"]

[[reach]]
from = "web"
to = "sql"
mssql = true
dns = true

[[reach]]
from = "app"
to = "sql"
epm = true
callback = true
callback_tcp = [5000]

[[reach]]
from = "web"
to = "app"
tcp = [8080]
"#;

    #[test]
    fn the_derived_config_serves_exactly_the_row_with_its_names_and_zones() {
        let p = plan(MATRIX);
        for zone in ["web", "app", "sql"] {
            let checks = zone_checks(&p, zone, "m.toml").unwrap();
            let row: Vec<(String, String, String)> = p
                .cells_from(zone)
                .flat_map(|c| {
                    c.checks.iter().map(|k| {
                        // The agent runs the URL as `Target::from_url` reads it.
                        let target = crate::target::Target::from_url(&k.url).unwrap();
                        (k.name.clone(), target.display(), c.to.clone())
                    })
                })
                .collect();
            let served: Vec<(String, String, String)> = checks
                .iter()
                .map(|c| {
                    assert_eq!(c.from.as_deref(), Some(zone));
                    assert_eq!(c.timeout, None, "the timeout is the file's default");
                    (
                        c.name.clone(),
                        c.target.display(),
                        c.to.clone().unwrap_or_default(),
                    )
                })
                .collect();
            assert_eq!(served, row, "{zone}");
        }
        // The callback of app -> sql is sql's row, towards app's hosts.
        let sql = zone_checks(&p, "sql", "m.toml").unwrap();
        let names: Vec<&str> = sql.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "app: callback epm 198.18.2.2",
                "app: callback tcp 198.18.2.2:5000",
                "app: callback epm app02",
                "app: callback tcp app02:5000"
            ]
        );
        let text = zone_config(&p, "web", "m.toml").unwrap();
        assert!(
            text.contains("[defaults]\nzone = \"web\"\ntimeout = \"1500ms\"\n"),
            "{text}"
        );
        assert!(
            text.contains("--metrics-listen 0.0.0.0:9715"),
            "the run line uses the watch's port: {text}"
        );
        let cfg = crate::config::parse(&text, Path::new("web.toml")).unwrap();
        assert_eq!(
            cfg.defaults.timeout,
            Some(std::time::Duration::from_millis(1500))
        );
        assert!(zone_config(&p, "app", "m.toml")
            .unwrap()
            .contains("has no `watch` address"));
    }

    #[test]
    fn unknown_zones_and_empty_rows_are_errors() {
        let p = plan(
            "[[zone]]\nname = \"a\"\nhosts = [\"h1\"]\n[[zone]]\nname = \"b\"\nhosts = [\"h2\"]\n\
             [[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n",
        );
        assert_eq!(
            zone_config(&p, "c", "m.toml").unwrap_err().to_string(),
            "--zone-config \"c\": no such zone in m.toml (zones: a, b)"
        );
        assert!(matches!(
            zone_config(&p, "b", "m.toml"),
            Err(ZoneConfigError::NothingToCheck { .. })
        ));
    }

    #[test]
    fn a_watch_address_is_checked_where_it_is_written() {
        let base = "[[zone]]\nname = \"a\"\nhosts = [\"h1\"]\nwatch = \"WATCH\"\n\
                    [[zone]]\nname = \"b\"\nhosts = [\"h2\"]\n\
                    [[reach]]\nfrom = \"a\"\nto = \"b\"\ntcp = [1]\n";
        let bad = |w: &str| {
            parse(
                &base.replace("WATCH", w),
                Path::new("m.toml"),
                None,
                &|_| Err("no keys".into()),
            )
            .unwrap_err()
        };
        for w in ["probe-a", "probe-a:0", "http://probe-a:9715", "a b:1"] {
            let e = bad(w);
            assert_eq!(e.line, 4, "{w}: {e}");
            assert!(e.message.contains("expected HOST:PORT"), "{w}: {e}");
        }
        assert_eq!(
            plan(&base.replace("WATCH", "[::1]:9715")).zones[0]
                .watch
                .as_deref(),
            Some("[::1]:9715")
        );
        // A watch in a zone that checks nothing would serve no module.
        let text = base.replace("WATCH", "probe-a:9715").replace(
            "name = \"b\"\nhosts = [\"h2\"]\n",
            "name = \"b\"\nhosts = [\"h2\"]\nwatch = \"probe-b:9715\"\n",
        );
        let e = parse(&text, Path::new("m.toml"), None, &|_| Err("no keys".into())).unwrap_err();
        assert_eq!(e.line, 8, "{e}");
        assert!(e.message.contains("checks nothing"), "{e}");
    }
}
