//! Channels: what one connection multiplexes over its stream, each under its
//! own id, flow-control windows and end.
//!
//! - [`Channels`] is the connection's table: which ids are open, and for
//!   each the senders that route the client's frames (stdin, signals, window
//!   credit, resizes) to the channel's task. An id is open from `Exec` until
//!   its task reports through its [`ChannelEnd`].
//! - [`ChannelInputs`] is the task's side of the same routes.
//! - [`pump`] carries the bytes both ways under the windows, whatever
//!   produces them.
//!
//! What a channel does with its bytes is its [`ChannelKind`]: today a
//! command on pipes or a session on a pty, both spawned by
//! the command module. A forwarded TCP or Unix stream and a subsystem are the
//! kinds still to come: they carry bytes and flow control through the same
//! table and pumps, and spawn nothing.

pub(crate) mod pump;

use bytes::Bytes;
use pump::StdinEvent;
use rsh_proto::{Exec, ExitStatus, Frame, PtySize, Window};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tracing::debug;

/// What a channel carries (russh's channel types, distant's requests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ChannelKind {
    /// A command (or a login shell) on pipes: stdin, stdout and stderr;
    /// signals go to its process group.
    Command,
    /// A login shell or a command on a pseudo-terminal: one output stream,
    /// resizes; signals go to the terminal's foreground job.
    Session,
    // To come, carrying bytes without spawning: `Forward` (a TCP or Unix
    // stream the server connects to) and `Subsystem` (a named service).
}

impl ChannelKind {
    /// The kind an `Exec` asks for.
    pub(crate) fn of(exec: &Exec) -> ChannelKind {
        if exec.pty.is_some() {
            ChannelKind::Session
        } else {
            ChannelKind::Command
        }
    }
}

/// What a channel's task receives from the connection.
#[derive(Debug)]
pub(crate) struct ChannelInputs {
    /// Stdin bytes from the client, already checked against the window.
    pub stdin: mpsc::UnboundedReceiver<StdinEvent>,
    /// Signals (Linux numbering) the client asked to deliver.
    pub signals: mpsc::UnboundedReceiver<u8>,
    /// Credit for stdout+stderr bytes, granted by the client.
    pub output_window: Arc<Window>,
    /// Credit the client has for stdin bytes; the channel grants it.
    pub stdin_credit: Arc<Window>,
    /// The latest terminal size the client sent (a session only): resizes
    /// that come faster than they are applied collapse into one.
    pub resizes: Option<watch::Receiver<PtySize>>,
}

/// The connection's side of one open channel.
struct Routes {
    stdin: Option<mpsc::UnboundedSender<StdinEvent>>,
    signals: mpsc::UnboundedSender<u8>,
    output_window: Arc<Window>,
    stdin_credit: Arc<Window>,
    /// The latest size asked for; present exactly on a session (a pty).
    resize: Option<watch::Sender<PtySize>>,
}

/// The client sent more stdin than its window allowed.
#[derive(Debug)]
pub(crate) struct WindowOverrun;

/// The one record of which channels are open: a channel is open while it is
/// in the table. An entry is added by [`Channels::open`] and removed only
/// when its task's [`ChannelEnd`] reports; that report is sent before the
/// channel's `Exit` is queued, and [`Channels::drain_ended`] runs before
/// every frame is dispatched, so an `Exec` that reuses an id the client saw
/// exit always finds the id free.
pub(crate) struct Channels {
    open: HashMap<u32, Routes>,
    done_tx: mpsc::UnboundedSender<u32>,
    done_rx: mpsc::UnboundedReceiver<u32>,
}

