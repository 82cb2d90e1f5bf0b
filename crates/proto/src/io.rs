//! The two pieces of connection plumbing both peers share, generic over any
//! byte stream (no sockets here): the greeting exchange, and the writer task
//! that turns a queue of frames into as few writes as possible.

use crate::{Codec, CodecError, Frame, Hello, HelloError, HELLO_LEN};
use bytes::{Buf, Bytes, BytesMut};
use std::collections::VecDeque;
use std::io::IoSlice;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
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

/// Sends our greeting (every version this crate speaks), then reads the
/// peer's and returns the version both sides now speak: the highest one both
/// greetings name. Use it for a [`Codec::with_version`].
///
/// Both sides send first, so each learns the other's versions from the
/// greeting it receives, and a mismatch is seen by both.
///
/// # Errors
/// See [`GreetError`].
pub async fn greet<S>(stream: &mut S, timeout: Duration) -> Result<u16, GreetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    greet_as(stream, timeout, Hello::current()).await
}

/// [`greet`] announcing `ours` instead of every version this crate speaks
/// (a peer pinned to an older version, a test).
///
/// # Errors
/// See [`GreetError`].
pub async fn greet_as<S>(stream: &mut S, timeout: Duration, ours: Hello) -> Result<u16, GreetError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(&ours.encode()).await?;
    stream.flush().await?;
    let mut hello = [0u8; HELLO_LEN];
    tokio::time::timeout(timeout, stream.read_exact(&mut hello))
        .await
        .map_err(|_| GreetError::Timeout(timeout))??;
    Ok(ours.negotiate(Hello::decode(&hello)?)?)
}

