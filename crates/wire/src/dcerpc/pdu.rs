//! Connection-oriented PDUs (C706 ch. 12, MS-RPCE 2.2.2): the 16-byte common header, bind /
//! bind_ack / bind_nak, request, response (reassembled across fragments) and fault.
//! Only little-endian data representation is accepted (every Windows and Samba server uses it).

use thiserror::Error;

use super::ndr::Reader;
use super::{DecodeError, SyntaxId, Uuid, NDR_SYNTAX};

pub const HEADER_LEN: usize = 16;
pub const PTYPE_REQUEST: u8 = 0;
pub const PTYPE_RESPONSE: u8 = 2;
pub const PTYPE_FAULT: u8 = 3;
pub const PTYPE_BIND: u8 = 11;
pub const PTYPE_BIND_ACK: u8 = 12;
pub const PTYPE_BIND_NAK: u8 = 13;

pub const PFC_FIRST_FRAG: u8 = 0x01;
pub const PFC_LAST_FRAG: u8 = 0x02;
pub const PFC_OBJECT_UUID: u8 = 0x80;

/// Little-endian integers, ASCII characters, IEEE floats.
pub const DREP_LE: [u8; 4] = [0x10, 0, 0, 0];

/// Our receive/transmit fragment size (the Windows default).
pub const MAX_FRAG: u16 = 4280;

/// Upper bound on a reassembled response (an endpoint mapper answer with 500 entries is ~100 KiB).
pub const MAX_STUB: usize = 4 * 1024 * 1024;
/// Upper bound on fragments per response.
pub const MAX_FRAGMENTS: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub ptype: u8,
    pub flags: u8,
    pub frag_len: u16,
    pub auth_len: u16,
    pub call_id: u32,
}

/// Parses and validates the common header: version 5.0, little-endian, a sane fragment length.
pub fn parse_header(buf: &[u8]) -> Result<Header, DecodeError> {
    let h = buf.get(..HEADER_LEN).ok_or(DecodeError::Truncated {
        what: "PDU header",
        offset: 0,
        needed: HEADER_LEN,
        have: buf.len(),
    })?;
    if h[0] != 5 || h[1] != 0 {
        return Err(DecodeError::invalid(
            "PDU header",
            format!(
                "not DCE/RPC connection-oriented version 5.0 (got {}.{}): not an RPC endpoint",
                h[0], h[1]
            ),
        ));
    }
    if h[4] & 0xf0 != 0x10 {
        return Err(DecodeError::invalid(
            "PDU header",
            format!(
                "unsupported data representation {:02x}{:02x}{:02x}{:02x} (only little-endian)",
                h[4], h[5], h[6], h[7]
            ),
        ));
    }
    let frag_len = u16::from_le_bytes([h[8], h[9]]);
    let auth_len = u16::from_le_bytes([h[10], h[11]]);
    if (frag_len as usize) < HEADER_LEN {
        return Err(DecodeError::invalid(
            "PDU header",
            format!("fragment length {frag_len} shorter than the header"),
        ));
    }
    Ok(Header {
        ptype: h[2],
        flags: h[3],
        frag_len,
        auth_len,
        call_id: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
    })
}

fn header_bytes(ptype: u8, flags: u8, frag_len: u16, call_id: u32) -> Vec<u8> {
    let mut v = Vec::with_capacity(frag_len as usize);
    v.extend_from_slice(&[5, 0, ptype, flags]);
    v.extend_from_slice(&DREP_LE);
    v.extend_from_slice(&frag_len.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&call_id.to_le_bytes());
    v
}

fn push_syntax(v: &mut Vec<u8>, s: &SyntaxId) {
    v.extend_from_slice(&s.uuid.to_le_bytes());
    v.extend_from_slice(&s.major.to_le_bytes());
    v.extend_from_slice(&s.minor.to_le_bytes());
}

/// A bind PDU offering `abstract_syntax` over NDR 2.0, presentation context 0, no authentication.
pub fn encode_bind(call_id: u32, abstract_syntax: &SyntaxId) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&MAX_FRAG.to_le_bytes()); // max_xmit_frag
    body.extend_from_slice(&MAX_FRAG.to_le_bytes()); // max_recv_frag
    body.extend_from_slice(&0u32.to_le_bytes()); // assoc_group_id: new association
    body.extend_from_slice(&[1, 0, 0, 0]); // n_context_elem, reserved
    body.extend_from_slice(&0u16.to_le_bytes()); // p_cont_id
    body.extend_from_slice(&[1, 0]); // n_transfer_syn, reserved
    push_syntax(&mut body, abstract_syntax);
    push_syntax(&mut body, &NDR_SYNTAX);
    let len = (HEADER_LEN + body.len()) as u16;
    let mut v = header_bytes(PTYPE_BIND, PFC_FIRST_FRAG | PFC_LAST_FRAG, len, call_id);
    v.extend_from_slice(&body);
    v
}

