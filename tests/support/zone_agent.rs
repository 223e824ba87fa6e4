//! A real `dtcprobe agent` process inside a network namespace (a matrix zone's agent), with its
//! stderr collected; killed on drop. Shared by the matrix tests.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::netns::{dtcprobe_bin, Netns};

pub struct ZoneAgent {
    child: Child,
    pub log: Arc<Mutex<String>>,
}

impl ZoneAgent {
    /// Starts `dtcprobe agent -v --listen LISTEN --key-file KEY -c CONFIG` in `ns` and waits (20 s
    /// at most) until it says it listens.
    pub fn start(ns: &Netns, listen: &str, key: &Path, config: &Path) -> ZoneAgent {
        let mut child = ns
            .command(dtcprobe_bin())
            .args(["agent", "-v", "--listen", listen, "--key-file"])
            .arg(key)
            .arg("-c")
            .arg(config)
            .env_remove("RUST_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn agent");
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        let agent = ZoneAgent { child, log };
        let started = Instant::now();
        while !agent.log.lock().unwrap().contains("agent listening") {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "agent in {} never listened:\n{}",
                ns.name,
                agent.log.lock().unwrap()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        agent
    }
}

impl Drop for ZoneAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `zone = ...` / `allow = [...]` section `matrix --print-allow` printed for `zone`.
pub fn allow_section(print_allow: &str, zone: &str) -> String {
    print_allow
        .split("\n\n")
        .find(|s| s.contains(&format!("# zone {zone}:")))
        .unwrap_or_else(|| panic!("no allow section for {zone}:\n{print_allow}"))
        .to_string()
}
