//! The peer's answer to RPC requests (packet type 0x03): what Microsoft's drivers send for every
//! parameterised statement. ODBC Driver 18 uses sp_prepexec / sp_execute / sp_unprepare (or
//! sp_executesql), tedious sp_executesql and sp_prepare / sp_execute / sp_unprepare.
//!
//! How: the request is decoded by dtcprobe's own codec (dtcprobe_wire::tds::rpc); the statement
//! text gets its parameters substituted as SQL literals (so the same scripted statements that
//! batches reach answer here, and a value that was mis-decoded shows up in the rows the driver
//! reads back), and its DONE tokens become DONEINPROC, followed by RETURNSTATUS, the RETURNVALUE
//! of a handle, and DONEPROC, in the order SQL Server sends them (MS-TDS 2.2.7.7, 2.2.7.18,
//! 2.2.7.19).
//!
//! Not modelled: cursors (sp_cursor*, ProcID 1-9) and user procedures answer 2812 as an
//! instance without them would; sp_prepare does not send the statement's COLMETADATA first.

use std::collections::HashMap;

use dtcprobe_wire::tds::rpc::{
    decode_rpc, done_proc, return_status, return_value_int, ParamValue, RpcCall, RpcParam,
    SP_EXECUTE, SP_EXECUTESQL, SP_PREPARE, SP_PREPEXEC, SP_UNPREPARE, TOKEN_DONEINPROC,
    TOKEN_DONEPROC,
};
use dtcprobe_wire::tds::token::{
    DONE_COUNT, DONE_ERROR, DONE_MORE, TOKEN_COLMETADATA, TOKEN_DONE, TOKEN_ROW,
};
use dtcprobe_wire::tds::utf16le;

use super::{before_7_2, done, done_len, error, sized, Session};

/// Statements prepared on one connection: handle -> (text, declared parameter names).
#[derive(Default)]
pub(super) struct Prepared {
    statements: HashMap<i32, (String, Vec<String>)>,
    next_handle: i32,
}

/// SQL Server's "current command" for DONEPROC after EXECUTE.
const CURCMD_EXECUTE: u16 = 0xE0;

