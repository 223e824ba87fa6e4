//! Who sent the TCP reset (issue 22, item 2): the real binary in the web namespace of
//! `netns_path`'s two-router network, with real nftables `reject with tcp reset` rules on the
//! routers. A reset forged by a router is `reset_by_path` with the TTLs it was told by; the
//! target's own reset stays `refused` "from the target itself"; without CAP_NET_RAW the origin
//! is said to be unchecked, never guessed.
//!
//! web 198.18.0.1 -- 198.18.0.254 r1 198.18.1.1 -- 198.18.1.2 r2 198.18.2.1 -- 198.18.2.2 sql
//!
//! TTLs by hand (every namespace sends with Linux's initial 64; a router decrements what it
//! forwards, not what it sends itself): r1's forged reset reaches web with 64 (0 routers), r2's
//! with 63 (r1 forwards it), sql's own packets with 62 (r2 and r1). So r1's reset is 2 routers
//! before the target, r2's 1.

use std::path::PathBuf;

use serde_json::Value;

use crate::netns_path::TwoRouters;
use crate::report_schema::assert_valid;
use crate::support;
use support::netns::{can_run_netns_tests, dtcprobe_bin, dtcprobe_in, Netns};
use support::{hop, parse_report};

const TARGET: &str = "198.18.2.2";
const R2_R1_SIDE: &str = "198.18.1.2";

/// r1 forges a reset for 1450, r2 for 1451 (both in their forward chains, as a firewall in
/// between would); nothing listens on 1452 at sql.
const R1_RESET: &str =
    "table ip r1fw {\n  chain forward {\n    type filter hook forward priority 0; \
policy accept;\n    tcp dport 1450 reject with tcp reset\n  }\n}\n";
const R2_RESET: &str =
    "table ip r2fw {\n  chain forward {\n    type filter hook forward priority 0; \
policy accept;\n    tcp dport 1451 reject with tcp reset\n  }\n}\n";

fn url(port: u16) -> String {
    format!("tcp://{TARGET}:{port}")
}

fn network(prefix: &str) -> TwoRouters {
    let net = TwoRouters::new(prefix);
    net.r1.nft(R1_RESET);
    net.r2.nft(R2_RESET);
    net
}

/// The JSON report of `dtcprobe check -f json --timeout 2s EXTRA... TARGETS...` run in web.
fn check(net: &TwoRouters, extra: &[&str], targets: &[String]) -> Value {
    let mut args = vec!["check", "-f", "json", "--timeout", "2s"];
    args.extend_from_slice(extra);
    args.extend(targets.iter().map(String::as_str));
    let (code, stdout, stderr) = dtcprobe_in(&net.web, &args);
    assert_eq!(code, 1, "stderr: {stderr}");
    let report = parse_report(&stdout);
    assert_valid("reset origins", &report);
    report
}

