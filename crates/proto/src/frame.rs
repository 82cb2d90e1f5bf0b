//! Frame types: what travels on a connection after the greeting.

use bytes::Bytes;
use std::time::Duration;

/// One message on the wire. Every frame names the channel (command) it
/// belongs to; channel ids are chosen by the client, from 1 up, and may be
/// reused once the channel's [`Frame::Exit`] or refusing [`Frame::Error`] has
/// been received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Client → server: run a command on a new channel.
    Exec(Exec),
    /// Client → server: bytes for the command's stdin. Counts against the
    /// stdin window the server granted.
    Stdin {
        /// Channel id.
        channel: u32,
        /// The bytes, at most [`crate::MAX_DATA_LEN`].
        data: Bytes,
    },
    /// Client → server: no more stdin; the server closes the command's stdin.
    StdinEnd {
        /// Channel id.
        channel: u32,
    },
    /// Client → server: deliver a signal to the command's process group.
    Signal {
        /// Channel id.
        channel: u32,
        /// Signal number, Linux numbering (see [`signal`]).
        signal: u8,
    },
    /// Either direction: the sender can take `increment` more data bytes on
    /// this channel (stdout+stderr from the server, or stdin from the client).
    WindowAdjust {
        /// Channel id.
        channel: u32,
        /// Bytes added to the window.
        increment: u32,
    },
    /// Server → client: bytes the command wrote to stdout.
    Stdout {
        /// Channel id.
        channel: u32,
        /// The bytes, at most [`crate::MAX_DATA_LEN`].
        data: Bytes,
    },
    /// Server → client: bytes the command wrote to stderr.
    Stderr {
        /// Channel id.
        channel: u32,
        /// The bytes, at most [`crate::MAX_DATA_LEN`].
        data: Bytes,
    },
    /// Server → client: the command is over; always the channel's last frame.
    Exit {
        /// Channel id.
        channel: u32,
        /// How it ended.
        status: ExitStatus,
    },
    /// Client → server (version 2): the terminal of the channel's pty changed
    /// size. Ignored on a channel without a pty, or one that has ended.
    Resize {
        /// Channel id.
        channel: u32,
        /// The new size.
        size: PtySize,
    },
    /// Either direction (version 2): a frame whose type, in the extension
    /// range [`EXTENSION_TYPES`], this implementation does not know. A
    /// receiver skips it; a sender can use it to send such a frame verbatim.
    Unknown {
        /// Channel id.
        channel: u32,
        /// The type byte, in [`EXTENSION_TYPES`].
        frame_type: u8,
        /// The payload, uninterpreted.
        payload: Bytes,
    },
    /// Either direction (version 3): are you there? The receiver answers
    /// with a [`Frame::Pong`] carrying the same cookie. Always on channel
    /// [`crate::CONNECTION_CHANNEL`].
    Ping {
        /// Opaque to the receiver; echoed back in the Pong.
        cookie: u64,
    },
    /// Either direction (version 3): the answer to a [`Frame::Ping`], with
    /// its cookie. Always on channel [`crate::CONNECTION_CHANNEL`].
    Pong {
        /// The cookie of the Ping this answers.
        cookie: u64,
    },
    /// Either direction: something went wrong. On a command channel the exec
    /// was refused (no `Exit` follows); on channel 0 the connection is about
    /// to close.
    Error {
        /// Channel id, or [`crate::CONNECTION_CHANNEL`].
        channel: u32,
        /// Machine-readable kind.
        kind: ErrorKind,
        /// Human-readable reason.
        message: String,
    },
}

/// The request to run a command.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Exec {
    /// Channel id for this command (not 0, not in use on this connection).
    pub channel: u32,
    /// Output window: how many stdout+stderr data bytes the server may send
    /// before it must wait for a [`Frame::WindowAdjust`].
    pub window: u32,
    /// The command line, given to the server's shell as `sh -c COMMAND`.
    pub command: Vec<u8>,
    /// Working directory; the server's default (its user's home) if absent.
    pub cwd: Option<Vec<u8>>,
    /// Environment variables to set on top of the server's environment.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Kill the command's process group after this long; no limit if absent.
    pub timeout: Option<Duration>,
    /// Version 2: run the user's login shell instead of a command; the
    /// command must then be empty.
    pub login_shell: bool,
    /// Version 2: the user the client wants to run as. The server refuses
    /// any user other than the one it runs as; absent means "whoever that is".
    pub user: Option<Vec<u8>>,
    /// Version 2: run on a pseudo-terminal of this type and size instead of
    /// pipes (stdout and stderr are then one stream, sent as Stdout).
    pub pty: Option<PtyRequest>,
}

