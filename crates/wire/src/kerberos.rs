//! The few Kerberos V5 messages (RFC 4120) dtcprobe reads or writes itself, in DER:
//!
//! - an AS-REQ without pre-authentication, the probe of hop `kdc`: a KDC answers it (with
//!   KDC_ERR_PREAUTH_REQUIRED for a real account, KDC_ERR_C_PRINCIPAL_UNKNOWN otherwise) over UDP
//!   and TCP alike, so an answer proves the KDC service is reachable, and the KRB-ERROR's `stime`
//!   is the KDC's clock (the clock-skew measurement: MIT krb5 silently compensates for skew, so
//!   its own calls cannot tell);
//! - the KRB-ERROR answer;
//! - the ticket's encryption type inside a GSS-API Kerberos token (an AP-REQ), which the ticket
//!   carries in clear: the session key's type is what GSS-API reports, not the ticket's.
//!
//! No I/O and no clock: times come in and go out as seconds since the Unix epoch.

use crate::der::{ctx, field, fields, int, parse_int, read_tlv, seq, seq_body, tlv};

/// RFC 4120 message types (the APPLICATION tag numbers).
const AS_REQ: u8 = 10;
const AS_REP: u8 = 11;
const AP_REQ: u8 = 14;
const KRB_ERROR: u8 = 30;

/// The Kerberos V5 GSS-API mechanism, 1.2.840.113554.1.2.2, DER-encoded (RFC 1964).
const KRB5_MECH_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x12, 0x01, 0x02, 0x02];

/// What a KDC answered a probe with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KdcAnswer {
    /// A KRB-ERROR: the error code and the KDC's time (seconds since the epoch, microseconds).
    Error { code: i32, stime: i64, susec: u32 },
    /// An AS-REP (an account without pre-authentication).
    AsRep,
}

/// An AS-REQ for `client@realm` asking for `krbtgt/realm`, without pre-authentication, for the
/// AES and RC4 encryption types. `nonce` makes each probe's answer its own.
pub fn as_req(client: &str, realm: &str, nonce: u32) -> Vec<u8> {
    let principal = |name_type: u8, parts: &[&str]| {
        let names: Vec<Vec<u8>> = parts.iter().map(|p| tlv(0x1b, p.as_bytes())).collect();
        seq(&[
            &ctx(0, &int(name_type as i64)),
            &ctx(
                1,
                &seq(&names.iter().map(Vec::as_slice).collect::<Vec<_>>()),
            ),
        ])
    };
    // NT-PRINCIPAL (1) for the client, NT-SRV-INST (2) for krbtgt/REALM.
    let cname = principal(1, &[client]);
    let sname = principal(2, &["krbtgt", realm]);
    // KDCOptions: forwardable, renewable-ok off; a 32-bit BIT STRING with no unused bits.
    let kdc_options = tlv(0x03, &[0x00, 0x40, 0x00, 0x00, 0x00]);
    let till = tlv(0x18, b"20370913024805Z");
    // aes256-cts-hmac-sha1-96, aes128-cts-hmac-sha1-96, rc4-hmac.
    let etypes = seq(&[&int(18), &int(17), &int(23)]);
    let body = seq(&[
        &ctx(0, &kdc_options),
        &ctx(1, &cname),
        &ctx(2, &tlv(0x1b, realm.as_bytes())),
        &ctx(3, &sname),
        &ctx(5, &till),
        &ctx(7, &int(nonce as i64)),
        &ctx(8, &etypes),
    ]);
    let req = seq(&[
        &ctx(1, &int(5)),
        &ctx(2, &int(AS_REQ as i64)),
        &ctx(4, &body),
    ]);
    tlv(0x60 | AS_REQ, &req)
}

