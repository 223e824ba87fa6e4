//! The few LDAP v3 messages (RFC 4511) hop `spn` needs to find an SPN registered on more than
//! one account: a SASL bind (the GSSAPI mechanism, RFC 4752, whose tokens come from the Kerberos
//! library), a subtree search for `(servicePrincipalName=SPN)`, and their answers. BER with
//! definite lengths, as every LDAP server sends it.

use crate::der::{int, read_tlv, seq, tlv};

/// What one LDAPMessage from the server holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LdapOp {
    BindResponse {
        result_code: i64,
        diagnostic: String,
        /// serverSaslCreds: the next SASL token.
        server_creds: Option<Vec<u8>>,
    },
    SearchEntry {
        dn: String,
    },
    SearchDone {
        result_code: i64,
        diagnostic: String,
    },
    /// A search continuation reference, an intermediate response, a notice...: not used.
    Other,
}

/// resultCode success.
pub const SUCCESS: i64 = 0;
/// resultCode saslBindInProgress: the SASL exchange goes on.
pub const SASL_BIND_IN_PROGRESS: i64 = 14;

fn enumerated(v: i64) -> Vec<u8> {
    let mut e = int(v);
    e[0] = 0x0a;
    e
}

fn message(id: i64, op: &[u8]) -> Vec<u8> {
    seq(&[&int(id), op])
}

/// A SASL bind request (mechanism `mechanism`, optional credentials).
pub fn sasl_bind(id: i64, mechanism: &str, credentials: Option<&[u8]>) -> Vec<u8> {
    let mut sasl = tlv(0x04, mechanism.as_bytes());
    if let Some(c) = credentials {
        sasl.extend(tlv(0x04, c));
    }
    let body = [int(3), tlv(0x04, b""), tlv(0xa3, &sasl)].concat();
    message(id, &tlv(0x60, &body))
}

/// A subtree search under `base` for entries whose `attribute` equals `value`, asking for
/// `wanted` attributes (at most `size_limit` entries).
pub fn search_equal(
    id: i64,
    base: &str,
    attribute: &str,
    value: &str,
    wanted: &[&str],
    size_limit: i64,
) -> Vec<u8> {
    let filter = tlv(
        0xa3,
        &[tlv(0x04, attribute.as_bytes()), tlv(0x04, value.as_bytes())].concat(),
    );
    let attrs: Vec<Vec<u8>> = wanted.iter().map(|a| tlv(0x04, a.as_bytes())).collect();
    let body = [
        tlv(0x04, base.as_bytes()),
        enumerated(2), // wholeSubtree
        enumerated(0), // neverDerefAliases
        int(size_limit),
        int(0),
        tlv(0x01, &[0x00]), // typesOnly FALSE
        filter,
        tlv(0x30, &attrs.concat()),
    ]
    .concat();
    message(id, &tlv(0x63, &body))
}

/// The total length of the BER element that starts with `head` (tag and length bytes), once
/// enough of it is there; `None` while more bytes are needed or for an unusable length.
pub fn element_len(head: &[u8]) -> Option<usize> {
    let first = *head.get(1)?;
    if first < 0x80 {
        return Some(2 + first as usize);
    }
    let n = (first & 0x7f) as usize;
    if n == 0 || n > 4 {
        return None;
    }
    let len = head
        .get(2..2 + n)?
        .iter()
        .fold(0usize, |acc, b| (acc << 8) | *b as usize);
    Some(2 + n + len)
}

