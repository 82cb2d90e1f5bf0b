//! A bound on how long a frame may stay half-received.
//!
//! TCP keepalive notices a peer whose host is gone; it cannot notice one
//! that is alive but sent the start of a frame and stopped (a crashed
//! writer, a stuck proxy, a slowloris). Once the first byte of a frame has
//! arrived, the rest must follow within the frame timeout.

use futures::Stream;
use rsh_proto::{Codec, CodecError, Frame};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncRead;
use tokio::time::{Instant, Sleep};
use tokio_util::codec::FramedRead;

/// What the bounded reader yields besides frames.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The frame could not be decoded, or the transport failed.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// A frame was started and not finished in time.
    #[error("a frame stayed half-received for more than {0:?}")]
    HalfFrame(Duration),
}

/// Frames from `R`, failing with [`ReadError::HalfFrame`] when a frame's
/// bytes stop coming part-way.
pub struct BoundedFrames<R> {
    inner: FramedRead<R, Codec>,
    limit: Duration,
    /// Armed while part of a frame is buffered.
    deadline: Option<Pin<Box<Sleep>>>,
}

impl<R: AsyncRead + Unpin> BoundedFrames<R> {
    /// Reads frames from `inner`; a started frame must be whole within
    /// `limit`.
    pub fn new(inner: FramedRead<R, Codec>, limit: Duration) -> Self {
        BoundedFrames {
            inner,
            limit,
            deadline: None,
        }
    }
}

impl<R: AsyncRead + Unpin> Stream for BoundedFrames<R> {
    type Item = Result<Frame, ReadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Ready(item) => {
                this.deadline = None;
                Poll::Ready(item.map(|result| result.map_err(ReadError::from)))
            }
            Poll::Pending => {
                if this.inner.read_buffer().is_empty() {
                    this.deadline = None;
                    return Poll::Pending;
                }
                let limit = this.limit;
                let deadline = this.deadline.get_or_insert_with(|| {
                    Box::pin(tokio::time::sleep_until(Instant::now() + limit))
                });
                match deadline.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        this.deadline = None;
                        Poll::Ready(Some(Err(ReadError::HalfFrame(limit))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;
    use tokio::io::AsyncWriteExt;

    #[tokio::test(start_paused = true)]
    async fn a_half_frame_times_out_and_whole_frames_do_not() {
        let (mut peer, ours) = tokio::io::duplex(1024);
        let mut frames =
            BoundedFrames::new(FramedRead::new(ours, Codec::new()), Duration::from_secs(30));
        let mut encoded = bytes::BytesMut::new();
        tokio_util::codec::Encoder::encode(
            &mut Codec::new(),
            Frame::StdinEnd { channel: 1 },
            &mut encoded,
        )
        .expect("encode");
        // Idle between frames is not bounded here.
        let idle = tokio::time::timeout(Duration::from_secs(3600), frames.next()).await;
        assert!(idle.is_err(), "no frame started, no deadline");
        peer.write_all(&encoded).await.expect("write");
        assert!(matches!(
            frames.next().await,
            Some(Ok(Frame::StdinEnd { channel: 1 }))
        ));
        // Half a frame, then a pause shorter than the limit, then the rest.
        peer.write_all(&encoded[..2]).await.expect("write");
        let early = tokio::time::timeout(Duration::from_secs(20), frames.next()).await;
        assert!(early.is_err(), "within the limit");
        peer.write_all(&encoded[2..]).await.expect("write");
        assert!(matches!(
            frames.next().await,
            Some(Ok(Frame::StdinEnd { channel: 1 }))
        ));
        // Half a frame and nothing more.
        peer.write_all(&encoded[..1]).await.expect("write");
        let started = Instant::now();
        assert!(matches!(
            frames.next().await,
            Some(Err(ReadError::HalfFrame(_)))
        ));
        assert_eq!(started.elapsed(), Duration::from_secs(30));
    }
}
