//! Wireshark's dissectors (tshark) as an independent judge of the bytes dtcprobe sends (issue 23,
//! item 4). Every other test of the TDS, DCE/RPC and PostgreSQL paths talks to a peer written from
//! the same reading of the specifications as the client, so a shared misreading passes both. Here
//! the tests' own traffic is captured and read back by Wireshark's dissectors: any malformed
//! packet, or expert error, in what dtcprobe sent fails the test, and a few decoded fields are
//! checked against what dtcprobe meant to send.
//!
//! SQL Server Browser (SSRP, UDP 1434) is not covered: Wireshark 4.0 has no dissector for it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support;
use support::netns::{self, can_run_netns_tests, dtcprobe_in, Netns, Zones, SQL_IP};
use support::postgres::{bin_dir, PgServer};
use support::tds_peer::tm::{ScriptedMsdtc, TmConfig};
use support::tds_peer::{PeerConfig, ServerEncryption, TdsPeer};
use support::{hop, parse_report, run_bin};

/// Where the canaries of a loopback capture go (discard; nothing listens there).
const LOOPBACK_CANARY: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9);

/// Wireshark's expert severity "Error" (PI_ERROR): malformed packets and protocol violations.
const PI_ERROR: u32 = 0x0080_0000;

fn have_tshark(test: &str) -> bool {
    if !netns::is_root() {
        eprintln!("SKIP {test}: needs root to capture (CI runs as root)");
        return false;
    }
    let found = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        // As root every dependency is installed by scripts/install-test-deps: a missing tshark
        // there is a broken install, not a reason to pass.
        panic!("{test}: tshark is not installed (scripts/install-test-deps installs it)");
    }
    true
}

/// A running capture (tshark writing a pcapng file), in the host's namespace or in `ns`.
struct Capture {
    child: Child,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Capture {
    /// Starts capturing on `iface` with the capture filter `filter`; returns once packets are
    /// really being written. tshark says "Capturing on" a little before its capture is live (the
    /// first packets of a fast exchange were missing), so canary datagrams to `canary` (UDP port
    /// 9, discard: nobody answers but ICMP) go out until the file grows.
    fn start(ns: Option<&Netns>, iface: &str, filter: &str, canary: SocketAddr) -> Capture {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("capture.pcapng");
        let mut cmd = match ns {
            Some(ns) => ns.command("tshark"),
            None => Command::new("tshark"),
        };
        let mut child = cmd
            .args(["-i", iface, "-f"])
            .arg(format!(
                "({filter}) or (udp and dst port {})",
                canary.port()
            ))
            .arg("-w")
            .arg(&file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tshark");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("Capturing on") {
                    let _ = tx.send(());
                }
            }
        });
        rx.recv_timeout(Duration::from_secs(20))
            .expect("tshark did not start capturing within 20 s");
        let size = || std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
        let empty = size();
        let live = netns::wait_until(Duration::from_secs(10), || {
            let script = format!("echo canary > /dev/udp/{}/{}", canary.ip(), canary.port());
            match ns {
                Some(ns) => {
                    let _ = ns.command("bash").args(["-c", &script]).status();
                }
                None => {
                    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                    let _ = socket.send_to(b"canary", canary);
                }
            }
            std::thread::sleep(Duration::from_millis(20));
            size() > empty
        });
        assert!(live, "tshark wrote no packet within 10 s of starting");
        Capture {
            child,
            file,
            _dir: dir,
        }
    }

    /// Stops the capture (SIGINT: tshark flushes and closes the file) and reads it.
    fn stop(mut self) -> Captured {
        // Packets still in flight on the interface when the run ended.
        std::thread::sleep(Duration::from_millis(300));
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let _ = self.child.wait();
        if std::env::var_os("DTCPROBE_KEEP_CAPTURE").is_some() {
            let kept =
                std::env::temp_dir().join(format!("dtcprobe-capture-{}.pcapng", self.child.id()));
            let _ = std::fs::copy(&self.file, &kept);
            eprintln!("capture kept: {}", kept.display());
        }
        Captured {
            file: self.file.clone(),
            _capture: self,
        }
    }
}

struct Captured {
    file: PathBuf,
    _capture: Capture,
}

