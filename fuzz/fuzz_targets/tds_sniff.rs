//! The TDS decoding dtcprobe runs on a server's login bytes (`hops::mssql::sniff` uses
//! `tds::analyze`), on arbitrary input: it must never panic, never report more bytes than it was
//! given, and whatever it reports must come from the input. The pieces are driven on their own
//! too (PRELOGIN option list, LOGINACK search, packet headers).
#![no_main]

use dtcprobe_wire::tds::observe::EXCERPT_LEN;
use dtcprobe_wire::tds::packet::HEADER_LEN;
use dtcprobe_wire::tds::prelogin::parse_prelogin_options;
use dtcprobe_wire::tds::{analyze, find_login_ack, parse_prelogin, PacketHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let o = analyze(data);
    assert_eq!(o.bytes, data.len());
    if let Some(excerpt) = &o.not_tds_excerpt {
        assert!(excerpt.chars().count() <= EXCERPT_LEN.min(data.len()));
    }
    if o.tls_first {
        assert!(o.prelogin.is_none() && o.tds_version.is_none());
    }
    // A program name is decoded from at most 255 UTF-16 units inside the input.
    if let Some(program) = &o.server_program {
        assert!(program.encode_utf16().count() <= 255);
        assert!(program.encode_utf16().count() * 2 <= data.len());
    }

    // Every option value is a slice of the payload, so its bytes are the input's.
    if let Ok(options) = parse_prelogin_options(data) {
        for (_, value) in options {
            assert!(value.len() <= data.len());
        }
    }
    let _ = parse_prelogin(data);
    let _ = find_login_ack(data);

    if let Some(h) = PacketHeader::parse(data) {
        assert_eq!(h.encode()[..], data[..HEADER_LEN]);
    }
});
