//! A real RPC endpoint mapper for tests: Samba's `samba-dcerpcd` started standalone (no smbd) inside
//! a network namespace, with a generated smb.conf in a temporary directory and
//! `rpc start on demand helpers = no`, so it listens on TCP 135 and registers its interfaces
//! (lsarpc, winreg, samr...) on dynamic TCP ports from 49152 up. Stopped (its whole process group)
//! on Drop.
//!
//! Include from a test with `#[path = "support/samba.rs"] mod samba;` next to `mod support;`.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::time::Duration;

use crate::support::netns::{wait_until, Netns};

pub const SAMBA_DCERPCD: &str = "/usr/libexec/samba/samba-dcerpcd";
/// lsarpc, registered by Samba's rpcd_lsad on ncacn_ip_tcp.
pub const LSARPC: &str = "12345778-1234-abcd-ef00-0123456789ab/v0.0";
pub const WINREG: &str = "338cd001-2244-31f1-aaaa-900038001003/v1.0";
/// The python with Debian's python3-impacket (not a pyenv/venv one earlier in PATH).
pub const SYSTEM_PYTHON: &str = "/usr/bin/python3";

pub fn available(test: &str) -> bool {
    if !std::path::Path::new(SAMBA_DCERPCD).exists() {
        // CI installs it (scripts/install-test-deps): there this cannot skip silently.
        panic!(
            "{test}: {SAMBA_DCERPCD} missing: run scripts/install-test-deps (Debian package samba)"
        );
    }
    true
}

pub struct Samba {
    child: Child,
    dir: tempfile::TempDir,
    pub ip: String,
}

impl Samba {
    /// Starts samba-dcerpcd in `ns`, bound to `ip` (an address of `ns`), and waits until TCP 135
    /// and at least two dynamic ports listen.
    pub fn start(ns: &Netns, ip: &str) -> Samba {
        let dir = tempfile::Builder::new()
            .prefix("dtcprobe-samba")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        for sub in ["lock", "state", "cache", "private", "pid", "ncalrpc", "log"] {
            std::fs::create_dir_all(d.join(sub)).unwrap();
        }
        let p = |s: &str| d.join(s).display().to_string();
        let conf = format!(
            "[global]\n\
             server role = standalone server\n\
             rpc start on demand helpers = no\n\
             interfaces = {ip}/32\n\
             bind interfaces only = yes\n\
             disable netbios = yes\n\
             lock directory = {}\n\
             state directory = {}\n\
             cache directory = {}\n\
             private dir = {}\n\
             pid directory = {}\n\
             ncalrpc dir = {}\n\
             log file = {}/log.%m\n",
            p("lock"),
            p("state"),
            p("cache"),
            p("private"),
            p("pid"),
            p("ncalrpc"),
            p("log"),
        );
        let conf_path = d.join("smb.conf");
        std::fs::write(&conf_path, conf).unwrap();
        let child = ns
            .command(SAMBA_DCERPCD)
            .args(["-s"])
            .arg(&conf_path)
            .args(["-F", "--libexec-rpcds", "-d", "1", "-l"])
            .arg(d.join("log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so Drop can stop it together with its rpcd_* workers.
            .process_group(0)
            .spawn()
            .expect("start samba-dcerpcd");
        let mut samba = Samba {
            child,
            dir,
            ip: ip.to_string(),
        };
        let up = wait_until(Duration::from_secs(30), || {
            if let Ok(Some(_)) = samba.child.try_wait() {
                return true;
            }
            let ports = samba.listening_ports(ns);
            ports.contains(&135) && ports.iter().filter(|p| **p >= 49152).count() >= 2
        });
        if let Ok(Some(status)) = samba.child.try_wait() {
            panic!(
                "samba-dcerpcd exited early ({status}); logs:\n{}",
                samba.logs()
            );
        }
        assert!(
            up,
            "samba-dcerpcd did not listen on {ip}:135 + dynamic ports in 30s; logs:\n{}",
            samba.logs()
        );
        samba
    }

    /// TCP ports listening on this instance's address in `ns`.
    pub fn listening_ports(&self, ns: &Netns) -> Vec<u16> {
        let out = ns.command("ss").args(["-Hltn"]).output().expect("ss");
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .filter_map(|l| l.split_whitespace().nth(3))
            .filter_map(|local| local.rsplit_once(':'))
            .filter(|(addr, _)| *addr == self.ip)
            .filter_map(|(_, port)| port.parse().ok())
            .collect()
    }

    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().join("log")
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(rd) = std::fs::read_dir(self.log_dir()) {
            for e in rd.flatten() {
                if let Ok(t) = std::fs::read_to_string(e.path()) {
                    let tail: Vec<&str> = t.lines().rev().take(20).collect();
                    all.push_str(&format!("== {}\n", e.path().display()));
                    all.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
                }
            }
        }
        all
    }
}

impl Drop for Samba {
    fn drop(&mut self) {
        // samba-dcerpcd leads its process group (its rpcd_* workers are in it): stop the group.
        stop_process_group(&mut self.child);
    }
}

/// Stops a samba that leads its own process group (its workers are in it): SIGTERM to the
/// group, up to 5 s for the leader to exit, then SIGKILL to whatever is left.
pub fn stop_process_group(child: &mut Child) {
    let pgid = child.id() as i32;
    // SAFETY: kill(2) on a process group this test started; no memory is involved.
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let stopped = wait_until(Duration::from_secs(5), || {
        matches!(child.try_wait(), Ok(Some(_)))
    });
    // SAFETY: as above.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
    if !stopped {
        let _ = child.kill();
    }
    let _ = child.wait();
}
