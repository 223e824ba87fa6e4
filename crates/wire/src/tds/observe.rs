//! Reading what a SQL Server sent during login, from a copy of the raw byte stream (dtcprobe's
//! `Sniffer` makes that copy; this is the pure half). The stream interleaves TDS packets and raw
//! TLS records (TDS 7.x wraps the TLS handshake in PRELOGIN packets, then sends records bare), so
//! the walk accepts both and stops at the first byte that is neither.

use super::packet::{PacketHeader, HEADER_LEN, PKT_PRELOGIN, PKT_REPLY};
use super::prelogin::{parse_prelogin, PreloginInfo};
use super::token::find_login_ack;

/// What the byte stream showed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub bytes: usize,
    pub prelogin: Option<PreloginInfo>,
    /// The first bytes were a TLS record (TDS 8 strict: TLS before PRELOGIN).
    pub tls_first: bool,
    /// From a LOGINACK seen in the clear.
    pub tds_version: Option<u32>,
    pub server_program: Option<String>,
    /// Printable excerpt of the first bytes when they were not TDS at all.
    pub not_tds_excerpt: Option<String>,
    /// The server sent a TLS ChangeCipherSpec (bare, or inside a PRELOGIN packet): its side of
    /// a TLS 1.2 handshake finished. Without it, a connection closed after a PRELOGIN answer
    /// that agreed on TLS was closed during the handshake.
    pub tls_server_finished: bool,
}

/// TLS record content type ChangeCipherSpec.
const TLS_CHANGE_CIPHER_SPEC: u8 = 0x14;

/// Whether `payload` (TLS records back to back) holds a ChangeCipherSpec record.
fn has_change_cipher_spec(payload: &[u8]) -> bool {
    let mut at = 0;
    while let Some(header) = payload.get(at..at + 5) {
        if header[0] == TLS_CHANGE_CIPHER_SPEC {
            return true;
        }
        if !(0x14..=0x17).contains(&header[0]) || header[1] != 0x03 {
            return false;
        }
        at += 5 + u16::from_be_bytes([header[3], header[4]]) as usize;
    }
    false
}

/// Bytes of a non-TDS answer shown in [`Observed::not_tds_excerpt`].
pub const EXCERPT_LEN: usize = 48;

/// Walks the server's bytes as TDS packets and raw TLS records: the first reply message is the
/// PRELOGIN answer, a later reply carrying a LOGINACK gives the TDS version.
pub fn analyze(data: &[u8]) -> Observed {
    let mut obs = Observed {
        bytes: data.len(),
        ..Default::default()
    };
    if data.is_empty() {
        return obs;
    }
    if data[0] == 0x16 && data.get(1) == Some(&0x03) {
        obs.tls_first = true;
        return obs;
    }
    let mut pos = 0;
    let mut message: Vec<u8> = Vec::new();
    let mut message_type: Option<u8> = None;
    let mut messages: Vec<(u8, Vec<u8>)> = Vec::new();
    while pos < data.len() {
        let b = data[pos];
        let tds_header = if b == PKT_REPLY || b == PKT_PRELOGIN {
            PacketHeader::parse(&data[pos..])
        } else {
            None
        };
        if let Some(header) = tds_header {
            if header.payload_len().is_none() {
                break;
            }
            let end = (pos + header.length as usize).min(data.len());
            if message_type.is_some_and(|t| t != b) {
                message.clear();
            }
            message_type = Some(b);
            let body = data.get(pos + HEADER_LEN..end).unwrap_or_default();
            if b == PKT_PRELOGIN && has_change_cipher_spec(body) {
                obs.tls_server_finished = true;
            }
            message.extend_from_slice(body);
            if header.is_eom() || end == data.len() {
                messages.push((b, std::mem::take(&mut message)));
                message_type = None;
            }
            pos = end;
        } else if (0x14..=0x17).contains(&b)
            && data.get(pos + 1) == Some(&0x03)
            && pos + 5 <= data.len()
        {
            let len = u16::from_be_bytes([data[pos + 3], data[pos + 4]]) as usize;
            if b == TLS_CHANGE_CIPHER_SPEC {
                obs.tls_server_finished = true;
            }
            pos += 5 + len;
        } else {
            break;
        }
    }
    match messages.first() {
        Some((PKT_REPLY, payload)) => obs.prelogin = parse_prelogin(payload),
        _ => {
            if messages.is_empty() {
                obs.not_tds_excerpt = Some(excerpt(data));
            }
        }
    }
    for (t, payload) in messages.iter().skip(1) {
        if *t == PKT_REPLY {
            if let Some(ack) = find_login_ack(payload) {
                obs.tds_version = Some(ack.tds_version);
                obs.server_program = Some(ack.program);
            }
        }
    }
    obs
}

