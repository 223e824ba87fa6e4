//! Real bytes from Microsoft servers as judges (issue 23, item 3). Every PDU of the public
//! captures in `../shared/captures` (README there: origin and licence of each file) is decoded
//! with the repository's own codecs (crates/wire), asserting the values the capture is known to
//! hold; then small replay servers answer the real dtcprobe binary with those real replies,
//! patching only what must match the request (call_id, the context handle).
//!
//! The files are never copied into this repository (some are GPL / LGPL): they are read from
//! `$DTCPROBE_CAPTURES` or `<repo>/../shared/captures`, and each test prints "SKIP ...: absent"
//! and returns when they are not there.

use std::collections::HashMap;

use crate::support::captures::{self, Flow};
use dtcprobe::dcerpc::epm::{self, Tower};
use dtcprobe::dcerpc::pdu::{self, BindReply, CallError, ResponseAssembler, Step};
use dtcprobe::dcerpc::{Uuid, IXNREMOTE};
use dtcprobe_wire::ssrp;
use dtcprobe_wire::tds::prelogin::parse_prelogin;
use dtcprobe_wire::tds::reply::{parse_reply, Token};

const NDR64: &str = "71710533-beba-4937-8319-b5dbef9ccc36";
const NETLOGON: &str = "12345678-1234-abcd-ef00-01234567cffb";

// ---------------------------------------------------------------------------------------------
// DCE/RPC: every PDU of every capture.

/// The presentation contexts a bind (or alter_context) offers: context id -> transfer syntax
/// UUIDs. Read here, independently of the client's encoder, to know which calls are NDR64.
fn bind_contexts(bind: &[u8]) -> Vec<(u16, Vec<Uuid>)> {
    let n = bind[24] as usize;
    let mut at = 28;
    let mut out = Vec::new();
    for _ in 0..n {
        let id = u16::from_le_bytes([bind[at], bind[at + 1]]);
        let n_ts = bind[at + 2] as usize;
        at += 4 + 20;
        let mut ts = Vec::new();
        for _ in 0..n_ts {
            ts.push(Uuid::from_le_bytes(bind[at..at + 16].try_into().unwrap()));
            at += 20;
        }
        out.push((id, ts));
    }
    out
}

/// What the decoding of one capture came to, for the per-file assertions.
#[derive(Debug, Default)]
struct Decoded {
    pdus: usize,
    /// (secondary address, first context result) of each bind_ack.
    bind_acks: Vec<(String, BindReply)>,
    faults: Vec<(u32, u8)>,
    /// ept_map replies: every tower's binding, and the status.
    maps: Vec<(Vec<String>, u32)>,
    /// ept_lookup replies: (annotation, binding) of every entry, and the status.
    lookups: Vec<(Vec<(String, String)>, u32)>,
    /// EPM calls made in NDR64 (not decoded: dtcprobe speaks NDR 2.0 only).
    ndr64_epm_calls: usize,
    other_responses: usize,
}

fn decode_dcerpc_capture(path: &std::path::Path) -> Decoded {
    let flows = captures::tcp_flows(path);
    let mut d = Decoded::default();
    // The client is the side that speaks first with a bind; SMB on 445 shares one file with
    // the endpoint mapper and is not DCE/RPC over TCP.
    for client in flows
        .iter()
        .filter(|f| f.dst_port != 445 && f.data.get(2) == Some(&pdu::PTYPE_BIND))
    {
        let server = flows
            .iter()
            .find(|f| f.stream == client.stream && f.src_port == client.dst_port)
            .expect("server side of the stream");
        decode_conversation(client, server, &mut d);
    }
    d
}

fn decode_conversation(client: &Flow, server: &Flow, d: &mut Decoded) {
    // call_id -> (opnum, NDR64?) from the client's requests; context id -> NDR64? from its binds.
    let mut ndr64_ctx: HashMap<u16, bool> = HashMap::new();
    let mut calls: HashMap<u32, (u16, bool)> = HashMap::new();
    for p in captures::dcerpc_pdus(client) {
        let h = pdu::parse_header(&p).unwrap();
        d.pdus += 1;
        match h.ptype {
            pdu::PTYPE_BIND | 14 => {
                for (id, ts) in bind_contexts(&p) {
                    ndr64_ctx.insert(id, ts.iter().any(|t| t.to_string() == NDR64));
                }
            }
            pdu::PTYPE_REQUEST => {
                let ctx = u16::from_le_bytes([p[20], p[21]]);
                let opnum = u16::from_le_bytes([p[22], p[23]]);
                let ndr64 = ndr64_ctx.get(&ctx).copied().unwrap_or(false);
                calls.insert(h.call_id, (opnum, ndr64));
            }
            _ => {}
        }
    }
    let mut open: HashMap<u32, ResponseAssembler> = HashMap::new();
    for p in captures::dcerpc_pdus(server) {
        let h = pdu::parse_header(&p).unwrap();
        d.pdus += 1;
        match h.ptype {
            pdu::PTYPE_BIND_ACK | pdu::PTYPE_BIND_NAK => {
                let sec = String::from_utf8_lossy(&p[26..26 + p[24] as usize])
                    .trim_end_matches('\0')
                    .to_string();
                d.bind_acks.push((sec, pdu::decode_bind_reply(&p).unwrap()));
            }
            pdu::PTYPE_FAULT => match ResponseAssembler::new(h.call_id).push(&p) {
                Err(CallError::Fault { status }) => d.faults.push((status, h.flags)),
                other => panic!("fault PDU decoded as {other:?}"),
            },
            pdu::PTYPE_RESPONSE => {
                let a = open
                    .entry(h.call_id)
                    .or_insert_with(|| ResponseAssembler::new(h.call_id));
                let Step::Done(stub) = a.push(&p).unwrap() else {
                    continue;
                };
                open.remove(&h.call_id);
                let (opnum, ndr64) = calls[&h.call_id];
                let epm = server.src_port == 135 && h.auth_len == 0;
                match (epm, opnum, ndr64) {
                    (true, epm::OPNUM_MAP | epm::OPNUM_LOOKUP, true) => d.ndr64_epm_calls += 1,
                    (true, epm::OPNUM_MAP, false) => {
                        let r = epm::decode_map_response(&stub).unwrap();
                        let towers = r.towers.into_iter().map(|t| t.unwrap().binding()).collect();
                        d.maps.push((towers, r.status));
                    }
                    (true, epm::OPNUM_LOOKUP, false) => {
                        let r = epm::decode_lookup_response(&stub).unwrap();
                        let entries = r
                            .entries
                            .into_iter()
                            .map(|e| (e.annotation, e.tower.unwrap().unwrap().binding()))
                            .collect();
                        d.lookups.push((entries, r.status));
                    }
                    _ => d.other_responses += 1,
                }
            }
            15 => d.other_responses += 1, // alter_context_resp: authentication, not ours to read
            other => panic!("unexpected server PDU type {other}"),
        }
    }
    assert!(
        open.is_empty(),
        "responses left without their last fragment"
    );
}

