//! Transaction manager requests (MS-TDS 2.2.6.9, packet type 0x0E) and the SQLBatch framing
//! that carries a transaction descriptor (ALL_HEADERS, MS-TDS 2.2.5.3).
//!
//! Why dtcprobe writes these itself: the `tx_enlist` hop makes SQL Server enlist in a transaction
//! that THIS host's MSDTC began (TM_GET_DTC_ADDRESS, then TM_PROPAGATE_XACT with the export
//! cookie), which is what TransactionScope/ODBC enlistment does and what tiberius cannot send.
//! The test peer decodes the same requests, so both directions live here, free of I/O.
//!
//! Layouts (little-endian throughout):
//! - ALL_HEADERS: TotalLength u32 (itself included), then headers, each HeaderLength u32
//!   (itself included), HeaderType u16, data. Type 2 = transaction descriptor: descriptor u64,
//!   outstanding request count u32 (18 bytes; with TotalLength 22 bytes).
//! - TransMgrReq: ALL_HEADERS, RequestType u16, then per type:
//!   0 TM_GET_DTC_ADDRESS: US_VARBYTE, always empty (two zero bytes);
//!   1 TM_PROPAGATE_XACT: US_VARBYTE cookie (empty = unenlist);
//!   5 TM_BEGIN_XACT: isolation level u8, name B_VARBYTE;
//!   6 TM_PROMOTE_XACT: nothing;
//!   7 TM_COMMIT_XACT / 8 TM_ROLLBACK_XACT: name B_VARBYTE, flags u8 (0x01: begin a new
//!   transaction), and with that flag an isolation level u8 and a new name B_VARBYTE;
//!   9 TM_SAVE_XACT: name B_VARBYTE.
//!
//! Transaction names are B_VARBYTE (MS-TDS 2.2.6.9: XACT_NAME, BEGIN_XACT_NAME): the length byte
//! counts the BYTES of the UTF-16LE name, not its characters. SqlClient (WriteByte of
//! `transactionName.Length * 2`), tedious and mssql-tds write it that way; a character count
//! would make the server read half a name and then take the rest of it as the flags byte.
//!
//! ENVCHANGE 15 (promote) is the one ENVCHANGE whose value lies outside the token's own length:
//! MS-TDS 2.2.7.9 says its LENGTH is sent as 0x01 (the type byte only) and the client reads the
//! L_VARBYTE DTC token and the 0x00 old value after it; `reply::parse_reply` does exactly that.

use thiserror::Error;

use super::strings::from_utf16le;

/// Transaction manager request (client -> server).
pub const PKT_TRANSACTION_MANAGER: u8 = 0x0E;

pub const TM_GET_DTC_ADDRESS: u16 = 0;
pub const TM_PROPAGATE_XACT: u16 = 1;
pub const TM_BEGIN_XACT: u16 = 5;
pub const TM_PROMOTE_XACT: u16 = 6;
pub const TM_COMMIT_XACT: u16 = 7;
pub const TM_ROLLBACK_XACT: u16 = 8;
pub const TM_SAVE_XACT: u16 = 9;

/// ALL_HEADERS header type of the transaction descriptor.
pub const HEADER_TRANSACTION_DESCRIPTOR: u16 = 2;

/// ENVCHANGE types about transactions (MS-TDS 2.2.7.9). 8-10 are also in [`super::token`].
pub const ENV_BEGIN_TRAN: u8 = 8;
pub const ENV_COMMIT_TRAN: u8 = 9;
pub const ENV_ROLLBACK_TRAN: u8 = 10;
pub const ENV_ENLIST_DTC: u8 = 11;
pub const ENV_DEFECT_TRAN: u8 = 12;
pub const ENV_PROMOTE_TRAN: u8 = 15;
pub const ENV_TM_ADDRESS: u8 = 16;
pub const ENV_TRANSACTION_ENDED: u8 = 17;

/// The transaction descriptor header: which transaction a request runs in (0 = none, auto
/// commit) and how many requests the client has outstanding on the connection (1 without MARS).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TxHeader {
    pub descriptor: u64,
    pub outstanding_requests: u32,
}

/// One transaction manager request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TmRequest {
    GetDtcAddress,
    /// An export cookie from the client's MSDTC; empty means "unenlist".
    Propagate {
        cookie: Vec<u8>,
    },
    Begin {
        isolation: u8,
        name: String,
    },
    Promote,
    Commit {
        name: String,
        /// Begin a new transaction right after: (isolation level, name).
        begin_new: Option<(u8, String)>,
    },
    Rollback {
        name: String,
        begin_new: Option<(u8, String)>,
    },
    Save {
        name: String,
    },
}

