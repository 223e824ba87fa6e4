//! Real server bytes from ../shared/captures, read without tshark (a minimal classic-pcap reader: tests/mssql_replay.rs; support/captures.rs reads every format through tshark).
//! They are read at test time, never copied into this repository: some are GPL or LGPL.
//!
//! Where: `$CARGO_MANIFEST_DIR/../shared/captures`, else `$DTCPROBE_CAPTURES`; a test whose file
//! is absent prints "SKIP <test>: ..." and returns.
//!
//! The reader is the least that these captures need: classic pcap (either byte order,
//! microsecond or nanosecond), Ethernet or Linux cooked (SLL) link types, IPv4, TCP; payloads of
//! one direction are concatenated in capture order (these captures have no retransmissions or
//! reordering; a duplicate sequence number is dropped all the same).

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The captures directory, if present.
pub fn dir() -> Option<PathBuf> {
    let beside = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/captures");
    if beside.is_dir() {
        return Some(beside);
    }
    let from_env = PathBuf::from(std::env::var_os("DTCPROBE_CAPTURES")?);
    from_env.is_dir().then_some(from_env)
}

/// The bytes of `relative` (e.g. `tds/arkime-tds7-sql2000.pcap`), or `None` after printing the
/// skip reason for `test`.
pub fn read(test: &str, relative: &str) -> Option<Vec<u8>> {
    let Some(dir) = dir() else {
        eprintln!(
            "SKIP {test}: no captures directory (../shared/captures beside the repository, or \
             DTCPROBE_CAPTURES)"
        );
        return None;
    };
    let path = dir.join(relative);
    match std::fs::read(&path) {
        Ok(b) => Some(b),
        Err(e) => {
            eprintln!("SKIP {test}: {}: {e}", path.display());
            None
        }
    }
}

/// One TCP segment with a payload.
#[derive(Debug, Clone)]
pub struct Segment {
    pub src_port: u16,
    pub seq: u32,
    pub payload: Vec<u8>,
}

/// Every TCP segment with a payload, in capture order.
pub fn tcp_segments(pcap: &[u8]) -> Result<Vec<Segment>, String> {
    let magic = pcap.get(..4).ok_or("not a pcap: too short")?;
    let big = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => false,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => true,
        _ => return Err(format!("not a classic pcap (magic {magic:02x?})")),
    };
    let u32_at = |b: &[u8], at: usize| -> Result<u32, String> {
        let s: [u8; 4] = b
            .get(at..at + 4)
            .ok_or("pcap cut short")?
            .try_into()
            .unwrap();
        Ok(if big {
            u32::from_be_bytes(s)
        } else {
            u32::from_le_bytes(s)
        })
    };
    let link = u32_at(pcap, 20)?;
    let mut out = Vec::new();
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let incl = u32_at(pcap, at + 8)? as usize;
        let frame = pcap
            .get(at + 16..at + 16 + incl)
            .ok_or("pcap record cut short")?;
        at += 16 + incl;
        let ip = match link {
            1 => {
                // Ethernet, possibly one 802.1Q tag.
                let mut off = 12;
                let mut ty = u16::from_be_bytes([frame[off], frame[off + 1]]);
                if ty == 0x8100 {
                    off += 4;
                    ty = u16::from_be_bytes([frame[off], frame[off + 1]]);
                }
                if ty != 0x0800 {
                    continue;
                }
                &frame[off + 2..]
            }
            113 => {
                if u16::from_be_bytes([frame[14], frame[15]]) != 0x0800 {
                    continue;
                }
                &frame[16..]
            }
            other => return Err(format!("link type {other} not read here")),
        };
        if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 6 {
            continue;
        }
        let ihl = (ip[0] & 0x0f) as usize * 4;
        let total = u16::from_be_bytes([ip[2], ip[3]]) as usize;
        let tcp = ip.get(ihl..total.min(ip.len())).ok_or("IPv4 cut short")?;
        if tcp.len() < 20 {
            continue;
        }
        let off = (tcp[12] >> 4) as usize * 4;
        let payload = tcp.get(off..).unwrap_or_default();
        if payload.is_empty() {
            continue;
        }
        out.push(Segment {
            src_port: u16::from_be_bytes([tcp[0], tcp[1]]),
            seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
            payload: payload.to_vec(),
        });
    }
    Ok(out)
}

/// The byte stream sent FROM `port` (the server's side of a flow), in order.
pub fn stream_from(segments: &[Segment], port: u16) -> Vec<u8> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for s in segments.iter().filter(|s| s.src_port == port) {
        if seen.insert(s.seq) {
            out.extend_from_slice(&s.payload);
        }
    }
    out
}

/// Splits a TDS byte stream into whole messages (each its packets, headers included, up to and
/// including the one with the end-of-message status bit).
pub fn tds_messages(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut current = Vec::new();
    let mut at = 0;
    while at + 8 <= stream.len() {
        let len = u16::from_be_bytes([stream[at + 2], stream[at + 3]]) as usize;
        if len < 8 || at + len > stream.len() {
            break;
        }
        current.extend_from_slice(&stream[at..at + len]);
        let eom = stream[at + 1] & 0x01 != 0;
        at += len;
        if eom {
            out.push(std::mem::take(&mut current));
        }
    }
    out
}
