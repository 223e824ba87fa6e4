//! The RPC request decoder (packet type 0x03) on arbitrary bytes, as the TDS test peer reads what
//! a client sends: never panic, never more than SQL Server's 2100 parameters, and an empty
//! ALL_HEADERS (total length 4) in front changes nothing about what decodes.
#![no_main]

use dtcprobe_wire::tds::rpc::{decode_rpc, MAX_PARAMS};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let with_headers = decode_rpc(data, true);
    let without = decode_rpc(data, false);
    for calls in [&with_headers, &without].into_iter().flatten() {
        assert!(!calls.is_empty());
        for call in calls {
            assert!(call.params.len() <= MAX_PARAMS);
            let _ = call.proc.well_known();
        }
    }
    let mut framed = 4u32.to_le_bytes().to_vec();
    framed.extend_from_slice(data);
    // Compared as text: a decoded float may be NaN, which is not equal to itself.
    assert_eq!(
        format!("{:?}", decode_rpc(&framed, true).ok()),
        format!("{:?}", without.ok())
    );
});
