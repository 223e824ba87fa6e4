//! Windows authentication in the TDS test peer: the server side of NTLMv2 (MS-NLMP), written
//! from the specification, so that a client's NTLM exchange inside TDS (LOGIN7 with the first
//! token, SSPI token 0xED with the challenge, SSPI message 0x11 with the answer) is checked for
//! real: the answer proves the password only if it was computed from it.
//!
//! What is verified: the NEGOTIATE message's signature and type, the AUTHENTICATE message's
//! layout, the user and domain it names (case-insensitive, as Windows compares them), and the
//! NTLMv2 proof: NTProofStr = HMAC-MD5(NTOWFv2, server challenge || the client's blob), with
//! NTOWFv2 = HMAC-MD5(MD4(UTF-16LE(password)), UTF-16LE(UPPER(user) || domain)) (MS-NLMP 3.3.2).
//! Not verified: the MIC and the session key (no signing or sealing follows in TDS), the
//! blob's timestamp, channel bindings. Tedious (npm, Microsoft's JavaScript driver) logs in
//! through this in tests/ms_drivers.rs, which checks this side against an independent client.

use hmac::Mac;

/// A Windows account the peer accepts (`DOMAIN\user` with this password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsAccount {
    pub domain: String,
    pub user: String,
    pub password: String,
}

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";
/// The flags a Windows server typically answers with (56, KEY_EXCH, 128, VERSION, TARGET_INFO,
/// EXTENDED_SESSIONSECURITY, TARGET_TYPE_DOMAIN, ALWAYS_SIGN, NTLM, SEAL, SIGN, REQUEST_TARGET,
/// UNICODE).
const CHALLENGE_FLAGS: u32 = 0xE289_8235;
const NETBIOS_DOMAIN: &str = "DTCPROBE";

/// What the exchange concluded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `DOMAIN\user` proved its password.
    Authenticated(String),
    /// Why not (for the test's events; the client is told 18452, as SQL Server does).
    Refused(String),
}

/// Whether a NEGOTIATE message (the LOGIN7's SSPI token) is one.
pub fn is_negotiate(token: &[u8]) -> bool {
    token.len() >= 16 && &token[..8] == SIGNATURE && token[8..12] == 1u32.to_le_bytes()
}

/// The CHALLENGE message for this server challenge (MS-NLMP 2.2.1.2).
pub fn challenge(server_challenge: [u8; 8]) -> Vec<u8> {
    let target_name = utf16(NETBIOS_DOMAIN);
    let mut info = Vec::new();
    let mut av = |id: u16, value: &[u8]| {
        info.extend_from_slice(&id.to_le_bytes());
        info.extend_from_slice(&(value.len() as u16).to_le_bytes());
        info.extend_from_slice(value);
    };
    av(2, &utf16(NETBIOS_DOMAIN)); // MsvAvNbDomainName
    av(1, &utf16("SQL01")); // MsvAvNbComputerName
    av(4, &utf16("dtcprobe.test")); // MsvAvDnsDomainName
    av(3, &utf16("sql01.dtcprobe.test")); // MsvAvDnsComputerName
    av(7, &filetime_now().to_le_bytes()); // MsvAvTimestamp
    av(0, &[]); // MsvAvEOL
    const HEADER: usize = 56;
    let mut m = Vec::with_capacity(HEADER + target_name.len() + info.len());
    m.extend_from_slice(SIGNATURE);
    m.extend_from_slice(&2u32.to_le_bytes());
    fields(&mut m, target_name.len(), HEADER);
    m.extend_from_slice(&CHALLENGE_FLAGS.to_le_bytes());
    m.extend_from_slice(&server_challenge);
    m.extend_from_slice(&[0u8; 8]); // Reserved
    fields(&mut m, info.len(), HEADER + target_name.len());
    m.extend_from_slice(&[10, 0, 0x63, 0x45, 0, 0, 0, 15]); // Version: 10.0.17763, NTLM rev 15
    debug_assert_eq!(m.len(), HEADER);
    m.extend_from_slice(&target_name);
    m.extend_from_slice(&info);
    m
}

