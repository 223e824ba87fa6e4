//! A scripted SQL Server stand-in for tests: the part of TDS 7.0-7.4 (and TDS 8 strict) listed
//! below, no more. It is not a SQL Server: no query is parsed beyond what the tests script, and
//! only the token layouts below are written.
//!
//! What it implements, from MS-TDS: PRELOGIN (VERSION, ENCRYPTION negotiation per the spec's
//! table, INSTOPT answered for the configured instance), TLS inside TDS (the handshake carried in PRELOGIN packets, then raw
//! TLS records; "login only" encryption drops TLS after LOGIN7), TDS 8 strict (TLS first),
//! LOGIN7 (user, de-obfuscated password, database, TDS version: the lower of the client's and
//! 7.4 is acknowledged, and token layouts follow it), LOGINACK, ENVCHANGE (database, language,
//! collation, packet size, begin/rollback transaction), INFO and ERROR tokens, SQLBatch with
//! ALL_HEADERS, COLMETADATA/ROW for int and nvarchar columns, DONE, and RPC requests
//! (sp_executesql, the sp_prepare family: tds_peer_rpc.rs). Microsoft's ODBC Driver 18 and
//! tedious are run against it in tests/ms_drivers.rs. Transaction manager requests (0x0E) and DTC
//! enlistment with a scripted client MSDTC are in `tds_peer_tm.rs`.
//!
//! Behaviour is scripted per test ([`PeerConfig`]): which credentials and databases exist,
//! whether MSDTC "is available", the server's encryption setting, and misbehaviours (silent after
//! accept, close during login, garbage bytes). Credentials are checked for real, so a wrong
//! password produces 18456 because it is wrong, not because a test said so.
//!
//! Runs on its own thread and runtime; stops when dropped.

use std::cell::Cell;
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_rustls::rustls;

// The TDS and SSRP bytes this peer writes and reads go through dtcprobe's own codecs (the ones
// the tool and the fuzz targets use), LOGIN7's decoding included; only what the codecs do not
// cover (SQLBatch, COLMETADATA/ROW) is encoded or decoded here.
use dtcprobe_wire::ssrp;
use dtcprobe_wire::tds::login7;
use dtcprobe_wire::tds::packet::{
    packetize, PacketHeader, HEADER_LEN, PKT_ATTENTION, PKT_LOGIN7, PKT_PRELOGIN, PKT_REPLY,
    PKT_RPC, PKT_SQL_BATCH, PKT_SSPI,
};
use dtcprobe_wire::tds::prelogin::{
    encode_prelogin, encode_version, parse_prelogin_options, PL_ENCRYPTION, PL_INSTOPT, PL_MARS,
    PL_THREADID, PL_VERSION,
};
use dtcprobe_wire::tds::tm::PKT_TRANSACTION_MANAGER;
use dtcprobe_wire::tds::token::{
    done as done_wide, envchange_bytes, envchange_routing, envchange_str, LoginAck, ServerMessage,
    DONE_ATTN, DONE_COUNT, DONE_ERROR, DONE_MORE, ENV_BEGIN_TRAN, ENV_COLLATION, ENV_COMMIT_TRAN,
    ENV_DATABASE, ENV_LANGUAGE, ENV_PACKET_SIZE, ENV_ROLLBACK_TRAN, TOKEN_COLMETADATA, TOKEN_DONE,
    TOKEN_ERROR, TOKEN_INFO, TOKEN_ROW,
};
use dtcprobe_wire::tds::{b_varchar, from_utf16le, utf16le};

// RPC requests (0x03): sp_executesql and the sp_prepare family, in their own file.
#[path = "tds_peer_krb.rs"]
pub mod krb;
/// Windows authentication: the server side of NTLMv2 inside TDS.
#[path = "tds_peer_ntlm.rs"]
pub mod ntlm;
#[path = "tds_peer_rpc.rs"]
mod rpc;
/// Transaction manager requests (0x0E) and the scripted client MSDTC.
#[path = "tds_peer_tm.rs"]
pub mod tm;

/// The server's encryption setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerEncryption {
    /// No certificate: answers ENCRYPT_NOT_SUP.
    NotSupported,
    /// Has a certificate, encryption not forced (the SQL Server default).
    Off,
    /// "Force Encryption" on: answers ENCRYPT_REQ, closes on clients that cannot encrypt.
    Required,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behaviour {
    /// Acts as SQL Server.
    Normal,
    /// Accepts TCP, then never sends a byte.
    SilentAfterAccept,
    /// Answers PRELOGIN (and TLS), reads LOGIN7, then closes the connection.
    CloseMidLogin,
    /// Logs in normally, then never answers a batch (a hung server / blocked session).
    SilentAfterLogin,
    /// Sends its first TLS flight (ServerHello, certificate), reads the client's answer, then
    /// never sends another byte (what an MTU black hole or a stuck TLS inspection looks like).
    StallAfterTlsHello,
    /// Reads LOGIN7, then never answers it (a server waiting on its domain controller).
    SilentAfterLogin7,
    /// Answers the PRELOGIN with these bytes, then closes.
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub behaviour: Behaviour,
    pub encryption: ServerEncryption,
    pub user: String,
    pub password: String,
    /// Databases that exist; the first is the login's default.
    pub databases: Vec<String>,
    pub dtc_available: bool,
    /// Linked servers and whether a distributed transaction through them works.
    pub linked_servers: Vec<(String, bool)>,
    /// major, minor, build.
    pub version: (u8, u8, u16),
    /// Names for the self-signed certificate.
    pub cert_names: Vec<String>,
    /// A certificate chain of the test's own (DER, the server's first) and its key (PKCS#8
    /// DER), instead of the self-signed one (tests/cert_report.rs: expired, expiring, a CA's
    /// chain with CRL and OCSP URLs).
    pub certificate: Option<(Vec<Vec<u8>>, Vec<u8>)>,
    /// Acknowledge INSERTs without storing the rows (a broken proxy / not-quite-SQL-Server).
    pub lose_rows: bool,
    /// The login lacks VIEW SERVER STATE: `sys.dm_exec_connections` raises error 300.
    pub deny_server_state: bool,
    /// Resets the connection (RST) on the client's first TLS handshake message, as SQL Server on
    /// Windows does when Schannel shares no TLS version or cipher with the client.
    pub reset_tls_handshake: bool,
    /// The instance this server is; a client asking for another one in PRELOGIN INSTOPT is
    /// told so (INSTOPT = 1) and the server hangs up. `None`: answers every name as its own.
    pub instance: Option<String>,
    /// The state of error 18456 sent to clients (SQL Server sends 1; some builds and Azure
    /// send others).
    pub login_failed_state: u8,
    /// After a successful login, send a routing ENVCHANGE to this host and port.
    pub redirect: Option<(String, u16)>,
    /// Before 7391, relay this provider message (INFO 7412), as SQL Server does.
    pub linked_server_message: Option<String>,
    // Driver fidelity
    /// "Force Strict Encryption" (SQL Server 2022): only TDS 8 clients (TLS first) get in; a
    /// client that opens with a clear PRELOGIN is hung up on without an answer.
    pub force_strict_encryption: bool,
    /// Informational messages SQL Server sends before an error: (error number they precede,
    /// INFO number, text). Sent before that error whichever statement raises it.
    pub info_before_errors: Vec<(i32, i32, String)>,
    // Transaction manager requests (0x0E)
    /// How the server answers them, and the client MSDTC its own MSDTC reaches (tds_peer_tm.rs).
    pub tm: tm::TmConfig,
    /// The Windows login the server accepts through NTLM (tds_peer_ntlm.rs); `None`: a LOGIN7
    /// with an SSPI token gets 18452, as from an untrusted domain.
    pub windows_account: Option<ntlm::WindowsAccount>,
    /// The keytab of the service principal the peer accepts Kerberos AP-REQs for
    /// (tds_peer_krb.rs); `None`: a Kerberos token gets 18452.
    pub kerberos_keytab: Option<std::path::PathBuf>,
}

