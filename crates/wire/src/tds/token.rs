//! Login response tokens (MS-TDS 2.2.7): LOGINACK is read (by dtcprobe, to report the TDS version
//! the server acknowledged); ENVCHANGE, INFO/ERROR and DONE are written (by the test peer) and
//! skipped when reading. All of these but DONE carry a little-endian u16 length after the token
//! byte.

use super::strings::{b_varchar, from_utf16le, us_varchar};

pub const TOKEN_COLMETADATA: u8 = 0x81;
pub const TOKEN_ERROR: u8 = 0xAA;
pub const TOKEN_INFO: u8 = 0xAB;
pub const TOKEN_LOGINACK: u8 = 0xAD;
pub const TOKEN_ROW: u8 = 0xD1;
pub const TOKEN_ENVCHANGE: u8 = 0xE3;
pub const TOKEN_DONE: u8 = 0xFD;

/// ENVCHANGE types.
pub const ENV_DATABASE: u8 = 1;
pub const ENV_LANGUAGE: u8 = 2;
pub const ENV_PACKET_SIZE: u8 = 4;
pub const ENV_COLLATION: u8 = 7;
pub const ENV_BEGIN_TRAN: u8 = 8;
pub const ENV_COMMIT_TRAN: u8 = 9;
pub const ENV_ROLLBACK_TRAN: u8 = 10;

/// DONE status bits.
pub const DONE_MORE: u16 = 0x01;
pub const DONE_ERROR: u16 = 0x02;
pub const DONE_COUNT: u16 = 0x10;
pub const DONE_ATTN: u16 = 0x20;

/// `token`, its body's length (u16 LE), the body.
pub fn token_with_len(token: u8, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(3 + body.len());
    v.push(token);
    v.extend_from_slice(&(body.len() as u16).to_le_bytes());
    v.extend_from_slice(body);
    v
}

/// An ENVCHANGE whose new and old values are B_VARCHAR strings (database, language, packet size).
pub fn envchange_str(kind: u8, new: &str, old: &str) -> Vec<u8> {
    let mut body = vec![kind];
    body.extend(b_varchar(new));
    body.extend(b_varchar(old));
    token_with_len(TOKEN_ENVCHANGE, &body)
}

/// An ENVCHANGE whose new and old values are B_VARBYTE (collation, transaction descriptors).
pub fn envchange_bytes(kind: u8, new: &[u8], old: &[u8]) -> Vec<u8> {
    let mut body = vec![kind, new.len() as u8];
    body.extend_from_slice(new);
    body.push(old.len() as u8);
    body.extend_from_slice(old);
    token_with_len(TOKEN_ENVCHANGE, &body)
}

/// ENVCHANGE type 20: routing (MS-TDS 2.2.7.9), sent after LOGINACK by a server that sends the
/// client elsewhere (Azure SQL "redirect" policy, read-only routing).
pub const ENV_ROUTING: u8 = 20;

/// The routing ENVCHANGE: new value = u16 length, then protocol 0 (TCP), port (u16 LE), the
/// server name as US_VARCHAR; old value = two zero bytes.
pub fn envchange_routing(host: &str, port: u16) -> Vec<u8> {
    let mut routing = vec![0u8];
    routing.extend_from_slice(&port.to_le_bytes());
    routing.extend(us_varchar(host));
    let mut body = vec![ENV_ROUTING];
    body.extend_from_slice(&(routing.len() as u16).to_le_bytes());
    body.extend(routing);
    body.extend_from_slice(&[0, 0]);
    token_with_len(TOKEN_ENVCHANGE, &body)
}

/// DONE (also DONEPROC/DONEINPROC's layout): status, current command, row count (TDS 7.2+: u64).
pub fn done(status: u16, rows: u64) -> Vec<u8> {
    let mut v = vec![TOKEN_DONE];
    v.extend_from_slice(&status.to_le_bytes());
    v.extend_from_slice(&0u16.to_le_bytes());
    v.extend_from_slice(&rows.to_le_bytes());
    v
}

/// The body of an INFO or ERROR token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMessage {
    pub number: i32,
    pub state: u8,
    pub class: u8,
    pub text: String,
    pub server: String,
    pub procedure: String,
    pub line: i32,
}

impl ServerMessage {
    /// The token, `token` being [`TOKEN_ERROR`] or [`TOKEN_INFO`].
    pub fn encode(&self, token: u8) -> Vec<u8> {
        let mut body = self.number.to_le_bytes().to_vec();
        body.push(self.state);
        body.push(self.class);
        body.extend(us_varchar(&self.text));
        body.extend(b_varchar(&self.server));
        body.extend(b_varchar(&self.procedure));
        body.extend_from_slice(&self.line.to_le_bytes());
        token_with_len(token, &body)
    }
}

/// LOGINACK (MS-TDS 2.2.7.14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginAck {
    pub interface: u8,
    /// Big-endian on the wire, e.g. 0x74000004 for TDS 7.4.
    pub tds_version: u32,
    pub program: String,
    /// major, minor, build high, build low. `None` when a parsed token was cut short after the
    /// program name (dtcprobe only needs the fields before it).
    pub program_version: Option<[u8; 4]>,
}

