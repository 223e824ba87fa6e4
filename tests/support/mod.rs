//! Shared test support: network namespaces with firewall rules, and helpers to run the binary.

pub mod agent_front;
pub mod callback_relay;
pub mod captures;
pub mod certs;
pub mod dns_refused;
pub mod local_agent;
pub mod netns;
pub mod pcap;
pub mod postgres;
pub mod samba;
#[cfg(feature = "kerberos")]
pub mod samba_ad;
pub mod tds_peer;
pub mod zone_agent;

use serde_json::Value;

/// Parses a `-f json` report from stdout, with the output in the panic message if it is not JSON.
pub fn parse_report(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not a JSON report ({e}):\n{stdout}"))
}

/// The hop `hop` of check `check` in a JSON report.
pub fn hop<'a>(report: &'a Value, check: &str, hop: &str) -> &'a Value {
    let c = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == check)
        .unwrap_or_else(|| panic!("no check {check} in {report:#}"));
    c["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == hop)
        .unwrap_or_else(|| panic!("no hop {hop} in check {check}: {c:#}"))
}

/// Runs the built dtcprobe with `args` (no colour, stdin closed); returns (exit code, stdout, stderr).
pub fn run_bin(args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(netns::dtcprobe_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run dtcprobe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` with `input` on its stdin; returns its output (stdout and stderr captured).
pub fn output_with_stdin(cmd: &mut std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `promtool check metrics` (Debian package prometheus) on `text`: Ok, or the complaints
/// followed by the input.
pub fn promtool_check(text: &str) -> Result<(), String> {
    // promtool comes from Debian's prometheus package (scripts/install-test-deps).
    let out = output_with_stdin(
        std::process::Command::new("promtool").args(["check", "metrics"]),
        text,
    );
    let msg = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && msg.trim().is_empty() {
        Ok(())
    } else {
        Err(format!("{msg}\n--- input ---\n{text}"))
    }
}

/// Writes an agent key file the way `dtcprobe keygen` does: owner-only (0600), since the agent and
/// `peer` refuse key files that group or others may read.
pub fn write_key(path: &std::path::Path, contents: impl AsRef<[u8]>) {
    std::fs::write(path, contents).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

/// Sends SIGINT to `child` after `delay`, then waits for it to exit, at most `limit` (a child
/// that ignores the signal fails the test instead of hanging it). Used by the interrupt tests of
/// `check` and `peer`; with `ip netns exec`, the pid is the dtcprobe process itself.
pub fn interrupt_and_wait(
    child: std::process::Child,
    delay: std::time::Duration,
    limit: std::time::Duration,
) -> std::process::Output {
    std::thread::sleep(delay);
    // SAFETY: kill(2) on a pid we spawned and have not reaped.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGINT);
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(limit)
        .expect("dtcprobe did not stop on SIGINT")
        .unwrap()
}
