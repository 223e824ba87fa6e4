//! dtcprobe's own minimal TDS 7.4 client session for the `tx_enlist` hop: PRELOGIN (with the
//! TLS handshake carried in PRELOGIN packets, as MS-TDS 7.x requires), LOGIN7 with SQL Server
//! or Windows authentication, then SQL batches and transaction manager requests that carry a
//! transaction descriptor.
//!
//! Windows authentication is NTLM through the `winauth` crate, as the `login` hop's tiberius
//! does: `auth=windows` computes NTLMv2 from the given `DOMAIN\user` and password (plain Rust,
//! so the exchange is tested against the test peer on any platform); `auth=integrated` asks
//! Windows' SSPI for the current account's tokens (Windows build only). The first token rides in
//! LOGIN7, the server's challenge comes back as an SSPI token (0xED), the answer goes in an SSPI
//! message (packet 0x11). In the Windows build `auth=kerberos` and `auth=negotiate` run SSPI's
//! Kerberos / Negotiate package instead (crate::hops::spn::sspi): the AP-REQ (or SPNEGO token)
//! rides in LOGIN7, the server's AP-REP comes back as an SSPI token, and the login reports the
//! package SSPI ended on ([`LoginInfo::auth_package`]); confirmed only on a real Windows host.
//! Outside Windows this session speaks NTLM only. tiberius cannot send transaction manager requests (packet type 0x0E), which is
//! the reason this exists; everything else a login needs is kept to what MS-TDS mandates.
//!
//! Encryption follows the PRELOGIN negotiation table (MS-TDS 2.2.6.5) like the `login` hop:
//! full TLS, login-only TLS (the LOGIN7 packet encrypted, then back to the clear), or none.
//! `encrypt=strict` is TDS 8: TLS directly on TCP before any TDS byte (ALPN `tds/8.0`), then
//! PRELOGIN, LOGIN7 and everything else inside it, as Microsoft.Data.SqlClient does it (it
//! sends ENCRYPT_NOT_SUP in that PRELOGIN, "encryption has already been negotiated", and ignores
//! the answer's ENCRYPTION; LOGIN7 says TDS 8.0). A server that answers the ClientHello with TDS
//! 7 or hangs up does not speak TDS 8: [`Failure::NoTlsFirst`].
//! TLS is rustls with the process's provider (ring, see src/tls.rs); the certificate is
//! validated against this host's trust store unless `trust_server_certificate=true`, which
//! strict ignores (TDS 8 always validates, as in the `login` hop and Microsoft's drivers).

use std::net::SocketAddr;
use std::time::Duration;

use dtcprobe_wire::tds::login7::{Login7, TDS_74, TDS_80};
use dtcprobe_wire::tds::packet::{PKT_LOGIN7, PKT_PRELOGIN, PKT_REPLY, PKT_SQL_BATCH, PKT_SSPI};
use dtcprobe_wire::tds::prelogin::{
    parse_prelogin_options, ENCRYPT_NOT_SUP, ENCRYPT_OFF, ENCRYPT_ON, ENCRYPT_REQ, PL_ENCRYPTION,
    PL_INSTOPT,
};
use dtcprobe_wire::tds::reply::{parse_reply, Token};
use dtcprobe_wire::tds::tm::{
    encode_sql_batch, encode_tm_request, TmRequest, TxHeader, ENV_BEGIN_TRAN, ENV_COMMIT_TRAN,
    ENV_DEFECT_TRAN, ENV_ENLIST_DTC, ENV_ROLLBACK_TRAN, ENV_TRANSACTION_ENDED,
    PKT_TRANSACTION_MANAGER,
};
use dtcprobe_wire::tds::token::DONE_ERROR;

use crate::hops::mssql::classify::Failure;
use crate::hops::mssql::spec::{Auth, Encrypt, MssqlTarget};
use crate::model::{HopKind, HopResult};

use crate::hops::mssql::transport::{client_prelogin, Transport};

/// NTLM is NEGOTIATE, CHALLENGE, AUTHENTICATE: one round after LOGIN7. More rounds than this
/// means the exchange is not converging.
const MAX_SSPI_ROUNDS: usize = 4;

