//! The encrypted phase's record and chunk decoding on arbitrary bytes (protocol v3). Without the
//! key a fuzzer cannot produce valid ciphertext, so this drives the parts that run on untrusted
//! lengths and on decrypted-but-hostile plaintext (a peer holding the key can send any chunk): a
//! stream of records, each record's body taken as a decrypted chunk. It must never panic, never
//! accept a record length over Noise's 65,535 bytes or a payload over MAX_FRAME, and what it
//! reassembles must decode like a plain frame's payload, and re-chunk to the same payload.
#![no_main]

use dtcprobe_wire::agent::{
    chunk_payload, decode_payload, parse_body, record_len, Message, Reassembler, RequestBody,
    ResponseBody, MAX_CHUNK_DATA, MAX_FRAME, NOISE_MAX_MESSAGE, NOISE_TAG_LEN,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut reassembler = Reassembler::new();
    let mut rest = data;
    // Bounded by the input: every round consumes at least 4 bytes.
    while let Some(prefix) = rest.get(..4) {
        let Ok(len) = record_len(prefix.try_into().expect("4 bytes")) else {
            break;
        };
        assert!(len <= NOISE_MAX_MESSAGE);
        // The fuzzer's input stands for the decrypted record: the tag is what decryption removes.
        let Some(record) = rest.get(4..4 + len) else {
            break;
        };
        rest = &rest[4 + len..];
        let chunk = &record[..len - NOISE_TAG_LEN];
        match reassembler.push(chunk) {
            Ok(None) => {}
            Ok(Some(payload)) => {
                assert!(!payload.is_empty() && payload.len() <= MAX_FRAME);
                if let Ok(msg) = decode_payload(&payload) {
                    match &msg {
                        Message::Request { body } => {
                            let _ = parse_body::<RequestBody>(body);
                        }
                        Message::Response { body } => {
                            let _ = parse_body::<ResponseBody>(body);
                        }
                        _ => {}
                    }
                }
                // Re-chunking gives chunks that each fit one Noise message and reassemble to the
                // same payload.
                let chunks = chunk_payload(&payload).expect("a reassembled payload re-chunks");
                let mut again = Reassembler::new();
                let mut out = None;
                for c in &chunks {
                    assert!(c.len() <= MAX_CHUNK_DATA + 1);
                    assert!(out.is_none(), "data after the last chunk");
                    out = again.push(c).expect("own chunks reassemble");
                }
                assert_eq!(out.as_deref(), Some(&payload[..]));
                reassembler = Reassembler::new();
            }
            Err(_) => reassembler = Reassembler::new(),
        }
    }
});
