//! What Windows' SSPI says when it cannot get a ticket, in hop `spn`'s terms (pure, built on
//! every platform so the mapping is unit-tested on Linux too; the SSPI calls are in
//! [`super::sspi`], Windows only).
//!
//! SSPI does not hand out the KDC's RFC 4120 error number: its Kerberos package turns the KDC's
//! answer into an `SEC_E_*` status. The ones with one Kerberos error behind them get that number,
//! so the hop draws the same causes as on Linux (`spn_missing` for `SEC_E_TARGET_UNKNOWN`, which
//! is what Windows makes of KDC_ERR_S_PRINCIPAL_UNKNOWN; `clock_skew` for `SEC_E_TIME_SKEW`,
//! KRB_AP_ERR_SKEW); the client's own credentials are `auth_failed`; the rest is `kdc_error`
//! naming the status.

use super::request::TicketError;

/// An `SEC_E_*` / `SEC_I_*` status (an HRESULT) and what the hop makes of it.
struct Known {
    status: u32,
    name: &'static str,
    /// The RFC 4120 error the status stands for, when it stands for exactly one.
    krb_code: Option<i32>,
    /// The client's own credentials (password, account), not the SPN.
    credentials: bool,
    meaning: &'static str,
}

const fn known(
    status: u32,
    name: &'static str,
    krb_code: Option<i32>,
    credentials: bool,
    meaning: &'static str,
) -> Known {
    Known {
        status,
        name,
        krb_code,
        credentials,
        meaning,
    }
}

pub const SEC_E_OK: u32 = 0;
pub const SEC_I_CONTINUE_NEEDED: u32 = 0x0009_0312;
pub const SEC_E_TARGET_UNKNOWN: u32 = 0x8009_0303;
pub const SEC_E_TIME_SKEW: u32 = 0x8009_0324;
pub const SEC_E_LOGON_DENIED: u32 = 0x8009_030C;
pub const SEC_E_NO_AUTHENTICATING_AUTHORITY: u32 = 0x8009_0311;

/// The statuses a ticket request (InitializeSecurityContextW with the Kerberos package) or its
/// credentials (AcquireCredentialsHandleW) end with, from winerror.h.
const KNOWN: &[Known] = &[
    known(
        SEC_E_TARGET_UNKNOWN,
        "SEC_E_TARGET_UNKNOWN",
        Some(7),
        false,
        "the KDC knows no account with this SPN",
    ),
    known(
        SEC_E_TIME_SKEW,
        "SEC_E_TIME_SKEW",
        Some(37),
        false,
        "this host's clock and the KDC's differ by more than the domain allows",
    ),
    known(
        0x8009_0342,
        "SEC_E_KDC_UNKNOWN_ETYPE",
        Some(14),
        false,
        "no encryption type both sides support",
    ),
    known(
        0x8009_0343,
        "SEC_E_UNSUPPORTED_PREAUTH",
        Some(16),
        false,
        "the KDC does not support the pre-authentication offered",
    ),
    known(
        0x8009_0340,
        "SEC_E_KDC_INVALID_REQUEST",
        None,
        false,
        "the KDC refused the request as invalid",
    ),
    known(
        0x8009_0341,
        "SEC_E_KDC_UNABLE_TO_REFER",
        None,
        false,
        "the KDC cannot refer the request to the SPN's realm (no trust path)",
    ),
    known(
        0x8009_0338,
        "SEC_E_MAX_REFERRALS_EXCEEDED",
        None,
        false,
        "too many cross-realm referrals",
    ),
    known(
        SEC_E_NO_AUTHENTICATING_AUTHORITY,
        "SEC_E_NO_AUTHENTICATING_AUTHORITY",
        None,
        false,
        "no KDC of the domain could be contacted",
    ),
    known(
        0x8009_0322,
        "SEC_E_WRONG_PRINCIPAL",
        None,
        false,
        "the ticket names another principal than the one asked for",
    ),
    known(
        SEC_E_LOGON_DENIED,
        "SEC_E_LOGON_DENIED",
        None,
        true,
        "the KDC refused the user's password or account",
    ),
    known(
        0x8009_030E,
        "SEC_E_NO_CREDENTIALS",
        None,
        true,
        "no credentials for the package (no domain logon, or no TGT)",
    ),
    known(
        0x8009_030D,
        "SEC_E_UNKNOWN_CREDENTIALS",
        None,
        true,
        "the credentials given are not recognised",
    ),
    known(
        0x8009_0305,
        "SEC_E_SECPKG_NOT_FOUND",
        None,
        false,
        "this host has no such security package",
    ),
    known(
        0x8009_035F,
        "SEC_E_POLICY_NLTM_ONLY",
        None,
        false,
        "policy allows only NTLM for this target",
    ),
    known(
        0x8009_0350,
        "SEC_E_DOWNGRADE_DETECTED",
        None,
        false,
        "a downgrade of the negotiation was detected",
    ),
    known(
        0x8009_0304,
        "SEC_E_INTERNAL_ERROR",
        None,
        false,
        "the security package failed internally",
    ),
    known(
        0x8009_0302,
        "SEC_E_UNSUPPORTED_FUNCTION",
        None,
        false,
        "the package does not support this call",
    ),
    known(
        0x8009_0308,
        "SEC_E_INVALID_TOKEN",
        None,
        false,
        "the token received is not valid for the package",
    ),
    known(
        0x8009_0318,
        "SEC_E_INCOMPLETE_MESSAGE",
        None,
        false,
        "the token is incomplete (or the output buffer was too small)",
    ),
    known(
        0x8009_0321,
        "SEC_E_BUFFER_TOO_SMALL",
        None,
        false,
        "the output buffer was too small for the token",
    ),
    known(
        0x8009_0363,
        "SEC_E_MUTUAL_AUTH_FAILED",
        None,
        false,
        "the server did not prove its identity",
    ),
    known(
        0x0009_0313,
        "SEC_I_COMPLETE_NEEDED",
        None,
        false,
        "the package asks for CompleteAuthToken, which no Kerberos/NTLM client step needs",
    ),
    known(
        0x0009_0314,
        "SEC_I_COMPLETE_AND_CONTINUE",
        None,
        false,
        "the package asks for CompleteAuthToken, which no Kerberos/NTLM client step needs",
    ),
];

