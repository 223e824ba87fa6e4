//! A real PostgreSQL server for tests: a throwaway cluster made with initdb in a temporary
//! directory, started on 127.0.0.1 on a free port, SCRAM password authentication, stopped and
//! removed on Drop. Runs as the `postgres` user when the tests run as root (the server refuses
//! to run as root).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const SUPERUSER: &str = "postgres";

pub struct PgServer {
    pub port: u16,
    pub password: String,
    /// The data directory and its files, removed when the server is dropped (never read).
    _dir: tempfile::TempDir,
    child: Child,
}

/// The directory of the newest installed PostgreSQL's server binaries, if any.
pub fn bin_dir() -> Option<PathBuf> {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("postgres").exists() && p.join("initdb").exists())
        .collect();
    versions.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
    });
    versions.pop()
}

fn as_server_user(program: &Path) -> Command {
    if super::netns::is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// TLS for a test server: its certificate and key (PEM), and whether pg_hba.conf admits TCP
/// logins over TLS only (`hostssl`).
#[derive(Clone)]
pub struct PgTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub hostssl_only: bool,
}

/// A private CA and a server certificate it signed for `names` (DNS names or IP addresses), as
/// PEM: (CA certificate, server certificate, server key).
pub fn ca_and_server_cert(names: &[&str]) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "dtcprobe test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

impl PgServer {
    /// Starts a server with the given `max_prepared_transactions` (0 disables two-phase commit,
    /// as in a default install).
    pub fn start(max_prepared_transactions: u32) -> PgServer {
        Self::start_with(max_prepared_transactions, None)
    }

    /// As [`PgServer::start`], with TLS (`ssl = on`) when `tls` is given.
    pub fn start_with(max_prepared_transactions: u32, tls: Option<PgTls>) -> PgServer {
        let bin = bin_dir()
            .expect("PostgreSQL server binaries (scripts/install-test-deps installs postgresql)");
        let dir = tempfile::Builder::new()
            .prefix("dtcprobe-pg")
            .tempdir()
            .unwrap();
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        let password = format!("pw-{}-{}", std::process::id(), free_port());
        std::fs::write(&pwfile, &password).unwrap();
        if super::netns::is_root() {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status()
                .unwrap();
            assert!(status.success());
        }
        let out = as_server_user(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                SUPERUSER,
                "--auth=scram-sha-256",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut tls_args: Vec<String> = Vec::new();
        if let Some(tls) = &tls {
            let cert = dir.path().join("server.crt");
            let key = dir.path().join("server.key");
            std::fs::write(&cert, &tls.cert_pem).unwrap();
            std::fs::write(&key, &tls.key_pem).unwrap();
            // The server refuses a key others may read.
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
            if super::netns::is_root() {
                let status = Command::new("chown")
                    .arg("postgres:postgres")
                    .arg(&cert)
                    .arg(&key)
                    .status()
                    .unwrap();
                assert!(status.success());
            }
            tls_args = vec![
                "-c".into(),
                "ssl=on".into(),
                "-c".into(),
                format!("ssl_cert_file={}", cert.display()),
                "-c".into(),
                format!("ssl_key_file={}", key.display()),
            ];
            if tls.hostssl_only {
                // Over TCP, only TLS connections may log in; the local socket stays for pg_ctl.
                let hba = data.join("pg_hba.conf");
                std::fs::write(
                    &hba,
                    "local all all scram-sha-256\nhostssl all all 127.0.0.1/32 scram-sha-256\n",
                )
                .unwrap();
            }
        }
        let port = free_port();
        let child = as_server_user(&bin.join("postgres"))
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .args([
                "-c",
                &format!("max_prepared_transactions={max_prepared_transactions}"),
            ])
            .args(&tls_args)
            .arg("-k")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut server = PgServer {
            port,
            password,
            _dir: dir,
            child,
        };
        // Listening is not ready: while it starts up the server accepts TCP and answers logins
        // with 57P03 ("the database system is starting up"), which failed a test's login hop on
        // a loaded machine. pg_isready asks the server itself whether it accepts connections.
        let ready = super::netns::wait_until(Duration::from_secs(20), || {
            Command::new(bin.join("pg_isready"))
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success())
        });
        if let Ok(Some(status)) = server.child.try_wait() {
            panic!("postgres exited at start: {status}");
        }
        assert!(ready, "postgres did not listen on {port}");
        server
    }

    /// A client connection as the superuser (for assertions on server state).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user(SUPERUSER)
            .password(&self.password)
            .dbname("postgres")
            .connect(tokio_postgres::NoTls)
            .await
            .expect("superuser connect");
        tokio::spawn(conn);
        client
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        // SIGINT is PostgreSQL's "fast shutdown"; kill as a fallback.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGINT);
        }
        let stopped = super::netns::wait_until(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        });
        if !stopped {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}
