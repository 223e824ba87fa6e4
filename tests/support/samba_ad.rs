//! A real Active Directory domain controller for the Kerberos tests: Samba (`samba`, AD DC role,
//! only its kdc, ldap, dns and cldap services, one process) inside a network namespace, behind a
//! router namespace whose nftables can drop the DC's ports, with a client namespace ("web") on
//! the far side.
//!
//! Provisioning (`samba-tool domain provision`) takes 3 s on an idle machine and over 30 s on a
//! busy CI one, so it is done once into a template under the test target's temporary directory
//! (reused by later runs: a `ready` marker is written last) with the accounts, SPNs and keytab
//! the tests need; each test copies the template and starts its own `samba` on the copy. The
//! template holds:
//! - user `probe` (the client) and service account `sqlsvc` with SPN
//!   `MSSQLSvc/sql.dtc.test:1433`, exported to `sql.keytab` for the TDS test peer;
//! - `MSSQLSvc/dup.dtc.test:1433` on both `sqlsvc` and `other`: Samba refuses a duplicate SPN
//!   through samba-tool and through sam.ldb's modules, so the second one is written straight
//!   into the domain partition's ldb file while samba is not running (as a replication
//!   conflict or an old domain's import leaves it); Samba's KDC then answers "not found" for it;
//! - no SPN at all for `nospn.dtc.test`;
//! - the DC's own SPNs (`ldap/dc1.dtc.test` ...), registered with `samba_spnupdate`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::support::netns::{self, link_named, wait_until, Netns};

pub const REALM: &str = "DTC.TEST";
pub const DOMAIN: &str = "dtc.test";
pub const DC_HOST: &str = "dc1.dtc.test";
pub const WEB_IP: &str = "198.18.1.10";
pub const ROUTER_WEB_IP: &str = "198.18.1.1";
pub const ROUTER_DC_IP: &str = "198.18.2.1";
pub const DC_IP: &str = "198.18.2.10";
/// The SQL Server's address (the TDS test peer), in the DC's namespace.
pub const SQL_IP: &str = "198.18.2.20";
/// Has SPN MSSQLSvc/sql.dtc.test:1433 (account sqlsvc).
pub const SQL_HOST: &str = "sql.dtc.test";
/// Has no SPN.
pub const NOSPN_HOST: &str = "nospn.dtc.test";
/// MSSQLSvc/dup.dtc.test:1433 is on two accounts.
pub const DUP_HOST: &str = "dup.dtc.test";
pub const SERVICE_ACCOUNT: &str = "sqlsvc";
pub const DUP_ACCOUNT: &str = "other";
pub const CLIENT_USER: &str = "probe";
// Test-only passwords of a throwaway domain that lives in a namespace for one test.
pub const CLIENT_PASSWORD: &str = "Probe!Passw0rd1";
const ADMIN_PASSWORD: &str = "Adm1n!Dtcprobe";
const SERVICE_PASSWORD: &str = "Svc!Passw0rd1";
const OTHER_PASSWORD: &str = "Oth!Passw0rd1";

/// Bumped whenever the template's contents change, so an old one is not reused.
const TEMPLATE_VERSION: &str = "v2";

pub fn available(test: &str) -> bool {
    for tool in [
        "/usr/sbin/samba",
        "/usr/bin/samba-tool",
        "/usr/bin/ldbmodify",
    ] {
        if !Path::new(tool).exists() {
            // CI installs them (scripts/install-test-deps): there this cannot skip silently.
            panic!(
                "{test}: {tool} missing: run scripts/install-test-deps (Debian samba-ad-dc, \
                 samba-ad-provision, ldb-tools)"
            );
        }
    }
    true
}

/// web (198.18.1.10) -- router (198.18.1.1 | 198.18.2.1) -- dc (198.18.2.10, and the SQL
/// address 198.18.2.20). The web side resolves through the DC's own DNS; its hosts file names
/// the SQL hosts (all at SQL_IP), as a site's DNS would.
pub struct AdZones {
    pub web: Netns,
    pub router: Netns,
    pub dc: Netns,
}