impl Session<'_> {
    /// Answers one RPC request message. Returns the reply and a short description for the event
    /// log (procedure and statement).
    pub(super) fn rpc(&mut self, payload: &[u8], all_headers: bool) -> (Vec<u8>, String) {
        let calls = match decode_rpc(payload, all_headers) {
            Ok(c) => c,
            Err(e) => {
                let mut r = error(
                    8009,
                    1,
                    16,
                    &format!("The incoming tabular data stream (TDS) remote procedure call (RPC) protocol stream is incorrect: {e}."),
                );
                r.extend(sized(done_proc(TOKEN_DONEPROC, DONE_ERROR, 0, 0)));
                return (r, format!("undecodable RPC: {e}"));
            }
        };
        let mut out = Vec::new();
        let mut seen = Vec::new();
        let n = calls.len();
        for (i, call) in calls.iter().enumerate() {
            let (mut r, what) = self.call(call);
            seen.push(what);
            // DONEPROC of all but the last call says "more follows".
            if i + 1 < n {
                if let Some(pos) = r.len().checked_sub(done_len()) {
                    let st = u16::from_le_bytes([r[pos + 1], r[pos + 2]]) | DONE_MORE;
                    r[pos + 1..pos + 3].copy_from_slice(&st.to_le_bytes());
                }
            }
            out.extend(r);
        }
        (out, seen.join(" | "))
    }

    fn call(&mut self, call: &RpcCall) -> (Vec<u8>, String) {
        let p = &call.params;
        let name = format!("{:?}", call.proc);
        match call.proc.well_known() {
            Some(SP_EXECUTESQL) => {
                let Some(stmt) = p.first().and_then(text) else {
                    return missing_param(&name, "@stmt");
                };
                let decl = p.get(1).and_then(text).unwrap_or_default();
                let args = p.get(2..).unwrap_or(&[]);
                let names = declared_names(&decl);
                let sql = bind(&stmt, &names, args);
                let r = self.in_proc(&sql, select_params(&stmt, &names, args), None);
                (r, format!("sp_executesql: {sql}"))
            }
            Some(SP_PREPARE) | Some(SP_PREPEXEC) => {
                let (Some(decl), Some(stmt)) = (
                    p.get(1).map(|x| text(x).unwrap_or_default()),
                    p.get(2).and_then(text),
                ) else {
                    return missing_param(&name, "@stmt");
                };
                let names = declared_names(&decl);
                self.prepared.next_handle += 1;
                let handle = self.prepared.next_handle;
                self.prepared
                    .statements
                    .insert(handle, (stmt.clone(), names.clone()));
                let out_name = p[0].name.clone();
                if call.proc.well_known() == Some(SP_PREPARE) {
                    let mut r = return_status(0);
                    r.extend(return_value(&out_name, handle));
                    r.extend(sized(done_proc(TOKEN_DONEPROC, 0, CURCMD_EXECUTE, 0)));
                    return (r, format!("sp_prepare {handle}: {stmt}"));
                }
                let args = p.get(3..).unwrap_or(&[]);
                let sql = bind(&stmt, &names, args);
                let typed = select_params(&stmt, &names, args);
                let r = self.in_proc(&sql, typed, Some((&out_name, handle)));
                (r, format!("sp_prepexec {handle}: {sql}"))
            }
            Some(SP_EXECUTE) => {
                let Some(ParamValue::Int(h)) = p.first().map(|x| &x.value) else {
                    return missing_param(&name, "@handle");
                };
                let Some((stmt, names)) = self.prepared.statements.get(&(*h as i32)).cloned()
                else {
                    return unknown_handle(*h);
                };
                let args = p.get(1..).unwrap_or(&[]);
                let sql = bind(&stmt, &names, args);
                let r = self.in_proc(&sql, select_params(&stmt, &names, args), None);
                (r, format!("sp_execute {h}: {sql}"))
            }
            Some(SP_UNPREPARE) => {
                let Some(ParamValue::Int(h)) = p.first().map(|x| &x.value) else {
                    return missing_param(&name, "@handle");
                };
                if self.prepared.statements.remove(&(*h as i32)).is_none() {
                    return unknown_handle(*h);
                }
                let mut r = return_status(0);
                r.extend(sized(done_proc(TOKEN_DONEPROC, 0, CURCMD_EXECUTE, 0)));
                (r, format!("sp_unprepare {h}"))
            }
            _ => {
                let shown = match &call.proc {
                    dtcprobe_wire::tds::rpc::ProcRef::Name(n) => n.clone(),
                    dtcprobe_wire::tds::rpc::ProcRef::Id(id) => format!("procedure id {id}"),
                };
                let mut r = error(
                    2812,
                    62,
                    16,
                    &format!("Could not find stored procedure '{shown}'."),
                );
                r.extend(sized(done_proc(TOKEN_DONEPROC, DONE_ERROR, 0, 0)));
                (r, format!("unknown procedure {shown}"))
            }
        }
    }

    /// Runs `sql` inside a procedure: each statement's DONE becomes DONEINPROC (with "more"),
    /// then RETURNSTATUS, the handle's RETURNVALUE when there is one, DONEPROC. On an error the
    /// statement's ERROR and DONEINPROC go out, and DONEPROC carries the error bit.
    /// `typed`: the statement is `SELECT @a, @b...`, answered with the parameters' own types.
    fn in_proc(
        &mut self,
        sql: &str,
        typed: Option<Vec<ParamValue>>,
        handle: Option<(&str, i32)>,
    ) -> Vec<u8> {
        let mut out = Vec::new();
        let mut failed = false;
        let statements: Vec<&str> = sql
            .split(';')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let typed = typed.map(|v| (typed_row(&v), false));
        for stmt in statements {
            let (mut r, f) = match &typed {
                Some(t) => t.clone(),
                None => self.statement(stmt),
            };
            if f {
                r = self.with_info_before_error(r);
            }
            if let Some(pos) = r.len().checked_sub(done_len()) {
                if r[pos] == TOKEN_DONE {
                    r[pos] = TOKEN_DONEINPROC;
                    let st = u16::from_le_bytes([r[pos + 1], r[pos + 2]]) | DONE_MORE;
                    r[pos + 1..pos + 3].copy_from_slice(&st.to_le_bytes());
                }
            }
            out.extend(r);
            if f {
                failed = true;
                break;
            }
        }
        if !failed {
            out.extend(return_status(0));
        }
        if let Some((name, h)) = handle {
            out.extend(return_value(name, h));
        }
        let status = if failed { DONE_ERROR } else { 0 };
        out.extend(sized(done_proc(TOKEN_DONEPROC, status, CURCMD_EXECUTE, 0)));
        out
    }
}

/// RETURNVALUE for a handle, with the user type cut to a u16 before TDS 7.2.
fn return_value(name: &str, handle: i32) -> Vec<u8> {
    let mut v = return_value_int(0, name, Some(handle));
    if done_len() == 9 {
        // token, ordinal (2), name (1 + 2n), status (1): then UserType's upper two bytes go.
        let user_type = 1 + 2 + 1 + 2 * name.encode_utf16().count() + 1;
        v.drain(user_type + 2..user_type + 4);
    }
    v
}

