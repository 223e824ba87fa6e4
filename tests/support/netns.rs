//! Network namespaces as test hosts: `ip netns` + veth, addresses in 198.18.0.0/15, nftables rules,
//! per-namespace /etc files, and TCP listeners bound inside a namespace. Everything is removed on
//! Drop, including during a panic's unwinding.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

pub fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

/// Returns false (and says why) when namespace tests cannot run here. CI runs as root, so there
/// these tests always run.
pub fn can_run_netns_tests(test: &str) -> bool {
    if !is_root() {
        eprintln!("SKIP {test}: needs root for ip netns / nftables (CI runs as root)");
        return false;
    }
    true
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A name unique to this test process and call: `{prefix}-{pid}x{n}`. All integration tests run
/// as threads of one process, so the process-wide counter is what keeps parallel tests apart; the
/// `-` keeps the pid readable after a prefix that ends in a digit (see the sweep below).
pub fn unique_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Runs `cmd` to completion; a failure to start or a non-zero exit fails the test with its output.
pub fn run(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub struct Netns {
    pub name: String,
}

/// Removes namespaces left behind by test processes that were killed before their Drop ran
/// (names made by [`unique_name`]: `{prefix}-{pid}x{n}` with no such pid alive). Names in another
/// format are left alone: guessing a pid from them could delete a live run's namespace.
fn sweep_stale_namespaces() {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
            return;
        };
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if !name.starts_with("dp") {
                continue;
            }
            let Some((head, _)) = name.rsplit_once('x') else {
                continue;
            };
            let Some((_, pid)) = head.rsplit_once('-') else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
            {
                let _ = Command::new("ip").args(["netns", "del", name]).status();
                let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(name));
            }
        }
    });
}

impl Netns {
    pub fn new(prefix: &str) -> Netns {
        sweep_stale_namespaces();
        let name = unique_name(prefix);
        run(Command::new("ip").args(["netns", "add", &name]));
        let ns = Netns { name };
        ns.sh("ip link set lo up");
        ns
    }

    /// Runs a shell command inside the namespace; panics with its output on failure.
    pub fn sh(&self, script: &str) -> String {
        let out = run(Command::new("ip").args(["netns", "exec", &self.name, "sh", "-c", script]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A Command that runs `program` inside the namespace (stdin closed).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program])
            .stdin(Stdio::null());
        c
    }

    /// Runs `f` on a thread that has entered this namespace (setns changes only that thread):
    /// the sockets it creates live in the namespace, whichever thread uses them afterwards.
    pub fn inside<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).expect("open netns");
            // SAFETY: setns on this thread only; the file is an open namespace descriptor.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("namespace thread")
    }

    /// [`Netns::inside`] with this namespace's /etc files (resolv.conf, hosts: [`Netns::etc_file`])
    /// bound over /etc, as `ip netns exec` does, in a mount namespace of that thread's own (the
    /// host's mounts are not touched): for library code that reads the system's DNS
    /// configuration, called in-process. (Used by the Samba AD tests, built with `kerberos`.)
    #[cfg(feature = "kerberos")]
    pub fn inside_with_etc<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let etc = self.etc_dir();
        self.inside(move || {
            use std::ffi::CString;
            let c = |p: &std::path::Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: unshare and mount on this thread's own (new) mount namespace, with
            // NUL-terminated paths that outlive the calls.
            unsafe {
                // CLONE_NEWNS implies CLONE_FS: only this thread moves.
                let rc = libc::unshare(libc::CLONE_NEWNS);
                assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
                let root = c(std::path::Path::new("/"));
                let rc = libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_SLAVE,
                    std::ptr::null(),
                );
                assert_eq!(
                    rc,
                    0,
                    "mount --make-rslave /: {}",
                    std::io::Error::last_os_error()
                );
                for entry in std::fs::read_dir(&etc).into_iter().flatten().flatten() {
                    let (from, to) = (
                        entry.path(),
                        std::path::Path::new("/etc").join(entry.file_name()),
                    );
                    let (from_c, to_c) = (c(&from), c(&to));
                    let rc = libc::mount(
                        from_c.as_ptr(),
                        to_c.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    );
                    assert_eq!(
                        rc,
                        0,
                        "bind {} over {}: {}",
                        from.display(),
                        to.display(),
                        std::io::Error::last_os_error()
                    );
                }
            }
            f()
        })
    }

    /// Replaces the namespace's nftables ruleset (fed on stdin: no file is left behind).
    pub fn nft(&self, ruleset: &str) {
        let script = format!("flush ruleset\n{ruleset}");
        let out = super::output_with_stdin(
            Command::new("ip").args(["netns", "exec", &self.name, "nft", "-f", "-"]),
            &script,
        );
        assert!(
            out.status.success(),
            "nft in {} rejected the ruleset: {}\n{script}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Writes /etc/netns/NAME/FILE, which `ip netns exec` bind-mounts over /etc/FILE.
    pub fn etc_file(&self, file: &str, contents: &str) {
        let dir = self.etc_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), contents).unwrap();
    }

    fn etc_dir(&self) -> PathBuf {
        PathBuf::from("/etc/netns").join(&self.name)
    }

    /// Binds a TCP listener inside this namespace that accepts and closes connections until
    /// dropped (accepting keeps the backlog from filling up under load).
    pub fn listen_tcp(&self, addr: SocketAddr) -> Listener {
        let ns_path = format!("/run/netns/{}", self.name);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            // setns affects only this thread: the socket is created in the namespace and stays
            // there, which is all a listener needs.
            let f = std::fs::File::open(&ns_path).expect("open netns");
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let listener = match socket_listen(addr) {
                Ok(l) => l,
                Err(e) => {
                    tx.send(Err(e)).unwrap();
                    return;
                }
            };
            tx.send(Ok(())).unwrap();
            while !stop_thread.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(2))
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        rx.recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("listen on {addr} in {}: {e}", self.name));
        Listener {
            stop,
            handle: Some(handle),
        }
    }
}

