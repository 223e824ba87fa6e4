//! Windows' SSPI as a Kerberos / Negotiate client (Windows build only): hop `spn`'s ticket and
//! the `auth=kerberos` / `auth=negotiate` login's token exchange
//! (crate::hops::mssql::enlist::session).
//!
//! Credentials are the logged-on user's (AcquireCredentialsHandleW with no identity), or the
//! given user and password (SEC_WINNT_AUTH_IDENTITY_W; SSPI then asks the KDC for a TGT itself).
//! The first InitializeSecurityContextW towards `MSSQLSvc/<fqdn>:<port>` makes the package fetch
//! the service ticket, so its status is the KDC's verdict on the SPN ([`super::sspi_status`]).
//! The ticket's encryption type is read from the AP-REQ the package built, as on Linux (the
//! ticket carries it in clear); SSPI itself reports only the session key's algorithm
//! (SECPKG_ATTR_KEY_INFO), and only once the context is complete, which needs the server's
//! AP-REP: hop `spn` never has one.
//!
//! Confirmed only on a real Windows host (docs/kerberos.md says what ran under wine).

use std::ptr;

use windows_sys::Win32::Security::Authentication::Identity::{
    AcquireCredentialsHandleW, DeleteSecurityContext, FreeContextBuffer, FreeCredentialsHandle,
    InitializeSecurityContextW, QueryContextAttributesW, SecBuffer, SecBufferDesc,
    SecPkgContext_NegotiationInfoW, SecPkgContext_PackageInfoW, SecPkgInfoW, ISC_REQ_MUTUAL_AUTH,
    SECBUFFER_TOKEN, SECBUFFER_VERSION, SECPKG_ATTR_NEGOTIATION_INFO, SECPKG_ATTR_PACKAGE_INFO,
    SECPKG_CRED_OUTBOUND, SECURITY_NATIVE_DREP,
};
use windows_sys::Win32::Security::Credentials::SecHandle;
use windows_sys::Win32::System::Rpc::{SEC_WINNT_AUTH_IDENTITY_UNICODE, SEC_WINNT_AUTH_IDENTITY_W};

use super::request::{SpnRequest, Ticket, TicketError};
use super::sspi_status::{self, SEC_E_OK, SEC_I_CONTINUE_NEEDED};

/// The largest token a step may produce (see [`Client::step`]).
const MAX_TOKEN: usize = 64 * 1024;

/// The SSPI package asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// Kerberos only (`auth=kerberos`, hop `spn`).
    Kerberos,
    /// Kerberos, else NTLM, as the package decides (`auth=negotiate`: a driver's
    /// `Integrated Security=SSPI`).
    Negotiate,
}

impl Package {
    fn name(self) -> &'static str {
        match self {
            Package::Kerberos => "Kerberos",
            Package::Negotiate => "Negotiate",
        }
    }
}

/// A failed SSPI call: which, and its status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SspiError {
    pub call: &'static str,
    pub status: u32,
}

impl std::fmt::Display for SspiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&sspi_status::describe(self.status, self.call))
    }
}

impl std::error::Error for SspiError {}

/// Explicit credentials: UTF-16 without terminator, as SEC_WINNT_AUTH_IDENTITY_W takes them.
/// The password's copy is overwritten when dropped.
pub struct Identity {
    user: Vec<u16>,
    domain: Vec<u16>,
    password: Vec<u16>,
}

impl Identity {
    /// `user` as dtcprobe takes it (`DOMAIN\user`, `user@REALM`, `user`), the realm for a plain
    /// user, and the password.
    pub fn new(user: &str, realm: &str, password: &str) -> Identity {
        let (user, domain) = sspi_status::identity_parts(user, realm);
        Identity {
            user: user.encode_utf16().collect(),
            domain: domain.encode_utf16().collect(),
            password: password.encode_utf16().collect(),
        }
    }
}

impl Drop for Identity {
    fn drop(&mut self) {
        for c in self.password.iter_mut() {
            // SAFETY: a plain write through a valid &mut; volatile so it is not elided.
            unsafe { ptr::write_volatile(c, 0) };
        }
    }
}

/// One client security context towards one SPN.
pub struct Client {
    cred: SecHandle,
    ctx: Option<SecHandle>,
    target: Vec<u16>,
}

