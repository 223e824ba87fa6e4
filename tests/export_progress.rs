//! The progress bar: drawn on stderr for a long run when stderr is a terminal (a pseudo-terminal
//! made by `script`), never when stderr is a pipe.

use crate::support;

use support::netns::{can_run_netns_tests, dtcprobe_bin, dtcprobe_in, Zones, SQL_IP};

const DROP: &str = r#"
table ip zonefw {
  chain input {
    type filter hook input priority 0; policy accept;
    tcp dport 1434 drop
  }
}
"#;

#[test]
fn progress_bar_only_on_a_terminal_and_only_for_long_runs() {
    if !can_run_netns_tests("progress_bar_only_on_a_terminal_and_only_for_long_runs") {
        return;
    }
    let zones = Zones::new("dpwp");
    zones.sql.nft(DROP);
    let _open = zones
        .sql
        .listen_tcp(format!("{SQL_IP}:1433").parse().unwrap());
    let fast = format!("tcp://{SQL_IP}:1433");
    let slow = format!("tcp://{SQL_IP}:1434"); // dropped: lasts the 2 s timeout
    let args = ["check", "-f", "plain", "--timeout", "2s"];

    // Not a terminal: nothing but the report.
    let mut a: Vec<&str> = args.to_vec();
    a.extend([fast.as_str(), slow.as_str()]);
    let (code, _, stderr) = dtcprobe_in(&zones.web, &a);
    assert_eq!(code, 1);
    assert!(
        !stderr.contains("checks"),
        "bar drawn on a pipe: {stderr:?}"
    );

    // A terminal and a long run: the bar appears.
    let cmd = format!("{} {} {fast} {slow}", dtcprobe_bin(), args.join(" "));
    let out = zones
        .web
        .command("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(
        tty.contains("1/2 checks"),
        "no progress bar on a terminal: {tty:?}"
    );

    // A terminal and a short run (two quick checks): no bar.
    let cmd = format!("{} {} {fast} {fast}", dtcprobe_bin(), args.join(" "));
    let out = zones
        .web
        .command("script")
        .args(["-qec", &cmd, "/dev/null"])
        .env("TERM", "xterm")
        .output()
        .unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(!tty.contains("checks"), "bar for a short run: {tty:?}");
}
