//! The two pieces of connection plumbing both peers share, generic over any
//! byte stream (no sockets here): the greeting exchange, and the writer task
//! that turns a queue of frames into as few writes as possible.

use crate::{Codec, CodecError, Frame, Hello, HelloError, HELLO_LEN};
use bytes::BytesMut;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_util::codec::Encoder;
use tokio_util::sync::CancellationToken;

/// Bytes the writer gathers from the queue before writing.
const WRITE_BATCH: usize = 256 * 1024;

/// Why the greeting exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum GreetError {
    /// The peer sent no greeting in time.
    #[error("no greeting from the peer within {0:?}")]
    Timeout(Duration),
    /// The peer's greeting was wrong.
    #[error(transparent)]
    Hello(#[from] HelloError),
    /// The transport failed (or closed before the greeting).
    #[error("connection failed during the greeting: {0}")]
    Io(#[from] std::io::Error),
}

/// Sends our greeting, then reads and checks the peer's.
///
/// Both sides send first, so a version mismatch is seen by both: each learns
/// the other's version from the greeting it receives.
///
/// # Errors
/// See [`GreetError`].
pub async fn greet<S>(stream: &mut S, timeout: Duration) -> Result<(), GreetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&Hello::current().encode()).await?;
    stream.flush().await?;
    let mut hello = [0u8; HELLO_LEN];
    tokio::time::timeout(timeout, stream.read_exact(&mut hello))
        .await
        .map_err(|_| GreetError::Timeout(timeout))??;
    Hello::decode(&hello)?.check_version()?;
    Ok(())
}

/// Writes queued frames until every sender is gone (then flushes and shuts
/// the write side down) or `abort` is cancelled. Whatever is queued when the
/// writer wakes is gathered into one write.
///
/// # Errors
/// A transport error, or a frame the codec refuses.
pub async fn write_frames<W>(
    mut write_half: W,
    mut frames: mpsc::Receiver<Frame>,
    abort: CancellationToken,
) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin,
{
    let mut codec = Codec::new();
    let mut buf = BytesMut::with_capacity(WRITE_BATCH);
    loop {
        let next = tokio::select! {
            frame = frames.recv() => frame,
            () = abort.cancelled() => return Ok(()),
        };
        let Some(frame) = next else {
            break;
        };
        codec.encode(frame, &mut buf)?;
        while buf.len() < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => codec.encode(frame, &mut buf)?,
                Err(_) => break,
            }
        }
        tokio::select! {
            result = async {
                write_half.write_all_buf(&mut buf).await?;
                // TLS streams hold records until flushed.
                write_half.flush().await
            } => result?,
            () = abort.cancelled() => return Ok(()),
        }
    }
    write_half.flush().await?;
    write_half.shutdown().await?;
    Ok(())
}