// SAFETY: SSPI handles are process-wide values, usable from any thread (not concurrently: the
// client is used through &mut only).
unsafe impl Send for Client {}

impl Client {
    /// Credentials for `package` (the logged-on user's when `identity` is `None`) and a context
    /// towards `spn` to be stepped.
    pub fn new(
        package: Package,
        identity: Option<&Identity>,
        spn: &str,
    ) -> Result<Client, SspiError> {
        let package_name: Vec<u16> = package.name().encode_utf16().chain(Some(0)).collect();
        let mut auth = identity.map(|id| SEC_WINNT_AUTH_IDENTITY_W {
            User: id.user.as_ptr() as *mut u16,
            UserLength: id.user.len() as u32,
            Domain: id.domain.as_ptr() as *mut u16,
            DomainLength: id.domain.len() as u32,
            Password: id.password.as_ptr() as *mut u16,
            PasswordLength: id.password.len() as u32,
            Flags: SEC_WINNT_AUTH_IDENTITY_UNICODE,
        });
        let auth_ptr = auth.as_mut().map_or(ptr::null(), |a| {
            a as *mut SEC_WINNT_AUTH_IDENTITY_W as *const _
        });
        let mut cred = SecHandle::default();
        let mut expiry = 0i64;
        // SAFETY: NUL-terminated package name; `auth` (borrowing `identity`) outlives the call;
        // out-pointers to locals.
        let status = unsafe {
            AcquireCredentialsHandleW(
                ptr::null(),
                package_name.as_ptr(),
                SECPKG_CRED_OUTBOUND,
                ptr::null(),
                auth_ptr,
                None,
                ptr::null(),
                &mut cred,
                &mut expiry,
            )
        } as u32;
        if status != SEC_E_OK {
            return Err(SspiError {
                call: "AcquireCredentialsHandleW",
                status,
            });
        }
        Ok(Client {
            cred,
            ctx: None,
            target: spn.encode_utf16().chain(Some(0)).collect(),
        })
    }

    /// The next token to send, given the server's last one (`None` at the start); `Ok(None)`:
    /// the context is complete and there is nothing more to send.
    pub fn step(&mut self, input: Option<&[u8]>) -> Result<Option<Vec<u8>>, SspiError> {
        let mut in_buf = SecBuffer {
            cbBuffer: input.map_or(0, |b| b.len() as u32),
            BufferType: SECBUFFER_TOKEN,
            pvBuffer: input.map_or(ptr::null_mut(), |b| b.as_ptr() as *mut _),
        };
        let in_desc = SecBufferDesc {
            ulVersion: SECBUFFER_VERSION,
            cBuffers: 1,
            pBuffers: &mut in_buf,
        };
        // A buffer of our own rather than ISC_REQ_ALLOCATE_MEMORY: wine's Kerberos package
        // ignores that flag ("flags 0x100 not supported") and then finds no room for the
        // AP-REQ; Windows takes either. 64 KiB is above any package's cbMaxToken (Kerberos:
        // MaxTokenSize, 48000 by default, 65535 at most).
        let mut out_bytes = vec![0u8; MAX_TOKEN];
        let mut out_buf = SecBuffer {
            cbBuffer: out_bytes.len() as u32,
            BufferType: SECBUFFER_TOKEN,
            pvBuffer: out_bytes.as_mut_ptr() as *mut _,
        };
        let mut out_desc = SecBufferDesc {
            ulVersion: SECBUFFER_VERSION,
            cBuffers: 1,
            pBuffers: &mut out_buf,
        };
        let mut new_ctx = SecHandle::default();
        let mut attrs = 0u32;
        let mut expiry = 0i64;
        let old_ctx = self.ctx.as_ref().map_or(ptr::null(), |c| c as *const _);
        // SAFETY: handles from this client; the input buffer borrows `input` and the output one
        // `out_bytes` for the call.
        let status = unsafe {
            InitializeSecurityContextW(
                &self.cred,
                old_ctx,
                self.target.as_ptr(),
                ISC_REQ_MUTUAL_AUTH,
                0,
                SECURITY_NATIVE_DREP,
                if input.is_some() {
                    &in_desc
                } else {
                    ptr::null()
                },
                0,
                &mut new_ctx,
                &mut out_desc,
                &mut attrs,
                &mut expiry,
            )
        } as u32;
        out_bytes.truncate((out_buf.cbBuffer as usize).min(MAX_TOKEN));
        let token = Some(out_bytes).filter(|b| !b.is_empty());
        match status {
            SEC_E_OK | SEC_I_CONTINUE_NEEDED => {
                if self.ctx.is_none() {
                    self.ctx = Some(new_ctx);
                }
                Ok(token)
            }
            status => Err(SspiError {
                call: "InitializeSecurityContextW",
                status,
            }),
        }
    }

