//! A matrix zone's row run by its agent, with no credential anywhere: SQL Server through the
//! credential-free login (issue 24 item 4) and Kerberos/LDAP to the domain controllers of a
//! zone (issue 28 item 3, rule `kerberos = true`, kind `kdc`), against a real Active Directory
//! DC (Samba, support/samba_ad.rs) and the TDS test peer, both in the "dc" namespace behind a
//! router. The web zone's agent runs the row; the matrix runs in the router namespace (the
//! agent's callback comes back there). The same row derived for the zone's `watch`
//! (`--zone-config`) and run there gives the same verdicts.
//!
//! Zones of the matrix: `dc` (the SQL Server's address, and the DC by name), `ad` (the DCs found
//! through DNS SRV from the web zone: `dcs = "srv:dtc.test"`), `junk` (the SQL Server's address,
//! on a port where something that is not SQL Server answers).

use std::net::SocketAddr;
use std::path::Path;

use serde_json::Value;

use crate::agent_netns::AgentProc;
use crate::support::netns::{can_run_netns_tests, dtcprobe_in};
use crate::support::samba_ad::{self, AdZones, SambaAd};
use crate::support::tds_peer::{Behaviour, PeerConfig, TdsPeer};
use crate::support::zone_agent::allow_section;
use crate::support::{hop, write_key};

const KEY: &str = "5b1f0e4a8c2d7e6f9a3b1c0d2e4f6a8b9c7d5e3f1a2b4c6d8e0f1a3b5c7d9e1f";
const JUNK_PORT: u16 = 1533;

fn matrix_text() -> String {
    format!(
        r#"key_file = "agent.key"
timeout = "2s"

[[zone]]
name = "web"
agent = "{web}:7135"
hosts = ["{web}"]

[[zone]]
name = "dc"
hosts = ["{sql}"]
dcs = ["{dc_host}"]

[[zone]]
name = "ad"
dcs = "srv:{domain}"

[[zone]]
name = "junk"
hosts = ["{sql}"]

[[reach]]
from = "web"
to = "dc"
mssql = true
kerberos = true

[[reach]]
from = "web"
to = "ad"
kerberos = true

[[reach]]
from = "web"
to = "junk"
mssql = true
mssql_port = {JUNK_PORT}
"#,
        web = samba_ad::WEB_IP,
        sql = samba_ad::SQL_IP,
        dc_host = samba_ad::DC_HOST,
        domain = samba_ad::DOMAIN,
    )
}

fn cell<'a>(report: &'a Value, to: &str) -> &'a Value {
    report["cells"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["from"] == "web" && c["to"] == to)
        .unwrap_or_else(|| panic!("no cell web -> {to} in {report:#}"))
}

fn status(h: &Value) -> (&str, &str) {
    (
        h["status"].as_str().unwrap_or(""),
        h["cause"].as_str().unwrap_or(""),
    )
}

fn matrix_json(zones: &AdZones, matrix: &Path) -> (i32, Value, String) {
    let (code, out, err) = dtcprobe_in(
        &zones.router,
        &["matrix", "-c", matrix.to_str().unwrap(), "-f", "json"],
    );
    let json: Value = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("matrix -f json is not JSON ({e}):\n{out}\n{err}"));
    (code, json, err)
}