impl AdZones {
    pub fn new(prefix: &str) -> AdZones {
        let web = Netns::new(&format!("{prefix}w"));
        let router = Netns::new(&format!("{prefix}r"));
        let dc = Netns::new(&format!("{prefix}d"));
        link_named(
            &web,
            "eth0",
            &format!("{WEB_IP}/24"),
            &router,
            "eth0",
            &format!("{ROUTER_WEB_IP}/24"),
        );
        link_named(
            &router,
            "eth1",
            &format!("{ROUTER_DC_IP}/24"),
            &dc,
            "eth0",
            &format!("{DC_IP}/24"),
        );
        dc.sh(&format!(
            "ip addr add {SQL_IP}/24 dev eth0 && ip route add default via {ROUTER_DC_IP}"
        ));
        web.sh(&format!("ip route add default via {ROUTER_WEB_IP}"));
        router.sh("sysctl -qw net.ipv4.ip_forward=1");
        for ns in [&web, &dc] {
            ns.etc_file(
                "resolv.conf",
                &format!("nameserver {DC_IP}\nsearch {DOMAIN}\noptions timeout:1 attempts:1\n"),
            );
        }
        web.etc_file(
            "hosts",
            &format!("127.0.0.1 localhost\n{SQL_IP} {SQL_HOST} {NOSPN_HOST} {DUP_HOST}\n"),
        );
        dc.etc_file(
            "hosts",
            &format!("127.0.0.1 localhost\n{DC_IP} {DC_HOST} dc1\n"),
        );
        AdZones { web, router, dc }
    }

    /// The router drops everything forwarded to the DC on these `proto dport` pairs, e.g.
    /// `["tcp 88", "udp 88"]`.
    pub fn drop_to_dc(&self, flows: &[&str]) {
        let rules: String = flows
            .iter()
            .map(|f| format!("    ip daddr {DC_IP} {f} drop\n"))
            .collect::<Vec<_>>()
            .join("")
            .replace(" tcp ", " tcp dport ")
            .replace(" udp ", " udp dport ");
        self.router.nft(&format!(
            "table inet f {{\n  chain to_dc {{\n    type filter hook forward priority 0;\n{rules}  }}\n}}\n"
        ));
    }
}

/// A krb5.conf for the client side (given to processes through KRB5_CONFIG: the host has no
/// /etc/krb5.conf for `ip netns exec` to bind over): the realm, KDCs found through DNS SRV.
pub fn client_krb5_conf(dir: &Path) -> PathBuf {
    let path = dir.join("krb5.conf");
    std::fs::write(
        &path,
        format!(
            "[libdefaults]\n default_realm = {REALM}\n dns_lookup_kdc = true\n \
             dns_lookup_realm = false\n rdns = false\n dns_canonicalize_hostname = false\n"
        ),
    )
    .unwrap();
    path
}

fn run_ok(cmd: &mut Command) -> String {
    String::from_utf8_lossy(&netns::run(cmd).stdout).into_owned()
}

/// The provisioned template (built once per machine, see the module header).
fn template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = root.join(format!("samba-ad-{TEMPLATE_VERSION}"));
        if dir.join("ready").exists() {
            return dir;
        }
        let _ = std::fs::remove_dir_all(&dir);
        let building = root.join(format!(
            "samba-ad-{TEMPLATE_VERSION}.building-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&building);
        std::fs::create_dir_all(&building).unwrap();
        provision(&building);
        // The smb.conf names the directory it was provisioned in; the copies rewrite it.
        std::fs::write(
            building.join("provisioned-in"),
            building.display().to_string(),
        )
        .unwrap();
        std::fs::write(building.join("ready"), "").unwrap();
        std::fs::rename(&building, &dir).unwrap();
        dir
    })
}