    /// The package the context runs on: Negotiate's choice (SECPKG_ATTR_NEGOTIATION_INFO),
    /// else the context's own package (SECPKG_ATTR_PACKAGE_INFO). `None` before the first step
    /// or when the package answers neither.
    pub fn package(&self) -> Option<String> {
        let ctx = self.ctx.as_ref()?;
        let mut nego = SecPkgContext_NegotiationInfoW::default();
        // SAFETY: a live context; the package allocates PackageInfo, freed after reading.
        let status = unsafe {
            QueryContextAttributesW(
                ctx,
                SECPKG_ATTR_NEGOTIATION_INFO,
                &mut nego as *mut _ as *mut _,
            )
        } as u32;
        if status == SEC_E_OK && !nego.PackageInfo.is_null() {
            return unsafe { take_package_name(nego.PackageInfo) };
        }
        let mut info = SecPkgContext_PackageInfoW::default();
        // SAFETY: as above.
        let status = unsafe {
            QueryContextAttributesW(ctx, SECPKG_ATTR_PACKAGE_INFO, &mut info as *mut _ as *mut _)
        } as u32;
        if status == SEC_E_OK && !info.PackageInfo.is_null() {
            return unsafe { take_package_name(info.PackageInfo) };
        }
        None
    }
}

/// Reads a SecPkgInfoW's name and frees the structure (it came from the package).
///
/// # Safety
/// `info` is a SecPkgInfoW the package allocated, not used afterwards.
unsafe fn take_package_name(info: *mut SecPkgInfoW) -> Option<String> {
    let name_ptr = (*info).Name;
    let name = if name_ptr.is_null() {
        None
    } else {
        let len = (0..).take_while(|&i| *name_ptr.add(i) != 0).count();
        Some(String::from_utf16_lossy(std::slice::from_raw_parts(
            name_ptr, len,
        )))
    };
    FreeContextBuffer(info as *mut _);
    name
}

impl Drop for Client {
    fn drop(&mut self) {
        // SAFETY: handles this client acquired, released once.
        unsafe {
            if let Some(ctx) = &self.ctx {
                DeleteSecurityContext(ctx);
            }
            FreeCredentialsHandle(&self.cred);
        }
    }
}

/// Hop `spn`'s ticket: the Kerberos package's first token towards `spn`, an AP-REQ.
pub fn ticket(req: &SpnRequest, spn: &str) -> Result<Ticket, TicketError> {
    let identity = match (&req.user, &req.password) {
        (Some(user), Some(password)) => Some(Identity::new(user, &req.realm, password.expose())),
        _ => None,
    };
    let mut client = Client::new(Package::Kerberos, identity.as_ref(), spn)
        .map_err(|e| sspi_status::ticket_error(e.status, e.call, true))?;
    match client.step(None) {
        Ok(Some(token)) => Ok(Ticket {
            spn: spn.to_string(),
            enctype: dtcprobe_wire::kerberos::ticket_enctype(&token),
            token,
            ccache: None,
        }),
        Ok(None) => Err(TicketError {
            krb_code: None,
            message: "the Kerberos package produced no token".into(),
            credentials: false,
        }),
        Err(e) => Err(sspi_status::ticket_error(e.status, e.call, false)),
    }
}

/// Asks for a ticket with the given (or the logged-on user's) credentials. Used by the opt-in
/// test for a real Windows host and by the wine test (src/hops/spn/mod.rs).
#[cfg(test)]
pub(super) fn ticket_for_test(
    user: Option<&str>,
    realm: &str,
    password: Option<&str>,
    spn: &str,
) -> Result<Ticket, TicketError> {
    let req = SpnRequest {
        host: String::new(),
        port: 0,
        instance: None,
        realm: realm.to_string(),
        user: user.map(str::to_string),
        password: password.map(|p| crate::secret::Secret::new(p.to_string())),
        ldap: None,
        keep_in: None,
    };
    ticket(&req, spn)
}