impl Channels {
    pub(crate) fn new() -> Channels {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        Channels {
            open: HashMap::new(),
            done_tx,
            done_rx,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.open.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    pub(crate) fn is_open(&self, channel: u32) -> bool {
        self.open.contains_key(&channel)
    }

    /// Opens `channel` with `window` bytes of output credit (and, for a
    /// session, the terminal's first size); the task's inputs and its end.
    pub(crate) fn open(
        &mut self,
        channel: u32,
        window: u32,
        pty_size: Option<PtySize>,
        frames: mpsc::Sender<Frame>,
    ) -> (ChannelInputs, ChannelEnd) {
        let (stdin_tx, stdin_rx) = mpsc::unbounded_channel();
        let (signals_tx, signals_rx) = mpsc::unbounded_channel();
        let output_window = Arc::new(Window::new(u64::from(window)));
        let stdin_credit = Arc::new(Window::new(0));
        let (resize_tx, resizes) = match pty_size {
            Some(size) => {
                let (tx, rx) = watch::channel(size);
                (Some(tx), Some(rx))
            }
            None => (None, None),
        };
        self.open.insert(
            channel,
            Routes {
                stdin: Some(stdin_tx),
                signals: signals_tx,
                output_window: output_window.clone(),
                stdin_credit: stdin_credit.clone(),
                resize: resize_tx,
            },
        );
        let inputs = ChannelInputs {
            stdin: stdin_rx,
            signals: signals_rx,
            output_window,
            stdin_credit,
            resizes,
        };
        let end = ChannelEnd {
            channel,
            frames,
            done: self.done_tx.clone(),
            reported: false,
        };
        (inputs, end)
    }

    /// Waits for a channel to report its end and frees it.
    pub(crate) async fn next_ended(&mut self) {
        // Never `None`: the table holds a sender itself.
        if let Some(channel) = self.done_rx.recv().await {
            self.open.remove(&channel);
        }
    }

    /// Frees the channels that have reported their end.
    pub(crate) fn drain_ended(&mut self) {
        while let Ok(channel) = self.done_rx.try_recv() {
            self.open.remove(&channel);
        }
    }

    /// Routes stdin bytes, after checking them against the channel's window.
    pub(crate) fn stdin(&self, channel: u32, data: Bytes) -> Result<(), WindowOverrun> {
        let Some(routes) = self.open.get(&channel) else {
            // Races with a channel's end are normal; drop the bytes.
            debug!(channel, "stdin for a finished channel dropped");
            return Ok(());
        };
        if !routes.stdin_credit.try_consume(data.len() as u64) {
            return Err(WindowOverrun);
        }
        if let Some(stdin) = &routes.stdin {
            let _ = stdin.send(StdinEvent::Data(data));
        }
        Ok(())
    }

    /// The client's end of stdin. A terminal has no end of input (the
    /// client types Ctrl-D for that), so on a session it changes nothing:
    /// later input is still typed and the window still granted.
    pub(crate) fn stdin_end(&mut self, channel: u32) {
        if let Some(routes) = self.open.get_mut(&channel) {
            if routes.resize.is_none() {
                // Said, not only dropped: a queue dropped with the connection is
                // a client gone, never the end of input (see `pump_stdin`).
                if let Some(stdin) = routes.stdin.take() {
                    let _ = stdin.send(StdinEvent::End);
                }
            }
        }
    }

    pub(crate) fn signal(&self, channel: u32, signal: u8) {
        if let Some(routes) = self.open.get(&channel) {
            let _ = routes.signals.send(signal);
        }
    }

    /// Output credit from the client.
    pub(crate) fn window_adjust(&self, channel: u32, increment: u32) {
        if let Some(routes) = self.open.get(&channel) {
            routes.output_window.grant(u64::from(increment));
        }
    }

    pub(crate) fn resize(&self, channel: u32, size: PtySize) {
        match self.open.get(&channel).and_then(|c| c.resize.as_ref()) {
            // Only the latest size is kept: a burst of resizes costs no
            // memory.
            Some(resize) => {
                resize.send_replace(size);
            }
            None => debug!(channel, ?size, "resize of a channel without a pty ignored"),
        }
    }
}

/// A channel's way to report its end to the connection, exactly once:
/// [`ChannelEnd::report`] frees the channel in the connection's table, then
/// queues the `Exit` frame. Dropped unreported (a task that ended early),
/// it still frees the channel.
#[derive(Debug)]
pub(crate) struct ChannelEnd {
    channel: u32,
    frames: mpsc::Sender<Frame>,
    done: mpsc::UnboundedSender<u32>,
    reported: bool,
}

impl ChannelEnd {
    /// Frees the channel, then sends `Exit` with `status` (none when the
    /// client is gone).
    pub(crate) async fn report(mut self, status: Option<ExitStatus>) {
        self.reported = true;
        // Before the Exit: the client may reuse the id once it sees it.
        let _ = self.done.send(self.channel);
        if let Some(status) = status {
            let _ = self
                .frames
                .send(Frame::Exit {
                    channel: self.channel,
                    status,
                })
                .await;
        }
    }
}

impl Drop for ChannelEnd {
    fn drop(&mut self) {
        if !self.reported {
            let _ = self.done.send(self.channel);
        }
    }
}
