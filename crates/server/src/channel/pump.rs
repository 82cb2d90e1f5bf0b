//! Carrying a channel's bytes under flow control: the client's input into
//! whatever the channel feeds, its output back as data frames. Nothing here
//! knows what produced the bytes: a command on pipes and a session on a pty
//! today; a forwarded stream or a subsystem is one more [`Input`] and
//! [`Output`] variant, and the same two pumps.
//!
//! Flow control: an output stream waits until its source is readable
//! *before* it takes credit from the shared output window, and reads at most
//! what it took; credit is never held while a source is idle, so any window
//! from one byte up works, however the client tops it up. Stdin window is
//! granted out of the server-wide [`StdinBudget`].

use crate::budget::StdinBudget;
use crate::pty::{PtyReader, PtyWriter};
use bytes::{BufMut, Bytes, BytesMut};
use rsh_proto::io::ChunkBuffers;
use rsh_proto::{Frame, Window};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tracing::debug;

/// What the pumps need from the connection: where frames go, the stdin
/// budget and the sizes the settings give.
#[derive(Debug, Clone)]
pub(crate) struct Flow {
    pub frames: mpsc::Sender<Frame>,
    pub stdin_budget: StdinBudget,
    /// Largest data frame sent (`ServerConfig::chunk_size`).
    pub chunk_size: usize,
    /// Stdin credit a channel is kept topped up to
    /// (`ServerConfig::stdin_window`).
    pub stdin_window: u32,
}

/// Where the client's stdin goes.
#[derive(Debug)]
pub(crate) enum Input {
    /// The write end of the command's stdin pipe.
    Pipe(pipe::Sender),
    /// The pty's master: what is written is typed on the terminal. There is
    /// no end of input on a terminal (the client types Ctrl-D for that).
    Pty(PtyWriter),
}

impl Input {
    async fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            Input::Pipe(pipe) => pipe.write_all(data).await,
            Input::Pty(writer) => writer.write_all(data).await,
        }
    }

    /// The pipe's descriptor, to enlarge it; none for a terminal.
    fn pipe_fd(&self) -> Option<RawFd> {
        match self {
            Input::Pipe(pipe) => Some(pipe.as_raw_fd()),
            Input::Pty(_) => None,
        }
    }
}

/// An output stream of the command.
#[derive(Debug)]
pub(crate) enum Output {
    /// The read end of a stdout or stderr pipe.
    Pipe(pipe::Receiver),
    /// The pty's master: stdout and stderr of the session (EIO, once the last
    /// slave is closed, is the end).
    Pty(PtyReader),
}

/// Zeroed room offered to one read of the pty: the kernel hands out at
/// most 4095 bytes per read (the terminal's 4 KiB queue), so a larger block
/// would be zeroed for nothing, once per echoed key too.
const PTY_READ: usize = 4 * 1024;

/// A first pty read shorter than this is sent at once, without trying for
/// more: a fast writer's reads come in KiBs (what the terminal queued), a
/// typed key's echo in bytes.
const PTY_TRICKLE: usize = 512;

impl Output {
    async fn readable(&self) -> std::io::Result<()> {
        match self {
            Output::Pipe(pipe) => pipe.readable().await,
            Output::Pty(reader) => reader.readable().await,
        }
    }

    /// Reads what is there, at most `limit` bytes, onto the end of `buf`;
    /// `Ok(0)` at the end, `WouldBlock` if nothing is there yet.
    async fn try_read_into(&mut self, buf: &mut BytesMut, limit: usize) -> std::io::Result<usize> {
        match self {
            Output::Pipe(pipe) => pipe.try_read_buf(&mut buf.limit(limit)),
            Output::Pty(reader) => read_pty(reader, buf, limit).await,
        }
    }

    /// The pipe's descriptor, to enlarge it; none for a terminal.
    fn pipe_fd(&self) -> Option<RawFd> {
        match self {
            Output::Pipe(pipe) => Some(pipe.as_raw_fd()),
            Output::Pty(_) => None,
        }
    }
}