impl Default for PeerConfig {
    fn default() -> Self {
        PeerConfig {
            behaviour: Behaviour::Normal,
            encryption: ServerEncryption::Off,
            user: "probe".into(),
            password: "Pr0be-pass!".into(),
            databases: vec!["master".into(), "app".into()],
            dtc_available: true,
            linked_servers: Vec::new(),
            version: (16, 0, 1000),
            cert_names: vec!["localhost".into(), "127.0.0.1".into()],
            certificate: None,
            lose_rows: false,
            deny_server_state: false,
            reset_tls_handshake: false,
            instance: None,
            login_failed_state: 1,
            redirect: None,
            linked_server_message: None,
            force_strict_encryption: false,
            info_before_errors: Vec::new(),
            // Transaction manager requests (0x0E)
            tm: tm::TmConfig::default(),
            windows_account: None,
            kerberos_keytab: None,
        }
    }
}

/// What the peer saw (for assertions). Passwords are never recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Prelogin {
        client_encryption: u8,
        answered: u8,
    },
    TlsHandshake {
        strict: bool,
    },
    Login {
        user: String,
        database: String,
        accepted: bool,
    },
    Batch(String),
    Closed,
    /// An RPC request: the procedure and the statement with its parameters bound.
    Rpc(String),
    /// A Windows-authentication (NTLM) exchange and what it concluded.
    WindowsAuth(ntlm::Outcome),
    /// A Kerberos AP-REQ and what its acceptance concluded.
    Kerberos(krb::Outcome),
}

pub struct TdsPeer {
    pub addr: SocketAddr,
    pub events: Arc<Mutex<Vec<Event>>>,
    /// The self-signed certificate (DER), for clients that want to trust it.
    pub cert_der: Vec<u8>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TdsPeer {
    /// Starts on 127.0.0.1, a random port.
    pub fn start(cfg: PeerConfig) -> TdsPeer {
        Self::start_on("127.0.0.1:0".parse().unwrap(), cfg)
    }

    pub fn start_on(bind: SocketAddr, cfg: PeerConfig) -> TdsPeer {
        let (chain, key_der) = match &cfg.certificate {
            Some((chain, key)) => (chain.clone(), key.clone()),
            None => {
                let cert = rcgen::generate_simple_self_signed(cfg.cert_names.clone())
                    .expect("self-signed cert");
                (
                    vec![cert.cert.der().to_vec()],
                    cert.key_pair.serialize_der(),
                )
            }
        };
        let cert_der = chain[0].clone();
        let tls_wrapped = Arc::new(server_tls_config(&chain, &key_der, false));
        let tls_strict = Arc::new(server_tls_config(&chain, &key_der, true));
        let std_listener = std::net::TcpListener::bind(bind).expect("bind peer");
        std_listener.set_nonblocking(true).unwrap();
        let addr = std_listener.local_addr().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let ev = events.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = TcpListener::from_std(std_listener).unwrap();
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        acc = listener.accept() => {
                            let Ok((sock, _)) = acc else { continue };
                            let cfg = cfg.clone();
                            let ev = ev.clone();
                            let (w, s) = (tls_wrapped.clone(), tls_strict.clone());
                            tokio::spawn(async move {
                                let session = handle(sock, &cfg, &ev, w, s);
                                let _ = NEGOTIATED.scope(Cell::new(TDS_7_4), session).await;
                                ev.lock().unwrap().push(Event::Closed);
                            });
                        }
                    }
                }
            });
        });
        TdsPeer {
            addr,
            events,
            cert_der,
            shutdown: Some(tx),
            thread: Some(thread),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    /// Every LOGIN7 seen: the user name and whether the peer accepted it.
    pub fn logins(&self) -> Vec<(String, bool)> {
        self.events()
            .into_iter()
            .filter_map(|e| match e {
                Event::Login { user, accepted, .. } => Some((user, accepted)),
                _ => None,
            })
            .collect()
    }

    pub fn batches(&self) -> Vec<String> {
        self.events()
            .into_iter()
            .filter_map(|e| {
                if let Event::Batch(b) = e {
                    Some(b)
                } else {
                    None
                }
            })
            .collect()
    }
}

impl Drop for TdsPeer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn server_tls_config(chain: &[Vec<u8>], key: &[u8], strict: bool) -> rustls::ServerConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    // SQL Server before TDS 8 negotiates TLS 1.2 inside TDS; strict mode allows TLS 1.3.
    let versions: &[&rustls::SupportedProtocolVersion] = if strict {
        &[&rustls::version::TLS13, &rustls::version::TLS12]
    } else {
        &[&rustls::version::TLS12]
    };
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            chain
                .iter()
                .map(|c| rustls::pki_types::CertificateDer::from(c.clone()))
                .collect(),
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.to_vec().into()),
        )
        .unwrap();
    c.send_tls13_tickets = 0;
    if strict {
        c.alpn_protocols = vec![b"tds/8.0".to_vec()];
    }
    c
}

