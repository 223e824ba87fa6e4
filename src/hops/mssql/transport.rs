//! A TDS connection of dtcprobe's own (beside tiberius's): the TLS handshake inside PRELOGIN
//! packets (TDS 7.x) or first on the connection (TDS 8), and TDS messages written and read
//! through it, with the client PRELOGIN. Used by `tx_enlist`'s session and by the `login` hop's
//! certificate handshake, which brings its own rustls connection (one that records the chain).

use std::io::{self, Read, Write};
use std::sync::Arc;

use dtcprobe_wire::tds::packet::{packetize, PacketHeader, HEADER_LEN, PKT_PRELOGIN, PKT_REPLY};
use dtcprobe_wire::tds::prelogin::{
    encode_prelogin, encode_version, PL_ENCRYPTION, PL_INSTOPT, PL_MARS, PL_THREADID, PL_VERSION,
};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::hops::mssql::classify::Failure;
use crate::hops::mssql::spec::{Encrypt, MssqlTarget};

/// The ALPN protocol a TDS 8 client offers (MS-TDS 2.2.1.3; what SQL Server 2022 selects).
pub const TDS8_ALPN: &[u8] = b"tds/8.0";

/// A reply larger than this is not what any request of this hop produces.
const MAX_REPLY: usize = 4 << 20;

fn closed(e: io::Error) -> Failure {
    match e.kind() {
        io::ErrorKind::InvalidData => Failure::Protocol(e.to_string()),
        _ => Failure::Closed(e.to_string()),
    }
}

/// The connection under a session: TCP, TLS once negotiated, and TDS packets through them.
pub struct Transport {
    tcp: TcpStream,
    tls: Option<rustls::ClientConnection>,
    packet_id: u8,
    /// The packet size in force (the server's ENVCHANGE 4 changes it after LOGIN7).
    pub packet_size: usize,
}

impl Transport {
    pub fn new(tcp: TcpStream, packet_size: usize) -> Transport {
        Transport {
            tcp,
            tls: None,
            packet_id: 0,
            packet_size,
        }
    }

    /// Drops TLS without a close_notify: "login only" encryption, where only LOGIN7 travels
    /// encrypted and the server answers in the clear.
    pub fn end_tls(&mut self) {
        self.tls = None;
    }

    /// Ends TLS (close_notify) and the TCP connection.
    pub async fn close(mut self) {
        if let Some(tls) = &mut self.tls {
            tls.send_close_notify();
            let _ = self.flush_tls().await;
        }
        let _ = self.tcp.shutdown().await;
    }

    /// rustls for this target: ALPN `tds/8.0` and a validated certificate under strict.
    pub fn tls_client(t: &MssqlTarget) -> Result<rustls::ClientConnection, Failure> {
        let strict = t.encrypt == Encrypt::Strict;
        let mut config = client_tls_config(t.trust_server_certificate && !strict)?;
        if strict {
            config.alpn_protocols = vec![TDS8_ALPN.to_vec()];
        }
        let name = ServerName::try_from(t.host.clone())
            .map_err(|e| Failure::Tls(format!("the host name is not usable for TLS: {e}")))?;
        rustls::ClientConnection::new(Arc::new(config), name)
            .map_err(|e| Failure::Tls(e.to_string()))
    }

    /// TDS 8: the TLS handshake straight on TCP, before any TDS packet. What comes back
    /// instead of TLS tells a TDS 7 server (a TDS packet, or a hang-up) from TLS trouble.
    pub async fn tls_first_handshake(
        &mut self,
        mut tls: rustls::ClientConnection,
    ) -> Result<(), Failure> {
        let mut received = 0usize;
        let mut buf = vec![0u8; 16 * 1024];
        // Bounded: a TLS 1.3 handshake is one round trip, 1.2 two; a certificate chain can
        // take a few TCP reads. The hop's timeout stops a server that sends nothing.
        for _ in 0..64 {
            if tls.wants_write() {
                let mut out = Vec::new();
                while tls.wants_write() {
                    tls.write_tls(&mut out)
                        .map_err(|e| Failure::Tls(e.to_string()))?;
                }
                self.tcp
                    .write_all(&out)
                    .await
                    .map_err(|e| no_tls_first_or(received, e, "while sending the TLS handshake"))?;
                continue;
            }
            if !tls.is_handshaking() {
                self.tls = Some(tls);
                return Ok(());
            }
            let k = match self.tcp.read(&mut buf).await {
                Ok(0) => {
                    return Err(no_tls_first_or(
                        received,
                        io::ErrorKind::UnexpectedEof.into(),
                        "the server closed the connection",
                    ))
                }
                Ok(k) => k,
                Err(e) => return Err(no_tls_first_or(received, e, "the connection failed")),
            };
            if received == 0 {
                if let Some(what) = tds_instead_of_tls(&buf[..k]) {
                    return Err(Failure::NoTlsFirst(format!(
                        "the server answered the TLS ClientHello with {what}"
                    )));
                }
            }
            received += k;
            feed_handshake(&mut tls, &buf[..k])?;
        }
        Err(Failure::Protocol(
            "the TLS handshake does not finish".into(),
        ))
    }

