//! Which accounts hold an SPN, asked of a domain controller's LDAP (TCP 389) as the client
//! itself: a SASL GSSAPI bind (RFC 4752) with the same Kerberos credentials as the ticket
//! request, no security layer, then a subtree search of the domain for
//! `(servicePrincipalName=SPN)`. An SPN on two accounts is what `setspn -X` reports: the KDC then
//! refuses it (Samba: "not found") or issues a ticket the server cannot decrypt.
//!
//! Only the bind's no-security-layer choice is offered: a DC that requires LDAP signing refuses it
//! (strongAuthRequired), which the hop reports as "not searched", not as a finding. Blocking:
//! called on the ticket request's blocking thread.

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
    // The context exchange, then the security-layer negotiation (RFC 4752 3.1), at most a few
    // round trips.
    for _ in 0..4 {
        id += 1;
        let creds = token.take().unwrap_or_default();
        send(&mut conn, &ldap::sasl_bind(id, "GSSAPI", Some(&creds)))?;
        let (code, diagnostic, server) = match receive(&mut conn, deadline)? {
            LdapOp::BindResponse {
                result_code,
                diagnostic,
                server_creds,
            } => (result_code, diagnostic, server_creds.unwrap_or_default()),
            other => return Err(format!("LDAP answered the bind with {other:?}")),
        };
        match code {
            ldap::SUCCESS => return search(&mut conn, realm, spn, id + 1, deadline),
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
        if offer.first().is_none_or(|layers| layers & 0x01 == 0) {
            return Err("the DC requires LDAP signing or sealing (no plain layer offered)".into());
        }
        let choice = ctx
            .wrap(false, &[0x01, 0, 0, 0])
            .map_err(|e| format!("LDAP security layer choice: {e}"))?;
        token = Some(choice.to_vec());
    }
    Err("the LDAP bind did not finish".into())
}

fn search(
    conn: &mut TcpStream,
    realm: &str,
    spn: &str,
    id: i64,
    deadline: Instant,
) -> Result<Vec<String>, String> {
    let request = ldap::search_equal(
        id,
        &ldap::domain_dn(realm),
        "servicePrincipalName",
        spn,
        &["sAMAccountName"],
        10,
    );
    send(conn, &request)?;
    let mut found = Vec::new();
    // Bounded: at most 10 entries (the size limit) plus references and the end.
    for _ in 0..64 {
        match receive(conn, deadline)? {
            LdapOp::SearchEntry { dn } => found.push(dn),
            LdapOp::SearchDone {
                result_code,
                diagnostic,
            } => {
                // 4: sizeLimitExceeded still lists what it found.
                if result_code != ldap::SUCCESS && result_code != 4 {
                    return Err(format!("LDAP search failed (result {result_code}): {diagnostic}"));
                }
                return Ok(found);
            }
            _ => {}
        }
    }
    Err("the LDAP search did not end".into())
}

fn send(conn: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    conn.write_all(bytes).map_err(|e| format!("LDAP send: {e}"))
}

/// One LDAPMessage (at most 1 MiB).
fn receive(conn: &mut TcpStream, deadline: Instant) -> Result<LdapOp, String> {
    if Instant::now() > deadline {
        return Err("LDAP: no answer in time".into());
    }
    let mut head = vec![0u8; 2];
    conn.read_exact(&mut head)
        .map_err(|e| format!("LDAP receive: {e}"))?;
    if head[1] & 0x80 != 0 {
        let n = (head[1] & 0x7f) as usize;
        let mut more = vec![0u8; n.min(4)];
        conn.read_exact(&mut more)
            .map_err(|e| format!("LDAP receive: {e}"))?;
        head.extend(more);
    }
    let total = ldap::element_len(&head)
        .filter(|n| *n <= 1 << 20)
        .ok_or("LDAP: an unreadable message length")?;
    let mut body = vec![0u8; total - head.len()];
    conn.read_exact(&mut body)
        .map_err(|e| format!("LDAP receive: {e}"))?;
    head.extend(body);
    ldap::parse_message(&head)
        .map(|(_, op)| op)
        .ok_or_else(|| "LDAP: a message that does not decode".into())
}