fn accepted(sec: &str) -> (String, BindReply) {
    (
        sec.to_string(),
        BindReply::Accepted {
            max_xmit: 0,
            max_recv: 0,
            sec_addr: sec.to_string(),
        },
    )
}

/// bind_acks with the frame sizes blanked, to compare with [`accepted`].
fn acks(d: &Decoded) -> Vec<(String, BindReply)> {
    d.bind_acks
        .iter()
        .map(|(s, r)| match r {
            BindReply::Accepted { sec_addr, .. } => (
                s.clone(),
                BindReply::Accepted {
                    max_xmit: 0,
                    max_recv: 0,
                    sec_addr: sec_addr.clone(),
                },
            ),
            other => (s.clone(), other.clone()),
        })
        .collect()
}

#[test]
fn dcerpc_captures_decode_with_the_values_they_hold() {
    let test = "dcerpc_captures_decode_with_the_values_they_hold";
    let Some(dir) = captures::dir_with_tshark_or_skip(test) else {
        return;
    };
    let dec = |name: &str| decode_dcerpc_capture(&dir.join("dcerpc").join(name));

    // Exchange host (Windows 2000/2003 era): ept_map to tcp 4997 and 1032, one ept_lookup entry.
    let d = dec("zeek-mapi-epm135-nspi4997.pcap");
    assert_eq!(
        d.maps,
        vec![
            (vec!["ncacn_ip_tcp:192.168.0.2[4997]".to_string()], 0),
            (vec!["ncacn_ip_tcp:192.168.0.2[1032]".to_string()], 0),
        ],
        "{d:#?}"
    );
    assert_eq!(d.lookups.len(), 1, "{d:#?}");
    let (entries, status) = &d.lookups[0];
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].0, "MS Exchange Directory NSP Interface");
    // The ncacn_http tower's address floor is 0x20 there, not 0x09: shown, not misread.
    assert_eq!(entries[0].1, "unknown_proto_0x20:[0]", "{d:#?}");
    assert_eq!(*status, 0);
    assert!(d.bind_acks.iter().any(|(s, _)| s == "4997"), "{d:#?}");
    assert!(d.bind_acks.iter().all(|(s, r)| matches!(
        r, BindReply::Accepted { sec_addr, .. } if sec_addr == s
    )));

    // Windows DC: ept_map answered with TWO towers for NETLOGON.
    let d = dec("scapy-dcerpc_msnrpc.pcapng.gz");
    assert_eq!(
        d.maps,
        vec![(
            vec![
                "ncacn_ip_tcp:192.168.122.17[49676]".to_string(),
                "ncacn_ip_tcp:192.168.122.17[49667]".to_string()
            ],
            0
        )]
    );
    assert_eq!(acks(&d), vec![accepted("135"), accepted("49676")]);
    assert_eq!(d.other_responses, 2);

    // Windows 2019 DC: NDR20+NDR64+BTFN bind. The first result is NDR 2.0's provider rejection
    // (reason 2, transfer syntaxes not supported); the ept_map calls then run in NDR64.
    let d = dec("scapy-dcerpc_privacy_krb.pcapng.gz");
    assert_eq!(
        d.bind_acks,
        vec![
            (
                "135".to_string(),
                BindReply::ContextRejected {
                    result: 2,
                    reason: 2
                }
            ),
            (
                "49667".to_string(),
                BindReply::ContextRejected {
                    result: 2,
                    reason: 2
                }
            ),
        ]
    );
    assert_eq!(d.ndr64_epm_calls, 2, "{d:#?}");
    assert_eq!(d.other_responses, 7, "{d:#?}");

    // Windows Server 2022: fault nca_s_op_rng_error, did-not-execute, for EPM opnum 42.
    let d = dec("suricata-verify-dcerpc-bind-no-frag-flag.pcap");
    assert_eq!(d.faults, vec![(0x1c01_0002, 0x23), (0x1c01_0002, 0x23)]);
    assert_eq!(
        pdu::status_name(0x1c01_0002),
        Some("nca_s_op_rng_error"),
        "the 2022 fault has a name"
    );
    assert_eq!(acks(&d), vec![accepted("135"), accepted("135")]);

    // SAMR on a dynamic port: authenticated bind_ack, then RPC_S_SEC_PKG_ERROR.
    let d = dec("suricata-verify-dce-gap-handling.pcap");
    assert_eq!(d.faults, vec![(0x721, 0x03)]);
    assert_eq!(acks(&d), vec![accepted("49154")]);

    // Windows 2016: NDR20 + BTFN bind accepted (result list [0, 3]); ServerAlive2 and
    // RemoteGetClassObject replies.
    let d = dec("suricata-verify-dcerpc-ctxids-port135.pcap");
    assert_eq!(acks(&d), vec![accepted("135"), accepted("135")]);
    assert_eq!(d.other_responses, 2);

    let d = dec("zeek-dce_rpc_netlogon.pcapng");
    assert_eq!(
        d.bind_acks,
        vec![(
            "49676".to_string(),
            BindReply::ContextRejected {
                result: 2,
                reason: 2
            }
        )]
    );

    let d = dec("zeek-kerberos135_auth.pcapng");
    assert_eq!(acks(&d), vec![accepted("135")]);
    assert_eq!(
        d.other_responses, 2,
        "alter_context_resp + RemoteCreateInstance"
    );
}

