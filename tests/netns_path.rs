//! End-to-end path diagnosis (issue 11): the real binary in a "web" namespace, two routers, and a
//! "sql" namespace, with real nftables rules on the routers and the target. Each case names the
//! device that rejects or where the packets die, from what the kernel really reported: ICMP
//! senders (`icmp_from`), the TTL-stepped trace (hop `path`), the kernel's route (hop `route`),
//! and DNS servers that refuse or PTR records that name another host.
//!
//! web 198.18.0.1 -- 198.18.0.254 r1 198.18.1.1 -- 198.18.1.2 r2 198.18.2.1 -- 198.18.2.2 sql

use crate::support;

use std::time::Instant;

use support::dns_refused::RefusingDns;
use support::netns::{
    can_run_netns_tests, dtcprobe_in, link_named, start_dnsmasq, Netns, Zones, SQL_IP,
};
use support::{hop, parse_report};

const TARGET: &str = "198.18.2.2";
const R1_WEB_SIDE: &str = "198.18.0.254";
const R2_R1_SIDE: &str = "198.18.1.2";

/// web -- r1 -- r2 -- sql (the addresses above); also used by tests/netns_reset.rs.
pub struct TwoRouters {
    pub web: Netns,
    pub r1: Netns,
    pub r2: Netns,
    pub sql: Netns,
}

impl TwoRouters {
    /// With the routers' ICMP rate limits off: several probes of one run may ask the same
    /// router for ICMP (the cases here are about what is answered, not how often).
    pub fn new(prefix: &str) -> TwoRouters {
        let net = TwoRouters::with_kernel_icmp_limits(prefix);
        for ns in [&net.r1, &net.r2, &net.sql] {
            ns.sh("sysctl -qw net.ipv4.icmp_ratelimit=0");
        }
        net
    }

    /// With the kernel's own ICMP rate limits (a burst of 6, then 1 per second to one host), as
    /// on real routers.
    pub fn with_kernel_icmp_limits(prefix: &str) -> TwoRouters {
        let web = Netns::new(&format!("{prefix}w"));
        let r1 = Netns::new(&format!("{prefix}a"));
        let r2 = Netns::new(&format!("{prefix}b"));
        let sql = Netns::new(&format!("{prefix}s"));
        link_named(
            &web,
            "eth0",
            "198.18.0.1/24",
            &r1,
            "eth0",
            "198.18.0.254/24",
        );
        link_named(&r1, "eth1", "198.18.1.1/24", &r2, "eth0", "198.18.1.2/24");
        link_named(&r2, "eth1", "198.18.2.1/24", &sql, "eth0", "198.18.2.2/24");
        web.sh("ip route add 198.18.0.0/16 via 198.18.0.254");
        r1.sh("ip route add 198.18.2.0/24 via 198.18.1.2");
        r2.sh("ip route add 198.18.0.0/24 via 198.18.1.1");
        sql.sh("ip route add default via 198.18.2.1");
        for router in [&r1, &r2] {
            router.sh("sysctl -qw net.ipv4.ip_forward=1");
        }
        for ns in [&web, &r1, &r2, &sql] {
            ns.etc_file("hosts", "127.0.0.1 localhost\n");
        }
        web.etc_file(
            "resolv.conf",
            "nameserver 198.18.2.2\noptions timeout:1 attempts:1\n",
        );
        TwoRouters { web, r1, r2, sql }
    }
}

const R1_FIREWALL: &str = r#"
table ip r1fw {
  chain forward {
    type filter hook forward priority 0; policy accept;
    tcp dport 1440 reject
    tcp dport 1441 reject with icmp type admin-prohibited
  }
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 1499 drop
  }
}
"#;
const R2_FIREWALL: &str = r#"
table ip r2fw {
  chain forward {
    type filter hook forward priority 0; policy accept;
    tcp dport 1442 drop
  }
}
"#;
const SQL_FIREWALL: &str = r#"
table ip sqlfw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 1443 drop
  }
}
"#;