/// This host's side of a Windows-authentication exchange: gives the next token to send, given
/// the server's last one (none at the start), and says which package it ran on.
trait SspiExchange: Send {
    /// `Ok(None)`: the exchange is complete on this side, nothing more to send.
    fn next_token(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, Failure>;
    /// The package the exchange used (`NTLM`, `Kerberos`), when the client can tell.
    fn package(&self) -> Option<String>;
}

type SspiClient = Box<dyn SspiExchange>;

/// NTLM through the `winauth` crate (NTLMv2 in Rust, or Windows' SSPI NTLM package).
struct Ntlm(Box<dyn winauth::NextBytes + Send>);

impl SspiExchange for Ntlm {
    fn next_token(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, Failure> {
        self.0
            .next_bytes(server)
            .map_err(|e| Failure::Sspi(e.to_string()))
    }
    fn package(&self) -> Option<String> {
        Some("NTLM".into())
    }
}

/// Windows' SSPI Kerberos or Negotiate package (`auth=kerberos` / `auth=negotiate` in the
/// Windows build, crate::hops::spn::sspi).
#[cfg(windows)]
impl SspiExchange for crate::hops::spn::sspi::Client {
    fn next_token(&mut self, server: Option<&[u8]>) -> Result<Option<Vec<u8>>, Failure> {
        self.step(server).map_err(|e| Failure::Sspi(e.to_string()))
    }
    fn package(&self) -> Option<String> {
        crate::hops::spn::sspi::Client::package(self)
    }
}

/// The SSPI client for the target's `auth`, or `None` for SQL Server authentication.
fn sspi_client(
    t: &MssqlTarget,
    addr: SocketAddr,
    password: &str,
) -> Result<Option<SspiClient>, Failure> {
    // The service principal SQL Server registers: MSSQLSvc/host:port.
    let spn = format!("MSSQLSvc/{}:{}", t.host, addr.port());
    match t.auth {
        Auth::Sql => Ok(None),
        // Negotiate's NTLM leg outside Windows (the `login` hop's fallback in
        // mssql/negotiate.rs; and this session's own logins): NTLMv2 from the same user
        // (`user@REALM` goes as a UPN, as Windows sends it) and password.
        #[cfg(not(windows))]
        Auth::Negotiate => Ok(Some(ntlm_v2(t, spn, password))),
        Auth::Windows => Ok(Some(ntlm_v2(t, spn, password))),
        // Windows: the SSPI package itself, with the given user and password, else as the
        // logged-on user; Negotiate picks Kerberos or NTLM and says which afterwards.
        #[cfg(windows)]
        Auth::Negotiate | Auth::Kerberos => {
            use crate::hops::spn::sspi::{Client, Identity, Package};
            let package = if t.auth == Auth::Kerberos {
                Package::Kerberos
            } else {
                Package::Negotiate
            };
            let realm = crate::hops::mssql::kerberos::realm(t).unwrap_or_default();
            let identity = t
                .user
                .as_deref()
                .map(|user| Identity::new(user, &realm, password));
            let client = Client::new(package, identity.as_ref(), &spn)
                .map_err(|e| Failure::Sspi(format!("this host's SSPI ({package:?}): {e}")))?;
            Ok(Some(Box::new(client)))
        }
        #[cfg(windows)]
        Auth::Integrated => {
            let client = winauth::windows::NtlmSspiBuilder::new()
                .target_spn(&spn)
                .build()
                .map_err(|e| Failure::Sspi(format!("this host's SSPI (NTLM): {e}")))?;
            Ok(Some(Box::new(Ntlm(Box::new(client)))))
        }
        #[cfg(not(windows))]
        Auth::Kerberos => Err(Failure::Sspi(
            "this session does not log in with auth=kerberos outside Windows (the `login` hop \
             does, through GSS-API; docs/kerberos.md)"
                .into(),
        )),
        #[cfg(not(windows))]
        Auth::Integrated => Err(Failure::Sspi(
            "auth=integrated needs the Windows build: this account's SSPI".into(),
        )),
    }
}

/// NTLMv2 in Rust from `DOMAIN\user` (or a UPN) and the password.
fn ntlm_v2(t: &MssqlTarget, spn: String, password: &str) -> SspiClient {
    let user = t.user.clone().unwrap_or_default();
    let (domain, user) = match user.split_once('\\') {
        Some((d, u)) => (Some(d.to_string()), u.to_string()),
        None => (None, user),
    };
    let client = winauth::NtlmV2ClientBuilder::new().target_spn(spn).build(
        domain,
        user,
        password.to_string(),
    );
    Box::new(Ntlm(Box::new(client)))
}

const PACKET_SIZE: u32 = 4096;

/// How the PRELOGIN negotiation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Negotiated {
    None,
    LoginOnly,
    Full,
    /// TDS 8: TLS first, everything inside it.
    Strict,
}

impl Negotiated {
    pub fn as_str(self) -> &'static str {
        match self {
            Negotiated::None => "none",
            Negotiated::LoginOnly => "login_only",
            Negotiated::Full => "on",
            Negotiated::Strict => "strict",
        }
    }
}

