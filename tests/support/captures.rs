//! Real Microsoft server bytes for the tests in `captures.rs`: where the capture files are, the
//! TCP payloads inside a pcap/pcapng(.gz) (read by tshark, reassembled per direction by sequence
//! number), the `.hex` fixture files, and framing of the streams into DCE/RPC PDUs and TDS
//! messages.
//!
//! The capture files stay outside the repository (some are GPL or LGPL): they are read from
//! `$DTCPROBE_CAPTURES`, else `<repo>/../shared/captures`. A test whose file is absent prints
//! "SKIP <test>: ... absent" and returns.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

/// The captures directory, or `None` (with a SKIP line naming `test`) when it is absent.
pub fn dir_or_skip(test: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("DTCPROBE_CAPTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/captures"));
    if dir.join("README.md").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP {test}: captures directory {} absent (set DTCPROBE_CAPTURES)",
            dir.display()
        );
        None
    }
}

/// The file `rel` under the captures directory, or `None` (with a SKIP line) when absent.
pub fn file_or_skip(test: &str, rel: &str) -> Option<PathBuf> {
    let path = dir_or_skip(test)?.join(rel);
    if path.is_file() {
        Some(path)
    } else {
        eprintln!("SKIP {test}: capture {} absent", path.display());
        None
    }
}

/// Whether tshark (Debian package tshark, scripts/install-test-deps) can be run.
/// The captures directory, when it is there and tshark can read it (else the skip reason is
/// printed): what every test that reads a pcap needs.
pub fn dir_with_tshark_or_skip(test: &str) -> Option<PathBuf> {
    if !tshark_or_skip(test) {
        return None;
    }
    dir_or_skip(test)
}

pub fn tshark_or_skip(test: &str) -> bool {
    let ok = Command::new("tshark")
        .arg("-v")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("SKIP {test}: tshark absent (scripts/install-test-deps installs it)");
    }
    ok
}

/// The payload one side of one TCP connection sent, in sequence order.
#[derive(Debug, Clone)]
pub struct Flow {
    pub stream: u32,
    pub src_port: u16,
    pub dst_port: u16,
    /// The payload up to the first gap (a segment the capture lacks).
    pub data: Vec<u8>,
    /// Whether the capture lacks a segment after `data` (suricata's gap-handling trace does).
    pub gap: bool,
}

/// Every TCP flow (one per connection and direction) of a capture, in order of first appearance.
/// tshark only splits frames into fields; the reassembly (order by relative sequence number,
/// drop retransmitted duplicates) is ours, so a gap or overlap shows up as a decode failure.
pub fn tcp_flows(path: &std::path::Path) -> Vec<Flow> {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(path)
        .args(["-Y", "tcp.len > 0", "-T", "fields", "-E", "separator=,"])
        .args(["-e", "tcp.stream", "-e", "tcp.srcport", "-e", "tcp.dstport"])
        .args(["-e", "tcp.seq", "-e", "tcp.payload"])
        .output()
        .expect("run tshark");
    assert!(
        out.status.success(),
        "tshark -r {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    // (stream, src, dst) -> seq -> payload; order of first appearance kept separately.
    let mut segments: BTreeMap<(u32, u16, u16), BTreeMap<u32, Vec<u8>>> = BTreeMap::new();
    let mut order = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(',').collect();
        assert_eq!(f.len(), 5, "tshark line {line:?}");
        let key = (
            f[0].parse().unwrap(),
            f[1].parse().unwrap(),
            f[2].parse().unwrap(),
        );
        let seq: u32 = f[3].parse().unwrap();
        if !segments.contains_key(&key) {
            order.push(key);
        }
        segments
            .entry(key)
            .or_default()
            .entry(seq)
            .or_insert_with(|| hex(f[4]));
    }
    order
        .into_iter()
        .map(|key| {
            let mut data = Vec::new();
            let mut gap = false;
            let segs = &segments[&key];
            let base = *segs.keys().next().unwrap();
            for (seq, payload) in segs {
                let at = (seq - base) as usize;
                if at > data.len() {
                    gap = true;
                    break;
                }
                // A retransmission overlapping what we have adds only its new tail.
                let overlap = data.len() - at;
                if overlap < payload.len() {
                    data.extend_from_slice(&payload[overlap..]);
                }
            }
            Flow {
                stream: key.0,
                src_port: key.1,
                dst_port: key.2,
                data,
                gap,
            }
        })
        .collect()
}

/// Hex text (no separators) to bytes.
pub fn hex(text: &str) -> Vec<u8> {
    let text = text.trim();
    assert!(text.len() % 2 == 0, "odd hex length {}", text.len());
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

/// The messages of a `.hex` fixture file: `# name: X` lines name the next hex line.
pub fn hex_messages(path: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = Vec::new();
    let mut name = None;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("# name:") {
            name = Some(n.trim().to_string());
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let n = name
                .take()
                .unwrap_or_else(|| panic!("hex line without a name: {line}"));
            out.push((n, hex(line)));
        }
    }
    out
}

/// The message named `name` of a `.hex` fixture file.
pub fn hex_message(messages: &[(String, Vec<u8>)], name: &str) -> Vec<u8> {
    messages
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no message {name}"))
        .1
        .clone()
}

/// A flow cut into DCE/RPC PDUs by their frag_len; panics on a flow that is not DCE/RPC (version
/// 5.0) throughout, so a framing error cannot pass unnoticed. A PDU cut by a capture gap ends
/// the list.
pub fn dcerpc_pdus(flow: &Flow) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut at = 0;
    while at < flow.data.len() {
        let rest = &flow.data[at..];
        assert!(
            rest.len() >= 16 && rest[0] == 5 && rest[1] == 0,
            "stream {} port {}: not DCE/RPC at offset {at}",
            flow.stream,
            flow.src_port
        );
        let len = u16::from_le_bytes([rest[8], rest[9]]) as usize;
        if flow.gap && len > rest.len() {
            break;
        }
        assert!(len >= 16 && len <= rest.len(), "frag_len {len} at {at}");
        out.push(rest[..len].to_vec());
        at += len;
    }
    out
}

/// One TDS message: the packet type and the payloads of its packets up to end-of-message.
#[derive(Debug, Clone)]
pub struct TdsMessage {
    pub packet_type: u8,
    pub packets: usize,
    pub payload: Vec<u8>,
    /// The raw packets (headers included), as they were on the wire.
    pub raw: Vec<u8>,
}

/// A flow cut into TDS messages (packets joined until the EOM status bit).
pub fn tds_messages(data: &[u8]) -> Vec<TdsMessage> {
    let mut out: Vec<TdsMessage> = Vec::new();
    let mut open: Option<TdsMessage> = None;
    let mut at = 0;
    while at < data.len() {
        let rest = &data[at..];
        assert!(rest.len() >= 8, "TDS header cut short at {at}");
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        assert!(len >= 8 && len <= rest.len(), "TDS length {len} at {at}");
        let m = open.get_or_insert_with(|| TdsMessage {
            packet_type: rest[0],
            packets: 0,
            payload: Vec::new(),
            raw: Vec::new(),
        });
        assert_eq!(
            m.packet_type, rest[0],
            "packet type changed inside a message"
        );
        m.packets += 1;
        m.payload.extend_from_slice(&rest[8..len]);
        m.raw.extend_from_slice(&rest[..len]);
        if rest[1] & 0x01 != 0 {
            out.push(open.take().unwrap());
        }
        at += len;
    }
    assert!(open.is_none(), "TDS message without end-of-message");
    out
}
