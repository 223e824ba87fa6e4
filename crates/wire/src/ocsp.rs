//! OCSP (RFC 6960) as far as hop `revocation` needs it: the smallest request a responder
//! answers (one CertID with SHA-1 hashes, no nonce, no signature: what Windows' CryptoAPI and
//! browsers send) and the response's status. The hashes are computed by the caller (this crate
//! holds no hash function); the response's signature and certificate status are not judged,
//! since the hop asks whether the responder is reachable from this zone and answers, not
//! whether the certificate is revoked.
//!
//! ```text
//! OCSPRequest ::= SEQUENCE { tbsRequest TBSRequest }
//! TBSRequest  ::= SEQUENCE { requestList SEQUENCE OF Request }
//! Request     ::= SEQUENCE { reqCert CertID }
//! CertID      ::= SEQUENCE { hashAlgorithm AlgorithmIdentifier, issuerNameHash OCTET STRING,
//!                            issuerKeyHash OCTET STRING, serialNumber CertificateSerialNumber }
//! OCSPResponse ::= SEQUENCE { responseStatus ENUMERATED, responseBytes [0] EXPLICIT ... OPTIONAL }
//! ```

use crate::der::{read_tlv, seq, tlv};

/// id-sha1 (1.3.14.3.2.26), DER-encoded OBJECT IDENTIFIER body.
const SHA1_OID: &[u8] = &[0x2b, 0x0e, 0x03, 0x02, 0x1a];

/// The DER of an OCSP request for one certificate: `issuer_name_hash` is SHA-1 over the
/// issuer's DER-encoded subject name, `issuer_key_hash` SHA-1 over the issuer's public key
/// (the BIT STRING's contents, without the unused-bits byte), `serial` the certificate's serial
/// number as its DER INTEGER contents (big-endian, two's complement).
pub fn encode_request(
    issuer_name_hash: &[u8; 20],
    issuer_key_hash: &[u8; 20],
    serial: &[u8],
) -> Vec<u8> {
    let algorithm = seq(&[&tlv(0x06, SHA1_OID), &tlv(0x05, &[])]);
    let cert_id = seq(&[
        &algorithm,
        &tlv(0x04, issuer_name_hash),
        &tlv(0x04, issuer_key_hash),
        &tlv(0x02, serial),
    ]);
    let request = seq(&[&cert_id]);
    let request_list = seq(&[&request]);
    let tbs = seq(&[&request_list]);
    seq(&[&tbs])
}

/// OCSPResponseStatus (RFC 6960 4.2.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseStatus {
    Successful,
    MalformedRequest,
    InternalError,
    TryLater,
    SigRequired,
    Unauthorized,
    /// A value RFC 6960 does not define.
    Other(u8),
}

impl ResponseStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseStatus::Successful => "successful",
            ResponseStatus::MalformedRequest => "malformed_request",
            ResponseStatus::InternalError => "internal_error",
            ResponseStatus::TryLater => "try_later",
            ResponseStatus::SigRequired => "sig_required",
            ResponseStatus::Unauthorized => "unauthorized",
            ResponseStatus::Other(_) => "other",
        }
    }
}

/// The status of an OCSP response, or `None` when the bytes are not one.
pub fn response_status(der: &[u8]) -> Option<ResponseStatus> {
    let (tag, body, _) = read_tlv(der)?;
    if tag != 0x30 {
        return None;
    }
    let (tag, value, rest) = read_tlv(body)?;
    if tag != 0x0a || value.len() != 1 {
        return None;
    }
    // A successful response carries responseBytes ([0]); the error statuses carry nothing.
    if let Some((tag, _, _)) = read_tlv(rest) {
        if tag != 0xa0 {
            return None;
        }
    }
    Some(match value[0] {
        0 => ResponseStatus::Successful,
        1 => ResponseStatus::MalformedRequest,
        2 => ResponseStatus::InternalError,
        3 => ResponseStatus::TryLater,
        5 => ResponseStatus::SigRequired,
        6 => ResponseStatus::Unauthorized,
        n => ResponseStatus::Other(n),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_is_the_rfc_6960_shape() {
        let req = encode_request(&[0x11; 20], &[0x22; 20], &[0x01, 0x02]);
        // OCSPRequest { TBSRequest { requestList { Request { CertID { ... } } } } }
        let mut at = &req[..];
        for _ in 0..4 {
            let (tag, body, rest) = read_tlv(at).unwrap();
            assert_eq!(tag, 0x30);
            assert!(rest.is_empty());
            at = body;
        }
        let (tag, cert_id, _) = read_tlv(at).unwrap();
        assert_eq!(tag, 0x30);
        let (tag, alg, rest) = read_tlv(cert_id).unwrap();
        assert_eq!(tag, 0x30);
        assert_eq!(read_tlv(alg).unwrap().1, SHA1_OID);
        let (tag, name_hash, rest) = read_tlv(rest).unwrap();
        assert_eq!((tag, name_hash), (0x04, &[0x11; 20][..]));
        let (tag, key_hash, rest) = read_tlv(rest).unwrap();
        assert_eq!((tag, key_hash), (0x04, &[0x22; 20][..]));
        let (tag, serial, rest) = read_tlv(rest).unwrap();
        assert_eq!((tag, serial), (0x02, &[0x01, 0x02][..]));
        assert!(rest.is_empty());
    }

    #[test]
    fn response_statuses() {
        assert_eq!(
            response_status(&[0x30, 0x03, 0x0a, 0x01, 0x06]),
            Some(ResponseStatus::Unauthorized)
        );
        assert_eq!(
            response_status(&[0x30, 0x07, 0x0a, 0x01, 0x00, 0xa0, 0x02, 0x30, 0x00]),
            Some(ResponseStatus::Successful)
        );
        assert_eq!(response_status(b"<html>"), None);
        assert_eq!(response_status(&[]), None);
        assert_eq!(response_status(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
