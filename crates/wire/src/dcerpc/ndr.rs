//! NDR 2.0 primitives (little-endian): a bounds-checked reader and a writer, both aligning relative
//! to the start of the stub data as NDR requires.

use super::{DecodeError, Uuid};

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn remaining(&self) -> usize {
        self.buf.len().saturating_sub(self.pos)
    }

    pub fn bytes(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], DecodeError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DecodeError::Truncated {
                what,
                offset: self.pos,
                needed: n,
                have: self.remaining(),
            })?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// Skips padding up to a multiple of `n` (a power of two). Padding past the end is an error.
    pub fn align(&mut self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        let pad = (n - self.pos % n) % n;
        self.bytes(pad, what).map(|_| ())
    }

    pub fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        Ok(self.bytes(1, what)?[0])
    }

    pub fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.align(2, what)?;
        let b = self.bytes(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    pub fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.align(4, what)?;
        let b = self.bytes(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub fn uuid(&mut self, what: &'static str) -> Result<Uuid, DecodeError> {
        self.align(4, what)?;
        let b = self.bytes(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(b);
        Ok(Uuid::from_le_bytes(a))
    }
}

#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Writer {
        Writer::default()
    }

    pub fn align(&mut self, n: usize) {
        while self.buf.len() % n != 0 {
            self.buf.push(0);
        }
    }

    pub fn u16(&mut self, v: u16) {
        self.align(2);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.align(4);
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn uuid(&mut self, u: &Uuid) {
        self.align(4);
        self.buf.extend_from_slice(&u.to_le_bytes());
    }

    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_reads_and_truncation() {
        let mut w = Writer::new();
        w.bytes(&[7]);
        w.u32(0x1122_3344);
        w.u16(5);
        let buf = w.into_inner();
        assert_eq!(buf, [7, 0, 0, 0, 0x44, 0x33, 0x22, 0x11, 5, 0]);
        let mut r = Reader::new(&buf);
        assert_eq!(r.u8("a").unwrap(), 7);
        assert_eq!(r.u32("b").unwrap(), 0x1122_3344);
        assert_eq!(r.u16("c").unwrap(), 5);
        assert!(matches!(
            r.u32("d"),
            Err(DecodeError::Truncated { what: "d", .. })
        ));
        let mut r = Reader::new(&buf);
        assert!(r.bytes(usize::MAX, "huge").is_err());
    }
}
