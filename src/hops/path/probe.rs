//! The probes of hop `path`, one per TTL, per platform: what came back for each ([`Probe`]).
//! Pure I/O; what the answers mean is [`super::interpret`]'s.

use std::net::SocketAddr;
use std::time::Duration;

use super::Probe;
#[cfg(any(target_os = "linux", windows))]
use super::MAX_TTL;
#[cfg(not(target_os = "linux"))]
use crate::model::HopKind;
use crate::model::HopResult;

/// How the trace was made (`data.method`).
pub type Method = &'static str;

/// Sends every TTL's probe at once to `target`, each bounded by `limit`: the answers, index 0
/// being TTL 1, and the method; or why no trace can be made here (a `skip` hop).
pub async fn send(target: SocketAddr, limit: Duration) -> Result<(Vec<Probe>, Method), HopResult> {
    #[cfg(target_os = "linux")]
    {
        let probes =
            futures::future::join_all((1..=MAX_TTL).map(|ttl| linux::probe(target, ttl, limit)))
                .await;
        Ok((probes, "tcp_syn"))
    }
    #[cfg(windows)]
    {
        if target.is_ipv6() {
            return Err(HopResult::skip(
                HopKind::Path,
                format!(
                    "path trace to {target}: the Windows trace (IcmpSendEcho2) is IPv4 only \
                     here: where the packets die is not known"
                ),
            ));
        }
        let probes =
            futures::future::join_all((1..=MAX_TTL).map(|ttl| windows::probe(target, ttl, limit)))
                .await;
        Ok((probes, "icmp_echo"))
    }
    #[cfg(not(any(target_os = "linux", windows)))]
    {
        let _ = limit;
        Err(HopResult::skip(
            HopKind::Path,
            format!(
                "path trace to {target} is not implemented on this platform: where the packets \
                 die is not known"
            ),
        ))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::net::SocketAddr;
    use std::time::Duration;

    use super::super::Probe;

    fn set_ttl(socket: &tokio::net::TcpSocket, v6: bool, ttl: u8) -> std::io::Result<()> {
        let value = libc::c_int::from(ttl);
        let (level, name) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS)
        } else {
            (libc::IPPROTO_IP, libc::IP_TTL)
        };
        crate::hops::errqueue::set_option(socket, level, name, &value)
    }

    /// One SYN with `ttl`, and what answered it.
    pub async fn probe(target: SocketAddr, ttl: u8, limit: Duration) -> Probe {
        let v6 = target.is_ipv6();
        let socket = match if v6 {
            tokio::net::TcpSocket::new_v6()
        } else {
            tokio::net::TcpSocket::new_v4()
        } {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("path probe socket: {e}");
                return Probe::Failed;
            }
        };
        if let Err(e) = set_ttl(&socket, v6, ttl) {
            tracing::debug!("path probe TTL {ttl}: {e}");
            return Probe::Failed;
        }
        let Some(errqueue) = crate::hops::errqueue::enable(&socket, v6) else {
            return Probe::Failed;
        };
        match tokio::time::timeout(limit, socket.connect(target)).await {
            Ok(Ok(_)) => Probe::Reached,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Reached,
            Ok(Err(e)) => match crate::hops::errqueue::read_queued(&errqueue, v6) {
                // v4 type 11 / v6 type 3: time exceeded in transit.
                Some(icmp) if matches!((icmp.v6, icmp.icmp_type), (false, 11) | (true, 3)) => {
                    icmp.offender.map(Probe::Router).unwrap_or(Probe::Silent)
                }
                Some(icmp) => icmp.offender.map(Probe::Rejected).unwrap_or(Probe::Silent),
                None => {
                    tracing::debug!("path probe TTL {ttl}: {e}");
                    Probe::Failed
                }
            },
            Err(_) => Probe::Silent,
        }
    }
}

/// The Windows trace: Winsock has no error queue for TCP, and raw sockets need elevation, so the
/// trace is an ICMP echo with TTL 1, 2, 3 ... through `IcmpSendEcho2` (unprivileged). Routers
/// answer time-exceeded to an echo as to a SYN; what differs is the end: an echo that reaches
/// the target proves the route, not the port ([`Probe::EchoReplied`]).
#[cfg(windows)]
mod windows {
    use std::net::{IpAddr, Ipv4Addr, SocketAddr};
    use std::time::Duration;

