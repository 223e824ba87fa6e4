//! Test-only builders shared by the epm tests here and the endpoint listing tests in
//! `report::endpoints`, so each test module does not grow its own copy.

use std::net::Ipv4Addr;

use crate::dcerpc::epm::{Entry, Floor, Tower, PROTO_LRPC};
use crate::dcerpc::{SyntaxId, Uuid};
use crate::model::{CheckResult, HopKind, HopResult, Status};

/// An ncalrpc (local-only) tower for `iface`, as MSDTC registers it with Network DTC Access off.
pub(crate) fn lrpc(iface: &SyntaxId) -> Tower {
    let mut t = Tower::tcp(iface, Ipv4Addr::UNSPECIFIED, 0);
    t.floors.truncate(3);
    t.floors.push(Floor {
        lhs: vec![PROTO_LRPC],
        rhs: b"OLE1\0".to_vec(),
    });
    t
}

/// A lookup entry with a decoded tower and no annotation.
pub(crate) fn entry(object: Uuid, tower: Tower) -> Entry {
    Entry {
        object,
        tower: Some(Ok(tower)),
        annotation: String::new(),
    }
}

/// A passing `epm` check whose `epm` hop answered from `address`, with `cid` when given.
pub(crate) fn epm_check(target: &str, cid: Option<&str>, address: &str) -> CheckResult {
    let mut hop = HopResult::pass(HopKind::Epm, "ok").with_data("address", address);
    if let Some(c) = cid {
        hop = hop.with_data("cid", c);
    }
    let hops = vec![hop, HopResult::pass(HopKind::RpcPort, "ok")];
    CheckResult {
        name: target.into(),
        kind: "epm".into(),
        target: target.into(),
        from: None,
        to: None,
        direction: Default::default(),
        status: Status::Pass,
        hops,
    }
}