/// Writes queued frames with `codec` (of the negotiated version) until every
/// sender is gone (then flushes and shuts the write side down) or `abort` is
/// cancelled. Whatever is queued when the writer wakes is gathered into one
/// vectored write; large data payloads are written from their own buffers,
/// never copied.
///
/// # Errors
/// A transport error, or a frame the codec refuses.
pub async fn write_frames<W>(
    mut write_half: W,
    mut frames: mpsc::Receiver<Frame>,
    mut codec: Codec,
    abort: CancellationToken,
) -> Result<(), CodecError>
where
    W: AsyncWrite + Unpin,
{
    let mut batch = Batch::default();
    loop {
        let next = tokio::select! {
            frame = frames.recv() => frame,
            () = abort.cancelled() => return Ok(()),
        };
        let Some(frame) = next else {
            break;
        };
        batch.push(&mut codec, frame)?;
        while batch.len < WRITE_BATCH {
            match frames.try_recv() {
                Ok(frame) => batch.push(&mut codec, frame)?,
                Err(_) => break,
            }
        }
        batch.seal();
        tokio::select! {
            result = async {
                batch.write_to(&mut write_half).await?;
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

/// Payloads smaller than this are copied next to their header: one slice
/// beats two for small frames.
const COPY_BELOW: usize = 4096;
/// Slices handed to one `writev`.
const MAX_SLICES: usize = 64;

/// Encoded frames waiting to be written, as a list of buffers.
#[derive(Default)]
struct Batch {
    /// Headers and small frames being gathered.
    open: BytesMut,
    segments: VecDeque<Bytes>,
    len: usize,
}

impl Batch {
    fn push(&mut self, codec: &mut Codec, frame: Frame) -> Result<(), CodecError> {
        let before = self.open.len();
        let payload = codec.encode_vectored(frame, &mut self.open, COPY_BELOW)?;
        self.len += self.open.len() - before;
        if let Some(payload) = payload {
            self.seal();
            self.len += payload.len();
            self.segments.push_back(payload);
        }
        Ok(())
    }

    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.segments.push_back(self.open.split().freeze());
        }
    }

    async fn write_to<W: AsyncWrite + Unpin>(&mut self, out: &mut W) -> std::io::Result<()> {
        while !self.segments.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .segments
                .iter()
                .take(MAX_SLICES)
                .map(|segment| IoSlice::new(segment))
                .collect();
            let mut written = out.write_vectored(&slices).await?;
            if written == 0 {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            while written > 0 {
                let Some(front) = self.segments.front_mut() else {
                    break;
                };
                if written >= front.len() {
                    written -= front.len();
                    self.segments.pop_front();
                } else {
                    front.advance(written);
                    written = 0;
                }
            }
        }
        self.len = 0;
        Ok(())
    }
}

/// Buffers that data chunks are cut from, each reused once every chunk cut
/// from it has been written and dropped.
///
/// A fresh allocation per chunk costs more than the copy it avoids: the
/// allocator hands big blocks back to the kernel and faults them in again.
/// A few recycled blocks keep memory flat however much data flows.
#[derive(Debug)]
pub struct ChunkBuffers {
    ring: Vec<BytesMut>,
    current: usize,
    block: usize,
    max_blocks: usize,
}

impl ChunkBuffers {
    /// Up to `max_blocks` blocks of `block` bytes, allocated as needed.
    pub fn new(block: usize, max_blocks: usize) -> Self {
        ChunkBuffers {
            ring: Vec::new(),
            current: 0,
            block,
            max_blocks: max_blocks.max(1),
        }
    }

    /// A buffer with room for `want` more bytes (at most the block size):
    /// fill it, then `split().freeze()` the chunk off.
    pub fn room(&mut self, want: usize) -> &mut BytesMut {
        let want = want.min(self.block);
        let fits = |buf: &BytesMut| buf.capacity() - buf.len() >= want;
        if self.ring.get(self.current).is_some_and(fits) {
            return &mut self.ring[self.current];
        }
        // A block whose chunks are all gone can be taken back whole.
        let len = self.ring.len();
        for step in 1..=len {
            let index = (self.current + step) % len;
            if self.ring[index].try_reclaim(want) {
                self.current = index;
                return &mut self.ring[index];
            }
        }
        if len < self.max_blocks {
            self.ring.push(BytesMut::with_capacity(self.block));
            self.current = len;
        } else {
            // All blocks still in flight: start a new one; the old one is
            // freed when its last chunk is.
            self.current = (self.current + 1) % len;
            self.ring[self.current] = BytesMut::with_capacity(self.block);
        }
        &mut self.ring[self.current]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BufMut;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    /// Both ends greet at once over an in-memory pipe; returns both results.
    fn greet_pair(a: Hello, b: Hello) -> (Result<u16, GreetError>, Result<u16, GreetError>) {
        runtime().block_on(async {
            let (mut x, mut y) = tokio::io::duplex(64);
            let limit = Duration::from_secs(5);
            tokio::join!(greet_as(&mut x, limit, a), greet_as(&mut y, limit, b))
        })
    }

    #[test]
    fn greeting_negotiates_the_same_version_on_both_sides() {
        let (a, b) = greet_pair(Hello::current(), Hello::current());
        assert_eq!((a.ok(), b.ok()), (Some(3), Some(3)));
        let (a, b) = greet_pair(Hello::current(), Hello::only(1));
        assert_eq!((a.ok(), b.ok()), (Some(1), Some(1)));
        let (a, b) = greet_pair(Hello::current(), Hello::only(4));
        assert!(matches!(
            a,
            Err(GreetError::Hello(HelloError::VersionMismatch { .. }))
        ));
        assert!(b.is_err(), "the other side sees it too");
    }

    #[test]
    fn a_version_1_peer_reads_our_greeting_as_version_1() {
        // What a version-1 peer checks: magic, then bytes 4..6 == 1.
        let ours = Hello::current().encode();
        assert_eq!(&ours[..6], b"RSH\0\x00\x01");
    }

    /// One chunk the way a pump cuts it: room, fill, split.
    fn cut(buffers: &mut ChunkBuffers, byte: u8) -> (usize, Bytes) {
        let buf = buffers.room(512);
        let at = buf.as_ptr() as usize;
        buf.put_slice(&[byte; 512]);
        (at, buf.split().freeze())
    }

    #[test]
    fn blocks_are_reused_once_their_chunks_are_dropped() {
        let mut buffers = ChunkBuffers::new(1024, 2);
        let (first, a) = cut(&mut buffers, 1);
        let (_, b) = cut(&mut buffers, 2);
        // The first block is full and its chunks alive: a second block.
        let (second, c) = cut(&mut buffers, 3);
        assert!(!(first..first + 1024).contains(&second));
        drop((a, b));
        let (_, d) = cut(&mut buffers, 4);
        // Second block full again; the first one is free, so it comes back.
        let (reused, e) = cut(&mut buffers, 5);
        assert!(
            (first..first + 1024).contains(&reused),
            "first block reclaimed"
        );
        assert_eq!(buffers.ring.len(), 2, "no third block");
        for (chunk, byte) in [(&c, 3u8), (&d, 4), (&e, 5)] {
            assert!(chunk.len() == 512 && chunk.iter().all(|&x| x == byte));
        }
    }
}