/// A single-fragment request PDU on presentation context 0. Endpoint mapper requests are a few
/// hundred bytes, far below any fragment size.
pub fn encode_request(call_id: u32, opnum: u16, object: Option<&Uuid>, stub: &[u8]) -> Vec<u8> {
    let mut flags = PFC_FIRST_FRAG | PFC_LAST_FRAG;
    let mut body = Vec::new();
    body.extend_from_slice(&(stub.len() as u32).to_le_bytes()); // alloc_hint
    body.extend_from_slice(&0u16.to_le_bytes()); // p_cont_id
    body.extend_from_slice(&opnum.to_le_bytes());
    if let Some(o) = object {
        flags |= PFC_OBJECT_UUID;
        body.extend_from_slice(&o.to_le_bytes());
    }
    body.extend_from_slice(stub);
    let len = (HEADER_LEN + body.len()).min(u16::MAX as usize) as u16;
    let mut v = header_bytes(PTYPE_REQUEST, flags, len, call_id);
    v.extend_from_slice(&body);
    v
}

/// The server's answer to a bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindReply {
    /// Accepted; the server's maximum fragment sizes and secondary address (its port, as text).
    Accepted {
        max_xmit: u16,
        max_recv: u16,
        sec_addr: String,
    },
    /// bind_ack whose presentation context was rejected (result, reason).
    ContextRejected { result: u16, reason: u16 },
    /// bind_nak with its reject reason.
    Nak { reason: u16 },
}

/// The header of the PDU at the start of `buf`, and `buf` cut to exactly that PDU (its
/// `frag_len`); `what` names the PDU in the error when `buf` is shorter than that.
fn one_pdu<'a>(buf: &'a [u8], what: &'static str) -> Result<(Header, &'a [u8]), DecodeError> {
    let h = parse_header(buf)?;
    let pdu = buf
        .get(..h.frag_len as usize)
        .ok_or(DecodeError::Truncated {
            what,
            offset: 0,
            needed: h.frag_len as usize,
            have: buf.len(),
        })?;
    Ok((h, pdu))
}

/// Decodes a bind_ack or bind_nak fragment (`frag` = exactly one PDU).
pub fn decode_bind_reply(frag: &[u8]) -> Result<BindReply, DecodeError> {
    let (h, frag) = one_pdu(frag, "bind reply")?;
    let mut r = Reader::new(frag);
    r.bytes(HEADER_LEN, "bind reply")?;
    match h.ptype {
        PTYPE_BIND_NAK => Ok(BindReply::Nak {
            reason: r.u16("bind_nak reason")?,
        }),
        PTYPE_BIND_ACK => {
            let max_xmit = r.u16("bind_ack")?;
            let max_recv = r.u16("bind_ack")?;
            let _assoc = r.u32("bind_ack")?;
            let sec_len = r.u16("bind_ack secondary address")? as usize;
            let sec = r.bytes(sec_len, "bind_ack secondary address")?;
            let sec_addr =
                String::from_utf8_lossy(sec.split(|b| *b == 0).next().unwrap_or(&[])).into_owned();
            r.align(4, "bind_ack result list")?;
            let n = r.u8("bind_ack result list")?;
            r.bytes(3, "bind_ack result list")?;
            if n == 0 {
                return Err(DecodeError::invalid(
                    "bind_ack",
                    "no presentation context result",
                ));
            }
            let result = r.u16("bind_ack result")?;
            let reason = r.u16("bind_ack result")?;
            let syntax = r.bytes(20, "bind_ack transfer syntax")?;
            if result != 0 {
                return Ok(BindReply::ContextRejected { result, reason });
            }
            let mut want = Vec::new();
            push_syntax(&mut want, &NDR_SYNTAX);
            if syntax != want.as_slice() {
                return Err(DecodeError::invalid(
                    "bind_ack",
                    "server accepted a transfer syntax other than NDR 2.0",
                ));
            }
            Ok(BindReply::Accepted {
                max_xmit,
                max_recv,
                sec_addr,
            })
        }
        PTYPE_FAULT => Err(DecodeError::invalid(
            "bind reply",
            "fault PDU in answer to bind",
        )),
        other => Err(DecodeError::invalid(
            "bind reply",
            format!("unexpected PDU type {other}"),
        )),
    }
}

