//! The agent protocol's frame decoder on arbitrary bytes: it must never panic, never accept a frame
//! over the limit, never claim more bytes than it was given, and whatever it decodes must re-encode
//! to a frame that decodes to the same message. The request and response bodies are parsed too (the response body
//! into JSON values: its hop/check results are dtcprobe's report model, outside the codec crate).
#![no_main]

use dtcprobe_wire::agent::{
    decode_frame, decode_payload, encode_frame, parse_body, Message, RequestBody, ResponseBody,
    MAX_FRAME,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_payload(data);
    // A stream of frames, as read off a socket.
    let mut rest = data;
    while let Ok(Some((msg, used))) = decode_frame(rest) {
        assert!(used >= 4 && used <= rest.len() && used - 4 <= MAX_FRAME);
        match &msg {
            Message::Request { body, .. } => {
                let _ = parse_body::<RequestBody>(body);
            }
            Message::Response { body, .. } => {
                let _ = parse_body::<ResponseBody>(body);
            }
            _ => {}
        }
        if let Ok(frame) = encode_frame(&msg) {
            let (again, n) = decode_frame(&frame)
                .expect("re-encoded frame decodes")
                .expect("whole frame");
            assert_eq!(n, frame.len());
            assert_eq!(again, msg);
        }
        rest = &rest[used..];
    }
});