fn provision(dir: &Path) {
    // Provisioned inside a namespace holding the DC's address, so that the DNS records and the
    // interface settings it writes are the ones the copies will serve.
    let ns = Netns::new("dpadp");
    ns.sh(&format!(
        "ip link add d0 type veth peer name d1 && ip addr add {DC_IP}/24 dev d0 && ip link set d0 up && ip link set d1 up"
    ));
    ns.etc_file("resolv.conf", &format!("nameserver {DC_IP}\n"));
    let started = std::time::Instant::now();
    run_ok(ns.command("samba-tool").args([
        "domain",
        "provision",
        &format!("--realm={REALM}"),
        "--domain=DTC",
        "--server-role=dc",
        "--dns-backend=SAMBA_INTERNAL",
        &format!("--adminpass={ADMIN_PASSWORD}"),
        &format!("--targetdir={}", dir.display()),
        "--host-name=dc1",
        &format!("--host-ip={DC_IP}"),
        &format!("--option=interfaces={DC_IP}/32"),
        "--option=bind interfaces only=yes",
        // Only what the tests use: no smbd, winbindd, replication or NTP signing.
        "--option=server services=kdc ldap dns cldap",
        "--option=dns forwarder=",
    ]));
    eprintln!(
        "samba_ad: provisioned {REALM} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let sam = format!("{}/private/sam.ldb", dir.display());
    let tool = |args: &[&str]| {
        run_ok(Command::new("samba-tool").args(args).args(["-H", &sam]));
    };
    // The DC's own SPNs (ldap/dc1.dtc.test ...): samba registers them at start-up through its
    // dnsupdate service, which the tests do not run; the LDAP bind needs a ticket for ldap/.
    run_ok(
        Command::new("samba_spnupdate").args(["-s", &format!("{}/etc/smb.conf", dir.display())]),
    );
    tool(&["user", "create", CLIENT_USER, CLIENT_PASSWORD]);
    tool(&["user", "create", SERVICE_ACCOUNT, SERVICE_PASSWORD]);
    tool(&["user", "create", DUP_ACCOUNT, OTHER_PASSWORD]);
    tool(&[
        "spn",
        "add",
        &format!("MSSQLSvc/{SQL_HOST}:1433"),
        SERVICE_ACCOUNT,
    ]);
    tool(&[
        "spn",
        "add",
        &format!("MSSQLSvc/{DUP_HOST}:1433"),
        SERVICE_ACCOUNT,
    ]);
    // The duplicate, straight into the domain partition (see the module header).
    let ldif = dir.join("dup.ldif");
    std::fs::write(
        &ldif,
        format!(
            "dn: CN={DUP_ACCOUNT},CN=Users,DC=dtc,DC=test\nchangetype: modify\n\
             add: servicePrincipalName\nservicePrincipalName: MSSQLSvc/{DUP_HOST}:1433\n"
        ),
    )
    .unwrap();
    let partition = format!("{}/private/sam.ldb.d/DC=DTC,DC=TEST.ldb", dir.display());
    run_ok(
        Command::new("ldbmodify")
            .arg("-H")
            .arg(&partition)
            .arg(&ldif),
    );
    let found = run_ok(Command::new("ldbsearch").args([
        "-H",
        &sam,
        &format!("(servicePrincipalName=MSSQLSvc/{DUP_HOST}:1433)"),
        "dn",
    ]));
    assert_eq!(
        found.matches("dn: ").count(),
        2,
        "the duplicate SPN is not on two accounts:\n{found}"
    );
    run_ok(Command::new("samba-tool").args([
        "domain",
        "exportkeytab",
        &format!("{}/sql.keytab", dir.display()),
        &format!("--principal=MSSQLSvc/{SQL_HOST}:1433"),
        "-s",
        &format!("{}/etc/smb.conf", dir.display()),
    ]));
}

/// A running domain controller on a copy of the template. Stopped (its process group) on Drop.
pub struct SambaAd {
    child: Child,
    dir: tempfile::TempDir,
}

impl SambaAd {
    /// Starts the DC in `zones.dc` and waits until its KDC (TCP/UDP 88), kpasswd (464), LDAP
    /// (389) and DNS (53) listen.
    pub fn start(zones: &AdZones) -> SambaAd {
        let template = template();
        let dir = tempfile::Builder::new()
            .prefix("dtcprobe-ad")
            .tempdir()
            .expect("tempdir");
        let copy = dir.path().join("dc");
        run_ok(Command::new("cp").arg("-a").arg(template).arg(&copy));
        let provisioned_in = std::fs::read_to_string(template.join("provisioned-in")).unwrap();
        let conf = copy.join("etc/smb.conf");
        let text = std::fs::read_to_string(&conf)
            .unwrap()
            .replace(provisioned_in.trim(), &copy.display().to_string());
        // Logs, pid file and sockets next to the copy, not in /var/log/samba and /run/samba,
        // so that several DCs (one per test) run at once.
        let text = text.replace(
            "log file = /var/log/samba/log.%m",
            &format!("log file = {}/log.%m", copy.display()),
        );
        let own_dirs = ["pid", "ncalrpc", "winbindd"].map(|d| {
            std::fs::create_dir_all(copy.join(d)).unwrap();
            copy.join(d).display().to_string()
        });
        let text = text.replacen(
            "[global]\n",
            &format!(
                "[global]\n\tpid directory = {}\n\tncalrpc dir = {}\n\twinbindd socket directory = {}\n",
                own_dirs[0], own_dirs[1], own_dirs[2]
            ),
            1,
        );
        std::fs::write(&conf, text).unwrap();
        let started = std::time::Instant::now();
        let child = zones
            .dc
            .command("samba")
            .arg("-s")
            .arg(&conf)
            .args(["-i", "-M", "single", "-d", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(copy.join("log.stderr")).unwrap())
            .process_group(0)
            .spawn()
            .expect("start samba");
        let mut dc = SambaAd { child, dir };
        let up = wait_until(Duration::from_secs(120), || {
            if let Ok(Some(_)) = dc.child.try_wait() {
                return true;
            }
            let tcp = listening(&zones.dc, "-Hltn");
            let udp = listening(&zones.dc, "-Hlun");
            [88, 464, 389, 53].iter().all(|p| tcp.contains(p)) && udp.contains(&88)
        });
        if let Ok(Some(status)) = dc.child.try_wait() {
            panic!("samba exited early ({status}); logs:\n{}", dc.logs());
        }
        assert!(up, "samba did not listen in 120 s; logs:\n{}", dc.logs());
        eprintln!(
            "samba_ad: DC up in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        dc
    }

    fn copy(&self) -> PathBuf {
        self.dir.path().join("dc")
    }

    /// The keytab of MSSQLSvc/sql.dtc.test:1433 (account sqlsvc), for the TDS test peer: the
    /// template's, which outlives every test (the acceptor registers it once per process, see
    /// tds_peer_krb.rs) and holds the same keys as every copy.
    pub fn sql_keytab(&self) -> PathBuf {
        template().join("sql.keytab")
    }

    pub fn logs(&self) -> String {
        let mut all = String::new();
        if let Ok(rd) = std::fs::read_dir(self.copy()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with("log.") {
                    if let Ok(t) = std::fs::read_to_string(e.path()) {
                        let tail: Vec<&str> = t.lines().rev().take(30).collect();
                        all.push_str(&format!("== {name}\n"));
                        all.extend(tail.into_iter().rev().map(|l| format!("{l}\n")));
                    }
                }
            }
        }
        all
    }
}

/// Ports listening on the DC's address in `ns` (`ss` flags `-Hltn` or `-Hlun`).
fn listening(ns: &Netns, flags: &str) -> Vec<u16> {
    let Ok(out) = ns.command("ss").arg(flags).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|local| local.rsplit_once(':'))
        .filter(|(addr, _)| *addr == DC_IP)
        .filter_map(|(_, port)| port.parse().ok())
        .collect()
}

impl Drop for SambaAd {
    fn drop(&mut self) {
        super::samba::stop_process_group(&mut self.child);
    }
}
