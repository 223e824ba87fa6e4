//! The `epm` / `rpc_port` hops against a small scripted endpoint mapper on loopback, for what a
//! real Samba cannot show: MSDTC's CID as object UUID (and the same CID on two hosts), responses
//! split into many small fragments, faults, bind_nak, garbage, a silent peer, and an
//! ncalrpc-only registration, a tower advertising another address than the one reached
//! (`rpc_bind` `address_mismatch`). The main path is proven against real Samba in `epm_samba.rs`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use dtcprobe::dcerpc::epm::{self as wire, Floor, Tower, EPT_S_NOT_REGISTERED, PROTO_LRPC};
use dtcprobe::dcerpc::pdu::{self, build};
use dtcprobe::dcerpc::{Uuid, IXNREMOTE};
use dtcprobe::model::{Cause, CheckResult, HopKind, HopResult, Status};
use dtcprobe::runner::{run_checks, RunOptions};
use dtcprobe::target::{CheckSpec, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const CID_A: &str = "3e1f0c55-8a2b-4c1d-9e7f-0123456789ab";
const CID_B: &str = "77777777-1111-2222-3333-444444444444";

#[derive(Clone)]
pub(crate) enum Behavior {
    /// IXnRemote registered under `cid` (object UUID) on TCP `port` (or only on ncalrpc);
    /// response stub data cut into fragments of `chunk` bytes.
    Registered {
        cid: Uuid,
        port: u16,
        lrpc_only: bool,
        chunk: usize,
    },
    /// Bind accepted, every call answered with a fault.
    Fault(u32),
    /// Lookup and map answered with a status (not a fault) and no entries.
    Status(u32),
    BindNak(u16),
    /// An HTTP server where the mapper should be.
    Garbage,
    /// Accepts, reads, never answers.
    Silent,
}

async fn read_pdu(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut h = [0u8; 16];
    s.read_exact(&mut h).await.ok()?;
    let len = u16::from_le_bytes([h[8], h[9]]) as usize;
    let mut buf = vec![0u8; len.max(16)];
    buf[..16].copy_from_slice(&h);
    s.read_exact(&mut buf[16..]).await.ok()?;
    Some(buf)
}

/// The RPC server behind a scripted mapper's port: answers one bind with bind_ack when it offers
/// IXnRemote, with a provider rejection (abstract syntax not supported) for any other interface,
/// as a real RPC server does.
async fn serve_rpc(mut s: TcpStream) {
    let Some(bind) = read_pdu(&mut s).await else {
        return;
    };
    let call_id = u32::from_le_bytes([bind[12], bind[13], bind[14], bind[15]]);
    // The first context's abstract syntax UUID sits at offset 32 (after header, frag sizes,
    // association group, context count, context id and transfer syntax count).
    let offers_ixnremote = bind.get(32..48) == Some(&IXNREMOTE.uuid.to_le_bytes()[..]);
    let _ = s
        .write_all(&build::bind_ack(call_id, "49999", offers_ixnremote))
        .await;
}

async fn serve(mut s: TcpStream, ip: Ipv4Addr, b: Behavior) {
    let Some(bind) = read_pdu(&mut s).await else {
        return;
    };
    let call_id = u32::from_le_bytes([bind[12], bind[13], bind[14], bind[15]]);
    match &b {
        Behavior::Garbage => {
            let _ = s
                .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                .await;
            return;
        }
        Behavior::Silent => {
            let mut sink = [0u8; 64];
            while let Ok(n) = s.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
            return;
        }
        Behavior::BindNak(reason) => {
            let _ = s.write_all(&build::bind_nak(call_id, *reason)).await;
            return;
        }
        _ => {
            if s.write_all(&build::bind_ack(call_id, "135", true))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    // Bounded: a test client makes a handful of calls.
    for _ in 0..32 {
        let Some(req) = read_pdu(&mut s).await else {
            return;
        };
        let call_id = u32::from_le_bytes([req[12], req[13], req[14], req[15]]);
        let opnum = u16::from_le_bytes([req[22], req[23]]);
        let frags: Vec<Vec<u8>> = match &b {
            Behavior::Fault(status) => vec![build::fault(call_id, *status)],
            Behavior::Status(status) => {
                let stub = match opnum {
                    wire::OPNUM_LOOKUP => wire::build::lookup_response(&[0; 20], &[], *status),
                    _ => wire::build::map_response(&[0; 20], &[], *status),
                };
                build::response(call_id, &stub, 4096)
            }
            Behavior::Registered {
                cid,
                port,
                lrpc_only,
                chunk,
            } => {
                let tcp = Tower::tcp(&IXNREMOTE, ip, *port);
                let mut lrpc = Tower::tcp(&IXNREMOTE, Ipv4Addr::UNSPECIFIED, 0);
                lrpc.floors.truncate(3);
                lrpc.floors.push(Floor {
                    lhs: vec![PROTO_LRPC],
                    rhs: b"OLE5A1C0D2E\0".to_vec(),
                });
                let stub = match opnum {
                    wire::OPNUM_LOOKUP => {
                        let mut entries = vec![(*cid, Some(lrpc.clone()), "")];
                        if !lrpc_only {
                            entries.push((*cid, Some(tcp.clone()), ""));
                        }
                        wire::build::lookup_response(&[0; 20], &entries, EPT_S_NOT_REGISTERED)
                    }
                    wire::OPNUM_MAP if !lrpc_only => wire::build::map_response(&[0; 20], &[tcp], 0),
                    wire::OPNUM_MAP => {
                        wire::build::map_response(&[0; 20], &[], EPT_S_NOT_REGISTERED)
                    }
                    _ => {
                        let _ = s.write_all(&build::fault(call_id, 0x1c01_0002)).await;
                        continue;
                    }
                };
                build::response(call_id, &stub, *chunk)
            }
            _ => return,
        };
        for f in frags {
            if s.write_all(&f).await.is_err() {
                return;
            }
        }
    }
}

/// A scripted mapper on `ip`, plus (for `Registered`) the RPC server port it points to.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) rpc_port: u16,
}

pub(crate) async fn peer(ip: Ipv4Addr, make: impl FnOnce(u16) -> Behavior) -> Peer {
    peer_advertising(ip, ip, make).await
}

/// As [`peer`], but its towers advertise `advertise` as the RPC server's address (a NAT or a
/// multi-homed server registering another interface).
pub(crate) async fn peer_advertising(
    ip: Ipv4Addr,
    advertise: Ipv4Addr,
    make: impl FnOnce(u16) -> Behavior,
) -> Peer {
    let rpc = TcpListener::bind((ip, 0)).await.unwrap();
    let rpc_port = rpc.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((s, _)) = rpc.accept().await {
            tokio::spawn(serve_rpc(s));
        }
    });
    let b = make(rpc_port);
    let l = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            tokio::spawn(serve(s, advertise, b.clone()));
        }
    });
    Peer { addr, rpc_port }
}