/// Reads the pty until nothing more is there or `limit` is reached: a pty
/// read returns at most a few KiB, and gathering them makes one frame of a
/// fast writer's output instead of one per read.
///
/// A first read shorter than [`PTY_TRICKLE`] (an echoed key) is returned at
/// once and marks the terminal drained, so the next wait needs new output:
/// asking again would only meet EAGAIN, and the echo's round trip would wait
/// for that read.
async fn read_pty(
    reader: &mut PtyReader,
    buf: &mut BytesMut,
    limit: usize,
) -> std::io::Result<usize> {
    let start = buf.len();
    let mut total = 0;
    let result = loop {
        if total == limit {
            break Ok(total);
        }
        let want = (limit - total).min(PTY_READ);
        buf.resize(start + total + want, 0);
        let read = if total == 0 {
            reader.read_first(&mut buf[start..], PTY_TRICKLE).await
        } else {
            reader.try_read(&mut buf[start + total..])
        };
        match read {
            // The end: what was read before it goes out first; the next
            // call says 0 again.
            Ok(0) => break Ok(total),
            Ok(n) if total == 0 && n < PTY_TRICKLE => {
                total = n;
                break Ok(total);
            }
            Ok(n) => total += n,
            Err(_) if total > 0 => break Ok(total),
            Err(err) => break Err(err),
        }
    };
    buf.truncate(start + total);
    result
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub stdout: AtomicU64,
    pub stderr: AtomicU64,
    pub stdin: AtomicU64,
}

impl Counters {
    /// Output bytes forwarded so far.
    pub fn output(&self) -> u64 {
        self.stdout.load(Ordering::Relaxed) + self.stderr.load(Ordering::Relaxed)
    }
}

/// Size of the recycled blocks output chunks are read into.
const OUTPUT_BLOCK: usize = 512 * 1024;

/// Bytes a command's pipes may hold: with Linux's default 64 KiB, a fast
/// writer wakes the reader for every 64 KiB; 1 MiB lets one read or write
/// move a whole frame's worth. Best effort: the default still works. Done
/// only once a pipe carries big chunks: most commands move a few bytes.
const ENLARGE_PIPE_AFTER: usize = 32 * 1024;
const PIPE_SIZE: i32 = 1024 * 1024;

fn enlarge_pipe(fd: RawFd) {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fcntl, FcntlArg};
        if let Err(err) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            debug!(cause = %err, "cannot enlarge the pipe");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

/// Which data frame an output stream becomes.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Forwards one output stream, never reading more than the window allows,
/// so a client that stops reading stops the command at a full pipe.
///
/// Readiness first, credit second: the stream takes credit only once its
/// pipe has something to read (or is at its end), and gives back whatever
/// the read did not use. An idle stream holds no credit, so the other one
/// can use the whole window.
pub(crate) async fn pump_output(
    mut output: Output,
    stream: Stream,
    channel: u32,
    window: &Window,
    flow: &Flow,
    counters: &Counters,
) {
    let chunk = flow.chunk_size.clamp(1, rsh_proto::MAX_DATA_LEN);
    let counter = match stream {
        Stream::Stdout => &counters.stdout,
        Stream::Stderr => &counters.stderr,
    };
    // Blocks enough for the 2 MiB window a client grants, plus one filling.
    let mut buffers = ChunkBuffers::new(OUTPUT_BLOCK, 6);
    let mut enlarged = false;
    loop {
        if let Err(err) = output.readable().await {
            debug!(cause = %err, ?stream, "waiting for command output failed");
            return;
        }
        let Some(credit) = window.reserve(chunk).await else {
            return;
        };
        let buf = buffers.room(credit);
        let n = match output.try_read_into(buf, credit).await {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => {
                // Readiness was stale; wait again, holding nothing.
                window.release(credit as u64);
                continue;
            }
            Err(err) => {
                debug!(cause = %err, ?stream, "reading command output failed");
                0
            }
        };
        window.release((credit - n) as u64);
        if n == 0 {
            return;
        }
        counter.fetch_add(n as u64, Ordering::Relaxed);
        if !enlarged && n >= ENLARGE_PIPE_AFTER {
            if let Some(fd) = output.pipe_fd() {
                enlarge_pipe(fd);
            }
            enlarged = true;
        }
        let data = buf.split().freeze();
        let frame = match stream {
            Stream::Stdout => Frame::Stdout { channel, data },
            Stream::Stderr => Frame::Stderr { channel, data },
        };
        if flow.frames.send(frame).await.is_err() {
            return;
        }
    }
}

