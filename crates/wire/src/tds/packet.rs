//! The TDS packet header (MS-TDS 2.2.3.1): type, status, big-endian length including the header,
//! SPID, packet id, window. A message is one or more packets; the last has the EOM status bit.

/// SQL batch (client -> server).
pub const PKT_SQL_BATCH: u8 = 0x01;
/// Tabular result: every server reply, including the PRELOGIN answer.
pub const PKT_REPLY: u8 = 0x04;
/// Attention (cancel).
pub const PKT_ATTENTION: u8 = 0x06;
/// LOGIN7.
pub const PKT_LOGIN7: u8 = 0x10;
/// RPC request (sp_executesql, sp_prepare/sp_execute...: see [`super::rpc`]).
pub const PKT_RPC: u8 = 0x03;
/// PRELOGIN (also carries the TLS handshake in TDS 7.x).
pub const PKT_PRELOGIN: u8 = 0x12;
/// SSPI message: the client's next authentication token after LOGIN7 (MS-TDS 2.2.6.8).
pub const PKT_SSPI: u8 = 0x11;

/// Status bit: end of message.
pub const STATUS_EOM: u8 = 0x01;
/// Bytes in a packet header.
pub const HEADER_LEN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PacketHeader {
    pub packet_type: u8,
    pub status: u8,
    /// Whole packet, header included (big-endian on the wire).
    pub length: u16,
    pub spid: u16,
    pub packet_id: u8,
    pub window: u8,
}

impl PacketHeader {
    /// The header at the front of `bytes`; `None` when fewer than [`HEADER_LEN`] bytes are there.
    /// The length is not validated here: see [`PacketHeader::payload_len`].
    pub fn parse(bytes: &[u8]) -> Option<PacketHeader> {
        let h: &[u8; HEADER_LEN] = bytes.get(..HEADER_LEN)?.try_into().ok()?;
        Some(PacketHeader {
            packet_type: h[0],
            status: h[1],
            length: u16::from_be_bytes([h[2], h[3]]),
            spid: u16::from_be_bytes([h[4], h[5]]),
            packet_id: h[6],
            window: h[7],
        })
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let [l0, l1] = self.length.to_be_bytes();
        let [s0, s1] = self.spid.to_be_bytes();
        [
            self.packet_type,
            self.status,
            l0,
            l1,
            s0,
            s1,
            self.packet_id,
            self.window,
        ]
    }

    pub fn is_eom(&self) -> bool {
        self.status & STATUS_EOM != 0
    }

    /// Payload bytes behind this header; `None` when the length is shorter than the header
    /// itself (a malformed packet).
    pub fn payload_len(&self) -> Option<usize> {
        (self.length as usize).checked_sub(HEADER_LEN)
    }
}

/// Splits `payload` into packets of at most `packet_size` bytes (header included), numbering
/// them from `packet_id` + 1 onwards (the counter is left at the last id used). An empty payload
/// is one header-only packet. `packet_size` is clamped to what a header and one byte need.
pub fn packetize(
    packet_type: u8,
    payload: &[u8],
    packet_size: usize,
    packet_id: &mut u8,
) -> Vec<u8> {
    let room = packet_size.clamp(HEADER_LEN + 1, u16::MAX as usize) - HEADER_LEN;
    let chunks: Vec<&[u8]> = if payload.is_empty() {
        vec![&[]]
    } else {
        payload.chunks(room).collect()
    };
    let last = chunks.len() - 1;
    let mut out = Vec::with_capacity(payload.len() + chunks.len() * HEADER_LEN);
    for (i, chunk) in chunks.into_iter().enumerate() {
        *packet_id = packet_id.wrapping_add(1);
        let header = PacketHeader {
            packet_type,
            status: if i == last { STATUS_EOM } else { 0 },
            length: (chunk.len() + HEADER_LEN) as u16,
            spid: 0,
            packet_id: *packet_id,
            window: 0,
        };
        out.extend_from_slice(&header.encode());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_parse_and_encode() {
        let bytes = [0x04, 0x01, 0x00, 0x2A, 0x00, 0x35, 0x07, 0x00, 0xFF];
        let h = PacketHeader::parse(&bytes).unwrap();
        assert_eq!(
            h,
            PacketHeader {
                packet_type: PKT_REPLY,
                status: STATUS_EOM,
                length: 42,
                spid: 0x35,
                packet_id: 7,
                window: 0,
            }
        );
        assert!(h.is_eom());
        assert_eq!(h.payload_len(), Some(34));
        assert_eq!(h.encode(), bytes[..8]);
        assert_eq!(PacketHeader::parse(&bytes[..7]), None);
        let short = PacketHeader { length: 7, ..h };
        assert_eq!(short.payload_len(), None);
    }

    #[test]
    fn packetize_splits_and_numbers() {
        let mut id = 0xFE;
        let payload: Vec<u8> = (0..10).collect();
        let out = packetize(PKT_REPLY, &payload, HEADER_LEN + 4, &mut id);
        // 4 + 4 + 2 payload bytes, ids FF, 00, 01 (wrapping), EOM only on the last.
        let mut at = 0;
        let mut seen = Vec::new();
        let mut got = Vec::new();
        while at < out.len() {
            let h = PacketHeader::parse(&out[at..]).unwrap();
            seen.push((h.packet_id, h.is_eom(), h.length));
            got.extend_from_slice(&out[at + HEADER_LEN..at + h.length as usize]);
            at += h.length as usize;
        }
        assert_eq!(
            seen,
            vec![(0xFF, false, 12), (0x00, false, 12), (0x01, true, 10)]
        );
        assert_eq!(got, payload);
        assert_eq!(id, 1);

        let empty = packetize(PKT_REPLY, &[], 4096, &mut id);
        assert_eq!(empty, vec![PKT_REPLY, STATUS_EOM, 0, 8, 0, 0, 2, 0]);
    }
}