/// The presentation-context result of a bind_ack that did not accept (C706 12.6.3.1
/// `p_cont_def_result_t` / `p_provider_reason_t`), e.g. "provider rejection: abstract syntax not
/// supported" when the server there does not offer the interface asked for.
pub fn context_result_text(result: u16, reason: u16) -> String {
    let result = match result {
        0 => "acceptance",
        1 => "user rejection",
        2 => "provider rejection",
        3 => "negotiate acknowledgement",
        _ => "unknown result",
    };
    let reason = match reason {
        0 => "reason not specified",
        1 => "abstract syntax not supported",
        2 => "proposed transfer syntaxes not supported",
        3 => "local limit exceeded",
        _ => "unknown reason",
    };
    format!("{result}: {reason}")
}

/// Whether a rejected context says the interface itself is not offered there.
pub fn is_abstract_syntax_rejection(reason: u16) -> bool {
    reason == 1
}

/// Why a call did not return stub data.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CallError {
    #[error("the server answered with a fault: {}", status_text(*status))]
    Fault { status: u32 },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// A readable name for the common fault / status codes.
pub fn status_name(status: u32) -> Option<&'static str> {
    Some(match status {
        0x0000_0005 => "access denied",
        0x0000_06d1 => "RPC_S_PROCNUM_OUT_OF_RANGE",
        0x0000_06f7 => "RPC_X_BAD_STUB_DATA",
        0x1c01_0002 => "nca_s_op_rng_error",
        0x1c01_0003 => "nca_s_unk_if",
        0x1c01_0006 => "nca_s_wrong_boot_time",
        0x1c01_0009 => "nca_s_you_crashed",
        0x1c01_000b => "nca_s_proto_error",
        0x1c01_0013 => "nca_s_out_args_too_big",
        0x1c01_0014 => "nca_s_server_too_busy",
        0x1c01_0017 => "nca_s_unsupported_type",
        0x1c00_001c => "nca_s_fault_invalid_bound",
        0x1c00_0011 => "nca_s_fault_access_denied",
        0x1c00_0012 => "nca_s_fault_ndr",
        0x1c00_0014 => "nca_s_fault_cant_perform",
        0x1c00_0017 => "nca_s_fault_remote_no_memory",
        0x16c9_a0d6 => "ept_s_not_registered",
        0x16c9_a0c4 => "ept_s_cant_perform_op",
        0x16c9_a0d4 => "ept_s_invalid_entry",
        _ => return None,
    })
}

pub fn status_text(status: u32) -> String {
    match status_name(status) {
        Some(n) => format!("0x{status:08x} ({n})"),
        None => format!("0x{status:08x}"),
    }
}

/// Whether a status means the caller is not allowed (Windows `RestrictRemoteClients`).
pub fn is_access_denied(status: u32) -> bool {
    matches!(status, 0x0000_0005 | 0x1c00_0011)
}

pub fn bind_nak_reason(reason: u16) -> &'static str {
    match reason {
        0 => "reason not specified",
        1 => "temporary congestion",
        2 => "local limit exceeded",
        3 => "called presentation address unknown",
        4 => "protocol version not supported",
        5 => "default context not supported",
        6 => "user data not readable",
        7 => "no presentation service access point available",
        8 => "authentication type not recognized",
        9 => "invalid checksum",
        _ => "unknown reason",
    }
}

/// Whether more fragments follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    More,
    /// The reassembled stub data of the whole response.
    Done(Vec<u8>),
}

/// Reassembles the response to one call from its fragments, bounded in size and count.
#[derive(Debug)]
pub struct ResponseAssembler {
    call_id: u32,
    stub: Vec<u8>,
    fragments: usize,
}

impl ResponseAssembler {
    pub fn new(call_id: u32) -> ResponseAssembler {
        ResponseAssembler {
            call_id,
            stub: Vec::new(),
            fragments: 0,
        }
    }

