//! The parts of MS-TDS that dtcprobe reads from a SQL Server and that its test peer writes: the
//! 8-byte packet header, the PRELOGIN option list, and the login response tokens (LOGINACK,
//! ENVCHANGE, INFO/ERROR, DONE), and RPC requests (`rpc`: what Microsoft's drivers send for
//! parameterised statements, decoded by the test peer). Full TDS on the client side (LOGIN7,
//! result sets) is tiberius's job; this is only what the driver does not expose (the server's
//! PRELOGIN answer, the TDS version it acknowledged) plus what a scripted server needs.
//!
//! Style follows trippy-packet: builders return bytes, parsers take `&[u8]` and return `None` or
//! an error rather than panic or read past their input.

pub mod observe;
pub mod packet;
pub mod prelogin;
pub mod rpc;
pub mod token;
// Transaction manager requests, LOGIN7 and whole replies: the `tx_enlist` hop's own session.
pub mod login7;
pub mod reply;
pub mod tm;

pub use observe::{analyze, Observed};
pub use packet::{packetize, PacketHeader};
pub use prelogin::{encode_prelogin, parse_prelogin, parse_prelogin_options, PreloginInfo};
pub use token::{find_login_ack, LoginAck, ServerMessage};

/// Encodes `s` as UTF-16LE, TDS's string encoding.
pub fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect()
}

/// Decodes UTF-16LE bytes (an odd trailing byte is ignored), lossily.
pub fn from_utf16le(bytes: &[u8]) -> String {
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// B_VARCHAR: a one-byte character count, then UTF-16LE (counts above 255 are cut to 255).
pub fn b_varchar(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(u8::MAX as usize).collect();
    let mut v = vec![units.len() as u8];
    v.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    v
}

/// US_VARCHAR: a two-byte (little-endian) character count, then UTF-16LE.
pub fn us_varchar(s: &str) -> Vec<u8> {
    let units: Vec<u16> = s.encode_utf16().take(u16::MAX as usize).collect();
    let mut v = (units.len() as u16).to_le_bytes().to_vec();
    v.extend(units.iter().flat_map(|u| u.to_le_bytes()));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_encodings() {
        assert_eq!(utf16le("Aé"), vec![0x41, 0, 0xE9, 0]);
        assert_eq!(from_utf16le(&[0x41, 0, 0xE9, 0, 0x42]), "Aé");
        assert_eq!(b_varchar("ab"), vec![2, b'a', 0, b'b', 0]);
        assert_eq!(b_varchar(""), vec![0]);
        assert_eq!(b_varchar(&"x".repeat(300))[0], 255);
        assert_eq!(b_varchar(&"x".repeat(300)).len(), 1 + 255 * 2);
        assert_eq!(us_varchar("ab"), vec![2, 0, b'a', 0, b'b', 0]);
    }
}
