//! The rsh wire format: the handshake, the frame types and a tokio-util codec.
//!
//! This crate turns bytes into [`Frame`]s and back, and owns the rules every
//! peer must follow (frame limit, channel ids, flow-control windows); its
//! [`io`] module does the I/O both peers share (the greeting exchange, the
//! frame writer) over any async byte stream. It opens no sockets and runs no
//! processes, so any transport (a Unix socket, TLS over TCP, an in-memory
//! pipe in a test) can carry it.
//!
//! The byte-level specification lives in `docs/PROTOCOL.md`; this crate is its
//! reference implementation.
//!
//! - [`Hello`]: the 8-byte greeting each side sends first (magic + the
//!   versions it speaks); both sides then speak the highest common version.
//! - [`Frame`]: every message after the greeting.
//! - [`Codec`]: a [`tokio_util::codec::Decoder`] and [`tokio_util::codec::Encoder`]
//!   that refuse any frame over [`MAX_FRAME_LEN`] before allocating for it.
//! - [`Window`]: a sender's flow-control credit on one channel.
//! - [`io`]: the greeting exchange and the frame writer, over any byte stream.
#![deny(missing_docs)]

mod codec;
mod frame;
mod hello;
pub mod io;
mod window;

pub use codec::{Codec, CodecError};
pub use frame::{
    signal, ErrorKind, Exec, ExitStatus, Frame, FrameType, PtyRequest, PtySize, EXTENSION_TYPES,
};
pub use hello::{Hello, HelloError, HELLO_LEN, MAGIC, MIN_VERSION, VERSION};
pub use window::Window;

/// Largest frame body (everything after the 4-byte length prefix) a peer may
/// send or must accept: 1 MiB. Checked from the header, before allocation.
pub const MAX_FRAME_LEN: usize = 1024 * 1024;

/// Largest data payload a sender should put in one stdin/stdout/stderr frame.
/// Well under [`MAX_FRAME_LEN`] so a frame's header and payload always fit.
pub const MAX_DATA_LEN: usize = 256 * 1024;

/// Channel id reserved for connection-level [`Frame::Error`]s. Commands use
/// ids 1 and up.
pub const CONNECTION_CHANNEL: u32 = 0;
