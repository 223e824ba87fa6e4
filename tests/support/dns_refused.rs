//! A tiny UDP DNS server that answers every query with REFUSED (RCODE 5), echoing the ID and
//! the question: what a real server says to a host outside its ACL. Bound inside a network
//! namespace (on a thread that joined it), stopped on Drop.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::netns::Netns;

pub struct RefusingDns {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Pure: the REFUSED answer to `query` (None when it is not a DNS query at all).
pub fn refused_answer(query: &[u8]) -> Option<Vec<u8>> {
    if query.len() < 12 || query[2] & 0x80 != 0 {
        return None;
    }
    let mut answer = query.to_vec();
    // QR=1, keep opcode and RD; RA=0, RCODE=5 (REFUSED); no answer/authority/additional.
    answer[2] = 0x80 | (query[2] & 0x79);
    answer[3] = 0x05;
    answer[6..12].fill(0);
    // Drop anything after the question (an EDNS OPT record in the additional section).
    let mut end = 12;
    let qdcount = u16::from_be_bytes([query[4], query[5]]);
    for _ in 0..qdcount {
        while end < query.len() && query[end] != 0 {
            end += 1 + query[end] as usize;
        }
        end += 1 + 4;
    }
    answer.truncate(end.min(answer.len()));
    Some(answer)
}

impl RefusingDns {
    pub fn start(ns: &Netns, addr: SocketAddr) -> RefusingDns {
        let ns_path = format!("/run/netns/{}", ns.name);
        let stop = Arc::new(AtomicBool::new(false));
        let stop_thread = stop.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let handle = std::thread::spawn(move || {
            let f = std::fs::File::open(&ns_path).expect("open netns");
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
            let socket = match UdpSocket::bind(addr) {
                Ok(s) => s,
                Err(e) => {
                    tx.send(Err(e)).unwrap();
                    return;
                }
            };
            socket
                .set_read_timeout(Some(Duration::from_millis(50)))
                .unwrap();
            tx.send(Ok(())).unwrap();
            let mut buf = [0u8; 1500];
            while !stop_thread.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if let Some(answer) = refused_answer(&buf[..n]) {
                        let _ = socket.send_to(&answer, from);
                    }
                }
            }
        });
        rx.recv()
            .unwrap()
            .unwrap_or_else(|e| panic!("bind DNS on {addr} in {}: {e}", ns.name));
        RefusingDns {
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for RefusingDns {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
