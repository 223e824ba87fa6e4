//! Watching the bytes the server sends during login, to report what the driver does not expose:
//! the server's PRELOGIN answer (its version and its encryption decision) and, when the login
//! response travels in the clear (encrypt=off/none), the LOGINACK's TDS version.
//!
//! [`Sniffer`] only copies what is read (bounded); [`analyze`] is a pure parser of that copy.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// At most this many bytes of the server's side are kept.
const KEEP: usize = 64 * 1024;

/// TDS packet types seen from a server.
const PKT_REPLY: u8 = 0x04;
const PKT_PRELOGIN: u8 = 0x12;
const STATUS_EOM: u8 = 0x01;

/// PRELOGIN option tokens.
const PL_VERSION: u8 = 0x00;
const PL_ENCRYPTION: u8 = 0x01;
const PL_TERMINATOR: u8 = 0xFF;

/// The server's PRELOGIN answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloginInfo {
    /// major.minor.build, e.g. `16.0.1000`.
    pub version: Option<String>,
    /// The ENCRYPTION byte: 0 off, 1 on, 2 not supported, 3 required.
    pub encryption: Option<u8>,
}

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
}

pub fn encryption_name(b: u8) -> &'static str {
    match b {
        0 => "off",
        1 => "on",
        2 => "not_supported",
        3 => "required",
        _ => "unknown",
    }
}

/// Pure: what the client ends up with, given its request and the server's PRELOGIN answer
/// (MS-TDS 2.2.6.5 table). `off` means TLS for the login packet only.
pub fn negotiated(client: u8, server: u8) -> &'static str {
    match (client, server) {
        (2, 2) => "none",
        (0, 0) => "login_only",
        (_, 2) | (2, _) => "none",
        _ => "full",
    }
}

/// Pure: walks the server's bytes as TDS packets and raw TLS records.
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
        if (b == PKT_REPLY || b == PKT_PRELOGIN) && pos + 8 <= data.len() {
            let len = u16::from_be_bytes([data[pos + 2], data[pos + 3]]) as usize;
            if len < 8 {
                break;
            }
            let end = (pos + len).min(data.len());
            if message_type.is_some_and(|t| t != b) {
                message.clear();
            }
            message_type = Some(b);
            message.extend_from_slice(&data[pos + 8..end]);
            if data[pos + 1] & STATUS_EOM != 0 || end == data.len() {
                messages.push((b, std::mem::take(&mut message)));
                message_type = None;
            }
            pos = end;
        } else if (0x14..=0x17).contains(&b)
            && data.get(pos + 1) == Some(&0x03)
            && pos + 5 <= data.len()
        {
            let len = u16::from_be_bytes([data[pos + 3], data[pos + 4]]) as usize;
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
            if let Some((version, program)) = find_login_ack(payload) {
                obs.tds_version = Some(version);
                obs.server_program = Some(program);
            }
        }
    }
    obs
}

/// Pure: PRELOGIN option list -> version and encryption.
pub fn parse_prelogin(payload: &[u8]) -> Option<PreloginInfo> {
    let mut info = PreloginInfo {
        version: None,
        encryption: None,
    };
    let mut i = 0;
    let mut seen_terminator = false;
    while i < payload.len() {
        let token = payload[i];
        if token == PL_TERMINATOR {
            seen_terminator = true;
            break;
        }
        let opt = payload.get(i + 1..i + 5)?;
        let off = u16::from_be_bytes([opt[0], opt[1]]) as usize;
        let len = u16::from_be_bytes([opt[2], opt[3]]) as usize;
        let value = payload.get(off..off + len)?;
        match token {
            PL_VERSION if len >= 4 => {
                let build = u16::from_be_bytes([value[2], value[3]]);
                info.version = Some(format!("{}.{}.{}", value[0], value[1], build));
            }
            PL_ENCRYPTION if len >= 1 => info.encryption = Some(value[0]),
            _ => {}
        }
        i += 5;
    }
    if !seen_terminator || (info.version.is_none() && info.encryption.is_none()) {
        return None;
    }
    Some(info)
}

/// Pure: looks for a LOGINACK token in a login response, skipping the tokens SQL Server sends
/// before it (ENVCHANGE, INFO, ERROR: all length-prefixed).
pub fn find_login_ack(payload: &[u8]) -> Option<(u32, String)> {
    let mut i = 0;
    while i + 3 <= payload.len() {
        let token = payload[i];
        let len = u16::from_le_bytes([payload[i + 1], payload[i + 2]]) as usize;
        let body = payload.get(i + 3..i + 3 + len)?;
        match token {
            0xAD => {
                // Interface(1) TDSVersion(4, big endian) ProgName(B_VARCHAR) ProgVersion(4)
                let version = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
                let chars = *body.get(5)? as usize;
                let name_bytes = body.get(6..6 + chars * 2)?;
                let units: Vec<u16> = name_bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                return Some((version, String::from_utf16_lossy(&units)));
            }
            0xE3 | 0xAB | 0xAA => i += 3 + len,
            _ => return None,
        }
    }
    None
}

fn excerpt(data: &[u8]) -> String {
    data.iter()
        .take(48)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect()
}

/// A stream that copies (up to 64 KiB of) what it reads.
pub struct Sniffer<S> {
    inner: S,
    seen: Arc<Mutex<Vec<u8>>>,
}

impl<S> Sniffer<S> {
    /// Copies what is read into `seen` (shared, so it survives the connection being aborted).
    pub fn new(inner: S, seen: Arc<Mutex<Vec<u8>>>) -> Sniffer<S> {
        Sniffer { inner, seen }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if let Ok(mut seen) = self.seen.lock() {
                let room = KEEP.saturating_sub(seen.len());
                seen.extend_from_slice(&new[..new.len().min(room)]);
            }
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn negotiation_table() {
        let table = [
            ((0, 0), "login_only"),
            ((0, 1), "full"),
            ((1, 0), "full"),
            ((0, 3), "full"),
            ((2, 2), "none"),
            ((1, 2), "none"),
            ((3, 3), "full"),
        ];
        for ((c, s), want) in table {
            assert_eq!(negotiated(c, s), want, "{c}/{s}");
        }
    }
}
