//! Hop `dtc_name` end to end (issue 23 finding 8): the real binary in the "web" zone asks TDS
//! peers in the "sql" zone for their MSDTC's whereabouts (TM_GET_DTC_ADDRESS, answered with an
//! SWhereabouts as a Windows MSDTC writes it), then resolves the DTC host name inside through a
//! real DNS server (dnsmasq) forward and reverse, and connects to TCP 135 on it.
//!
//! Names are NetBIOS-style single labels, as MSDTC writes them: the web zone's resolv.conf has
//! `search zone.test`, as a domain member's DNS suffix list would. One peer per case, each naming
//! another host: a name that resolves, has a matching PTR and an endpoint mapper (pass); one the
//! zone's DNS does not know (dns_nxdomain); one whose address's PTR names another host
//! (dns_mismatch, a warn); one whose address drops 135 (timeout, and a firewall row). tx=enlist
//! runs the hop
//! too, on Linux, while tx_enlist itself is skipped there.

use std::io::Write;
use std::net::SocketAddr;

use crate::support;
use support::netns::{can_run_netns_tests, check_named_in, start_dnsmasq, Zones, SQL_IP};
use support::tds_peer::tm::{whereabouts_naming, TmConfig};
use support::tds_peer::{PeerConfig, TdsPeer};
use support::{hop, parse_report};

/// A second address of the sql zone, whose 135 the zone's firewall drops.
const NO_EPM_IP: &str = "198.18.0.3";