/// Checks an AUTHENTICATE message (MS-NLMP 2.2.1.3) against the account.
pub fn verify(
    authenticate: &[u8],
    server_challenge: [u8; 8],
    account: Option<&WindowsAccount>,
) -> Outcome {
    let refused = |why: &str| Outcome::Refused(why.to_string());
    if authenticate.len() < 64
        || &authenticate[..8] != SIGNATURE
        || authenticate[8..12] != 3u32.to_le_bytes()
    {
        return refused("not an NTLM AUTHENTICATE message");
    }
    let field = |at: usize| -> Option<&[u8]> {
        let len = u16::from_le_bytes([authenticate[at], authenticate[at + 1]]) as usize;
        let off = u32::from_le_bytes(authenticate[at + 4..at + 8].try_into().ok()?) as usize;
        authenticate.get(off..off.checked_add(len)?)
    };
    let (Some(mut nt), Some(domain), Some(user)) = (field(20), field(28), field(36)) else {
        return refused("a field points outside the message");
    };
    // tedious 19 declares NtChallengeResponseLen = 16 and writes the NTLMv2 blob right after
    // those 16 bytes, at the end of the message. The peer reads the blob from there too, so
    // that tedious's independent NTLMv2 arithmetic can be checked against this verifier;
    // whether Windows accepts that layout is not known here.
    if nt.len() == 16 {
        let nt_end = nt.as_ptr() as usize - authenticate.as_ptr() as usize + 16;
        if authenticate.get(nt_end..nt_end + 2) == Some(&[1, 1][..]) {
            nt = &authenticate[nt_end - 16..];
        }
    }
    let flags = u32::from_le_bytes(authenticate[60..64].try_into().unwrap());
    if flags & 1 == 0 {
        return refused("not UNICODE (OEM names are not accepted here)");
    }
    let domain = from_utf16(domain);
    let user = from_utf16(user);
    let name = format!("{domain}\\{user}");
    let Some(account) = account else {
        return refused("this server knows no Windows logins");
    };
    if !domain.eq_ignore_ascii_case(&account.domain) || !user.eq_ignore_ascii_case(&account.user) {
        return Outcome::Refused(format!("{name} is not a login here"));
    }
    // NTLMv2: 16 bytes of proof, then the client's blob (at least its 28-byte header).
    if nt.len() < 16 + 28 {
        return refused("not an NTLMv2 response (NTLMv1 is refused, as current Windows does)");
    }
    let (proof, blob) = nt.split_at(16);
    let nt_hash = md4(&utf16(&account.password));
    let mut identity = utf16(&user.to_uppercase());
    identity.extend(utf16(&domain));
    let response_key = hmac_md5(&nt_hash, &[&identity]);
    let expected = hmac_md5(&response_key, &[&server_challenge, blob]);
    if expected[..] == proof[..] {
        Outcome::Authenticated(name)
    } else {
        Outcome::Refused(format!(
            "{name}: the NTLMv2 proof does not match the password"
        ))
    }
}

fn fields(m: &mut Vec<u8>, len: usize, offset: usize) {
    m.extend_from_slice(&(len as u16).to_le_bytes());
    m.extend_from_slice(&(len as u16).to_le_bytes());
    m.extend_from_slice(&(offset as u32).to_le_bytes());
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn from_utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// 100-ns intervals since 1601-01-01, as Windows counts time.
fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (unix.as_secs() + 11_644_473_600) * 10_000_000 + u64::from(unix.subsec_nanos()) / 100
}

fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <hmac::Hmac<md5::Md5> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// MD4 (RFC 1320), which NTLM's password hash needs and no maintained crate in this tree has.
pub fn md4(input: &[u8]) -> [u8; 16] {
    let mut msg = input.to_vec();
    let bit_len = (input.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bit_len.to_le_bytes());
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    type Mix = fn(u32, u32, u32) -> u32;
    // RFC 1320's three rounds: mixing function, constant, shifts, and the order of the words.
    let rounds: [(Mix, u32, [u32; 4], [usize; 16]); 3] = [
        (
            |x, y, z| (x & y) | (!x & z),
            0,
            [3, 7, 11, 19],
            [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15],
        ),
        (
            |x, y, z| (x & y) | (x & z) | (y & z),
            0x5a82_7999,
            [3, 5, 9, 13],
            [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15],
        ),
        (
            |x, y, z| x ^ y ^ z,
            0x6ed9_eba1,
            [3, 9, 11, 15],
            [0, 8, 4, 12, 2, 10, 6, 14, 1, 9, 5, 13, 3, 11, 7, 15],
        ),
    ];
    for block in msg.chunks_exact(64) {
        let x: Vec<u32> = block
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let mut s = h;
        for (mix, k, shifts, order) in rounds {
            for (i, &word) in order.iter().enumerate() {
                // Steps update a, d, c, b in turn, each mixing the other three in order.
                let t = (4 - i % 4) % 4;
                let m = mix(s[(t + 1) % 4], s[(t + 2) % 4], s[(t + 3) % 4]);
                s[t] = s[t]
                    .wrapping_add(m)
                    .wrapping_add(x[word])
                    .wrapping_add(k)
                    .rotate_left(shifts[i % 4]);
            }
        }
        for (hi, si) in h.iter_mut().zip(s) {
            *hi = hi.wrapping_add(si);
        }
    }
    let mut out = [0u8; 16];
    for (i, w) in h.iter().enumerate() {
        out[i * 4..i * 4 + 4].copy_from_slice(&w.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    // benches/tds_login.rs includes the peer too; its harness drops #[test] functions.
    #[allow(unused_imports)]
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    /// RFC 1320's test suite, and MS-NLMP 4.2.1's NT hash of "Password".
    #[test]
    fn md4_matches_rfc_1320_and_ms_nlmp() {
        assert_eq!(hex(&md4(b"")), "31d6cfe0d16ae931b73c59d7e0c089c0");
        assert_eq!(hex(&md4(b"abc")), "a448017aaf21d8525fc10ae87aa6729d");
        assert_eq!(
            hex(&md4(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "e33b4ddc9c38f2199c3e7b164fcc0536"
        );
        assert_eq!(
            hex(&md4(&utf16("Password"))),
            "a4f49c406510bdcab6824ee7c30fd852"
        );
    }

    /// MS-NLMP 4.2.4: NTLMv2 with User "User", UserDom "Domain", Passwd "Password".
    #[test]
    fn ntowfv2_matches_ms_nlmp_4_2_4() {
        let mut identity = utf16("USER");
        identity.extend(utf16("Domain"));
        let key = hmac_md5(&md4(&utf16("Password")), &[&identity]);
        assert_eq!(hex(&key), "0c868a403bfd7a93a3001ef22ef02e3f");
    }
}