impl TmRequest {
    pub fn request_type(&self) -> u16 {
        match self {
            TmRequest::GetDtcAddress => TM_GET_DTC_ADDRESS,
            TmRequest::Propagate { .. } => TM_PROPAGATE_XACT,
            TmRequest::Begin { .. } => TM_BEGIN_XACT,
            TmRequest::Promote => TM_PROMOTE_XACT,
            TmRequest::Commit { .. } => TM_COMMIT_XACT,
            TmRequest::Rollback { .. } => TM_ROLLBACK_XACT,
            TmRequest::Save { .. } => TM_SAVE_XACT,
        }
    }

    /// A short name for logs and test assertions.
    pub fn name(&self) -> &'static str {
        match self {
            TmRequest::GetDtcAddress => "get_dtc_address",
            TmRequest::Propagate { .. } => "propagate",
            TmRequest::Begin { .. } => "begin",
            TmRequest::Promote => "promote",
            TmRequest::Commit { .. } => "commit",
            TmRequest::Rollback { .. } => "rollback",
            TmRequest::Save { .. } => "save",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TmError {
    #[error("ALL_HEADERS cut short or inconsistent (total length {0})")]
    BadAllHeaders(usize),
    #[error("transaction manager request cut short")]
    Truncated,
    #[error("unknown transaction manager request type {0}")]
    UnknownType(u16),
    #[error("the cookie is longer than a US_VARBYTE can carry ({0} bytes)")]
    CookieTooLong(usize),
    #[error("transaction name of {0} UTF-16 bytes is longer than a B_VARBYTE can carry (254)")]
    NameTooLong(usize),
    #[error("transaction name has an odd byte length ({0}): not UTF-16LE")]
    OddNameLength(usize),
}

/// A transaction name as B_VARBYTE: one byte counting the UTF-16LE bytes, then those bytes.
/// 127 UTF-16 code units fit (254 bytes); SQL Server's own limit on names is 32 characters.
fn name_b_varbyte(name: &str) -> Result<Vec<u8>, TmError> {
    let bytes = super::strings::utf16le(name);
    let len = u8::try_from(bytes.len()).map_err(|_| TmError::NameTooLong(bytes.len()))?;
    let mut v = Vec::with_capacity(1 + bytes.len());
    v.push(len);
    v.extend(bytes);
    Ok(v)
}

/// ALL_HEADERS with only the transaction descriptor header (22 bytes).
pub fn encode_all_headers(tx: TxHeader) -> Vec<u8> {
    let mut v = Vec::with_capacity(22);
    v.extend_from_slice(&22u32.to_le_bytes());
    v.extend_from_slice(&18u32.to_le_bytes());
    v.extend_from_slice(&HEADER_TRANSACTION_DESCRIPTOR.to_le_bytes());
    v.extend_from_slice(&tx.descriptor.to_le_bytes());
    v.extend_from_slice(&tx.outstanding_requests.to_le_bytes());
    v
}

/// Reads ALL_HEADERS at the front of `payload`: the transaction descriptor header if present,
/// and where the request proper starts. Other header types (query notifications, trace
/// activity) are skipped.
pub fn parse_all_headers(payload: &[u8]) -> Result<(Option<TxHeader>, usize), TmError> {
    let total = read_u32(payload, 0).ok_or(TmError::Truncated)? as usize;
    if total < 4 || total > payload.len() {
        return Err(TmError::BadAllHeaders(total));
    }
    let mut tx = None;
    let mut at = 4;
    while at < total {
        let len = read_u32(payload, at).ok_or(TmError::BadAllHeaders(total))? as usize;
        if len < 6 || at + len > total {
            return Err(TmError::BadAllHeaders(total));
        }
        let kind = u16::from_le_bytes([payload[at + 4], payload[at + 5]]);
        if kind == HEADER_TRANSACTION_DESCRIPTOR {
            let data = &payload[at + 6..at + len];
            if data.len() < 12 {
                return Err(TmError::BadAllHeaders(total));
            }
            tx = Some(TxHeader {
                descriptor: u64::from_le_bytes(data[0..8].try_into().unwrap_or_default()),
                outstanding_requests: u32::from_le_bytes(
                    data[8..12].try_into().unwrap_or_default(),
                ),
            });
        }
        at += len;
    }
    Ok((tx, total))
}

/// The TransMgrReq payload (packet type [`PKT_TRANSACTION_MANAGER`]).
pub fn encode_tm_request(tx: TxHeader, request: &TmRequest) -> Result<Vec<u8>, TmError> {
    let mut v = encode_all_headers(tx);
    v.extend_from_slice(&request.request_type().to_le_bytes());
    match request {
        TmRequest::GetDtcAddress => v.extend_from_slice(&[0, 0]),
        TmRequest::Propagate { cookie } => {
            let len =
                u16::try_from(cookie.len()).map_err(|_| TmError::CookieTooLong(cookie.len()))?;
            v.extend_from_slice(&len.to_le_bytes());
            v.extend_from_slice(cookie);
        }
        TmRequest::Begin { isolation, name } => {
            v.push(*isolation);
            v.extend(name_b_varbyte(name)?);
        }
        TmRequest::Promote => {}
        TmRequest::Commit { name, begin_new } | TmRequest::Rollback { name, begin_new } => {
            v.extend(name_b_varbyte(name)?);
            match begin_new {
                None => v.push(0),
                Some((isolation, new_name)) => {
                    v.push(1);
                    v.push(*isolation);
                    v.extend(name_b_varbyte(new_name)?);
                }
            }
        }
        TmRequest::Save { name } => v.extend(name_b_varbyte(name)?),
    }
    Ok(v)
}

/// Decodes a TransMgrReq payload. Strict about lengths; a missing ALL_HEADERS transaction
/// header is reported as `None` (SQL Server then refuses the request; that is the caller's call).
pub fn decode_tm_request(payload: &[u8]) -> Result<(Option<TxHeader>, TmRequest), TmError> {
    let (tx, at) = parse_all_headers(payload)?;
    let mut r = Reader { bytes: payload, at };
    let kind = r.u16()?;
    let request = match kind {
        TM_GET_DTC_ADDRESS => {
            // An empty US_VARBYTE; older clients may omit it.
            if r.remaining() >= 2 {
                r.u16()?;
            }
            TmRequest::GetDtcAddress
        }
        TM_PROPAGATE_XACT => {
            let len = r.u16()? as usize;
            TmRequest::Propagate {
                cookie: r.take(len)?.to_vec(),
            }
        }
        TM_BEGIN_XACT => TmRequest::Begin {
            isolation: r.u8()?,
            name: r.name()?,
        },
        TM_PROMOTE_XACT => TmRequest::Promote,
        TM_COMMIT_XACT | TM_ROLLBACK_XACT => {
            let name = r.name()?;
            let flags = r.u8()?;
            let begin_new = if flags & 1 != 0 {
                Some((r.u8()?, r.name()?))
            } else {
                None
            };
            if kind == TM_COMMIT_XACT {
                TmRequest::Commit { name, begin_new }
            } else {
                TmRequest::Rollback { name, begin_new }
            }
        }
        TM_SAVE_XACT => TmRequest::Save { name: r.name()? },
        other => return Err(TmError::UnknownType(other)),
    };
    Ok((tx, request))
}

/// A SQLBatch payload (packet type 0x01): ALL_HEADERS with the transaction descriptor, then the
/// statement text in UTF-16LE.
pub fn encode_sql_batch(tx: TxHeader, sql: &str) -> Vec<u8> {
    let mut v = encode_all_headers(tx);
    v.extend(super::strings::utf16le(sql));
    v
}

/// Decodes a SQLBatch payload: its transaction header (if any) and its text.
pub fn decode_sql_batch(payload: &[u8]) -> Result<(Option<TxHeader>, String), TmError> {
    let (tx, at) = parse_all_headers(payload)?;
    Ok((tx, from_utf16le(&payload[at..])))
}

/// An ENVCHANGE about a transaction: type 8-12, 16, 17 carry B_VARBYTE new and old values
/// (a descriptor is 8 bytes, little-endian). Type 15 (promote) is written as SQL Server sends
/// it (MS-TDS 2.2.7.9): token LENGTH 0x0001 covering only the type byte, then, outside that
/// length, the L_VARBYTE DTC token and a 0x00 old value.
pub fn envchange_tx(kind: u8, new: &[u8], old: &[u8]) -> Vec<u8> {
    if kind == ENV_PROMOTE_TRAN {
        let mut v = vec![super::token::TOKEN_ENVCHANGE, 1, 0, kind];
        v.extend_from_slice(&(new.len() as u32).to_le_bytes());
        v.extend_from_slice(new);
        v.push(0);
        return v;
    }
    let mut body = vec![kind];
    body.push(new.len().min(255) as u8);
    body.extend_from_slice(&new[..new.len().min(255)]);
    body.push(old.len().min(255) as u8);
    body.extend_from_slice(&old[..old.len().min(255)]);
    super::token::token_with_len(super::token::TOKEN_ENVCHANGE, &body)
}

/// A descriptor as it travels in an ENVCHANGE value: 8 bytes little-endian; `None` for any
/// other length.
pub fn descriptor_from_bytes(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.try_into().ok()?))
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len().saturating_sub(self.at)
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8], TmError> {
        let s = self
            .bytes
            .get(self.at..self.at + n)
            .ok_or(TmError::Truncated)?;
        self.at += n;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, TmError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, TmError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    /// A B_VARBYTE transaction name: the length byte counts bytes of UTF-16LE.
    fn name(&mut self) -> Result<String, TmError> {
        let len = self.u8()? as usize;
        if len % 2 != 0 {
            return Err(TmError::OddNameLength(len));
        }
        Ok(from_utf16le(self.take(len)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TX: TxHeader = TxHeader {
        descriptor: 0x0102_0304_0506_0708,
        outstanding_requests: 1,
    };

    /// ALL_HEADERS as MS-TDS 2.2.5.3 lays it out (TotalLength 22, HeaderLength 18, type 2,
    /// descriptor, outstanding request count).
    const ALL_HEADERS: [u8; 22] = [
        22, 0, 0, 0, 18, 0, 0, 0, 2, 0, 8, 7, 6, 5, 4, 3, 2, 1, 1, 0, 0, 0,
    ];

    #[test]
    fn all_headers_layout() {
        assert_eq!(encode_all_headers(TX), ALL_HEADERS);
        assert_eq!(parse_all_headers(&ALL_HEADERS), Ok((Some(TX), 22)));
        // Another header type first (query notifications, type 1), then the descriptor.
        let mut two = vec![0u8; 4];
        two.extend_from_slice(&[8, 0, 0, 0, 1, 0, 0xAA, 0xBB]);
        two.extend_from_slice(&ALL_HEADERS[4..]);
        let total = two.len() as u32;
        two[..4].copy_from_slice(&total.to_le_bytes());
        assert_eq!(parse_all_headers(&two), Ok((Some(TX), 30)));
        for bad in [&ALL_HEADERS[..3], &ALL_HEADERS[..21], &[4, 0, 0, 0][..]] {
            let r = parse_all_headers(bad);
            assert!(r.is_err() || r == Ok((None, 4)), "{bad:?}: {r:?}");
        }
        // A header length running past the total.
        let mut overrun = ALL_HEADERS;
        overrun[4] = 30;
        assert_eq!(parse_all_headers(&overrun), Err(TmError::BadAllHeaders(22)));
    }

    #[test]
    fn request_bytes_follow_ms_tds() {
        let get = encode_tm_request(TX, &TmRequest::GetDtcAddress).unwrap();
        assert_eq!(&get[..22], ALL_HEADERS);
        assert_eq!(&get[22..], [0, 0, 0, 0]);

        let prop = encode_tm_request(
            TX,
            &TmRequest::Propagate {
                cookie: vec![0xDE, 0xAD, 0xBE],
            },
        )
        .unwrap();
        assert_eq!(&prop[22..], [1, 0, 3, 0, 0xDE, 0xAD, 0xBE]);

        let begin = encode_tm_request(
            TX,
            &TmRequest::Begin {
                isolation: 2,
                name: "t".into(),
            },
        )
        .unwrap();
        // Names are B_VARBYTE: the length byte counts UTF-16LE bytes (2 for "t"), as MS-TDS
        // 2.2.6.9, SqlClient, tedious and mssql-tds write it.
        assert_eq!(&begin[22..], [5, 0, 2, 2, b't', 0]);

        let promote = encode_tm_request(TX, &TmRequest::Promote).unwrap();
        assert_eq!(&promote[22..], [6, 0]);

        let commit = encode_tm_request(
            TX,
            &TmRequest::Commit {
                name: String::new(),
                begin_new: None,
            },
        )
        .unwrap();
        assert_eq!(&commit[22..], [7, 0, 0, 0]);

        let rollback = encode_tm_request(
            TX,
            &TmRequest::Rollback {
                name: String::new(),
                begin_new: Some((4, "n".into())),
            },
        )
        .unwrap();
        assert_eq!(&rollback[22..], [8, 0, 0, 1, 4, 2, b'n', 0]);

        let save = encode_tm_request(TX, &TmRequest::Save { name: "sp".into() }).unwrap();
        assert_eq!(&save[22..], [9, 0, 4, b's', 0, b'p', 0]);

        // A name outside the BMP: "é" and one surrogate pair are 3 UTF-16 units, 6 bytes.
        let wide = encode_tm_request(
            TX,
            &TmRequest::Save {
                name: "é\u{1D11E}".into(),
            },
        )
        .unwrap();
        assert_eq!(&wide[22..25], [9, 0, 6]);
        assert_eq!(wide.len(), 22 + 3 + 6);
        // 127 UTF-16 units are 254 bytes and fit; 128 do not.
        assert!(encode_tm_request(
            TX,
            &TmRequest::Save {
                name: "x".repeat(127)
            }
        )
        .is_ok());
        assert_eq!(
            encode_tm_request(
                TX,
                &TmRequest::Save {
                    name: "x".repeat(128)
                }
            ),
            Err(TmError::NameTooLong(256))
        );

        assert_eq!(
            encode_tm_request(
                TX,
                &TmRequest::Propagate {
                    cookie: vec![0; 70_000]
                }
            ),
            Err(TmError::CookieTooLong(70_000))
        );
    }

    #[test]
    fn requests_round_trip_and_reject_short_input() {
        let all = [
            TmRequest::GetDtcAddress,
            TmRequest::Propagate { cookie: vec![] },
            TmRequest::Propagate {
                cookie: (0..200).collect(),
            },
            TmRequest::Begin {
                isolation: 0,
                name: String::new(),
            },
            TmRequest::Promote,
            TmRequest::Commit {
                name: "a".into(),
                begin_new: Some((2, "b".into())),
            },
            TmRequest::Rollback {
                name: String::new(),
                begin_new: None,
            },
            TmRequest::Save { name: "s".into() },
        ];
        for req in all {
            let bytes = encode_tm_request(TX, &req).unwrap();
            assert_eq!(decode_tm_request(&bytes), Ok((Some(TX), req.clone())));
            // Every cut inside the request proper fails cleanly (GetDtcAddress tolerates a
            // missing empty US_VARBYTE, and Promote has no payload).
            for cut in 22..bytes.len() {
                let r = decode_tm_request(&bytes[..cut]);
                if cut >= 24 && matches!(req, TmRequest::GetDtcAddress) {
                    continue;
                }
                assert!(r.is_err(), "{req:?} cut at {cut}: {r:?}");
            }
        }
        // An odd B_VARBYTE name length cannot be UTF-16LE.
        let mut odd = ALL_HEADERS.to_vec();
        odd.extend_from_slice(&[9, 0, 1, b'x']);
        assert_eq!(decode_tm_request(&odd), Err(TmError::OddNameLength(1)));
        let mut unknown = ALL_HEADERS.to_vec();
        unknown.extend_from_slice(&[3, 0]);
        assert_eq!(decode_tm_request(&unknown), Err(TmError::UnknownType(3)));
    }

    #[test]
    fn batches_carry_the_descriptor() {
        let b = encode_sql_batch(TX, "SELECT 1");
        assert_eq!(&b[..22], ALL_HEADERS);
        assert_eq!(decode_sql_batch(&b), Ok((Some(TX), "SELECT 1".to_string())));
    }

    #[test]
    fn transaction_envchanges() {
        let d = TX.descriptor.to_le_bytes();
        // Type 11 (enlist DTC): new = the descriptor, old = empty.
        let enlist = envchange_tx(ENV_ENLIST_DTC, &d, &[]);
        assert_eq!(enlist, vec![0xE3, 11, 0, 11, 8, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
        // Type 17 (transaction ended): new = empty, old = the descriptor.
        let ended = envchange_tx(ENV_TRANSACTION_ENDED, &[], &d);
        assert_eq!(ended, vec![0xE3, 11, 0, 17, 0, 8, 8, 7, 6, 5, 4, 3, 2, 1]);
        // Type 15 (promote): L_VARBYTE new value, one zero byte for the old.
        // Type 15 (promote): LENGTH 0x0001 (the type byte only, MS-TDS 2.2.7.9), then the
        // L_VARBYTE token and one zero byte for the old value outside that length.
        let promote = envchange_tx(ENV_PROMOTE_TRAN, &[0xAB, 0xCD], &[]);
        assert_eq!(promote, vec![0xE3, 1, 0, 15, 2, 0, 0, 0, 0xAB, 0xCD, 0]);
        assert_eq!(descriptor_from_bytes(&d), Some(TX.descriptor));
        assert_eq!(descriptor_from_bytes(&d[..7]), None);
    }
}
