//! MSDTC's whereabouts (MS-DTCO 2.2.5.11 SWhereabouts): where a transaction manager is and how
//! to reach it. SQL Server answers TM_GET_DTC_ADDRESS with its MSDTC's whereabouts (a one-row
//! VARBINARY result); the client's MSDTC is handed them by ITransactionExportFactory::Create
//! and contacts that host BY NAME. The name inside is what this host must resolve, forward and
//! reverse, and reach on TCP 135: DTCPing's central check, and the hop `dtc_name`.
//!
//! Layout (little-endian):
//! - guidSignature: 16 bytes, the binary GUID {2adb4462-bd41-11d0-b12e-00c04fc2f3ef};
//! - cTmToTmProtocols: u32, at least 1;
//! - rgtmprotUsableList: that many STmToTmProtocol (2.2.5.9), each starting on a 4-byte
//!   boundary (the padding is arbitrary and ignored): tmprotDescribed u32 (TM_PROTOCOL 2.2.6.2),
//!   cbTmProtocolData u32, then that many bytes:
//!   - 2 TmProtocolMsdtcV1: SDtcCmEndpointInfoV1 (2.2.5.5): comprotSupported u32 (MS-CMPO
//!     2.2.4 COM_PROTOCOL bits), guidEndpointID 16 bytes (the TM's contact identifier),
//!     szHostname: NUL-terminated Latin-1, 1 to 16 bytes; cbTmProtocolData at least 21;
//!   - 3 TmProtocolMsdtcV2: SDtcCmEndpointInfoV2 (2.2.5.6): wszHostname, NUL-terminated
//!     UTF-16LE, 2 to 32 bytes. When present, its name is used in place of V1's (2.2.5.11);
//!   - anything else (TIP, extended): kept as its protocol number and length only.
//!
//! Pure and bounded: every length is checked against the input before it is used, the entry
//! count cannot make the decoder allocate more than the input could hold, and an error names
//! what was wrong and where.

use std::fmt;

use thiserror::Error;

/// The binary form of {2adb4462-bd41-11d0-b12e-00c04fc2f3ef}: Data1-3 little-endian, Data4 as
/// is (how a GUID is laid out in memory on Windows, which is what MSDTC copies).
pub const WHEREABOUTS_SIGNATURE: [u8; 16] = [
    0x62, 0x44, 0xdb, 0x2a, 0x41, 0xbd, 0xd0, 0x11, 0xb1, 0x2e, 0x00, 0xc0, 0x4f, 0xc2, 0xf3, 0xef,
];

/// TM_PROTOCOL values (MS-DTCO 2.2.6.2).
pub const TM_PROTOCOL_MSDTC_V1: u32 = 2;
pub const TM_PROTOCOL_MSDTC_V2: u32 = 3;

/// COM_PROTOCOL bits (MS-CMPO 2.2.4): the RPC protocol sequences the TM accepts. None set means
/// `ncacn_ip_tcp`.
pub const PROT_IP_TCP: u32 = 0x01;
pub const PROT_SPX: u32 = 0x02;
pub const PROT_NET_BEUI: u32 = 0x04;
pub const PROT_IP_UDP: u32 = 0x08;
pub const PROT_LRPC: u32 = 0x20;

/// szHostname's bounds in bytes, terminator included (2.2.5.5); wszHostname's (2.2.5.6).
const V1_NAME_MAX: usize = 16;
const V2_NAME_MAX: usize = 32;
/// The fixed part of SDtcCmEndpointInfoV1 before the name.
const V1_FIXED: usize = 4 + 16;
/// guidSignature and cTmToTmProtocols.
const HEADER_LEN: usize = 16 + 4;
/// tmprotDescribed and cbTmProtocolData.
const ENTRY_HEADER_LEN: usize = 8;

/// A GUID as MSDTC stores it (the binary form), printed the usual way.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Guid(pub [u8; 16]);

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u16::from_le_bytes([b[4], b[5]]),
            u16::from_le_bytes([b[6], b[7]]),
            b[8],
            b[9],
            b[10],
            b[11],
            b[12],
            b[13],
            b[14],
            b[15]
        )
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{{{self}}}")
    }
}

