//! Async frame I/O with deadlines: the only part of the agent protocol that touches a socket,
//! and only to wrap the pure codec ([`super::frame`]).

use std::time::Duration;

use thiserror::Error;

use super::frame::{decode_payload, encode_frame, frame_len, FrameError};
use super::messages::Message;

#[derive(Debug, Error)]
pub enum IoFrameError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("peer closed the connection")]
    Closed,
    #[error("no complete frame within {0:?}")]
    Timeout(Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Reads one frame. The whole frame (prefix and payload) must arrive within `deadline`, which
/// drops slow or silent peers; the length is checked before the payload buffer is allocated.
pub async fn read_frame<R>(reader: &mut R, deadline: Duration) -> Result<Message, IoFrameError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    use tokio::io::AsyncReadExt;
    let read = async {
        let mut prefix = [0u8; 4];
        match reader.read_exact(&mut prefix).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(IoFrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        let len = frame_len(prefix)?;
        let mut payload = vec![0u8; len];
        match reader.read_exact(&mut payload).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                return Err(IoFrameError::Closed)
            }
            Err(e) => return Err(e.into()),
        }
        Ok(decode_payload(&payload)?)
    };
    tokio::time::timeout(deadline, read)
        .await
        .unwrap_or(Err(IoFrameError::Timeout(deadline)))
}

pub async fn write_frame<W>(
    writer: &mut W,
    msg: &Message,
    deadline: Duration,
) -> Result<(), IoFrameError>
where
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let frame = encode_frame(msg)?;
    let write = async {
        writer.write_all(&frame).await?;
        writer.flush().await?;
        Ok(())
    };
    tokio::time::timeout(deadline, write)
        .await
        .unwrap_or(Err(IoFrameError::Timeout(deadline)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reader_rejects_oversize_before_reading_payload_and_drops_silent_peers() {
        // Oversize prefix, no payload behind it: rejected from the prefix alone.
        let mut data: &[u8] = &[0x7f, 0xff, 0xff, 0xff];
        let err = read_frame(&mut data, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(err, IoFrameError::Frame(FrameError::TooLarge { .. })),
            "{err:?}"
        );

        // A peer that sends half a prefix then nothing is cut off at the deadline.
        let (mut client, mut server) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        client.write_all(&[0, 0]).await.unwrap();
        let started = std::time::Instant::now();
        let err = read_frame(&mut server, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(matches!(err, IoFrameError::Timeout(_)), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        drop(client);

        // Closed mid-frame.
        let mut data: &[u8] = &[0, 0, 0, 10, b'{'];
        assert!(matches!(
            read_frame(&mut data, Duration::from_secs(1)).await,
            Err(IoFrameError::Closed)
        ));
    }
}