/// The byte this client sends in PRELOGIN for the target's setting. Under strict the PRELOGIN
/// travels inside TLS already and nothing is left to negotiate: ENCRYPT_NOT_SUP, as
/// Microsoft.Data.SqlClient sends (MS-TDS defines no "strict" value for this byte).
fn client_encryption(e: Encrypt) -> u8 {
    match e {
        Encrypt::None | Encrypt::Strict => ENCRYPT_NOT_SUP,
        Encrypt::Off => ENCRYPT_OFF,
        Encrypt::On => ENCRYPT_ON,
        Encrypt::Required => ENCRYPT_REQ,
    }
}

/// MS-TDS 2.2.6.5's table, from the client's side.
pub fn negotiate(client: u8, server: u8) -> Result<Negotiated, Failure> {
    match (client, server) {
        (ENCRYPT_NOT_SUP, ENCRYPT_REQ) => Err(Failure::EncryptionDeclined(
            "the server requires encryption and this check asked for none (encrypt=none)".into(),
        )),
        (ENCRYPT_ON | ENCRYPT_REQ, ENCRYPT_NOT_SUP) => Err(Failure::EncryptionDeclined(
            "the server does not support encryption (PRELOGIN answered NOT_SUP)".into(),
        )),
        (_, ENCRYPT_NOT_SUP) | (ENCRYPT_NOT_SUP, _) => Ok(Negotiated::None),
        (ENCRYPT_OFF, ENCRYPT_OFF) => Ok(Negotiated::LoginOnly),
        _ => Ok(Negotiated::Full),
    }
}

/// What the login learned.
#[derive(Debug, Clone)]
pub struct LoginInfo {
    pub encryption: Negotiated,
    pub tds_version: u32,
    pub server_program: String,
    /// The SSPI package the login authenticated with (`NTLM`, `Kerberos`); `None` for SQL
    /// Server authentication.
    pub auth_package: Option<String>,
}

pub struct Session {
    transport: Transport,
    /// The descriptor every request names in ALL_HEADERS (0: none), as the server's
    /// ENVCHANGEs said; see [`Session::read_reply`] for when a DTC one is kept.
    pub descriptor: u64,
    /// Enlisted in a DTC transaction (ENVCHANGE 11) and not yet out of it (ENVCHANGE 12/17, or
    /// an error-free unenlist).
    in_dtc: bool,
}