/// The 430-entry ept_lookup reply of a Windows 2019 DC (NDR20 stub): MSDTC's IXnRemote is there
/// five times, on ncalrpc only, the picture of "Network DTC Access off".
#[test]
fn lookup_of_430_entries_shows_ixnremote_on_ncalrpc_only() {
    let test = "lookup_of_430_entries_shows_ixnremote_on_ncalrpc_only";
    let Some(path) = captures::file_or_skip(
        test,
        "dcerpc/scapy-ept_lookup_response_430entries.ndr20.bin",
    ) else {
        return;
    };
    let stub = std::fs::read(path).unwrap();
    let r = epm::decode_lookup_response(&stub).unwrap();
    assert_eq!(r.entries.len(), 430);
    let towers: Vec<&Tower> = r
        .entries
        .iter()
        .map(|e| e.tower.as_ref().unwrap().as_ref().unwrap())
        .collect();
    let tcp: Vec<u16> = towers
        .iter()
        .filter_map(|t| t.tcp_endpoint())
        .map(|(_, port)| port)
        .collect();
    // The shared README counts 74 "ncacn_ip_tcp" towers; they are 74 connection-oriented network
    // towers: 36 ncacn_ip_tcp, 29 ncacn_np, 9 ncacn_http (counted by hand from the floors too).
    assert_eq!(tcp.len(), 36);
    assert!(tcp.iter().all(|p| (49664..=49704).contains(p)), "{tcp:?}");
    let count = |protseq: &str| towers.iter().filter(|t| t.protseq() == protseq).count();
    assert_eq!(count("ncacn_ip_tcp"), 36);
    assert_eq!(count("ncacn_np"), 29);
    assert_eq!(count("ncacn_http"), 9);
    assert_eq!(count("ncalrpc"), 356);
    assert_eq!(r.status, 0);
    let ixn: Vec<&&Tower> = towers
        .iter()
        .filter(|t| t.interface().map(|s| s.uuid) == Some(IXNREMOTE.uuid))
        .collect();
    assert_eq!(ixn.len(), 5);
    assert!(ixn.iter().all(|t| t.protseq() == "ncalrpc"), "{ixn:?}");
    assert!(ixn.iter().all(|t| t.tcp_endpoint().is_none()));
}

// ---------------------------------------------------------------------------------------------
// TDS: the 16 messages of the hex file, and the server replies of the two pcaps.

fn login_ack(tokens: &[Token]) -> (u32, [u8; 4]) {
    tokens
        .iter()
        .find_map(|t| match t {
            Token::LoginAck(a) => Some((a.tds_version, a.program_version.unwrap())),
            _ => None,
        })
        .expect("LOGINACK")
}