/// One STmToTmProtocol entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmProtocol {
    /// OleTx (SDtcCmEndpointInfoV1).
    MsdtcV1 {
        /// COM_PROTOCOL bits.
        com_protocols: u32,
        /// The transaction manager's contact identifier.
        endpoint_id: Guid,
        /// The NetBIOS-style host name (Latin-1).
        host: String,
    },
    /// OleTx's extended information (SDtcCmEndpointInfoV2): the host name in UTF-16.
    MsdtcV2 { host: String },
    /// TIP, an extension protocol, or a number this decoder does not know.
    Other { protocol: u32, data_len: usize },
}

impl TmProtocol {
    /// The TM_PROTOCOL number.
    pub fn number(&self) -> u32 {
        match self {
            TmProtocol::MsdtcV1 { .. } => TM_PROTOCOL_MSDTC_V1,
            TmProtocol::MsdtcV2 { .. } => TM_PROTOCOL_MSDTC_V2,
            TmProtocol::Other { protocol, .. } => *protocol,
        }
    }

    /// A short name for reports.
    pub fn name(&self) -> String {
        match self.number() {
            0 => "none".into(),
            1 => "tip".into(),
            TM_PROTOCOL_MSDTC_V1 => "msdtc_v1".into(),
            TM_PROTOCOL_MSDTC_V2 => "msdtc_v2".into(),
            4 => "extended".into(),
            n => format!("unknown_{n}"),
        }
    }
}

/// A decoded SWhereabouts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Whereabouts {
    pub protocols: Vec<TmProtocol>,
}

impl Whereabouts {
    /// The host name the client's MSDTC contacts: the MsdtcV2 entry's when there is one (MS-DTCO
    /// 2.2.5.11 says it replaces V1's), else the MsdtcV1 entry's. `None` when neither is present
    /// (a TM reachable only by TIP or an extension: not OleTx).
    pub fn host(&self) -> Option<&str> {
        let v2 = self.protocols.iter().find_map(|p| match p {
            TmProtocol::MsdtcV2 { host } => Some(host.as_str()),
            _ => None,
        });
        v2.or_else(|| self.v1().map(|(_, _, host)| host))
    }

    /// The MsdtcV1 entry: (COM_PROTOCOL bits, contact identifier, host name).
    pub fn v1(&self) -> Option<(u32, Guid, &str)> {
        self.protocols.iter().find_map(|p| match p {
            TmProtocol::MsdtcV1 {
                com_protocols,
                endpoint_id,
                host,
            } => Some((*com_protocols, *endpoint_id, host.as_str())),
            _ => None,
        })
    }
}

