//! The TDS test peer as a process, for `scripts/bench` (case c: whole-process login + local
//! transaction, dtcprobe beside FreeTDS `tsql`). Not part of the tool.
//!
//! `tds_peer PASSWORD_FILE`: starts the scripted SQL Server stand-in from tests/support on
//! 127.0.0.1 (encryption "off" with a certificate, like a default SQL Server: clients that ask for
//! TLS get full TLS), writes its test password to PASSWORD_FILE, prints the port on stdout, and
//! runs until stdin is closed (at most one hour).

// The whole test peer, of which this process uses only the start and the password: the rest
// (scripted misbehaviours, the Browser stand-in, event logs) serves the tests.
#[path = "../tests/support/tds_peer.rs"]
#[allow(dead_code)]
mod tds_peer;

use std::io::{Read, Write};
use std::time::Duration;

use tds_peer::{PeerConfig, ServerEncryption, TdsPeer};

fn main() {
    let Some(pw_file) = std::env::args().nth(1) else {
        eprintln!("usage: tds_peer PASSWORD_FILE");
        std::process::exit(2);
    };
    let cfg = PeerConfig {
        encryption: ServerEncryption::Off,
        ..Default::default()
    };
    std::fs::write(&pw_file, format!("{}\n", cfg.password)).expect("write the password file");
    let peer = TdsPeer::start(cfg);
    println!("{}", peer.port());
    std::io::stdout().flush().unwrap();
    // Until stdin closes; a watchdog thread bounds the lifetime if the caller forgets.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(3600));
        std::process::exit(0);
    });
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(peer);
}