/// The values of `SELECT @a, @b` (nothing else in the statement), in the select list's order.
fn select_params(stmt: &str, declared: &[String], values: &[RpcParam]) -> Option<Vec<ParamValue>> {
    let rest = stmt.trim();
    if rest.len() < 7 || !rest[..7].eq_ignore_ascii_case("SELECT ") {
        return None;
    }
    let mut out = Vec::new();
    for item in rest[7..].split(',') {
        let item = item.trim();
        if !item.starts_with('@') || item.starts_with("@@") {
            return None;
        }
        let at = values.iter().enumerate().position(|(i, p)| {
            let name = if p.name.is_empty() {
                declared.get(i).map(String::as_str).unwrap_or("")
            } else {
                &p.name
            };
            name.eq_ignore_ascii_case(item)
        })?;
        out.push(values[at].value.clone());
    }
    Some(out)
}

/// One row of `values`, each column typed as SQL Server types `SELECT @p` for that parameter:
/// int or bigint, bit, float, decimal(38, s), nvarchar, varbinary; NULL as an int.
fn typed_row(values: &[ParamValue]) -> Vec<u8> {
    const COLLATION: [u8; 5] = [0x09, 0x04, 0xD0, 0x00, 0x34];
    let mut meta = vec![TOKEN_COLMETADATA];
    meta.extend_from_slice(&(values.len() as u16).to_le_bytes());
    let mut row = vec![TOKEN_ROW];
    for v in values {
        if before_7_2() {
            meta.extend_from_slice(&0u16.to_le_bytes()); // UserType
        } else {
            meta.extend_from_slice(&0u32.to_le_bytes());
        }
        meta.extend_from_slice(&0x0001u16.to_le_bytes()); // Flags: nullable
        match v {
            ParamValue::Null => {
                meta.extend_from_slice(&[0x26, 4]);
                row.push(0);
            }
            ParamValue::Int(i) => match i32::try_from(*i) {
                Ok(small) => {
                    meta.extend_from_slice(&[0x26, 4]);
                    row.push(4);
                    row.extend_from_slice(&small.to_le_bytes());
                }
                Err(_) => {
                    meta.extend_from_slice(&[0x26, 8]);
                    row.push(8);
                    row.extend_from_slice(&i.to_le_bytes());
                }
            },
            ParamValue::Bit(b) => {
                meta.extend_from_slice(&[0x68, 1]);
                row.extend_from_slice(&[1, u8::from(*b)]);
            }
            ParamValue::Float(f) => {
                meta.extend_from_slice(&[0x6D, 8]);
                row.push(8);
                row.extend_from_slice(&f.to_le_bytes());
            }
            ParamValue::Decimal { value, scale } => {
                meta.extend_from_slice(&[0x6A, 17, 38, *scale]);
                row.extend_from_slice(&[17, u8::from(*value >= 0)]);
                row.extend_from_slice(&value.unsigned_abs().to_le_bytes());
            }
            ParamValue::Str(s) => {
                let b = utf16le(s);
                meta.push(0xE7);
                meta.extend_from_slice(&8000u16.to_le_bytes());
                meta.extend_from_slice(&COLLATION);
                row.extend_from_slice(&(b.len().min(8000) as u16).to_le_bytes());
                row.extend_from_slice(&b[..b.len().min(8000)]);
            }
            ParamValue::Bytes(b) => {
                meta.push(0xA5);
                meta.extend_from_slice(&8000u16.to_le_bytes());
                row.extend_from_slice(&(b.len().min(8000) as u16).to_le_bytes());
                row.extend_from_slice(&b[..b.len().min(8000)]);
            }
        }
        meta.push(0); // column name: empty B_VARCHAR
    }
    meta.extend(row);
    meta.extend(done(DONE_COUNT, 1));
    meta
}

fn text(p: &RpcParam) -> Option<String> {
    match &p.value {
        ParamValue::Str(s) => Some(s.clone()),
        _ => None,
    }
}

fn missing_param(proc: &str, param: &str) -> (Vec<u8>, String) {
    let mut r = error(
        201,
        4,
        16,
        &format!(
            "Procedure or function '{proc}' expects parameter '{param}', which was not supplied."
        ),
    );
    r.extend(sized(done_proc(TOKEN_DONEPROC, DONE_ERROR, 0, 0)));
    (r, format!("{proc} without {param}"))
}

fn unknown_handle(h: i64) -> (Vec<u8>, String) {
    let mut r = error(
        8179,
        1,
        16,
        &format!("Could not find prepared statement with handle {h}."),
    );
    r.extend(sized(done_proc(TOKEN_DONEPROC, DONE_ERROR, 0, 0)));
    (r, format!("unknown handle {h}"))
}

