//! The small subset of BER/DER that Kerberos (RFC 4120) and LDAP (RFC 4511) messages use:
//! single-byte tags, definite lengths of up to 4 bytes, INTEGER, SEQUENCE and context tags.
//! Decoders return `None` on anything else, never panic.

pub(crate) fn len_bytes(len: usize) -> Vec<u8> {
    if len < 0x80 {
        vec![len as u8]
    } else {
        let be = (len as u32).to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        let mut out = vec![0x80 | (4 - skip) as u8];
        out.extend_from_slice(&be[skip..]);
        out
    }
}

pub(crate) fn tlv(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(len_bytes(value.len()));
    out.extend_from_slice(value);
    out
}

pub(crate) fn seq(items: &[&[u8]]) -> Vec<u8> {
    tlv(0x30, &items.concat())
}

pub(crate) fn ctx(n: u8, value: &[u8]) -> Vec<u8> {
    tlv(0xa0 | n, value)
}

pub(crate) fn int(v: i64) -> Vec<u8> {
    let be = v.to_be_bytes();
    // The shortest two's-complement form.
    let mut start = 0;
    while start < 7
        && ((be[start] == 0 && be[start + 1] & 0x80 == 0)
            || (be[start] == 0xff && be[start + 1] & 0x80 != 0))
    {
        start += 1;
    }
    tlv(0x02, &be[start..])
}

/// One TLV: (tag, value, the bytes after it). Single-byte tags, definite lengths only.
pub(crate) fn read_tlv(bytes: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *bytes.first()?;
    let first = *bytes.get(1)?;
    let (len, header) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let len = bytes
            .get(2..2 + n)?
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | *b as usize);
        (len, 2 + n)
    };
    let value = bytes.get(header..header.checked_add(len)?)?;
    Some((tag, value, &bytes[header + len..]))
}

pub(crate) fn seq_body(bytes: &[u8]) -> Option<&[u8]> {
    match read_tlv(bytes)? {
        (0x30, body, _) => Some(body),
        _ => None,
    }
}

/// The context-tagged fields of a SEQUENCE body: (n, inner value).
pub(crate) fn fields(mut body: &[u8]) -> Option<Vec<(u8, &[u8])>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let (tag, value, rest) = read_tlv(body)?;
        if tag & 0xe0 != 0xa0 {
            return None;
        }
        out.push((tag & 0x1f, value));
        body = rest;
    }
    Some(out)
}

pub(crate) fn field<'a>(fields: &[(u8, &'a [u8])], n: u8) -> Option<&'a [u8]> {
    fields.iter().find(|(k, _)| *k == n).map(|(_, v)| *v)
}

pub(crate) fn parse_int(bytes: &[u8]) -> Option<i64> {
    match read_tlv(bytes)? {
        (0x02, v, _) if !v.is_empty() && v.len() <= 8 => {
            let neg = v[0] & 0x80 != 0;
            let mut acc: i64 = if neg { -1 } else { 0 };
            for b in v {
                acc = (acc << 8) | *b as i64;
            }
            Some(acc)
        }
        _ => None,
    }
}