impl Exec {
    /// Whether this request needs version 2 (a login shell, a user or a pty).
    pub fn needs_version_2(&self) -> bool {
        self.login_shell || self.user.is_some() || self.pty.is_some()
    }
}

/// A request for a pseudo-terminal, as SSH's `pty-req`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PtyRequest {
    /// The terminal type, set as `TERM` for the command (e.g. `xterm-256color`).
    pub term: Vec<u8>,
    /// The terminal's initial size.
    pub size: PtySize,
}

/// A terminal's size, as the kernel's `struct winsize` holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PtySize {
    /// Columns (characters).
    pub cols: u16,
    /// Rows (lines).
    pub rows: u16,
    /// Width in pixels; 0 if unknown.
    pub pixel_width: u16,
    /// Height in pixels; 0 if unknown.
    pub pixel_height: u16,
}

/// Frame types a version-2 receiver that does not know them skips instead of
/// closing the connection: room for optional additions without a new
/// version. Unknown types below this range stay fatal.
pub const EXTENSION_TYPES: std::ops::RangeInclusive<u8> = 0x80..=0xff;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was killed by this signal (Linux numbering).
    Signal(u8),
    /// It ran past its timeout and was killed.
    TimedOut,
    /// It could not be started; the reason.
    FailedToStart(String),
}

/// What kind of error a [`Frame::Error`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The request is invalid (empty command, NUL in a path...).
    BadRequest,
    /// The channel id is 0 or already running a command.
    ChannelInUse,
    /// The connection already runs as many commands as the server allows.
    TooManyChannels,
    /// The server is shutting down and takes no new commands.
    ShuttingDown,
    /// The peer broke the protocol (window exceeded, unexpected frame).
    ProtocolViolation,
    /// The server failed internally.
    Internal,
    /// Version 2: the requested user is not the one the server runs as.
    WrongUser,
    /// Version 2: the server does not offer what the request asks for
    /// (e.g. a pty).
    Unsupported,
    /// A code this version does not know; kept so newer peers stay readable.
    Other(u16),
}

impl ErrorKind {
    /// The kind's wire code.
    pub fn code(self) -> u16 {
        match self {
            ErrorKind::BadRequest => 1,
            ErrorKind::ChannelInUse => 2,
            ErrorKind::TooManyChannels => 3,
            ErrorKind::ShuttingDown => 4,
            ErrorKind::ProtocolViolation => 5,
            ErrorKind::Internal => 6,
            ErrorKind::WrongUser => 7,
            ErrorKind::Unsupported => 8,
            ErrorKind::Other(code) => code,
        }
    }

    /// The kind for a wire code.
    pub fn from_code(code: u16) -> Self {
        match code {
            1 => ErrorKind::BadRequest,
            2 => ErrorKind::ChannelInUse,
            3 => ErrorKind::TooManyChannels,
            4 => ErrorKind::ShuttingDown,
            5 => ErrorKind::ProtocolViolation,
            6 => ErrorKind::Internal,
            7 => ErrorKind::WrongUser,
            8 => ErrorKind::Unsupported,
            other => ErrorKind::Other(other),
        }
    }
}

/// The frame type byte of each frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameType {
    /// [`Frame::Exec`]
    Exec = 0x01,
    /// [`Frame::Stdin`]
    Stdin = 0x02,
    /// [`Frame::StdinEnd`]
    StdinEnd = 0x03,
    /// [`Frame::Signal`]
    Signal = 0x04,
    /// [`Frame::WindowAdjust`]
    WindowAdjust = 0x05,
    /// [`Frame::Resize`] (version 2)
    Resize = 0x06,
    /// [`Frame::Stdout`]
    Stdout = 0x10,
    /// [`Frame::Stderr`]
    Stderr = 0x11,
    /// [`Frame::Exit`]
    Exit = 0x12,
    /// [`Frame::Error`]
    Error = 0x13,
    /// [`Frame::Ping`] (version 3)
    Ping = 0x20,
    /// [`Frame::Pong`] (version 3)
    Pong = 0x21,
    /// [`Frame::Unknown`]: any type in [`EXTENSION_TYPES`] (version 2).
    Extension = 0x80,
}