// ---------------------------------------------------------------------------------------------
// Transport: plain TCP, or TLS driven sans-IO over it.

const MAX_MESSAGE: usize = 1 << 20;
const PACKET_SIZE: usize = 4096;

struct Conn {
    tcp: TcpStream,
    tls: Option<rustls::ServerConnection>,
    packet_id: u8,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

impl Conn {
    async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut out = vec![0u8; n];
        match &mut self.tls {
            None => {
                self.tcp.read_exact(&mut out).await?;
            }
            Some(_) => {
                let mut got = 0;
                while got < n {
                    let tls = self.tls.as_mut().unwrap();
                    match tls.reader().read(&mut out[got..]) {
                        Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                        Ok(k) => {
                            got += k;
                            continue;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => return Err(e),
                    }
                    let mut buf = vec![0u8; 16 * 1024];
                    let k = self.tcp.read(&mut buf).await?;
                    if k == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    feed_tls(self.tls.as_mut().unwrap(), &buf[..k])?;
                    self.flush_tls().await?;
                }
            }
        }
        Ok(out)
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.tls {
            None => self.tcp.write_all(data).await,
            Some(tls) => {
                tls.writer().write_all(data)?;
                self.flush_tls().await
            }
        }
    }

    async fn flush_tls(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            if !out.is_empty() {
                self.tcp.write_all(&out).await?;
            }
        }
        Ok(())
    }

    /// Reads one TDS message (all packets up to EOM).
    async fn read_message(&mut self) -> io::Result<(u8, Vec<u8>)> {
        let mut payload = Vec::new();
        loop {
            let h = self.read_exact(HEADER_LEN).await?;
            let h = PacketHeader::parse(&h).ok_or_else(|| io_err("short packet header"))?;
            let len = h.payload_len().ok_or_else(|| io_err("bad packet length"))?;
            payload.extend(self.read_exact(len).await?);
            if payload.len() > MAX_MESSAGE {
                return Err(io_err("message too large"));
            }
            if h.is_eom() {
                return Ok((h.packet_type, payload));
            }
        }
    }

    async fn write_message(&mut self, ty: u8, payload: &[u8]) -> io::Result<()> {
        let bytes = packetize(ty, payload, PACKET_SIZE, &mut self.packet_id);
        self.write_all(&bytes).await
    }
}

fn feed_tls(tls: &mut rustls::ServerConnection, mut data: &[u8]) -> io::Result<()> {
    while !data.is_empty() {
        tls.read_tls(&mut data)?;
        tls.process_new_packets().map_err(io_err)?;
    }
    Ok(())
}

/// The TLS handshake carried inside TDS PRELOGIN packets (TDS 7.x).
async fn handshake_in_tds(
    conn: &mut Conn,
    config: Arc<rustls::ServerConfig>,
    reset: bool,
    stall_after_hello: bool,
) -> io::Result<()> {
    if reset {
        // Read the ClientHello, then close with RST (SO_LINGER 0), like Schannel refusing it.
        let _ = conn.read_message().await?;
        conn.tcp.set_zero_linger()?;
        return Err(io_err("TLS handshake reset (scripted)"));
    }
    let mut tls = rustls::ServerConnection::new(config).map_err(io_err)?;
    let mut rounds = 0;
    while tls.is_handshaking() {
        rounds += 1;
        if rounds > 20 {
            return Err(io_err("TLS handshake does not finish"));
        }
        if tls.wants_write() {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            conn.write_message(PKT_PRELOGIN, &out).await?;
            if stall_after_hello {
                let _ = conn.read_message().await;
                stay_silent(conn).await;
                return Err(io_err("stalled after the TLS hello (scripted)"));
            }
            continue;
        }
        let (_, payload) = conn.read_message().await?;
        feed_tls(&mut tls, &payload)?;
    }
    // TLS 1.2: the server's final flight (ChangeCipherSpec, Finished) is still part of the
    // handshake for the client, so it travels in a PRELOGIN packet too.
    if tls.wants_write() {
        let mut out = Vec::new();
        while tls.wants_write() {
            tls.write_tls(&mut out)?;
        }
        conn.write_message(PKT_PRELOGIN, &out).await?;
    }
    conn.tls = Some(tls);
    Ok(())
}

