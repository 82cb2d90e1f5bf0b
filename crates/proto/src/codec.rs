//! The length-prefixed frame codec.
//!
//! Wire layout of a frame (all integers big-endian):
//! `len: u32` (bytes that follow) · `type: u8` · `channel: u32` · payload.
//! The layout of each payload is in `docs/PROTOCOL.md`, section 5.

use crate::frame::{
    ErrorKind, Exec, ExitStatus, Frame, FrameType, PtyRequest, PtySize, EXTENSION_TYPES,
};
use crate::{MAX_FRAME_LEN, VERSION};
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::time::Duration;
use tokio_util::codec::{Decoder, Encoder};

/// Bytes of the length prefix.
const LEN_PREFIX: usize = 4;
/// Bytes of type + channel, present in every frame body.
const BODY_HEADER: usize = 5;

/// Why bytes could not be turned into a frame, or a frame into bytes.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix announces more than the frame limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    FrameTooLarge {
        /// Announced body length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The length prefix is too small to hold a type and a channel.
    #[error("frame of {0} bytes is shorter than its 5-byte header")]
    FrameTooShort(usize),
    /// The type byte names no frame of the connection's version (outside the
    /// extension range, which version 2 skips).
    #[error("unknown frame type 0x{0:02x}")]
    UnknownType(u8),
    /// The frame (or the Exec's options) does not exist in the version the
    /// codec speaks, so it cannot be sent.
    #[error("a {frame:?} frame like this needs protocol version {needs}; the connection speaks version {version}")]
    NotInVersion {
        /// The frame's type.
        frame: FrameType,
        /// The version it needs.
        needs: u16,
        /// The version the codec speaks.
        version: u16,
    },
    /// The body does not match its type's layout.
    #[error("malformed {frame:?} frame: {reason}")]
    Malformed {
        /// Which frame type was being read.
        frame: FrameType,
        /// What was wrong.
        reason: &'static str,
    },
    /// The transport failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Encodes and decodes [`Frame`]s of one protocol version, refusing any
/// frame body over the limit before reserving memory for it.
///
/// The version decides the Exec layout, which frame types exist (Ping and
/// Pong from version 3), and what an unknown type does: fatal in version 1;
/// from version 2 a type in [`EXTENSION_TYPES`] decodes as
/// [`Frame::Unknown`] (to be skipped) and any other unknown type is fatal.
///
/// A clone has the same settings and none of the recycled read blocks.
#[derive(Debug)]
pub struct Codec {
    max_frame_len: usize,
    read_block: usize,
    version: u16,
    blocks: ReadBlocks,
}

impl Default for Codec {
    fn default() -> Self {
        Codec {
            max_frame_len: MAX_FRAME_LEN,
            read_block: 0,
            version: VERSION,
            blocks: ReadBlocks::default(),
        }
    }
}

impl Clone for Codec {
    fn clone(&self) -> Self {
        Codec {
            blocks: ReadBlocks::default(),
            ..*self
        }
    }
}

/// Read blocks kept for reuse per decoder: enough for the frames a reader
/// has in flight (a 2 MiB output window, or a 1 MiB stdin window, in 1 MiB
/// blocks) plus the one being filled.
const READ_BLOCKS: usize = 3;
/// Frames this big or bigger move the read buffer into a block.
const BLOCK_FRAMES_FROM: usize = 16 * 1024;
/// A full data frame, prefix included.
const FULL_DATA_FRAME: usize = LEN_PREFIX + BODY_HEADER + crate::MAX_DATA_LEN;
/// Bytes of the next frame, already read, that may be copied to move on to
/// a fresh block as soon as a frame is cut off the current one (rather than
/// once the next frame turns out not to fit, with more of it read).
const EARLY_SWITCH_COPY: usize = 64 * 1024;

/// The recycled blocks a decoder's read buffer moves into when a big frame
/// does not fit where it is.
///
/// Growing the buffer in place cannot reuse memory: the frames decoded from
/// it are still alive (queued for a pipe), so every growth is a fresh
/// allocation that the kernel faults in page by page, and the allocator
/// hands back once the frames are written. Blocks whose frames are all gone
/// are taken back whole instead ([`BytesMut::try_reclaim`]).
#[derive(Debug, Default)]
struct ReadBlocks {
    /// Earlier blocks, possibly still shared with frames in flight.
    spare: Vec<BytesMut>,
    /// Where the block the read buffer is in now starts and ends, to tell it
    /// from a buffer the reader grew on its own.
    current: Option<(usize, usize)>,
    /// Small frames in a row since the last big one.
    small_run: u32,
}

