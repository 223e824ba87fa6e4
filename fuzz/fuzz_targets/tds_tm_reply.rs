//! What the `tx_enlist` hop's own TDS session reads from a server (`tds::reply::parse_reply`,
//! every reply to its LOGIN7, transaction manager requests and batches), and what the test
//! peer decodes from a client (`tm::decode_tm_request`, `tm::decode_sql_batch`), on arbitrary
//! input: never a panic, every value taken from the input, and a decoded request re-encodes to
//! bytes that decode to the same request.
#![no_main]

use dtcprobe_wire::tds::reply::{parse_reply, Token, Value};
use dtcprobe_wire::tds::tm::{decode_sql_batch, decode_tm_request, encode_tm_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tokens) = parse_reply(data) {
        for t in &tokens {
            match t {
                Token::EnvChange { new, old, .. } => assert!(new.len() + old.len() <= data.len()),
                Token::Row(values) => {
                    for v in values {
                        if let Value::Bytes(b) = v {
                            assert!(b.len() <= data.len());
                        }
                    }
                }
                _ => {}
            }
        }
    }
    if let Ok((header, request)) = decode_tm_request(data) {
        let again = encode_tm_request(header.unwrap_or_default(), &request)
            .expect("a decoded cookie fits a US_VARBYTE");
        let (_, same) = decode_tm_request(&again).expect("re-encoded request decodes");
        assert_eq!(same, request);
    }
    let _ = decode_sql_batch(data);
});
