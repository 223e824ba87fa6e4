//! The Linux socket error queue (`IP_RECVERR`): how a TCP socket learns which ICMP error answered
//! its SYN and which device sent it, without raw sockets or privileges. Shared by the connect step
//! (ICMP errors that end a connect attempt) and hop `path` (time-exceeded answers to TTL-limited
//! SYNs), which is why it is a module of its own rather than part of either.
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::classify::ConnectOutcome;

const SO_EE_ORIGIN_ICMP: u8 = 2;
const SO_EE_ORIGIN_ICMP6: u8 = 3;

/// Turns on IP(V6)_RECVERR and returns a duplicate of the descriptor, which outlives the
/// socket that `connect` consumes, so the error queue can still be read after a failure.
pub fn enable(socket: &tokio::net::TcpSocket, v6: bool) -> Option<OwnedFd> {
    if !set_recverr(socket, v6) {
        return None;
    }
    let fd = socket.as_raw_fd();
    // SAFETY: dup returns a new descriptor we own, or -1.
    let dup = unsafe { libc::dup(fd) };
    (dup >= 0).then(|| unsafe { OwnedFd::from_raw_fd(dup) })
}

/// `setsockopt(level, name, value)` on `socket`: the one raw socket option call of the hops
/// (the error queue, a probe's TTL, the reset probe's buffer and filter), for options that
/// neither std nor socket2 sets on these sockets. `T` is the option's C type (a `c_int`, a
/// `sock_fprog`...).
pub fn set_option<T>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> std::io::Result<()> {
    // SAFETY: the descriptor is a valid socket for as long as `socket` is borrowed; the value
    // is a live `T` of the size passed, which the kernel copies during the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Turns on IP(V6)_RECVERR on `socket`; false (logged) when the kernel refuses.
pub fn set_recverr(socket: &impl AsRawFd, v6: bool) -> bool {
    let fd = socket.as_raw_fd();
    let on: libc::c_int = 1;
    let (level, name) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    if let Err(e) = set_option(&fd, level, name, &on) {
        tracing::debug!("cannot enable the ICMP error queue: {e}");
        return false;
    }
    true
}

/// Reads one queued ICMP error, if any, without blocking; `target` is the address the socket
/// connected to, to tell "the target answered" from "a router answered".
pub fn read(fd: &impl AsRawFd, target: std::net::IpAddr) -> Option<ConnectOutcome> {
    let queued = read_queued(fd, target.is_ipv6())?;
    Some(ConnectOutcome::Icmp {
        v6: queued.v6,
        icmp_type: queued.icmp_type,
        code: queued.code,
        from: queued.offender,
        by_target: queued.offender == Some(target),
    })
}

/// One ICMP error from a socket's error queue.
#[derive(Debug, Clone, Copy)]
pub struct QueuedIcmp {
    pub v6: bool,
    pub icmp_type: u8,
    pub code: u8,
    /// The device that sent it (`SO_EE_OFFENDER`).
    pub offender: Option<std::net::IpAddr>,
}

/// Reads one queued ICMP error, if any, without blocking. Shared with the `path` trace,
/// which reads time-exceeded errors the same way.
pub fn read_queued(fd: &impl AsRawFd, v6: bool) -> Option<QueuedIcmp> {
    let mut control = [0u8; 512];
    let mut data = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: zeroed msghdr is valid; the pointers below outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr() as *mut libc::c_void;
    msg.msg_controllen = control.len() as _;
    // SAFETY: valid fd and msghdr.
    let n = unsafe {
        libc::recvmsg(
            fd.as_raw_fd(),
            &mut msg,
            libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        // No ICMP error queued: the failure came from elsewhere (a reset, a local error).
        return None;
    }
    let (level, kind) = if v6 {
        (libc::SOL_IPV6, libc::IPV6_RECVERR)
    } else {
        (libc::SOL_IP, libc::IP_RECVERR)
    };
    // SAFETY: CMSG_* walk the control buffer the kernel just filled, within msg_controllen.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == level && (*cmsg).cmsg_type == kind {
                let ee = std::ptr::read_unaligned(
                    libc::CMSG_DATA(cmsg) as *const libc::sock_extended_err
                );
                if ee.ee_origin == SO_EE_ORIGIN_ICMP || ee.ee_origin == SO_EE_ORIGIN_ICMP6 {
                    // SO_EE_OFFENDER: a sockaddr right after the extended error, in the
                    // same control message.
                    let after = (libc::CMSG_DATA(cmsg) as *const u8)
                        .add(std::mem::size_of::<libc::sock_extended_err>());
                    return Some(QueuedIcmp {
                        v6: ee.ee_origin == SO_EE_ORIGIN_ICMP6,
                        icmp_type: ee.ee_type,
                        code: ee.ee_code,
                        offender: offender(after),
                    });
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    None
}

/// The offender sockaddr the kernel put after `sock_extended_err` (AF_UNSPEC when unknown).
///
/// # Safety
/// `at` points into a control message the kernel filled for an IP(V6)_RECVERR error, which
/// always has room for a `sockaddr_in6` there.
unsafe fn offender(at: *const u8) -> Option<std::net::IpAddr> {
    let family = std::ptr::read_unaligned(at as *const libc::sockaddr).sa_family as i32;
    match family {
        libc::AF_INET => {
            let sin = std::ptr::read_unaligned(at as *const libc::sockaddr_in);
            Some(std::net::IpAddr::from(
                u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
            ))
        }
        libc::AF_INET6 => {
            let sin6 = std::ptr::read_unaligned(at as *const libc::sockaddr_in6);
            Some(std::net::IpAddr::from(sin6.sin6_addr.s6_addr))
        }
        _ => None,
    }
}
