//! Every DCE/RPC / endpoint-mapper decoder on arbitrary bytes: none may panic, loop or allocate
//! without bound, and a decoded tower must re-encode to itself.
#![no_main]

use dtcprobe_wire::dcerpc::epm::{decode_lookup_response, decode_map_response, Entry, Tower};
use dtcprobe_wire::dcerpc::pdu::{
    bind_nak_reason, context_result_text, decode_bind_reply, parse_header, BindReply,
    ResponseAssembler, Step,
};
use libfuzzer_sys::fuzz_target;

fn exercise(t: &Tower) {
    let _ = t.binding();
    let _ = t.protseq();
    let _ = t.tcp_endpoint();
    let _ = t.interface();
    assert_eq!(Tower::decode(&t.encode()).as_ref(), Ok(t));
}

fn exercise_entry(e: &Entry) {
    if let Some(Ok(t)) = &e.tower {
        exercise(t);
    }
}

fuzz_target!(|data: &[u8]| {
    let _ = parse_header(data);
    // The bind reply is what `rpc_bind` reads from whatever answers on a mapped port.
    match decode_bind_reply(data) {
        Ok(BindReply::ContextRejected { result, reason }) => {
            let _ = context_result_text(result, reason);
        }
        Ok(BindReply::Nak { reason }) => {
            let _ = bind_nak_reason(reason);
        }
        _ => {}
    }

    // The input as a stream of fragments, each framed by its own header, as read off a socket.
    let call_id = parse_header(data).map(|h| h.call_id).unwrap_or(0);
    let mut asm = ResponseAssembler::new(call_id);
    let mut rest = data;
    while let Ok(h) = parse_header(rest) {
        let n = (h.frag_len as usize).min(rest.len());
        match asm.push(&rest[..n]) {
            Ok(Step::More) => rest = &rest[n..],
            Ok(Step::Done(stub)) => {
                let _ = decode_lookup_response(&stub);
                break;
            }
            Err(_) => break,
        }
    }

    if let Ok(r) = decode_lookup_response(data) {
        r.entries.iter().for_each(exercise_entry);
    }
    if let Ok(r) = decode_map_response(data) {
        r.towers.iter().flatten().for_each(exercise);
    }
    if let Ok(t) = Tower::decode(data) {
        exercise(&t);
    }
});
