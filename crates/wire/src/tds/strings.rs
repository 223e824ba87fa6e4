//! TDS's string encodings (UTF-16LE, B_VARCHAR, US_VARCHAR), shared by every TDS codec here. The
//! codecs read them from here, not from `tds/mod.rs`, which re-exports the codecs.

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
