//! Hop `route` (a shared step, not a kind): which interface, source address and gateway the
//! kernel picks for the target, asked before any packet is sent.
//!
//! Why: a local bridge that overlaps the target's network (a docker network that took a range
//! where real hosts live) sends the traffic to the bridge, and the connect times out exactly like
//! a firewall DROP; only the route says where it went. Likewise a target of another declared zone
//! that sits on one of this host's directly connected networks bypasses the firewall between
//! zones. And "no route" is known before any SYN is sent.
//!
//! The lookup is the kernel's own: `RTM_GETROUTE` over rtnetlink (the query `ip route get` makes)
//! on Linux, `GetBestRoute2` (falling back to `GetBestRoute` for IPv4) on Windows
//! (`route_windows.rs`). On other platforms the hop is `skip`, saying why. The judgement
//! ([`judge`]) is pure and tested on its own.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, OnceLock};

use serde_json::json;

use crate::model::{Cause, HopKind, HopResult, Status};

pub use super::route_info::{RouteError, RouteInfo};

pub const HINT_NO_ROUTE: &str =
    "this host has no route to the target's network: nothing was sent. \
Check the routing table (`ip route`, `route print`), the default gateway, and VPN/VLAN membership \
for the target zone";
pub const HINT_ROUTE_OVERLAP: &str = "a local bridge or virtual network (docker, libvirt, CNI, \
Hyper-V) uses an address range that contains the target, so the traffic goes to that local network \
instead of the real host. Find it with `docker network inspect $(docker network ls -q)` (or `virsh \
net-list`, Hyper-V virtual switches), remove it or move it, and keep docker off real ranges with \
`default-address-pools` (and `bip`) in /etc/docker/daemon.json";
pub const HINT_ZONE_ON_LINK: &str =
    "the target is declared in another zone, yet it is on a network \
directly connected to this host: traffic between them bypasses the firewall between the zones, or \
an interface uses a range that belongs to the other zone. Check this host's interfaces (`ip -br \
addr`, `ipconfig`) and the zone's address plan";

/// Interface names of local bridges and virtual networks: docker (docker0, br-<id>), libvirt
/// (virbr*), CNI/Kubernetes (cni*, flannel*, cali*, weave, kube-bridge), podman, LXC/LXD,
/// Hyper-V (vEthernet ...), VMware and VirtualBox host-only networks.
const VIRTUAL_PREFIXES: &[&str] = &[
    "docker",
    "br-",
    "virbr",
    "cni",
    "flannel",
    "cali",
    "weave",
    "kube-bridge",
    "podman",
    "lxcbr",
    "lxdbr",
    "vEthernet",
    "vmnet",
    "vboxnet",
];