fn lookup(status: u32) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.status == status)
}

/// `SEC_E_TARGET_UNKNOWN (0x80090303)`, or the number alone for a status not listed.
pub fn status_name(status: u32) -> String {
    match lookup(status) {
        Some(k) => format!("{} (0x{status:08X})", k.name),
        None => format!("SSPI status 0x{status:08X}"),
    }
}

/// `status_name` and what the status means, for a hop's detail.
pub fn describe(status: u32, call: &str) -> String {
    match lookup(status) {
        Some(k) => format!("{call}: {}: {}", status_name(status), k.meaning),
        None => format!("{call}: {}", status_name(status)),
    }
}

/// Hop `spn`'s error for a failed SSPI call (`call` names it, e.g. `InitializeSecurityContextW`).
/// A failure to acquire credentials is always the client's (`credentials`).
pub fn ticket_error(status: u32, call: &str, acquiring: bool) -> TicketError {
    let k = lookup(status);
    TicketError {
        krb_code: k.and_then(|k| k.krb_code),
        message: describe(status, call),
        credentials: acquiring || k.is_some_and(|k| k.credentials),
    }
}

/// The scheme a Negotiate exchange ended with (`data.auth_scheme`), from the package name SSPI
/// reports (SECPKG_ATTR_NEGOTIATION_INFO / SECPKG_ATTR_PACKAGE_INFO): `Kerberos` is kerberos,
/// `NTLM` ntlm; anything else (a package this tool does not know) in lower case.
pub fn scheme_of_package(package: &str) -> String {
    match package.to_ascii_lowercase().as_str() {
        "kerberos" => "kerberos".into(),
        "ntlm" => "ntlm".into(),
        other => other.to_string(),
    }
}

/// The user and domain of SSPI's explicit credentials (SEC_WINNT_AUTH_IDENTITY_W) for a
/// dtcprobe user: `DOMAIN\user` splits, `user@REALM` goes whole as a UPN with no domain (SSPI
/// takes UPNs so), a plain `user` gets the realm as its domain.
pub fn identity_parts(user: &str, realm: &str) -> (String, String) {
    if let Some((domain, name)) = user.split_once('\\') {
        return (name.to_string(), domain.to_string());
    }
    if user.contains('@') {
        return (user.to_string(), String::new());
    }
    (user.to_string(), realm.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sspi_statuses_become_the_linux_causes_numbers() {
        let missing = ticket_error(SEC_E_TARGET_UNKNOWN, "InitializeSecurityContextW", false);
        assert_eq!(missing.krb_code, Some(7));
        assert!(!missing.credentials);
        assert!(
            missing
                .message
                .contains("SEC_E_TARGET_UNKNOWN (0x80090303)"),
            "{}",
            missing.message
        );
        assert_eq!(ticket_error(SEC_E_TIME_SKEW, "x", false).krb_code, Some(37));
        let denied = ticket_error(SEC_E_LOGON_DENIED, "x", false);
        assert_eq!((denied.krb_code, denied.credentials), (None, true));
        let no_kdc = ticket_error(SEC_E_NO_AUTHENTICATING_AUTHORITY, "x", false);
        assert_eq!((no_kdc.krb_code, no_kdc.credentials), (None, false));
        assert!(no_kdc.message.contains("no KDC"), "{}", no_kdc.message);
        // Whatever AcquireCredentialsHandleW says is about the client's credentials.
        assert!(ticket_error(0x8009_0304, "AcquireCredentialsHandleW", true).credentials);
        // An unlisted status is named by its number.
        let odd = ticket_error(0x8009_0999, "x", false);
        assert_eq!(odd.krb_code, None);
        assert!(odd.message.contains("0x80090999"), "{}", odd.message);
    }

    #[test]
    fn the_status_table_has_no_duplicates() {
        for (i, a) in KNOWN.iter().enumerate() {
            for b in &KNOWN[i + 1..] {
                assert_ne!(a.status, b.status, "{} and {}", a.name, b.name);
            }
        }
    }

    #[test]
    fn packages_become_schemes() {
        assert_eq!(scheme_of_package("Kerberos"), "kerberos");
        assert_eq!(scheme_of_package("NTLM"), "ntlm");
        assert_eq!(scheme_of_package("CREDSSP"), "credssp");
    }

    #[test]
    fn explicit_credentials_split_as_sspi_takes_them() {
        assert_eq!(
            identity_parts("CORP\\probe", "CORP.EXAMPLE"),
            ("probe".into(), "CORP".into())
        );
        assert_eq!(
            identity_parts("probe@CORP.EXAMPLE", "X"),
            ("probe@CORP.EXAMPLE".into(), String::new())
        );
        assert_eq!(
            identity_parts("probe", "CORP.EXAMPLE"),
            ("probe".into(), "CORP.EXAMPLE".into())
        );
    }
}
