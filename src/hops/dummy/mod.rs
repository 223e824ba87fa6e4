//! Kind `dummy`, compiled only in tests: the proof that adding a kind is its folder plus one
//! registry line (`hops/mod.rs`). Nothing outside this folder names it, yet the tests below find
//! its facts wherever the rest of the program needs them: URL and config parsing, the firewall
//! request's service column, an agent's `--allow` default port and the kinds agents run, the
//! far side's probe of a failed connect, `/probe` retargeting and the Prometheus scrape config.

use crate::chain::RunContext;
use crate::check_table::{RawCheck, TargetError};
use crate::hops::kind::{Kind, Retarget};
use crate::hostport::{bracket_v6, url_host, TargetUrl};
use crate::model::{HopKind, HopResult};

#[derive(Debug, Clone, PartialEq)]
pub struct DummyTarget {
    pub host: String,
    pub port: u16,
}

impl Kind for DummyTarget {
    const NAME: &'static str = "dummy";
    const KEYS: &'static [&'static str] = &["port"];
    const SERVICE: Option<&'static str> = Some("Dummy service");
    const DEFAULT_PORT: Option<u16> = Some(7);
    const AGENT_RUNS: bool = true;
    const FAR_SIDE_PROBED: bool = true;
    const RETARGET: Retarget = Retarget::HostPort;

    fn from_url(url: &TargetUrl) -> Result<Self, TargetError> {
        let parsed = url.url()?;
        let host = url_host(&parsed).ok_or_else(|| url.invalid("no host"))?;
        if let Some((key, _)) = parsed.query_pairs().next() {
            return Err(url.invalid(format!("unknown parameter `{key}`")));
        }
        Ok(DummyTarget {
            host,
            port: parsed.port().unwrap_or(7),
        })
    }

    fn from_config(raw: &RawCheck, host: String) -> Result<Self, TargetError> {
        let port = raw.port.as_ref().map_or(7, |p| *p.get_ref());
        Ok(DummyTarget { host, port })
    }

    fn display(&self) -> String {
        format!("dummy://{}:{}", bracket_v6(&self.host), self.port)
    }

    fn host(&self) -> &str {
        &self.host
    }

    fn port(&self) -> Option<u16> {
        Some(self.port)
    }

    fn set_host(&mut self, host: String, port: Option<u16>) {
        self.host = host;
        self.port = port.unwrap_or(self.port);
    }

    async fn run(&self, _ctx: &RunContext) -> Vec<HopResult> {
        vec![HopResult::pass(HopKind::Tcp, "dummy")]
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use serde_json::json;

    use super::*;
    use crate::hops::Target;
    use crate::model::{Cause, CheckResult, Report};
    use crate::target::CheckSpec;

    fn spec(target: Target) -> CheckSpec {
        CheckSpec {
            name: "d".into(),
            from: None,
            to: None,
            timeout: None,
            target,
        }
    }

    #[test]
    fn parsed_from_a_url_and_a_config_table() {
        let t = Target::from_url("dummy://h1:9").unwrap();
        assert_eq!(t.kind(), "dummy");
        assert_eq!(t.display(), "dummy://h1:9");
        let e = Target::from_url("dummy://h1?hodl=5s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown parameter `hodl`"), "{e}");
        assert!(crate::hops::schemes().contains("dummy://"));

        let config = crate::config::parse(
            "[[check]]\nname = \"d\"\nkind = \"dummy\"\nhost = \"h2\"\nport = 8\n",
            std::path::Path::new("dummy.toml"),
        )
        .unwrap();
        assert_eq!(config.checks[0].target.display(), "dummy://h2:8");
    }

    #[test]
    fn a_firewall_request_names_its_service() {
        let hop = HopResult::fail(HopKind::Tcp, Cause::Timeout, "dropped").with_data(
            "attempts",
            json!([{"address": "198.18.0.2:7", "source": "198.18.0.1", "status": "fail",
                    "cause": "timeout", "duration_seconds": 1.0}]),
        );
        let check = CheckResult::new("d", "dummy", "dummy://h:7", vec![hop]);
        let report = Report::new(
            SystemTime::UNIX_EPOCH,
            Duration::from_secs(1),
            "here".into(),
            vec![check],
        );
        let rows = crate::verdict::firewall_requests(&report);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].service.as_deref(), Some("Dummy service"));
    }

    #[test]
    fn agents_run_it_and_probe_retargets_it() {
        assert!(crate::hops::agent_kinds().any(|k| k == "dummy"));
        assert!(crate::agent::policy::reverse_kinds().ends_with(", dummy"));
        // An agent's `--allow HOST:7` entry matches a dummy URL without a port.
        let url = url::Url::parse("dummy://h1").unwrap();
        assert_eq!(crate::agent::url_port(&url), Some(7));

        let module = spec(Target::from_url("dummy://h1:9").unwrap());
        let moved = crate::metrics_server::with_target(&module, "h2:10").unwrap();
        assert_eq!(moved.target.display(), "dummy://h2:10");
        let moved = crate::metrics_server::with_target(&module, "h3").unwrap();
        assert_eq!(moved.target.display(), "dummy://h3:9");

        let modules = crate::prometheus_config::modules_from_checks(&[module]);
        assert_eq!(
            modules[0].target,
            crate::prometheus_config::ProbeTarget::Param("h1:9".into())
        );
    }

    #[test]
    fn a_failed_connect_is_asked_about_from_the_far_side() {
        let hop = HopResult::fail(HopKind::Tcp, Cause::Timeout, "dropped").with_data(
            "attempts",
            json!([{"address": "198.18.0.2:7", "status": "fail", "cause": "timeout"}]),
        );
        let check = CheckResult::new("d", "dummy", "dummy://h:7", vec![hop]);
        let probes = crate::agent::far_side::probe::probes(&[check]);
        let urls: Vec<String> = probes.iter().map(|p| p.url()).collect();
        assert_eq!(urls, ["tcp://h:7"]);
    }
}
