//! Reads a whole server reply (a tabular result message, MS-TDS 2.2.7) into tokens: ERROR,
//! INFO, LOGINACK, ENVCHANGE, COLMETADATA + ROW/NBCROW for the column types a probe reads back
//! (integers, bit, binary/varbinary, char/varchar/nchar/nvarchar, including PLP `max` values),
//! DONE/DONEPROC/DONEINPROC; ORDER, RETURNSTATUS and other length-prefixed tokens are skipped.
//!
//! Used by the `tx_enlist` hop's own TDS session: TM_GET_DTC_ADDRESS answers with a result set of
//! one binary column (SQL Server still uses the old 1-byte-length VARBINARY type 0x25 there), and
//! the transaction work reads back an int and an nvarchar. Bytes come from the network: every
//! read is bounds-checked, nothing panics, an unknown token or column type is an error.

use thiserror::Error;

use super::strings::from_utf16le;
use super::token::{
    LoginAck, ServerMessage, TOKEN_COLMETADATA, TOKEN_ENVCHANGE, TOKEN_ERROR, TOKEN_INFO,
    TOKEN_LOGINACK, TOKEN_ROW,
};

pub const TOKEN_NBCROW: u8 = 0xD2;
pub const TOKEN_ORDER: u8 = 0xA9;
pub const TOKEN_RETURNSTATUS: u8 = 0x79;
pub const TOKEN_DONEPROC: u8 = 0xFE;
pub const TOKEN_DONEINPROC: u8 = 0xFF;
pub const TOKEN_SSPI: u8 = 0xED;
pub const TOKEN_FEATUREEXTACK: u8 = 0xAE;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ReplyError {
    #[error("token 0x{0:02X} cut short")]
    Truncated(u8),
    #[error("unexpected token 0x{0:02X}")]
    UnknownToken(u8),
    #[error("column type 0x{0:02X} is not one this reader decodes")]
    UnsupportedType(u8),
    #[error("a row arrived before any column metadata")]
    RowWithoutMetadata,
}