impl Session {
    /// Connects, negotiates, logs in.
    pub async fn open(
        addr: SocketAddr,
        t: &MssqlTarget,
        password: &str,
        connect_limit: Duration,
    ) -> Result<(Session, LoginInfo), Failure> {
        // Classified as the `tcp` hop would be: the path can break between the hops.
        let (attempt, tcp) = crate::hops::connect::connect(addr, connect_limit).await;
        let Some(tcp) = tcp else {
            return Err(match attempt.verdict() {
                Some(v) => Failure::Connect(v),
                None => Failure::Closed(format!("TCP connect to {addr} failed")),
            });
        };
        let _ = tcp.set_nodelay(true);
        let mut s = Session {
            transport: Transport::new(tcp, PACKET_SIZE as usize),
            descriptor: 0,
            in_dtc: false,
        };
        let strict = t.encrypt == Encrypt::Strict;
        if strict {
            s.transport
                .tls_first_handshake(Transport::tls_client(t)?)
                .await?;
        }

        let client_enc = client_encryption(t.encrypt);
        let prelogin = client_prelogin(t.instance.as_deref(), client_enc);
        s.transport.write_message(PKT_PRELOGIN, &prelogin).await?;
        let (_, answer) = s.transport.read_message().await?;
        let options = parse_prelogin_options(&answer)
            .map_err(|e| Failure::Protocol(format!("the answer to PRELOGIN is not TDS: {e}")))?;
        let value = |token: u8| {
            options
                .iter()
                .find(|(k, _)| *k == token)
                .and_then(|(_, v)| v.first().copied())
        };
        if value(PL_INSTOPT) == Some(1) {
            return Err(Failure::InstanceMismatch {
                instance: t.instance.clone().unwrap_or_default(),
                port: addr.port(),
            });
        }
        let negotiated = if strict {
            // Already inside TLS; the answer's ENCRYPTION means nothing here.
            Negotiated::Strict
        } else {
            let server_enc = value(PL_ENCRYPTION).ok_or_else(|| {
                Failure::Protocol("the PRELOGIN answer has no ENCRYPTION option".into())
            })?;
            negotiate(client_enc, server_enc)?
        };
        if matches!(negotiated, Negotiated::LoginOnly | Negotiated::Full) {
            s.transport.tls_handshake(Transport::tls_client(t)?).await?;
        }

        let mut sspi = sspi_client(t, addr, password)?;
        let first_token = match &mut sspi {
            None => Vec::new(),
            Some(client) => client
                .next_token(None)?
                .ok_or_else(|| Failure::Sspi("no first token".into()))?,
        };
        let sql_auth = sspi.is_none();
        let login = Login7 {
            tds_version: if strict { TDS_80 } else { TDS_74 },
            packet_size: PACKET_SIZE,
            client_program_version: 0x0100_0000,
            client_pid: std::process::id(),
            host_name: gethostname::gethostname().to_string_lossy().into_owned(),
            // With an SSPI token the server ignores name and password: none are sent.
            user_name: if sql_auth {
                t.user.clone().unwrap_or_default()
            } else {
                String::new()
            },
            password: if sql_auth {
                password.to_string()
            } else {
                String::new()
            },
            app_name: "dtcprobe".into(),
            server_name: t.host.clone(),
            library_name: "dtcprobe".into(),
            language: String::new(),
            database: t.database.clone().unwrap_or_default(),
            sspi: first_token,
        };
        s.transport
            .write_message(PKT_LOGIN7, &login.encode())
            .await?;
        if negotiated == Negotiated::LoginOnly {
            // Only the LOGIN7 packet travels encrypted; the server answers in the clear.
            s.transport.end_tls();
        }
        let first_reply = s.read_reply().await?;
        let tokens = s.sspi_exchange(sspi.as_mut(), first_reply).await?;
        if let Some(f) = first_error(&tokens) {
            return Err(f);
        }
        let ack = tokens.iter().find_map(|t| match t {
            Token::LoginAck(a) => Some(a.clone()),
            _ => None,
        });
        let Some(ack) = ack else {
            return Err(Failure::Protocol(
                "the login response has neither LOGINACK nor an error".into(),
            ));
        };
        if tokens
            .iter()
            .any(|t| matches!(t, Token::EnvChange { kind: 20, .. }))
        {
            return Err(Failure::Protocol(
                "the server redirects the login to another server (routing ENVCHANGE); \
                 tx_enlist does not follow redirects yet: target the server it names"
                    .into(),
            ));
        }
        for t in &tokens {
            if let Token::EnvChange { kind: 4, new, .. } = t {
                let text = dtcprobe_wire::tds::from_utf16le(new);
                if let Ok(n) = text.parse::<usize>() {
                    s.transport.packet_size = n.clamp(512, 32767);
                }
            }
        }
        Ok((
            s,
            LoginInfo {
                encryption: negotiated,
                tds_version: ack.tds_version,
                server_program: ack.program,
                auth_package: sspi.as_ref().and_then(|c| c.package()),
            },
        ))
    }

