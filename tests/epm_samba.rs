//! End-to-end against a real endpoint mapper: Samba's samba-dcerpcd in a "sql" namespace, the real
//! dtcprobe binary in a "web" namespace, nftables between them. The zone scenario of issue 4:
//! TCP 135 open, the dynamic RPC range dropped -> `epm` pass, `rpc_port` fail with `timeout`.

use crate::support::{self, samba};

use std::collections::BTreeSet;

use samba::{Samba, LSARPC, SYSTEM_PYTHON, WINREG};
use serde_json::Value;
use support::netns::{can_run_netns_tests, dtcprobe_in, Zones, SQL_IP};
use support::{hop, parse_report};

const DROP_DYNAMIC_RANGE: &str = r#"
table inet zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 49152-65535 drop
  }
}
"#;

const DROP_135: &str = r#"
table inet zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 135 drop
  }
}
"#;

fn ports_of(h: &Value) -> Vec<u16> {
    h["data"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap() as u16)
        .collect()
}

#[test]
fn open_135_with_dropped_dynamic_range_fails_rpc_port_on_timeout() {
    let test = "open_135_with_dropped_dynamic_range_fails_rpc_port_on_timeout";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let zones = Zones::new("dpe");
    let samba = Samba::start(&zones.sql, SQL_IP);
    let url = format!("epm://{SQL_IP}?iface={LSARPC}");

    // Control: no firewall, both hops pass, and the port is one Samba really listens on.
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--timeout", "2s", &url],
    );
    let report = parse_report(&out);
    assert_eq!(code, 0, "stderr: {err}\n{report:#}");
    let epm = hop(&report, &url, "epm");
    assert_eq!(epm["status"], "pass", "{epm:#}");
    let ports = ports_of(epm);
    let listening = samba.listening_ports(&zones.sql);
    assert!(
        !ports.is_empty() && ports.iter().all(|p| *p >= 49152 && listening.contains(p)),
        "{ports:?} vs {listening:?}"
    );
    assert_eq!(hop(&report, &url, "rpc_port")["status"], "pass");

    // The zone firewall: 135 passes, the dynamic range is dropped.
    zones.sql.nft(DROP_DYNAMIC_RANGE);
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--timeout", "2s", &url],
    );
    let report = parse_report(&out);
    assert_eq!(code, 1, "a failed check exits 1; stderr: {err}\n{report:#}");
    let epm = hop(&report, &url, "epm");
    assert_eq!(epm["status"], "pass", "{epm:#}");
    assert_eq!(
        ports_of(epm),
        ports,
        "the mapper answers the same through the firewall"
    );
    let rpc = hop(&report, &url, "rpc_port");
    assert_eq!(
        (&rpc["status"], &rpc["cause"]),
        (&Value::from("fail"), &Value::from("timeout")),
        "{rpc:#}"
    );
    assert_eq!(
        rpc["hint"],
        "allow the RPC dynamic range or pin MSDTC with ServerTcpPort and open that port, in both directions"
    );
    assert!(rpc["duration_seconds"].as_f64().unwrap() >= 1.9, "{rpc:#}");
    assert_eq!(report["checks"][0]["status"], "fail");

    // The human report names the hop and the cause too.
    let (code, out, _) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "plain", "--timeout", "2s", &url],
    );
    assert_eq!(code, 1);
    assert!(out.contains("rpc_port") && out.contains("timeout"), "{out}");
}

#[test]
fn ixnremote_is_not_registered_on_samba_but_winreg_is() {
    let test = "ixnremote_is_not_registered_on_samba_but_winreg_is";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let zones = Zones::new("dpe");
    let _samba = Samba::start(&zones.sql, SQL_IP);
    let dtc = format!("epm://{SQL_IP}");
    let winreg = format!("epm://{SQL_IP}:135?iface={WINREG}");
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--timeout", "2s", &dtc, &winreg],
    );
    let report = parse_report(&out);
    assert_eq!(code, 1, "stderr: {err}\n{report:#}");
    let epm = hop(&report, &dtc, "epm");
    assert_eq!(
        (&epm["status"], &epm["cause"]),
        (&Value::from("fail"), &Value::from("epm_not_registered")),
        "{epm:#}"
    );
    assert!(
        epm["hint"]
            .as_str()
            .unwrap()
            .contains("Distributed Transaction Coordinator"),
        "{epm:#}"
    );
    assert_eq!(hop(&report, &dtc, "rpc_port")["status"], "skip");
    assert_eq!(hop(&report, &winreg, "epm")["status"], "pass");
    assert_eq!(hop(&report, &winreg, "rpc_port")["status"], "pass");
}