/// The 4-byte big-endian length prefix Kerberos over TCP puts before each message (RFC 4120 7.2.2).
pub fn tcp_frame(message: &[u8]) -> Vec<u8> {
    let mut out = (message.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(message);
    out
}

/// The length a TCP-framed message announces, from its first 4 bytes.
pub fn tcp_frame_len(prefix: [u8; 4]) -> usize {
    u32::from_be_bytes(prefix) as usize
}

/// Decodes a KDC's answer to [`as_req`]: a KRB-ERROR or an AS-REP; `None` for anything else.
pub fn parse_answer(bytes: &[u8]) -> Option<KdcAnswer> {
    let (tag, body, _) = read_tlv(bytes)?;
    match tag {
        t if t == 0x60 | KRB_ERROR => {
            let fields = fields(seq_body(body)?)?;
            let code = parse_int(field(&fields, 6)?)?;
            let stime = parse_time(field(&fields, 4)?)?;
            let susec = field(&fields, 5).and_then(parse_int).unwrap_or(0).max(0) as u32;
            Some(KdcAnswer::Error {
                code: i32::try_from(code).ok()?,
                stime,
                susec,
            })
        }
        t if t == 0x60 | AS_REP => Some(KdcAnswer::AsRep),
        _ => None,
    }
}

/// The ticket's encryption type in a GSS-API Kerberos initial context token (RFC 1964: the
/// mechanism OID, TOK_ID 01 00, then the AP-REQ), or in a bare AP-REQ. `None` when the token is
/// something else (an SPNEGO or NTLM token).
pub fn ticket_enctype(token: &[u8]) -> Option<i32> {
    let ap_req = match read_tlv(token)? {
        (0x60, inner, _) => {
            let (oid_tag, oid, rest) = read_tlv(inner)?;
            if oid_tag != 0x06 || oid != KRB5_MECH_OID || rest.get(..2)? != [0x01, 0x00] {
                return None;
            }
            &rest[2..]
        }
        _ => token,
    };
    let (tag, body, _) = read_tlv(ap_req)?;
    if tag != 0x60 | AP_REQ {
        return None;
    }
    let ap_fields = fields(seq_body(body)?)?;
    let (ticket_tag, ticket, _) = read_tlv(field(&ap_fields, 3)?)?;
    if ticket_tag != 0x61 {
        return None;
    }
    let ticket_fields = fields(seq_body(ticket)?)?;
    let enc_part = fields(seq_body(field(&ticket_fields, 3)?)?)?;
    i32::try_from(parse_int(field(&enc_part, 0)?)?).ok()
}

/// The RFC 3961/4757/8009 name of an encryption type, as Windows and MIT tools print it.
pub fn enctype_name(etype: i32) -> String {
    match etype {
        1 => "des-cbc-crc".into(),
        3 => "des-cbc-md5".into(),
        17 => "aes128-cts-hmac-sha1-96".into(),
        18 => "aes256-cts-hmac-sha1-96".into(),
        19 => "aes128-cts-hmac-sha256-128".into(),
        20 => "aes256-cts-hmac-sha384-192".into(),
        23 => "rc4-hmac".into(),
        24 => "rc4-hmac-exp".into(),
        other => format!("enctype {other}"),
    }
}

/// The RFC 4120 name of a Kerberos error code (the protocol number, 0-99).
pub fn error_name(code: i32) -> String {
    let name = match code {
        6 => "KDC_ERR_C_PRINCIPAL_UNKNOWN",
        7 => "KDC_ERR_S_PRINCIPAL_UNKNOWN",
        8 => "KDC_ERR_PRINCIPAL_NOT_UNIQUE",
        12 => "KDC_ERR_POLICY",
        14 => "KDC_ERR_ETYPE_NOSUPP",
        18 => "KDC_ERR_CLIENT_REVOKED",
        23 => "KDC_ERR_KEY_EXPIRED",
        24 => "KDC_ERR_PREAUTH_FAILED",
        25 => "KDC_ERR_PREAUTH_REQUIRED",
        31 => "KRB_AP_ERR_BAD_INTEGRITY",
        32 => "KRB_AP_ERR_TKT_EXPIRED",
        34 => "KRB_AP_ERR_REPEAT",
        37 => "KRB_AP_ERR_SKEW",
        41 => "KRB_AP_ERR_MODIFIED",
        60 => "KRB_ERR_GENERIC",
        68 => "KDC_ERR_WRONG_REALM",
        _ => return format!("Kerberos error {code}"),
    };
    name.into()
}

/// A KerberosTime (GeneralizedTime "YYYYMMDDHHMMSSZ") as seconds since the epoch.
fn parse_time(bytes: &[u8]) -> Option<i64> {
    let (tag, v, _) = read_tlv(bytes)?;
    if tag != 0x18 || v.len() != 15 || v[14] != b'Z' || !v[..14].iter().all(u8::is_ascii_digit) {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> i64 {
        v[r].iter().fold(0, |acc, d| acc * 10 + (d - b'0') as i64)
    };
    let (y, m, d) = (num(0..4), num(4..6), num(6..8));
    let (hh, mm, ss) = (num(8..10), num(10..12), num(12..14));
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    Some(days_from_civil(y, m, d) * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::der::{ctx, field, fields, int, parse_int, read_tlv, seq, seq_body, tlv};

    /// A KRB-ERROR as Samba's KDC sends it, built here field by field.
    fn krb_error(code: i64, stime: &[u8]) -> Vec<u8> {
        let body = seq(&[
            &ctx(0, &int(5)),
            &ctx(1, &int(30)),
            &ctx(4, &tlv(0x18, stime)),
            &ctx(5, &int(123_456)),
            &ctx(6, &int(code)),
            &ctx(9, &tlv(0x1b, b"DTC.TEST")),
        ]);
        tlv(0x7e, &body)
    }

    #[test]
    fn reads_a_krb_error() {
        let answer = parse_answer(&krb_error(25, b"20261207021918Z")).unwrap();
        assert_eq!(
            answer,
            KdcAnswer::Error {
                code: 25,
                stime: 1_796_609_958,
                susec: 123_456
            }
        );
        assert_eq!(error_name(25), "KDC_ERR_PREAUTH_REQUIRED");
    }

    #[test]
    fn as_req_is_well_formed_der() {
        let req = as_req("probe", "DTC.TEST", 0x8000_0001);
        let (tag, body, rest) = read_tlv(&req).unwrap();
        assert_eq!((tag, rest.len()), (0x6a, 0));
        let f = fields(seq_body(body).unwrap()).unwrap();
        assert_eq!(parse_int(field(&f, 1).unwrap()), Some(5));
        assert_eq!(parse_int(field(&f, 2).unwrap()), Some(10));
        let req_body = fields(seq_body(field(&f, 4).unwrap()).unwrap()).unwrap();
        assert_eq!(parse_int(field(&req_body, 7).unwrap()), Some(0x8000_0001));
        assert_eq!(tcp_frame(&req).len(), req.len() + 4);
    }

    #[test]
    fn ticket_enctype_from_a_gss_token() {
        let ticket = tlv(
            0x61,
            &seq(&[
                &ctx(0, &int(5)),
                &ctx(1, &tlv(0x1b, b"DTC.TEST")),
                &ctx(
                    3,
                    &seq(&[&ctx(0, &int(23)), &ctx(2, &tlv(0x04, &[1, 2, 3]))]),
                ),
            ]),
        );
        let ap_req = tlv(
            0x6e,
            &seq(&[&ctx(0, &int(5)), &ctx(1, &int(14)), &ctx(3, &ticket)]),
        );
        let mut inner = tlv(0x06, KRB5_MECH_OID);
        inner.extend_from_slice(&[1, 0]);
        inner.extend_from_slice(&ap_req);
        let token = tlv(0x60, &inner);
        assert_eq!(ticket_enctype(&token), Some(23));
        assert_eq!(ticket_enctype(&ap_req), Some(23));
        assert_eq!(enctype_name(23), "rc4-hmac");
        assert_eq!(ticket_enctype(b"NTLMSSP\0"), None);
    }

    #[test]
    fn garbage_is_refused_without_panic() {
        for bytes in [
            &[][..],
            &[0x7e],
            &[0x7e, 0x84, 0xff, 0xff, 0xff, 0xff],
            &[0x60, 0x01],
        ] {
            assert_eq!(parse_answer(bytes), None);
            assert_eq!(ticket_enctype(bytes), None);
        }
    }

    #[test]
    fn integers_take_their_shortest_form() {
        assert_eq!(int(5), vec![2, 1, 5]);
        assert_eq!(int(128), vec![2, 2, 0, 128]);
        assert_eq!(int(-1), vec![2, 1, 0xff]);
        assert_eq!(parse_int(&int(0x8000_0001)), Some(0x8000_0001));
    }
}
