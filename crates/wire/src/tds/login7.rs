//! The LOGIN7 message (MS-TDS 2.2.6.4) a client sends, with SQL Server authentication or with
//! the first token of an SSPI exchange (Windows authentication: `sspi` not empty sets
//! fIntSecurity, and user name and password stay empty, as the server then ignores them).
//!
//! Written for the `tx_enlist` hop, which runs its own TDS session (tiberius cannot send
//! transaction manager requests). Layout: a 94-byte fixed part (lengths, versions, flags, then
//! offset/length pairs counted in characters), then the strings in UTF-16LE. The password is
//! obfuscated, not encrypted: each byte has its nibbles swapped and is XORed with 0xA5; that is
//! why the login runs inside TLS whenever the server allows it.

use super::strings::{from_utf16le, utf16le};

/// TDS 7.4 as LOGIN7 writes it (little-endian on the wire: 04 00 00 74).
pub const TDS_74: u32 = 0x7400_0004;
/// TDS 8.0 as LOGIN7 writes it (00 00 00 08): what Microsoft.Data.SqlClient sends inside a
/// TLS-first (`encrypt=strict`) session. SQL Server still acknowledges 7.4 in LOGINACK.
pub const TDS_80: u32 = 0x0800_0000;

/// OptionFlags1: fUseDB, fDatabase fatal, fSetLang (what Microsoft's drivers send).
pub const OPTION_FLAGS1: u8 = 0xE0;
/// OptionFlags2: fLanguage fatal, fODBC.
pub const OPTION_FLAGS2: u8 = 0x03;
/// OptionFlags2 bit fIntSecurity: the login authenticates by the SSPI token, not by name and
/// password.
pub const INT_SECURITY: u8 = 0x80;