#[test]
fn tds_messages_of_the_hex_file_decode() {
    let test = "tds_messages_of_the_hex_file_decode";
    let Some(path) = captures::file_or_skip(test, "tds/tds-real-and-spec-bytes.hex") else {
        return;
    };
    let all = captures::hex_messages(&path);
    assert_eq!(all.len(), 16);
    let msg = |n: &str| captures::hex_message(&all, n);
    // A full TDS packet: its payload.
    let payload = |n: &str| {
        let m = captures::tds_messages(&msg(n));
        assert_eq!(m.len(), 1, "{n}");
        m[0].payload.clone()
    };

    // PRELOGIN answers: the server versions and ENCRYPTION=2 (not supported).
    for (name, version, full_packet) in [
        ("pytds-sql2008-prelogin-response", "10.0.5512", true),
        ("pytds-sql2014-prelogin-fedauthrequired", "12.0.5349", true),
        ("r2dbc-sql2017-prelogin-response-body", "14.0.3038", false),
    ] {
        let body = if full_packet {
            payload(name)
        } else {
            msg(name)
        };
        let info = parse_prelogin(&body).unwrap_or_else(|| panic!("{name}"));
        assert_eq!(info.version.as_deref(), Some(version), "{name}");
        assert_eq!(info.encryption, Some(2), "{name}");
    }

    // Login replies: LOGINACK's TDS version and program version.
    let t = parse_reply(&payload("pytds-sql2008-login-response")).unwrap();
    assert_eq!(login_ack(&t), (0x730b_0003, [10, 0, 0x15, 0x88]));
    let t = parse_reply(&msg("r2dbc-sql2017-login-tokens")).unwrap();
    assert_eq!(login_ack(&t), (0x7400_0004, [14, 0, 0x0b, 0xde]));
    let t = parse_reply(&payload("ms-tds-v39-04-login-response")).unwrap();
    assert_eq!(login_ack(&t).0, 0x7209_0002);
    let t = parse_reply(&payload("ms-tds-v39-05-login-response-federated-auth")).unwrap();
    assert!(matches!(t.last(), Some(Token::Done { .. })), "{t:?}");

    // ENVCHANGE 8 (BeginTransaction) with its 8-byte descriptor.
    let t = parse_reply(&payload("pytds-sql2008-envchange-begintran")).unwrap();
    assert_eq!(
        t[0],
        Token::EnvChange {
            kind: 8,
            new: vec![0x01, 0, 0, 0, 0x5a, 0, 0, 0],
            old: vec![]
        }
    );

    // ERROR 207, class 16.
    let t = parse_reply(&msg("r2dbc-sql2017-error-207")).unwrap();
    match &t[..] {
        [Token::Error(e)] => {
            assert_eq!((e.number, e.state, e.class), (207, 1, 16));
            assert_eq!(e.text, "Invalid column name 'fsdf'.");
            assert_eq!(e.server, "a688092a79f5");
        }
        other => panic!("{other:?}"),
    }

    // Spec server replies: batch and RPC results, FeatureExtAck.
    for name in [
        "ms-tds-v39-07-sql-batch-server-response",
        "ms-tds-v39-09-rpc-server-response",
        "ms-tds-v39-21-featureextack-azuresqlsupport",
    ] {
        let t = parse_reply(&payload(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            matches!(t.last(), Some(Token::Done { .. })),
            "{name}: {t:?}"
        );
    }
}

/// The four messages of the hex file that are not plain server replies: a spec dump with a typo,
/// a token dtcprobe never asks for, and two client requests.
#[test]
fn tds_spec_quirks_decode_as_documented() {
    let test = "tds_spec_quirks_decode_as_documented";
    let Some(path) = captures::file_or_skip(test, "tds/tds-real-and-spec-bytes.hex") else {
        return;
    };
    let all = captures::hex_messages(&path);
    let msg = |n: &str| captures::hex_message(&all, n);

    // SESSIONRECOVERY example: 407 bytes under a header saying 406, one stray 0x00 after the
    // collation ENVCHANGE. Without that byte the whole reply decodes.
    let mut m = msg("ms-tds-v39-17-featureextack-sessionrecovery");
    assert_eq!((m.len(), u16::from_be_bytes([m[2], m[3]])), (407, 406));
    let collation = captures::hex("e3080007050904d0003400");
    let at = m
        .windows(collation.len())
        .position(|w| w == collation)
        .unwrap()
        + collation.len();
    assert_eq!(m[at], 0, "the stray byte");
    assert!(
        parse_reply(&m[8..]).is_err(),
        "the dump as printed is misaligned"
    );
    m.remove(at);
    let t = parse_reply(&m[8..]).unwrap();
    assert_eq!(login_ack(&t).0, 0x7400_0004);
    assert!(matches!(t.last(), Some(Token::Done { .. })), "{t:?}");

    // SESSIONSTATE (0xE4) is sent only to clients that asked for session recovery; dtcprobe
    // does not, and its reader stops there rather than guess.
    let m = msg("ms-tds-v39-18-table-response-sessionstate");
    assert_eq!(
        parse_reply(&m[8..]),
        Err(dtcprobe_wire::tds::reply::ReplyError::UnknownToken(0xE4))
    );

    // Client PRELOGIN: the options read, VERSION first.
    let m = msg("ms-tds-v39-01-pre-login-request");
    let opts = dtcprobe_wire::tds::prelogin::parse_prelogin_options(&m[8..]).unwrap();
    assert_eq!(
        opts.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );

    // TM request: its ALL_HEADERS (descriptor 0, 1 outstanding request) reads; its RequestType
    // bytes read 0x0016, which no TM request type is (the XML of the example says
    // TM_PROMOTE_XACT, 6): refused, not misread.
    let m = msg("ms-tds-v39-13-transaction-manager-request");
    assert_eq!(m[0], 0x0E);
    let (tx, _) = dtcprobe_wire::tds::tm::parse_all_headers(&m[8..]).unwrap();
    let tx = tx.unwrap();
    // Its bytes put 0x01 in the descriptor's last byte and 0 outstanding requests (the example
    // is shifted by a byte somewhere); read as they are.
    assert_eq!(
        (tx.descriptor, tx.outstanding_requests),
        (0x0100_0000_0000_0000, 0)
    );
    assert_eq!(
        dtcprobe_wire::tds::tm::decode_tm_request(&m[8..]),
        Err(dtcprobe_wire::tds::tm::TmError::UnknownType(0x16))
    );
}

/// A TDS capture's conversations: each client message with the server's reply to it.
fn tds_exchanges(path: &std::path::Path) -> Vec<(u8, captures::TdsMessage)> {
    let flows = captures::tcp_flows(path);
    let mut out = Vec::new();
    for client in flows.iter().filter(|f| f.dst_port == 1433) {
        let Some(server) = flows
            .iter()
            .find(|f| f.stream == client.stream && f.src_port == 1433)
        else {
            continue;
        };
        let requests = captures::tds_messages(&client.data);
        let replies = captures::tds_messages(&server.data);
        assert!(replies.len() <= requests.len());
        for (q, a) in requests.iter().zip(replies) {
            assert_eq!(a.packet_type, 0x04, "server message type");
            out.push((q.packet_type, a));
        }
    }
    out
}

#[test]
fn tds_captures_decode() {
    let test = "tds_captures_decode";
    let Some(dir) = captures::dir_with_tshark_or_skip(test) else {
        return;
    };

    // SQL Server 2000 SP4: PRELOGIN 8.0.2039 without encryption, LOGINACK TDS 7.1, a result set.
    let x = tds_exchanges(&dir.join("tds/arkime-tds7-sql2000.pcap"));
    let kinds: Vec<u8> = x.iter().map(|(k, _)| *k).collect();
    assert_eq!(kinds, vec![0x12, 0x10, 0x01], "{x:?}");
    let info = parse_prelogin(&x[0].1.payload).unwrap();
    assert_eq!(info.version.as_deref(), Some("8.0.2039"));
    assert_eq!(info.encryption, Some(2));
    // TDS 7.1 DONE tokens carry a 4-byte row count, which the token reader (TDS 7.2+ layout)
    // does not read: the TDS 7.1 work (issue 23 item 2) is another branch's. LOGINACK is found
    // by the login's own scan, which stops at it.
    let ack = dtcprobe_wire::tds::token::find_login_ack(&x[1].1.payload).unwrap();
    assert_eq!(ack.tds_version, 0x7100_0001);
    assert_eq!(ack.program_version, Some([8, 0, 0x07, 0xf7]));

    // Historian batches and RPCs (2009), no login in the capture: what the reader makes of each
    // reply. RETURNVALUE (0xAC, output parameters) is a token dtcprobe's own RPCs never cause;
    // one batch reply's DONE has the 4-byte row count of TDS 7.1 (see above).
    let x = tds_exchanges(&dir.join("tds/ndpi-mssql_tds-rpc-requests.pcap"));
    assert_eq!(x.len(), 10, "{x:?}");
    let outcomes: Vec<String> = x
        .iter()
        .map(|(kind, reply)| match parse_reply(&reply.payload) {
            Ok(t) => format!("{kind:#x} ok {:?}", t.last()),
            Err(e) => format!("{kind:#x} {e:?}"),
        })
        .collect();
    let count = |p: &str| outcomes.iter().filter(|o| o.contains(p)).count();
    assert_eq!(count(" ok Some(Done"), 4, "{outcomes:#?}");
    assert_eq!(count("UnknownToken(172)"), 5, "{outcomes:#?}");
    assert_eq!(count("Truncated(253)"), 1, "{outcomes:#?}");
}

// ---------------------------------------------------------------------------------------------
// SSRP: the SQL Server Browser answers.

#[test]
fn ssrp_answers_decode() {
    let test = "ssrp_answers_decode";
    let Some(path) = captures::file_or_skip(test, "ssrp/ssrp-responses.hex") else {
        return;
    };
    let all = captures::hex_messages(&path);
    assert_eq!(all.len(), 7);
    let msg = |n: &str| captures::hex_message(&all, n);

    let r = ssrp::parse_response(&msg("pytds-ssrp-sqlexpress-2008")).unwrap();
    assert_eq!(r.len(), 1);
    assert_eq!(
        (
            r[0].server_name.as_str(),
            r[0].instance_name.as_str(),
            r[0].version.as_str(),
            r[0].tcp_port,
            r[0].is_clustered
        ),
        ("MISHA-PC", "SQLEXPRESS", "10.0.1600.22", Some(49849), false)
    );

    let r = ssrp::parse_response(&msg("mc-sqlr-clnt-ucast-ex-response-3-instances")).unwrap();
    let summary: Vec<(&str, Option<u16>, Option<&str>)> = r
        .iter()
        .map(|i| {
            (
                i.instance_name.as_str(),
                i.tcp_port,
                i.named_pipe.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("YUKONSTD", Some(57137), None),
            (
                "YUKONDEV",
                None,
                Some(r"\\ILSUNG1\pipe\MSSQL$YUKONDEV\sql\query")
            ),
            ("MSSQLSERVER", Some(1433), Some(r"\\ILSUNG1\pipe\sql\query")),
        ]
    );
    assert_eq!(
        ssrp::find_instance(&r, "yukondev").map(|i| i.tcp_port),
        Some(None)
    );

    let r = ssrp::parse_response(&msg("mc-sqlr-clnt-ucast-inst-response")).unwrap();
    assert_eq!(
        (r.len(), r[0].tcp_port, r[0].version.as_str()),
        (1, Some(57137), "9.00.1399.06")
    );
    assert_eq!(
        ssrp::decode_request(&msg("mc-sqlr-clnt-ucast-inst-request")).unwrap(),
        "YUKONSTD"
    );
    // dtcprobe's own request is byte for byte the specification's.
    assert_eq!(
        ssrp::encode_request("YUKONSTD").unwrap(),
        msg("mc-sqlr-clnt-ucast-inst-request")
    );
    // The DAC answer (version 1, port 57138) has another layout; dtcprobe never asks for the DAC
    // port, and its reader refuses the answer instead of inventing an instance.
    assert!(ssrp::parse_response(&msg("mc-sqlr-clnt-ucast-dac-response")).is_err());
}

// ---------------------------------------------------------------------------------------------
// Replay: the real dtcprobe binary against servers answering with the real replies. Each server
// is a thread on 127.0.0.1 port 0 serving a bounded number of connections and calls.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// The server-side PDUs of the first connection to `port` in a DCE/RPC capture.
fn server_pdus(path: &std::path::Path, port: u16) -> Vec<Vec<u8>> {
    let flows = captures::tcp_flows(path);
    let server = flows
        .iter()
        .find(|f| f.src_port == port)
        .expect("a server flow on that port");
    captures::dcerpc_pdus(server)
}

fn first_of_type(pdus: &[Vec<u8>], ptype: u8) -> Vec<u8> {
    pdus.iter()
        .find(|p| p[2] == ptype)
        .unwrap_or_else(|| panic!("no PDU of type {ptype}"))
        .clone()
}

/// The one patch a replayed PDU needs: the call_id of the request it answers.
fn with_call_id(pdu: &[u8], call_id: u32) -> Vec<u8> {
    let mut p = pdu.to_vec();
    p[12..16].copy_from_slice(&call_id.to_le_bytes());
    p
}

fn read_dce_pdu(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).ok()?;
    let len = u16::from_le_bytes([h[8], h[9]]) as usize;
    let mut buf = vec![0u8; len.max(16)];
    buf[..16].copy_from_slice(&h);
    s.read_exact(&mut buf[16..]).ok()?;
    Some(buf)
}

/// A mapper that answers the bind with `bind_ack` and each request with `answer(opnum)`: whole
/// PDUs (response fragments or a fault) whose call_id is set to the request's.
fn replay_mapper(bind_ack: Vec<u8>, answer: impl Fn(u16) -> Vec<Vec<u8>> + Send + 'static) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        // dtcprobe opens one mapper connection per check (two with --list-endpoints).
        for s in l.incoming().take(4) {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let Some(bind) = read_dce_pdu(&mut s) else {
                continue;
            };
            let call_id = u32::from_le_bytes(bind[12..16].try_into().unwrap());
            if s.write_all(&with_call_id(&bind_ack, call_id)).is_err() {
                continue;
            }
            for _ in 0..16 {
                let Some(req) = read_dce_pdu(&mut s) else {
                    break;
                };
                let call_id = u32::from_le_bytes(req[12..16].try_into().unwrap());
                let opnum = u16::from_le_bytes([req[22], req[23]]);
                for p in answer(opnum) {
                    let _ = s.write_all(&with_call_id(&p, call_id));
                }
            }
        }
    });
    port
}

