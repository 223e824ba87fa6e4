//! The encrypted phase's record layer (protocol v3), without the cryptography: how a message's
//! JSON payload is cut into chunks that each fit in one Noise transport message, and how the
//! chunks are put back together. dtcprobe encrypts and decrypts each chunk (snow, Noise
//! `NNpsk0`); this crate only sees plaintext chunks and record lengths, so the fuzz target can
//! hold the reassembly to "never panics, never allocates past the limits" without a key.
//!
//! On the wire, after the handshake, every record is a 4-byte big-endian length and that many
//! bytes of one Noise transport message (at most [`NOISE_MAX_MESSAGE`] bytes, of which
//! [`NOISE_TAG_LEN`] are the AEAD tag). Decrypted, a record is one chunk: a header byte
//! ([`CHUNK_MORE`] or [`CHUNK_LAST`]) and up to [`MAX_CHUNK_DATA`] bytes of the payload. A
//! payload is at most [`MAX_FRAME`] bytes (checked before anything is appended), so a message
//! takes at most two records: a record length is checked before its buffer is allocated, and the
//! reassembled size before the chunk is copied.

use super::frame::{FrameError, MAX_FRAME};

/// Noise's limit on one message (handshake or transport), in bytes.
pub const NOISE_MAX_MESSAGE: usize = 65_535;
/// ChaCha20-Poly1305's tag, added to every transport message.
pub const NOISE_TAG_LEN: usize = 16;
/// Payload bytes one chunk carries at most: a Noise message less the tag and the header byte.
pub const MAX_CHUNK_DATA: usize = NOISE_MAX_MESSAGE - NOISE_TAG_LEN - 1;
/// Chunk header: more chunks of this payload follow.
pub const CHUNK_MORE: u8 = 0;
/// Chunk header: the last (or only) chunk of this payload.
pub const CHUNK_LAST: u8 = 1;
/// Smallest record: the tag and an encrypted header byte.
pub const MIN_RECORD: usize = NOISE_TAG_LEN + 1;

/// Length of an encrypted record from its 4-byte prefix: [`MIN_RECORD`]..=[`NOISE_MAX_MESSAGE`].
pub fn record_len(prefix: [u8; 4]) -> Result<usize, FrameError> {
    let len = u32::from_be_bytes(prefix) as usize;
    if len == 0 {
        return Err(FrameError::Empty);
    }
    if len > NOISE_MAX_MESSAGE {
        return Err(FrameError::TooLarge {
            len,
            max: NOISE_MAX_MESSAGE,
        });
    }
    if len < MIN_RECORD {
        return Err(FrameError::Malformed(format!(
            "encrypted record of {len} bytes is shorter than its {MIN_RECORD}-byte minimum"
        )));
    }
    Ok(len)
}

/// A record for the wire: the length prefix and the ciphertext.
pub fn encode_record(ciphertext: &[u8]) -> Result<Vec<u8>, FrameError> {
    record_len((ciphertext.len() as u32).to_be_bytes())?;
    let mut out = Vec::with_capacity(4 + ciphertext.len());
    out.extend_from_slice(&(ciphertext.len() as u32).to_be_bytes());
    out.extend_from_slice(ciphertext);
    Ok(out)
}

/// Cuts a payload (an envelope's JSON, at most [`MAX_FRAME`] bytes, not empty) into chunk
/// plaintexts, each at most `MAX_CHUNK_DATA + 1` bytes, the last one marked [`CHUNK_LAST`].
pub fn chunk_payload(payload: &[u8]) -> Result<Vec<Vec<u8>>, FrameError> {
    if payload.is_empty() {
        return Err(FrameError::Empty);
    }
    if payload.len() > MAX_FRAME {
        return Err(FrameError::TooLarge {
            len: payload.len(),
            max: MAX_FRAME,
        });
    }
    let pieces: Vec<&[u8]> = payload.chunks(MAX_CHUNK_DATA).collect();
    let last = pieces.len() - 1;
    Ok(pieces
        .into_iter()
        .enumerate()
        .map(|(i, piece)| {
            let mut chunk = Vec::with_capacity(1 + piece.len());
            chunk.push(if i == last { CHUNK_LAST } else { CHUNK_MORE });
            chunk.extend_from_slice(piece);
            chunk
        })
        .collect())
}

/// Puts decrypted chunks back together into one payload.
#[derive(Debug, Default)]
pub struct Reassembler {
    payload: Vec<u8>,
}