#[test]
fn a_reset_forged_by_a_router_is_told_from_the_targets_own_by_its_ttl() {
    if !can_run_netns_tests("a_reset_forged_by_a_router_is_told_from_the_targets_own_by_its_ttl") {
        return;
    }
    let net = network("drt");
    let report = check(&net, &[], &[url(1450), url(1451), url(1452)]);

    // (port, cause, reset_origin, reset TTL, routers before the target), all against sql's 62.
    let rows: [(u16, &str, &str, u64, Option<u64>); 3] = [
        (1450, "reset_by_path", "path", 64, Some(2)),
        (1451, "reset_by_path", "path", 63, Some(1)),
        (1452, "refused", "target", 62, None),
    ];
    for (port, cause, origin, reset_ttl, before) in rows {
        let tcp = hop(&report, &url(port), "tcp");
        let data = &tcp["data"];
        assert_eq!(tcp["cause"], cause, "{port}: {tcp:#}");
        assert_eq!(data["reset_origin"], origin, "{port}: {tcp:#}");
        assert_eq!(data["reset_ttl"], reset_ttl, "{port}: {tcp:#}");
        assert_eq!(data["target_ttl"], 62, "{port}: {tcp:#}");
        // No port of sql was seen open: the echo reply gave its TTL.
        assert_eq!(data["target_ttl_from"], "icmp_echo", "{port}: {tcp:#}");
        assert_eq!(
            data.get("reset_hops_before_target").and_then(Value::as_u64),
            before,
            "{port}: {tcp:#}"
        );
        assert_eq!(data["attempts"][0]["reset_origin"], origin);
        assert_eq!(data["attempts"][0]["cause"], cause);
    }
    let forged = hop(&report, &url(1450), "tcp");
    let detail = forged["detail"].as_str().unwrap();
    assert!(
        detail.contains("2 router(s) before the target") && detail.contains("TTL 64"),
        "{detail}"
    );
    let hint = forged["hint"].as_str().unwrap();
    assert!(
        hint.contains("Palo Alto") && hint.contains("reject with tcp reset"),
        "{hint}"
    );
    let own = hop(&report, &url(1452), "tcp");
    assert!(
        own["detail"]
            .as_str()
            .unwrap()
            .contains("from the target itself"),
        "{own:#}"
    );

    // The forged resets are blocked flows (a firewall row each); the target's own is not.
    let requests = report["firewall_requests"].as_array().unwrap();
    let ports: Vec<(&str, &str)> = requests
        .iter()
        .map(|r| {
            (
                r["ports"].as_str().unwrap(),
                r["observed"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        ports,
        [("1450", "rejected"), ("1451", "rejected")],
        "{requests:#?}"
    );
}

/// sql drops ICMP echo (as Windows Firewall does by default): its TTL then comes from the
/// SYN-ACK of a port of it that connected earlier in the run. A host with neither (r2, which
/// also drops echo and has nothing open) leaves the reset `refused`, its origin unchecked.
#[test]
fn without_echo_the_targets_ttl_comes_from_an_open_port_or_is_not_guessed() {
    if !can_run_netns_tests(
        "without_echo_the_targets_ttl_comes_from_an_open_port_or_is_not_guessed",
    ) {
        return;
    }
    let net = network("drs");
    let no_echo = "table ip noecho {\n  chain input {\n    type filter hook input priority 0; \
policy accept;\n    icmp type echo-request drop\n  }\n}\n";
    net.sql.nft(no_echo);
    net.r2.nft(&format!("{R2_RESET}{no_echo}"));
    let _open = net
        .sql
        .listen_tcp(format!("{TARGET}:1433").parse().unwrap());
    let r2_closed = format!("tcp://{R2_R1_SIDE}:1460");
    // One check at a time, in this order: 1433 connects before 1450 is refused.
    let report = check(
        &net,
        &["--concurrency", "1"],
        &[url(1433), url(1450), r2_closed.clone()],
    );

    let forged = hop(&report, &url(1450), "tcp");
    assert_eq!(forged["cause"], "reset_by_path", "{forged:#}");
    assert_eq!(forged["data"]["target_ttl_from"], "syn_ack", "{forged:#}");
    assert_eq!(forged["data"]["target_ttl"], 62);
    assert_eq!(forged["data"]["reset_hops_before_target"], 2);

    let unknown = hop(&report, &r2_closed, "tcp");
    assert_eq!(unknown["cause"], "refused", "{unknown:#}");
    assert_eq!(
        unknown["data"]["reset_origin"], "not_checked",
        "{unknown:#}"
    );
    // r2's own reset (it is the target here), forwarded by r1: 63.
    assert_eq!(unknown["data"]["reset_ttl"], 63, "{unknown:#}");
    assert!(unknown["data"].get("target_ttl").is_none());
    let detail = unknown["detail"].as_str().unwrap();
    assert!(
        detail.contains("not checked") && detail.contains("no TTL of the target"),
        "{detail}"
    );
    // Bounded: the unanswered echo costs a third of the hop timeout, not more.
    let secs = unknown["duration_seconds"].as_f64().unwrap();
    assert!(secs < 1.5, "tcp took {secs}s");
}

/// The binary as `nobody` may need a copy: the build directory may not be readable by it.
fn binary_for_nobody(ns: &Netns, dir: &tempfile::TempDir) -> PathBuf {
    let as_nobody = |bin: &str| {
        ns.command("setpriv")
            .args(NOBODY)
            .args(["test", "-x", bin])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    if as_nobody(dtcprobe_bin()) {
        return PathBuf::from(dtcprobe_bin());
    }
    use std::os::unix::fs::PermissionsExt;
    let copy = dir.path().join("dtcprobe");
    std::fs::copy(dtcprobe_bin(), &copy).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert!(
        as_nobody(copy.to_str().unwrap()),
        "nobody cannot run {}",
        copy.display()
    );
    copy
}

/// `setpriv` arguments: uid/gid 65534, no supplementary groups, no capabilities.
const NOBODY: &[&str] = &[
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
    "--inh-caps=-all",
];

#[test]
fn unprivileged_the_reset_stays_refused_and_says_its_origin_was_not_checked() {
    let test = "unprivileged_the_reset_stays_refused_and_says_its_origin_was_not_checked";
    if !can_run_netns_tests(test) {
        return;
    }
    let net = network("dru");
    let dir = tempfile::tempdir().unwrap();
    let bin = binary_for_nobody(&net.web, &dir);
    let out = net
        .web
        .command("setpriv")
        .args(NOBODY)
        .arg(&bin)
        .args(["check", "-f", "json", "--timeout", "2s", &url(1450)])
        .env("NO_COLOR", "1")
        .output()
        .expect("run dtcprobe as nobody");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    let report = parse_report(&stdout);
    assert_valid("unprivileged reset origin", &report);
    let tcp = hop(&report, &url(1450), "tcp");
    assert_eq!(tcp["cause"], "refused", "{tcp:#}");
    assert_eq!(tcp["data"]["reset_origin"], "not_checked", "{tcp:#}");
    let detail = tcp["detail"].as_str().unwrap();
    assert!(
        detail.contains("was not checked") && detail.contains("CAP_NET_RAW"),
        "{detail}"
    );
    let hint = tcp["hint"].as_str().unwrap();
    assert!(
        !hint.contains("so nothing listens") && hint.contains("forge"),
        "{hint}"
    );
    // Not a firewall row: nothing proved a firewall.
    assert_eq!(report["firewall_requests"], serde_json::json!([]));
}

/// The scripted endpoint mapper of `epm_peer` started inside `ns` (a thread of this process in
/// that namespace, with a runtime of its own); its mapper address and RPC port. It runs until
/// `stop` is dropped.
fn mapper_in(ns: &Netns, ip: std::net::Ipv4Addr) -> (std::net::SocketAddr, u16, Stop) {
    use std::os::fd::AsRawFd;
    let ns_path = format!("/run/netns/{}", ns.name);
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        let f = std::fs::File::open(&ns_path).expect("open netns");
        // SAFETY: setns on this thread only; the file is an open namespace descriptor.
        let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let p =
                crate::epm_peer::peer(ip, crate::epm_peer::registered(crate::epm_peer::CID_A, 64))
                    .await;
            tx.send((p.addr, p.rpc_port)).unwrap();
            let _ = stop_rx.await;
        });
    });
    let (addr, rpc_port) = rx.recv().expect("the mapper started");
    (
        addr,
        rpc_port,
        Stop {
            tx: Some(stop_tx),
            thread: Some(thread),
        },
    )
}