fn check_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["check", "-f", "json", "--timeout", "3s"];
    all.extend_from_slice(args);
    let (_, out, err) = crate::support::run_bin(&all);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"))
}

fn first_hop<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v["checks"][0]["hops"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["hop"] == name)
        .unwrap_or_else(|| panic!("no hop {name}: {v:#}"))
}

/// "Not registered" and no entries: what a mapper says when it has nothing (more) for the
/// request. None of the captures holds such an answer to an ept_lookup by interface, so it is
/// built with the wire crate; the reply under test comes from ept_map.
fn lookup_nothing() -> Vec<Vec<u8>> {
    let stub = epm::build::lookup_response(&[0; 20], &[], epm::EPT_S_NOT_REGISTERED);
    pdu::build::response(0, &stub, 4096)
}

/// The Windows DC's real ept_map reply with two NETLOGON towers (tcp 49676 and 49667): the epm
/// hop reports both ports. Then the same reply behind Windows 2016's bind_ack that answers
/// NDR 2.0 plus bind-time feature negotiation ([accept NDR20, negotiate_ack]).
#[test]
fn replay_two_tower_ept_map_reports_both_ports() {
    let test = "replay_two_tower_ept_map_reports_both_ports";
    let Some(dir) = captures::dir_with_tshark_or_skip(test) else {
        return;
    };
    let real = server_pdus(&dir.join("dcerpc/scapy-dcerpc_msnrpc.pcapng.gz"), 135);
    let map_reply = first_of_type(&real, pdu::PTYPE_RESPONSE);
    let btfn_ack = first_of_type(
        &server_pdus(
            &dir.join("dcerpc/suricata-verify-dcerpc-ctxids-port135.pcap"),
            135,
        ),
        pdu::PTYPE_BIND_ACK,
    );
    for (label, bind_ack) in [
        ("plain bind_ack", first_of_type(&real, pdu::PTYPE_BIND_ACK)),
        ("bind_ack with feature negotiation", btfn_ack),
    ] {
        let reply = map_reply.clone();
        let port = replay_mapper(bind_ack, move |opnum| match opnum {
            epm::OPNUM_MAP => vec![reply.clone()],
            _ => lookup_nothing(),
        });
        let v = check_json(&[&format!("epm://127.0.0.1:{port}?iface={NETLOGON}/v1.0")]);
        let h = first_hop(&v, "epm");
        assert_eq!(h["status"], "pass", "{label}: {h:#}");
        assert_eq!(
            h["data"]["ports"],
            serde_json::json!([49667, 49676]),
            "{label}"
        );
        assert_eq!(
            h["data"]["advertised_addresses"],
            serde_json::json!(["192.168.122.17"]),
            "{label}"
        );
        assert!(
            h["detail"].as_str().unwrap().contains("49667, 49676"),
            "{label}: {h:#}"
        );
    }
}

