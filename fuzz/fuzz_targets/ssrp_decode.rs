//! The SQL Server Browser (SSRP) decoders on arbitrary datagrams, as dtcprobe reads a Browser's
//! answer: never panic, and every instance decoded re-encodes to an answer that decodes to the
//! same instances (when its text survives the `;`-separated format).
#![no_main]

use dtcprobe_wire::ssrp::{decode_request, encode_request, encode_response, parse_response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(instances) = parse_response(data) {
        assert!(!instances.is_empty());
        // Values holding `;` or the empty string cannot round-trip through the text format, so
        // only instances whose fields are plain are held to it.
        let plain = |s: &str| !s.is_empty() && !s.contains(';') && !s.contains('\0');
        if instances.iter().all(|i| {
            plain(&i.server_name)
                && plain(&i.instance_name)
                && plain(&i.version)
                && i.named_pipe.as_deref().is_none_or(plain)
        }) {
            let again = encode_response(&instances);
            if again.len() <= 3 + u16::MAX as usize {
                assert_eq!(parse_response(&again).as_ref(), Ok(&instances));
            }
        }
    }
    if let Ok(name) = decode_request(data) {
        assert_eq!(decode_request(&encode_request(&name).unwrap()), Ok(name));
    }
});
