//! The route lookup of hop `route` on Windows: which interface, source address and next hop
//! Windows picks for a target, before any packet is sent.
//!
//! `GetBestRoute2` is the API (IPv4 and IPv6, with the source address and the matching prefix).
//! Wine stubs it (ERROR_NOT_SUPPORTED), and old or trimmed-down stacks may too, so for IPv4 the
//! lookup falls back to `GetBestRoute` (the IPv4 forwarding table) plus a connected UDP socket for
//! the source address (no packet is sent by a UDP connect). The fallback is what the wine tests
//! exercise; `GetBestRoute2` itself is only confirmed on a real Windows host.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};

use windows_sys::Win32::Foundation::{
    ERROR_HOST_UNREACHABLE, ERROR_NETWORK_UNREACHABLE, ERROR_NOT_FOUND, ERROR_NOT_SUPPORTED,
    NO_ERROR,
};
use windows_sys::Win32::NetworkManagement::IpHelper::{
    ConvertInterfaceIndexToLuid, ConvertInterfaceLuidToAlias, GetBestRoute, GetBestRoute2,
    MIB_IPFORWARDROW, MIB_IPFORWARD_ROW2, MIB_IPROUTE_TYPE_DIRECT,
};
use windows_sys::Win32::NetworkManagement::Ndis::NET_LUID_LH;
use windows_sys::Win32::Networking::WinSock::{AF_INET, AF_INET6, SOCKADDR_INET};

use super::route_info::{RouteError, RouteInfo};

/// ERROR_CAN_NOT_COMPLETE: what `GetBestRoute` answers (on wine and Windows) when no route
/// matches.
const ERROR_CAN_NOT_COMPLETE: u32 = 1003;

pub fn lookup(addr: IpAddr) -> Result<RouteInfo, RouteError> {
    match best_route2(addr) {
        Err(Fallback::NotSupported) => match addr {
            IpAddr::V4(v4) => best_route_v4(v4),
            IpAddr::V6(_) => Err(RouteError::Unsupported(
                "this Windows stack has no GetBestRoute2 (IPv6 route lookup): not checked",
            )),
        },
        Err(Fallback::Failed(e)) => Err(e),
        Ok(info) => Ok(info),
    }
}

enum Fallback {
    NotSupported,
    Failed(RouteError),
}

fn no_route(addr: IpAddr, code: u32) -> RouteError {
    RouteError::NoRoute {
        addr,
        reason: format!("Windows has no route (error {code})"),
    }
}

fn is_no_route(code: u32) -> bool {
    [
        ERROR_NETWORK_UNREACHABLE,
        ERROR_HOST_UNREACHABLE,
        ERROR_NOT_FOUND,
        ERROR_CAN_NOT_COMPLETE,
    ]
    .contains(&code)
}

fn sockaddr_inet(addr: IpAddr) -> SOCKADDR_INET {
    let mut s = SOCKADDR_INET::default();
    match addr {
        IpAddr::V4(v4) => {
            s.Ipv4.sin_family = AF_INET;
            // IN_ADDR holds the address in network byte order, as its octets in memory.
            s.Ipv4.sin_addr.S_un.S_addr = u32::from_ne_bytes(v4.octets());
        }
        IpAddr::V6(v6) => {
            s.Ipv6.sin6_family = AF_INET6;
            s.Ipv6.sin6_addr.u.Byte = v6.octets();
        }
    }
    s
}

fn ip_of(s: &SOCKADDR_INET) -> Option<IpAddr> {
    // SAFETY: the family field is shared by every variant of the union; the variant read is the
    // one it names.
    unsafe {
        match s.si_family {
            AF_INET => Some(IpAddr::V4(Ipv4Addr::from(
                s.Ipv4.sin_addr.S_un.S_addr.to_ne_bytes(),
            ))),
            AF_INET6 => Some(IpAddr::V6(Ipv6Addr::from(s.Ipv6.sin6_addr.u.Byte))),
            _ => None,
        }
    }
}