/// Small frames in a row after which bulk data is taken to be over and the
/// blocks are let go (a connection that goes on with small frames keeps no
/// megabytes it no longer needs).
const SMALL_FRAMES_TO_RELEASE: u32 = 64;

impl ReadBlocks {
    /// Moves what `src` holds into a block with room for at least `want`
    /// bytes in all, keeping `src`'s old block for reuse if it was one.
    fn switch(&mut self, src: &mut BytesMut, want: usize, block: usize) {
        let want = want.max(src.len());
        let reused = self
            .spare
            .iter_mut()
            .position(|spare| spare.try_reclaim(want))
            .map(|index| self.spare.swap_remove(index));
        let mut next = reused.unwrap_or_else(|| BytesMut::with_capacity(want.max(block)));
        next.extend_from_slice(src);
        let base = next.as_ptr() as usize;
        let old = std::mem::replace(src, next);
        let old_start = old.as_ptr() as usize;
        let was_block = self
            .current
            .is_some_and(|(start, end)| (start..=end).contains(&old_start));
        self.current = Some((base, base + src.capacity()));
        if was_block && self.spare.len() < READ_BLOCKS {
            let mut old = old;
            old.clear();
            self.spare.push(old);
        }
    }

    fn active(&self) -> bool {
        self.current.is_some()
    }
}

impl Codec {
    /// A codec for the newest version, [`VERSION`], with the protocol's
    /// limit, [`MAX_FRAME_LEN`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A codec with a smaller limit (a larger one would break peers).
    pub fn with_max_frame_len(max_frame_len: usize) -> Self {
        Codec {
            max_frame_len: max_frame_len.min(MAX_FRAME_LEN),
            ..Self::default()
        }
    }

    /// The same codec for protocol `version`, the one the greeting
    /// negotiated (versions above [`VERSION`] are read as [`VERSION`]).
    pub fn with_version(mut self, version: u16) -> Self {
        self.version = version.min(VERSION);
        self
    }

    /// The protocol version this codec reads and writes.
    pub fn version(&self) -> u16 {
        self.version
    }

    /// When a frame does not fit in the read buffer, move the buffer into a
    /// block of at least `bytes` (capped at the frame limit) instead of
    /// growing it: a stream of big data frames then shares a few blocks,
    /// recycled once their frames are dropped, instead of faulting in a
    /// fresh allocation per frame. Frames under 16 KiB take no block, so a
    /// connection that moves no bulk data holds none; one that did keeps up
    /// to four blocks (the one in use and three spare) until 64 small frames
    /// in a row say the bulk data is over.
    pub fn with_read_block(mut self, bytes: usize) -> Self {
        self.read_block = bytes.min(self.max_frame_len + LEN_PREFIX);
        self
    }
}