#[test]
fn dtc_host_name_from_the_whereabouts_is_resolved_and_reached_from_this_zone() {
    let test = "dtc_host_name_from_the_whereabouts_is_resolved_and_reached_from_this_zone";
    if !can_run_netns_tests(test) {
        return;
    }
    let zones = Zones::new("dpm");
    zones
        .sql
        .sh(&format!("ip addr add {NO_EPM_IP}/24 dev eth0"));
    zones.web.etc_file(
        "resolv.conf",
        "nameserver 198.18.0.2\nsearch zone.test\noptions timeout:1 attempts:1\n",
    );
    let _dns = start_dnsmasq(
        &zones.sql,
        SQL_IP,
        &[
            // A and the matching PTR.
            "--host-record=sqldtc.zone.test,198.18.0.2",
            "--host-record=noepm.zone.test,198.18.0.3",
            // An alias whose address's PTR names sqldtc: MSDTC's name check disagrees.
            "--address=/stale.zone.test/198.18.0.2",
            // Every other name (the bare label tried after the search suffix too) is this
            // server's to answer: NXDOMAIN, as a real DNS answers it, not REFUSED for want of an
            // upstream server.
            "--local=/#/",
        ],
    );
    let epm: SocketAddr = format!("{SQL_IP}:135").parse().unwrap();
    let _epm = zones.sql.listen_tcp(epm);
    // The sql zone's host firewall drops 135 on its second address.
    zones.sql.nft(&format!(
        "table ip zonefw {{\n chain input {{\n type filter hook input priority 0; policy accept;\n ip daddr {NO_EPM_IP} tcp dport 135 drop\n }}\n}}\n"
    ));

    let cases = [
        ("named", "SQLDTC", 1433),
        ("ghost", "GHOSTDTC", 1434),
        ("stale", "STALE", 1435),
        ("noepm", "NOEPM", 1436),
    ];
    let mut peers = Vec::new();
    for (_, dtc_host, port) in cases {
        let config = PeerConfig {
            tm: TmConfig {
                whereabouts: Some(whereabouts_naming(dtc_host)),
                ..TmConfig::default()
            },
            ..PeerConfig::default()
        };
        let at: SocketAddr = format!("{SQL_IP}:{port}").parse().unwrap();
        peers.push(zones.sql.inside(move || TdsPeer::start_on(at, config)));
    }
    let mut pw = tempfile::NamedTempFile::new().unwrap();
    writeln!(pw, "{}", PeerConfig::default().password).unwrap();
    let url = |port: u16, tx: &str| {
        format!("mssql://probe@{SQL_IP}:{port}/app?tx={tx}&trust_server_certificate=true")
    };
    let mut named: Vec<String> = cases
        .iter()
        .map(|(name, _, port)| format!("{name}={}", url(*port, "distributed")))
        .collect();
    named.push(format!("enlist={}", url(1433, "enlist")));
    let (code, stdout, stderr) = check_named_in(&zones.web, pw.path().to_str().unwrap(), &named);
    assert_eq!(
        code, 1,
        "a failed dtc_name fails the run; stderr: {stderr}\n{stdout}"
    );
    let report = parse_report(&stdout);
    crate::report_schema::assert_valid("dtc_name in namespaces", &report);

    // The name resolves, its PTR agrees, 135 answers.
    let h = hop(&report, "named", "dtc_name");
    assert_eq!(h["status"], "pass", "{h:#}");
    assert_eq!(h["data"]["tm_host"], "SQLDTC", "{h:#}");
    assert_eq!(h["data"]["addresses"][0], SQL_IP, "{h:#}");
    assert_eq!(h["data"]["ptr"][SQL_IP][0], "sqldtc.zone.test", "{h:#}");
    assert_eq!(h["data"]["port"], 135);
    assert_eq!(
        h["data"]["tm_protocols"],
        serde_json::json!(["msdtc_v1", "msdtc_v2"])
    );
    assert_eq!(
        h["data"]["tm_rpc_protocols"],
        serde_json::json!(["ncacn_ip_tcp"])
    );
    assert_eq!(h["data"]["sql_address"], SQL_IP);
    // tx_distributed ran first and passed; dtc_name is its own hop after it.
    assert_eq!(hop(&report, "named", "tx_distributed")["status"], "pass");

    // The zone's DNS does not know the name: the enlistment would fail at the export.
    let h = hop(&report, "ghost", "dtc_name");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("fail"), Some("dns_nxdomain")),
        "{h:#}"
    );
    assert_eq!(h["data"]["tm_host"], "GHOSTDTC");
    let hint = h["hint"].as_str().unwrap();
    assert!(
        hint.contains("TM_GET_DTC_ADDRESS") && hint.contains("hosts file"),
        "{hint}"
    );
    assert!(
        h["data"].get("attempts").is_none(),
        "no connect without an address: {h:#}"
    );

    // Its address's PTR names another host.
    let h = hop(&report, "stale", "dtc_name");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("warn"), Some("dns_mismatch")),
        "{h:#}"
    );
    assert!(h["hint"].as_str().unwrap().contains("PTR"), "{h:#}");

    // 135 dropped there.
    let h = hop(&report, "noepm", "dtc_name");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("fail"), Some("timeout")),
        "{h:#}"
    );
    assert_eq!(
        h["data"]["attempts"][0]["address"],
        format!("{NO_EPM_IP}:135")
    );
    assert!(h["hint"].as_str().unwrap().contains("TCP 135"), "{h:#}");
    // A blocked 135 is a firewall row, named as MSDTC's endpoint mapper.
    let rows = report["firewall_requests"].as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["destination"] == NO_EPM_IP
            && r["ports"] == "135"
            && r["evidence_hop"] == "dtc_name"),
        "{rows:#?}"
    );

    // tx=enlist on Linux: tx_enlist is skipped (no local MSDTC), dtc_name still runs before it.
    let h = hop(&report, "enlist", "dtc_name");
    assert_eq!(h["status"], "pass", "{h:#}");
    let enlist = hop(&report, "enlist", "tx_enlist");
    assert_eq!(enlist["cause"], "unsupported", "{enlist:#}");
    let kinds: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "enlist")
        .unwrap()["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hop"].as_str().unwrap())
        .collect();
    let at = |k: &str| kinds.iter().position(|x| *x == k).unwrap();
    assert!(at("dtc_name") + 1 == at("tx_enlist"), "{kinds:?}");
    drop(peers);
}
