//! Hop `spn`'s request and its answers, apart from the hop (mod.rs): the GSS-API side
//! (gssapi.rs) reads and builds them, and the hop runs that side, so they live here.

use crate::secret::Secret;

/// What to ask a ticket for, and as whom.
#[derive(Debug, Clone)]
pub struct SpnRequest {
    /// The SQL Server's name as the client connects to it (the SPN's host part).
    pub host: String,
    pub port: u16,
    pub instance: Option<String>,
    pub realm: String,
    /// `user`, `user@REALM` or `DOMAIN\user`; `None`: the credential cache (`KRB5CCNAME`).
    pub user: Option<String>,
    pub password: Option<Secret>,
    /// A domain controller whose LDAP answered (host, address): where to look for an SPN on
    /// two accounts. `None`: not looked for.
    pub ldap: Option<(String, std::net::IpAddr)>,
    /// Where to keep the credentials a password gave (a `MEMORY:` cache of this process), so
    /// the login can use them; `None`: not kept.
    pub keep_in: Option<String>,
}

impl SpnRequest {
    /// The SPNs the drivers try, in their order.
    pub fn spns(&self) -> Vec<String> {
        let mut spns = vec![format!("MSSQLSvc/{}:{}", self.host, self.port)];
        if let Some(instance) = &self.instance {
            spns.push(format!("MSSQLSvc/{}:{instance}", self.host));
        }
        spns
    }

    /// The client principal `user@REALM` (a `DOMAIN\user` keeps only the user).
    pub fn client_principal(&self) -> Option<String> {
        let user = self.user.as_deref()?;
        let user = user.rsplit('\\').next().unwrap_or(user);
        Some(if user.contains('@') {
            user.to_string()
        } else {
            format!("{user}@{}", self.realm)
        })
    }
}

/// A service ticket obtained: the SPN it is for, its encryption type, and the initial context
/// token (an AP-REQ) that carries it.
#[derive(Debug, Clone)]
pub struct Ticket {
    pub spn: String,
    pub enctype: Option<i32>,
    pub token: Vec<u8>,
    /// The credential cache the password's credentials were stored in (`keep_in`).
    pub ccache: Option<String>,
}

/// Why no ticket came: a Kerberos protocol error (RFC 4120 number) or a library failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketError {
    /// The RFC 4120 error number when the failure is one (7: S_PRINCIPAL_UNKNOWN, 37: SKEW...).
    pub krb_code: Option<i32>,
    /// The library's own message.
    pub message: String,
    /// The failure is the client's credentials (password, cache), not the SPN.
    pub credentials: bool,
}