impl Codec {
    /// Encodes a frame for a vectored write: the payload of a data frame of
    /// at least `copy_below` bytes is returned, uncopied, to be written right
    /// after `dst`; everything else is encoded into `dst`.
    ///
    /// # Errors
    /// [`CodecError::FrameTooLarge`] if the frame exceeds the limit.
    pub fn encode_vectored(
        &mut self,
        frame: Frame,
        dst: &mut BytesMut,
        copy_below: usize,
    ) -> Result<Option<Bytes>, CodecError> {
        let (frame_type, channel, data) = match frame {
            Frame::Stdin { channel, data } if data.len() >= copy_below => {
                (FrameType::Stdin, channel, data)
            }
            Frame::Stdout { channel, data } if data.len() >= copy_below => {
                (FrameType::Stdout, channel, data)
            }
            Frame::Stderr { channel, data } if data.len() >= copy_below => {
                (FrameType::Stderr, channel, data)
            }
            other => return self.encode(other, dst).map(|()| None),
        };
        let len = BODY_HEADER + data.len();
        if len > self.max_frame_len {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        dst.put_u32(len as u32);
        dst.put_u8(frame_type as u8);
        dst.put_u32(channel);
        Ok(Some(data))
    }
}

impl Decoder for Codec {
    type Item = Frame;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let Some(prefix) = src.get(..LEN_PREFIX) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        if len > self.max_frame_len {
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        if len < BODY_HEADER {
            return Err(CodecError::FrameTooShort(len));
        }
        if src.len() < LEN_PREFIX + len {
            // Safe to reserve now: `len` is within the limit.
            if src.capacity() < LEN_PREFIX + len {
                if self.read_block > 0 && (len >= BLOCK_FRAMES_FROM || self.blocks.active()) {
                    self.blocks.switch(src, LEN_PREFIX + len, self.read_block);
                } else {
                    src.reserve(LEN_PREFIX + len - src.len());
                }
            }
            return Ok(None);
        }
        src.advance(LEN_PREFIX);
        let body = src.split_to(len).freeze();
        if self.blocks.active() {
            if len >= BLOCK_FRAMES_FROM {
                self.blocks.small_run = 0;
            } else {
                self.blocks.small_run += 1;
                if self.blocks.small_run >= SMALL_FRAMES_TO_RELEASE && src.is_empty() {
                    // The block goes once its last frame does.
                    self.blocks = ReadBlocks::default();
                    *src = BytesMut::new();
                }
            }
        }
        if self.blocks.active()
            && src.capacity() < FULL_DATA_FRAME
            && src.len() <= EARLY_SWITCH_COPY
        {
            // Bulk data is flowing and the next data frame would not fit
            // here: go on in a recycled block now, while little of the next
            // frame has to be copied there.
            self.blocks.switch(src, self.read_block, self.read_block);
        }
        parse_body(body, self.version).map(Some)
    }
}

impl Encoder<Frame> for Codec {
    type Error = CodecError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode(&frame, dst)
    }
}

impl Encoder<&Frame> for Codec {
    type Error = CodecError;

    fn encode(&mut self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        let needs = frame.since_version();
        if needs > self.version {
            return Err(CodecError::NotInVersion {
                frame: frame.frame_type(),
                needs,
                version: self.version,
            });
        }
        let type_byte = frame.type_byte();
        if matches!(frame, Frame::Unknown { .. }) && !EXTENSION_TYPES.contains(&type_byte) {
            return Err(CodecError::UnknownType(type_byte));
        }
        let start = dst.len();
        dst.reserve(LEN_PREFIX + BODY_HEADER + payload_size_hint(frame));
        dst.put_u32(0); // patched below, once the body length is known
        dst.put_u8(type_byte);
        dst.put_u32(frame.channel());
        write_payload(frame, dst, self.version);
        let len = dst.len() - start - LEN_PREFIX;
        if len > self.max_frame_len {
            dst.truncate(start);
            return Err(CodecError::FrameTooLarge {
                len,
                max: self.max_frame_len,
            });
        }
        let len_bytes = (len as u32).to_be_bytes();
        dst[start..start + LEN_PREFIX].copy_from_slice(&len_bytes);
        Ok(())
    }
}

fn payload_size_hint(frame: &Frame) -> usize {
    match frame {
        Frame::Stdin { data, .. } | Frame::Stdout { data, .. } | Frame::Stderr { data, .. } => {
            data.len()
        }
        Frame::Exec(exec) => {
            64 + exec.command.len()
                + exec.cwd.as_ref().map_or(0, Vec::len)
                + exec
                    .env
                    .iter()
                    .map(|(k, v)| 8 + k.len() + v.len())
                    .sum::<usize>()
                + exec.user.as_ref().map_or(0, Vec::len)
                + exec.pty.as_ref().map_or(0, |pty| pty.term.len())
        }
        Frame::Error { message, .. } => 2 + message.len(),
        Frame::Unknown { payload, .. } => payload.len(),
        _ => 16,
    }
}

fn put_bytes32(dst: &mut BytesMut, bytes: &[u8]) {
    dst.put_u32(bytes.len() as u32);
    dst.put_slice(bytes);
}

fn put_size(dst: &mut BytesMut, size: &PtySize) {
    dst.put_u16(size.cols);
    dst.put_u16(size.rows);
    dst.put_u16(size.pixel_width);
    dst.put_u16(size.pixel_height);
}