/// One scripted MSDTC host reached at two addresses (a second NIC, a cluster node and its DTC
/// network name): the same mapper behaviour (same CID) and the same RPC port on `ips[0]` and
/// `ips[1]`, each tower advertising the address it was reached at.
pub(crate) async fn peer_at_two_addresses(
    ips: [Ipv4Addr; 2],
    make: impl FnOnce(u16) -> Behavior,
) -> [SocketAddr; 2] {
    let first = TcpListener::bind((ips[0], 0)).await.unwrap();
    let rpc_port = first.local_addr().unwrap().port();
    let second = TcpListener::bind((ips[1], rpc_port)).await.unwrap();
    for rpc in [first, second] {
        tokio::spawn(async move {
            while let Ok((s, _)) = rpc.accept().await {
                tokio::spawn(serve_rpc(s));
            }
        });
    }
    let b = make(rpc_port);
    let mut addrs = Vec::new();
    for ip in ips {
        let l = TcpListener::bind((ip, 0)).await.unwrap();
        addrs.push(l.local_addr().unwrap());
        let b = b.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = l.accept().await {
                tokio::spawn(serve(s, ip, b.clone()));
            }
        });
    }
    [addrs[0], addrs[1]]
}

fn spec(url: &str) -> CheckSpec {
    CheckSpec {
        name: url.to_string(),
        from: None,
        to: None,
        timeout: None,
        target: Target::from_url(url).unwrap(),
    }
}

async fn run(urls: &[String]) -> Vec<CheckResult> {
    let specs: Vec<CheckSpec> = urls.iter().map(|u| spec(u)).collect();
    let opts = RunOptions {
        timeout: Duration::from_millis(1500),
        ..Default::default()
    };
    run_checks(specs, &opts).await
}

fn hop(c: &CheckResult, kind: HopKind) -> &HopResult {
    c.hops
        .iter()
        .find(|h| h.hop == kind)
        .unwrap_or_else(|| panic!("no {kind:?} in {c:#?}"))
}

pub(crate) fn registered(cid: &str, chunk: usize) -> impl FnOnce(u16) -> Behavior {
    let cid = Uuid::parse(cid).unwrap();
    move |port| Behavior::Registered {
        cid,
        port,
        lrpc_only: false,
        chunk,
    }
}