    /// Windows authentication after LOGIN7: answers each SSPI token of the server (0xED) in an
    /// SSPI message (0x11) until the server decides; returns its deciding reply. `reply` is the
    /// answer to LOGIN7; with SQL Server authentication (`sspi` none) it is returned as it is,
    /// unless the server asks for SSPI anyway.
    async fn sspi_exchange(
        &mut self,
        mut sspi: Option<&mut SspiClient>,
        mut reply: Vec<Token>,
    ) -> Result<Vec<Token>, Failure> {
        for round in 0.. {
            let challenge = reply.iter().find_map(|t| match t {
                Token::Sspi(b) => Some(b.clone()),
                _ => None,
            });
            let Some(challenge) = challenge else { break };
            if first_error(&reply).is_some() {
                break;
            }
            let Some(client) = sspi.as_mut() else {
                return Err(Failure::Protocol(
                    "the server answered a SQL Server authentication login with an SSPI token"
                        .into(),
                ));
            };
            if round == MAX_SSPI_ROUNDS {
                return Err(Failure::Sspi(format!(
                    "the exchange did not end after {MAX_SSPI_ROUNDS} rounds"
                )));
            }
            let answer = client.next_token(Some(&challenge)).map_err(|e| match e {
                Failure::Sspi(m) => Failure::Sspi(format!("answering the server's token: {m}")),
                other => other,
            })?;
            let logged_in = reply.iter().any(|t| matches!(t, Token::LoginAck(_)));
            if logged_in {
                // Kerberos' AP-REP riding with the LOGINACK: taken (it proves the server's
                // identity), nothing goes back.
                break;
            }
            // `None` after Kerberos' AP-REP alone: this side is done and sends nothing more (as
            // Microsoft's drivers do); the server's verdict follows.
            if let Some(answer) = answer {
                self.transport.write_message(PKT_SSPI, &answer).await?;
            }
            reply = self.read_reply().await?;
        }
        Ok(reply)
    }

    /// A SQL batch in the session's current transaction.
    pub async fn batch(&mut self, sql: &str) -> Result<Vec<Token>, Failure> {
        let payload = encode_sql_batch(self.tx_header(), sql);
        self.transport
            .write_message(PKT_SQL_BATCH, &payload)
            .await?;
        self.read_reply().await
    }

    /// A transaction manager request in the session's current transaction.
    pub async fn tm_request(&mut self, request: &TmRequest) -> Result<Vec<Token>, Failure> {
        let payload = encode_tm_request(self.tx_header(), request)
            .map_err(|e| Failure::Protocol(e.to_string()))?;
        self.transport
            .write_message(PKT_TRANSACTION_MANAGER, &payload)
            .await?;
        self.read_reply().await
    }

    /// Leaves the DTC transaction (TM_PROPAGATE_XACT with an empty cookie), naming the enlisted
    /// or retained descriptor as SqlClient does: SQL Server resolves the request against the
    /// transaction the session is still bound to, and may refuse one that names 0 (3971, 8525)
    /// while it is. The descriptor is cleared once the server answered without an error (a
    /// DONE without its error bit), or by the ENVCHANGE 12 it may send.
    pub async fn unenlist(&mut self) -> Result<Vec<Token>, Failure> {
        let tokens = self
            .tm_request(&TmRequest::Propagate { cookie: Vec::new() })
            .await?;
        if unenlist_accepted(&tokens) {
            self.descriptor = 0;
            self.in_dtc = false;
        }
        Ok(tokens)
    }

    fn tx_header(&self) -> TxHeader {
        TxHeader {
            descriptor: self.descriptor,
            outstanding_requests: 1,
        }
    }

    /// Closes the connection (the server rolls back whatever the session still holds).
    pub async fn close(self) {
        self.transport.close().await;
    }

    async fn read_reply(&mut self) -> Result<Vec<Token>, Failure> {
        let (ty, payload) = self.transport.read_message().await?;
        if ty != PKT_REPLY {
            return Err(Failure::Protocol(format!(
                "the server answered with packet type 0x{ty:02X}, not a reply"
            )));
        }
        let tokens = parse_reply(&payload).map_err(|e| Failure::Protocol(e.to_string()))?;
        self.follow_transaction(&tokens);
        Ok(tokens)
    }