impl FrameType {
    /// The first version that has this frame type.
    pub fn since_version(self) -> u16 {
        match self {
            FrameType::Resize | FrameType::Extension => 2,
            FrameType::Ping | FrameType::Pong => 3,
            _ => 1,
        }
    }

    /// The type for a type byte, if known (the extension range is not).
    pub fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            0x01 => FrameType::Exec,
            0x02 => FrameType::Stdin,
            0x03 => FrameType::StdinEnd,
            0x04 => FrameType::Signal,
            0x05 => FrameType::WindowAdjust,
            0x06 => FrameType::Resize,
            0x10 => FrameType::Stdout,
            0x11 => FrameType::Stderr,
            0x12 => FrameType::Exit,
            0x13 => FrameType::Error,
            0x20 => FrameType::Ping,
            0x21 => FrameType::Pong,
            _ => return None,
        })
    }
}

impl Frame {
    /// The channel this frame belongs to.
    pub fn channel(&self) -> u32 {
        match self {
            Frame::Exec(exec) => exec.channel,
            Frame::Stdin { channel, .. }
            | Frame::StdinEnd { channel }
            | Frame::Signal { channel, .. }
            | Frame::WindowAdjust { channel, .. }
            | Frame::Resize { channel, .. }
            | Frame::Unknown { channel, .. }
            | Frame::Stdout { channel, .. }
            | Frame::Stderr { channel, .. }
            | Frame::Exit { channel, .. }
            | Frame::Error { channel, .. } => *channel,
            Frame::Ping { .. } | Frame::Pong { .. } => crate::CONNECTION_CHANNEL,
        }
    }

    /// The frame's type byte.
    pub fn frame_type(&self) -> FrameType {
        match self {
            Frame::Exec(_) => FrameType::Exec,
            Frame::Stdin { .. } => FrameType::Stdin,
            Frame::StdinEnd { .. } => FrameType::StdinEnd,
            Frame::Signal { .. } => FrameType::Signal,
            Frame::WindowAdjust { .. } => FrameType::WindowAdjust,
            Frame::Stdout { .. } => FrameType::Stdout,
            Frame::Stderr { .. } => FrameType::Stderr,
            Frame::Exit { .. } => FrameType::Exit,
            Frame::Error { .. } => FrameType::Error,
            Frame::Resize { .. } => FrameType::Resize,
            Frame::Unknown { .. } => FrameType::Extension,
            Frame::Ping { .. } => FrameType::Ping,
            Frame::Pong { .. } => FrameType::Pong,
        }
    }

    /// The frame's type byte on the wire.
    pub fn type_byte(&self) -> u8 {
        match self {
            Frame::Unknown { frame_type, .. } => *frame_type,
            other => other.frame_type() as u8,
        }
    }

    /// The first protocol version in which this frame can be sent.
    pub fn since_version(&self) -> u16 {
        match self {
            Frame::Exec(exec) if exec.needs_version_2() => 2,
            other => other.frame_type().since_version(),
        }
    }
}

/// Signal numbers as carried by [`Frame::Signal`] and [`ExitStatus::Signal`]:
/// Linux numbering, whatever the server's OS.
pub mod signal {
    /// Hangup.
    pub const HUP: u8 = 1;
    /// Interrupt (Ctrl-C).
    pub const INT: u8 = 2;
    /// Quit (Ctrl-\).
    pub const QUIT: u8 = 3;
    /// Kill, cannot be caught.
    pub const KILL: u8 = 9;
    /// User-defined 1.
    pub const USR1: u8 = 10;
    /// User-defined 2.
    pub const USR2: u8 = 12;
    /// Broken pipe.
    pub const PIPE: u8 = 13;
    /// Alarm.
    pub const ALRM: u8 = 14;
    /// Terminate.
    pub const TERM: u8 = 15;
}