/// Reads and drops whatever comes, answering nothing, for at most a minute (bounded), or until
/// the client hangs up.
async fn stay_silent(conn: &mut Conn) {
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(60), async {
        while let Ok(n) = conn.tcp.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// TDS 8 strict: TLS directly on TCP, before anything else.
async fn handshake_strict(conn: &mut Conn, config: Arc<rustls::ServerConfig>) -> io::Result<()> {
    let mut tls = rustls::ServerConnection::new(config).map_err(io_err)?;
    let mut rounds = 0;
    while tls.is_handshaking() {
        rounds += 1;
        if rounds > 40 {
            return Err(io_err("TLS handshake does not finish"));
        }
        if tls.wants_write() {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            conn.tcp.write_all(&out).await?;
            continue;
        }
        let mut buf = vec![0u8; 16 * 1024];
        let k = conn.tcp.read(&mut buf).await?;
        if k == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        feed_tls(&mut tls, &buf[..k])?;
    }
    conn.tls = Some(tls);
    conn.flush_tls().await
}

// ---------------------------------------------------------------------------------------------
// TDS version negotiation

/// LOGINACK TDSVersion values (MS-TDS 2.2.7.14).
const TDS_7_0: u32 = 0x7000_0000;
const TDS_7_1: u32 = 0x7100_0001;
const TDS_7_2: u32 = 0x7209_0002;
const TDS_7_3_A: u32 = 0x730A_0003;
const TDS_7_3_B: u32 = 0x730B_0003;
const TDS_7_4: u32 = 0x7400_0004;

/// The version SQL Server acknowledges for the TDSVersion a client's LOGIN7 asks for: the lower
/// of the two (a client asking 7.1 gets 7.1 Rev 1, as SQL Server 2005+ answers). Anything at or
/// above 7.4, and TDS 8's 0x08000000, gets 7.4.
fn negotiate_tds_version(client: u32) -> u32 {
    match client {
        0x7000_0000 => TDS_7_0,
        0x7100_0000 | 0x7100_0001 => TDS_7_1,
        0x7209_0002 => TDS_7_2,
        0x730A_0003 => TDS_7_3_A,
        0x730B_0003 => TDS_7_3_B,
        _ => TDS_7_4,
    }
}

tokio::task_local! {
    /// The TDS version this connection negotiated (set after LOGIN7). It decides token layouts:
    /// before 7.2, DONE row counts are 4 bytes, INFO/ERROR line numbers 2, user types 2.
    static NEGOTIATED: Cell<u32>;
}

fn negotiated() -> u32 {
    NEGOTIATED.try_with(|c| c.get()).unwrap_or(TDS_7_4)
}

fn before_7_2() -> bool {
    negotiated() < TDS_7_2
}

/// DONE as this connection's version lays it out.
fn done(status: u16, rows: u64) -> Vec<u8> {
    sized(done_wide(status, rows))
}

/// A DONE/DONEPROC/DONEINPROC built with the 8-byte row count, cut to 4 before TDS 7.2.
fn sized(mut v: Vec<u8>) -> Vec<u8> {
    if before_7_2() && v.len() == 13 {
        v.truncate(9);
    }
    v
}

/// Bytes in a DONE token on this connection.
fn done_len() -> usize {
    if before_7_2() {
        9
    } else {
        13
    }
}

// ---------------------------------------------------------------------------------------------
// Token encoding

/// An INFO/ERROR token as this connection's version lays it out (before 7.2 the line number is
/// a u16: the last two bytes of the 7.2+ layout go, and the length shrinks by two).
fn encode_message(m: &ServerMessage, token: u8) -> Vec<u8> {
    let mut v = m.encode(token);
    if before_7_2() {
        v.truncate(v.len() - 2);
        let len = u16::from_le_bytes([v[1], v[2]]) - 2;
        v[1..3].copy_from_slice(&len.to_le_bytes());
    }
    v
}

fn message(number: i32, state: u8, class: u8, text: &str) -> ServerMessage {
    ServerMessage {
        number,
        state,
        class,
        text: text.to_string(),
        server: "PEER".into(),
        procedure: String::new(),
        line: 1,
    }
}

fn error(number: i32, state: u8, class: u8, text: &str) -> Vec<u8> {
    encode_message(&message(number, state, class, text), TOKEN_ERROR)
}

fn info(number: i32, text: &str) -> Vec<u8> {
    encode_message(&message(number, 1, 0, text), TOKEN_INFO)
}

const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];

#[derive(Clone)]
enum Col {
    Int(&'static str),
    NVarChar(&'static str),
}

#[derive(Clone)]
enum Val {
    Int(Option<i32>),
    Str(Option<String>),
}

fn result_set(cols: &[Col], rows: &[Vec<Val>]) -> Vec<u8> {
    let mut v = vec![TOKEN_COLMETADATA];
    v.extend_from_slice(&(cols.len() as u16).to_le_bytes());
    for c in cols {
        // UserType: a u32 from TDS 7.2 on, a u16 before.
        if before_7_2() {
            v.extend_from_slice(&0u16.to_le_bytes());
        } else {
            v.extend_from_slice(&0u32.to_le_bytes());
        }
        v.extend_from_slice(&0x0001u16.to_le_bytes()); // Flags: nullable
        match c {
            Col::Int(name) => {
                v.extend_from_slice(&[0x26, 4]);
                v.extend(b_varchar(name));
            }
            Col::NVarChar(name) => {
                v.push(0xE7);
                v.extend_from_slice(&256u16.to_le_bytes());
                v.extend_from_slice(&COLLATION);
                v.extend(b_varchar(name));
            }
        }
    }
    for row in rows {
        v.push(TOKEN_ROW);
        for val in row {
            match val {
                Val::Int(Some(i)) => {
                    v.push(4);
                    v.extend_from_slice(&i.to_le_bytes());
                }
                Val::Int(None) => v.push(0),
                Val::Str(Some(s)) => {
                    let b = utf16le(s);
                    v.extend_from_slice(&(b.len() as u16).to_le_bytes());
                    v.extend(b);
                }
                Val::Str(None) => v.extend_from_slice(&0xFFFFu16.to_le_bytes()),
            }
        }
    }
    v.extend(done(DONE_COUNT, rows.len() as u64));
    v
}

// ---------------------------------------------------------------------------------------------
// PRELOGIN

fn prelogin_response(version: (u8, u8, u16), encryption: u8) -> Vec<u8> {
    prelogin_response_instance(version, encryption, 0)
}

/// `instance_ok`: INSTOPT's one byte, 0 when the requested instance is this one, 1 otherwise.
fn prelogin_response_instance(version: (u8, u8, u16), encryption: u8, instance_ok: u8) -> Vec<u8> {
    // VERSION, ENCRYPTION, INSTOPT, THREADID, MARS, terminator
    encode_prelogin(&[
        (
            PL_VERSION,
            &encode_version(version.0, version.1, version.2, 0),
        ),
        (PL_ENCRYPTION, &[encryption]),
        (PL_INSTOPT, &[instance_ok]),
        (PL_THREADID, &[]),
        (PL_MARS, &[0]),
    ])
}

/// The server's answer to the client's ENCRYPTION byte (MS-TDS 2.2.6.5). `None`: hang up.
fn answer_encryption(server: ServerEncryption, client: u8) -> Option<u8> {
    match server {
        ServerEncryption::NotSupported => Some(2),
        ServerEncryption::Off => Some(match client {
            0 => 0,
            2 => 2,
            _ => 1,
        }),
        ServerEncryption::Required => {
            if client == 2 {
                None
            } else {
                Some(3)
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// LOGIN7

/// What the session needs of a LOGIN7, decoded by crates/wire's codec (the one whose encoder the
/// `tx_enlist` hop sends with).
struct Login7 {
    /// LOGIN7 TDSVersion (little-endian on the wire, unlike LOGINACK's).
    tds_version: u32,
    user: String,
    password: String,
    database: String,
    /// fIntSecurity's token (Windows authentication), if the client sent one.
    sspi: Option<Vec<u8>>,
}

fn parse_login7(p: &[u8]) -> Result<Login7, login7::Login7Error> {
    let login = login7::Login7::decode(p)?;
    Ok(Login7 {
        tds_version: login.tds_version,
        user: login.user_name,
        password: login.password,
        database: login.database,
        sspi: (!login.sspi.is_empty()).then_some(login.sspi),
    })
}

// ---------------------------------------------------------------------------------------------
// Session

struct Session<'a> {
    cfg: &'a PeerConfig,
    database: String,
    trancount: u32,
    descriptor: u64,
    tables: HashMap<String, Vec<(i32, String)>>,
    /// sp_prepare / sp_prepexec handles (tds_peer_rpc.rs).
    prepared: rpc::Prepared,
    /// Transaction manager requests (0x0E): DTC enlistment state.
    tm: tm::TmSession,
}

async fn handle(
    tcp: TcpStream,
    cfg: &PeerConfig,
    events: &Mutex<Vec<Event>>,
    tls_wrapped: Arc<rustls::ServerConfig>,
    tls_strict: Arc<rustls::ServerConfig>,
) -> io::Result<()> {
    let _ = tcp.set_nodelay(true);
    let mut conn = Conn {
        tcp,
        tls: None,
        packet_id: 0,
    };
    if cfg.behaviour == Behaviour::SilentAfterAccept {
        stay_silent(&mut conn).await;
        return Ok(());
    }

    // TDS 8 strict starts with a TLS ClientHello instead of a PRELOGIN packet.
    let mut first = [0u8; 1];
    let n = conn.tcp.peek(&mut first).await?;
    if n == 0 {
        return Ok(());
    }
    let strict = first[0] == 0x16;
    if strict {
        handshake_strict(&mut conn, tls_strict).await?;
        events
            .lock()
            .unwrap()
            .push(Event::TlsHandshake { strict: true });
    }

    let (ty, payload) = conn.read_message().await?;
    if ty != PKT_PRELOGIN {
        return Err(io_err("expected PRELOGIN"));
    }
    if cfg.force_strict_encryption && !strict {
        // Strict only: a PRELOGIN in the clear is not a TLS ClientHello; the server drops it.
        let _ = conn.tcp.shutdown().await;
        return Ok(());
    }
    if let Behaviour::Garbage(bytes) = &cfg.behaviour {
        conn.write_all(bytes).await?;
        let _ = conn.tcp.shutdown().await;
        return Ok(());
    }
    // A malformed option list reads as "no ENCRYPTION option" (0), as before the codec.
    let options = parse_prelogin_options(&payload).unwrap_or_default();
    // INSTOPT: a NUL-terminated MBCS name; empty (or absent) means "any instance".
    let asked_instance = options
        .iter()
        .find(|(token, _)| *token == PL_INSTOPT)
        .map(|(_, v)| {
            let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
            String::from_utf8_lossy(&v[..end]).to_string()
        })
        .unwrap_or_default();
    if let Some(mine) = &cfg.instance {
        if !asked_instance.is_empty()
            && !asked_instance.eq_ignore_ascii_case(mine)
            && !asked_instance.eq_ignore_ascii_case("MSSQLServer")
        {
            conn.write_message(PKT_REPLY, &prelogin_response_instance(cfg.version, 2, 1))
                .await?;
            let _ = conn.tcp.shutdown().await;
            return Ok(());
        }
    }
    let client_enc = options
        .into_iter()
        .find(|(token, _)| *token == PL_ENCRYPTION)
        .and_then(|(_, v)| v.first().copied())
        .unwrap_or(0);
    let answered = if strict {
        Some(0)
    } else {
        answer_encryption(cfg.encryption, client_enc)
    };
    events.lock().unwrap().push(Event::Prelogin {
        client_encryption: client_enc,
        answered: answered.unwrap_or(0xFF),
    });
    let Some(answered) = answered else {
        // Force Encryption and a client that cannot encrypt: the server states it requires
        // encryption, then hangs up.
        conn.write_message(PKT_REPLY, &prelogin_response(cfg.version, 3))
            .await?;
        let _ = conn.tcp.shutdown().await;
        return Ok(());
    };
    conn.write_message(PKT_REPLY, &prelogin_response(cfg.version, answered))
        .await?;

    let login_only = !strict && answered == 0 && client_enc == 0;
    if !strict && answered != 2 {
        handshake_in_tds(
            &mut conn,
            tls_wrapped,
            cfg.reset_tls_handshake,
            cfg.behaviour == Behaviour::StallAfterTlsHello,
        )
        .await?;
        events
            .lock()
            .unwrap()
            .push(Event::TlsHandshake { strict: false });
    }

    let (ty, payload) = conn.read_message().await?;
    if ty != PKT_LOGIN7 {
        return Err(io_err("expected LOGIN7"));
    }
    if login_only {
        // Encryption for the login packet only: back to the clear.
        conn.tls = None;
    }
    if cfg.behaviour == Behaviour::CloseMidLogin {
        let _ = conn.tcp.shutdown().await;
        return Ok(());
    }
    if cfg.behaviour == Behaviour::SilentAfterLogin7 {
        stay_silent(&mut conn).await;
        return Ok(());
    }
    let mut login = parse_login7(&payload).map_err(|e| io_err(format!("bad LOGIN7: {e}")))?;
    let database = if login.database.is_empty() {
        cfg.databases[0].clone()
    } else {
        login.database.clone()
    };
    let windows_auth = login.sspi.is_some();
    let creds_ok = match login.sspi.take() {
        None => login.user == cfg.user && login.password == cfg.password,
        Some(negotiate) => {
            let outcome = if ntlm::is_negotiate(&negotiate) {
                // The challenge goes back as an SSPI token; the answer comes as packet 0x11.
                let server_challenge: [u8; 8] = rand_challenge();
                let token = ntlm::challenge(server_challenge);
                let mut r = vec![0xED];
                r.extend_from_slice(&(token.len() as u16).to_le_bytes());
                r.extend(token);
                conn.write_message(PKT_REPLY, &r).await?;
                let (ty, answer) = conn.read_message().await?;
                // MS-TDS 2.2.6.8 says packet type 0x11; tiberius 0.13 sends its NTLM answer
                // (auth=windows) as 0x10, the LOGIN7 type. Both are taken, so the `login`
                // hop's Windows authentication can be run against this peer at all; which
                // types SQL Server itself accepts is not known here.
                if ty != PKT_SSPI && ty != PKT_LOGIN7 {
                    return Err(io_err(format!("expected an SSPI message, got 0x{ty:02X}")));
                }
                ntlm::verify(&answer, server_challenge, cfg.windows_account.as_ref())
            } else if let (true, Some(keytab)) =
                (krb::is_kerberos(&negotiate), cfg.kerberos_keytab.as_ref())
            {
                krb::kerberos_exchange(&mut conn, &negotiate, keytab, events).await?
            } else {
                ntlm::Outcome::Refused("the SSPI token is not an NTLM NEGOTIATE".into())
            };
            events
                .lock()
                .unwrap()
                .push(Event::WindowsAuth(outcome.clone()));
            match outcome {
                ntlm::Outcome::Authenticated(name) => {
                    login.user = name;
                    true
                }
                ntlm::Outcome::Refused(_) => false,
            }
        }
    };
    if windows_auth && !creds_ok {
        let mut r = error(
            18452,
            1,
            14,
            "Login failed. The login is from an untrusted domain and cannot be used with \
             Integrated authentication.",
        );
        r.extend(done(DONE_ERROR, 0));
        conn.write_message(PKT_REPLY, &r).await?;
        return Ok(());
    }
    let db_ok = cfg
        .databases
        .iter()
        .any(|d| d.eq_ignore_ascii_case(&database));
    events.lock().unwrap().push(Event::Login {
        user: login.user.clone(),
        database: database.clone(),
        accepted: creds_ok && db_ok,
    });
    if !creds_ok {
        let mut r = error(
            18456,
            cfg.login_failed_state,
            14,
            &format!("Login failed for user '{}'.", login.user),
        );
        r.extend(done(DONE_ERROR, 0));
        conn.write_message(PKT_REPLY, &r).await?;
        return Ok(());
    }
    if !db_ok {
        let mut r = error(
            4060,
            1,
            11,
            &format!(
                "Cannot open database \"{database}\" requested by the login. The login failed."
            ),
        );
        r.extend(error(
            18456,
            1,
            14,
            &format!("Login failed for user '{}'.", login.user),
        ));
        r.extend(done(DONE_ERROR, 0));
        conn.write_message(PKT_REPLY, &r).await?;
        return Ok(());
    }
    let tds_version = negotiate_tds_version(login.tds_version);
    NEGOTIATED.with(|v| v.set(tds_version));
    let mut r = envchange_str(ENV_DATABASE, &database, "master");
    r.extend(info(
        5701,
        &format!("Changed database context to '{database}'."),
    ));
    r.extend(envchange_bytes(ENV_COLLATION, &COLLATION, &[]));
    r.extend(envchange_str(ENV_LANGUAGE, "us_english", ""));
    r.extend(info(5703, "Changed language setting to us_english."));
    let [build_hi, build_lo] = cfg.version.2.to_be_bytes();
    r.extend(
        LoginAck {
            interface: 1,
            tds_version,
            program: "Microsoft SQL Server".into(),
            program_version: Some([cfg.version.0, cfg.version.1, build_hi, build_lo]),
        }
        .encode(),
    );
    r.extend(envchange_str(ENV_PACKET_SIZE, "4096", "4096"));
    if let Some((host, port)) = &cfg.redirect {
        r.extend(envchange_routing(host, *port));
    }
    r.extend(done(0, 0));
    conn.write_message(PKT_REPLY, &r).await?;

    let mut s = Session {
        cfg,
        database,
        trancount: 0,
        descriptor: 0,
        tables: HashMap::new(),
        prepared: rpc::Prepared::default(),
        tm: tm::TmSession::default(),
    };
    loop {
        let (ty, payload) = match conn.read_message().await {
            Ok(m) => m,
            Err(_) => return Ok(()),
        };
        match ty {
            // Transaction manager requests (0x0E), and batches inside a DTC transaction.
            PKT_TRANSACTION_MANAGER => match tm::request(&mut s, &payload) {
                Some(reply) => conn.write_message(PKT_REPLY, &reply).await?,
                None => return Ok(()),
            },
            PKT_SQL_BATCH if s.tm.in_dtc() => {
                let reply = tm::batch(&mut s, &payload, events);
                conn.write_message(PKT_REPLY, &reply).await?;
            }
            PKT_SQL_BATCH => {
                let sql = batch_text(&payload);
                events.lock().unwrap().push(Event::Batch(sql.clone()));
                if cfg.behaviour == Behaviour::SilentAfterLogin {
                    continue;
                }
                let reply = s.execute(&sql);
                conn.write_message(PKT_REPLY, &reply).await?;
            }
            PKT_RPC => {
                let (reply, what) = s.rpc(&payload, tds_version >= TDS_7_2);
                events.lock().unwrap().push(Event::Rpc(what));
                conn.write_message(PKT_REPLY, &reply).await?;
            }
            PKT_ATTENTION => {
                // Attention: acknowledge.
                conn.write_message(PKT_REPLY, &done(DONE_ATTN, 0)).await?;
            }
            _ => {
                let mut r = error(
                    4002,
                    1,
                    16,
                    "The incoming tabular data stream (TDS) protocol stream is incorrect.",
                );
                r.extend(done(DONE_ERROR, 0));
                conn.write_message(PKT_REPLY, &r).await?;
            }
        }
    }
}

/// A fresh NTLM server challenge: not predictable across connections (time and a counter are
/// enough for a test peer; the proof is bound to it).
fn rand_challenge() -> [u8; 8] {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    (nanos
        ^ COUNTER
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .rotate_left(17))
    .to_le_bytes()
}

/// SQLBatch: ALL_HEADERS (TDS 7.2+), then UTF-16LE text.
fn batch_text(p: &[u8]) -> String {
    let mut start = 0;
    if p.len() >= 4 {
        let total = u32::from_le_bytes([p[0], p[1], p[2], p[3]]) as usize;
        if (4..=p.len()).contains(&total) && total < 1024 {
            start = total;
        }
    }
    from_utf16le(&p[start..])
}

impl Session<'_> {
    fn execute(&mut self, sql: &str) -> Vec<u8> {
        let mut out = Vec::new();
        let statements: Vec<&str> = sql
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let n = statements.len();
        if n == 0 {
            return done(0, 0);
        }
        for (i, stmt) in statements.into_iter().enumerate() {
            let (mut r, failed) = self.statement(stmt);
            if failed {
                r = self.with_info_before_error(r);
            }
            // All but the last DONE say "more follows".
            if i + 1 < n && !failed {
                if let Some(pos) = r.len().checked_sub(done_len()) {
                    if r[pos] == TOKEN_DONE {
                        let st = u16::from_le_bytes([r[pos + 1], r[pos + 2]]) | DONE_MORE;
                        r[pos + 1..pos + 3].copy_from_slice(&st.to_le_bytes());
                    }
                }
            }
            out.extend(r);
            if failed {
                break;
            }
        }
        out
    }

    /// `reply` (a failed statement's tokens) with the scripted INFO messages for its first
    /// ERROR put in front of that ERROR.
    fn with_info_before_error(&self, reply: Vec<u8>) -> Vec<u8> {
        // Skip the INFO tokens already there (length-prefixed) to the first ERROR.
        let mut at = 0;
        while reply.get(at) == Some(&TOKEN_INFO) && at + 3 <= reply.len() {
            at += 3 + u16::from_le_bytes([reply[at + 1], reply[at + 2]]) as usize;
        }
        if reply.get(at) != Some(&TOKEN_ERROR) || at + 7 > reply.len() {
            return reply;
        }
        let number =
            i32::from_le_bytes([reply[at + 3], reply[at + 4], reply[at + 5], reply[at + 6]]);
        let mut out = reply[..at].to_vec();
        for (_, info_number, text) in self
            .cfg
            .info_before_errors
            .iter()
            .filter(|(before, _, _)| *before == number)
        {
            out.extend(info(*info_number, text));
        }
        out.extend_from_slice(&reply[at..]);
        out
    }

    fn fail(number: i32, state: u8, class: u8, text: &str) -> (Vec<u8>, bool) {
        let mut r = error(number, state, class, text);
        r.extend(done(DONE_ERROR, 0));
        (r, true)
    }

    fn begin(&mut self) -> Vec<u8> {
        self.trancount += 1;
        if self.trancount == 1 {
            self.descriptor = self.descriptor.wrapping_add(0x1_0000_0001);
        }
        let mut r = envchange_bytes(ENV_BEGIN_TRAN, &self.descriptor.to_le_bytes(), &[]);
        r.extend(done(0, 0));
        r
    }

    fn statement(&mut self, stmt: &str) -> (Vec<u8>, bool) {
        let up = stmt.to_ascii_uppercase();
        let up = up.split_whitespace().collect::<Vec<_>>().join(" ");
        if up.starts_with("SET ") {
            return (done(0, 0), false);
        }
        if up.starts_with("BEGIN DISTRIBUTED TRAN") {
            if !self.cfg.dtc_available {
                return Self::fail(8501, 3, 16, "MSDTC on server 'PEER' is unavailable.");
            }
            return (self.begin(), false);
        }
        if up.starts_with("BEGIN TRAN") {
            return (self.begin(), false);
        }
        if up.starts_with("ROLLBACK") {
            if self.trancount == 0 {
                return Self::fail(
                    3903,
                    1,
                    16,
                    "The ROLLBACK TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                );
            }
            self.trancount = 0;
            // Temp tables created inside the transaction vanish with it.
            self.tables.clear();
            let mut r = envchange_bytes(ENV_ROLLBACK_TRAN, &[], &self.descriptor.to_le_bytes());
            r.extend(done(0, 0));
            return (r, false);
        }
        if up.starts_with("COMMIT") {
            if self.trancount == 0 {
                return Self::fail(
                    3902,
                    1,
                    16,
                    "The COMMIT TRANSACTION request has no corresponding BEGIN TRANSACTION.",
                );
            }
            self.trancount = 0;
            let mut r = envchange_bytes(ENV_COMMIT_TRAN, &[], &self.descriptor.to_le_bytes());
            r.extend(done(0, 0));
            return (r, false);
        }
        if let Some(rest) = up.strip_prefix("CREATE TABLE ") {
            let name = rest.split([' ', '(']).next().unwrap_or("").to_string();
            if !name.starts_with('#') {
                return Self::fail(262, 1, 14, "CREATE TABLE permission denied in database.");
            }
            if self.tables.contains_key(&name) {
                return Self::fail(
                    2714,
                    6,
                    16,
                    &format!("There is already an object named '{name}' in the database."),
                );
            }
            self.tables.insert(name, Vec::new());
            return (done(0, 0), false);
        }
        if let Some(rest) = up.strip_prefix("INSERT INTO ") {
            let name = rest.split([' ', '(']).next().unwrap_or("").to_string();
            let Some(rows) = self.tables.get_mut(&name) else {
                return Self::fail(208, 0, 16, &format!("Invalid object name '{name}'."));
            };
            // VALUES (id, N'text'), parsed from the original (case-preserving) statement.
            let Some(v) = stmt.find("VALUES").or_else(|| stmt.find("values")) else {
                return Self::fail(102, 1, 15, "Incorrect syntax near 'INSERT'.");
            };
            let vals = stmt[v + 6..]
                .trim()
                .trim_start_matches('(')
                .trim_end_matches(')');
            let Some((id, text)) = vals.split_once(',') else {
                return Self::fail(102, 1, 15, "Incorrect syntax near ')'.");
            };
            let Ok(id) = id.trim().parse::<i32>() else {
                return Self::fail(245, 1, 16, "Conversion failed.");
            };
            let text = text
                .trim()
                .trim_start_matches('N')
                .trim_start_matches('\'')
                .trim_end_matches('\'')
                .replace("''", "'");
            if !self.cfg.lose_rows {
                rows.push((id, text));
            }
            return (done(DONE_COUNT, 1), false);
        }
        if up.starts_with("SELECT CAST(SERVERPROPERTY('PRODUCTVERSION')") {
            let (a, b, c) = self.cfg.version;
            return (
                result_set(
                    &[
                        Col::NVarChar("product_version"),
                        Col::NVarChar("edition"),
                        Col::NVarChar("server_name"),
                        Col::NVarChar("database_name"),
                    ],
                    &[vec![
                        Val::Str(Some(format!("{a}.{b}.{c}.1"))),
                        Val::Str(Some("Developer Edition (64-bit)".into())),
                        Val::Str(Some("PEER".into())),
                        Val::Str(Some(self.database.clone())),
                    ]],
                ),
                false,
            );
        }
        if up.starts_with("SELECT PROTOCOL_VERSION FROM SYS.DM_EXEC_CONNECTIONS") {
            if self.cfg.deny_server_state {
                return Self::fail(
                    300,
                    1,
                    14,
                    "VIEW SERVER STATE permission was denied on object 'server', database 'master'.",
                );
            }
            return (
                result_set(
                    &[Col::Int("protocol_version")],
                    &[vec![Val::Int(Some(negotiated() as i32))]],
                ),
                false,
            );
        }
        if up.starts_with("SELECT @@TRANCOUNT") {
            return (
                result_set(
                    &[Col::Int("trancount")],
                    &[vec![Val::Int(Some(self.trancount as i32))]],
                ),
                false,
            );
        }
        if up.starts_with("SELECT @@VERSION") {
            let (a, b, c) = self.cfg.version;
            let v = format!("Microsoft SQL Server (dtcprobe test peer) - {a}.{b}.{c}.1");
            return (
                result_set(&[Col::NVarChar("")], &[vec![Val::Str(Some(v))]]),
                false,
            );
        }
        if up.starts_with("SELECT ONE FROM OPENQUERY(") {
            let name = up.split(['[', ']']).nth(1).unwrap_or("").to_string();
            return match self
                .cfg
                .linked_servers
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(&name))
            {
                None => Self::fail(
                    7202,
                    2,
                    11,
                    &format!("Could not find server '{name}' in sys.servers."),
                ),
                // Outside a transaction OPENQUERY needs no distributed transaction, so it works
                // even when MSDTC between the two servers does not (SQL Server only promotes
                // to a distributed transaction inside one).
                Some((_, false)) if self.trancount == 0 => (
                    result_set(&[Col::Int("one")], &[vec![Val::Int(Some(1))]]),
                    false,
                ),
                Some((_, false)) => {
                    let mut r = match &self.cfg.linked_server_message {
                        Some(m) => encode_message(
                            &message(
                                7412,
                                1,
                                0,
                                &format!("OLE DB provider \"MSOLEDBSQL\" for linked server \"{name}\" returned message \"{m}\"."),
                            ),
                            TOKEN_INFO,
                        ),
                        None => Vec::new(),
                    };
                    let (e, failed) = Self::fail(
                    7391,
                    2,
                    16,
                    &format!("The operation could not be performed because OLE DB provider \"MSOLEDBSQL\" for linked server \"{name}\" was unable to begin a distributed transaction."),
                    );
                    r.extend(e);
                    (r, failed)
                }
                Some((_, true)) => (
                    result_set(&[Col::Int("one")], &[vec![Val::Int(Some(1))]]),
                    false,
                ),
            };
        }
        if let Some(rest) = up.strip_prefix("SELECT ID, NOTE FROM ") {
            // An optional `WHERE ID = n` (what a parameterised read-back sends).
            let (name, only_id) = match rest.split_once(" WHERE ID = ") {
                Some((n, id)) => match id.trim().parse::<i32>() {
                    Ok(id) => (n.trim().to_string(), Some(id)),
                    Err(_) => return Self::fail(245, 1, 16, "Conversion failed."),
                },
                None => (rest.trim().to_string(), None),
            };
            let Some(rows) = self.tables.get(&name) else {
                return Self::fail(208, 0, 16, &format!("Invalid object name '{name}'."));
            };
            let rows: Vec<Vec<Val>> = rows
                .iter()
                .filter(|(i, _)| only_id.is_none_or(|want| *i == want))
                .map(|(i, t)| vec![Val::Int(Some(*i)), Val::Str(Some(t.clone()))])
                .collect();
            return (
                result_set(&[Col::Int("id"), Col::NVarChar("note")], &rows),
                false,
            );
        }
        if let Some(rest) = up.strip_prefix("SELECT ") {
            if let Ok(n) = rest.trim().parse::<i32>() {
                return (
                    result_set(&[Col::Int("")], &[vec![Val::Int(Some(n))]]),
                    false,
                );
            }
            if rest.trim() == "NULL" {
                return (result_set(&[Col::Int("")], &[vec![Val::Int(None)]]), false);
            }
            // SELECT N'text' (a bound nvarchar parameter), from the case-preserving text.
            let orig = stmt.trim()[7..].trim();
            if let Some(body) = orig
                .strip_prefix("N'")
                .and_then(|b| b.strip_suffix('\''))
                .filter(|b| !b.replace("''", "").contains('\''))
            {
                return (
                    result_set(
                        &[Col::NVarChar("")],
                        &[vec![Val::Str(Some(body.replace("''", "'")))]],
                    ),
                    false,
                );
            }
        }
        let near = stmt.split_whitespace().next().unwrap_or("");
        Self::fail(102, 1, 15, &format!("Incorrect syntax near '{near}'."))
    }
}

// ---------------------------------------------------------------------------------------------
// SQL Server Browser (UDP 1434) stand-in.

pub struct BrowserPeer {
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BrowserPeer {
    /// Answers CLNT_UCAST_INST for `instance` with `tcp_port` (`None`: TCP disabled), stays
    /// silent for other instances, as the real Browser does.
    pub fn start(
        bind: SocketAddr,
        instance: &str,
        tcp_port: Option<u16>,
    ) -> io::Result<BrowserPeer> {
        let sock = std::net::UdpSocket::bind(bind)?;
        sock.set_nonblocking(true)?;
        let instance = instance.to_string();
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let sock = UdpSocket::from_std(sock).unwrap();
                let mut buf = [0u8; 1024];
                loop {
                    tokio::select! {
                        _ = &mut rx => break,
                        r = sock.recv_from(&mut buf) => {
                            let Ok((n, from)) = r else { continue };
                            let Ok(asked) = ssrp::decode_request(&buf[..n]) else {
                                continue;
                            };
                            if !asked.eq_ignore_ascii_case(&instance) {
                                continue;
                            }
                            let d = ssrp::encode_response(&[ssrp::InstanceInfo {
                                server_name: "PEER".into(),
                                instance_name: instance.clone(),
                                is_clustered: false,
                                version: "16.0.1000.6".into(),
                                tcp_port,
                                named_pipe: None,
                            }]);
                            let _ = sock.send_to(&d, from).await;
                        }
                    }
                }
            });
        });
        Ok(BrowserPeer {
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }
}

impl Drop for BrowserPeer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
