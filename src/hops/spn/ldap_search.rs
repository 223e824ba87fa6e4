//! Which accounts hold an SPN, asked of a domain controller's LDAP (TCP 389) as the client
//! itself: a SASL GSSAPI bind (RFC 4752) with the same Kerberos credentials as the ticket
//! request, no security layer, then a subtree search of the domain for
//! `(servicePrincipalName=SPN)`. An SPN on two accounts is what `setspn -X` reports: the KDC then
//! refuses it (Samba: "not found") or issues a ticket the server cannot decrypt.
//!
//! The SASL security layer is integrity (signing) when the DC offers it, as Windows clients
//! choose and as DCs that require LDAP signing (Samba's default, Windows Server 2025's) insist:
//! every message after the bind is then a SASL buffer, a 4-byte length and the GSS-wrapped
//! LDAP message. Else sealing, else none. Blocking: called on the ticket request's blocking
//! thread.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use libgssapi::context::{ClientCtx, CtxFlags, SecurityContext};
use libgssapi::credential::Cred;
use libgssapi::name::Name;
use libgssapi::oid::{GSS_MECH_KRB5, GSS_NT_KRB5_PRINCIPAL};

use dtcprobe_wire::ldap::{self, LdapOp};

/// The distinguished names of the accounts holding `spn`, from the DC `host` at `addr`.
pub fn accounts_with_spn(
    host: &str,
    addr: IpAddr,
    realm: &str,
    cred: Cred,
    spn: &str,
    limit: Duration,
) -> Result<Vec<String>, String> {
    let deadline = Instant::now() + limit;
    let mut conn = TcpStream::connect_timeout(&SocketAddr::new(addr, 389), limit)
        .map_err(|e| format!("LDAP {addr}:389: {e}"))?;
    conn.set_read_timeout(Some(limit)).ok();
    conn.set_write_timeout(Some(limit)).ok();
    let target = format!("ldap/{host}@{realm}");
    let target = Name::new(target.as_bytes(), Some(GSS_NT_KRB5_PRINCIPAL))
        .map_err(|e| format!("LDAP service name: {e}"))?;
    let mut ctx = ClientCtx::new(
        Some(cred),
        target,
        CtxFlags::GSS_C_MUTUAL_FLAG,
        Some(GSS_MECH_KRB5),
    );
    let mut id = 0;
    let mut token = ctx
        .step(None, None)
        .map_err(|e| format!("a ticket for ldap/{host}: {e}"))?
        .map(|t| t.to_vec());
    let mut layer = Layer::None;
    // The context exchange, then the security-layer negotiation (RFC 4752 3.1), at most a few
    // round trips.
    for _ in 0..4 {
        id += 1;
        let creds = token.take().unwrap_or_default();
        send(
            &mut conn,
            &ldap::sasl_bind(id, "GSSAPI", Some(&creds)),
            None,
        )?;
        let (code, diagnostic, server) = match receive(&mut conn, deadline, None)? {
            LdapOp::BindResponse {
                result_code,
                diagnostic,
                server_creds,
            } => (result_code, diagnostic, server_creds.unwrap_or_default()),
            other => return Err(format!("LDAP answered the bind with {other:?}")),
        };
        match code {
            ldap::SUCCESS => {
                let mut secured = match layer {
                    Layer::None => None,
                    Layer::Sign => Some((&mut ctx, false)),
                    Layer::Seal => Some((&mut ctx, true)),
                };
                return search(&mut conn, realm, spn, id + 1, deadline, &mut secured);
            }
            ldap::SASL_BIND_IN_PROGRESS => {}
            _ => return Err(format!("LDAP bind refused (result {code}): {diagnostic}")),
        }
        if !ctx.is_complete() {
            token = ctx
                .step(Some(&server), None)
                .map_err(|e| format!("LDAP GSSAPI bind: {e}"))?
                .map(|t| t.to_vec());
            if ctx.is_complete() && token.is_none() {
                token = Some(Vec::new());
            }
            continue;
        }
        if server.is_empty() {
            token = Some(Vec::new());
            continue;
        }
        // The server's offer: security layers and a maximum size, wrapped.
        let offer = ctx
            .unwrap(&server)
            .map_err(|e| format!("LDAP security layer offer: {e}"))?;
        let offered = offer.first().copied().unwrap_or(0);
        let (bit, chosen) = if offered & 0x02 != 0 {
            (0x02, Layer::Sign)
        } else if offered & 0x04 != 0 {
            (0x04, Layer::Seal)
        } else if offered & 0x01 != 0 {
            (0x01, Layer::None)
        } else {
            return Err(format!(
                "the DC offers no known SASL security layer ({offered:#x})"
            ));
        };
        layer = chosen;
        // The layer and the largest buffer this side takes (1 MiB - 1).
        let choice = ctx
            .wrap(false, &[bit, 0x0f, 0xff, 0xff])
            .map_err(|e| format!("LDAP security layer choice: {e}"))?;
        token = Some(choice.to_vec());
    }
    Err("the LDAP bind did not finish".into())
}