#[test]
fn dropped_135_fails_epm_not_rpc_port() {
    let test = "dropped_135_fails_epm_not_rpc_port";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let zones = Zones::new("dpe");
    let _samba = Samba::start(&zones.sql, SQL_IP);
    zones.sql.nft(DROP_135);
    let url = format!("epm://{SQL_IP}?iface={LSARPC}");
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--timeout", "1s", &url],
    );
    let report = parse_report(&out);
    assert_eq!(code, 1, "stderr: {err}\n{report:#}");
    let epm = hop(&report, &url, "epm");
    assert_eq!(
        (&epm["status"], &epm["cause"]),
        (&Value::from("fail"), &Value::from("timeout")),
        "{epm:#}"
    );
    assert_eq!(hop(&report, &url, "rpc_port")["status"], "skip");
}

/// impacket's own NDR decoder on the same mapper: ept_lookup (all entries) and ept_map (lsarpc).
const IMPACKET: &str = r#"
import sys, json
from impacket.dcerpc.v5 import epm, transport
from impacket.uuid import bin_to_string, uuidtup_to_bin
host = sys.argv[1]
dce = transport.DCERPCTransportFactory(r'ncacn_ip_tcp:%s[135]' % host).get_dce_rpc()
dce.connect()
dce.bind(epm.MSRPC_UUID_PORTMAP)
out = []
handle = epm.ept_lookup_handle_t()
for _ in range(64):
    req = epm.ept_lookup()
    req['inquiry_type'] = epm.RPC_C_EP_ALL_ELTS
    req['object'] = epm.NULL
    req['Ifid'] = epm.NULL
    req['vers_option'] = epm.RPC_C_VERS_ALL
    req['entry_handle'] = handle
    req['max_ents'] = 500
    # Samba sends its last batch together with ept_s_not_registered: read it anyway.
    resp = dce.request(req, checkError=False)
    for i in range(resp['num_ents']):
        e = resp['entries'][i]
        floors = epm.EPMTower(b''.join(e['tower']['tower_octet_string']))['Floors']
        out.append({'iface': str(floors[0]).lower(), 'binding': epm.PrintStringBinding(floors),
                    'annotation': b''.join(e['annotation']).rstrip(b'\0').decode(),
                    'object': bin_to_string(e['object']).lower()})
    handle = resp['entry_handle']
    if resp['status'] != 0 or handle.isNull():
        break
dce.disconnect()
lsarpc = epm.hept_map(host, uuidtup_to_bin(('12345778-1234-abcd-ef00-0123456789ab', '0.0')), protocol='ncacn_ip_tcp')
print(json.dumps({'entries': out, 'lsarpc': lsarpc}))
"#;

