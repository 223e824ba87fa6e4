//! The MSDTC CID comparison across both sides of a `peer` run, end to end: the real `dtcprobe
//! peer` in the "web" namespace, the real `dtcprobe agent` in the "sql" namespace, and a scripted
//! endpoint mapper in each zone (Samba registers no MSDTC, so no CID) announcing IXnRemote under
//! a CID. The forward `epm` check reads the SQL side's CID, the agent's reverse `epm` check this
//! side's; the report compares them: the same CID on both hosts is `duplicate_cid` on both `epm`
//! hops, different CIDs pass.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::time::Duration;

use serde_json::Value;

use crate::epm_peer::{peer as mapper_peer, registered, CID_A};
use crate::support::netns::{can_run_netns_tests, dtcprobe_bin, Netns, Zones, SQL_IP, WEB_IP};
use crate::support::{hop, parse_report};

const KEY: &str = "75faf6849f8cc91111967e661b2917424827a9548e36e99e76b34c3b46852061";
const CID_OTHER: &str = "5a5a5a5a-6b6b-4c4c-8d8d-0e0e0e0e0e0e";

/// A scripted mapper serving inside `ns` on `ip`, from a thread that joined that namespace
/// (`setns` changes only the calling thread). Stops when the returned sender is dropped.
fn mapper_in(ns: &Netns, ip: &str, cid: &'static str) -> (u16, std::sync::mpsc::Sender<()>) {
    let path = format!("/run/netns/{}", ns.name);
    let ip: Ipv4Addr = ip.parse().unwrap();
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: a valid fd for a network namespace; affects this thread only.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let p = mapper_peer(ip, registered(cid, 4096)).await;
            port_tx.send(p.addr.port()).unwrap();
            // Serve until the test drops the sender (bounded by the test's own lifetime).
            let _ = tokio::task::spawn_blocking(move || stop_rx.recv()).await;
        });
    });
    let port = port_rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the mapper did not start");
    (port, stop_tx)
}

/// One `peer` run with the SQL side's mapper announcing `sql_cid` and this side's `web_cid`.
fn peer_run(
    prefix: &str,
    sql_cid: &'static str,
    web_cid: &'static str,
) -> (i32, Value, String, String) {
    let zones = Zones::new(prefix);
    zones
        .sql
        .etc_file("hosts", &format!("127.0.0.1 localhost\n{WEB_IP} webhost\n"));
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("agent.key");
    crate::support::write_key(&key, format!("{KEY}\n"));
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "zone = \"sql\"\n").unwrap();

    let (sql_port, _stop_sql) = mapper_in(&zones.sql, SQL_IP, sql_cid);
    let (web_port, _stop_web) = mapper_in(&zones.web, WEB_IP, web_cid);

    let mut agent = zones
        .sql
        .command(dtcprobe_bin())
        .args(["agent", "--listen", &format!("{SQL_IP}:7135"), "--key-file"])
        .arg(&key)
        .arg("-c")
        .arg(&config)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn agent");
    let listening = crate::support::netns::wait_until(Duration::from_secs(20), || {
        let out = zones.sql.command("ss").args(["-Hltn"]).output().unwrap();
        String::from_utf8_lossy(&out.stdout).contains(&format!("{SQL_IP}:7135"))
    });
    assert!(listening, "the agent did not listen");

    let forward = format!("epm://{SQL_IP}:{sql_port}");
    let reverse = format!("epm://caller:{web_port}");
    let out = zones
        .web
        .command(dtcprobe_bin())
        .args([
            "peer",
            "198.18.0.2:7135",
            "--key-file",
            key.to_str().unwrap(),
            "--caller-name",
            "webhost",
            "--zone",
            "web",
            "-f",
            "json",
            "--timeout",
            "2s",
            &forward,
            "--reverse",
            &reverse,
        ])
        .env("NO_COLOR", "1")
        .output()
        .expect("run peer");
    let _ = agent.kill();
    let _ = agent.wait();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let report = parse_report(&stdout);
    (
        out.status.code().unwrap_or(-1),
        report,
        forward,
        format!("reverse {reverse}"),
    )
}

#[test]
fn same_cid_on_both_sides_of_a_peer_run_is_duplicate_cid() {
    let test = "same_cid_on_both_sides_of_a_peer_run_is_duplicate_cid";
    if !can_run_netns_tests(test) {
        return;
    }
    let (code, report, forward, reverse) = peer_run("dpcs", CID_A, CID_A);
    assert_eq!(code, 1, "{report:#}");
    for (check, other_host) in [(&forward, WEB_IP), (&reverse, SQL_IP)] {
        let epm = hop(&report, check, "epm");
        assert_eq!(
            (epm["status"].as_str(), epm["cause"].as_str()),
            (Some("fail"), Some("duplicate_cid")),
            "{check}: {epm:#}"
        );
        assert_eq!(epm["data"]["cid"], CID_A, "{epm:#}");
        assert!(
            epm["data"]["duplicate_of"][0]
                .as_str()
                .unwrap()
                .contains(other_host),
            "{check}: {epm:#}"
        );
        assert!(epm["hint"].as_str().unwrap().contains("msdtc -uninstall"));
    }
}

#[test]
fn different_cids_on_the_two_sides_of_a_peer_run_pass() {
    let test = "different_cids_on_the_two_sides_of_a_peer_run_pass";
    if !can_run_netns_tests(test) {
        return;
    }
    let (code, report, forward, reverse) = peer_run("dpcd", CID_A, CID_OTHER);
    for (check, cid) in [(&forward, CID_A), (&reverse, CID_OTHER)] {
        let epm = hop(&report, check, "epm");
        assert_eq!(epm["status"], "pass", "{check}: {epm:#}");
        assert_eq!(epm["data"]["cid"], cid, "{epm:#}");
        assert_eq!(
            hop(&report, check, "rpc_bind")["status"],
            "pass",
            "{report:#}"
        );
    }
    assert_eq!(code, 0, "{report:#}");
}