/// What the connection passes on of the client's stdin.
#[derive(Debug)]
pub(crate) enum StdinEvent {
    /// Bytes for the command.
    Data(Bytes),
    /// The client's `StdinEnd`: the end of input, which the command sees.
    End,
}

/// Feeds the command's stdin and keeps the client's stdin window topped up
/// to `ServerConfig::stdin_window` (or the channel's fair share of the
/// budget, if smaller; at least its floor), out of the server-wide budget:
/// bytes
/// written to the pipe go back to the budget and are granted again, as the
/// budget allows. A command that does not read stops the client's stdin on
/// this channel only. Ends at the client's `StdinEnd`, closing the
/// command's stdin (`sink` becomes `None`); whatever the channel held of
/// the budget returns then.
///
/// When the connection goes without a `StdinEnd` (the client vanished),
/// `sink` is left open: a cut upload must never look like end of input to
/// the command (`cat > file` would commit half a file). The command is
/// ended first, and only then is its stdin closed (see `command::run`).
pub(crate) async fn pump_stdin(
    sink: &mut Option<Input>,
    mut incoming: mpsc::UnboundedReceiver<StdinEvent>,
    credit: &Window,
    flow: &Flow,
    channel: u32,
    counters: &Counters,
) {
    let Some(input) = sink.as_mut() else { return };
    let window = u64::from(flow.stdin_window);
    let mut lease = flow.stdin_budget.lease(window);
    let mut enlarged = false;
    loop {
        // The window, or less while many channels share the budget.
        let target = flow.stdin_budget.share(window);
        let want = target.saturating_sub(lease.held());
        // Top up only once half the window is used, as ssh does: a grant
        // per Stdin frame would put one more frame on the wire (and one more
        // wake-up in the client) for every keystroke of a terminal session.
        let top_up = want > 0 && lease.held() <= target / 2;
        // The floor is granted at once, with whatever the budget has free;
        // only a channel whose floor is in use waits for the budget.
        let from_floor = lease.floor_free().min(want);
        tokio::select! {
            // Data first: a client that already ended stdin (most one-shot
            // commands) is granted nothing, one frame fewer per command.
            biased;
            event = incoming.recv() => {
                let data = match event {
                    Some(StdinEvent::Data(data)) => data,
                    Some(StdinEvent::End) => {
                        *sink = None;
                        break;
                    }
                    // The connection is gone: no end of input (see above).
                    None => break,
                };
                if !enlarged && data.len() >= ENLARGE_PIPE_AFTER {
                    if let Some(fd) = input.pipe_fd() {
                        enlarge_pipe(fd);
                    }
                    enlarged = true;
                }
                if let Err(err) = input.write_all(&data).await {
                    // The command closed its stdin: grant no more credit, so
                    // the client stops sending what nobody will read. Its
                    // writer gets `StdinClosed` when the command ends.
                    debug!(cause = %err, "command's stdin closed");
                    *sink = None;
                    break;
                }
                counters
                    .stdin
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                lease.give_back(data.len() as u64);
            }
            taken = flow.stdin_budget.take(want - from_floor, from_floor == 0), if top_up => {
                lease.add(taken);
                let taken = taken + lease.take_floor(from_floor);
                // Credit first, then the frame: the client may send as soon
                // as it reads it.
                credit.grant(taken);
                let increment = u32::try_from(taken).unwrap_or(u32::MAX);
                if flow
                    .frames
                    .send(Frame::WindowAdjust { channel, increment })
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    // Dropping the queue and the lease frees what the channel buffered and
    // returns its share of the budget.
    drop(incoming);
    drop(lease);
}