/// How a column's values are laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnLayout {
    /// Fixed length, never NULL.
    Fixed(usize),
    /// One length byte (0 = NULL).
    ByteLen,
    /// Two length bytes (0xFFFF = NULL).
    UShortLen,
    /// Partially length-prefixed (`max` types).
    Plp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub type_id: u8,
    pub layout: ColumnLayout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Error(ServerMessage),
    Info(ServerMessage),
    LoginAck(LoginAck),
    /// The type and the raw new/old values (B_VARCHAR values as UTF-16LE bytes, B_VARBYTE and
    /// L_VARBYTE values as they are).
    EnvChange {
        kind: u8,
        new: Vec<u8>,
        old: Vec<u8>,
    },
    ColMetadata(Vec<Column>),
    Row(Vec<Value>),
    Done {
        token: u8,
        status: u16,
        rows: u64,
    },
    /// SSPI (0xED): the server's next authentication token (an NTLM CHALLENGE, say).
    Sspi(Vec<u8>),
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
    token: u8,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], ReplyError> {
        let end = self
            .at
            .checked_add(n)
            .ok_or(ReplyError::Truncated(self.token))?;
        let s = self
            .b
            .get(self.at..end)
            .ok_or(ReplyError::Truncated(self.token))?;
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, ReplyError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, ReplyError> {
        let s = self.take(2)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32(&mut self) -> Result<u32, ReplyError> {
        let s = self.take(4)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn u64(&mut self) -> Result<u64, ReplyError> {
        let s = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }
    fn b_varchar(&mut self) -> Result<String, ReplyError> {
        let n = self.u8()? as usize;
        Ok(from_utf16le(self.take(n * 2)?))
    }
    fn us_varchar(&mut self) -> Result<String, ReplyError> {
        let n = self.u16()? as usize;
        Ok(from_utf16le(self.take(n * 2)?))
    }
}

/// Splits a reply into tokens.
pub fn parse_reply(payload: &[u8]) -> Result<Vec<Token>, ReplyError> {
    let mut c = Cursor {
        b: payload,
        at: 0,
        token: 0,
    };
    let mut out = Vec::new();
    let mut columns: Option<Vec<Column>> = None;
    while c.at < payload.len() {
        let token = c.u8()?;
        c.token = token;
        match token {
            TOKEN_ERROR | TOKEN_INFO => {
                let len = c.u16()? as usize;
                let body = c.take(len)?;
                let m = parse_message(body).ok_or(ReplyError::Truncated(token))?;
                out.push(if token == TOKEN_ERROR {
                    Token::Error(m)
                } else {
                    Token::Info(m)
                });
            }
            TOKEN_LOGINACK => {
                let len = c.u16()? as usize;
                let body = c.take(len)?;
                out.push(Token::LoginAck(
                    LoginAck::parse_body(body).ok_or(ReplyError::Truncated(token))?,
                ));
            }
            TOKEN_ENVCHANGE => {
                let len = c.u16()? as usize;
                let body = c.take(len)?;
                if body == [super::tm::ENV_PROMOTE_TRAN] {
                    // MS-TDS 2.2.7.9: a promote ENVCHANGE's LENGTH is 0x01 (the type byte only);
                    // the L_VARBYTE DTC token and the 0x00 old value follow outside it.
                    let n = c.u32()? as usize;
                    let new = c.take(n)?.to_vec();
                    let o = c.u8()? as usize;
                    let old = c.take(o)?.to_vec();
                    out.push(Token::EnvChange {
                        kind: super::tm::ENV_PROMOTE_TRAN,
                        new,
                        old,
                    });
                } else {
                    out.push(parse_envchange(body).ok_or(ReplyError::Truncated(token))?);
                }
            }
            TOKEN_COLMETADATA => {
                let cols = parse_colmetadata(&mut c)?;
                columns = Some(cols.clone());
                out.push(Token::ColMetadata(cols));
            }
            TOKEN_ROW | TOKEN_NBCROW => {
                let cols = columns.as_ref().ok_or(ReplyError::RowWithoutMetadata)?;
                let nulls = if token == TOKEN_NBCROW {
                    c.take(cols.len().div_ceil(8))?.to_vec()
                } else {
                    Vec::new()
                };
                let mut row = Vec::with_capacity(cols.len());
                for (i, col) in cols.iter().enumerate() {
                    if !nulls.is_empty() && nulls[i / 8] & (1 << (i % 8)) != 0 {
                        row.push(Value::Null);
                    } else {
                        row.push(read_value(&mut c, col)?);
                    }
                }
                out.push(Token::Row(row));
            }
            super::token::TOKEN_DONE | TOKEN_DONEPROC | TOKEN_DONEINPROC => {
                let status = c.u16()?;
                c.u16()?; // current command
                let rows = c.u64()?;
                out.push(Token::Done {
                    token,
                    status,
                    rows,
                });
            }
            TOKEN_RETURNSTATUS => {
                c.take(4)?;
            }
            TOKEN_ORDER => {
                let len = c.u16()? as usize;
                c.take(len)?;
            }
            TOKEN_SSPI => {
                let len = c.u16()? as usize;
                out.push(Token::Sspi(c.take(len)?.to_vec()));
            }
            TOKEN_FEATUREEXTACK => {
                // FeatureId, then u32 length + data, until 0xFF.
                loop {
                    let id = c.u8()?;
                    if id == 0xFF {
                        break;
                    }
                    let len = c.u32()? as usize;
                    c.take(len)?;
                }
            }
            other => return Err(ReplyError::UnknownToken(other)),
        }
    }
    Ok(out)
}

fn parse_message(body: &[u8]) -> Option<ServerMessage> {
    let mut c = Cursor {
        b: body,
        at: 0,
        token: TOKEN_ERROR,
    };
    let number = c.u32().ok()? as i32;
    let state = c.u8().ok()?;
    let class = c.u8().ok()?;
    let text = c.us_varchar().ok()?;
    let server = c.b_varchar().ok()?;
    let procedure = c.b_varchar().ok()?;
    let line = c.u32().map(|l| l as i32).unwrap_or(0);
    Some(ServerMessage {
        number,
        state,
        class,
        text,
        server,
        procedure,
        line,
    })
}

fn parse_envchange(body: &[u8]) -> Option<Token> {
    let mut c = Cursor {
        b: body,
        at: 0,
        token: TOKEN_ENVCHANGE,
    };
    let kind = c.u8().ok()?;
    let (new, old) = match kind {
        // B_VARCHAR values: database, language, charset, packet size, sort id, sort flags,
        // mirroring partner, user instance.
        1..=6 | 13 | 19 => {
            let n = c.u8().ok()? as usize;
            let new = c.take(n * 2).ok()?.to_vec();
            let o = c.u8().ok()? as usize;
            let old = c.take(o * 2).ok()?.to_vec();
            (new, old)
        }
        // A promote ENVCHANGE whose LENGTH covers its value (not what MS-TDS says SQL Server
        // sends, but what SqlClient's own test server writes): read it inside the token.
        super::tm::ENV_PROMOTE_TRAN => {
            let n = c.u32().ok()? as usize;
            let new = c.take(n).ok()?.to_vec();
            let o = c.u8().unwrap_or(0) as usize;
            let old = c.take(o).ok()?.to_vec();
            (new, old)
        }
        20 => {
            let n = c.u16().ok()? as usize;
            let new = c.take(n).ok()?.to_vec();
            (new, Vec::new())
        }
        // B_VARBYTE values: collation, transactions (8-12, 16, 17), reset ack (18) and any
        // future type; the token's own length already bounds them.
        _ => {
            let n = c.u8().ok()? as usize;
            let new = c.take(n).ok()?.to_vec();
            let o = c.u8().unwrap_or(0) as usize;
            let old = c.take(o).unwrap_or(&[]).to_vec();
            (new, old)
        }
    };
    Some(Token::EnvChange { kind, new, old })
}

fn parse_colmetadata(c: &mut Cursor<'_>) -> Result<Vec<Column>, ReplyError> {
    let count = c.u16()?;
    if count == 0xFFFF {
        return Ok(Vec::new());
    }
    let mut cols = Vec::with_capacity(count as usize);
    for _ in 0..count {
        c.u32()?; // UserType
        c.u16()?; // Flags
        let type_id = c.u8()?;
        let layout = match type_id {
            0x1F => ColumnLayout::Fixed(0),
            0x30 | 0x32 => ColumnLayout::Fixed(1),
            0x34 => ColumnLayout::Fixed(2),
            0x38 | 0x3A | 0x3B | 0x7A => ColumnLayout::Fixed(4),
            0x7F | 0x3C | 0x3D | 0x3E => ColumnLayout::Fixed(8),
            // INTN, BITN, FLTN, MONEYN, DATETIMN, GUID, VARBINARY, BINARY: max length byte.
            0x26 | 0x68 | 0x6D | 0x6E | 0x6F | 0x24 | 0x25 | 0x2D => {
                c.u8()?;
                ColumnLayout::ByteLen
            }
            // BIGVARBINARY, BIGBINARY: u16 max length, 0xFFFF = max (PLP).
            0xA5 | 0xAD => {
                if c.u16()? == 0xFFFF {
                    ColumnLayout::Plp
                } else {
                    ColumnLayout::UShortLen
                }
            }
            // BIGVARCHAR, BIGCHAR, NVARCHAR, NCHAR: u16 max length, collation.
            0xA7 | 0xAF | 0xE7 | 0xEF => {
                let max = c.u16()?;
                c.take(5)?;
                if max == 0xFFFF {
                    ColumnLayout::Plp
                } else {
                    ColumnLayout::UShortLen
                }
            }
            other => return Err(ReplyError::UnsupportedType(other)),
        };
        let name = c.b_varchar()?;
        cols.push(Column {
            name,
            type_id,
            layout,
        });
    }
    Ok(cols)
}

fn read_value(c: &mut Cursor<'_>, col: &Column) -> Result<Value, ReplyError> {
    let raw = match col.layout {
        ColumnLayout::Fixed(n) => Some(c.take(n)?.to_vec()),
        ColumnLayout::ByteLen => {
            let n = c.u8()? as usize;
            if n == 0 && col.type_id != 0x25 && col.type_id != 0x2D {
                None
            } else {
                Some(c.take(n)?.to_vec())
            }
        }
        ColumnLayout::UShortLen => {
            let n = c.u16()?;
            if n == 0xFFFF {
                None
            } else {
                Some(c.take(n as usize)?.to_vec())
            }
        }
        ColumnLayout::Plp => {
            let total = c.u64()?;
            if total == u64::MAX {
                None
            } else {
                let mut v = Vec::new();
                loop {
                    let chunk = c.u32()? as usize;
                    if chunk == 0 {
                        break;
                    }
                    v.extend_from_slice(c.take(chunk)?);
                }
                Some(v)
            }
        }
    };
    let Some(raw) = raw else {
        return Ok(Value::Null);
    };
    Ok(match col.type_id {
        0x30 | 0x32 | 0x34 | 0x38 | 0x7F | 0x26 | 0x68 => {
            let mut a = [0u8; 8];
            let n = raw.len().min(8);
            a[..n].copy_from_slice(&raw[..n]);
            // Sign-extend: INT1 and BIT are unsigned, the others signed.
            let v = i64::from_le_bytes(a);
            let shift = 64 - 8 * n as u32;
            let signed = if n == 0 || n == 8 || matches!(col.type_id, 0x30 | 0x32 | 0x68) {
                v
            } else {
                (v << shift) >> shift
            };
            Value::Int(signed)
        }
        0xE7 | 0xEF => Value::Text(from_utf16le(&raw)),
        0xA7 | 0xAF => Value::Text(String::from_utf8_lossy(&raw).into_owned()),
        _ => Value::Bytes(raw),
    })
}

/// A result set written the way SQL Server writes it, for the one-column binary answer of
/// TM_GET_DTC_ADDRESS (VARBINARY type 0x25, as SQL Server still sends there), then DONE.
pub fn varbinary_result(column: &str, value: &[u8]) -> Vec<u8> {
    let mut v = vec![TOKEN_COLMETADATA, 1, 0];
    v.extend_from_slice(&0u32.to_le_bytes()); // UserType
    v.extend_from_slice(&0x0001u16.to_le_bytes()); // Flags: nullable
    v.push(0x25);
    v.push(value.len().clamp(1, 255) as u8);
    v.extend(super::strings::b_varchar(column));
    v.push(TOKEN_ROW);
    v.push(value.len().min(255) as u8);
    v.extend_from_slice(&value[..value.len().min(255)]);
    v.extend(super::token::done(super::token::DONE_COUNT, 1));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tds::tm::{envchange_tx, ENV_ENLIST_DTC, ENV_PROMOTE_TRAN};
    use crate::tds::token::{done, envchange_str, DONE_COUNT, DONE_ERROR, ENV_DATABASE};

    fn msg(number: i32) -> ServerMessage {
        ServerMessage {
            number,
            state: 3,
            class: 16,
            text: "MSDTC on server 'S' is unavailable.".into(),
            server: "S".into(),
            procedure: String::new(),
            line: 1,
        }
    }

    #[test]
    fn dtc_address_result_set() {
        let bytes = varbinary_result("", &[1, 2, 3]);
        // COLMETADATA: 1 column, usertype 0, flags 1, VARBINARY max 3, empty name; ROW; DONE.
        assert_eq!(
            &bytes[..14],
            &[0x81, 1, 0, 0, 0, 0, 0, 1, 0, 0x25, 3, 0, 0xD1, 3]
        );
        let t = parse_reply(&bytes).unwrap();
        assert_eq!(t[1], Token::Row(vec![Value::Bytes(vec![1, 2, 3])]));
        assert_eq!(
            t[2],
            Token::Done {
                token: 0xFD,
                status: DONE_COUNT,
                rows: 1
            }
        );
    }

    #[test]
    fn errors_envchanges_and_done() {
        let mut r = envchange_str(ENV_DATABASE, "app", "master");
        r.extend(envchange_tx(ENV_ENLIST_DTC, &7u64.to_le_bytes(), &[]));
        r.extend(envchange_tx(ENV_PROMOTE_TRAN, &[9; 300], &[]));
        r.extend(msg(8501).encode(TOKEN_ERROR));
        r.extend(done(DONE_ERROR, 0));
        let t = parse_reply(&r).unwrap();
        assert_eq!(
            t[0],
            Token::EnvChange {
                kind: 1,
                new: crate::tds::utf16le("app"),
                old: crate::tds::utf16le("master")
            }
        );
        assert_eq!(
            t[1],
            Token::EnvChange {
                kind: 11,
                new: 7u64.to_le_bytes().to_vec(),
                old: vec![]
            }
        );
        assert!(matches!(&t[2], Token::EnvChange { kind: 15, new, .. } if new.len() == 300));
        assert_eq!(t[3], Token::Error(msg(8501)));
        assert!(matches!(
            t[4],
            Token::Done {
                status: DONE_ERROR,
                ..
            }
        ));
        // Every cut is an error, never a panic or a wrong token list.
        for cut in 1..r.len() {
            let p = parse_reply(&r[..cut]);
            assert!(p.is_err() || p.as_ref().unwrap().len() < 5, "cut {cut}");
        }
    }

    /// MS-TDS 2.2.7.9: "LENGTH for ENVCHANGE type 15 is sent as 0x01 indicating only the length
    /// of the type token"; the DTC token (L_VARBYTE) and the 0x00 old value follow it. The
    /// tokens after it must still be read (a reader that trusted LENGTH would take the DTC
    /// token's length bytes for the next token).
    #[test]
    fn promote_envchange_value_lies_outside_its_length() {
        let mut r = vec![0xE3, 1, 0, 15, 3, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0];
        r.extend(done(DONE_COUNT, 0));
        let t = parse_reply(&r).unwrap();
        assert_eq!(
            t[0],
            Token::EnvChange {
                kind: 15,
                new: vec![0xAA, 0xBB, 0xCC],
                old: vec![]
            }
        );
        assert!(matches!(t[1], Token::Done { rows: 0, .. }));
        assert_eq!(t.len(), 2);
        // The builder writes the same bytes.
        assert_eq!(
            envchange_tx(ENV_PROMOTE_TRAN, &[0xAA, 0xBB, 0xCC], &[]),
            r[..12]
        );
        // A LENGTH that does cover the value (SqlClient's test server writes that) reads too.
        let mut inside = vec![0xE3, 9, 0, 15, 3, 0, 0, 0, 0xAA, 0xBB, 0xCC, 0];
        inside.extend(done(DONE_COUNT, 0));
        assert_eq!(parse_reply(&inside).unwrap(), t);
        // Cut inside the value outside LENGTH: an error, not a wrong token.
        for cut in 4..12 {
            assert!(parse_reply(&r[..cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn int_nvarchar_plp_and_nbcrow() {
        let mut v = vec![0x81, 4, 0];
        // INT4 not null "id"
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0x38]);
        v.extend(crate::tds::strings::b_varchar("id"));
        // NVARCHAR(64) "note"
        v.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0xE7, 128, 0, 9, 4, 0xD0, 0, 0x34]);
        v.extend(crate::tds::strings::b_varchar("note"));
        // VARBINARY(max) "blob"
        v.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0xA5, 0xFF, 0xFF]);
        v.extend(crate::tds::strings::b_varchar("blob"));
        // INTN(4) "n"
        v.extend_from_slice(&[0, 0, 0, 0, 1, 0, 0x26, 4]);
        v.extend(crate::tds::strings::b_varchar("n"));
        // ROW: -2, "hi", PLP [1,2,3] in two chunks, NULL
        v.push(0xD1);
        v.extend_from_slice(&(-2i32).to_le_bytes());
        v.extend_from_slice(&[4, 0, b'h', 0, b'i', 0]);
        v.extend_from_slice(&3u64.to_le_bytes());
        v.extend_from_slice(&[2, 0, 0, 0, 1, 2, 1, 0, 0, 0, 3, 0, 0, 0, 0]);
        v.push(0);
        // NBCROW: columns 2 and 3 NULL (bits 2, 3)
        v.extend_from_slice(&[0xD2, 0b1100]);
        v.extend_from_slice(&5i32.to_le_bytes());
        v.extend_from_slice(&[0, 0]);
        v.extend(done(DONE_COUNT, 2));
        let t = parse_reply(&v).unwrap();
        assert_eq!(
            t[1],
            Token::Row(vec![
                Value::Int(-2),
                Value::Text("hi".into()),
                Value::Bytes(vec![1, 2, 3]),
                Value::Null
            ])
        );
        assert_eq!(
            t[2],
            Token::Row(vec![
                Value::Int(5),
                Value::Text(String::new()),
                Value::Null,
                Value::Null
            ])
        );
        assert_eq!(parse_reply(&[0xD1, 0]), Err(ReplyError::RowWithoutMetadata));
        assert_eq!(parse_reply(&[0x42]), Err(ReplyError::UnknownToken(0x42)));
        let mut decimal = vec![0x81, 1, 0, 0, 0, 0, 0, 0, 0, 0x6A];
        decimal.extend_from_slice(&[5, 10, 2, 0]);
        assert_eq!(
            parse_reply(&decimal),
            Err(ReplyError::UnsupportedType(0x6A))
        );
    }
}