impl Reassembler {
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Adds one decrypted chunk: `Ok(Some(payload))` when it was the last, `Ok(None)` when more
    /// must follow. A chunk with an unknown header, an empty non-last chunk (it would let a peer
    /// send records forever without progress), an empty payload, or a payload growing past
    /// [`MAX_FRAME`] is an error; the size is checked before the chunk is copied.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Option<Vec<u8>>, FrameError> {
        let Some((&header, data)) = chunk.split_first() else {
            return Err(FrameError::Malformed("empty chunk".into()));
        };
        if header != CHUNK_MORE && header != CHUNK_LAST {
            return Err(FrameError::Malformed(format!(
                "unknown chunk header {header:#04x}"
            )));
        }
        if data.len() > MAX_CHUNK_DATA {
            return Err(FrameError::TooLarge {
                len: data.len(),
                max: MAX_CHUNK_DATA,
            });
        }
        let total = self.payload.len() + data.len();
        if total > MAX_FRAME {
            return Err(FrameError::TooLarge {
                len: total,
                max: MAX_FRAME,
            });
        }
        if header == CHUNK_MORE && data.is_empty() {
            return Err(FrameError::Malformed("empty chunk before the last".into()));
        }
        self.payload.extend_from_slice(data);
        if header == CHUNK_MORE {
            return Ok(None);
        }
        let payload = std::mem::take(&mut self.payload);
        if payload.is_empty() {
            return Err(FrameError::Empty);
        }
        Ok(Some(payload))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_length_limits() {
        let cases: &[(u32, Result<usize, ()>)] = &[
            (0, Err(())),
            (1, Err(())),
            (MIN_RECORD as u32 - 1, Err(())),
            (MIN_RECORD as u32, Ok(MIN_RECORD)),
            (NOISE_MAX_MESSAGE as u32, Ok(NOISE_MAX_MESSAGE)),
            (NOISE_MAX_MESSAGE as u32 + 1, Err(())),
            (u32::MAX, Err(())),
        ];
        for (len, want) in cases {
            let got = record_len(len.to_be_bytes()).map_err(|_| ());
            assert_eq!(&got, want, "{len}");
        }
        assert!(encode_record(&[0u8; 5]).is_err());
        assert_eq!(encode_record(&[7u8; 20]).unwrap().len(), 24);
    }

    #[test]
    fn payloads_of_every_size_class_round_trip_through_chunks() {
        for len in [
            1,
            100,
            MAX_CHUNK_DATA - 1,
            MAX_CHUNK_DATA,
            MAX_CHUNK_DATA + 1,
            MAX_FRAME,
        ] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let chunks = chunk_payload(&payload).unwrap();
            assert_eq!(chunks.len(), len.div_ceil(MAX_CHUNK_DATA), "{len}");
            let mut r = Reassembler::new();
            for (i, c) in chunks.iter().enumerate() {
                // Each chunk fits in one Noise message once the tag is added.
                assert!(c.len() + NOISE_TAG_LEN <= NOISE_MAX_MESSAGE);
                let got = r.push(c).unwrap();
                if i + 1 < chunks.len() {
                    assert_eq!(got, None);
                } else {
                    assert_eq!(got.as_deref(), Some(&payload[..]), "{len}");
                }
            }
        }
        assert_eq!(chunk_payload(&[]), Err(FrameError::Empty));
        assert!(matches!(
            chunk_payload(&vec![b'x'; MAX_FRAME + 1]),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn bad_chunks_are_refused() {
        let mut r = Reassembler::new();
        assert!(r.push(&[]).is_err());
        assert!(r.push(&[2, b'x']).is_err());
        assert!(r.push(&[CHUNK_MORE]).is_err());
        assert_eq!(r.push(&[CHUNK_LAST]), Err(FrameError::Empty));
        // Growing past MAX_FRAME: refused before the copy, whatever the split.
        let mut r = Reassembler::new();
        let mut big = vec![CHUNK_MORE];
        big.extend(std::iter::repeat_n(b'x', MAX_CHUNK_DATA));
        assert_eq!(r.push(&big), Ok(None));
        let mut rest = vec![CHUNK_MORE];
        rest.extend(std::iter::repeat_n(b'x', MAX_FRAME - MAX_CHUNK_DATA));
        assert_eq!(r.push(&rest), Ok(None));
        assert!(matches!(
            r.push(&[CHUNK_LAST, b'y']),
            Err(FrameError::TooLarge { .. })
        ));
        // A chunk longer than one Noise message could carry.
        let mut r = Reassembler::new();
        let mut huge = vec![CHUNK_LAST];
        huge.extend(std::iter::repeat_n(b'x', MAX_CHUNK_DATA + 1));
        assert!(matches!(r.push(&huge), Err(FrameError::TooLarge { .. })));
    }
}