/// The names of the RPC protocol sequences in a COM_PROTOCOL value (none set: TCP, MS-CMPO
/// 2.2.4); unknown bits as hex.
pub fn com_protocol_names(bits: u32) -> Vec<String> {
    if bits == 0 {
        return vec!["ncacn_ip_tcp".into()];
    }
    let known = [
        (PROT_IP_TCP, "ncacn_ip_tcp"),
        (PROT_SPX, "ncacn_spx"),
        (PROT_NET_BEUI, "ncacn_nb_nb"),
        (PROT_IP_UDP, "ncacn_ip_udp"),
        (PROT_LRPC, "ncalrpc"),
    ];
    let mut names: Vec<String> = known
        .iter()
        .filter(|(bit, _)| bits & bit != 0)
        .map(|(_, n)| n.to_string())
        .collect();
    let rest = bits & !known.iter().fold(0, |a, (bit, _)| a | bit);
    if rest != 0 {
        names.push(format!("0x{rest:x}"));
    }
    names
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WhereaboutsError {
    #[error("{0} bytes: shorter than the 20-byte SWhereabouts header")]
    TooShort(usize),
    #[error("signature {0} is not SWhereabouts' {{2adb4462-bd41-11d0-b12e-00c04fc2f3ef}}")]
    BadSignature(Guid),
    #[error("cTmToTmProtocols is 0 (MS-DTCO requires at least one protocol)")]
    NoProtocols,
    #[error("cTmToTmProtocols is {count}, but {left} bytes cannot hold that many entries")]
    TooManyProtocols { count: u32, left: usize },
    #[error("protocol entry {index} at byte {at} is cut short")]
    EntryTruncated { index: usize, at: usize },
    #[error("protocol entry {index} (TM_PROTOCOL {protocol}) has {len} bytes of data, fewer than its {min}")]
    EntryTooSmall {
        index: usize,
        protocol: u32,
        len: usize,
        min: usize,
    },
    #[error("protocol entry {index}: the host name is empty")]
    EmptyHost { index: usize },
    #[error("protocol entry {index}: the host name has no terminating NUL within {max} bytes")]
    UnterminatedHost { index: usize, max: usize },
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The bytes before the first NUL of `data` (at most `max` bytes, the NUL included), or why not.
fn terminated(
    data: &[u8],
    unit: usize,
    max: usize,
    index: usize,
) -> Result<&[u8], WhereaboutsError> {
    let window = &data[..data.len().min(max)];
    let end = window
        .chunks_exact(unit)
        .position(|c| c.iter().all(|b| *b == 0))
        .ok_or(WhereaboutsError::UnterminatedHost { index, max })?;
    if end == 0 {
        return Err(WhereaboutsError::EmptyHost { index });
    }
    Ok(&window[..end * unit])
}

fn decode_entry(index: usize, protocol: u32, data: &[u8]) -> Result<TmProtocol, WhereaboutsError> {
    let too_small = |min| WhereaboutsError::EntryTooSmall {
        index,
        protocol,
        len: data.len(),
        min,
    };
    match protocol {
        TM_PROTOCOL_MSDTC_V1 => {
            if data.len() < V1_FIXED + 1 {
                return Err(too_small(V1_FIXED + 1));
            }
            let com_protocols = u32_at(data, 0).ok_or_else(|| too_small(V1_FIXED + 1))?;
            let mut id = [0u8; 16];
            id.copy_from_slice(&data[4..V1_FIXED]);
            let name = terminated(&data[V1_FIXED..], 1, V1_NAME_MAX, index)?;
            // Latin-1: every byte is the code point of the same number.
            let host = name.iter().map(|b| char::from(*b)).collect();
            Ok(TmProtocol::MsdtcV1 {
                com_protocols,
                endpoint_id: Guid(id),
                host,
            })
        }
        TM_PROTOCOL_MSDTC_V2 => {
            if data.len() < 2 {
                return Err(too_small(2));
            }
            let name = terminated(data, 2, V2_NAME_MAX, index)?;
            Ok(TmProtocol::MsdtcV2 {
                host: crate::tds::from_utf16le(name),
            })
        }
        other => Ok(TmProtocol::Other {
            protocol: other,
            data_len: data.len(),
        }),
    }
}

/// Decodes an SWhereabouts. Bytes after the last entry are ignored (its padding).
pub fn decode_whereabouts(bytes: &[u8]) -> Result<Whereabouts, WhereaboutsError> {
    if bytes.len() < HEADER_LEN {
        return Err(WhereaboutsError::TooShort(bytes.len()));
    }
    let mut signature = [0u8; 16];
    signature.copy_from_slice(&bytes[..16]);
    if signature != WHEREABOUTS_SIGNATURE {
        return Err(WhereaboutsError::BadSignature(Guid(signature)));
    }
    let count = u32_at(bytes, 16).ok_or(WhereaboutsError::TooShort(bytes.len()))?;
    if count == 0 {
        return Err(WhereaboutsError::NoProtocols);
    }
    let left = bytes.len() - HEADER_LEN;
    // Each entry needs at least its 8-byte header: a count the input cannot hold is refused
    // before anything is allocated for it.
    if count as usize > left / ENTRY_HEADER_LEN {
        return Err(WhereaboutsError::TooManyProtocols { count, left });
    }
    let mut protocols = Vec::with_capacity(count as usize);
    let mut at = HEADER_LEN;
    for index in 0..count as usize {
        // Entries start on a 4-byte boundary of the structure.
        at = at.next_multiple_of(4);
        let truncated = WhereaboutsError::EntryTruncated { index, at };
        let protocol = u32_at(bytes, at).ok_or(truncated.clone())?;
        let len = u32_at(bytes, at + 4).ok_or(truncated.clone())? as usize;
        let start = at + ENTRY_HEADER_LEN;
        let data = start
            .checked_add(len)
            .and_then(|end| bytes.get(start..end))
            .ok_or(truncated)?;
        protocols.push(decode_entry(index, protocol, data)?);
        at = start + len;
    }
    Ok(Whereabouts { protocols })
}

/// Encodes an SWhereabouts (the test peers answer TM_GET_DTC_ADDRESS with one), padding each
/// entry to 4 bytes with zeros. Names longer than their field allows are cut to fit (V1: 15
/// Latin-1 bytes, characters outside Latin-1 as `?`; V2: 15 UTF-16 units); `Other` entries are
/// written with `data_len` zero bytes.
pub fn encode_whereabouts(w: &Whereabouts) -> Vec<u8> {
    let mut v = WHEREABOUTS_SIGNATURE.to_vec();
    v.extend_from_slice(&(w.protocols.len() as u32).to_le_bytes());
    for p in &w.protocols {
        while v.len() % 4 != 0 {
            v.push(0);
        }
        let data = match p {
            TmProtocol::MsdtcV1 {
                com_protocols,
                endpoint_id,
                host,
            } => {
                let mut d = com_protocols.to_le_bytes().to_vec();
                d.extend_from_slice(&endpoint_id.0);
                d.extend(
                    host.chars()
                        .take(V1_NAME_MAX - 1)
                        .map(|c| u8::try_from(c).unwrap_or(b'?')),
                );
                d.push(0);
                d
            }
            TmProtocol::MsdtcV2 { host } => {
                let mut d: Vec<u8> = host
                    .encode_utf16()
                    .take(V2_NAME_MAX / 2 - 1)
                    .flat_map(u16::to_le_bytes)
                    .collect();
                d.extend_from_slice(&[0, 0]);
                d
            }
            TmProtocol::Other { data_len, .. } => vec![0; *data_len],
        };
        v.extend_from_slice(&p.number().to_le_bytes());
        v.extend_from_slice(&(data.len() as u32).to_le_bytes());
        v.extend(data);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: Guid = Guid([
        0x10, 0x32, 0x54, 0x76, 0x98, 0xba, 0xdc, 0xfe, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd,
        0xef,
    ]);

    /// What a Windows MSDTC of 2008 or later describes itself as: V1 (TCP, contact id, the
    /// NetBIOS name) and V2 (the same name in UTF-16), written byte by byte from MS-DTCO.
    fn sql01_bytes() -> Vec<u8> {
        let mut b = WHEREABOUTS_SIGNATURE.to_vec();
        b.extend_from_slice(&[2, 0, 0, 0]); // two protocols
        b.extend_from_slice(&[2, 0, 0, 0]); // TmProtocolMsdtcV1
        b.extend_from_slice(&[26, 0, 0, 0]); // 4 + 16 + "SQL01\0"
        b.extend_from_slice(&[1, 0, 0, 0]); // PROT_IP_TCP
        b.extend_from_slice(&ID.0);
        b.extend_from_slice(b"SQL01\0");
        b.extend_from_slice(&[0xAA, 0xBB]); // padding to 4 bytes: arbitrary, ignored
        b.extend_from_slice(&[3, 0, 0, 0]); // TmProtocolMsdtcV2
        b.extend_from_slice(&[12, 0, 0, 0]);
        b.extend_from_slice(&crate::tds::utf16le("SQL01\0"));
        b
    }

    #[test]
    fn signature_is_the_guid_in_windows_memory_order() {
        assert_eq!(
            Guid(WHEREABOUTS_SIGNATURE).to_string(),
            "2adb4462-bd41-11d0-b12e-00c04fc2f3ef"
        );
        assert_eq!(ID.to_string(), "76543210-ba98-fedc-0123-456789abcdef");
    }

    #[test]
    fn decodes_v1_and_v2_entries_with_padding() {
        let w = decode_whereabouts(&sql01_bytes()).unwrap();
        assert_eq!(
            w.protocols,
            [
                TmProtocol::MsdtcV1 {
                    com_protocols: PROT_IP_TCP,
                    endpoint_id: ID,
                    host: "SQL01".into()
                },
                TmProtocol::MsdtcV2 {
                    host: "SQL01".into()
                }
            ]
        );
        assert_eq!(w.host(), Some("SQL01"));
        assert_eq!(w.v1().map(|v| v.1), Some(ID));
        assert_eq!(w.protocols[1].name(), "msdtc_v2");
    }

    #[test]
    fn v2_name_replaces_v1_name_and_v1_alone_is_enough() {
        let both = Whereabouts {
            protocols: vec![
                TmProtocol::MsdtcV1 {
                    com_protocols: 0,
                    endpoint_id: ID,
                    host: "OLDNAME".into(),
                },
                TmProtocol::MsdtcV2 {
                    host: "NEWNAME".into(),
                },
            ],
        };
        assert_eq!(both.host(), Some("NEWNAME"));
        let v1 = Whereabouts {
            protocols: vec![both.protocols[0].clone()],
        };
        assert_eq!(
            decode_whereabouts(&encode_whereabouts(&v1)).unwrap().host(),
            Some("OLDNAME")
        );
        let tip_only = Whereabouts {
            protocols: vec![TmProtocol::Other {
                protocol: 1,
                data_len: 5,
            }],
        };
        let again = decode_whereabouts(&encode_whereabouts(&tip_only)).unwrap();
        assert_eq!(again, tip_only);
        assert_eq!(again.host(), None);
    }

    #[test]
    fn encoder_writes_what_the_decoder_was_checked_against() {
        let w = decode_whereabouts(&sql01_bytes()).unwrap();
        let mut again = encode_whereabouts(&w);
        // The encoder pads with zeros where the hand-made bytes had 0xAA 0xBB.
        again[20 + 8 + 26..20 + 8 + 28].copy_from_slice(&[0xAA, 0xBB]);
        assert_eq!(again, sql01_bytes());
    }

    #[test]
    fn latin1_names_and_protocol_names() {
        let w = Whereabouts {
            protocols: vec![TmProtocol::MsdtcV1 {
                com_protocols: PROT_IP_TCP | PROT_LRPC | 0x100,
                endpoint_id: ID,
                host: "CAFÉ".into(),
            }],
        };
        let bytes = encode_whereabouts(&w);
        assert!(bytes.windows(5).any(|x| x == b"CAF\xC9\0"));
        assert_eq!(decode_whereabouts(&bytes).unwrap(), w);
        assert_eq!(
            com_protocol_names(PROT_IP_TCP | PROT_LRPC | 0x100),
            ["ncacn_ip_tcp", "ncalrpc", "0x100"]
        );
        assert_eq!(com_protocol_names(0), ["ncacn_ip_tcp"]);
    }

    #[test]
    fn malformed_input_is_an_error_naming_what() {
        let good = sql01_bytes();
        assert_eq!(
            decode_whereabouts(&good[..19]),
            Err(WhereaboutsError::TooShort(19))
        );
        let mut sig = good.clone();
        sig[0] ^= 1;
        assert!(matches!(
            decode_whereabouts(&sig),
            Err(WhereaboutsError::BadSignature(_))
        ));
        let mut none = good.clone();
        none[16] = 0;
        assert_eq!(
            decode_whereabouts(&none),
            Err(WhereaboutsError::NoProtocols)
        );
        let mut many = good.clone();
        many[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode_whereabouts(&many),
            Err(WhereaboutsError::TooManyProtocols { .. })
        ));
        // Every cut inside the entries fails cleanly, never reads past the input.
        for cut in 20..good.len() {
            assert!(decode_whereabouts(&good[..cut]).is_err(), "cut at {cut}");
        }
        // A V1 entry whose data is too small for its fixed part and a name.
        let mut small = good.clone();
        small[24..28].copy_from_slice(&20u32.to_le_bytes());
        assert!(matches!(
            decode_whereabouts(&small),
            Err(WhereaboutsError::EntryTooSmall { index: 0, .. })
        ));
        // An empty name, and a name with no NUL within its 16 bytes.
        let v1 = |name: &[u8]| {
            let mut b = WHEREABOUTS_SIGNATURE.to_vec();
            b.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
            b.extend_from_slice(&((20 + name.len()) as u32).to_le_bytes());
            b.extend_from_slice(&[1, 0, 0, 0]);
            b.extend_from_slice(&ID.0);
            b.extend_from_slice(name);
            decode_whereabouts(&b)
        };
        assert_eq!(v1(b"\0"), Err(WhereaboutsError::EmptyHost { index: 0 }));
        assert_eq!(
            v1(b"ABCDEFGHIJKLMNOPQRST\0"),
            Err(WhereaboutsError::UnterminatedHost { index: 0, max: 16 })
        );
        assert_eq!(
            v1(b"ABCDEFGHIJKLMNO\0").unwrap().host(),
            Some("ABCDEFGHIJKLMNO")
        );
    }

    /// Every prefix and every single-byte change of a valid whereabouts decodes or fails
    /// without a panic (what the fuzz target holds to, run on every test run).
    #[test]
    fn no_panic_on_any_mutation() {
        let good = sql01_bytes();
        for i in 0..good.len() {
            for x in [0x00, 0x01, 0x7f, 0x80, 0xff] {
                let mut m = good.clone();
                m[i] = x;
                if let Ok(w) = decode_whereabouts(&m) {
                    // What decodes re-encodes to something that decodes the same.
                    assert_eq!(decode_whereabouts(&encode_whereabouts(&w)), Ok(w));
                }
            }
        }
    }
}