/// The Windows 2019 DC's real 430-entry listing, in which IXnRemote is on ncalrpc only: MSDTC
/// has no network endpoint, the verdict names Network DTC Access. Patched: the context handle is
/// zeroed (so the listing ends there) and the stub is cut into response fragments.
#[test]
fn replay_ncalrpc_only_listing_says_network_dtc_access_is_off() {
    let test = "replay_ncalrpc_only_listing_says_network_dtc_access_is_off";
    let Some(dir) = captures::dir_with_tshark_or_skip(test) else {
        return;
    };
    let Some(stub_path) = captures::file_or_skip(
        test,
        "dcerpc/scapy-ept_lookup_response_430entries.ndr20.bin",
    ) else {
        return;
    };
    let mut stub = std::fs::read(stub_path).unwrap();
    stub[..20].fill(0);
    let bind_ack = first_of_type(
        &server_pdus(&dir.join("dcerpc/scapy-dcerpc_msnrpc.pcapng.gz"), 135),
        pdu::PTYPE_BIND_ACK,
    );
    let lookup = pdu::build::response(0, &stub, 4280 - 24);
    let port = replay_mapper(bind_ack, move |opnum| match opnum {
        epm::OPNUM_LOOKUP => lookup.clone(),
        // ept_map of IXnRemote over TCP: nothing (no capture holds this answer; built).
        _ => pdu::build::response(
            0,
            &epm::build::map_response(&[0; 20], &[], epm::EPT_S_NOT_REGISTERED),
            4096,
        ),
    });
    let v = check_json(&[&format!("epm://127.0.0.1:{port}")]);
    let h = first_hop(&v, "epm");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("fail"), Some("epm_not_registered")),
        "{h:#}"
    );
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("only for ncalrpc (no ncacn_ip_tcp endpoint: Network DTC Access is off)"),
        "{h:#}"
    );
    assert!(
        h["hint"]
            .as_str()
            .unwrap()
            .contains("Network DTC Access is off"),
        "{h:#}"
    );
    // The human report's verdict lines say it too.
    let (_, out, _) = crate::support::run_bin(&[
        "check",
        "--timeout",
        "3s",
        &format!("epm://127.0.0.1:{port}"),
    ]);
    let verdict = out.rsplit_once("\n\n").map(|(_, v)| v).unwrap_or(&out);
    assert!(verdict.contains("Network DTC Access is off"), "{out}");
}

