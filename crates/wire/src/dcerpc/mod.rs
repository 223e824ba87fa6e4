//! A small DCE/RPC client codec (MS-RPCE connection-oriented, NDR 2.0, little-endian), just enough
//! to ask an endpoint mapper (TCP 135) where an interface listens: PDU framing (bind, bind_ack,
//! bind_nak, request, response with fragment reassembly, fault), NDR for `ept_lookup` (opnum 2) and
//! `ept_map` (opnum 3), and protocol towers.
//!
//! Pure: bytes in, values out, no I/O (that is dtcprobe's `hops::epm`). Every decoder takes untrusted
//! network input and returns an error instead of panicking; a cargo-fuzz target (`fuzz/`) holds it
//! to that.

pub mod epm;
pub mod ndr;
pub mod pdu;

use std::fmt;

use thiserror::Error;

/// A malformed or unexpected byte sequence from the peer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("truncated {what}: needed {needed} bytes at offset {offset}, only {have} available")]
    Truncated {
        what: &'static str,
        offset: usize,
        needed: usize,
        have: usize,
    },
    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },
}

impl DecodeError {
    pub fn invalid(what: &'static str, detail: impl Into<String>) -> DecodeError {
        DecodeError::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

/// A UUID, held in its textual (big-endian) byte order. On the wire (NDR, towers) the first three
/// fields are little-endian: see [`Uuid::to_le_bytes`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    pub const NIL: Uuid = Uuid([0; 16]);

    /// Parses `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (any case).
    pub fn parse(text: &str) -> Option<Uuid> {
        let text = text.trim();
        let groups: Vec<&str> = text.split('-').collect();
        let lens = [8, 4, 4, 4, 12];
        if groups.len() != 5 || groups.iter().zip(lens).any(|(g, l)| g.len() != l) {
            return None;
        }
        let hex: String = groups.concat();
        let mut out = [0u8; 16];
        for (i, byte) in out.iter_mut().enumerate() {
            let pair = hex.get(i * 2..i * 2 + 2)?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(Uuid(out))
    }

    /// The NDR / tower wire form: time_low, time_mid, time_hi_and_version little-endian, the
    /// last eight bytes as they are.
    pub fn to_le_bytes(&self) -> [u8; 16] {
        let b = self.0;
        [
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ]
    }

    /// Inverse of [`Uuid::to_le_bytes`].
    pub fn from_le_bytes(b: [u8; 16]) -> Uuid {
        Uuid([
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13],
            b[14], b[15],
        ])
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

/// An interface or transfer syntax: UUID and version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SyntaxId {
    pub uuid: Uuid,
    pub major: u16,
    pub minor: u16,
}

impl SyntaxId {
    /// Parses `UUID` or `UUID/vMAJ.MIN` (also `UUID/MAJ.MIN`); the version defaults to
    /// `default_version`.
    pub fn parse(text: &str, default_version: (u16, u16)) -> Option<SyntaxId> {
        let (uuid, version) = match text.split_once('/') {
            Some((u, v)) => (u, Some(v)),
            None => (text, None),
        };
        let uuid = Uuid::parse(uuid)?;
        let (major, minor) = match version {
            None => default_version,
            Some(v) => {
                let v = v
                    .strip_prefix('v')
                    .or_else(|| v.strip_prefix('V'))
                    .unwrap_or(v);
                let (a, b) = v.split_once('.').unwrap_or((v, "0"));
                (a.parse().ok()?, b.parse().ok()?)
            }
        };
        Some(SyntaxId { uuid, major, minor })
    }
}

impl fmt::Display for SyntaxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} v{}.{}", self.uuid, self.major, self.minor)
    }
}

const fn uuid(b: [u8; 16]) -> Uuid {
    Uuid(b)
}

/// The endpoint mapper interface, e1af8308-5d1f-11c9-91a4-08002b14a0fa v3.0.
pub const EPM_INTERFACE: SyntaxId = SyntaxId {
    uuid: uuid([
        0xe1, 0xaf, 0x83, 0x08, 0x5d, 0x1f, 0x11, 0xc9, 0x91, 0xa4, 0x08, 0x00, 0x2b, 0x14, 0xa0,
        0xfa,
    ]),
    major: 3,
    minor: 0,
};

/// NDR 2.0 transfer syntax, 8a885d04-1ceb-11c9-9fe8-08002b104860 v2.0.
pub const NDR_SYNTAX: SyntaxId = SyntaxId {
    uuid: uuid([
        0x8a, 0x88, 0x5d, 0x04, 0x1c, 0xeb, 0x11, 0xc9, 0x9f, 0xe8, 0x08, 0x00, 0x2b, 0x10, 0x48,
        0x60,
    ]),
    major: 2,
    minor: 0,
};

/// MSDTC's IXnRemote, 906b0ce0-c70b-1067-b317-00dd010662da v1.0: the default interface looked up.
pub const IXNREMOTE: SyntaxId = SyntaxId {
    uuid: uuid([
        0x90, 0x6b, 0x0c, 0xe0, 0xc7, 0x0b, 0x10, 0x67, 0xb3, 0x17, 0x00, 0xdd, 0x01, 0x06, 0x62,
        0xda,
    ]),
    major: 1,
    minor: 0,
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_text_and_wire_forms() {
        let u = Uuid::parse("E1AF8308-5D1F-11C9-91A4-08002B14A0FA").unwrap();
        assert_eq!(u, EPM_INTERFACE.uuid);
        assert_eq!(u.to_string(), "e1af8308-5d1f-11c9-91a4-08002b14a0fa");
        let wire = u.to_le_bytes();
        assert_eq!(
            &wire[..8],
            &[0x08, 0x83, 0xaf, 0xe1, 0x1f, 0x5d, 0xc9, 0x11]
        );
        assert_eq!(Uuid::from_le_bytes(wire), u);
        for bad in [
            "",
            "e1af8308",
            "e1af8308-5d1f-11c9-91a4-08002b14a0fz",
            "e1af83085-d1f-11c9-91a4-08002b14a0fa",
        ] {
            assert_eq!(Uuid::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn syntax_id_parsing() {
        let rows = [
            ("906b0ce0-c70b-1067-b317-00dd010662da", Some((1, 0))),
            ("906b0ce0-c70b-1067-b317-00dd010662da/v2.3", Some((2, 3))),
            ("906b0ce0-c70b-1067-b317-00dd010662da/0.0", Some((0, 0))),
            ("906b0ce0-c70b-1067-b317-00dd010662da/v7", Some((7, 0))),
            ("906b0ce0-c70b-1067-b317-00dd010662da/vx.1", None),
            ("nope/v1.0", None),
        ];
        for (text, want) in rows {
            let got = SyntaxId::parse(text, (1, 0)).map(|s| (s.major, s.minor));
            assert_eq!(got, want, "{text}");
        }
        assert_eq!(
            SyntaxId::parse("906B0CE0-C70B-1067-B317-00DD010662DA", (1, 0)),
            Some(IXNREMOTE)
        );
        assert_eq!(
            IXNREMOTE.to_string(),
            "906b0ce0-c70b-1067-b317-00dd010662da v1.0"
        );
    }
}