/// The interface's alias ("Ethernet 2", "vEthernet (WSL)"), the name `Get-NetAdapter` shows.
fn alias(luid: &NET_LUID_LH) -> Option<String> {
    let mut buf = [0u16; 257];
    // SAFETY: valid LUID pointer; the buffer length is passed in characters.
    let rc = unsafe { ConvertInterfaceLuidToAlias(luid, buf.as_mut_ptr(), buf.len()) };
    if rc != NO_ERROR {
        return None;
    }
    let len = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    Some(String::from_utf16_lossy(&buf[..len]))
}

fn alias_of_index(index: u32) -> Option<String> {
    let mut luid = NET_LUID_LH { Value: 0 };
    // SAFETY: out-pointer to a NET_LUID_LH.
    let rc = unsafe { ConvertInterfaceIndexToLuid(index, &mut luid) };
    if rc != NO_ERROR {
        return None;
    }
    alias(&luid)
}

fn best_route2(addr: IpAddr) -> Result<RouteInfo, Fallback> {
    let dest = sockaddr_inet(addr);
    let mut row = MIB_IPFORWARD_ROW2::default();
    let mut source = SOCKADDR_INET::default();
    // SAFETY: every pointer is to a live, correctly typed value; no interface is imposed (null
    // LUID, index 0), no source address is imposed (null).
    let rc = unsafe {
        GetBestRoute2(
            std::ptr::null(),
            0,
            std::ptr::null(),
            &dest,
            0,
            &mut row,
            &mut source,
        )
    };
    match rc {
        NO_ERROR => {}
        ERROR_NOT_SUPPORTED => return Err(Fallback::NotSupported),
        code if is_no_route(code) => return Err(Fallback::Failed(no_route(addr, code))),
        code => {
            return Err(Fallback::Failed(RouteError::Lookup(format!(
                "GetBestRoute2 failed (error {code})"
            ))))
        }
    }
    let source = ip_of(&source);
    let gateway = ip_of(&row.NextHop).filter(|g| !g.is_unspecified());
    let network =
        ip_of(&row.DestinationPrefix.Prefix).map(|n| (n, row.DestinationPrefix.PrefixLength));
    Ok(RouteInfo {
        interface: alias(&row.InterfaceLuid).or_else(|| Some(row.InterfaceIndex.to_string())),
        source,
        gateway,
        network,
        local: row.Loopback || source == Some(addr),
    })
}

/// The source address Windows would use: a UDP socket "connected" to the target (no packet).
fn source_for(addr: IpAddr) -> Option<IpAddr> {
    let bind: SocketAddr = match addr {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(bind).ok()?;
    socket.connect((addr, 9)).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

fn best_route_v4(addr: Ipv4Addr) -> Result<RouteInfo, RouteError> {
    let mut row = MIB_IPFORWARDROW::default();
    let dest = u32::from_ne_bytes(addr.octets());
    // SAFETY: out-pointer to a MIB_IPFORWARDROW; addresses in network byte order.
    let rc = unsafe { GetBestRoute(dest, 0, &mut row) };
    match rc {
        NO_ERROR => {}
        code if is_no_route(code) => return Err(no_route(IpAddr::V4(addr), code)),
        code => {
            return Err(RouteError::Lookup(format!(
                "GetBestRoute failed (error {code})"
            )))
        }
    }
    let source = source_for(IpAddr::V4(addr));
    let next_hop = Ipv4Addr::from(row.dwForwardNextHop.to_ne_bytes());
    // SAFETY: both union members are the same i32 route type.
    let direct = unsafe { row.Anonymous1.ForwardType } == MIB_IPROUTE_TYPE_DIRECT;
    // A directly connected route names no router: its next hop is 0.0.0.0, the target itself or
    // (on Windows) this host's own address on that interface.
    let gateway = (!direct
        && !next_hop.is_unspecified()
        && next_hop != addr
        && Some(IpAddr::V4(next_hop)) != source)
        .then_some(IpAddr::V4(next_hop));
    let mask = u32::from_be_bytes(row.dwForwardMask.to_ne_bytes());
    let network = Ipv4Addr::from(row.dwForwardDest.to_ne_bytes());
    Ok(RouteInfo {
        interface: alias_of_index(row.dwForwardIfIndex)
            .or_else(|| Some(row.dwForwardIfIndex.to_string())),
        source,
        gateway,
        network: Some((IpAddr::V4(network), mask.count_ones() as u8)),
        local: source == Some(IpAddr::V4(addr)) || addr.is_loopback(),
    })
}