impl LoginAck {
    /// The whole token (token byte, length, body). A missing program version is sent as zeros.
    pub fn encode(&self) -> Vec<u8> {
        let mut body = vec![self.interface];
        body.extend_from_slice(&self.tds_version.to_be_bytes());
        body.extend(b_varchar(&self.program));
        body.extend_from_slice(&self.program_version.unwrap_or_default());
        token_with_len(TOKEN_LOGINACK, &body)
    }

    /// A LOGINACK token body (after the length).
    pub fn parse_body(body: &[u8]) -> Option<LoginAck> {
        let interface = *body.first()?;
        let tds_version = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
        let chars = *body.get(5)? as usize;
        let end = 6 + chars * 2;
        let program = from_utf16le(body.get(6..end)?);
        let program_version = body.get(end..end + 4).and_then(|v| v.try_into().ok());
        Some(LoginAck {
            interface,
            tds_version,
            program,
            program_version,
        })
    }
}

/// Looks for a LOGINACK in a login response, skipping the tokens SQL Server sends before it
/// (ENVCHANGE, INFO, ERROR: all length-prefixed). `None` at any other token or a token cut short.
pub fn find_login_ack(payload: &[u8]) -> Option<LoginAck> {
    let mut i = 0;
    while i + 3 <= payload.len() {
        let token = payload[i];
        let len = u16::from_le_bytes([payload[i + 1], payload[i + 2]]) as usize;
        let body = payload.get(i + 3..i + 3 + len)?;
        match token {
            TOKEN_LOGINACK => return LoginAck::parse_body(body),
            TOKEN_ENVCHANGE | TOKEN_INFO | TOKEN_ERROR => i += 3 + len,
            _ => return None,
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_ack_bytes_and_round_trip() {
        let ack = LoginAck {
            interface: 1,
            tds_version: 0x7400_0004,
            program: "SQL".into(),
            program_version: Some([16, 0, 3, 232]),
        };
        let bytes = ack.encode();
        assert_eq!(
            bytes,
            vec![
                0xAD, 16, 0, // token, length 16
                1, 0x74, 0, 0, 4, // interface, TDS version (big-endian)
                3, b'S', 0, b'Q', 0, b'L', 0, // B_VARCHAR program name
                16, 0, 3, 232, // program version
            ]
        );
        assert_eq!(LoginAck::parse_body(&bytes[3..]), Some(ack.clone()));
        // Cut after the name: still a LOGINACK, without the program version.
        assert_eq!(
            LoginAck::parse_body(&bytes[3..bytes.len() - 1]),
            Some(LoginAck {
                program_version: None,
                ..ack
            })
        );
        for cut in 0..10 {
            assert_eq!(LoginAck::parse_body(&bytes[3..3 + cut]), None, "cut {cut}");
        }
    }

    #[test]
    fn find_login_ack_skips_envchange_info_error_only() {
        let ack = LoginAck {
            interface: 1,
            tds_version: 0x7400_0004,
            program: "Microsoft SQL Server".into(),
            program_version: Some([16, 0, 3, 232]),
        };
        let info = ServerMessage {
            number: 5701,
            state: 1,
            class: 0,
            text: "Changed database context".into(),
            server: "PEER".into(),
            procedure: String::new(),
            line: 1,
        };
        let mut response = envchange_str(ENV_DATABASE, "db", "master");
        response.extend(info.encode(TOKEN_INFO));
        response.extend(envchange_bytes(ENV_COLLATION, &[9, 4, 0xD0, 0, 0x34], &[]));
        response.extend(ack.encode());
        response.extend(done(0, 0));
        assert_eq!(find_login_ack(&response), Some(ack.clone()));

        // A failed login: ERROR then DONE, no LOGINACK.
        let mut failed = ServerMessage {
            number: 18456,
            class: 14,
            ..info
        }
        .encode(TOKEN_ERROR);
        failed.extend(done(DONE_ERROR, 0));
        assert_eq!(find_login_ack(&failed), None);
        // A token it does not know how to skip ends the search.
        let mut unknown = vec![TOKEN_COLMETADATA, 0, 0];
        unknown.extend(ack.encode());
        assert_eq!(find_login_ack(&unknown), None);
        // A LOGINACK whose length runs past the payload.
        let ack_bytes = ack.encode();
        assert_eq!(find_login_ack(&ack_bytes[..ack_bytes.len() - 1]), None);
    }

    #[test]
    fn fixed_layouts() {
        assert_eq!(
            done(DONE_COUNT, 3),
            vec![0xFD, 0x10, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            envchange_str(ENV_PACKET_SIZE, "8", ""),
            vec![0xE3, 5, 0, 4, 1, b'8', 0, 0]
        );
        assert_eq!(
            envchange_routing("h", 11001),
            // MS-TDS 2.2.7.9, type 20: the routing value is protocol (1) + port (2) + the
            // server name as US_VARCHAR (2 + 2 for "h") = 7 bytes; the token length adds the
            // type byte, the value's own length field and the empty old value (1 + 2 + 7 + 2).
            vec![0xE3, 12, 0, 20, 7, 0, 0, 0xF9, 0x2A, 1, 0, b'h', 0, 0, 0]
        );
        assert_eq!(
            envchange_bytes(ENV_BEGIN_TRAN, &[1, 2], &[]),
            vec![0xE3, 5, 0, 8, 2, 1, 2, 0]
        );
    }
}