fn write_payload(frame: &Frame, dst: &mut BytesMut, version: u16) {
    match frame {
        Frame::Exec(exec) => {
            dst.put_u32(exec.window);
            // 0 means "no timeout", so a sub-millisecond one rounds up to 1 ms.
            let timeout_ms = exec.timeout.map_or(0, |t| {
                u64::try_from(t.as_millis()).unwrap_or(u64::MAX).max(1)
            });
            dst.put_u64(timeout_ms);
            put_bytes32(dst, &exec.command);
            match &exec.cwd {
                None => dst.put_u8(0),
                Some(cwd) => {
                    dst.put_u8(1);
                    put_bytes32(dst, cwd);
                }
            }
            dst.put_u32(exec.env.len() as u32);
            for (key, value) in &exec.env {
                put_bytes32(dst, key);
                put_bytes32(dst, value);
            }
            if version >= 2 {
                dst.put_u8(u8::from(exec.login_shell));
                match &exec.user {
                    None => dst.put_u8(0),
                    Some(user) => {
                        dst.put_u8(1);
                        put_bytes32(dst, user);
                    }
                }
                match &exec.pty {
                    None => dst.put_u8(0),
                    Some(pty) => {
                        dst.put_u8(1);
                        put_bytes32(dst, &pty.term);
                        put_size(dst, &pty.size);
                    }
                }
            }
        }
        Frame::Resize { size, .. } => put_size(dst, size),
        Frame::Unknown { payload, .. } => dst.put_slice(payload),
        Frame::Stdin { data, .. } | Frame::Stdout { data, .. } | Frame::Stderr { data, .. } => {
            dst.put_slice(data)
        }
        Frame::StdinEnd { .. } => {}
        Frame::Signal { signal, .. } => dst.put_u8(*signal),
        Frame::WindowAdjust { increment, .. } => dst.put_u32(*increment),
        Frame::Exit { status, .. } => match status {
            ExitStatus::Code(code) => {
                dst.put_u8(0);
                dst.put_i32(*code);
            }
            ExitStatus::Signal(signal) => {
                dst.put_u8(1);
                dst.put_u8(*signal);
            }
            ExitStatus::TimedOut => dst.put_u8(2),
            ExitStatus::FailedToStart(reason) => {
                dst.put_u8(3);
                dst.put_slice(reason.as_bytes());
            }
        },
        Frame::Ping { cookie } | Frame::Pong { cookie } => dst.put_u64(*cookie),
        Frame::Error { kind, message, .. } => {
            dst.put_u16(kind.code());
            dst.put_slice(message.as_bytes());
        }
    }
}

/// Reads a frame body's fields, every read bounds-checked.
struct Reader {
    frame: FrameType,
    buf: Bytes,
}

impl Reader {
    fn malformed(&self, reason: &'static str) -> CodecError {
        CodecError::Malformed {
            frame: self.frame,
            reason,
        }
    }

    fn need(&self, n: usize) -> Result<(), CodecError> {
        if self.buf.remaining() < n {
            Err(self.malformed("body ends early"))
        } else {
            Ok(())
        }
    }

    fn u8(&mut self) -> Result<u8, CodecError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }

    fn u16(&mut self) -> Result<u16, CodecError> {
        self.need(2)?;
        Ok(self.buf.get_u16())
    }

    fn u32(&mut self) -> Result<u32, CodecError> {
        self.need(4)?;
        Ok(self.buf.get_u32())
    }

    fn u64(&mut self) -> Result<u64, CodecError> {
        self.need(8)?;
        Ok(self.buf.get_u64())
    }

    fn i32(&mut self) -> Result<i32, CodecError> {
        self.need(4)?;
        Ok(self.buf.get_i32())
    }

    fn flag(&mut self, what: &'static str) -> Result<bool, CodecError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.malformed(what)),
        }
    }

    fn size(&mut self) -> Result<PtySize, CodecError> {
        Ok(PtySize {
            cols: self.u16()?,
            rows: self.u16()?,
            pixel_width: self.u16()?,
            pixel_height: self.u16()?,
        })
    }

    fn bytes32(&mut self) -> Result<Vec<u8>, CodecError> {
        let len = self.u32()? as usize;
        self.need(len)?;
        Ok(self.buf.split_to(len).to_vec())
    }

    fn rest(&mut self) -> Bytes {
        std::mem::take(&mut self.buf)
    }

    fn rest_utf8(&mut self) -> Result<String, CodecError> {
        let rest = self.rest();
        String::from_utf8(rest.to_vec()).map_err(|_| self.malformed("text is not UTF-8"))
    }

    fn finish(self) -> Result<(), CodecError> {
        if self.buf.has_remaining() {
            Err(self.malformed("trailing bytes"))
        } else {
            Ok(())
        }
    }
}

