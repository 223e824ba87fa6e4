//! RPC requests (MS-TDS 2.2.6.6, packet type 0x03) and the tokens a server answers them with
//! (RETURNSTATUS 2.2.7.18, RETURNVALUE 2.2.7.19, DONEPROC/DONEINPROC 2.2.7.7-8).
//!
//! Why dtcprobe has this: Microsoft's drivers send every parameterised statement as an RPC
//! (ODBC Driver 18: sp_prepexec/sp_execute/sp_unprepare or sp_executesql; tedious: sp_executesql,
//! sp_prepare/sp_execute/sp_unprepare), so the TDS test peer must read them to be checked against
//! those drivers at all. The decoder reads bytes a client sent; it never panics and never reads
//! past its input (a fuzz target, fuzz/fuzz_targets/rpc_decode.rs, holds it to that).
//!
//! Covered parameter types: the fixed-length integers, bit, float, money and NULL types; INTN,
//! BITN, FLTN, MONEYN, DECIMALN/NUMERICN; (N)VARCHAR/(N)CHAR/VARBINARY/BINARY with a u16 length,
//! including `(max)` sent as PLP chunks; GUID, date and time types as raw bytes. TEXT/NTEXT/IMAGE,
//! XML, UDT, sql_variant, table-valued parameters and Always Encrypted parameters are refused with
//! [`RpcError::Unsupported`], not misread.

use thiserror::Error;

use super::strings::{b_varchar, from_utf16le};

/// Well-known procedure ids (MS-TDS 2.2.6.6, ProcID).
pub const SP_CURSOR: u16 = 1;
pub const SP_EXECUTESQL: u16 = 10;
pub const SP_PREPARE: u16 = 11;
pub const SP_EXECUTE: u16 = 12;
pub const SP_PREPEXEC: u16 = 13;
pub const SP_PREPEXECRPC: u16 = 14;
pub const SP_UNPREPARE: u16 = 15;

pub const TOKEN_RETURNSTATUS: u8 = 0x79;
pub const TOKEN_RETURNVALUE: u8 = 0xAC;
pub const TOKEN_DONEPROC: u8 = 0xFE;
pub const TOKEN_DONEINPROC: u8 = 0xFF;

/// SQL Server's own limit on parameters per call; a request claiming more is malformed.
pub const MAX_PARAMS: usize = 2100;

/// Parameter status flags (StatusFlags).
pub const PARAM_BY_REF: u8 = 0x01;
pub const PARAM_DEFAULT: u8 = 0x02;
pub const PARAM_ENCRYPTED: u8 = 0x08;

// TYPE_INFO type bytes (MS-TDS 2.2.5.4).
const NULLTYPE: u8 = 0x1F;
const INT1TYPE: u8 = 0x30;
const BITTYPE: u8 = 0x32;
const INT2TYPE: u8 = 0x34;
const INT4TYPE: u8 = 0x38;
const DATETIM4TYPE: u8 = 0x3A;
const FLT4TYPE: u8 = 0x3B;
const MONEYTYPE: u8 = 0x3C;
const DATETIMETYPE: u8 = 0x3D;
const FLT8TYPE: u8 = 0x3E;
const MONEY4TYPE: u8 = 0x7A;
const INT8TYPE: u8 = 0x7F;
const GUIDTYPE: u8 = 0x24;
const INTNTYPE: u8 = 0x26;
const DATENTYPE: u8 = 0x28;
const TIMENTYPE: u8 = 0x29;
const DATETIME2NTYPE: u8 = 0x2A;
const DATETIMEOFFSETNTYPE: u8 = 0x2B;
const BITNTYPE: u8 = 0x68;
const DECIMALNTYPE: u8 = 0x6A;
const NUMERICNTYPE: u8 = 0x6C;
const FLTNTYPE: u8 = 0x6D;
const MONEYNTYPE: u8 = 0x6E;
const DATETIMNTYPE: u8 = 0x6F;
const BIGVARBINTYPE: u8 = 0xA5;
const BIGVARCHRTYPE: u8 = 0xA7;
const BIGBINARYTYPE: u8 = 0xAD;
const BIGCHARTYPE: u8 = 0xAF;
const NVARCHARTYPE: u8 = 0xE7;
const NCHARTYPE: u8 = 0xEF;