/// Windows Server 2022's real fault nca_s_op_rng_error (0x1c010002, did-not-execute) to every
/// call: the epm hop fails and names the fault.
#[test]
fn replay_windows_2022_fault_is_named() {
    let test = "replay_windows_2022_fault_is_named";
    let Some(dir) = captures::dir_with_tshark_or_skip(test) else {
        return;
    };
    let real = server_pdus(
        &dir.join("dcerpc/suricata-verify-dcerpc-bind-no-frag-flag.pcap"),
        135,
    );
    let fault = first_of_type(&real, pdu::PTYPE_FAULT);
    let port = replay_mapper(first_of_type(&real, pdu::PTYPE_BIND_ACK), move |_| {
        vec![fault.clone()]
    });
    let v = check_json(&[&format!("epm://127.0.0.1:{port}")]);
    let h = first_hop(&v, "epm");
    assert_eq!(h["status"], "fail", "{h:#}");
    let detail = h["detail"].as_str().unwrap();
    assert!(
        detail.contains("nca_s_op_rng_error") && detail.contains("1c010002"),
        "{h:#}"
    );
}

/// Windows 2019's real bind_ack to a NDR20+NDR64+BTFN bind ([provider rejection (2) for
/// NDR20, accept NDR64, negotiate_ack]) given to dtcprobe's NDR20-only bind: it cannot go on
/// in NDR 2.0, and stops with the first result (the one for its only context) instead of
/// calling. (A real server answers a one-context bind with one result; this is the form, not a
/// conversation Windows would have with dtcprobe.)
#[test]
fn replay_ndr64_bind_ack_is_reported_not_used() {
    let test = "replay_ndr64_bind_ack_is_reported_not_used";
    let Some(dir) = captures::dir_with_tshark_or_skip(test) else {
        return;
    };
    let real = server_pdus(&dir.join("dcerpc/scapy-dcerpc_privacy_krb.pcapng.gz"), 135);
    let port = replay_mapper(first_of_type(&real, pdu::PTYPE_BIND_ACK), |_| {
        panic!("dtcprobe called after a bind_ack that did not accept NDR 2.0")
    });
    let v = check_json(&[&format!("epm://127.0.0.1:{port}")]);
    let h = first_hop(&v, "epm");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("fail"), Some("protocol_error")),
        "{h:#}"
    );
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("rejected (result 2, reason 2)"),
        "{h:#}"
    );
}

/// Reads one TDS message (packets up to end-of-message); `None` when the client hung up.
fn read_tds_message(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut payload = Vec::new();
    for _ in 0..256 {
        let mut h = [0u8; 8];
        s.read_exact(&mut h).ok()?;
        let len = u16::from_be_bytes([h[2], h[3]]) as usize;
        let mut body = vec![0u8; len.checked_sub(8)?];
        s.read_exact(&mut body).ok()?;
        payload.extend_from_slice(&body);
        if h[1] & 0x01 != 0 {
            return Some((h[0], payload));
        }
    }
    None
}

/// One TDS packet (type 4, end of message) around a reply that a capture holds without its
/// header (r2dbc's unit tests keep only the bodies).
fn tds_packet(payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x04, 0x01];
    p.extend_from_slice(&((payload.len() + 8) as u16).to_be_bytes());
    p.extend_from_slice(&[0, 0, 1, 0]);
    p.extend_from_slice(payload);
    p
}

/// A SQL Server that answers PRELOGIN and LOGIN7 with the real replies, then hangs up (the
/// captures hold nothing more of those sessions). Returns the port and, per connection, the
/// packet types the client sent (dtcprobe connects for the tcp hop, for its own PRELOGIN read,
/// then for the login).
fn replay_sql_server(
    prelogin: Vec<u8>,
    login: Vec<u8>,
) -> (u16, std::sync::mpsc::Receiver<Vec<u8>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for s in l.incoming().take(6) {
            let Ok(mut s) = s else { return };
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut kinds = Vec::new();
            for reply in [&prelogin, &login] {
                let Some((kind, _)) = read_tds_message(&mut s) else {
                    break;
                };
                kinds.push(kind);
                if s.write_all(reply).is_err() {
                    break;
                }
            }
            // What comes next (the first statement) has no real answer here: read it, hang up.
            if kinds.len() == 2 {
                if let Some((kind, _)) = read_tds_message(&mut s) {
                    kinds.push(kind);
                }
            }
            let _ = tx.send(kinds);
        }
    });
    (port, rx)
}

fn login_json(port: u16) -> serde_json::Value {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "not-checked-by-the-replay").unwrap();
    check_json(&[
        &format!("mssql://probe@127.0.0.1:{port}/app?encrypt=off"),
        "--password-file",
        f.path().to_str().unwrap(),
    ])
}