#[test]
fn matrix_cells_test_tds_and_kerberos_from_the_zone_without_credentials() {
    let test = "matrix_cells_test_tds_and_kerberos_from_the_zone_without_credentials";
    if !can_run_netns_tests(test) || !samba_ad::available(test) {
        return;
    }
    let zones = AdZones::new("dpmk");
    let dc = SambaAd::start(&zones);
    let sql: SocketAddr = format!("{}:1433", samba_ad::SQL_IP).parse().unwrap();
    let peer = zones
        .dc
        .inside(move || TdsPeer::start_on(sql, PeerConfig::default()));
    let junk: SocketAddr = format!("{}:{JUNK_PORT}", samba_ad::SQL_IP).parse().unwrap();
    let _junk = zones.dc.inside(move || {
        TdsPeer::start_on(
            junk,
            PeerConfig {
                behaviour: Behaviour::Garbage(
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n".to_vec(),
                ),
                ..PeerConfig::default()
            },
        )
    });
    let dir = tempfile::tempdir().unwrap();
    write_key(&dir.path().join("agent.key"), format!("{KEY}\n"));
    let matrix = dir.path().join("matrix.toml");
    std::fs::write(&matrix, matrix_text()).unwrap();

    // The web agent runs with exactly the allow list --print-allow gives: each DC (and the SRV
    // domain) on 88, the SQL Server's port.
    let (code, allow, err) = dtcprobe_in(
        &zones.router,
        &["matrix", "-c", matrix.to_str().unwrap(), "--print-allow"],
    );
    assert_eq!(code, 0, "--print-allow: {err}");
    let section = allow_section(&allow, "web");
    for entry in [
        format!("\"{}:88\"", samba_ad::DC_HOST),
        format!("\"{}:88\"", samba_ad::DOMAIN),
        format!("\"{}:1433\"", samba_ad::SQL_IP),
    ] {
        assert!(section.contains(&entry), "{entry} missing:\n{section}");
    }
    let config = dir.path().join("agent-web.toml");
    std::fs::write(&config, &section).unwrap();
    // Listens on port 7135, the matrix's `agent`.
    let agent = AgentProc::start_on(
        &zones.web,
        samba_ad::WEB_IP,
        &dir.path().join("agent.key"),
        Some(&config),
    );

    // Everything open: SQL Server answers the random login with 18456 (a pass), the DC answers
    // on every Kerberos/LDAP flow, found by name and through SRV; the junk port fails the login.
    let (code, report, err) = matrix_json(&zones, &matrix);
    let context = || format!("{report:#}\n{err}\n{}\n{}", agent.log(), dc.logs());
    assert_eq!(code, 1, "the junk cell fails: {}", context());
    let web_dc = cell(&report, "dc");
    assert_eq!(web_dc["state"], "pass", "{}", context());
    let mssql_check = format!("dc: mssql {}:1433", samba_ad::SQL_IP);
    let login = hop(web_dc, &mssql_check, "login");
    assert_eq!(status(login).0, "pass", "{login:#}");
    assert_eq!(login["data"]["credential_free"], true, "{login:#}");
    assert_eq!(login["data"]["error"]["number"], 18456, "{login:#}");
    let kdc = hop(
        web_dc,
        &format!("dc: kerberos {}", samba_ad::DC_HOST),
        "kdc",
    );
    assert_eq!(status(kdc).0, "pass", "{kdc:#}");
    assert_eq!(kdc["data"]["realm"], samba_ad::REALM);
    assert_eq!(kdc["data"]["kdcs"][0]["found_by"], "target", "{kdc:#}");
    assert_eq!(kdc["data"]["attempts"].as_array().unwrap().len(), 4);
    let web_ad = cell(&report, "ad");
    assert_eq!(web_ad["state"], "pass", "{}", context());
    let srv = hop(
        web_ad,
        &format!("ad: kerberos srv {}", samba_ad::DOMAIN),
        "kdc",
    );
    assert!(
        srv["data"]["kdcs"][0]["found_by"]
            .as_str()
            .unwrap()
            .starts_with("dns_srv "),
        "{srv:#}"
    );
    let web_junk = cell(&report, "junk");
    assert_eq!(web_junk["state"], "fail", "{}", context());
    let junk_login = hop(
        web_junk,
        &format!("junk: mssql {}:{JUNK_PORT}", samba_ad::SQL_IP),
        "login",
    );
    assert_eq!(
        status(junk_login),
        ("fail", "protocol_error"),
        "{junk_login:#}"
    );
    assert_eq!(junk_login["data"]["credential_free"], true);
    // The peer saw one random user, refused; no credential came from anywhere.
    let logins: Vec<(String, bool)> = peer.logins();
    assert!(
        !logins.is_empty()
            && logins
                .iter()
                .all(|(u, ok)| u.starts_with("dtcprobe-probe-") && !ok),
        "{logins:?}"
    );

    // The zone's watch runs the same row: derived with --zone-config, run in the zone.
    let (code, derived, err) = dtcprobe_in(
        &zones.router,
        &[
            "matrix",
            "-c",
            matrix.to_str().unwrap(),
            "--zone-config",
            "web",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let web_toml = dir.path().join("web.toml");
    std::fs::write(&web_toml, &derived).unwrap();
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-c", web_toml.to_str().unwrap(), "-f", "json"],
    );
    assert_eq!(code, 1, "the junk check fails:\n{out}\n{err}");
    let watched: Value = serde_json::from_str(&out).unwrap();
    let login = hop(&watched, &mssql_check, "login");
    assert_eq!(
        (status(login).0, &login["data"]["credential_free"]),
        ("pass", &Value::Bool(true)),
        "{login:#}"
    );
    let kdc = hop(
        &watched,
        &format!("dc: kerberos {}", samba_ad::DC_HOST),
        "kdc",
    );
    assert_eq!(status(kdc).0, "pass", "{kdc:#}");

    // The router drops Kerberos (TCP and UDP 88) to the DC and SQL Server's port: both cells
    // fail, and the firewall request names each flow and its service.
    zones.router.nft(&format!(
        "table inet f {{\n  chain blocked {{\n    type filter hook forward priority 0;\n    \
         ip daddr {dc} tcp dport 88 drop\n    ip daddr {dc} udp dport 88 drop\n    \
         ip daddr {sql} tcp dport 1433 drop\n  }}\n}}\n",
        dc = samba_ad::DC_IP,
        sql = samba_ad::SQL_IP,
    ));
    let (code, report, err) = matrix_json(&zones, &matrix);
    let context = || format!("{report:#}\n{err}");
    assert_eq!(code, 1, "{}", context());
    let web_dc = cell(&report, "dc");
    assert_eq!(web_dc["state"], "fail", "{}", context());
    let kdc = hop(
        web_dc,
        &format!("dc: kerberos {}", samba_ad::DC_HOST),
        "kdc",
    );
    assert_eq!(status(kdc), ("fail", "timeout"), "{kdc:#}");
    let tcp = hop(web_dc, &mssql_check, "tcp");
    assert_eq!(status(tcp), ("fail", "timeout"), "{tcp:#}");
    assert_eq!(cell(&report, "ad")["state"], "fail", "{}", context());
    let rows: Vec<(String, String, String, String)> = report["firewall_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["destination"].as_str().unwrap_or("").to_string(),
                r["protocol"].as_str().unwrap_or("").to_string(),
                r["ports"].as_str().unwrap_or("").to_string(),
                r["service"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let want = |d: &str, p: &str, port: &str, s: &str| {
        (
            d.to_string(),
            p.to_string(),
            port.to_string(),
            s.to_string(),
        )
    };
    for row in [
        want(samba_ad::DC_IP, "tcp", "88", "Kerberos"),
        want(samba_ad::DC_IP, "udp", "88", "Kerberos"),
        want(samba_ad::SQL_IP, "tcp", "1433", "SQL Server"),
    ] {
        assert!(rows.contains(&row), "{row:?} missing from {rows:#?}");
    }
    // 464 and 389 stay open: no row for them.
    assert!(
        !rows.iter().any(|r| r.2 == "464" || r.2 == "389"),
        "{rows:#?}"
    );
    // The grid says the same (docs/matrix.md shows this output).
    let (code, human, err) =
        dtcprobe_in(&zones.router, &["matrix", "-c", matrix.to_str().unwrap()]);
    assert_eq!(code, 1, "{human}\n{err}");
    for line in [
        format!(
            "web {} -> dc {} UDP 88 (Kerberos) DROPPED",
            samba_ad::WEB_IP,
            samba_ad::DC_IP
        ),
        format!(
            "web {} -> dc {} TCP 1433 (SQL Server) DROPPED",
            samba_ad::WEB_IP,
            samba_ad::SQL_IP
        ),
    ] {
        assert!(human.contains(&line), "{line} missing:\n{human}");
    }
    drop(agent);
}
