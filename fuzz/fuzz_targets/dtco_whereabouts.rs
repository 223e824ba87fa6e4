//! MSDTC's whereabouts as SQL Server hands them out (`dtco::decode_whereabouts`, hop `dtc_name`)
//! on arbitrary input: never a panic, nothing taken from outside the input, and what decodes
//! re-encodes to bytes that decode to the same whereabouts.
#![no_main]

use dtcprobe_wire::dtco::{decode_whereabouts, encode_whereabouts, TmProtocol};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(w) = decode_whereabouts(data) {
        assert!(w.protocols.len() * 8 <= data.len());
        for p in &w.protocols {
            if let TmProtocol::Other { data_len, .. } = p {
                assert!(*data_len <= data.len());
            }
        }
        let again = decode_whereabouts(&encode_whereabouts(&w)).expect("re-encoded decodes");
        assert_eq!(again, w);
    }
});