    use windows_sys::Win32::Foundation::{GetLastError, INVALID_HANDLE_VALUE};
    use windows_sys::Win32::NetworkManagement::IpHelper::{
        IcmpCloseHandle, IcmpCreateFile, IcmpSendEcho2, ICMP_ECHO_REPLY, IP_DEST_HOST_UNREACHABLE,
        IP_DEST_NET_UNREACHABLE, IP_DEST_PORT_UNREACHABLE, IP_DEST_PROHIBITED,
        IP_OPTION_INFORMATION, IP_REQ_TIMED_OUT, IP_SUCCESS, IP_TTL_EXPIRED_TRANSIT,
    };

    use super::super::Probe;

    const PAYLOAD: &[u8] = b"dtcprobe path trace";

    pub async fn probe(target: SocketAddr, ttl: u8, limit: Duration) -> Probe {
        let IpAddr::V4(dest) = target.ip() else {
            return Probe::Failed;
        };
        tokio::task::spawn_blocking(move || echo(dest, ttl, limit))
            .await
            .unwrap_or(Probe::Failed)
    }

    fn echo(dest: Ipv4Addr, ttl: u8, limit: Duration) -> Probe {
        // SAFETY: plain Win32 calls; the handle is closed on every path below.
        let handle = unsafe { IcmpCreateFile() };
        if handle == INVALID_HANDLE_VALUE {
            tracing::debug!("path probe TTL {ttl}: IcmpCreateFile failed");
            return Probe::Failed;
        }
        let options = IP_OPTION_INFORMATION {
            Ttl: ttl,
            Tos: 0,
            Flags: 0,
            OptionsSize: 0,
            OptionsData: std::ptr::null_mut(),
        };
        // The reply buffer holds one ICMP_ECHO_REPLY, the echoed data and room for an ICMP error
        // (8 bytes) as the API documents; u64 elements keep the struct aligned.
        let bytes = std::mem::size_of::<ICMP_ECHO_REPLY>() + PAYLOAD.len() + 8 + 64;
        let mut reply = vec![0u64; bytes.div_ceil(8)];
        let timeout_ms = u32::try_from(limit.as_millis()).unwrap_or(u32::MAX).max(1);
        // SAFETY: every pointer is to a live buffer of the size passed; no event or APC, so the
        // call is synchronous (it runs on a blocking thread).
        let (count, last_error) = unsafe {
            let count = IcmpSendEcho2(
                handle,
                std::ptr::null_mut(),
                None,
                std::ptr::null(),
                u32::from_ne_bytes(dest.octets()),
                PAYLOAD.as_ptr().cast(),
                PAYLOAD.len() as u16,
                &options,
                reply.as_mut_ptr().cast(),
                (reply.len() * 8) as u32,
                timeout_ms,
            );
            (count, GetLastError())
        };
        // SAFETY: the buffer starts with an ICMP_ECHO_REPLY written by the call (zeroed if not).
        let first = unsafe { &*(reply.as_ptr() as *const ICMP_ECHO_REPLY) };
        let status = if count == 0 { last_error } else { first.Status };
        let from = IpAddr::V4(Ipv4Addr::from(first.Address.to_ne_bytes()));
        // SAFETY: the handle came from IcmpCreateFile.
        unsafe { IcmpCloseHandle(handle) };
        match status {
            IP_SUCCESS => Probe::EchoReplied,
            IP_TTL_EXPIRED_TRANSIT => Probe::Router(from),
            IP_DEST_NET_UNREACHABLE
            | IP_DEST_HOST_UNREACHABLE
            | IP_DEST_PROHIBITED
            | IP_DEST_PORT_UNREACHABLE
                if !from.is_unspecified() =>
            {
                Probe::Rejected(from)
            }
            IP_REQ_TIMED_OUT => Probe::Silent,
            other => {
                tracing::debug!("path probe TTL {ttl}: IcmpSendEcho2 status {other}");
                Probe::Failed
            }
        }
    }
}
