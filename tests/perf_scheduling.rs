//! Scheduling (issue 9): checks start in completion order, the report stays in plan order, a
//! check's timeout does not run while it waits for a slot, and a hard open-file limit that is too
//! low for the checks in flight lowers the concurrency with a note instead of producing faults.
//! The real binary in a "web" namespace against real nftables rules in a "sql" namespace.

use crate::support;

use std::os::unix::process::CommandExt;

use support::netns::{can_run_netns_tests, dtcprobe_bin, Zones, SQL_IP};
use support::{hop, parse_report};

/// Ports 2000-2099 are dropped; anything else without a listener is refused by the kernel.
const DROP_2000S: &str = r#"
table ip zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 2000-2099 drop
  }
}
"#;

fn url(port: u16) -> String {
    format!("tcp://{SQL_IP}:{port}")
}

/// Runs dtcprobe in the web zone with RUST_LOG=dtcprobe=debug (one log line per hop, written when
/// its check ends, so stderr shows completion order) and, if given, an open-file limit.
fn run(zones: &Zones, args: &[String], nofile: Option<u64>) -> (i32, String, String) {
    let mut cmd = zones.web.command(dtcprobe_bin());
    cmd.args(args)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "dtcprobe=debug");
    if let Some(limit) = nofile {
        // SAFETY: only setrlimit (async-signal-safe) between fork and exec. The limit is
        // inherited through `ip netns exec` by dtcprobe.
        unsafe {
            cmd.pre_exec(move || {
                #[allow(clippy::unnecessary_cast)] // rlim_t is not u64 on every Unix
                let lim = libc::rlimit {
                    rlim_cur: limit as libc::rlim_t,
                    rlim_max: limit as libc::rlim_t,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let out = cmd.output().expect("run dtcprobe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Index in stderr of the first debug line for `check`'s tcp hop.
fn finished_at(stderr: &str, check: &str) -> usize {
    let needle = format!("check={check} hop=\"tcp\"");
    stderr
        .find(&needle)
        .unwrap_or_else(|| panic!("no log line `{needle}` in:\n{stderr}"))
}

#[test]
fn a_dropped_port_does_not_hold_back_the_checks_queued_behind_it() {
    if !can_run_netns_tests("a_dropped_port_does_not_hold_back_the_checks_queued_behind_it") {
        return;
    }
    let zones = Zones::new("dps");
    zones.sql.nft(DROP_2000S);
    // Two slots: a dropped port first, then refused ports, then another dropped port. In
    // completion order the refused ones all pass through the second slot while the first dropped
    // port waits out its timeout; in plan order (`buffered`) the second refused port could not
    // start until the first dropped one had timed out.
    let dropped = [url(2000), url(2001)];
    let refused: Vec<String> = (3000..3006).map(url).collect();
    let mut targets = vec![dropped[0].clone()];
    targets.extend(refused.iter().cloned());
    targets.push(dropped[1].clone());

    let mut args: Vec<String> = [
        "check",
        "-f",
        "json",
        "--timeout",
        "1s",
        "--concurrency",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(targets.iter().cloned());
    let (code, stdout, stderr) = run(&zones, &args, None);
    assert_eq!(code, 1, "failed checks exit 1; stderr: {stderr}");

    let first_timeout = dropped
        .iter()
        .map(|d| finished_at(&stderr, d))
        .min()
        .unwrap();
    for r in &refused {
        assert!(
            finished_at(&stderr, r) < first_timeout,
            "{r} finished after a dropped port timed out: a finished check kept its slot\n{stderr}"
        );
    }

    let report = parse_report(&stdout);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names, targets,
        "the report is in plan order, not completion order"
    );
    for r in &refused {
        assert_eq!(hop(&report, r, "tcp")["cause"], "refused");
    }
    // The second dropped port waited for a slot; its own timeout still ran in full.
    for d in &dropped {
        let tcp = hop(&report, d, "tcp");
        assert_eq!(tcp["cause"], "timeout", "{tcp}");
        let took = tcp["duration_seconds"].as_f64().unwrap();
        assert!(
            took >= 0.95,
            "{d}: timeout after {took}s, not the 1s it was given"
        );
    }
}

#[test]
fn a_low_open_file_hard_limit_lowers_the_concurrency_and_says_so() {
    if !can_run_netns_tests("a_low_open_file_hard_limit_lowers_the_concurrency_and_says_so") {
        return;
    }
    let zones = Zones::new("dpf");
    zones.sql.nft(DROP_2000S);
    // 300 refused ports at the default concurrency under a hard limit of 200 descriptors:
    // 64 reserved + 2 per check leaves room for 68 at a time.
    let mut args: Vec<String> = ["check", "-f", "json", "--timeout", "2s"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.extend((3000..3300).map(url));
    let (code, stdout, stderr) = run(&zones, &args, Some(200));
    assert_eq!(code, 1, "refused ports fail; stderr: {stderr}");
    assert!(
        stderr.contains("open-file limit (200") && stderr.contains("running 68 at a time"),
        "no note about the lowered concurrency: {stderr}"
    );
    let report = parse_report(&stdout);
    let checks = report["checks"].as_array().unwrap();
    assert_eq!(checks.len(), 300);
    for c in checks {
        let name = c["name"].as_str().unwrap();
        // Never "too many open files" reported as a fault of the path.
        assert_eq!(hop(&report, name, "tcp")["cause"], "refused", "{c}");
    }

    // Enough descriptors for every check in flight: no note.
    let (_, _, stderr) = run(&zones, &args, Some(4096));
    assert!(!stderr.contains("open-file limit"), "{stderr}");
}