    /// Feeds one fragment (exactly one PDU, as framed by its `frag_len`).
    pub fn push(&mut self, frag: &[u8]) -> Result<Step, CallError> {
        let (h, frag) = one_pdu(frag, "response fragment")?;
        if h.call_id != self.call_id {
            return Err(DecodeError::invalid(
                "response",
                format!(
                    "answer for call {} while waiting for call {}",
                    h.call_id, self.call_id
                ),
            )
            .into());
        }
        let mut r = Reader::new(frag);
        r.bytes(HEADER_LEN, "response")?;
        let _alloc_hint = r.u32("response header")?;
        let _ctx = r.u16("response header")?;
        let _cancel = r.u8("response header")?;
        let _reserved = r.u8("response header")?;
        match h.ptype {
            PTYPE_FAULT => {
                return Err(CallError::Fault {
                    status: r.u32("fault status")?,
                })
            }
            PTYPE_RESPONSE => {}
            other => {
                return Err(DecodeError::invalid(
                    "response",
                    format!("unexpected PDU type {other}"),
                )
                .into())
            }
        }
        if self.fragments == 0 && h.flags & PFC_FIRST_FRAG == 0 {
            return Err(DecodeError::invalid(
                "response",
                "first fragment lacks the first-fragment flag",
            )
            .into());
        }
        if self.fragments > 0 && h.flags & PFC_FIRST_FRAG != 0 {
            return Err(DecodeError::invalid(
                "response",
                "first-fragment flag in the middle of a response",
            )
            .into());
        }
        // With authentication the trailer (8 bytes + auth_len) follows the stub; we never ask for
        // it, but strip it if a server sends one anyway.
        let end = if h.auth_len > 0 {
            frag.len()
                .checked_sub(8 + h.auth_len as usize)
                .filter(|e| *e >= r.position())
                .ok_or_else(|| {
                    DecodeError::invalid(
                        "response",
                        format!("auth length {} larger than the fragment", h.auth_len),
                    )
                })?
        } else {
            frag.len()
        };
        let stub = &frag[r.position()..end];
        self.fragments += 1;
        if self.fragments > MAX_FRAGMENTS || self.stub.len() + stub.len() > MAX_STUB {
            return Err(DecodeError::invalid(
                "response",
                format!("larger than {MAX_STUB} bytes / {MAX_FRAGMENTS} fragments"),
            )
            .into());
        }
        self.stub.extend_from_slice(stub);
        if h.flags & PFC_LAST_FRAG != 0 {
            Ok(Step::Done(std::mem::take(&mut self.stub)))
        } else {
            Ok(Step::More)
        }
    }
}

/// Test/peer helpers: server-side PDUs, used by unit tests, the scripted test peer and the fuzz
/// seeds. Not used by the client itself.
pub mod build {
    use super::*;

    pub fn bind_ack(call_id: u32, sec_addr: &str, accept: bool) -> Vec<u8> {
        let mut body = Vec::new();
        body.extend_from_slice(&MAX_FRAG.to_le_bytes());
        body.extend_from_slice(&MAX_FRAG.to_le_bytes());
        body.extend_from_slice(&0x1234u32.to_le_bytes());
        let mut sec = sec_addr.as_bytes().to_vec();
        sec.push(0);
        body.extend_from_slice(&(sec.len() as u16).to_le_bytes());
        body.extend_from_slice(&sec);
        while (HEADER_LEN + body.len()) % 4 != 0 {
            body.push(0);
        }
        body.extend_from_slice(&[1, 0, 0, 0]);
        if accept {
            body.extend_from_slice(&[0, 0, 0, 0]);
            push_syntax(&mut body, &NDR_SYNTAX);
        } else {
            body.extend_from_slice(&[2, 0, 1, 0]);
            body.extend_from_slice(&[0; 20]);
        }
        let mut v = header_bytes(
            PTYPE_BIND_ACK,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            (HEADER_LEN + body.len()) as u16,
            call_id,
        );
        v.extend_from_slice(&body);
        v
    }

    pub fn bind_nak(call_id: u32, reason: u16) -> Vec<u8> {
        let mut v = header_bytes(
            PTYPE_BIND_NAK,
            PFC_FIRST_FRAG | PFC_LAST_FRAG,
            HEADER_LEN as u16 + 4,
            call_id,
        );
        v.extend_from_slice(&reason.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v
    }

    pub fn fault(call_id: u32, status: u32) -> Vec<u8> {
        let mut v = header_bytes(
            PTYPE_FAULT,
            PFC_FIRST_FRAG | PFC_LAST_FRAG | 0x20,
            HEADER_LEN as u16 + 16,
            call_id,
        );
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&[0, 0, 0, 0]);
        v.extend_from_slice(&status.to_le_bytes());
        v.extend_from_slice(&[0; 4]);
        v
    }

