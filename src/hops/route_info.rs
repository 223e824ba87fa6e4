//! What a route lookup answers ([`RouteInfo`], [`RouteError`]): the types the platform lookups
//! (rtnetlink in `route.rs`, the IP Helper API in `route_windows.rs`) return and the hop
//! `route` judges. Apart from both, so neither lookup imports the other's module.

use std::net::IpAddr;

/// What the kernel said about the way to one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// Egress interface name (or its index when the name is unknown).
    pub interface: Option<String>,
    /// Source address the kernel would use.
    pub source: Option<IpAddr>,
    /// Next hop router; `None` when the target is on a directly connected network.
    pub gateway: Option<IpAddr>,
    /// The routing table entry that matched: network and prefix length.
    pub network: Option<(IpAddr, u8)>,
    /// The target is one of this host's own addresses.
    pub local: bool,
}

/// Why the kernel gave no route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No route, or a route of type unreachable/prohibit/blackhole: nothing will be sent.
    #[error("no route to {addr}: {reason}")]
    NoRoute { addr: IpAddr, reason: String },
    /// The lookup itself failed (netlink socket, unexpected answer).
    #[error("route lookup failed: {0}")]
    Lookup(String),
    /// This platform has no route lookup in dtcprobe yet.
    #[error("{0}")]
    Unsupported(&'static str),
}