#[derive(Clone, Copy)]
enum Layer {
    None,
    Sign,
    Seal,
}

/// The security context that wraps every message after the bind, and whether it seals.
type Secured<'a> = Option<(&'a mut ClientCtx, bool)>;

fn search(
    conn: &mut TcpStream,
    realm: &str,
    spn: &str,
    id: i64,
    deadline: Instant,
    secured: &mut Secured<'_>,
) -> Result<Vec<String>, String> {
    let request = ldap::search_equal(
        id,
        &ldap::domain_dn(realm),
        "servicePrincipalName",
        spn,
        &["sAMAccountName"],
        10,
    );
    send(
        conn,
        &request,
        secured.as_mut().map(|(c, seal)| (&mut **c, *seal)),
    )?;
    let mut found = Vec::new();
    let mut pending = Vec::new();
    // Bounded: at most 10 entries (the size limit) plus references and the end.
    for _ in 0..64 {
        let layer = secured.as_mut().map(|(c, _)| (&mut **c, &mut pending));
        match receive(conn, deadline, layer)? {
            LdapOp::SearchEntry { dn } => found.push(dn),
            LdapOp::SearchDone {
                result_code,
                diagnostic,
            } => {
                // 4: sizeLimitExceeded still lists what it found.
                if result_code != ldap::SUCCESS && result_code != 4 {
                    return Err(format!(
                        "LDAP search failed (result {result_code}): {diagnostic}"
                    ));
                }
                return Ok(found);
            }
            _ => {}
        }
    }
    Err("the LDAP search did not end".into())
}

fn send(
    conn: &mut TcpStream,
    bytes: &[u8],
    secured: Option<(&mut ClientCtx, bool)>,
) -> Result<(), String> {
    let framed = match secured {
        None => bytes.to_vec(),
        Some((ctx, seal)) => {
            let wrapped = ctx
                .wrap(seal, bytes)
                .map_err(|e| format!("LDAP wrap: {e}"))?;
            let mut f = (wrapped.len() as u32).to_be_bytes().to_vec();
            f.extend_from_slice(&wrapped);
            f
        }
    };
    conn.write_all(&framed)
        .map_err(|e| format!("LDAP send: {e}"))
}

/// One LDAPMessage (at most 1 MiB). With a security layer, one SASL buffer may hold several
/// messages (Samba sends a search's entries and its end in one): what follows the first is
/// kept in `pending` for the next call.
fn receive(
    conn: &mut TcpStream,
    deadline: Instant,
    secured: Option<(&mut ClientCtx, &mut Vec<u8>)>,
) -> Result<LdapOp, String> {
    let read = |conn: &mut TcpStream, n: usize| -> Result<Vec<u8>, String> {
        if Instant::now() > deadline {
            return Err("LDAP: no answer in time".into());
        }
        let mut buf = vec![0u8; n];
        conn.read_exact(&mut buf)
            .map_err(|e| format!("LDAP receive: {e}"))?;
        Ok(buf)
    };
    let message = match secured {
        Some((ctx, pending)) => {
            // Bounded: a message over 1 MiB is refused, and every round adds a whole buffer.
            loop {
                if let Some(total) = ldap::element_len(pending).filter(|n| *n <= pending.len()) {
                    break pending.drain(..total).collect::<Vec<u8>>();
                }
                if pending.len() > 1 << 20 {
                    return Err("LDAP: a message over 1 MiB".into());
                }
                let len =
                    u32::from_be_bytes(read(conn, 4)?.try_into().unwrap_or_default()) as usize;
                if len > 1 << 20 {
                    return Err("LDAP: a SASL buffer over 1 MiB".into());
                }
                let wrapped = read(conn, len)?;
                let plain = ctx
                    .unwrap(&wrapped)
                    .map_err(|e| format!("LDAP unwrap: {e}"))?;
                pending.extend_from_slice(&plain);
            }
        }
        None => {
            let mut head = read(conn, 2)?;
            if head[1] & 0x80 != 0 {
                head.extend(read(conn, ((head[1] & 0x7f) as usize).min(4))?);
            }
            let total = ldap::element_len(&head)
                .filter(|n| *n <= 1 << 20 && *n >= head.len())
                .ok_or("LDAP: an unreadable message length")?;
            let body = read(conn, total - head.len())?;
            head.extend(body);
            head
        }
    };
    ldap::parse_message(&message)
        .map(|(_, op)| op)
        .ok_or_else(|| "LDAP: a message that does not decode".into())
}