#[test]
fn list_endpoints_agrees_with_impacket() {
    let test = "list_endpoints_agrees_with_impacket";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let zones = Zones::new("dpe");
    let _samba = Samba::start(&zones.sql, SQL_IP);
    let url = format!("epm://{SQL_IP}?iface={LSARPC}");
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--list-endpoints", &url],
    );
    let report = parse_report(&out);
    assert_eq!(code, 0, "stderr: {err}\n{report:#}");
    let epm = hop(&report, &url, "epm");
    let ours: BTreeSet<(String, String, String, String)> = epm["data"]["entries"]
        .as_array()
        .unwrap_or_else(|| panic!("no entries: {epm:#}"))
        .iter()
        .map(|e| {
            (
                format!(
                    "{} v{}",
                    e["uuid"].as_str().unwrap(),
                    e["version"].as_str().unwrap()
                ),
                e["binding"].as_str().unwrap().to_string(),
                e["annotation"].as_str().unwrap().to_string(),
                e["object"].as_str().unwrap().to_string(),
            )
        })
        .collect();

    let py = zones
        .web
        .command(SYSTEM_PYTHON)
        .args(["-c", IMPACKET, SQL_IP])
        .output()
        .expect("run python3");
    assert!(
        py.status.success(),
        "impacket failed: {}",
        String::from_utf8_lossy(&py.stderr)
    );
    let theirs: Value = serde_json::from_slice(&py.stdout).unwrap();
    let theirs_set: BTreeSet<(String, String, String, String)> = theirs["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["iface"].as_str().unwrap().to_string(),
                e["binding"].as_str().unwrap_or("").to_string(),
                e["annotation"].as_str().unwrap().to_string(),
                e["object"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    // Samba registers dozens of entries (lsarpc, winreg, samr... on ncacn_ip_tcp, ncacn_np,
    // ncalrpc), and answers in several fragments: both decoders must see the same list.
    assert!(ours.len() >= 10, "{ours:#?}");
    assert_eq!(
        epm["data"]["entries"].as_array().unwrap().len(),
        theirs["entries"].as_array().unwrap().len()
    );
    assert_eq!(ours, theirs_set);
    // ept_map through impacket gives the port our epm hop reported.
    let mapped = theirs["lsarpc"].as_str().unwrap();
    let ports = ports_of(epm);
    assert!(
        ports
            .iter()
            .any(|p| mapped == format!("ncacn_ip_tcp:{SQL_IP}[{p}]")),
        "{mapped} vs {ports:?}"
    );

    // The same listing in the text formats: one plain line per entry, and the rpcdump-style
    // block in human output.
    let (_, plain, _) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "plain", "--list-endpoints", &url],
    );
    let plain_entries = plain
        .lines()
        .filter(|l| l.split('\t').nth(1) == Some("endpoint"))
        .count();
    assert_eq!(plain_entries, ours_len(epm), "{plain}");
    assert!(
        plain.contains("12345778-1234-abcd-ef00-0123456789ab\t0.0\t"),
        "{plain}"
    );
    let (_, human, _) = dtcprobe_in(&zones.web, &["check", "--list-endpoints", &url]);
    assert!(
        human.contains("Endpoint mapper")
            && human.contains("UUID: 12345778-1234-abcd-ef00-0123456789ab v0.0  lsarpc"),
        "{human}"
    );
}

fn ours_len(epm: &Value) -> usize {
    epm["data"]["entries"].as_array().map(Vec::len).unwrap_or(0)
}

/// The ports the `epm` check of `url` found (its `epm` hop's data), run from `ns`.
fn mapped_ports(ns: &support::netns::Netns, url: &str) -> Vec<u16> {
    let (code, out, err) = dtcprobe_in(ns, &["check", "-f", "json", "--timeout", "2s", url]);
    let report = parse_report(&out);
    assert_eq!(code, 0, "stderr: {err}\n{report:#}");
    ports_of(hop(&report, url, "epm"))
}