    /// TDS 7.x: the TLS handshake carried in PRELOGIN packets, after the PRELOGIN exchange.
    pub async fn tls_handshake(
        &mut self,
        mut tls: rustls::ClientConnection,
    ) -> Result<(), Failure> {
        // The handshake travels inside PRELOGIN packets (MS-TDS 2.2.6.5 / 3.2.5.2); bounded:
        // a TLS 1.2 handshake takes two round trips.
        for _ in 0..16 {
            // Flush first: a TLS 1.3 client Finished is queued when the handshake already
            // counts as done, and still belongs in a PRELOGIN packet.
            if tls.wants_write() {
                let mut out = Vec::new();
                while tls.wants_write() {
                    tls.write_tls(&mut out)
                        .map_err(|e| Failure::Tls(e.to_string()))?;
                }
                self.write_message(PKT_PRELOGIN, &out).await?;
                continue;
            }
            if !tls.is_handshaking() {
                self.tls = Some(tls);
                return Ok(());
            }
            let (_, payload) = self.read_message().await.map_err(|f| match f {
                Failure::Closed(m) => Failure::TlsReset(m),
                other => other,
            })?;
            feed_handshake(&mut tls, &payload)?;
        }
        Err(Failure::Protocol(
            "the TLS handshake does not finish".into(),
        ))
    }

    pub async fn write_message(&mut self, ty: u8, payload: &[u8]) -> Result<(), Failure> {
        let bytes = packetize(ty, payload, self.packet_size, &mut self.packet_id);
        match &mut self.tls {
            None => self.tcp.write_all(&bytes).await.map_err(closed),
            Some(tls) => {
                tls.writer().write_all(&bytes).map_err(closed)?;
                self.flush_tls().await.map_err(closed)
            }
        }
    }

    pub async fn flush_tls(&mut self) -> io::Result<()> {
        if let Some(tls) = &mut self.tls {
            let mut out = Vec::new();
            while tls.wants_write() {
                tls.write_tls(&mut out)?;
            }
            if !out.is_empty() {
                self.tcp.write_all(&out).await?;
            }
        }
        Ok(())
    }