    /// The response fragments carrying `stub`, at most `chunk` stub bytes each.
    pub fn response(call_id: u32, stub: &[u8], chunk: usize) -> Vec<Vec<u8>> {
        let chunk = chunk.max(1);
        let pieces: Vec<&[u8]> = if stub.is_empty() {
            vec![&[][..]]
        } else {
            stub.chunks(chunk).collect()
        };
        let n = pieces.len();
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, piece)| {
                let mut flags = 0;
                if i == 0 {
                    flags |= PFC_FIRST_FRAG;
                }
                if i + 1 == n {
                    flags |= PFC_LAST_FRAG;
                }
                let mut v = header_bytes(
                    PTYPE_RESPONSE,
                    flags,
                    (HEADER_LEN + 8 + piece.len()) as u16,
                    call_id,
                );
                v.extend_from_slice(&(stub.len() as u32).to_le_bytes());
                v.extend_from_slice(&[0, 0, 0, 0]);
                v.extend_from_slice(piece);
                v
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dcerpc::EPM_INTERFACE;

    #[test]
    fn bind_layout() {
        let b = encode_bind(1, &EPM_INTERFACE);
        assert_eq!(b.len(), 72);
        let h = parse_header(&b).unwrap();
        assert_eq!((h.ptype, h.frag_len, h.call_id), (PTYPE_BIND, 72, 1));
        assert_eq!(&b[32..36], &[0x08, 0x83, 0xaf, 0xe1]);
        assert_eq!(&b[48..50], &[3, 0]);
    }

    #[test]
    fn bind_replies() {
        let rows: &[(Vec<u8>, Result<BindReply, ()>)] = &[
            (
                build::bind_ack(1, "135", true),
                Ok(BindReply::Accepted {
                    max_xmit: MAX_FRAG,
                    max_recv: MAX_FRAG,
                    sec_addr: "135".into(),
                }),
            ),
            (
                build::bind_ack(1, "", true),
                Ok(BindReply::Accepted {
                    max_xmit: MAX_FRAG,
                    max_recv: MAX_FRAG,
                    sec_addr: "".into(),
                }),
            ),
            (
                build::bind_ack(1, "135", false),
                Ok(BindReply::ContextRejected {
                    result: 2,
                    reason: 1,
                }),
            ),
            (build::bind_nak(1, 4), Ok(BindReply::Nak { reason: 4 })),
            (build::fault(1, 5), Err(())),
            (b"HTTP/1.1 400 Bad Request\r\n\r\n".to_vec(), Err(())),
            (vec![5, 0, 12], Err(())),
        ];
        for (bytes, want) in rows {
            let got = decode_bind_reply(bytes).map_err(|_| ());
            assert_eq!(&got, want, "{bytes:02x?}");
        }
    }

    #[test]
    fn big_endian_peer_is_rejected_clearly() {
        let mut b = build::bind_ack(1, "135", true);
        b[4] = 0x00;
        let e = decode_bind_reply(&b).unwrap_err();
        assert!(e.to_string().contains("little-endian"), "{e}");
    }

    #[test]
    fn reassembles_fragments_in_order() {
        let stub: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let frags = build::response(7, &stub, 300);
        assert_eq!(frags.len(), 4);
        let mut a = ResponseAssembler::new(7);
        for f in &frags[..3] {
            assert_eq!(a.push(f).unwrap(), Step::More);
        }
        assert_eq!(a.push(&frags[3]).unwrap(), Step::Done(stub));
    }

    #[test]
    fn rejects_bad_fragment_sequences() {
        let frags = build::response(7, &[1, 2, 3, 4, 5, 6], 2);
        // Missing first fragment.
        let mut a = ResponseAssembler::new(7);
        assert!(a.push(&frags[1]).is_err());
        // Wrong call id.
        let mut a = ResponseAssembler::new(8);
        assert!(a.push(&frags[0]).is_err());
        // Repeated first fragment.
        let mut a = ResponseAssembler::new(7);
        a.push(&frags[0]).unwrap();
        assert!(a.push(&frags[0]).is_err());
        // Fault.
        let mut a = ResponseAssembler::new(7);
        assert_eq!(
            a.push(&build::fault(7, 5)),
            Err(CallError::Fault { status: 5 })
        );
        // Auth length past the fragment.
        let mut f = frags[0].clone();
        f[10] = 0xff;
        assert!(ResponseAssembler::new(7).push(&f).is_err());
    }

    #[test]
    fn context_result_texts() {
        assert_eq!(
            context_result_text(2, 1),
            "provider rejection: abstract syntax not supported"
        );
        assert_eq!(context_result_text(9, 9), "unknown result: unknown reason");
        assert!(is_abstract_syntax_rejection(1));
        assert!(!is_abstract_syntax_rejection(2));
    }

    #[test]
    fn status_texts() {
        assert_eq!(status_text(0x16c9a0d6), "0x16c9a0d6 (ept_s_not_registered)");
        assert_eq!(status_text(0x12345678), "0x12345678");
        assert!(is_access_denied(5));
        assert!(!is_access_denied(0x16c9a0d6));
    }
}