    /// Tracks the descriptor through the reply's transaction ENVCHANGEs (MS-TDS 2.2.7.9):
    /// 8 (begin) and 11 (enlist DTC) set it; 9 and 10 (commit, rollback) clear a local
    /// transaction's but RETAIN a DTC one's: SqlClient keeps sending that descriptor
    /// (`_retainedTransactionId`) until it has unenlisted, because the session stays bound to
    /// the DTC transaction on the server until then; 12 (defect) and 17 (ended) clear it.
    fn follow_transaction(&mut self, tokens: &[Token]) {
        for t in tokens {
            let Token::EnvChange { kind, new, .. } = t else {
                continue;
            };
            match *kind {
                ENV_BEGIN_TRAN | ENV_ENLIST_DTC => {
                    if let Some(d) = dtcprobe_wire::tds::tm::descriptor_from_bytes(new) {
                        self.descriptor = d;
                        self.in_dtc = *kind == ENV_ENLIST_DTC;
                    }
                }
                ENV_COMMIT_TRAN | ENV_ROLLBACK_TRAN if self.in_dtc => {}
                ENV_COMMIT_TRAN | ENV_ROLLBACK_TRAN | ENV_DEFECT_TRAN | ENV_TRANSACTION_ENDED => {
                    self.descriptor = 0;
                    self.in_dtc = false;
                }
                _ => {}
            }
        }
    }
}

/// The first ERROR token of a reply, as a [`Failure`].
/// An unenlist the server took: no ERROR token, and a final DONE without its error bit.
fn unenlist_accepted(tokens: &[Token]) -> bool {
    let no_error = !tokens.iter().any(|t| matches!(t, Token::Error(_)));
    let done_ok = tokens.iter().rev().find_map(|t| match t {
        Token::Done { status, .. } => Some(status & DONE_ERROR == 0),
        _ => None,
    });
    no_error && done_ok == Some(true)
}

/// A hop whose own session cannot log in here: `auth=integrated` needs this account's SSPI,
/// which only the Windows build has. `None` when it can.
pub fn integrated_unsupported(t: &MssqlTarget, kind: HopKind) -> Option<HopResult> {
    (t.auth == Auth::Integrated && cfg!(not(windows))).then(|| {
        HopResult::unsupported(
            kind,
            format!(
                "{} with auth=integrated needs the Windows build: this account's SSPI",
                kind.as_str()
            ),
        )
    })
}

/// TM_GET_DTC_ADDRESS's answer: the binary value of the first row, or an ENVCHANGE 16.
pub fn dtc_address(tokens: &[Token]) -> Option<Vec<u8>> {
    first_binary(tokens).or_else(|| {
        tokens.iter().find_map(|t| match t {
            Token::EnvChange { kind, new, .. }
                if *kind == dtcprobe_wire::tds::tm::ENV_TM_ADDRESS && !new.is_empty() =>
            {
                Some(new.clone())
            }
            _ => None,
        })
    })
}

/// The first row's first value when it is a non-empty binary one.
pub fn first_binary(tokens: &[Token]) -> Option<Vec<u8>> {
    tokens.iter().find_map(|t| match t {
        Token::Row(values) => match values.first() {
            Some(dtcprobe_wire::tds::reply::Value::Bytes(b)) if !b.is_empty() => Some(b.clone()),
            _ => None,
        },
        _ => None,
    })
}