/// Why a LOGIN7 message could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Login7Error {
    #[error("LOGIN7 of {0} bytes, shorter than its 94-byte fixed part")]
    Short(usize),
    #[error("LOGIN7 field {0} points past the end of the message")]
    OutOfBounds(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Login7 {
    pub tds_version: u32,
    pub packet_size: u32,
    pub client_program_version: u32,
    pub client_pid: u32,
    pub host_name: String,
    pub user_name: String,
    pub password: String,
    pub app_name: String,
    pub server_name: String,
    pub library_name: String,
    pub language: String,
    pub database: String,
    /// The first SSPI token (an NTLM NEGOTIATE message, say); empty for SQL Server
    /// authentication.
    pub sspi: Vec<u8>,
}

/// MS-TDS 2.2.6.4: swap the two nibbles of each byte of the UTF-16LE password, then XOR 0xA5.
pub fn obfuscate_password(password: &str) -> Vec<u8> {
    utf16le(password)
        .into_iter()
        .map(|b| b.rotate_left(4) ^ 0xA5)
        .collect()
}

/// The inverse of [`obfuscate_password`] (what a server does).
pub fn deobfuscate_password(bytes: &[u8]) -> String {
    let plain: Vec<u8> = bytes.iter().map(|b| (b ^ 0xA5).rotate_left(4)).collect();
    from_utf16le(&plain)
}

impl Login7 {
    pub fn encode(&self) -> Vec<u8> {
        const FIXED: usize = 94;
        // (offset, character count) pairs in this order, then ClientID, SSPI, AtchDBFile,
        // ChangePassword, cbSSPILong.
        let strings: [(Vec<u8>, usize); 9] = [
            self.text(&self.host_name),
            self.text(&self.user_name),
            (
                obfuscate_password(&self.password),
                self.password.encode_utf16().count(),
            ),
            self.text(&self.app_name),
            self.text(&self.server_name),
            (Vec::new(), 0), // ibExtension / cbExtension: no feature extensions
            self.text(&self.library_name),
            self.text(&self.language),
            self.text(&self.database),
        ];
        let data_len: usize = strings.iter().map(|(b, _)| b.len()).sum();
        let total = FIXED + data_len + self.sspi.len();
        let mut v = Vec::with_capacity(total);
        v.extend_from_slice(&(total as u32).to_le_bytes());
        v.extend_from_slice(&self.tds_version.to_le_bytes());
        v.extend_from_slice(&self.packet_size.to_le_bytes());
        v.extend_from_slice(&self.client_program_version.to_le_bytes());
        v.extend_from_slice(&self.client_pid.to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes()); // ConnectionID
        v.push(OPTION_FLAGS1);
        v.push(if self.sspi.is_empty() {
            OPTION_FLAGS2
        } else {
            OPTION_FLAGS2 | INT_SECURITY
        });
        v.push(0); // TypeFlags: SQL_DFLT
        v.push(0); // OptionFlags3
        v.extend_from_slice(&0i32.to_le_bytes()); // ClientTimeZone
        v.extend_from_slice(&0x0409u32.to_le_bytes()); // ClientLCID (en-US)
        let mut offset = FIXED;
        for (bytes, chars) in &strings {
            v.extend_from_slice(&(offset as u16).to_le_bytes());
            v.extend_from_slice(&(*chars as u16).to_le_bytes());
            offset += bytes.len();
        }
        v.extend_from_slice(&[0u8; 6]); // ClientID (MAC address): not sent
                                        // The SSPI token follows the strings. A token of 65,535 bytes or more has cbSSPI =
                                        // 0xFFFF and its length in cbSSPILong; NTLM tokens are a few hundred bytes.
        let sspi_len = self.sspi.len();
        v.extend_from_slice(&(offset as u16).to_le_bytes()); // ibSSPI
        v.extend_from_slice(&(sspi_len.min(0xFFFF) as u16).to_le_bytes()); // cbSSPI
        let end = offset + sspi_len;
        v.extend_from_slice(&(end as u16).to_le_bytes()); // ibAtchDBFile
        v.extend_from_slice(&0u16.to_le_bytes());
        v.extend_from_slice(&(end as u16).to_le_bytes()); // ibChangePassword
        v.extend_from_slice(&0u16.to_le_bytes());
        let long = if sspi_len >= 0xFFFF {
            sspi_len as u32
        } else {
            0
        };
        v.extend_from_slice(&long.to_le_bytes()); // cbSSPILong
        debug_assert_eq!(v.len(), FIXED);
        for (bytes, _) in strings {
            v.extend(bytes);
        }
        v.extend_from_slice(&self.sspi);
        v
    }

    /// Decodes a LOGIN7 message (MS-TDS 2.2.6.4), as a server reads it: the fixed part, the
    /// strings its offset table points at (the password de-obfuscated) and, when fIntSecurity is
    /// set, the SSPI token. Every offset is checked against the message; nothing is trusted.
    pub fn decode(p: &[u8]) -> Result<Login7, Login7Error> {
        const FIXED: usize = 94;
        if p.len() < FIXED {
            return Err(Login7Error::Short(p.len()));
        }
        let u16_at = |at: usize| u16::from_le_bytes([p[at], p[at + 1]]) as usize;
        let u32_at = |at: usize| u32::from_le_bytes([p[at], p[at + 1], p[at + 2], p[at + 3]]);
        // The bytes of the offset/length pair at `at`, `unit` bytes per counted unit.
        let field = |at: usize, unit: usize, name: &'static str| {
            let (offset, count) = (u16_at(at), u16_at(at + 2));
            p.get(offset..offset + count * unit)
                .ok_or(Login7Error::OutOfBounds(name))
        };
        let text = |at: usize, name| field(at, 2, name).map(from_utf16le);
        // cbSSPI 0xFFFF: the length is in cbSSPILong.
        let sspi = if p[25] & INT_SECURITY == 0 {
            Vec::new()
        } else if u16_at(80) == 0xFFFF {
            let offset = u16_at(78);
            let len = u32_at(90) as usize;
            offset
                .checked_add(len)
                .and_then(|end| p.get(offset..end))
                .ok_or(Login7Error::OutOfBounds("SSPI"))?
                .to_vec()
        } else {
            field(78, 1, "SSPI")?.to_vec()
        };
        Ok(Login7 {
            tds_version: u32_at(4),
            packet_size: u32_at(8),
            client_program_version: u32_at(12),
            client_pid: u32_at(16),
            host_name: text(36, "HostName")?,
            user_name: text(40, "UserName")?,
            password: deobfuscate_password(field(44, 2, "Password")?),
            app_name: text(48, "AppName")?,
            server_name: text(52, "ServerName")?,
            library_name: text(60, "CltIntName")?,
            language: text(64, "Language")?,
            database: text(68, "Database")?,
            sspi,
        })
    }

    fn text(&self, s: &str) -> (Vec<u8>, usize) {
        // Fields are limited to 128 characters by MS-TDS; longer input is cut, not wrapped.
        let cut: String = s.chars().take(128).collect();
        (utf16le(&cut), cut.encode_utf16().count())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_obfuscation_matches_ms_tds() {
        // 'a' = 0x61 0x00 -> nibbles swapped 0x16 0x00 -> XOR A5 -> 0xB3 0xA5.
        assert_eq!(obfuscate_password("a"), vec![0xB3, 0xA5]);
        assert_eq!(
            deobfuscate_password(&obfuscate_password("Pr0be-pass!é")),
            "Pr0be-pass!é"
        );
    }

    fn sample(user: &str, password: &str, sspi: Vec<u8>) -> Login7 {
        Login7 {
            tds_version: TDS_74,
            packet_size: 4096,
            client_program_version: 7,
            client_pid: 42,
            host_name: "h".into(),
            user_name: user.into(),
            password: password.into(),
            app_name: "dtcprobe".into(),
            server_name: "srv".into(),
            library_name: "dtcprobe".into(),
            language: String::new(),
            database: "app".into(),
            sspi,
        }
    }

    #[test]
    fn decode_reads_back_what_encode_wrote() {
        for login in [
            sample("probe", "Pr0be-pass!é", Vec::new()),
            sample(
                "",
                "",
                vec![0x4E, 0x54, 0x4C, 0x4D, 0x53, 0x53, 0x50, 0, 1, 0, 0, 0],
            ),
            sample("u", "p", vec![7; 70_000]),
        ] {
            assert_eq!(Login7::decode(&login.encode()), Ok(login));
        }
    }

    #[test]
    fn decode_refuses_what_does_not_fit() {
        let b = sample("probe", "pw", Vec::new()).encode();
        assert_eq!(Login7::decode(&b[..93]), Err(Login7Error::Short(93)));
        // A database said to be longer than the message.
        let mut bad = b.clone();
        bad[70] = 200;
        assert_eq!(
            Login7::decode(&bad),
            Err(Login7Error::OutOfBounds("Database"))
        );
        // fIntSecurity set, cbSSPILong far past the end.
        let mut bad = b;
        bad[25] |= INT_SECURITY;
        bad[80..82].copy_from_slice(&[0xFF, 0xFF]);
        bad[90..94].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(Login7::decode(&bad), Err(Login7Error::OutOfBounds("SSPI")));
    }

    #[test]
    fn layout_offsets_and_strings() {
        let b = sample("probe", "pw", Vec::new()).encode();
        assert_eq!(
            u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(&b[4..8], &[4, 0, 0, 0x74]);
        assert_eq!(u32::from_le_bytes(b[8..12].try_into().unwrap()), 4096);
        assert_eq!(b[24], OPTION_FLAGS1);
        // HostName at 94, one character.
        assert_eq!(&b[36..40], &[94, 0, 1, 0]);
        let field = |at: usize| {
            let off = u16::from_le_bytes([b[at], b[at + 1]]) as usize;
            let chars = u16::from_le_bytes([b[at + 2], b[at + 3]]) as usize;
            b[off..off + chars * 2].to_vec()
        };
        assert_eq!(super::super::strings::from_utf16le(&field(40)), "probe");
        assert_eq!(deobfuscate_password(&field(44)), "pw");
        assert_eq!(super::super::strings::from_utf16le(&field(48)), "dtcprobe");
        assert_eq!(super::super::strings::from_utf16le(&field(68)), "app");
        // The password never appears in clear.
        assert!(!b.windows(4).any(|w| w == [b'p', 0, b'w', 0]));
        assert_eq!(b[25], OPTION_FLAGS2, "no fIntSecurity without a token");
        assert_eq!(
            &b[78..82],
            &[b.len() as u8, 0, 0, 0],
            "ibSSPI at the end, cbSSPI 0"
        );
    }

    #[test]
    fn sspi_token_sets_int_security_and_follows_the_strings() {
        let token = b"NTLMSSP\0\x01\0\0\0rest".to_vec();
        let b = sample("", "", token.clone()).encode();
        assert_eq!(
            u32::from_le_bytes(b[0..4].try_into().unwrap()) as usize,
            b.len()
        );
        assert_eq!(b[25], OPTION_FLAGS2 | INT_SECURITY);
        let ib = u16::from_le_bytes([b[78], b[79]]) as usize;
        let cb = u16::from_le_bytes([b[80], b[81]]) as usize;
        assert_eq!(cb, token.len());
        assert_eq!(&b[ib..ib + cb], &token[..]);
        assert_eq!(ib + cb, b.len());
        // ibAtchDBFile and ibChangePassword point past the token, with no data.
        assert_eq!(u16::from_le_bytes([b[82], b[83]]) as usize, b.len());
        assert_eq!(u32::from_le_bytes(b[90..94].try_into().unwrap()), 0);
    }
}