#[tokio::test]
async fn cid_is_reported_from_a_fragmented_answer() {
    let p = peer(Ipv4Addr::LOCALHOST, registered(CID_A, 7)).await;
    let checks = run(&[format!("epm://{}", p.addr)]).await;
    let epm = hop(&checks[0], HopKind::Epm);
    assert_eq!(epm.status, Status::Pass, "{epm:#?}");
    assert_eq!(epm.data["cid"], CID_A);
    let rpc = hop(&checks[0], HopKind::RpcPort);
    assert_eq!(rpc.status, Status::Pass, "{rpc:#?}");
    let port = rpc.data["ports"][0].as_u64().unwrap();
    assert_eq!(port, p.rpc_port as u64);
    // The scripted RPC server offers IXnRemote: the bind is accepted, the tower's address is
    // the one reached.
    let bind = hop(&checks[0], HopKind::RpcBind);
    assert_eq!(bind.status, Status::Pass, "{bind:#?}");
    assert_eq!(bind.data["binds"][0]["answer"], "bind_ack");
    assert_eq!(bind.data["binds"][0]["tower_address"], "127.0.0.1");
    assert_eq!(checks[0].status, Status::Pass);
    assert_eq!(epm.data["ports"][0].as_u64(), Some(port));
    assert!(epm.data["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e == &format!("ncacn_ip_tcp:127.0.0.1[{port}]")));
}

#[tokio::test]
async fn same_cid_on_two_hosts_is_duplicate_cid() {
    // 127.0.0.2 is loopback too on Linux; two addresses stand for two hosts.
    let a = peer(Ipv4Addr::LOCALHOST, registered(CID_A, 4096)).await;
    let b = peer(Ipv4Addr::new(127, 0, 0, 2), registered(CID_A, 4096)).await;
    let c = peer(Ipv4Addr::new(127, 0, 0, 3), registered(CID_B, 4096)).await;
    let urls = [
        format!("epm://{}", a.addr),
        format!("epm://{}", b.addr),
        format!("epm://{}", c.addr),
    ];
    let checks = run(&urls).await;
    for dup in &checks[..2] {
        let epm = hop(dup, HopKind::Epm);
        assert_eq!(
            (dup.status, epm.status, epm.cause),
            (Status::Fail, Status::Fail, Some(Cause::DuplicateCid)),
            "{dup:#?}"
        );
        assert!(
            epm.hint.as_deref().unwrap().contains("msdtc -uninstall"),
            "{epm:#?}"
        );
    }
    assert!(hop(&checks[0], HopKind::Epm).detail.contains(&urls[1]));
    assert_eq!(checks[2].status, Status::Pass, "{:#?}", checks[2]);
}

/// One server reached at two addresses: the same CID AND the same dynamic port at both is one
/// MSDTC, a `warn same_host` naming both addresses, never `duplicate_cid` with its
/// `msdtc -uninstall` advice (issue 23 finding 2). The clones of the test above differ in port.
#[tokio::test]
async fn one_server_at_two_addresses_is_same_host() {
    let [a, b] = peer_at_two_addresses(
        [Ipv4Addr::new(127, 0, 0, 4), Ipv4Addr::new(127, 0, 0, 5)],
        registered(CID_A, 4096),
    )
    .await;
    let urls = [format!("epm://{a}"), format!("epm://{b}")];
    let checks = run(&urls).await;
    for (c, other) in checks.iter().zip(["127.0.0.5", "127.0.0.4"]) {
        let epm = hop(c, HopKind::Epm);
        assert_eq!(
            (c.status, epm.status, epm.cause),
            (Status::Warn, Status::Warn, Some(Cause::SameHost)),
            "{c:#?}"
        );
        assert!(epm.detail.contains(other), "{}", epm.detail);
        assert!(
            !epm.hint
                .as_deref()
                .unwrap()
                .contains("`msdtc -uninstall` then"),
            "{epm:#?}"
        );
        // The rest of the path was checked as usual.
        assert_eq!(hop(c, HopKind::RpcPort).status, Status::Pass, "{c:#?}");
    }
}

/// The mapper advertises 198.18.7.7 for the port it serves on 127.0.0.1 (NAT, or a multi-homed
/// server registering another NIC): the bind on the address reached passes, the hop warns with
/// `address_mismatch` and names both addresses.
#[tokio::test]
async fn tower_address_other_than_the_one_reached_warns_address_mismatch() {
    let p = peer_advertising(
        Ipv4Addr::LOCALHOST,
        Ipv4Addr::new(198, 18, 7, 7),
        registered(CID_A, 4096),
    )
    .await;
    let checks = run(&[format!("epm://{}", p.addr)]).await;
    let epm = hop(&checks[0], HopKind::Epm);
    assert_eq!(epm.status, Status::Pass, "{epm:#?}");
    assert_eq!(epm.data["advertised_addresses"][0], "198.18.7.7");
    assert_eq!(hop(&checks[0], HopKind::RpcPort).status, Status::Pass);
    let bind = hop(&checks[0], HopKind::RpcBind);
    assert_eq!(
        (bind.status, bind.cause),
        (Status::Warn, Some(Cause::AddressMismatch)),
        "{bind:#?}"
    );
    assert!(
        bind.detail.contains(&format!(
            "port {} advertised on 198.18.7.7, reached on 127.0.0.1",
            p.rpc_port
        )),
        "{bind:#?}"
    );
    assert!(bind.hint.as_deref().unwrap().contains("NIC"), "{bind:#?}");
    assert_eq!(bind.data["binds"][0]["tower_address"], "198.18.7.7");
    assert_eq!(
        bind.data["binds"][0]["address"],
        format!("127.0.0.1:{}", p.rpc_port)
    );
    assert_eq!(checks[0].status, Status::Warn);
}

#[tokio::test]
async fn ncalrpc_only_means_network_dtc_access_is_off() {
    let cid = Uuid::parse(CID_A).unwrap();
    let p = peer(Ipv4Addr::LOCALHOST, move |port| Behavior::Registered {
        cid,
        port,
        lrpc_only: true,
        chunk: 4096,
    })
    .await;
    let checks = run(&[format!("epm://{}", p.addr)]).await;
    let epm = hop(&checks[0], HopKind::Epm);
    assert_eq!(
        (epm.status, epm.cause),
        (Status::Fail, Some(Cause::EpmNotRegistered)),
        "{epm:#?}"
    );
    assert!(
        epm.hint
            .as_deref()
            .unwrap()
            .starts_with("Network DTC Access is off"),
        "{epm:#?}"
    );
    assert_eq!(hop(&checks[0], HopKind::RpcPort).status, Status::Skip);
}

#[tokio::test]
async fn failures_of_the_conversation() {
    // (behavior, cause, hint fragment)
    let rows: Vec<(Behavior, Cause, &str)> = vec![
        (
            Behavior::Fault(5),
            Cause::EpmAccessDenied,
            "RestrictRemoteClients",
        ),
        (
            Behavior::Status(5),
            Cause::EpmAccessDenied,
            "RestrictRemoteClients",
        ),
        (
            Behavior::Status(EPT_S_NOT_REGISTERED),
            Cause::EpmNotRegistered,
            "Distributed Transaction Coordinator",
        ),
        (
            Behavior::Fault(0x1c01_0003),
            Cause::ProtocolError,
            "not as a DCE/RPC endpoint mapper",
        ),
        (
            Behavior::BindNak(4),
            Cause::ProtocolError,
            "not as a DCE/RPC endpoint mapper",
        ),
        (
            Behavior::Garbage,
            Cause::ProtocolError,
            "not as a DCE/RPC endpoint mapper",
        ),
        (Behavior::Silent, Cause::Timeout, "did not answer"),
    ];
    let mut peers = Vec::new();
    for (b, _, _) in &rows {
        let b = b.clone();
        peers.push(peer(Ipv4Addr::LOCALHOST, move |_| b).await);
    }
    let urls: Vec<String> = peers.iter().map(|p| format!("epm://{}", p.addr)).collect();
    let checks = run(&urls).await;
    for ((_, cause, hint), c) in rows.iter().zip(&checks) {
        let epm = hop(c, HopKind::Epm);
        assert_eq!(
            (epm.status, epm.cause),
            (Status::Fail, Some(*cause)),
            "{epm:#?}"
        );
        assert!(epm.hint.as_deref().unwrap_or("").contains(hint), "{epm:#?}");
        assert_eq!(hop(c, HopKind::RpcPort).status, Status::Skip);
        assert_eq!(hop(c, HopKind::RpcBind).status, Status::Skip);
    }
}

#[test]
fn every_fragment_split_decodes_the_same() {
    // The reassembler against the encoder, for every fragment size from 1 byte up.
    let cid = Uuid::parse(CID_A).unwrap();
    let tower = Tower::tcp(&IXNREMOTE, Ipv4Addr::new(10, 0, 0, 1), 5000);
    let stub = wire::build::lookup_response(&[0; 20], &[(cid, Some(tower), "MSDTC")], 0);
    let want = wire::decode_lookup_response(&stub).unwrap();
    for chunk in 1..=stub.len() {
        let mut asm = pdu::ResponseAssembler::new(9);
        let frags = build::response(9, &stub, chunk);
        let mut got = None;
        for f in &frags {
            if let pdu::Step::Done(s) = asm.push(f).unwrap() {
                got = Some(s);
            }
        }
        assert_eq!(
            wire::decode_lookup_response(&got.unwrap()).unwrap(),
            want,
            "chunk {chunk}"
        );
    }
}