pub fn first_error(tokens: &[Token]) -> Option<Failure> {
    tokens.iter().find_map(|t| match t {
        Token::Error(m) => Some(Failure::Server {
            number: m.number as u32,
            state: m.state,
            class: m.class,
            message: m.text.clone(),
        }),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unenlist_counts_as_done_only_without_errors() {
        let done = |status| Token::Done {
            token: 0xFD,
            status,
            rows: 0,
        };
        let err = Token::Error(dtcprobe_wire::tds::token::ServerMessage {
            number: 3971,
            state: 1,
            class: 16,
            text: String::new(),
            server: String::new(),
            procedure: String::new(),
            line: 1,
        });
        assert!(unenlist_accepted(&[done(0)]));
        let defect = Token::EnvChange {
            kind: ENV_DEFECT_TRAN,
            new: vec![],
            old: vec![1; 8],
        };
        assert!(unenlist_accepted(&[defect, done(0)]));
        assert!(!unenlist_accepted(&[done(DONE_ERROR)]));
        assert!(!unenlist_accepted(&[err, done(DONE_ERROR)]));
        assert!(!unenlist_accepted(&[]));
    }

    #[test]
    fn negotiation_table() {
        use Negotiated::*;
        let ok = |c, s| negotiate(c, s).ok();
        assert_eq!(ok(ENCRYPT_OFF, ENCRYPT_OFF), Some(LoginOnly));
        assert_eq!(ok(ENCRYPT_OFF, ENCRYPT_ON), Some(Full));
        assert_eq!(ok(ENCRYPT_OFF, ENCRYPT_REQ), Some(Full));
        assert_eq!(ok(ENCRYPT_OFF, ENCRYPT_NOT_SUP), Some(None));
        assert_eq!(ok(ENCRYPT_ON, ENCRYPT_OFF), Some(Full));
        assert_eq!(ok(ENCRYPT_ON, ENCRYPT_NOT_SUP), Option::None);
        assert_eq!(ok(ENCRYPT_NOT_SUP, ENCRYPT_NOT_SUP), Some(None));
        assert_eq!(ok(ENCRYPT_NOT_SUP, ENCRYPT_OFF), Some(None));
        assert!(matches!(
            negotiate(ENCRYPT_NOT_SUP, ENCRYPT_REQ),
            Err(Failure::EncryptionDeclined(_))
        ));
    }

    #[test]
    fn strict_sends_not_sup_in_the_prelogin_inside_tls() {
        assert_eq!(client_encryption(Encrypt::Strict), ENCRYPT_NOT_SUP);
        assert_eq!(client_encryption(Encrypt::On), ENCRYPT_ON);
        assert_eq!(Negotiated::Strict.as_str(), "strict");
    }
}

/// Opt-in test of the Windows build's SSPI login against a real server: SQL Server on a Windows
/// host in a domain, or the TDS test peer under wine in tests/kerberos_samba.rs (which runs this
/// test itself, docs/kerberos.md).
#[cfg(all(test, windows))]
mod sspi_login_tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }

    /// DTCPROBE_SSPI_TDS: the server's `address:port`; DTCPROBE_SSPI_HOST: its name (the SPN's
    /// host); DTCPROBE_SSPI_AUTH: `kerberos` or `negotiate`; DTCPROBE_SSPI_EXPECT_SCHEME:
    /// `kerberos` or `ntlm`; DTCPROBE_SSPI_USER / _PASSWORD: explicit credentials (else the
    /// logged-on user).
    #[test]
    #[ignore = "needs a server in a domain: set DTCPROBE_SSPI_TDS, _HOST, _AUTH, _EXPECT_SCHEME (docs/kerberos.md)"]
    fn sspi_login_against_a_real_server() {
        let addr: SocketAddr = env("DTCPROBE_SSPI_TDS")
            .expect("DTCPROBE_SSPI_TDS")
            .parse()
            .expect("address:port");
        let host = env("DTCPROBE_SSPI_HOST").expect("DTCPROBE_SSPI_HOST");
        let auth = env("DTCPROBE_SSPI_AUTH").expect("DTCPROBE_SSPI_AUTH");
        let expect = env("DTCPROBE_SSPI_EXPECT_SCHEME").expect("DTCPROBE_SSPI_EXPECT_SCHEME");
        let password = env("DTCPROBE_SSPI_PASSWORD").unwrap_or_default();
        let mut t = MssqlTarget::from_url(&format!(
            "mssql://{host}:{}/?auth={auth}&encrypt=off&trust_server_certificate=true&tx=none",
            addr.port()
        ))
        .expect("target");
        // Set after parsing: a `DOMAIN\user` needs no URL escaping this way.
        t.user = env("DTCPROBE_SSPI_USER");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (session, info) = rt
            .block_on(Session::open(addr, &t, &password, Duration::from_secs(10)))
            .unwrap_or_else(|f| panic!("login failed: {f:?}"));
        rt.block_on(session.close());
        println!("SSPI-LOGIN package={:?}", info.auth_package);
        let scheme = info
            .auth_package
            .as_deref()
            .map(crate::hops::spn::sspi_status::scheme_of_package);
        assert_eq!(scheme.as_deref(), Some(expect.as_str()), "{info:?}");
    }
}