/// An endpoint mapper stand-in on 127.0.0.1:135 for the whole test binary: accepts TCP and closes
/// it, nothing more. Hop `dtc_name` connects to TCP 135 of the DTC host the TDS peer names
/// (`localhost` by default); binary runs on this host that expect that hop to pass call this
/// first. Something else already listening there serves as well (the hop only connects).
pub fn loopback_endpoint_mapper() {
    static STARTED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    STARTED.get_or_init(|| match socket_listen("127.0.0.1:135".parse().unwrap()) {
        Ok(listener) => {
            std::thread::spawn(move || loop {
                match listener.accept() {
                    Ok((s, _)) => drop(s),
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {}
        Err(e) => panic!("cannot listen on 127.0.0.1:135 (root needed): {e}"),
    });
}

fn socket_listen(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(self.etc_dir());
    }
}

pub struct Listener {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Links two namespaces with a veth pair; each end is `eth0` inside its namespace (the names only
/// need to be unique inside a namespace, so parallel tests cannot collide).
pub fn link(a: &Netns, a_cidr: &str, b: &Netns, b_cidr: &str) {
    link_named(a, "eth0", a_cidr, b, "eth0", b_cidr);
}

pub fn link_named(a: &Netns, a_if: &str, a_cidr: &str, b: &Netns, b_if: &str, b_cidr: &str) {
    run(Command::new("ip").args([
        "link", "add", "name", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if,
        "netns", &b.name,
    ]));
    a.sh(&format!(
        "ip addr add {a_cidr} dev {a_if} && ip link set {a_if} up"
    ));
    b.sh(&format!(
        "ip addr add {b_cidr} dev {b_if} && ip link set {b_if} up"
    ));
}

/// Two zones: `web` (198.18.0.1) and `sql` (198.18.0.2) on one link, with `sql` also routing
/// (forwarding on) towards 198.19.0.0/24, for which it has no route, so it answers ICMP net
/// unreachable like a real router. Both namespaces get a resolv.conf pointing at `sql`, so no
/// DNS query ever leaves the test.
pub struct Zones {
    pub web: Netns,
    pub sql: Netns,
}

pub const WEB_IP: &str = "198.18.0.1";
pub const SQL_IP: &str = "198.18.0.2";
/// Routed via `sql`, which has no route for it.
pub const NO_ROUTE_IP: &str = "198.19.0.9";

impl Zones {
    pub fn new(prefix: &str) -> Zones {
        let web = Netns::new(&format!("{prefix}w"));
        let sql = Netns::new(&format!("{prefix}s"));
        link(&web, "198.18.0.1/24", &sql, "198.18.0.2/24");
        web.sh("ip route add 198.19.0.0/24 via 198.18.0.2");
        sql.sh("sysctl -qw net.ipv4.ip_forward=1");
        for ns in [&web, &sql] {
            ns.etc_file(
                "resolv.conf",
                "nameserver 198.18.0.2\noptions timeout:1 attempts:1\n",
            );
            ns.etc_file("hosts", "127.0.0.1 localhost\n");
        }
        Zones { web, sql }
    }
}

/// The built dtcprobe binary.
pub fn dtcprobe_bin() -> &'static str {
    env!("CARGO_BIN_EXE_dtcprobe")
}

/// Runs dtcprobe inside `ns` with `args`; returns (exit code, stdout, stderr).
pub fn dtcprobe_in(ns: &Netns, args: &[&str]) -> (i32, String, String) {
    let out = ns
        .command(dtcprobe_bin())
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("run dtcprobe");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dtcprobe check -f json --timeout 2s --no-trace --password-file PW NAME=URL...` inside `ns`:
/// the namespace tests' way of running several named checks at once.
pub fn check_named_in(ns: &Netns, password_file: &str, named: &[String]) -> (i32, String, String) {
    let mut args = vec![
        "check",
        "-f",
        "json",
        "--timeout",
        "2s",
        "--no-trace",
        "--password-file",
        password_file,
    ];
    args.extend(named.iter().map(String::as_str));
    dtcprobe_in(ns, &args)
}

/// A process started inside a namespace, killed (and reaped) on Drop.
pub struct Daemon {
    child: std::process::Child,
    pub name: String,
}

impl Daemon {
    pub fn spawn(ns: &Netns, program: &str, args: &[&str]) -> Daemon {
        let child = ns
            .command(program)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {program} in {}: {e}", ns.name));
        Daemon {
            child,
            name: program.to_string(),
        }
    }

    /// Takes charge of a process started elsewhere (outside any namespace too): killed on Drop.
    pub fn adopt(child: std::process::Child, name: &str) -> Daemon {
        Daemon {
            child,
            name: name.to_string(),
        }
    }

    /// Panics with the daemon's stderr if it has already exited (bad config, port in use...).
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            let mut err = String::new();
            if let Some(mut e) = self.child.stderr.take() {
                use std::io::Read;
                let _ = e.read_to_string(&mut err);
            }
            panic!("{} exited early ({status}): {err}", self.name);
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `ready` every 50 ms, at most `limit`; returns whether it became true.
pub fn wait_until(limit: Duration, mut ready: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if ready() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    ready()
}

/// Starts dnsmasq as the authoritative DNS server of the zone `zone.test` (and of the reverse
/// zone 198.18.0.0/16) on `listen` inside `ns`. `records` are extra dnsmasq options such as
/// `--host-record=NAME,IP` (A + matching PTR), `--address=/NAME/IP` (A only) and
/// `--ptr-record=ARPA,NAME` (PTR only). Names outside what is configured get NXDOMAIN.
pub fn start_dnsmasq(ns: &Netns, listen: &str, records: &[&str]) -> Daemon {
    std::fs::create_dir_all(ns.etc_dir()).unwrap();
    let mut args = vec![
        "--keep-in-foreground".to_string(),
        "--conf-file=/dev/null".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--no-poll".into(),
        "--bind-interfaces".into(),
        format!("--listen-address={listen}"),
        "--except-interface=lo".into(),
        "--user=root".into(),
        // Inside /etc/netns/NAME, which is removed with the namespace.
        format!("--pid-file=/etc/netns/{}/dnsmasq.pid", ns.name),
        "--local=/zone.test/".into(),
        "--local=/18.198.in-addr.arpa/".into(),
        "--log-facility=-".into(),
    ];
    args.extend(records.iter().map(|r| r.to_string()));
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut d = Daemon::spawn(ns, "dnsmasq", &argv);
    let up = wait_until(Duration::from_secs(5), || {
        ns.command("sh")
            .args(["-c", &format!("ss -lun | grep -q '{listen}:53'")])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    });
    d.assert_running();
    assert!(up, "dnsmasq did not start listening on {listen}:53");
    d
}