/// Pure: whether an interface name is one of the local bridges/virtual networks above.
pub fn is_virtual_interface(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| {
        name.get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

fn network_text(info: &RouteInfo) -> String {
    match info.network {
        Some((net, len)) => format!("{net}/{len}"),
        None => "?".to_string(),
    }
}

/// Pure: the verdict on one address's route. `cross_zone`: the check is declared from one zone
/// to another, so a directly connected target is suspicious.
pub fn judge(addr: IpAddr, route: &Result<RouteInfo, RouteError>, cross_zone: bool) -> HopResult {
    let info = match route {
        Ok(info) => info,
        Err(RouteError::NoRoute { .. }) => {
            let err = route.as_ref().unwrap_err();
            return HopResult::fail(HopKind::Route, Cause::Unreachable, err.to_string())
                .with_hint(HINT_NO_ROUTE);
        }
        Err(e @ (RouteError::Lookup(_) | RouteError::Unsupported(_))) => {
            return HopResult::skip(HopKind::Route, format!("{addr}: {e}"));
        }
    };
    let iface = info.interface.as_deref().unwrap_or("?");
    let via = match info.gateway {
        Some(gw) => format!("via {gw}"),
        None => "directly connected".to_string(),
    };
    let src = info
        .source
        .map(|s| format!(", source {s}"))
        .unwrap_or_default();
    let described = format!("{addr}: {via}, interface {iface}{src}");
    if info.local {
        return HopResult::pass(HopKind::Route, format!("{addr} is an address of this host"));
    }
    if is_virtual_interface(iface) {
        return HopResult::warn(
            HopKind::Route,
            Cause::RouteOverlap,
            format!(
                "{described}: the target is reached through the local bridge/virtual network \
                 {iface} ({}); unless it is a container or VM on this host, that network \
                 overlaps the target's",
                network_text(info)
            ),
        )
        .with_hint(HINT_ROUTE_OVERLAP);
    }
    if cross_zone && info.gateway.is_none() {
        return HopResult::warn(
            HopKind::Route,
            Cause::RouteOverlap,
            format!(
                "{described}: the target, declared in another zone, is on this host's directly \
                 connected network {} ({iface})",
                network_text(info)
            ),
        )
        .with_hint(HINT_ZONE_ON_LINK);
    }
    HopResult::pass(HopKind::Route, described)
}

fn route_data(addr: IpAddr, route: &Result<RouteInfo, RouteError>) -> serde_json::Value {
    match route {
        Ok(r) => json!({
            "address": addr.to_string(),
            "interface": r.interface,
            "source": r.source.map(|s| s.to_string()),
            "gateway": r.gateway.map(|g| g.to_string()),
            "network": r.network.map(|(n, l)| format!("{n}/{l}")),
        }),
        Err(e) => json!({ "address": addr.to_string(), "error": e.to_string() }),
    }
}

/// Pure: the hop result over every address of the target. The worst address decides; an
/// address without a route among others that have one is a `warn` (clients fail sometimes).
pub fn hop_result(
    routes: &[(IpAddr, Result<RouteInfo, RouteError>)],
    cross_zone: bool,
) -> HopResult {
    let judged: Vec<HopResult> = routes
        .iter()
        .map(|(addr, r)| judge(*addr, r, cross_zone))
        .collect();
    let worst = judged
        .iter()
        .max_by_key(|r| r.status)
        .cloned()
        .unwrap_or_else(|| HopResult::skip(HopKind::Route, "no address to look up"));
    let some_routed = judged.iter().any(|r| r.status != Status::Fail);
    let mut result = if worst.status == Status::Fail && some_routed {
        HopResult {
            status: Status::Warn,
            detail: format!(
                "some addresses of the target have no route; {}",
                worst.detail
            ),
            ..worst
        }
    } else if judged.len() > 1 && worst.status == Status::Pass {
        HopResult::pass(
            HopKind::Route,
            judged
                .iter()
                .map(|r| r.detail.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        )
    } else {
        worst
    };
    // The first address's route, flat, for scripts; every address in `routes`.
    if let Some((_, Ok(first))) = routes.first() {
        if let Some(i) = &first.interface {
            result = result.with_data("interface", i.clone());
        }
        if let Some(s) = first.source {
            result = result.with_data("source", s.to_string());
        }
        if let Some(g) = first.gateway {
            result = result.with_data("gateway", g.to_string());
        }
        if let Some((n, l)) = first.network {
            result = result.with_data("network", format!("{n}/{l}"));
        }
    }
    result.with_data(
        "routes",
        routes
            .iter()
            .map(|(a, r)| route_data(*a, r))
            .collect::<Vec<_>>(),
    )
}

/// The routes looked up during one run, by address, so that a run of many checks to one host
/// asks the kernel once (10,000 ports of one host: one lookup, not 10,000 netlink round trips).
/// One run only: routes change, and a docker network created between two rounds of `watch` is
/// exactly what hop `route` must see, so a cache never outlives its run.
///
/// A lookup runs inline, on the calling thread: it is two netlink round trips to the local
/// kernel (tens of microseconds), less than handing it to a blocking thread and waking the
/// waiting checks afterwards. That hand-off made hop `route` of 1,000 checks to one host take
/// 3-47 ms (median 29 ms) each: every check parked on the first one's lookup, then waited its
/// turn behind the others' connects. Now a check finds its route answered in microseconds.
#[derive(Default)]
pub struct RouteCache {
    by_addr: std::sync::Mutex<HashMap<IpAddr, Arc<RouteCell>>>,
    /// Hop `route`'s judgement of one address, per (address, cross-zone check): the same for
    /// every check of the run that has it, so built once and copied (10,000 ports of one host:
    /// one judgement and its formatting, not 10,000).
    judged: std::sync::Mutex<HashMap<(IpAddr, bool), HopResult>>,
}

/// One address's route, looked up once (concurrent first uses wait for the one lookup).
type RouteCell = OnceLock<Result<RouteInfo, RouteError>>;

impl RouteCache {
    /// The route to `addr`: looked up on first use.
    pub fn lookup(&self, addr: IpAddr) -> Result<RouteInfo, RouteError> {
        self.with_route(addr, Clone::clone)
    }

    /// The source address of the route to `addr` (looked up on first use), without copying
    /// the rest of the route: the connect step asks this once per failed attempt.
    pub fn source(&self, addr: IpAddr) -> Option<IpAddr> {
        self.with_route(addr, |route| route.as_ref().ok()?.source)
    }

    /// Hop `route` for a target with the one address `addr` (see [`hop_result`]), and whether
    /// the kernel has a route to it.
    pub fn single_address_hop(&self, addr: IpAddr, cross_zone: bool) -> (HopResult, bool) {
        self.with_route(addr, |route| {
            let ok = !matches!(route, Err(RouteError::NoRoute { .. }));
            let mut judged = self.judged.lock().unwrap_or_else(|e| e.into_inner());
            let hop = judged
                .entry((addr, cross_zone))
                .or_insert_with(|| hop_result(&[(addr, route.clone())], cross_zone))
                .clone();
            (hop, ok)
        })
    }

    /// Calls `f` with `addr`'s route, asked of the kernel on first use.
    fn with_route<R>(
        &self,
        addr: IpAddr,
        f: impl FnOnce(&Result<RouteInfo, RouteError>) -> R,
    ) -> R {
        let cell = {
            let mut by_addr = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
            by_addr.entry(addr).or_default().clone()
        };
        // Outside the map's lock: lookups of other addresses go on meanwhile.
        f(cell.get_or_init(|| lookup(addr)))
    }
}

/// The kernel's route to `addr`.
#[cfg(target_os = "linux")]
pub fn lookup(addr: IpAddr) -> Result<RouteInfo, RouteError> {
    linux::lookup(addr)
}

/// The route Windows picks for `addr` (`GetBestRoute2`, or `GetBestRoute` where that is missing).
#[cfg(windows)]
pub fn lookup(addr: IpAddr) -> Result<RouteInfo, RouteError> {
    super::route_windows::lookup(addr)
}

#[cfg(not(any(target_os = "linux", windows)))]
pub fn lookup(_addr: IpAddr) -> Result<RouteInfo, RouteError> {
    Err(RouteError::Unsupported(
        "route lookup is only implemented on Linux and Windows: not checked",
    ))
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::IpAddr;

    use netlink_packet_core::{NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_REQUEST};
    use netlink_packet_route::route::{
        RouteAddress, RouteAttribute, RouteFlags, RouteMessage, RouteType,
    };
    use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
    use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

    use super::{RouteError, RouteInfo};

    fn ip_of(a: &RouteAddress) -> Option<IpAddr> {
        match a {
            RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
            RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
            _ => None,
        }
    }

    /// One RTM_GETROUTE request and its single answer.
    fn query(addr: IpAddr, fib_match: bool) -> Result<RouteMessage, RouteError> {
        let lookup_err = |what: &str, e: std::io::Error| RouteError::Lookup(format!("{what}: {e}"));
        let mut socket = Socket::new(NETLINK_ROUTE).map_err(|e| lookup_err("netlink socket", e))?;
        socket
            .bind_auto()
            .map_err(|e| lookup_err("netlink bind", e))?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(|e| lookup_err("netlink connect", e))?;

        let mut msg = RouteMessage::default();
        msg.header.address_family = if addr.is_ipv4() {
            AddressFamily::Inet
        } else {
            AddressFamily::Inet6
        };
        msg.header.destination_prefix_length = if addr.is_ipv4() { 32 } else { 128 };
        if fib_match {
            msg.header.flags = RouteFlags::FibMatch;
        }
        msg.attributes
            .push(RouteAttribute::Destination(RouteAddress::from(addr)));
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST;
        let mut packet = NetlinkMessage::new(
            header,
            NetlinkPayload::from(RouteNetlinkMessage::GetRoute(msg)),
        );
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf[..]);
        socket
            .send(&buf, 0)
            .map_err(|e| lookup_err("netlink send", e))?;

        let mut answer = vec![0u8; 8192];
        let n = socket
            .recv(&mut &mut answer[..], 0)
            .map_err(|e| lookup_err("netlink receive", e))?;
        let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&answer[..n])
            .map_err(|e| RouteError::Lookup(format!("netlink answer: {e}")))?;
        match reply.payload {
            NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewRoute(route)) => Ok(route),
            NetlinkPayload::Error(err) => {
                let code = err.code.map(|c| -c.get()).unwrap_or(0);
                let reason = std::io::Error::from_raw_os_error(code).to_string();
                Err(RouteError::NoRoute { addr, reason })
            }
            other => Err(RouteError::Lookup(format!(
                "unexpected netlink answer: {other:?}"
            ))),
        }
    }

    fn interface_name(index: u32) -> String {
        let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: the buffer has IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(index, name.as_mut_ptr()) };
        if p.is_null() {
            return format!("#{index}");
        }
        // SAFETY: if_indextoname wrote a NUL-terminated name into `name`.
        unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn lookup(addr: IpAddr) -> Result<RouteInfo, RouteError> {
        let route = query(addr, false)?;
        let mut info = RouteInfo {
            interface: None,
            source: None,
            gateway: None,
            network: None,
            local: route.header.kind == RouteType::Local,
        };
        match route.header.kind {
            RouteType::Unicast | RouteType::Local => {}
            other => {
                return Err(RouteError::NoRoute {
                    addr,
                    reason: format!("the route is of type {other:?}"),
                })
            }
        }
        for attr in &route.attributes {
            match attr {
                RouteAttribute::Oif(index) => info.interface = Some(interface_name(*index)),
                RouteAttribute::PrefSource(a) => info.source = ip_of(a),
                RouteAttribute::Gateway(a) => info.gateway = ip_of(a),
                _ => {}
            }
        }
        // The matching table entry (RTM_F_FIB_MATCH) gives the network; a failure there only
        // loses that detail.
        if let Ok(entry) = query(addr, true) {
            let len = entry.header.destination_prefix_length;
            let net = entry.attributes.iter().find_map(|a| match a {
                RouteAttribute::Destination(d) => ip_of(d),
                _ => None,
            });
            info.network = Some(match net {
                Some(n) => (n, len),
                None if addr.is_ipv4() => (IpAddr::from([0, 0, 0, 0]), 0),
                None => (IpAddr::from([0u16; 8]), 0),
            });
        }
        Ok(info)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// The judgement copied from the cache is the one hop_result gives for the same route, for
    /// each cross-zone setting (kept apart), on every call.
    #[cfg(target_os = "linux")]
    #[test]
    fn cached_single_address_hop_is_the_judgement_of_its_route() {
        let cache = RouteCache::default();
        let addr = ip("127.0.0.1");
        let route = lookup(addr);
        for cross_zone in [false, true, false] {
            let (hop, routed) = cache.single_address_hop(addr, cross_zone);
            assert_eq!(hop, hop_result(&[(addr, route.clone())], cross_zone));
            assert!(routed);
        }
        // One judgement per (address, cross-zone): the two settings are kept apart.
        assert_eq!(cache.judged.lock().unwrap().len(), 2);
    }

    fn routed(iface: &str, gateway: Option<&str>, net: &str, len: u8) -> RouteInfo {
        RouteInfo {
            interface: Some(iface.into()),
            source: Some(ip("198.18.0.1")),
            gateway: gateway.map(ip),
            network: Some((ip(net), len)),
            local: false,
        }
    }

    #[test]
    fn virtual_interface_names() {
        for name in [
            "docker0",
            "br-3f2a1b",
            "virbr0",
            "cni0",
            "flannel.1",
            "vEthernet (WSL)",
        ] {
            assert!(is_virtual_interface(name), "{name}");
        }
        for name in ["eth0", "br0", "ens192", "bond0", "Ethernet 2", "wg0"] {
            assert!(!is_virtual_interface(name), "{name}");
        }
    }

    #[test]
    fn judgement_table() {
        let target = ip("198.18.2.2");
        let via_router = Ok(routed("eth0", Some("198.18.0.254"), "0.0.0.0", 0));
        let r = judge(target, &via_router, true);
        assert_eq!((r.status, r.cause), (Status::Pass, None));
        assert!(r.detail.contains("via 198.18.0.254"), "{}", r.detail);

        let bridge = Ok(routed("br-5e1d", None, "198.18.2.0", 24));
        let r = judge(target, &bridge, false);
        assert_eq!(
            (r.status, r.cause),
            (Status::Warn, Some(Cause::RouteOverlap))
        );
        assert!(r.detail.contains("br-5e1d") && r.detail.contains("198.18.2.0/24"));
        assert!(r.hint.unwrap().contains("default-address-pools"));

        let on_link = Ok(routed("eth1", None, "198.18.2.0", 24));
        assert_eq!(judge(target, &on_link, false).status, Status::Pass);
        let r = judge(target, &on_link, true);
        assert_eq!(
            (r.status, r.cause),
            (Status::Warn, Some(Cause::RouteOverlap))
        );

        let none: Result<RouteInfo, RouteError> = Err(RouteError::NoRoute {
            addr: target,
            reason: "Network is unreachable".into(),
        });
        let r = judge(target, &none, false);
        assert_eq!(
            (r.status, r.cause),
            (Status::Fail, Some(Cause::Unreachable))
        );

        let r = hop_result(&[(target, none), (ip("198.18.2.3"), via_router)], false);
        assert_eq!(r.status, Status::Warn, "{}", r.detail);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn loopback_is_local() {
        let info = lookup(ip("127.0.0.1")).expect("a route to loopback");
        assert!(info.local);
        assert_eq!(info.interface.as_deref(), Some("lo"));
    }
}