fn excerpt(data: &[u8]) -> String {
    data.iter()
        .take(EXCERPT_LEN)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::packet::STATUS_EOM;
    use crate::tds::prelogin::{PL_ENCRYPTION, PL_TERMINATOR, PL_VERSION};

    // Built by hand (not with this crate's encoders), so the parser is checked against the
    // spec's layout and not only against its own writer.

    fn packet(t: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![t, STATUS_EOM];
        v.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
        v.extend_from_slice(&[0, 0, 1, 0]);
        v.extend_from_slice(payload);
        v
    }

    fn prelogin(version: [u8; 4], enc: u8) -> Vec<u8> {
        // two options (VERSION 6 bytes, ENCRYPTION 1 byte) + terminator
        let header_len = 5 * 2 + 1;
        let mut v = vec![
            PL_VERSION,
            0,
            header_len as u8,
            0,
            6,
            PL_ENCRYPTION,
            0,
            header_len as u8 + 6,
            0,
            1,
            PL_TERMINATOR,
        ];
        v.extend_from_slice(&version);
        v.extend_from_slice(&[0, 0]);
        v.push(enc);
        v
    }

    fn login_ack(tds: u32) -> Vec<u8> {
        let name: Vec<u8> = "Microsoft SQL Server"
            .encode_utf16()
            .flat_map(|u| u.to_le_bytes())
            .collect();
        let mut body = vec![1];
        body.extend_from_slice(&tds.to_be_bytes());
        body.push(20);
        body.extend_from_slice(&name);
        body.extend_from_slice(&[16, 0, 3, 232]);
        let mut t = vec![0xE3, 3, 0, 4, 0, 0]; // an ENVCHANGE to skip
        t.push(0xAD);
        t.extend_from_slice(&(body.len() as u16).to_le_bytes());
        t.extend_from_slice(&body);
        t
    }

    #[test]
    fn prelogin_then_tls_then_clear_login_ack() {
        let mut data = packet(PKT_REPLY, &prelogin([16, 0, 0x03, 0xE8], 0));
        data.extend(packet(PKT_PRELOGIN, &[0x16, 0x03, 0x03, 0, 2, 1, 2]));
        data.extend([0x17, 0x03, 0x03, 0, 3, 9, 9, 9]);
        data.extend(packet(PKT_REPLY, &login_ack(0x74000004)));
        let o = analyze(&data);
        let p = o.prelogin.unwrap();
        assert_eq!(p.version.as_deref(), Some("16.0.1000"));
        assert_eq!(p.encryption, Some(0));
        assert_eq!(o.tds_version, Some(0x74000004));
        assert_eq!(o.server_program.as_deref(), Some("Microsoft SQL Server"));
        assert!(o.not_tds_excerpt.is_none());
    }

    #[test]
    fn full_encryption_shows_only_prelogin() {
        let mut data = packet(PKT_REPLY, &prelogin([15, 0, 0x07, 0xD0], 1));
        data.extend([0x17, 0x03, 0x03, 0, 3, 9, 9, 9]);
        let o = analyze(&data);
        assert_eq!(o.prelogin.unwrap().encryption, Some(1));
        assert_eq!(o.tds_version, None);
        assert!(!o.tls_server_finished);
    }

    #[test]
    fn change_cipher_spec_marks_the_server_handshake_finished() {
        let hello = [0x16, 0x03, 0x03, 0, 2, 1, 2];
        let mut data = packet(PKT_REPLY, &prelogin([16, 0, 0x03, 0xE8], 1));
        data.extend(packet(PKT_PRELOGIN, &hello));
        assert!(!analyze(&data).tls_server_finished, "ServerHello only");
        let mut flight = hello.to_vec();
        flight.extend([0x14, 0x03, 0x03, 0, 1, 1]);
        data.extend(packet(PKT_PRELOGIN, &flight));
        assert!(analyze(&data).tls_server_finished);
        // Bare records (after the handshake) count too.
        let mut bare = packet(PKT_REPLY, &prelogin([16, 0, 0x03, 0xE8], 1));
        bare.extend([0x14, 0x03, 0x03, 0, 1, 1]);
        assert!(analyze(&bare).tls_server_finished);
    }

    #[test]
    fn strict_garbage_and_empty() {
        assert!(analyze(&[0x16, 0x03, 0x01, 0, 5]).tls_first);
        let o = analyze(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        assert_eq!(
            o.not_tds_excerpt.as_deref(),
            Some("HTTP/1.1 400 Bad Request....")
        );
        assert_eq!(analyze(&[]), Observed::default());
        // A reply packet whose payload is not a PRELOGIN option list.
        assert!(analyze(&packet(PKT_REPLY, &[1, 2, 3])).prelogin.is_none());
    }

    #[test]
    fn split_messages_truncation_and_bad_lengths() {
        // The PRELOGIN answer split over two packets (EOM only on the second) is reassembled.
        let answer = prelogin([16, 0, 0x03, 0xE8], 3);
        let mut first = packet(PKT_REPLY, &answer[..7]);
        first[1] = 0;
        let mut data = first;
        data.extend(packet(PKT_REPLY, &answer[7..]));
        assert_eq!(analyze(&data).prelogin.unwrap().encryption, Some(3));

        // A stream cut inside the first packet: what arrived is still read.
        let whole = packet(PKT_REPLY, &answer);
        let cut = analyze(&whole[..whole.len() - 1]);
        assert_eq!(cut.bytes, whole.len() - 1);
        assert!(cut.prelogin.is_none(), "the ENCRYPTION byte is missing");

        // A header claiming fewer bytes than itself ends the walk: not TDS.
        let o = analyze(&[PKT_REPLY, 1, 0, 7, 0, 0, 1, 0, 0xAA]);
        assert!(o.prelogin.is_none());
        assert_eq!(o.not_tds_excerpt.as_deref(), Some("........."));
    }
}
