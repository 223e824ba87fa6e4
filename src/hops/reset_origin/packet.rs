//! The few bytes the reset-origin check reads and writes on raw sockets: the IPv4 and TCP
//! header fields of an incoming segment, and an ICMP echo request and its reply. Pure (no I/O),
//! so every field offset is pinned by a test below.

use std::net::Ipv4Addr;

/// TCP flag bits (byte 13 of the TCP header).
pub const TCP_RST: u8 = 0x04;
pub const TCP_SYN_ACK: u8 = 0x12;

/// What the raw TCP socket needs from an incoming IPv4 TCP segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub src: Ipv4Addr,
    pub src_port: u16,
    pub dst_port: u16,
    pub ttl: u8,
    pub flags: u8,
}

impl Segment {
    pub fn is_rst(&self) -> bool {
        self.flags & TCP_RST != 0
    }

    pub fn is_syn_ack(&self) -> bool {
        self.flags & TCP_SYN_ACK == TCP_SYN_ACK
    }
}

/// The IPv4 header's length, TTL and protocol, and where the payload starts; `None` when the
/// bytes are not a whole IPv4 header.
fn ipv4_header(packet: &[u8]) -> Option<(u8, u8, Ipv4Addr, &[u8])> {
    let first = *packet.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let header_len = usize::from(first & 0x0f) * 4;
    if header_len < 20 || packet.len() < header_len {
        return None;
    }
    let ttl = packet[8];
    let protocol = packet[9];
    let src = Ipv4Addr::new(packet[12], packet[13], packet[14], packet[15]);
    Some((ttl, protocol, src, &packet[header_len..]))
}

/// Parses an IPv4 packet as a raw `IPPROTO_TCP` socket receives it (IP header included).
pub fn parse_segment(packet: &[u8]) -> Option<Segment> {
    let (ttl, protocol, src, tcp) = ipv4_header(packet)?;
    if protocol != 6 || tcp.len() < 14 {
        return None;
    }
    Some(Segment {
        src,
        src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
        dst_port: u16::from_be_bytes([tcp[2], tcp[3]]),
        ttl,
        flags: tcp[13],
    })
}

/// The Internet checksum (RFC 1071) of `bytes`.
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An ICMP echo request (type 8) with `id`, `seq` and `payload`, checksummed.
pub fn echo_request(id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&id.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(payload);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The TTL of an ICMP echo reply (type 0) from `from` to our request `id`/`seq`, as a raw
/// `IPPROTO_ICMP` socket receives it (IP header included); `None` for any other packet.
pub fn echo_reply_ttl(packet: &[u8], from: Ipv4Addr, id: u16, seq: u16) -> Option<u8> {
    let (ttl, protocol, src, icmp) = ipv4_header(packet)?;
    if protocol != 1 || src != from || icmp.len() < 8 || icmp[0] != 0 {
        return None;
    }
    let same = u16::from_be_bytes([icmp[4], icmp[5]]) == id
        && u16::from_be_bytes([icmp[6], icmp[7]]) == seq;
    same.then_some(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A 20-byte IPv4 header with `ttl`, `protocol` and `src`, then `payload`.
    fn ipv4(ttl: u8, protocol: u8, src: [u8; 4], payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 0, 0, 0, 0, 0, ttl, protocol, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&[198, 18, 0, 1]);
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn reads_a_reset_segment() {
        // Source port 1450, destination port 40000, flags RST|ACK.
        let mut tcp = vec![0x05, 0xaa, 0x9c, 0x40, 0, 0, 0, 0, 0, 0, 0, 0, 0x50, 0x14];
        tcp.extend_from_slice(&[0; 6]);
        let seg = parse_segment(&ipv4(64, 6, [198, 18, 2, 2], &tcp)).unwrap();
        assert_eq!(
            seg,
            Segment {
                src: Ipv4Addr::new(198, 18, 2, 2),
                src_port: 1450,
                dst_port: 40000,
                ttl: 64,
                flags: 0x14,
            }
        );
        assert!(seg.is_rst() && !seg.is_syn_ack());
        // Options make the IP header longer: the TCP header starts after them.
        let mut long = ipv4(61, 6, [198, 18, 2, 2], &[1, 1, 1, 0]);
        long[0] = 0x46;
        long.extend_from_slice(&tcp);
        assert_eq!(parse_segment(&long).unwrap().src_port, 1450);
        // Not TCP, truncated, not IPv4.
        assert_eq!(parse_segment(&ipv4(64, 17, [1, 2, 3, 4], &tcp)), None);
        assert_eq!(parse_segment(&ipv4(64, 6, [1, 2, 3, 4], &tcp[..10])), None);
        assert_eq!(parse_segment(&[0x60; 40]), None);
    }

    #[test]
    fn echo_request_checksums_and_its_reply_is_matched() {
        let req = echo_request(0x1234, 7, b"dtcprobe");
        // A packet with its own checksum in place sums to zero.
        assert_eq!(checksum(&req), 0);
        assert_eq!(&req[4..8], &[0x12, 0x34, 0, 7]);
        let target = Ipv4Addr::new(198, 18, 2, 2);
        let mut reply = req.clone();
        reply[0] = 0;
        let packet = ipv4(62, 1, target.octets(), &reply);
        assert_eq!(echo_reply_ttl(&packet, target, 0x1234, 7), Some(62));
        // Another host, another id, our own request looped back: not ours.
        assert_eq!(
            echo_reply_ttl(&packet, Ipv4Addr::new(198, 18, 2, 3), 0x1234, 7),
            None
        );
        assert_eq!(echo_reply_ttl(&packet, target, 0x1235, 7), None);
        let request = ipv4(64, 1, target.octets(), &req);
        assert_eq!(echo_reply_ttl(&request, target, 0x1234, 7), None);
    }
}
