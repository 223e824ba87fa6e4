//! MSDTC judged on both sides of a `peer` run: the pair of configurations, and the two CIDs.

use serde_json::json;

use super::checks::check;
use crate::model::{Cause, CheckResult, Direction, HopKind, HopResult};

/// Pure: when this run read MSDTC's configuration on both sides (a forward `msdtc` check and a
/// reverse one, each with a `dtc_config` hop), the pair judged together: check `msdtc_pair`
/// (authentication levels that cannot work together, the direction each side must allow) and,
/// unless `--cid` with the agent's `cid` already produced it, check `msdtc_cid` from the two CIDs
/// the registry gave (the same comparison, [`compare_cids`]). Nothing when either check is absent.
pub fn msdtc_pair_checks(
    agent: &str,
    zone: Option<String>,
    agent_zone: Option<String>,
    checks: &[CheckResult],
) -> Vec<CheckResult> {
    let config_hop = |direction: Direction| {
        checks
            .iter()
            .filter(|c| c.kind == "msdtc" && c.direction == direction)
            .flat_map(|c| c.hops.iter())
            .find(|h| h.hop == HopKind::DtcConfig)
    };
    let (Some(near), Some(far)) = (
        config_hop(Direction::Forward),
        config_hop(Direction::Reverse),
    ) else {
        return Vec::new();
    };
    use crate::hops::msdtc::{compare_pair, MsdtcConfig};
    let target = format!("agent://{agent}");
    let pair_check = |name: &str, kind: &str, hop: HopResult| {
        check(
            name,
            kind,
            target.clone(),
            zone.clone(),
            agent_zone.clone(),
            Direction::Forward,
            vec![hop],
        )
    };
    let (near_config, far_config) = (
        MsdtcConfig::from_data(&near.data),
        MsdtcConfig::from_data(&far.data),
    );
    let (Some(near_config), Some(far_config)) = (near_config.as_ref(), far_config.as_ref()) else {
        let (side, hop) = if near_config.is_none() {
            ("this host", near)
        } else {
            ("the agent's host", far)
        };
        let skipped = HopResult::skip(
            HopKind::DtcConfig,
            format!(
                "not compared: {side} has no MSDTC configuration in this report ({} {}: {})",
                hop.hop.as_str(),
                hop.status.as_str(),
                hop.detail
            ),
        );
        return vec![pair_check("msdtc_pair", "msdtc_pair", skipped)];
    };
    let mut out = vec![pair_check(
        "msdtc_pair",
        "msdtc_pair",
        compare_pair(near_config, far_config),
    )];
    let cid_compared = checks.iter().any(|c| c.kind == "msdtc_cid");
    if let (false, Some(local), Some(remote)) = (cid_compared, &near_config.cid, &far_config.cid) {
        out.push(pair_check(
            "msdtc_cid",
            "msdtc_cid",
            compare_cids(local, remote),
        ));
    }
    out
}

