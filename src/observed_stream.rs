//! A stream that passes every read and write through unchanged and shows the bytes to an
//! [`Observer`]. Three places watch a connection this way: the agent marks a connection as no
//! longer silent on its first byte (`agent::fair_share`), the PostgreSQL login notes when data
//! arrived for its phase breakdown (`hops::postgres::phases`) and the SQL Server login copies
//! the server's bytes and notes each read and write (`hops::mssql::sniff`). Each supplies only
//! its observer; the AsyncRead/AsyncWrite pass-through is written once, here.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What is told about the bytes an [`ObservedStream`] moves. Called only with bytes that
/// actually moved (never with an empty slice), after the inner stream moved them.
pub trait Observer {
    /// A read brought `bytes`.
    fn on_read(&mut self, bytes: &[u8]);
    /// A write sent `bytes` (the part of the caller's buffer the inner stream took).
    fn on_write(&mut self, _bytes: &[u8]) {}
}

/// `inner`, with `observer` told of every read and write.
#[derive(Debug)]
pub struct ObservedStream<S, O> {
    inner: S,
    observer: O,
}

impl<S, O> ObservedStream<S, O> {
    pub fn new(inner: S, observer: O) -> ObservedStream<S, O> {
        ObservedStream { inner, observer }
    }

    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin, O: Observer + Unpin> AsyncRead for ObservedStream<S, O> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            this.observer.on_read(new);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin, O: Observer + Unpin> AsyncWrite for ObservedStream<S, O> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = &polled {
            if *n > 0 {
                this.observer.on_write(&buf[..*n]);
            }
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Each call the observer got: (a write?, its bytes).
    type Calls = Vec<(bool, Vec<u8>)>;

    #[derive(Default, Clone)]
    struct Log(Arc<Mutex<Calls>>);

    impl Observer for Log {
        fn on_read(&mut self, bytes: &[u8]) {
            self.0.lock().unwrap().push((false, bytes.to_vec()));
        }
        fn on_write(&mut self, bytes: &[u8]) {
            self.0.lock().unwrap().push((true, bytes.to_vec()));
        }
    }

    #[tokio::test]
    async fn bytes_pass_through_unchanged_and_the_observer_sees_each_way() {
        let (near, mut far) = tokio::io::duplex(64);
        let log = Log::default();
        let mut stream = ObservedStream::new(near, log.clone());

        stream.write_all(b"ping").await.unwrap();
        stream.flush().await.unwrap();
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"ping");

        far.write_all(b"pong").await.unwrap();
        let mut got = [0u8; 4];
        stream.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"pong");

        // The far side closes: the read that returns nothing is not reported.
        drop(far);
        assert_eq!(stream.read(&mut got).await.unwrap(), 0);

        let seen = log.0.lock().unwrap().clone();
        let written: Vec<u8> = seen
            .iter()
            .filter(|(w, _)| *w)
            .flat_map(|(_, b)| b.clone())
            .collect();
        let read: Vec<u8> = seen
            .iter()
            .filter(|(w, _)| !*w)
            .flat_map(|(_, b)| b.clone())
            .collect();
        assert_eq!(written, b"ping");
        assert_eq!(read, b"pong");
        assert!(seen.iter().all(|(_, b)| !b.is_empty()), "{seen:?}");
    }
}