/// Stops [`mapper_in`]'s thread on drop.
struct Stop {
    tx: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Stop {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `rpc_port` shares the connect step: the mapper answers, r1 forges a reset for the dynamic
/// port it returned, and the firewall row is the MSDTC dynamic port.
#[test]
fn a_dynamic_rpc_port_reset_by_a_router_is_reset_by_path() {
    if !can_run_netns_tests("a_dynamic_rpc_port_reset_by_a_router_is_reset_by_path") {
        return;
    }
    let net = TwoRouters::new("drp");
    let (mapper, rpc_port, _stop) = mapper_in(&net.sql, TARGET.parse().unwrap());
    net.r1.nft(&format!(
        "table ip r1fw {{\n  chain forward {{\n    type filter hook forward priority 0; \
         policy accept;\n    tcp dport {rpc_port} reject with tcp reset\n  }}\n}}\n"
    ));
    let url = format!("epm://{mapper}");
    let report = check(&net, &[], std::slice::from_ref(&url));
    assert_eq!(hop(&report, &url, "epm")["status"], "pass", "{report:#}");
    let rpc = hop(&report, &url, "rpc_port");
    assert_eq!(rpc["cause"], "reset_by_path", "{rpc:#}");
    assert_eq!(rpc["data"]["reset_ttl"], 64, "{rpc:#}");
    assert_eq!(rpc["data"]["target_ttl"], 62, "{rpc:#}");
    assert_eq!(rpc["data"]["reset_hops_before_target"], 2, "{rpc:#}");
    assert!(
        rpc["data"]["network_hint"]
            .as_str()
            .unwrap()
            .contains("Palo Alto"),
        "{rpc:#}"
    );
    let requests = report["firewall_requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert_eq!(requests[0]["ports"], rpc_port.to_string());
    assert_eq!(requests[0]["observed"], "rejected");
    assert_eq!(requests[0]["service"], "MSDTC dynamic port");
}