/// Pure: compares two MSDTC CIDs (GUIDs; braces and case ignored).
pub fn compare_cids(local: &str, remote: &str) -> HopResult {
    let norm = |s: &str| {
        s.trim()
            .trim_matches(|c| c == '{' || c == '}')
            .to_ascii_lowercase()
    };
    let data = json!({ "local": local, "remote": remote });
    if norm(local) == norm(remote) {
        HopResult::fail(HopKind::TxDistributed, Cause::DuplicateCid, format!("both hosts have MSDTC CID {}", norm(local)))
            .with_hint(
                "identical MSDTC CIDs (cloned VM or image without sysprep) make MSDTC treat the two hosts as one and \
                 distributed transactions between them fail: on one host run `msdtc -uninstall` then `msdtc -install` \
                 (Windows) and re-apply the DTC security settings",
            )
            .with_data("cid", data)
    } else {
        HopResult::pass(HopKind::TxDistributed, "MSDTC CIDs differ").with_data("cid", data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Status;

    /// A `dtc_config` check as `msdtc://localhost` produces it, here or (reverse) on the agent.
    fn dtc_check(direction: Direction, config: &crate::hops::msdtc::MsdtcConfig) -> CheckResult {
        use crate::hops::msdtc::{config_hop, Role};
        let mut c = CheckResult::new(
            "m",
            "msdtc",
            "msdtc://localhost",
            vec![config_hop(config, Role::Both)],
        );
        c.direction = direction;
        c
    }

    #[test]
    fn msdtc_pair_from_both_sides_configs() {
        use crate::hops::msdtc::{MsdtcConfig, ServiceState};
        let good = |allow_only_secure: u32, turn_off: u32, cid: &str| MsdtcConfig {
            service_state: Some(ServiceState::Running),
            network_dtc_access: Some(1),
            network_dtc_access_inbound: Some(1),
            network_dtc_access_outbound: Some(1),
            allow_only_secure_rpc_calls: Some(allow_only_secure),
            turn_off_rpc_security: Some(turn_off),
            cid: Some(cid.into()),
            ..MsdtcConfig::default()
        };
        let pair = |near: &MsdtcConfig, far: &MsdtcConfig, more: Vec<CheckResult>| {
            let mut checks = vec![
                dtc_check(Direction::Forward, near),
                dtc_check(Direction::Reverse, far),
            ];
            checks.extend(more);
            msdtc_pair_checks(
                "sql01:7135",
                Some("web".into()),
                Some("sql".into()),
                &checks,
            )
        };
        // Mutual here, none there, and the same CID: both problems, in two checks.
        let out = pair(&good(1, 0, "aaaa"), &good(0, 1, "AAAA"), vec![]);
        assert_eq!(out.len(), 2, "{out:#?}");
        assert_eq!(
            (out[0].name.as_str(), out[0].kind.as_str()),
            ("msdtc_pair", "msdtc_pair")
        );
        assert_eq!(out[0].hops[0].cause, Some(Cause::DtcAuthMismatch));
        assert_eq!(out[0].target, "agent://sql01:7135");
        assert_eq!(
            (out[0].from.as_deref(), out[0].to.as_deref()),
            (Some("web"), Some("sql"))
        );
        assert_eq!(out[1].name, "msdtc_cid");
        assert_eq!(out[1].hops[0].cause, Some(Cause::DuplicateCid));
        // Compatible and distinct: both pass.
        let out = pair(&good(1, 0, "aaaa"), &good(1, 0, "bbbb"), vec![]);
        assert_eq!(
            out.iter().map(|c| c.status).collect::<Vec<_>>(),
            [Status::Pass, Status::Pass]
        );
        // `--cid` already compared the CIDs: not twice.
        let given = check(
            "msdtc_cid",
            "msdtc_cid",
            "agent://sql01:7135".into(),
            None,
            None,
            Direction::Forward,
            vec![compare_cids("x", "y")],
        );
        let out = pair(&good(1, 0, "aaaa"), &good(1, 0, "aaaa"), vec![given]);
        assert_eq!(out.len(), 1, "{out:#?}");
        // The agent could not read its side (a Linux agent): skipped, and says why.
        let mut linux = CheckResult::new(
            "m",
            "msdtc",
            "msdtc://localhost",
            vec![HopResult::unsupported(
                HopKind::DtcConfig,
                "needs the Windows build",
            )],
        );
        linux.direction = Direction::Reverse;
        let checks = vec![dtc_check(Direction::Forward, &good(1, 0, "a")), linux];
        let out = msdtc_pair_checks("a:1", None, None, &checks);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, Status::Skip);
        assert!(
            out[0].hops[0].detail.contains("the agent's host"),
            "{:?}",
            out[0].hops[0]
        );
        assert!(out[0].hops[0].detail.contains("needs the Windows build"));
        // Only one side read: nothing to compare.
        let checks = vec![dtc_check(Direction::Forward, &good(1, 0, "a"))];
        assert!(msdtc_pair_checks("a:1", None, None, &checks).is_empty());
    }

    #[test]
    fn cid_comparison_table() {
        let cases = [
            ("{5D1E...A}", "{5d1e...a}", Status::Fail),
            ("5d1eaaaa-0000", "{5D1EAAAA-0000}", Status::Fail),
            ("aaaa", "bbbb", Status::Pass),
        ];
        for (l, r, want) in cases {
            let hop = compare_cids(l, r);
            assert_eq!(hop.status, want, "{l} vs {r}");
            if want == Status::Fail {
                assert_eq!(hop.cause, Some(Cause::DuplicateCid));
            }
            assert_eq!(hop.data["cid"]["local"], l);
        }
    }
}