/// Which procedure a call names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcRef {
    /// NameLenProcID = 0xFFFF, then a well-known id.
    Id(u16),
    Name(String),
}

impl ProcRef {
    /// The system procedure this call means, by id or by (case-insensitive) name:
    /// `Some(SP_EXECUTESQL)` for both `Id(10)` and `Name("sp_executesql")`.
    pub fn well_known(&self) -> Option<u16> {
        match self {
            ProcRef::Id(id) => Some(*id),
            ProcRef::Name(n) => {
                let n = n.to_ascii_lowercase();
                let n = n.trim_start_matches("sys.").trim_start_matches("master..");
                Some(match n {
                    "sp_executesql" => SP_EXECUTESQL,
                    "sp_prepare" => SP_PREPARE,
                    "sp_execute" => SP_EXECUTE,
                    "sp_prepexec" => SP_PREPEXEC,
                    "sp_prepexecrpc" => SP_PREPEXECRPC,
                    "sp_unprepare" => SP_UNPREPARE,
                    _ => return None,
                })
            }
        }
    }
}

/// A decoded parameter value. Integers of every width become `Int`; the original type is kept in
/// [`RpcParam::type_byte`] for whoever needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    Null,
    Int(i64),
    Bit(bool),
    Float(f64),
    /// `value / 10^scale` (DECIMAL, NUMERIC, MONEY: scale 4).
    Decimal {
        value: i128,
        scale: u8,
    },
    Str(String),
    /// Binary types, GUIDs, date and time types: the value bytes as sent.
    Bytes(Vec<u8>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcParam {
    /// `@name`, or empty for a positional parameter.
    pub name: String,
    pub status: u8,
    pub type_byte: u8,
    pub value: ParamValue,
}

impl RpcParam {
    pub fn is_output(&self) -> bool {
        self.status & PARAM_BY_REF != 0
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RpcCall {
    pub proc: ProcRef,
    pub option_flags: u16,
    pub params: Vec<RpcParam>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RpcError {
    #[error("RPC request cut short at byte {0}")]
    Truncated(usize),
    #[error("ALL_HEADERS length {0} does not fit the request")]
    BadAllHeaders(u32),
    #[error("parameter type 0x{0:02X} is not supported")]
    Unsupported(u8),
    #[error("bad length {len} for parameter type 0x{type_byte:02X}")]
    BadLength { type_byte: u8, len: usize },
    #[error("more than {MAX_PARAMS} parameters")]
    TooManyParams,
    #[error("unexpected byte 0x{0:02X} between calls")]
    BadSeparator(u8),
}

/// A bounds-checked reader over the request.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RpcError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(RpcError::Truncated(self.pos))?;
        let s = self
            .buf
            .get(self.pos..end)
            .ok_or(RpcError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, RpcError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, RpcError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, RpcError> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, RpcError> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn b_varchar(&mut self) -> Result<String, RpcError> {
        let n = self.u8()? as usize;
        Ok(from_utf16le(self.take(n * 2)?))
    }
    fn done(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// Decodes an RPC request message (the payload after the packet headers). `all_headers`: the
/// client speaks TDS 7.2 or later, so the message starts with ALL_HEADERS.
pub fn decode_rpc(payload: &[u8], all_headers: bool) -> Result<Vec<RpcCall>, RpcError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    if all_headers {
        let total = r.u32()?;
        if (total as usize) < 4 || total as usize > payload.len() {
            return Err(RpcError::BadAllHeaders(total));
        }
        r.pos = total as usize;
    }
    let mut calls = Vec::new();
    loop {
        calls.push(decode_call(&mut r)?);
        if r.done() {
            return Ok(calls);
        }
        // BatchFlag (0x80, TDS 7.2+), or 0xFF (earlier); NoExecFlag 0xFE is not supported.
        match r.u8()? {
            0x80 | 0xFF => {}
            other => return Err(RpcError::BadSeparator(other)),
        }
        if r.done() {
            return Ok(calls);
        }
    }
}

fn decode_call(r: &mut Reader) -> Result<RpcCall, RpcError> {
    let name_len = r.u16()?;
    let proc = if name_len == 0xFFFF {
        ProcRef::Id(r.u16()?)
    } else {
        ProcRef::Name(from_utf16le(r.take(name_len as usize * 2)?))
    };
    let option_flags = r.u16()?;
    let mut params = Vec::new();
    // Parameters run to the end of the call: the next byte is a separator or the end.
    while !r.done() && !matches!(r.buf[r.pos], 0x80 | 0xFE | 0xFF) {
        if params.len() >= MAX_PARAMS {
            return Err(RpcError::TooManyParams);
        }
        params.push(decode_param(r)?);
    }
    Ok(RpcCall {
        proc,
        option_flags,
        params,
    })
}

fn decode_param(r: &mut Reader) -> Result<RpcParam, RpcError> {
    let name = r.b_varchar()?;
    let status = r.u8()?;
    let type_byte = r.u8()?;
    if status & PARAM_ENCRYPTED != 0 {
        return Err(RpcError::Unsupported(type_byte));
    }
    let value = decode_typed_value(r, type_byte)?;
    Ok(RpcParam {
        name,
        status,
        type_byte,
        value,
    })
}

fn bad(type_byte: u8, len: usize) -> RpcError {
    RpcError::BadLength { type_byte, len }
}

/// Reads the rest of TYPE_INFO after the type byte, then the value (TYPE_VARBYTE).
fn decode_typed_value(r: &mut Reader, t: u8) -> Result<ParamValue, RpcError> {
    // Fixed-length types: no length in TYPE_INFO nor before the value.
    let fixed = match t {
        NULLTYPE => Some(0),
        INT1TYPE | BITTYPE => Some(1),
        INT2TYPE => Some(2),
        INT4TYPE | DATETIM4TYPE | FLT4TYPE | MONEY4TYPE => Some(4),
        MONEYTYPE | DATETIMETYPE | FLT8TYPE | INT8TYPE => Some(8),
        _ => None,
    };
    if let Some(n) = fixed {
        let b = r.take(n)?;
        return fixed_value(t, b);
    }
    match t {
        INTNTYPE | BITNTYPE | FLTNTYPE | MONEYNTYPE | DATETIMNTYPE | GUIDTYPE => {
            let _max = r.u8()?;
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(ParamValue::Null);
            }
            let b = r.take(len)?;
            let as_fixed = match (t, len) {
                (INTNTYPE, 1) => INT1TYPE,
                (INTNTYPE, 2) => INT2TYPE,
                (INTNTYPE, 4) => INT4TYPE,
                (INTNTYPE, 8) => INT8TYPE,
                (BITNTYPE, 1) => BITTYPE,
                (FLTNTYPE, 4) => FLT4TYPE,
                (FLTNTYPE, 8) => FLT8TYPE,
                (MONEYNTYPE, 4) => MONEY4TYPE,
                (MONEYNTYPE, 8) => MONEYTYPE,
                (DATETIMNTYPE, 4 | 8) | (GUIDTYPE, 16) => return Ok(ParamValue::Bytes(b.to_vec())),
                _ => return Err(bad(t, len)),
            };
            fixed_value(as_fixed, b)
        }
        DECIMALNTYPE | NUMERICNTYPE => {
            let _max = r.u8()?;
            let _precision = r.u8()?;
            let scale = r.u8()?;
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(ParamValue::Null);
            }
            let b = r.take(len)?;
            if !(2..=17).contains(&len) {
                return Err(bad(t, len));
            }
            let mut magnitude = [0u8; 16];
            magnitude[..len - 1].copy_from_slice(&b[1..]);
            let m = u128::from_le_bytes(magnitude);
            // 16 magnitude bytes can exceed i128; SQL Server's precision 38 never does.
            let m = i128::try_from(m).map_err(|_| bad(t, len))?;
            let value = if b[0] == 0 { -m } else { m };
            Ok(ParamValue::Decimal { value, scale })
        }
        DATENTYPE => {
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(ParamValue::Null);
            }
            Ok(ParamValue::Bytes(r.take(len)?.to_vec()))
        }
        TIMENTYPE | DATETIME2NTYPE | DATETIMEOFFSETNTYPE => {
            let _scale = r.u8()?;
            let len = r.u8()? as usize;
            if len == 0 {
                return Ok(ParamValue::Null);
            }
            Ok(ParamValue::Bytes(r.take(len)?.to_vec()))
        }
        BIGVARBINTYPE | BIGBINARYTYPE | BIGVARCHRTYPE | BIGCHARTYPE | NVARCHARTYPE | NCHARTYPE => {
            let max = r.u16()?;
            if matches!(t, BIGVARCHRTYPE | BIGCHARTYPE | NVARCHARTYPE | NCHARTYPE) {
                r.take(5)?; // collation
            }
            let bytes = if max == 0xFFFF {
                match plp(r)? {
                    Some(b) => b,
                    None => return Ok(ParamValue::Null),
                }
            } else {
                let len = r.u16()?;
                if len == 0xFFFF {
                    return Ok(ParamValue::Null);
                }
                r.take(len as usize)?.to_vec()
            };
            Ok(match t {
                NVARCHARTYPE | NCHARTYPE => ParamValue::Str(from_utf16le(&bytes)),
                // Single-byte text: the collation's code page is not modelled; ASCII is exact,
                // anything else lossy.
                BIGVARCHRTYPE | BIGCHARTYPE => {
                    ParamValue::Str(String::from_utf8_lossy(&bytes).into_owned())
                }
                _ => ParamValue::Bytes(bytes),
            })
        }
        other => Err(RpcError::Unsupported(other)),
    }
}

/// A PLP value (MS-TDS 2.2.5.2.3): u64 total length (all ones: NULL), then chunks of u32 length
/// + bytes, ended by a zero-length chunk. Bounded by the input: every chunk consumes bytes.
fn plp(r: &mut Reader) -> Result<Option<Vec<u8>>, RpcError> {
    let total = r.u64()?;
    if total == u64::MAX {
        return Ok(None);
    }
    let mut out = Vec::new();
    loop {
        let n = r.u32()? as usize;
        if n == 0 {
            return Ok(Some(out));
        }
        out.extend_from_slice(r.take(n)?);
    }
}

fn fixed_value(t: u8, b: &[u8]) -> Result<ParamValue, RpcError> {
    let i = |n: usize| -> i64 {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(&b[..n]);
        // Sign-extend everything but the unsigned tinyint.
        let raw = i64::from_le_bytes(v);
        if n < 8 && t != INT1TYPE {
            let shift = 64 - 8 * n as u32;
            (raw << shift) >> shift
        } else {
            raw
        }
    };
    Ok(match t {
        NULLTYPE => ParamValue::Null,
        INT1TYPE => ParamValue::Int(i(1)),
        INT2TYPE => ParamValue::Int(i(2)),
        INT4TYPE => ParamValue::Int(i(4)),
        INT8TYPE => ParamValue::Int(i(8)),
        BITTYPE => ParamValue::Bit(b[0] != 0),
        FLT4TYPE => ParamValue::Float(f32::from_le_bytes(b.try_into().expect("4")) as f64),
        FLT8TYPE => ParamValue::Float(f64::from_le_bytes(b.try_into().expect("8"))),
        MONEY4TYPE => ParamValue::Decimal {
            value: i(4) as i128,
            scale: 4,
        },
        // MONEY: the high 32 bits first, then the low 32 bits.
        MONEYTYPE => {
            let hi = i32::from_le_bytes(b[0..4].try_into().expect("4")) as i64;
            let lo = u32::from_le_bytes(b[4..8].try_into().expect("4")) as i64;
            ParamValue::Decimal {
                value: ((hi << 32) | lo) as i128,
                scale: 4,
            }
        }
        _ => ParamValue::Bytes(b.to_vec()),
    })
}

// ---------------------------------------------------------------------------------------------
// Server side: the tokens that close an RPC.

/// RETURNSTATUS: the procedure's return code (0 for the system procedures that succeed).
pub fn return_status(value: i32) -> Vec<u8> {
    let mut v = vec![TOKEN_RETURNSTATUS];
    v.extend_from_slice(&value.to_le_bytes());
    v
}

/// RETURNVALUE for an `int` output parameter (the handle sp_prepare/sp_prepexec hand back):
/// ordinal, name, status 0x01 (output parameter), user type, flags, TYPE_INFO INTN(4), value.
pub fn return_value_int(ordinal: u16, name: &str, value: Option<i32>) -> Vec<u8> {
    let mut v = vec![TOKEN_RETURNVALUE];
    v.extend_from_slice(&ordinal.to_le_bytes());
    v.extend(b_varchar(name));
    v.push(0x01);
    v.extend_from_slice(&0u32.to_le_bytes()); // UserType
    v.extend_from_slice(&0x0001u16.to_le_bytes()); // Flags: nullable
    v.extend_from_slice(&[INTNTYPE, 4]);
    match value {
        Some(x) => {
            v.push(4);
            v.extend_from_slice(&x.to_le_bytes());
        }
        None => v.push(0),
    }
    v
}

/// DONEPROC / DONEINPROC: DONE's layout under another token byte.
pub fn done_proc(token: u8, status: u16, cur_cmd: u16, rows: u64) -> Vec<u8> {
    let mut v = vec![token];
    v.extend_from_slice(&status.to_le_bytes());
    v.extend_from_slice(&cur_cmd.to_le_bytes());
    v.extend_from_slice(&rows.to_le_bytes());
    v
}

// ---------------------------------------------------------------------------------------------
// Client side: what a driver sends, for tests and fuzz seeds.

/// One parameter for [`encode_call`]: name, status flags, TYPE_INFO bytes (type byte first), and
/// the value bytes as they go on the wire.
pub struct RawParam<'a> {
    pub name: &'a str,
    pub status: u8,
    pub type_info: &'a [u8],
    pub value: &'a [u8],
}

/// An RPC request payload with ALL_HEADERS (one transaction descriptor header, as drivers send)
/// and one call.
pub fn encode_call(proc: &ProcRef, params: &[RawParam]) -> Vec<u8> {
    let mut v = Vec::new();
    // ALL_HEADERS: total 22 = 4 + one header of 18 (length 4, type 2, descriptor 8, count 4).
    v.extend_from_slice(&22u32.to_le_bytes());
    v.extend_from_slice(&18u32.to_le_bytes());
    v.extend_from_slice(&2u16.to_le_bytes());
    v.extend_from_slice(&0u64.to_le_bytes());
    v.extend_from_slice(&1u32.to_le_bytes());
    match proc {
        ProcRef::Id(id) => {
            v.extend_from_slice(&0xFFFFu16.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        ProcRef::Name(n) => v.extend(super::strings::us_varchar(n)),
    }
    v.extend_from_slice(&0u16.to_le_bytes());
    for p in params {
        v.extend(b_varchar(p.name));
        v.push(p.status);
        v.extend_from_slice(p.type_info);
        v.extend_from_slice(p.value);
    }
    v
}

/// TYPE_INFO + value of an NVARCHAR(4000) parameter holding `s`.
pub fn nvarchar_param(s: &str) -> (Vec<u8>, Vec<u8>) {
    let mut ti = vec![NVARCHARTYPE];
    ti.extend_from_slice(&8000u16.to_le_bytes());
    ti.extend_from_slice(&[0x09, 0x04, 0xD0, 0x00, 0x34]);
    let b = super::strings::utf16le(s);
    let mut val = (b.len() as u16).to_le_bytes().to_vec();
    val.extend(b);
    (ti, val)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn int_param(name: &str, v: i32) -> Vec<u8> {
        let mut b = b_varchar(name);
        b.extend_from_slice(&[0, INTNTYPE, 4, 4]);
        b.extend_from_slice(&v.to_le_bytes());
        b
    }

    #[test]
    fn sp_executesql_by_id_with_int_and_nvarchar() {
        let (ti_stmt, v_stmt) = nvarchar_param("SELECT @p1, @p2");
        let (ti_decl, v_decl) = nvarchar_param("@p1 int, @p2 nvarchar(10)");
        let (ti_s, v_s) = nvarchar_param("hé'");
        let intn = [INTNTYPE, 4];
        let payload = encode_call(
            &ProcRef::Id(SP_EXECUTESQL),
            &[
                RawParam {
                    name: "",
                    status: 0,
                    type_info: &ti_stmt,
                    value: &v_stmt,
                },
                RawParam {
                    name: "",
                    status: 0,
                    type_info: &ti_decl,
                    value: &v_decl,
                },
                RawParam {
                    name: "@p1",
                    status: 0,
                    type_info: &intn,
                    value: &[4, 0xD6, 0xFF, 0xFF, 0xFF],
                },
                RawParam {
                    name: "@p2",
                    status: 0,
                    type_info: &ti_s,
                    value: &v_s,
                },
            ],
        );
        let calls = decode_rpc(&payload, true).unwrap();
        assert_eq!(calls.len(), 1);
        let c = &calls[0];
        assert_eq!(c.proc.well_known(), Some(SP_EXECUTESQL));
        let values: Vec<_> = c.params.iter().map(|p| p.value.clone()).collect();
        assert_eq!(
            values,
            vec![
                ParamValue::Str("SELECT @p1, @p2".into()),
                ParamValue::Str("@p1 int, @p2 nvarchar(10)".into()),
                ParamValue::Int(-42),
                ParamValue::Str("hé'".into()),
            ]
        );
        assert_eq!(c.params[2].name, "@p1");
        // Every cut of a valid request is an error, never a panic or a wrong success.
        // Every cut of a valid request is an error, or (cut at a parameter boundary) a prefix
        // of the parameters: never a panic, never a value that was not sent.
        for cut in 0..payload.len() {
            if let Ok(short) = decode_rpc(&payload[..cut], true) {
                assert!(short[0].params.len() < 4, "cut {cut}");
                assert_eq!(
                    short[0].params[..],
                    c.params[..short[0].params.len()],
                    "cut {cut}"
                );
            }
        }
    }

    #[test]
    fn by_name_output_param_batches_and_plp() {
        // sp_prepexec by name, handle OUTPUT (NULL int), then a PLP nvarchar(max) statement
        // in two chunks, then a second call after the 0x80 batch flag.
        let mut p = Vec::new();
        p.extend_from_slice(&4u32.to_le_bytes()); // ALL_HEADERS with no header
        p.extend(super::super::strings::us_varchar("sp_prepexec"));
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend(b_varchar("@handle"));
        p.extend_from_slice(&[PARAM_BY_REF, INTNTYPE, 4, 0]);
        p.extend(b_varchar(""));
        p.extend_from_slice(&[0, NVARCHARTYPE, 0xFF, 0xFF, 9, 4, 0xD0, 0, 0x34]);
        p.extend_from_slice(&4u64.to_le_bytes());
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(&[b'a', 0]);
        p.extend_from_slice(&2u32.to_le_bytes());
        p.extend_from_slice(&[b'b', 0]);
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(0x80);
        p.extend_from_slice(&[0xFF, 0xFF]);
        p.extend_from_slice(&SP_UNPREPARE.to_le_bytes());
        p.extend_from_slice(&0u16.to_le_bytes());
        p.extend(int_param("", 5));
        let calls = decode_rpc(&p, true).unwrap();
        assert_eq!(calls.len(), 2);
        assert_eq!(calls[0].proc, ProcRef::Name("sp_prepexec".into()));
        assert_eq!(calls[0].proc.well_known(), Some(SP_PREPEXEC));
        assert!(calls[0].params[0].is_output());
        assert_eq!(calls[0].params[0].value, ParamValue::Null);
        assert_eq!(calls[0].params[1].value, ParamValue::Str("ab".into()));
        assert_eq!(calls[1].proc.well_known(), Some(SP_UNPREPARE));
        assert_eq!(calls[1].params[0].value, ParamValue::Int(5));
        // Without ALL_HEADERS (TDS 7.1): the same call minus the first four bytes.
        assert_eq!(decode_rpc(&p[4..], false).unwrap(), calls);
    }

    #[test]
    fn scalar_types() {
        let cases: Vec<(Vec<u8>, ParamValue)> = vec![
            (vec![BITNTYPE, 1, 1, 1], ParamValue::Bit(true)),
            (vec![BITTYPE, 0], ParamValue::Bit(false)),
            (vec![INT1TYPE, 200], ParamValue::Int(200)),
            (vec![INT2TYPE, 0xFE, 0xFF], ParamValue::Int(-2)),
            (
                [vec![INT8TYPE], (-5i64).to_le_bytes().to_vec()].concat(),
                ParamValue::Int(-5),
            ),
            (
                [vec![FLTNTYPE, 8, 8], 1.5f64.to_le_bytes().to_vec()].concat(),
                ParamValue::Float(1.5),
            ),
            (
                [vec![FLTNTYPE, 4, 4], 0.25f32.to_le_bytes().to_vec()].concat(),
                ParamValue::Float(0.25),
            ),
            // DECIMAL(10,2) -123.45: sign 0, magnitude 12345 in 4 bytes.
            (
                [
                    vec![DECIMALNTYPE, 17, 10, 2, 5, 0],
                    12345u32.to_le_bytes().to_vec(),
                ]
                .concat(),
                ParamValue::Decimal {
                    value: -12345,
                    scale: 2,
                },
            ),
            // MONEY 1.0000: high 0, low 10000.
            (
                [
                    vec![MONEYNTYPE, 8, 8],
                    0u32.to_le_bytes().to_vec(),
                    10000u32.to_le_bytes().to_vec(),
                ]
                .concat(),
                ParamValue::Decimal {
                    value: 10000,
                    scale: 4,
                },
            ),
            (vec![INTNTYPE, 4, 0], ParamValue::Null),
            (vec![NULLTYPE], ParamValue::Null),
            (
                vec![BIGVARCHRTYPE, 10, 0, 9, 4, 0xD0, 0, 0x34, 2, 0, b'o', b'k'],
                ParamValue::Str("ok".into()),
            ),
            (
                vec![NVARCHARTYPE, 10, 0, 9, 4, 0xD0, 0, 0x34, 0xFF, 0xFF],
                ParamValue::Null,
            ),
            (
                vec![BIGVARBINTYPE, 10, 0, 1, 0, 7],
                ParamValue::Bytes(vec![7]),
            ),
            (
                vec![DATENTYPE, 3, 1, 2, 3],
                ParamValue::Bytes(vec![1, 2, 3]),
            ),
        ];
        for (typed, want) in cases {
            let mut p = 4u32.to_le_bytes().to_vec();
            p.extend_from_slice(&[0xFF, 0xFF, 10, 0, 0, 0]);
            p.extend(b_varchar("@x"));
            p.push(0);
            p.extend_from_slice(&typed);
            let calls = decode_rpc(&p, true).unwrap_or_else(|e| panic!("{typed:02X?}: {e}"));
            assert_eq!(calls[0].params[0].value, want, "{typed:02X?}");
        }
    }

    #[test]
    fn refusals() {
        let head = |rest: &[u8]| {
            let mut p = 4u32.to_le_bytes().to_vec();
            p.extend_from_slice(&[0xFF, 0xFF, 10, 0, 0, 0, 0, 0]);
            p.extend_from_slice(rest);
            p
        };
        // XML, an encrypted parameter, a bad INTN length, a cut value.
        assert_eq!(
            decode_rpc(&head(&[0xF1, 0]), true),
            Err(RpcError::Unsupported(0xF1))
        );
        assert_eq!(
            decode_rpc(&head(&[INTNTYPE]), true).unwrap_err(),
            RpcError::Truncated(13)
        );
        let mut enc = 4u32.to_le_bytes().to_vec();
        enc.extend_from_slice(&[0xFF, 0xFF, 10, 0, 0, 0, 0, PARAM_ENCRYPTED, INTNTYPE, 4, 0]);
        assert_eq!(decode_rpc(&enc, true), Err(RpcError::Unsupported(INTNTYPE)));
        assert_eq!(
            decode_rpc(&head(&[INTNTYPE, 4, 3, 1, 2, 3]), true),
            Err(RpcError::BadLength {
                type_byte: INTNTYPE,
                len: 3
            })
        );
        assert_eq!(
            decode_rpc(&[9, 0, 0, 0], true),
            Err(RpcError::BadAllHeaders(9))
        );
        // A separator that is not a batch flag.
        let mut two = head(&[INTNTYPE, 4, 0]);
        two.extend_from_slice(&[0xFE, 0xFF, 0xFF, 15, 0, 0, 0]);
        assert!(decode_rpc(&two, true).is_err());
    }

    #[test]
    fn server_tokens() {
        assert_eq!(return_status(0), vec![0x79, 0, 0, 0, 0]);
        assert_eq!(
            return_value_int(0, "@handle", Some(1)),
            [
                vec![0xAC, 0, 0, 7],
                super::super::strings::utf16le("@handle"),
                vec![1, 0, 0, 0, 0, 1, 0, INTNTYPE, 4, 4, 1, 0, 0, 0]
            ]
            .concat()
        );
        assert_eq!(
            done_proc(TOKEN_DONEPROC, 0, 0xE0, 0),
            vec![0xFE, 0, 0, 0xE0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        );
    }
}