/// The parameter names a declaration lists, in order: "@P1 int,@P2 nvarchar(10)" -> [@P1, @P2].
fn declared_names(decl: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut depth = 0;
    let mut start = true;
    let mut cur = String::new();
    for ch in decl.chars() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                start = true;
                continue;
            }
            _ => {}
        }
        if start {
            if ch.is_whitespace() {
                continue;
            }
            start = false;
            cur.clear();
            if ch == '@' {
                cur.push(ch);
                // Read the name up to the first space.
                continue;
            }
        } else if !cur.is_empty() && !cur.ends_with(' ') {
            if ch.is_alphanumeric() || ch == '_' || ch == '@' || ch == '#' || ch == '$' {
                cur.push(ch);
            } else {
                names.push(cur.clone());
                cur.push(' ');
            }
        }
    }
    if !cur.is_empty() && !cur.ends_with(' ') {
        names.push(cur);
    }
    names
}

/// `value` as a T-SQL literal.
fn literal(value: &ParamValue) -> String {
    match value {
        ParamValue::Null => "NULL".into(),
        ParamValue::Int(i) => i.to_string(),
        ParamValue::Bit(b) => u8::from(*b).to_string(),
        ParamValue::Float(f) => format!("{f:?}"),
        ParamValue::Decimal { value, scale } => {
            let s = *scale as u32;
            let div = 10i128.pow(s);
            let sign = if *value < 0 { "-" } else { "" };
            let (whole, frac) = (value.abs() / div, value.abs() % div);
            if s == 0 {
                format!("{sign}{whole}")
            } else {
                format!("{sign}{whole}.{frac:0width$}", width = s as usize)
            }
        }
        ParamValue::Str(s) => format!("N'{}'", s.replace('\'', "''")),
        ParamValue::Bytes(b) => {
            let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
            format!("0x{hex}")
        }
    }
}

/// Substitutes parameters into `stmt`: a value sent with a name binds to that name, an unnamed
/// one to the declared name at its position. `@@name` and text inside quotes are left alone.
fn bind(stmt: &str, declared: &[String], values: &[RpcParam]) -> String {
    let mut map: HashMap<String, String> = HashMap::new();
    for (i, p) in values.iter().enumerate() {
        let name = if p.name.is_empty() {
            match declared.get(i) {
                Some(n) => n.clone(),
                None => continue,
            }
        } else {
            p.name.clone()
        };
        map.insert(name.to_ascii_lowercase(), literal(&p.value));
    }
    let chars: Vec<char> = stmt.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    let mut in_quote = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            in_quote = !in_quote;
        }
        if !in_quote
            && c == '@'
            && chars.get(i + 1).is_some_and(|n| *n != '@')
            && (i == 0 || chars[i - 1] != '@')
        {
            let mut j = i + 1;
            while j < chars.len() && (chars[j].is_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            let name: String = chars[i..j].iter().collect();
            if let Some(v) = map.get(&name.to_ascii_lowercase()) {
                out.push_str(v);
                i = j;
                continue;
            }
        }
        out.push(c);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, value: ParamValue) -> RpcParam {
        RpcParam {
            name: name.into(),
            status: 0,
            type_byte: 0,
            value,
        }
    }

    #[test]
    fn declarations_and_binding() {
        assert_eq!(
            declared_names("@P1 int,@P2 nvarchar(10), @p3 decimal(10, 2)"),
            vec!["@P1", "@P2", "@p3"]
        );
        let sql = bind(
            "INSERT INTO #t (id, note) VALUES (@P1, @P2) -- '@P1' @@TRANCOUNT",
            &declared_names("@P1 int,@P2 nvarchar(10)"),
            &[
                param("", ParamValue::Int(7)),
                param("", ParamValue::Str("it's".into())),
            ],
        );
        assert_eq!(
            sql,
            "INSERT INTO #t (id, note) VALUES (7, N'it''s') -- '@P1' @@TRANCOUNT"
        );
        // Named values bind by name, whatever their order; @p1 does not capture @p10.
        let sql = bind(
            "SELECT @p10, @p1",
            &[],
            &[
                param("@p1", ParamValue::Int(1)),
                param("@p10", ParamValue::Int(10)),
            ],
        );
        assert_eq!(sql, "SELECT 10, 1");
        assert_eq!(
            literal(&ParamValue::Decimal {
                value: -12345,
                scale: 2
            }),
            "-123.45"
        );
        assert_eq!(
            literal(&ParamValue::Decimal { value: 5, scale: 3 }),
            "0.005"
        );
        assert_eq!(literal(&ParamValue::Bytes(vec![0xAB, 1])), "0xAB01");
    }
}