    pub async fn read_exact(&mut self, n: usize) -> Result<Vec<u8>, Failure> {
        let mut out = vec![0u8; n];
        if self.tls.is_none() {
            self.tcp.read_exact(&mut out).await.map_err(closed)?;
            return Ok(out);
        }
        let mut got = 0;
        // Bounded by the data: every turn either reads plaintext or consumes network bytes, and
        // the hop's own timeout stops a server that sends nothing.
        while got < n {
            let Some(tls) = self.tls.as_mut() else {
                return Err(Failure::Protocol("TLS state lost".into()));
            };
            match tls.reader().read(&mut out[got..]) {
                Ok(0) => return Err(Failure::Closed("TLS session closed by the server".into())),
                Ok(k) => {
                    got += k;
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(closed(e)),
            }
            let mut buf = vec![0u8; 16 * 1024];
            let k = self.tcp.read(&mut buf).await.map_err(closed)?;
            if k == 0 {
                return Err(Failure::Closed("the server closed the connection".into()));
            }
            let mut data = &buf[..k];
            while !data.is_empty() {
                tls.read_tls(&mut data).map_err(closed)?;
                tls.process_new_packets()
                    .map_err(|e| Failure::Tls(e.to_string()))?;
            }
        }
        Ok(out)
    }

    pub async fn read_message(&mut self) -> Result<(u8, Vec<u8>), Failure> {
        let mut payload = Vec::new();
        loop {
            let h = self.read_exact(HEADER_LEN).await?;
            let h = PacketHeader::parse(&h)
                .ok_or_else(|| Failure::Protocol("short packet header".into()))?;
            let len = h
                .payload_len()
                .ok_or_else(|| Failure::Protocol("a packet shorter than its header".into()))?;
            payload.extend(self.read_exact(len).await?);
            if payload.len() > MAX_REPLY {
                return Err(Failure::Protocol("reply larger than 4 MiB".into()));
            }
            if h.is_eom() {
                return Ok((h.packet_type, payload));
            }
        }
    }
}

/// A client's PRELOGIN payload: version 0.1, the encryption byte, the instance asked for (empty:
/// any), this process as the thread id, no MARS. Also sent by the `login` hop's certificate
/// handshake ([`crate::hops::mssql::certificate`]).
pub fn client_prelogin(instance: Option<&str>, encryption: u8) -> Vec<u8> {
    let mut instance = instance.unwrap_or_default().as_bytes().to_vec();
    instance.push(0);
    encode_prelogin(&[
        (PL_VERSION, &encode_version(0, 1, 0, 0)),
        (PL_ENCRYPTION, &[encryption]),
        (PL_INSTOPT, &instance),
        (PL_THREADID, &std::process::id().to_le_bytes()),
        (PL_MARS, &[0]),
    ])
}

/// A hang-up during the TLS-first handshake: before the server sent a byte, the sign of a
/// server without TDS 8 (SQL Server before 2022 drops a connection that opens with a
/// ClientHello); after, a TLS handshake the server broke off.
fn no_tls_first_or(received: usize, e: io::Error, what: &str) -> Failure {
    if received == 0 {
        Failure::NoTlsFirst(format!("{what} before answering the TLS ClientHello ({e})"))
    } else {
        Failure::TlsReset(format!("{what} during the TLS handshake ({e})"))
    }
}

/// What the server's first bytes are when they are TDS rather than a TLS record: a TDS 7
/// server reading the ClientHello as a (bad) PRELOGIN and answering it. Pure.
fn tds_instead_of_tls(first: &[u8]) -> Option<&'static str> {
    let is_tls_record = first.len() >= 2 && (0x14..=0x17).contains(&first[0]) && first[1] == 0x03;
    if is_tls_record {
        return None;
    }
    let header = PacketHeader::parse(first)?;
    let plausible = header.payload_len().is_some() && header.status & !0x1F == 0;
    match header.packet_type {
        PKT_REPLY if plausible => Some("a TDS 7 reply packet (a PRELOGIN answer in the clear)"),
        _ => None,
    }
}

/// rustls for the login: this host's trust store, or (trust_server_certificate) any
/// certificate, as Microsoft's drivers do with TrustServerCertificate=yes (the signature of the
/// handshake is still checked).
fn client_tls_config(trust_any: bool) -> Result<rustls::ClientConfig, Failure> {
    let trust = if trust_any {
        crate::tls::Trust::AnyCertificate
    } else {
        crate::tls::Trust::SystemRoots
    };
    crate::tls::client_config(&trust).map_err(|e| Failure::Tls(e.to_string()))
}

/// Hands the server's handshake bytes to rustls, record by record.
fn feed_handshake(tls: &mut rustls::ClientConnection, mut data: &[u8]) -> Result<(), Failure> {
    while !data.is_empty() {
        tls.read_tls(&mut data)
            .map_err(|e| Failure::Tls(e.to_string()))?;
        tls.process_new_packets()
            .map_err(|e| Failure::Tls(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tds_reply_instead_of_tls_is_recognised() {
        // A PRELOGIN answer packet: type 4, EOM, length 0x002F.
        let reply = [0x04, 0x01, 0x00, 0x2F, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00];
        assert!(tds_instead_of_tls(&reply).is_some());
        // TLS records (ServerHello, alert) are TLS.
        assert_eq!(tds_instead_of_tls(&[0x16, 0x03, 0x03, 0x00, 0x5A, 2]), None);
        assert_eq!(
            tds_instead_of_tls(&[0x15, 0x03, 0x03, 0x00, 0x02, 2, 40]),
            None
        );
        // Too short to tell, or text: left to rustls, which calls it corrupt.
        assert_eq!(tds_instead_of_tls(&[0x04, 0x01]), None);
        assert_eq!(tds_instead_of_tls(b"HTTP/1.1 400 Bad Request"), None);
        // A header whose length is shorter than a header is not a packet.
        assert_eq!(
            tds_instead_of_tls(&[0x04, 0x01, 0x00, 0x02, 0, 0, 0, 0]),
            None
        );
    }
}