#[test]
fn rejects_name_the_router_and_traces_find_where_packets_die() {
    if !can_run_netns_tests("rejects_name_the_router_and_traces_find_where_packets_die") {
        return;
    }
    let net = TwoRouters::new("dpp");
    net.r1.nft(R1_FIREWALL);
    net.r2.nft(R2_FIREWALL);
    net.sql.nft(SQL_FIREWALL);
    let _open = net
        .sql
        .listen_tcp(format!("{TARGET}:1433").parse().unwrap());

    let url = |port: u16| format!("tcp://{TARGET}:{port}");
    let no_route = "tcp://198.19.5.5:1433".to_string();
    // r1 itself, on web's own network, dropping the port: no router in between.
    let on_link = format!("tcp://{R1_WEB_SIDE}:1499");
    let targets = [
        on_link.clone(),
        url(1433),
        url(1440),
        url(1441),
        url(1442),
        url(1443),
        no_route.clone(),
    ];
    let mut args = vec!["check", "-f", "json", "--timeout", "2s"];
    args.extend(targets.iter().map(String::as_str));
    let started = Instant::now();
    let (code, stdout, stderr) = dtcprobe_in(&net.web, &args);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(code, 1, "stderr: {stderr}");
    let report = parse_report(&stdout);

    // The route the kernel picks: eth0 via r1, from our address.
    let route = hop(&report, &url(1433), "route");
    assert_eq!(route["status"], "pass", "{route:#}");
    assert_eq!(route["data"]["interface"], "eth0");
    assert_eq!(route["data"]["gateway"], R1_WEB_SIDE);
    assert_eq!(route["data"]["source"], "198.18.0.1");
    assert_eq!(hop(&report, &url(1433), "tcp")["status"], "pass");

    // Plain reject (ICMP port unreachable) and admin-prohibited on r1: a firewall, named.
    for port in [1440, 1441] {
        let tcp = hop(&report, &url(port), "tcp");
        assert_eq!(tcp["cause"], "prohibited", "{port}: {tcp:#}");
        assert_eq!(tcp["data"]["icmp_from"], R1_WEB_SIDE, "{port}: {tcp:#}");
        assert_eq!(tcp["data"]["attempts"][0]["icmp_from"], R1_WEB_SIDE);
        let detail = tcp["detail"].as_str().unwrap();
        assert!(detail.contains("198.18.0.254, a router"), "{detail}");
        let hint = tcp["hint"].as_str().unwrap();
        assert!(
            hint.contains("firewall") && hint.contains(R1_WEB_SIDE),
            "{hint}"
        );
    }
    let plain = hop(&report, &url(1440), "tcp");
    assert!(plain["detail"]
        .as_str()
        .unwrap()
        .contains("port unreachable"));

    // Dropped on the second router: the trace names it, at hop 2.
    let dropped_r2 = hop(&report, &url(1442), "path");
    assert_eq!(hop(&report, &url(1442), "tcp")["cause"], "timeout");
    assert_eq!(
        dropped_r2["data"]["last_responder"], R2_R1_SIDE,
        "{dropped_r2:#}"
    );
    assert_eq!(dropped_r2["data"]["last_ttl"], 2);
    assert_eq!(dropped_r2["data"]["routers"][0]["address"], R1_WEB_SIDE);
    assert!(
        dropped_r2["detail"]
            .as_str()
            .unwrap()
            .contains("at or just after 198.18.1.2 (hop 2)"),
        "{dropped_r2:#}"
    );
    // Bounded: one hop timeout (2s) plus a little, never two.
    let secs = dropped_r2["duration_seconds"].as_f64().unwrap();
    assert!(secs < 4.0, "path took {secs}s");

    // Dropped by the target's own firewall: every router answers, the target (hop 3) does not.
    let dropped_sql = hop(&report, &url(1443), "path");
    assert_eq!(
        dropped_sql["data"]["last_responder"], R2_R1_SIDE,
        "{dropped_sql:#}"
    );
    assert_eq!(dropped_sql["data"]["last_ttl"], 2);
    assert_eq!(dropped_sql["data"]["routers"].as_array().unwrap().len(), 2);

    // Dropped by a host on the same network: the trace must not send the sysadmin to "the first
    // router" (there is none in between); it names the target itself.
    let dropped_on_link = hop(&report, &on_link, "path");
    assert_eq!(
        dropped_on_link["data"]["on_link"], true,
        "{dropped_on_link:#}"
    );
    let detail = dropped_on_link["detail"].as_str().unwrap();
    assert!(
        detail.contains("directly connected") && !detail.contains("first router"),
        "{detail}"
    );

    // No route: said by the route hop, before any packet; tcp never ran.
    let nr = hop(&report, &no_route, "route");
    assert_eq!(
        (nr["status"].as_str(), nr["cause"].as_str()),
        (Some("fail"), Some("unreachable")),
        "{nr:#}"
    );
    assert_eq!(hop(&report, &no_route, "tcp")["status"], "skip");

    // All of it concurrently: about one connect timeout plus one trace, not their sum.
    assert!(wall < 7.0, "run took {wall}s");

    // --no-trace: no path hop.
    let (_, stdout, _) = dtcprobe_in(
        &net.web,
        &[
            "check",
            "-f",
            "json",
            "--timeout",
            "1s",
            "--no-trace",
            &url(1442),
        ],
    );
    let report = parse_report(&stdout);
    let hops: Vec<&str> = report["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["hop"].as_str().unwrap())
        .collect();
    assert_eq!(hops, ["resolve", "route", "tcp"]);
}

#[test]
fn a_local_bridge_overlapping_the_sql_zone_is_named() {
    if !can_run_netns_tests("a_local_bridge_overlapping_the_sql_zone_is_named") {
        return;
    }
    let net = TwoRouters::new("dpo");
    let _open = net
        .sql
        .listen_tcp(format!("{TARGET}:1433").parse().unwrap());
    // What docker does with a network that takes a range where real hosts live.
    net.web.sh(
        "ip link add br-dpo type bridge && ip addr add 198.18.2.254/24 dev br-dpo && ip link set br-dpo up",
    );
    let url = format!("tcp://{TARGET}:1433");
    let (code, stdout, stderr) =
        dtcprobe_in(&net.web, &["check", "-f", "json", "--timeout", "1s", &url]);
    assert_eq!(
        code, 1,
        "the connect fails through the bridge; stderr: {stderr}"
    );
    let report = parse_report(&stdout);
    let route = hop(&report, &url, "route");
    assert_eq!(
        (route["status"].as_str(), route["cause"].as_str()),
        (Some("warn"), Some("route_overlap")),
        "{route:#}"
    );
    assert_eq!(route["data"]["interface"], "br-dpo");
    assert_eq!(route["data"]["network"], "198.18.2.0/24");
    let detail = route["detail"].as_str().unwrap();
    assert!(
        detail.contains("br-dpo") && detail.contains("198.18.2.0/24"),
        "{detail}"
    );
    assert!(route["hint"]
        .as_str()
        .unwrap()
        .contains("default-address-pools"));
}

/// The other half of the docker incident: not a bridge, but an ordinary local interface whose
/// network takes the SQL zone's range (a second NIC, a VPN, a lab VLAN). The check is declared
/// from `web` to `sql`, so reaching it without a router is named, with the interface.
#[test]
fn a_target_of_another_zone_on_a_local_network_is_named() {
    if !can_run_netns_tests("a_target_of_another_zone_on_a_local_network_is_named") {
        return;
    }
    let net = TwoRouters::new("dpz");
    net.web.sh(
        "ip link add lan9 type veth peer name lan9p && ip addr add 198.18.2.250/24 dev lan9 && ip link set lan9p up && ip link set lan9 up",
    );
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("zones.toml");
    std::fs::write(
        &config,
        format!(
            "[defaults]\nzone = \"web\"\ntimeout = \"1s\"\n\n\
             [[check]]\nname = \"sql01-tds\"\nkind = \"tcp\"\nhost = \"{TARGET}\"\nport = 1433\nto = \"sql\"\n\n\
             [[check]]\nname = \"same-zone\"\nkind = \"tcp\"\nhost = \"{TARGET}\"\nport = 1433\nto = \"web\"\n"
        ),
    )
    .unwrap();
    let (_code, stdout, stderr) = dtcprobe_in(
        &net.web,
        &["check", "-f", "json", "-c", config.to_str().unwrap()],
    );
    let report = parse_report(&stdout);
    let route = hop(&report, "sql01-tds", "route");
    assert_eq!(
        (route["status"].as_str(), route["cause"].as_str()),
        (Some("warn"), Some("route_overlap")),
        "{route:#} stderr: {stderr}"
    );
    assert_eq!(route["data"]["interface"], "lan9");
    let detail = route["detail"].as_str().unwrap();
    assert!(
        detail.contains("another zone") && detail.contains("lan9"),
        "{detail}"
    );
    // The same route inside one declared zone is ordinary.
    let same = hop(&report, "same-zone", "route");
    assert_eq!(same["status"], "pass", "{same:#}");
}

#[test]
fn a_dns_server_that_refuses_is_dns_error_naming_the_server() {
    if !can_run_netns_tests("a_dns_server_that_refuses_is_dns_error_naming_the_server") {
        return;
    }
    let net = TwoRouters::new("dpr");
    let _dns = RefusingDns::start(&net.sql, format!("{TARGET}:53").parse().unwrap());
    let (code, stdout, stderr) = dtcprobe_in(
        &net.web,
        &[
            "check",
            "-f",
            "json",
            "--timeout",
            "2s",
            "tcp://sql01.zone.test:1433",
        ],
    );
    assert_eq!(code, 1, "stderr: {stderr}");
    let report = parse_report(&stdout);
    let resolve = hop(&report, "tcp://sql01.zone.test:1433", "resolve");
    assert_eq!(resolve["cause"], "dns_error", "{resolve:#}");
    let detail = resolve["detail"].as_str().unwrap();
    assert!(detail.contains(TARGET), "{detail}");
    assert!(detail.to_ascii_lowercase().contains("refused"), "{detail}");
}

#[test]
fn a_ptr_naming_another_host_is_a_mismatch_and_names_are_sorted() {
    if !can_run_netns_tests("a_ptr_naming_another_host_is_a_mismatch_and_names_are_sorted") {
        return;
    }
    let zones = Zones::new("dpm");
    let _dns = start_dnsmasq(
        &zones.sql,
        SQL_IP,
        &[
            // sql01's address has a PTR that names web07, which itself maps to the same address:
            // forward and back agree, but MSDTC would call back "web07".
            "--address=/sql01.zone.test/198.18.0.2",
            "--address=/web07.zone.test/198.18.0.2",
            "--ptr-record=2.0.18.198.in-addr.arpa,web07.zone.test",
            // Two PTR names for one address, in whatever order the server likes.
            "--address=/multi.zone.test/198.18.0.8",
            "--ptr-record=8.0.18.198.in-addr.arpa,zz.zone.test",
            "--ptr-record=8.0.18.198.in-addr.arpa,multi.zone.test",
            "--address=/zz.zone.test/198.18.0.8",
        ],
    );
    let (_, stdout, stderr) = dtcprobe_in(
        &zones.web,
        &[
            "check",
            "-f",
            "json",
            "--timeout",
            "2s",
            "dns://sql01.zone.test",
            "dns://multi.zone.test",
        ],
    );
    let report = parse_report(&stdout);
    let r = hop(&report, "dns://sql01.zone.test", "resolve");
    assert_eq!(
        (r["status"].as_str(), r["cause"].as_str()),
        (Some("warn"), Some("dns_mismatch")),
        "{r:#} {stderr}"
    );
    assert!(
        r["detail"].as_str().unwrap().contains("another host"),
        "{r:#}"
    );
    let m = hop(&report, "dns://multi.zone.test", "resolve");
    assert_eq!(m["status"], "pass", "{m:#}");
    assert_eq!(
        m["data"]["ptr"]["198.18.0.8"],
        serde_json::json!(["multi.zone.test", "zz.zone.test"])
    );
}

/// The seed scenario: TCP 135 open, the dynamic RPC range dropped at the first router. The
/// endpoint mapper (Samba's samba-dcerpcd) answers, `rpc_port` times out, and hop `path` names
/// the router as the place the packets die.
#[test]
fn seed_like_dynamic_range_dropped_at_the_router_is_named() {
    let test = "seed_like_dynamic_range_dropped_at_the_router_is_named";
    if !can_run_netns_tests(test) || !support::samba::available(test) {
        return;
    }
    let net = TwoRouters::new("dpq");
    let _samba = support::samba::Samba::start(&net.sql, TARGET);
    // Only what comes from the web zone (r1's eth0): the replies to web's own ephemeral ports
    // must pass.
    net.r1.nft(
        "table inet r1fw {\n  chain forward {\n    type filter hook forward priority 0; policy accept;\n    \
         iifname \"eth0\" tcp dport 49152-65535 drop\n  }\n}\n",
    );
    let url = format!("epm://{TARGET}?iface={}", support::samba::LSARPC);
    let (code, out, err) = dtcprobe_in(&net.web, &["check", "-f", "json", "--timeout", "2s", &url]);
    assert_eq!(code, 1, "stderr: {err}");
    let report = parse_report(&out);
    assert_eq!(hop(&report, &url, "epm")["status"], "pass", "{report:#}");
    assert_eq!(
        hop(&report, &url, "rpc_port")["cause"],
        "timeout",
        "{report:#}"
    );
    let path = hop(&report, &url, "path");
    assert_eq!(path["data"]["last_responder"], R1_WEB_SIDE, "{path:#}");
    assert_eq!(path["data"]["last_ttl"], 1);
    let detail = path["detail"].as_str().unwrap();
    assert!(
        detail.contains("at or just after 198.18.0.254 (hop 1)"),
        "{detail}"
    );
}

/// Counts, on r1, the SYNs from the web zone that expire there (TTL 1): one per trace.
const R1_TTL1_COUNTER: &str = r#"
table ip r1count {
  counter ttl1 {}
  chain pre {
    type filter hook prerouting priority -150; policy accept;
    iifname "eth0" ip ttl 1 tcp flags & (syn | ack) == syn counter name "ttl1"
  }
}
"#;

/// r2 drops forwarded SYNs to `ports` (an nftables port or range).
fn r2_forward_drops(net: &TwoRouters, ports: &str) {
    net.r2.nft(&format!(
        "table ip r2fw {{\n  chain forward {{\n    type filter hook forward priority 0; policy accept;\n    \
         tcp dport {ports} drop\n  }}\n}}\n"
    ));
}

fn ttl1_probes_seen_by_r1(net: &TwoRouters) -> u64 {
    let out = net.r1.sh("nft list counter ip r1count ttl1");
    out.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no packet count in {out}"))
}

/// Issue 22: a firewall change blocks a whole range, so many dropped ports to one host is the
/// common case. With the kernel's own ICMP rate limits on both routers, every dropped port's
/// `path` hop must still name the router where the packets die, and the run must send one
/// trace's probes, not one per port (a trace per port spent the routers' budget in the first
/// six and read the rest as "no router answered").
#[test]
fn forty_dropped_ports_to_one_host_share_one_trace() {
    let test = "forty_dropped_ports_to_one_host_share_one_trace";
    if !can_run_netns_tests(test) {
        return;
    }
    let net = TwoRouters::with_kernel_icmp_limits("dpt");
    net.r1.nft(R1_TTL1_COUNTER);
    r2_forward_drops(&net, "40000-40041");
    let targets: Vec<String> = (40000..=40041)
        .map(|port| format!("tcp://{TARGET}:{port}"))
        .collect();
    let mut args = vec!["check", "-f", "json", "--timeout", "2s"];
    args.extend(targets.iter().map(String::as_str));
    let (code, stdout, stderr) = dtcprobe_in(&net.web, &args);
    assert_eq!(code, 1, "stderr: {stderr}");
    let report = parse_report(&stdout);

    let mut traced_here = Vec::new();
    for target in &targets {
        assert_eq!(hop(&report, target, "tcp")["cause"], "timeout", "{target}");
        let path = hop(&report, target, "path");
        assert_eq!(
            path["data"]["last_responder"], R2_R1_SIDE,
            "{target}: {path:#}"
        );
        assert_eq!(path["data"]["last_ttl"], 2, "{target}: {path:#}");
        let detail = path["detail"].as_str().unwrap();
        assert!(
            detail.contains("at or just after 198.18.1.2 (hop 2)"),
            "{target}: {detail}"
        );
        match path["data"].get("traced_by") {
            None => traced_here.push(target.clone()),
            Some(by) => {
                // The check it shares names the one that traced, and which port it traced.
                assert!(targets.iter().any(|t| t == by), "{target}: {path:#}");
                assert!(by != target, "{target}: {path:#}");
                let port = path["data"]["traced_port"].as_u64().unwrap();
                assert!(
                    by.as_str().unwrap().ends_with(&format!(":{port}")),
                    "{path:#}"
                );
            }
        }
    }
    assert_eq!(
        traced_here.len(),
        1,
        "exactly one check traces: {traced_here:?}"
    );
    // One trace's probes: one SYN with TTL 1 reached r1 (a TTL-1 probe that is answered is
    // not retransmitted), where a trace per port sent 42.
    assert_eq!(ttl1_probes_seen_by_r1(&net), 1);
}

/// Dropped ports to several hosts behind the same routers: each host gets its own trace, and
/// they share the routers' ICMP budget. Traces are paced within it (a burst, then one per
/// second): every `path` hop either names the router where the packets die or says it was not
/// traced to stay within the budget; none reads the rate limit's silence as "no router
/// answered".
#[test]
fn dropped_ports_to_many_hosts_behind_one_router_stay_within_the_icmp_budget() {
    let test = "dropped_ports_to_many_hosts_behind_one_router_stay_within_the_icmp_budget";
    if !can_run_netns_tests(test) {
        return;
    }
    let net = TwoRouters::with_kernel_icmp_limits("dpu");
    let hosts: Vec<String> = (10..20).map(|n| format!("198.18.2.{n}")).collect();
    for host in &hosts {
        net.sql.sh(&format!("ip addr add {host}/24 dev eth0"));
    }
    net.r1.nft(R1_TTL1_COUNTER);
    r2_forward_drops(&net, "1500");
    let targets: Vec<String> = hosts.iter().map(|h| format!("tcp://{h}:1500")).collect();
    let mut args = vec!["check", "-f", "json", "--timeout", "1s"];
    args.extend(targets.iter().map(String::as_str));
    let started = Instant::now();
    let (code, stdout, stderr) = dtcprobe_in(&net.web, &args);
    let wall = started.elapsed().as_secs_f64();
    assert_eq!(code, 1, "stderr: {stderr}");
    let report = parse_report(&stdout);

    let mut named = 0;
    for target in &targets {
        assert_eq!(hop(&report, target, "tcp")["cause"], "timeout", "{target}");
        let path = hop(&report, target, "path");
        let detail = path["detail"].as_str().unwrap();
        assert!(
            !detail.contains("no router answered") && !detail.contains("before the first router"),
            "{target}: {path:#}"
        );
        if path["data"].get("last_responder").is_some() {
            assert_eq!(
                path["data"]["last_responder"], R2_R1_SIDE,
                "{target}: {path:#}"
            );
            assert!(
                detail.contains("at or just after 198.18.1.2 (hop 2)"),
                "{target}: {detail}"
            );
            named += 1;
        } else {
            assert_eq!(path["data"]["rate_limited"], true, "{target}: {path:#}");
            assert_eq!(path["status"], "skip", "{target}: {path:#}");
            assert!(detail.starts_with("not traced"), "{target}: {detail}");
        }
    }
    // The burst (5) plus one more after a second of waiting: the rest stay untraced.
    assert!(named >= 5, "{named} of {} traced", targets.len());
    let probes = ttl1_probes_seen_by_r1(&net);
    assert_eq!(probes, named, "one TTL-1 probe per trace");
    // Bounded: the 1 s connect, at most one more second waiting for a turn, the probes.
    assert!(wall < 5.0, "run took {wall}s");
}
