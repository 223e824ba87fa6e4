//! The PRELOGIN option list (MS-TDS 2.2.6.5): a table of (token, big-endian offset, big-endian
//! length) entries ended by 0xFF, then the option values the offsets point at (offsets count from
//! the start of the payload).

use thiserror::Error;

pub const PL_VERSION: u8 = 0x00;
pub const PL_ENCRYPTION: u8 = 0x01;
pub const PL_INSTOPT: u8 = 0x02;
pub const PL_THREADID: u8 = 0x03;
pub const PL_MARS: u8 = 0x04;
pub const PL_TERMINATOR: u8 = 0xFF;

/// ENCRYPTION values.
pub const ENCRYPT_OFF: u8 = 0;
pub const ENCRYPT_ON: u8 = 1;
pub const ENCRYPT_NOT_SUP: u8 = 2;
pub const ENCRYPT_REQ: u8 = 3;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum PreloginError {
    #[error("PRELOGIN option table cut short at byte {0}")]
    TruncatedTable(usize),
    #[error("PRELOGIN option 0x{token:02X} points outside the payload ({offset}+{len})")]
    ValueOutOfRange {
        token: u8,
        offset: usize,
        len: usize,
    },
    #[error("PRELOGIN option table has no terminator")]
    NoTerminator,
}

/// Builds a PRELOGIN payload from (token, value) pairs, in the given order.
pub fn encode_prelogin(options: &[(u8, &[u8])]) -> Vec<u8> {
    let table_len = options.len() * 5 + 1;
    let mut table = Vec::with_capacity(table_len);
    let mut data = Vec::new();
    for (token, value) in options {
        table.push(*token);
        table.extend_from_slice(&((table_len + data.len()) as u16).to_be_bytes());
        table.extend_from_slice(&(value.len() as u16).to_be_bytes());
        data.extend_from_slice(value);
    }
    table.push(PL_TERMINATOR);
    table.extend(data);
    table
}

/// The VERSION option value: major, minor, big-endian build, big-endian sub-build.
pub fn encode_version(major: u8, minor: u8, build: u16, sub_build: u16) -> [u8; 6] {
    let [b0, b1] = build.to_be_bytes();
    let [s0, s1] = sub_build.to_be_bytes();
    [major, minor, b0, b1, s0, s1]
}

/// The (token, value) pairs of a PRELOGIN payload, in table order. Strict: every table entry
/// must be complete, every value inside the payload, and the table must end with the terminator.
pub fn parse_prelogin_options(payload: &[u8]) -> Result<Vec<(u8, &[u8])>, PreloginError> {
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(&token) = payload.get(i) {
        if token == PL_TERMINATOR {
            return Ok(out);
        }
        let entry = payload
            .get(i + 1..i + 5)
            .ok_or(PreloginError::TruncatedTable(i))?;
        let offset = u16::from_be_bytes([entry[0], entry[1]]) as usize;
        let len = u16::from_be_bytes([entry[2], entry[3]]) as usize;
        let value = payload
            .get(offset..offset + len)
            .ok_or(PreloginError::ValueOutOfRange { token, offset, len })?;
        out.push((token, value));
        i += 5;
    }
    Err(PreloginError::NoTerminator)
}

/// What a server's PRELOGIN answer says that the driver does not expose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreloginInfo {
    /// major.minor.build, e.g. `16.0.1000`.
    pub version: Option<String>,
    /// The ENCRYPTION byte: 0 off, 1 on, 2 not supported, 3 required.
    pub encryption: Option<u8>,
}

/// The version and encryption of a PRELOGIN answer; `None` when the option list is malformed or
/// carries neither.
pub fn parse_prelogin(payload: &[u8]) -> Option<PreloginInfo> {
    let mut info = PreloginInfo {
        version: None,
        encryption: None,
    };
    for (token, value) in parse_prelogin_options(payload).ok()? {
        match token {
            PL_VERSION if value.len() >= 4 => {
                let build = u16::from_be_bytes([value[2], value[3]]);
                info.version = Some(format!("{}.{}.{}", value[0], value[1], build));
            }
            PL_ENCRYPTION if !value.is_empty() => info.encryption = Some(value[0]),
            _ => {}
        }
    }
    if info.version.is_none() && info.encryption.is_none() {
        return None;
    }
    Some(info)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server answer written out byte by byte (VERSION 6 bytes, ENCRYPTION 1 byte).
    const ANSWER: [u8; 18] = [
        PL_VERSION,
        0,
        11,
        0,
        6, //
        PL_ENCRYPTION,
        0,
        17,
        0,
        1,             //
        PL_TERMINATOR, //
        16,
        0,
        0x03,
        0xE8,
        0,
        0, //
        ENCRYPT_REQ,
    ];

    #[test]
    fn builder_matches_the_spec_layout() {
        let built = encode_prelogin(&[
            (PL_VERSION, &encode_version(16, 0, 1000, 0)),
            (PL_ENCRYPTION, &[ENCRYPT_REQ]),
        ]);
        assert_eq!(built, ANSWER);
        assert_eq!(encode_prelogin(&[]), vec![PL_TERMINATOR]);
    }

    #[test]
    fn parses_options_and_info() {
        assert_eq!(
            parse_prelogin_options(&ANSWER),
            Ok(vec![
                (PL_VERSION, &ANSWER[11..17]),
                (PL_ENCRYPTION, &ANSWER[17..18])
            ])
        );
        assert_eq!(
            parse_prelogin(&ANSWER),
            Some(PreloginInfo {
                version: Some("16.0.1000".into()),
                encryption: Some(ENCRYPT_REQ),
            })
        );
    }

    #[test]
    fn rejects_malformed_tables() {
        let mut out_of_range = ANSWER;
        out_of_range[7] = 18; // ENCRYPTION value at offset 18: past the end
        let cases: &[(&[u8], PreloginError)] = &[
            (&[], PreloginError::NoTerminator),
            (&ANSWER[..3], PreloginError::TruncatedTable(0)),
            (
                &ANSWER[..10],
                PreloginError::ValueOutOfRange {
                    token: PL_VERSION,
                    offset: 11,
                    len: 6,
                },
            ),
            // A complete entry (its value is its own first byte), then the end: no terminator.
            (&[PL_MARS, 0, 0, 0, 1], PreloginError::NoTerminator),
            (
                &out_of_range,
                PreloginError::ValueOutOfRange {
                    token: PL_ENCRYPTION,
                    offset: 18,
                    len: 1,
                },
            ),
        ];
        for (payload, want) in cases {
            assert_eq!(parse_prelogin_options(payload), Err(*want), "{payload:?}");
            assert_eq!(parse_prelogin(payload), None);
        }
        // Well-formed, but neither VERSION nor ENCRYPTION.
        assert_eq!(parse_prelogin(&encode_prelogin(&[(PL_MARS, &[0])])), None);
    }
}