impl Captured {
    /// `tshark -r` on the capture, with `decode_as` (`tcp.port==N,tds`).
    ///
    /// TDS is read packet by packet (`tds.defragment` off): tiberius, which sends the `login`
    /// hop's messages, numbers TDS packets across the whole connection (MS-TDS 2.2.3.1.5: the
    /// server ignores the number), while Wireshark 4.0 reassembles a message only from packets
    /// numbered from 1, as SqlClient numbers them, and otherwise shows the body as undissected
    /// data. Every message of these tests fits in one packet.
    fn tshark(&self, decode_as: &[String]) -> Command {
        let mut cmd = Command::new("tshark");
        cmd.arg("-r").arg(&self.file);
        cmd.args(["-o", "tds.defragment:FALSE"]);
        for d in decode_as {
            cmd.args(["-d", d]);
        }
        cmd
    }

    /// `tshark -r` with `decode_as` (`tcp.port==N,tds`), the display filter and fields: one row
    /// per matching packet, the fields separated by tabs.
    fn fields(&self, decode_as: &[String], filter: &str, fields: &[&str]) -> Vec<Vec<String>> {
        let mut cmd = self.tshark(decode_as);
        cmd.args([
            "-Y",
            filter,
            "-T",
            "fields",
            "-E",
            "occurrence=a",
            "-E",
            "separator=\t",
        ]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let out = cmd.output().expect("run tshark -r");
        assert!(
            out.status.success(),
            "tshark -r {} -Y '{filter}': {}",
            self.file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').map(str::to_string).collect())
            .collect()
    }

    /// Fails on any malformed packet or expert error among the packets `sent` selects (the
    /// ones dtcprobe sent), naming each.
    fn assert_no_dissector_errors(&self, decode_as: &[String], sent: &str) {
        let bad = self.fields(
            decode_as,
            &format!("({sent}) && (_ws.malformed || _ws.expert.severity >= {PI_ERROR})"),
            &["frame.number", "_ws.expert.message", "_ws.col.Info"],
        );
        assert!(
            bad.is_empty(),
            "Wireshark's dissectors report errors in what dtcprobe sent: {bad:?} ({})",
            self.file.display()
        );
    }

    /// One line per packet, as tshark summarises it (for failure messages).
    fn summary(&self, decode_as: &[String]) -> String {
        let out = self.tshark(decode_as).output().expect("run tshark -r");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .take(80)
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn count(&self, decode_as: &[String], filter: &str) -> usize {
        self.fields(decode_as, filter, &["frame.number"]).len()
    }
}

/// A TDS login, a local transaction and a distributed one, in the clear (`encrypt=none`, so the
/// dissector sees LOGIN7 and the batches): PRELOGIN, LOGIN7 as TDS 7.4, SQL batches whose
/// transaction descriptor headers are well formed.
#[test]
fn tds_login_and_batches_as_wireshark_reads_them() {
    let test = "tds_login_and_batches_as_wireshark_reads_them";
    if !have_tshark(test) {
        return;
    }
    let peer = TdsPeer::start(PeerConfig {
        encryption: ServerEncryption::NotSupported,
        ..PeerConfig::default()
    });
    let port = peer.port();
    let capture = Capture::start(None, "lo", &format!("tcp port {port}"), LOOPBACK_CANARY);
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, format!("{}\n", PeerConfig::default().password)).unwrap();
    let url = format!("mssql://probe@127.0.0.1:{port}/app?encrypt=none&tx=distributed");
    let (code, stdout, stderr) = run_bin(&[
        "check",
        "-f",
        "json",
        "--password-file",
        pw.to_str().unwrap(),
        &url,
    ]);
    let captured = capture.stop();
    // encrypt=none passes with a warning (the password crossed in the clear).
    assert!(code == 0 || code == 1, "{stdout}{stderr}");
    let report = parse_report(&stdout);
    assert_ne!(hop(&report, &url, "login")["status"], "fail", "{report:#}");
    assert_eq!(hop(&report, &url, "tx_distributed")["status"], "pass");

    let decode = vec![format!("tcp.port=={port},tds")];
    let sent = format!("tcp.dstport == {port}");
    captured.assert_no_dissector_errors(&decode, &sent);
    let logins = captured.fields(
        &decode,
        &format!("{sent} && tds.type == 0x10"),
        &["tds.7login.version"],
    );
    // Two LOGIN7: the chain's session (tx_local, tx_distributed) and hop dtc_name's own.
    assert_eq!(logins.len(), 2, "two LOGIN7: {logins:?}");
    // LOGIN7's TDSVersion as Wireshark decodes it: 0x74000004, TDS 7.4.
    assert!(logins.iter().all(|l| l[0] == "0x74000004"), "{logins:?}");
    // dtc_name's TM_GET_DTC_ADDRESS (request type 0), read as a Transaction Manager Request.
    assert_eq!(
        captured.count(&decode, &format!("{sent} && tds.type == 0x0e")),
        1,
        "one transaction manager request"
    );
    assert!(
        captured.count(&decode, &format!("{sent} && tds.type == 0x12")) >= 1,
        "no PRELOGIN"
    );
    // Every SQL batch carries a transaction descriptor header the dissector could read.
    let batches = captured.fields(
        &decode,
        &format!("{sent} && tds.type == 0x01"),
        &[
            "tds.all_headers.header.type",
            "tds.all_headers.header.trans_descr",
        ],
    );
    assert!(batches.len() >= 2, "{batches:?}");
    for b in &batches {
        assert!(
            b[0].split(',').any(|t| t == "0x0002"),
            "no transaction descriptor header: {b:?}"
        );
        assert!(!b[1].is_empty(), "{b:?}");
    }
}

/// tx_enlist's transaction manager requests (TDS packet type 0x0E), in the clear, against the
/// test peer with a scripted MSDTC: the dissector reads each as a Transaction Manager Request
/// with a well-formed header; the request types are those MS-TDS 2.2.6.9 lists, in the order
/// dtcprobe means (GET_DTC_ADDRESS, PROPAGATE_XACT with the cookie, PROPAGATE_XACT empty).
#[test]
fn tx_enlist_tm_requests_as_wireshark_reads_them() {
    let test = "tx_enlist_tm_requests_as_wireshark_reads_them";
    if !have_tshark(test) {
        return;
    }
    let msdtc = ScriptedMsdtc::new();
    let peer = TdsPeer::start(PeerConfig {
        encryption: ServerEncryption::NotSupported,
        tm: TmConfig {
            client_msdtc: Some(msdtc.clone()),
            ..TmConfig::default()
        },
        ..PeerConfig::default()
    });
    let port = peer.port();
    let capture = Capture::start(None, "lo", &format!("tcp port {port}"), LOOPBACK_CANARY);
    let target = dtcprobe::hops::mssql::MssqlTarget::from_url(&format!(
        "mssql://probe@127.0.0.1:{port}/app?tx=enlist&encrypt=none"
    ))
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let result = rt.block_on(dtcprobe::hops::mssql::enlist::run_enlist(
        &target,
        peer.addr,
        Some(dtcprobe::secret::Secret::new(
            &PeerConfig::default().password,
        )),
        msdtc.as_local_dtc(),
        "dtcprobe-dissector-test",
        Duration::from_secs(10),
    ));
    let captured = capture.stop();
    assert_eq!(result.status, dtcprobe::model::Status::Pass, "{result:#?}");
    let decode = vec![format!("tcp.port=={port},tds")];
    let sent = format!("tcp.dstport == {port}");
    captured.assert_no_dissector_errors(&decode, &sent);
    let requests = captured.fields(
        &decode,
        &format!("{sent} && tds.type == 0x0e"),
        &["tds.transmgr", "tds.all_headers.header.trans_descr"],
    );
    let types: Vec<&str> = requests.iter().map(|r| r[0].as_str()).collect();
    // MS-TDS 2.2.6.9: TM_GET_DTC_ADDRESS (0), then TM_PROPAGATE_XACT (1) with the cookie (the
    // enlistment), then TM_PROPAGATE_XACT with none (the unenlist).
    assert_eq!(
        types,
        ["0", "1", "1"],
        "{requests:?}\n{}",
        captured.summary(&decode)
    );
    // The work inside the enlisted transaction names its descriptor (not 0), as Wireshark
    // reads the batches' headers.
    let batches = captured.fields(
        &decode,
        &format!("{sent} && tds.type == 0x01"),
        &["tds.all_headers.header.trans_descr"],
    );
    assert!(
        batches.iter().any(|b| !b[0].is_empty() && b[0] != "0"),
        "no batch in the enlisted descriptor: {batches:?} {requests:?}"
    );
}

/// The endpoint mapper path against Samba's samba-dcerpcd in a namespace: the bind to the
/// mapper, ept_map, and the bind on the dynamic port, read by Wireshark's DCE/RPC dissector.
#[test]
fn dcerpc_bind_and_ept_map_as_wireshark_reads_them() {
    let test = "dcerpc_bind_and_ept_map_as_wireshark_reads_them";
    if !have_tshark(test) || !can_run_netns_tests(test) || !support::samba::available(test) {
        return;
    }
    let zones = Zones::new("dpk");
    let _samba = support::samba::Samba::start(&zones.sql, SQL_IP);
    let capture = Capture::start(
        Some(&zones.web),
        "eth0",
        "tcp",
        SocketAddr::new(SQL_IP.parse().unwrap(), 9),
    );
    let url = format!("epm://{SQL_IP}?iface={}", support::samba::LSARPC);
    let (code, stdout, stderr) = dtcprobe_in(&zones.web, &["check", "-f", "json", &url]);
    let captured = capture.stop();
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report = parse_report(&stdout);
    let port = hop(&report, &url, "rpc_port")["data"]["ports"][0]
        .as_u64()
        .or_else(|| hop(&report, &url, "rpc_bind")["data"]["port"].as_u64())
        .unwrap_or_else(|| panic!("no dynamic port in {report:#}"));
    let decode = vec![format!("tcp.port=={port},dcerpc")];
    let sent = "ip.src == 198.18.0.1";
    captured.assert_no_dissector_errors(&decode, sent);
    let binds = captured.fields(
        &decode,
        &format!("{sent} && dcerpc.pkt_type == 11"),
        &[
            "tcp.dstport",
            "dcerpc.cn_bind_to_uuid",
            "dcerpc.cn_bind_if_ver",
        ],
    );
    // The mapper's own interface on 135, then the asked-for interface on the dynamic port.
    assert!(
        binds.iter().any(|b| b[0] == "135"
            && b[1] == "e1af8308-5d1f-11c9-91a4-08002b14a0fa"
            && b[2] == "3"),
        "{binds:?}\n{}",
        captured.summary(&decode)
    );
    assert!(
        binds
            .iter()
            .any(|b| b[0] == port.to_string() && b[1] == "12345778-1234-abcd-ef00-0123456789ab"),
        "{binds:?}"
    );
    // ept_map (opnum 3) went out and Wireshark read its tower.
    let maps = captured.fields(
        &decode,
        &format!("{sent} && dcerpc.pkt_type == 0 && dcerpc.opnum == 3"),
        &["epm.tower.proto_id"],
    );
    assert!(!maps.is_empty(), "no ept_map request");
    assert!(!maps[0][0].is_empty(), "tower not decoded: {maps:?}");
}

/// A PostgreSQL login and two-phase commit against a real server, in the clear
/// (`sslmode=disable`): the startup message (protocol 3.0) and every message after it.
#[test]
fn postgres_startup_and_twophase_as_wireshark_reads_them() {
    let test = "postgres_startup_and_twophase_as_wireshark_reads_them";
    if !have_tshark(test) {
        return;
    }
    if bin_dir().is_none() {
        panic!(
            "{test}: no PostgreSQL server binaries (scripts/install-test-deps installs postgresql)"
        );
    }
    let server = PgServer::start(2);
    let port = server.port;
    let capture = Capture::start(None, "lo", &format!("tcp port {port}"), LOOPBACK_CANARY);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pg.toml");
    std::fs::write(
        &config,
        format!(
            "[[check]]\nname = \"pg\"\nkind = \"postgres\"\nhost = \"127.0.0.1\"\nport = {port}\n\
             user = \"postgres\"\ndatabase = \"postgres\"\npassword_env = \"PGPW\"\ntx = \"twophase\"\n\
             sslmode = \"disable\"\n"
        ),
    )
    .unwrap();
    let out = Command::new(netns::dtcprobe_bin())
        .args(["check", "-f", "json", "-c"])
        .arg(&config)
        .env("PGPW", &server.password)
        .output()
        .unwrap();
    let captured = capture.stop();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let decode = vec![format!("tcp.port=={port},pgsql")];
    let sent = format!("tcp.dstport == {port}");
    captured.assert_no_dissector_errors(&decode, &sent);
    let startup = captured.fields(
        &decode,
        &format!("{sent} && pgsql.version_major"),
        &["pgsql.version_major", "pgsql.version_minor"],
    );
    assert_eq!(
        startup,
        vec![vec!["3".to_string(), "0".to_string()]],
        "{}",
        captured.summary(&decode)
    );
    // PREPARE TRANSACTION / COMMIT PREPARED went out as queries the dissector read.
    assert!(
        captured.count(
            &decode,
            &format!("{sent} && pgsql.query contains \"PREPARE TRANSACTION\"")
        ) >= 1,
        "no PREPARE TRANSACTION read"
    );
}