/// `rpc_bind` against Samba: lsarpc on the port the mapper returned is accepted (bind_ack), and
/// the tower's address is the one reached. Then a NAT rule in the server's zone sends winreg's
/// port to the lsarpc server: the mapper's answer and the TCP connect still pass, but the RPC
/// server there rejects winreg's interface, which only `rpc_bind` shows.
#[test]
fn rpc_bind_passes_on_the_right_server_and_is_rejected_by_another() {
    let test = "rpc_bind_passes_on_the_right_server_and_is_rejected_by_another";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let zones = Zones::new("dpe");
    let _samba = Samba::start(&zones.sql, SQL_IP);
    let lsarpc = format!("epm://{SQL_IP}?iface={LSARPC}");
    let winreg = format!("epm://{SQL_IP}?iface={WINREG}");
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--timeout", "2s", &lsarpc],
    );
    let report = parse_report(&out);
    assert_eq!(code, 0, "stderr: {err}\n{report:#}");
    let bind = hop(&report, &lsarpc, "rpc_bind");
    assert_eq!(bind["status"], "pass", "{bind:#}");
    let binds = bind["data"]["binds"].as_array().unwrap();
    assert!(!binds.is_empty());
    for b in binds {
        assert_eq!(b["answer"], "bind_ack", "{bind:#}");
        assert_eq!(b["tower_address"], SQL_IP, "{bind:#}");
    }

    let lsarpc_port = mapped_ports(&zones.web, &lsarpc)[0];
    let winreg_ports = mapped_ports(&zones.web, &winreg);
    assert!(
        !winreg_ports.contains(&lsarpc_port),
        "Samba serves winreg and lsarpc on one port ({lsarpc_port}): the test needs two servers"
    );
    let redirects: String = winreg_ports
        .iter()
        .map(|p| format!("    tcp dport {p} redirect to :{lsarpc_port}\n"))
        .collect();
    zones.sql.nft(&format!(
        "table ip portfwd {{\n  chain prerouting {{\n    type nat hook prerouting priority -100; policy accept;\n{redirects}  }}\n}}\n"
    ));
    let (code, out, err) = dtcprobe_in(
        &zones.web,
        &["check", "-f", "json", "--timeout", "2s", &winreg],
    );
    let report = parse_report(&out);
    assert_eq!(code, 1, "stderr: {err}\n{report:#}");
    assert_eq!(hop(&report, &winreg, "epm")["status"], "pass");
    assert_eq!(hop(&report, &winreg, "rpc_port")["status"], "pass");
    let bind = hop(&report, &winreg, "rpc_bind");
    assert_eq!(
        (bind["status"].as_str(), bind["cause"].as_str()),
        (Some("fail"), Some("protocol_error")),
        "{bind:#}"
    );
    let answer = bind["data"]["binds"][0]["answer"].as_str().unwrap();
    assert!(
        answer == "context_rejected" || answer == "bind_nak",
        "{bind:#}"
    );
    assert!(
        bind["hint"]
            .as_str()
            .unwrap()
            .contains("does not offer this interface"),
        "{bind:#}"
    );
}

/// An RPC-aware firewall in miniature: the handshake to the dynamic range passes, the first
/// segment carrying data (the bind) is dropped, or answered with a reset. `rpc_port` passes
/// (the "firewall logs clean" case), `rpc_bind` fails with `timeout` / `reset` and the hint
/// names RPC inspection.
#[test]
fn rpc_filtered_after_the_handshake_fails_rpc_bind_not_rpc_port() {
    let test = "rpc_filtered_after_the_handshake_fails_rpc_bind_not_rpc_port";
    if !can_run_netns_tests(test) || !samba::available(test) {
        return;
    }
    let zones = Zones::new("dpe");
    let _samba = Samba::start(&zones.sql, SQL_IP);
    let url = format!("epm://{SQL_IP}?iface={LSARPC}");
    // Pure ACKs of the handshake are 52 bytes (20 IP + 32 TCP with timestamps); a bind is
    // 72 bytes of payload more. Only segments with payload match `ip length > 64`.
    for (action, cause, answer) in [
        ("drop", "timeout", "no_answer"),
        ("reject with tcp reset", "reset", "reset"),
    ] {
        zones.sql.nft(&format!(
            "table ip rpcips {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    \
             tcp dport 49152-65535 tcp flags & (syn | ack) == ack ip length > 64 {action}\n  }}\n}}\n"
        ));
        let (code, out, err) = dtcprobe_in(
            &zones.web,
            &["check", "-f", "json", "--timeout", "2s", &url],
        );
        let report = parse_report(&out);
        assert_eq!(code, 1, "{action}: stderr: {err}\n{report:#}");
        assert_eq!(hop(&report, &url, "epm")["status"], "pass", "{action}");
        assert_eq!(
            hop(&report, &url, "rpc_port")["status"],
            "pass",
            "{action}: {report:#}"
        );
        let bind = hop(&report, &url, "rpc_bind");
        assert_eq!(
            (bind["status"].as_str(), bind["cause"].as_str()),
            (Some("fail"), Some(cause)),
            "{action}: {bind:#}"
        );
        assert_eq!(
            bind["data"]["binds"][0]["answer"], answer,
            "{action}: {bind:#}"
        );
        assert!(
            bind["hint"]
                .as_str()
                .unwrap()
                .contains("RPC-aware firewall"),
            "{action}: {bind:#}"
        );
    }
}