/// The message ID and operation of one LDAPMessage.
pub fn parse_message(bytes: &[u8]) -> Option<(i64, LdapOp)> {
    let (tag, body, _) = read_tlv(bytes)?;
    if tag != 0x30 {
        return None;
    }
    let (id_tag, id, rest) = read_tlv(body)?;
    if id_tag != 0x02 || id.is_empty() || id.len() > 4 {
        return None;
    }
    let id = id.iter().fold(0i64, |acc, b| (acc << 8) | *b as i64);
    let (op_tag, op, _) = read_tlv(rest)?;
    let op = match op_tag {
        0x61 => {
            let (result_code, diagnostic, after) = ldap_result(op)?;
            let mut server_creds = None;
            let mut more = after;
            while !more.is_empty() {
                let (t, v, r) = read_tlv(more)?;
                if t == 0x87 {
                    server_creds = Some(v.to_vec());
                }
                more = r;
            }
            LdapOp::BindResponse {
                result_code,
                diagnostic,
                server_creds,
            }
        }
        0x64 => {
            let (t, dn, _) = read_tlv(op)?;
            if t != 0x04 {
                return None;
            }
            LdapOp::SearchEntry {
                dn: String::from_utf8_lossy(dn).into_owned(),
            }
        }
        0x65 => {
            let (result_code, diagnostic, _) = ldap_result(op)?;
            LdapOp::SearchDone {
                result_code,
                diagnostic,
            }
        }
        _ => LdapOp::Other,
    };
    Some((id, op))
}

/// LDAPResult's resultCode and diagnosticMessage, and what follows them.
fn ldap_result(body: &[u8]) -> Option<(i64, String, &[u8])> {
    let (t, code, rest) = read_tlv(body)?;
    if t != 0x0a || code.is_empty() || code.len() > 4 {
        return None;
    }
    let code = code.iter().fold(0i64, |acc, b| (acc << 8) | *b as i64);
    let (t, _matched, rest) = read_tlv(rest)?;
    if t != 0x04 {
        return None;
    }
    let (t, diagnostic, rest) = read_tlv(rest)?;
    if t != 0x04 {
        return None;
    }
    Some((code, String::from_utf8_lossy(diagnostic).into_owned(), rest))
}

/// The domain's naming context for a realm: `DTC.TEST` -> `DC=dtc,DC=test`.
pub fn domain_dn(realm: &str) -> String {
    realm
        .split('.')
        .filter(|p| !p.is_empty())
        .map(|p| format!("DC={}", p.to_ascii_lowercase()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::der::tlv;

    #[test]
    fn bind_and_search_requests_frame_themselves() {
        let bind = sasl_bind(1, "GSSAPI", Some(&[1, 2, 3]));
        assert_eq!(element_len(&bind), Some(bind.len()));
        let search = search_equal(
            2,
            "DC=dtc,DC=test",
            "servicePrincipalName",
            "MSSQLSvc/sql.dtc.test:1433",
            &["sAMAccountName"],
            10,
        );
        assert_eq!(element_len(&search[..6]), Some(search.len()));
        let (_, body, _) = read_tlv(&search).unwrap();
        let (_, _, op) = read_tlv(body).unwrap();
        assert_eq!(op[0], 0x63);
    }

    #[test]
    fn reads_bind_responses_and_search_results() {
        // As a server sends them: BindResponse saslBindInProgress with a token.
        let result = [
            enumerated(14),
            tlv(0x04, b""),
            tlv(0x04, b""),
            tlv(0x87, &[9, 9]),
        ]
        .concat();
        let msg = message(1, &tlv(0x61, &result));
        assert_eq!(
            parse_message(&msg),
            Some((
                1,
                LdapOp::BindResponse {
                    result_code: 14,
                    diagnostic: String::new(),
                    server_creds: Some(vec![9, 9])
                }
            ))
        );
        let entry = message(
            2,
            &tlv(0x64, &[tlv(0x04, b"CN=a,DC=x"), tlv(0x30, b"")].concat()),
        );
        assert_eq!(
            parse_message(&entry).unwrap().1,
            LdapOp::SearchEntry {
                dn: "CN=a,DC=x".into()
            }
        );
        let done = message(
            2,
            &tlv(
                0x65,
                &[enumerated(0), tlv(0x04, b""), tlv(0x04, b"")].concat(),
            ),
        );
        assert!(matches!(
            parse_message(&done).unwrap().1,
            LdapOp::SearchDone { result_code: 0, .. }
        ));
        assert_eq!(domain_dn("DTC.TEST"), "DC=dtc,DC=test");
        for junk in [&[][..], &[0x30, 0x03, 0x02, 0x01], &[0x30, 0x84, 0xff]] {
            assert_eq!(parse_message(junk), None);
        }
    }
}