/// SQL Server 2008 SP3 (pytds) and 2017 (r2dbc-mssql): their real PRELOGIN answers (ENCRYPTION
/// not supported) and login replies (LOGINACK TDS 7.3B / 7.4) given to the login hop. The
/// captures hold no answer to dtcprobe's first query, so the replay hangs up there: the hop
/// reports the versions, that LOGINACK came, and that the server then closed the connection.
///
/// The 2017 reply was recorded for a client (r2dbc) that asked for column encryption, so it ends
/// with FEATUREEXTACK feature 4. dtcprobe does not ask for it; replayed as recorded it is refused
/// as an unrequested feature (protocol_error, as SqlClient's UnrequestedFeatureByServer does).
/// Without that one token (the patch: what 2017 sends a LOGIN7 without the extension) it
/// logs in as 2008's does.
#[test]
fn replay_sql_server_login_replies_report_versions() {
    let test = "replay_sql_server_login_replies_report_versions";
    let Some(path) = captures::file_or_skip(test, "tds/tds-real-and-spec-bytes.hex") else {
        return;
    };
    let all = captures::hex_messages(&path);
    let msg = |n: &str| captures::hex_message(&all, n);
    for (label, prelogin, login, prelogin_version, tds) in [
        (
            "SQL Server 2008",
            msg("pytds-sql2008-prelogin-response"),
            msg("pytds-sql2008-login-response"),
            "10.0.5512",
            "7.3B",
        ),
        (
            "SQL Server 2017",
            tds_packet(&msg("r2dbc-sql2017-prelogin-response-body")),
            tds_packet(&without_colenc_ack(msg("r2dbc-sql2017-login-tokens"))),
            "14.0.3038",
            "7.4",
        ),
    ] {
        let (port, sent) = replay_sql_server(prelogin, login);
        let v = login_json(port);
        let h = first_hop(&v, "login");
        let sent: Vec<Vec<u8>> = sent.try_iter().collect();
        assert!(
            sent.iter().any(|k| k.starts_with(&[0x12, 0x10])),
            "{label}: no PRELOGIN then LOGIN7 in {sent:?}"
        );
        assert_eq!(
            h["data"]["prelogin_version"], prelogin_version,
            "{label}: {h:#}"
        );
        assert_eq!(h["data"]["tds_version"], tds, "{label}: {h:#}");
        assert_eq!(h["data"]["server_encryption"], "not_supported", "{label}");
        assert_eq!(h["data"]["encryption"], "none", "{label}");
        assert_eq!(
            (h["status"].as_str(), h["cause"].as_str()),
            (Some("fail"), Some("reset")),
            "{label}: {h:#}"
        );
        assert!(
            h["detail"]
                .as_str()
                .unwrap()
                .contains("the login succeeded (LOGINACK received), then the first query failed"),
            "{label}: {h:#}"
        );
    }

    let (port, _) = replay_sql_server(
        tds_packet(&msg("r2dbc-sql2017-prelogin-response-body")),
        tds_packet(&msg("r2dbc-sql2017-login-tokens")),
    );
    let v = login_json(port);
    let h = first_hop(&v, "login");
    assert_eq!(
        (h["status"].as_str(), h["cause"].as_str()),
        (Some("fail"), Some("protocol_error")),
        "{h:#}"
    );
    assert!(
        h["detail"]
            .as_str()
            .unwrap()
            .contains("unsupported feature 4"),
        "{h:#}"
    );
}

/// The 2017 login reply without its FEATUREEXTACK (0xAE: feature 4, length 1, value 1, then the
/// 0xFF terminator).
fn without_colenc_ack(tokens: Vec<u8>) -> Vec<u8> {
    let ack = captures::hex("ae040100000001ff");
    let at = tokens
        .windows(ack.len())
        .position(|w| w == ack)
        .expect("FEATUREEXTACK in the 2017 reply");
    let mut out = tokens[..at].to_vec();
    out.extend_from_slice(&tokens[at + ack.len()..]);
    out
}

/// SQL Server 2008 Express's real Browser answer (instance SQLEXPRESS, dynamic TCP port 49849)
/// replayed over UDP 1434 to the sqlbrowser hop, which reports that port; the login then goes
/// to it (nothing listens there: the capture is of another host). Binding 1434 needs root.
#[cfg(unix)]
#[test]
fn replay_browser_answer_reports_the_port() {
    let test = "replay_browser_answer_reports_the_port";
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP {test}: binding UDP 1434 needs root");
        return;
    }
    let Some(path) = captures::file_or_skip(test, "ssrp/ssrp-responses.hex") else {
        return;
    };
    let answer =
        captures::hex_message(&captures::hex_messages(&path), "pytds-ssrp-sqlexpress-2008");
    // Its own loopback address (mssql_browser.rs uses 127.83.x.y), so tests run in parallel.
    let ip = std::net::Ipv4Addr::new(127, 84, (std::process::id() % 250) as u8 + 1, 20);
    let sock = std::net::UdpSocket::bind((ip, 1434)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let asked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let asked_by_client = asked.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1024];
        for _ in 0..8 {
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                return;
            };
            let instance = ssrp::decode_request(&buf[..n]).ok();
            asked_by_client.lock().unwrap().push(instance.clone());
            if instance.is_some_and(|i| i.eq_ignore_ascii_case("SQLEXPRESS")) {
                let _ = sock.send_to(&answer, from);
            }
        }
    });
    let mut f = tempfile::NamedTempFile::new().unwrap();
    writeln!(f, "x").unwrap();
    let v = check_json(&[
        &format!("mssql://probe@{ip}\\SQLEXPRESS/app?encrypt=off"),
        "--password-file",
        f.path().to_str().unwrap(),
    ]);
    assert_eq!(
        asked.lock().unwrap().first(),
        Some(&Some("SQLEXPRESS".to_string()))
    );
    let b = first_hop(&v, "sqlbrowser");
    assert_eq!(b["status"], "pass", "{b:#}");
    assert_eq!(b["data"]["tcp_port"], 49849, "{b:#}");
    assert_eq!(b["data"]["version"], "10.0.1600.22", "{b:#}");
    assert_eq!(b["data"]["server_name"], "MISHA-PC", "{b:#}");
    assert_eq!(first_hop(&v, "tcp")["data"]["port"], 49849, "{v:#}");
}
