//! Kerberos in the TDS test peer: a LOGIN7 whose SSPI token is a Kerberos AP-REQ (a GSS-API
//! initial context token, what a client using Kerberos sends) is accepted through MIT krb5's
//! GSS-API with the service account's keytab, exported from the test domain controller
//! (support/samba_ad.rs): the ticket is decrypted with the account's key, so only a ticket the
//! KDC really issued for the SPN gets in. The AP-REP (mutual authentication) goes back as an SSPI
//! token; the client principal is the login's user.
//!
//! The keytab is registered once for the whole test process
//! (`krb5_gss_register_acceptor_identity`): every test's domain controller is a copy of one
//! provisioned template, so the service account's keys, and the template's keytab file, are the
//! same for all of them.

#[cfg(feature = "kerberos")]
use std::ffi::CString;
use std::path::Path;
#[cfg(feature = "kerberos")]
use std::sync::OnceLock;

#[cfg(feature = "kerberos")]
use libgssapi::context::{SecurityContext, ServerCtx};

/// What the exchange concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The client principal (`user@REALM`) proved its ticket.
    #[cfg_attr(not(feature = "kerberos"), allow(dead_code))]
    Authenticated(String),
    /// Why not.
    Refused(String),
}

/// Whether an SSPI token is a Kerberos one: a GSS-API initial context token (0x60) for the
/// Kerberos mechanism, or SPNEGO (which the peer does not unwrap).
pub fn is_kerberos(token: &[u8]) -> bool {
    const KRB5_OID: &[u8] = &[
        0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02,
    ];
    token.first() == Some(&0x60) && token.windows(KRB5_OID.len()).any(|w| w == KRB5_OID)
}

#[cfg(feature = "kerberos")]
extern "C" {
    // MIT krb5 (libgssapi_krb5, linked through libgssapi): the keytab the acceptor uses.
    fn krb5_gss_register_acceptor_identity(keytab: *const std::os::raw::c_char) -> u32;
}

#[cfg(feature = "kerberos")]
fn register_keytab(keytab: &Path) -> Result<(), String> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let path = CString::new(keytab.display().to_string()).map_err(|e| e.to_string())?;
            // SAFETY: a NUL-terminated path; MIT copies it into its own global.
            let major = unsafe { krb5_gss_register_acceptor_identity(path.as_ptr()) };
            if major == 0 {
                Ok(())
            } else {
                Err(format!(
                    "krb5_gss_register_acceptor_identity: major {major:#x}"
                ))
            }
        })
        .clone()
}

/// Accepts an AP-REQ: the outcome and the token to send back (the AP-REP), if any.
#[cfg(feature = "kerberos")]
pub fn accept(token: &[u8], keytab: &Path) -> (Outcome, Option<Vec<u8>>) {
    if let Err(e) = register_keytab(keytab) {
        return (Outcome::Refused(e), None);
    }
    let mut ctx = ServerCtx::new(None);
    match ctx.step(token, None) {
        Ok(reply) => {
            let reply = reply.map(|b| b.to_vec());
            match ctx.source_name() {
                Ok(name) => (Outcome::Authenticated(name.to_string()), reply),
                Err(e) => (Outcome::Refused(format!("no client name: {e}")), reply),
            }
        }
        Err(e) => (Outcome::Refused(e.to_string()), None),
    }
}

/// Built without the `kerberos` feature the peer links no GSS-API: every AP-REQ is refused.
#[cfg(not(feature = "kerberos"))]
pub fn accept(_token: &[u8], _keytab: &Path) -> (Outcome, Option<Vec<u8>>) {
    (
        Outcome::Refused("this test peer was built without the `kerberos` feature".into()),
        None,
    )
}

/// The server side of a Kerberos login inside TDS: accept the LOGIN7's AP-REQ, send the AP-REP
/// back as an SSPI token (0xED), and take the client's closing message if it sends one
/// (tiberius sends an empty one after the AP-REP; Microsoft's drivers send none, so it is
/// waited for briefly). The outcome in NTLM's terms for the login's bookkeeping; the event
/// [`super::Event::Kerberos`] says which scheme was seen.
pub(super) async fn kerberos_exchange(
    conn: &mut super::Conn,
    token: &[u8],
    keytab: &Path,
    events: &std::sync::Mutex<Vec<super::Event>>,
) -> std::io::Result<super::ntlm::Outcome> {
    let (outcome, reply) = accept(token, keytab);
    events
        .lock()
        .unwrap()
        .push(super::Event::Kerberos(outcome.clone()));
    if let (Outcome::Authenticated(_), Some(reply)) = (&outcome, reply) {
        let mut r = vec![0xED];
        r.extend_from_slice(&(reply.len() as u16).to_le_bytes());
        r.extend(reply);
        conn.write_message(super::PKT_REPLY, &r).await?;
        let _ =
            tokio::time::timeout(std::time::Duration::from_millis(500), conn.read_message()).await;
    }
    Ok(match outcome {
        Outcome::Authenticated(name) => super::ntlm::Outcome::Authenticated(name),
        Outcome::Refused(why) => super::ntlm::Outcome::Refused(why),
    })
}