fn parse_body(mut body: Bytes, version: u16) -> Result<Frame, CodecError> {
    let type_byte = body.get_u8();
    let channel = body.get_u32();
    let known = FrameType::from_byte(type_byte).filter(|t| t.since_version() <= version);
    let Some(frame) = known else {
        // From version 2 on, the extension range is skipped, not fatal.
        if version >= 2 && EXTENSION_TYPES.contains(&type_byte) {
            return Ok(Frame::Unknown {
                channel,
                frame_type: type_byte,
                payload: body,
            });
        }
        return Err(CodecError::UnknownType(type_byte));
    };
    let mut r = Reader { frame, buf: body };
    let parsed = match frame {
        FrameType::Exec => {
            let window = r.u32()?;
            let timeout_ms = r.u64()?;
            let command = r.bytes32()?;
            let cwd = match r.u8()? {
                0 => None,
                1 => Some(r.bytes32()?),
                _ => return Err(r.malformed("cwd flag is neither 0 nor 1")),
            };
            let count = r.u32()?;
            // No capacity from `count`: a hostile count must not allocate.
            let mut env = Vec::new();
            for _ in 0..count {
                let key = r.bytes32()?;
                let value = r.bytes32()?;
                env.push((key, value));
            }
            let mut exec = Exec {
                channel,
                window,
                command,
                cwd,
                env,
                timeout: (timeout_ms != 0).then(|| Duration::from_millis(timeout_ms)),
                ..Exec::default()
            };
            if version >= 2 {
                exec.login_shell = r.flag("mode is neither 0 nor 1")?;
                if r.flag("user flag is neither 0 nor 1")? {
                    exec.user = Some(r.bytes32()?);
                }
                if r.flag("pty flag is neither 0 nor 1")? {
                    exec.pty = Some(PtyRequest {
                        term: r.bytes32()?,
                        size: r.size()?,
                    });
                }
            }
            Frame::Exec(exec)
        }
        FrameType::Resize => Frame::Resize {
            channel,
            size: r.size()?,
        },
        // Never known to `from_byte`; handled above.
        FrameType::Extension => return Err(CodecError::UnknownType(type_byte)),
        FrameType::Stdin => Frame::Stdin {
            channel,
            data: r.rest(),
        },
        FrameType::Stdout => Frame::Stdout {
            channel,
            data: r.rest(),
        },
        FrameType::Stderr => Frame::Stderr {
            channel,
            data: r.rest(),
        },
        FrameType::StdinEnd => Frame::StdinEnd { channel },
        FrameType::Signal => Frame::Signal {
            channel,
            signal: r.u8()?,
        },
        FrameType::WindowAdjust => Frame::WindowAdjust {
            channel,
            increment: r.u32()?,
        },
        FrameType::Ping | FrameType::Pong => {
            // Connection-level: on any other channel the frame means nothing
            // a receiver could act on.
            if channel != crate::CONNECTION_CHANNEL {
                return Err(r.malformed("not on channel 0"));
            }
            let cookie = r.u64()?;
            if frame == FrameType::Ping {
                Frame::Ping { cookie }
            } else {
                Frame::Pong { cookie }
            }
        }
        FrameType::Exit => {
            let status = match r.u8()? {
                0 => ExitStatus::Code(r.i32()?),
                1 => ExitStatus::Signal(r.u8()?),
                2 => ExitStatus::TimedOut,
                3 => ExitStatus::FailedToStart(r.rest_utf8()?),
                _ => return Err(r.malformed("unknown exit kind")),
            };
            Frame::Exit { channel, status }
        }
        FrameType::Error => {
            let kind = ErrorKind::from_code(r.u16()?);
            let message = r.rest_utf8()?;
            Frame::Error {
                channel,
                kind,
                message,
            }
        }
    };
    r.finish()?;
    Ok(parsed)
}
