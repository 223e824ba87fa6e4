//! The shapes of a classification: what a connect ended with ([`ConnectOutcome`]), the verdict
//! every classifier returns ([`Verdict`]) and the connect hints shared by the Linux and the
//! Windows table. Both tables (`classify.rs` and `winsock.rs`) read them from here, so neither
//! imports the other's module.

use std::borrow::Cow;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use crate::model::{Cause, HopKind, HopResult};

/// What the connect attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectOutcome {
    /// The SYN-ACK came back.
    Connected,
    /// Nothing at all came back before our own deadline.
    NoReply(Duration),
    /// The OS reported an error: its kind and, where known, the raw OS error number.
    Error(io::ErrorKind, Option<i32>),
    /// An ICMP error answered the SYN, read from the socket's error queue (Linux `IP_RECVERR`):
    /// the only way to tell "administratively prohibited" from "host unreachable", which the
    /// kernel folds into the same errno. `from` is the device that sent it (`SO_EE_OFFENDER`)
    /// and `by_target` whether that device is the address we connected to: "rejected by a
    /// router on the path" and "rejected by the target" send a sysadmin to different teams.
    Icmp {
        v6: bool,
        icmp_type: u8,
        code: u8,
        from: Option<IpAddr>,
        by_target: bool,
    },
}

impl ConnectOutcome {
    pub fn from_io_error(e: &io::Error) -> ConnectOutcome {
        ConnectOutcome::Error(e.kind(), e.raw_os_error())
    }
}

/// A classified failure: the cause, a one-line detail of what was observed, and what to do next.
/// The one shape every classifier returns (TCP connects here, SQL Server errors in
/// `hops::mssql::classify`, SQLSTATEs in `hops::postgres::classify`), so a hop turns any of
/// them into its result the same way ([`Verdict::into_hop`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub cause: Cause,
    pub detail: String,
    /// Borrowed for the fixed hints (most are), so a verdict repeated per check copies none.
    pub hint: Cow<'static, str>,
}

impl Verdict {
    pub fn new(
        cause: Cause,
        detail: impl Into<String>,
        hint: impl Into<Cow<'static, str>>,
    ) -> Verdict {
        Verdict {
            cause,
            detail: detail.into(),
            hint: hint.into(),
        }
    }

    /// The failed hop result this verdict describes.
    pub fn into_hop(self, kind: HopKind) -> HopResult {
        HopResult::fail(kind, self.cause, self.detail).with_hint(self.hint)
    }
}

pub const HINT_TIMEOUT: &str = concat!(
    "no reply at all: packets silently dropped, typical of a firewall DROP \
rule between zones (or a host that is powered off); firewall logs may not show it if logging is off \
for the rule. Check the rules on every firewall between the zones for this port, in this direction; \
retest from this host with ",
    crate::platform_hints::retest_cmd!()
);
/// A reset whose origin was not checked: what it usually means, and that a firewall can forge one
/// (`hops::reset_origin` tells the two apart where it can read TTLs).
pub const HINT_REFUSED: &str = concat!(
    "refused: a TCP reset answered the SYN. Usually the host is up and nothing listens on that \
port (service stopped, wrong port or named instance), but a firewall between the zones can forge \
the reset in the target's name (Palo Alto/ASA \"reset\" actions, a Linux router's `reject with \
tcp reset`), and the detail says whether its origin was checked. Check the service on the server (",
    crate::platform_hints::listeners_cmd!(),
    "); if it listens, check the firewalls' deny logs for this port, in this direction"
);
pub const HINT_HOST_UNREACHABLE: &str =
    "ICMP host unreachable: a router (or the host's own subnet) \
says the address cannot be reached: host down, ARP failing on the last hop, or a reject rule using \
host-unreachable. Check the address is right and the host is up";
pub const HINT_NET_UNREACHABLE: &str =
    "no route to that network: this host or a router on the way has \
no route for the address (or answered ICMP net unreachable). Check routing tables and VPN/VLAN \
membership for the target zone";
pub const HINT_PROHIBITED: &str = "ICMP administratively prohibited: a firewall between the zones \
rejects this traffic explicitly (nftables/iptables `reject with icmp admin-prohibited`, an ACL, or a \
host firewall). The rule exists and should appear in that firewall's logs; ask for this port to be \
opened in this direction";
pub const HINT_PORT_UNREACHABLE_TCP: &str = "ICMP port unreachable in answer to a TCP SYN: a \
TCP stack answers a closed port with a reset, so this ICMP comes from a firewall rule that rejects \
the connection (nftables' plain `reject`, iptables' default REJECT). The rule exists and should \
appear in that firewall's logs; ask for this port to be opened in this direction";
pub const HINT_LOCAL_FIREWALL: &str = concat!(
    "this host's own firewall (output rules) refused to send the \
connection: check the local firewall's outbound rules: ",
    crate::platform_hints::local_firewall_cmd!()
);
pub const HINT_RESET: &str =
    "the connection was reset during setup: a firewall or IPS that resets \
unwanted sessions, or a service that crashed on accept";
pub const HINT_NO_LOCAL_ADDRESS: &str = "this host has no usable source address for the target \
(interface down or address family not configured)";
pub const HINT_UNKNOWN: &str =
    "an unexpected error from the operating system; run with -v for details";
