//! The middle layer: one running remote command on a channel of a
//! [`crate::connection`]: its events in, its stdin, signals and window
//! sizes out.

use crate::connection::{ChannelEvent, OpenHandle, Shared, OUTPUT_WINDOW};
use crate::error::ClientError;
use bytes::Bytes;
use rsh_proto::{ExitStatus, Frame, PtySize, Window, MAX_DATA_LEN};
use std::sync::Arc;
use tokio::sync::mpsc;

/// Everything a finished command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// All of its stdout.
    pub stdout: Vec<u8>,
    /// All of its stderr.
    pub stderr: Vec<u8>,
    /// How it ended.
    pub status: ExitStatus,
}

/// Something a remote command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// It wrote these bytes to stdout.
    Stdout(Bytes),
    /// It wrote these bytes to stderr.
    Stderr(Bytes),
    /// It ended; no event follows.
    Exit(ExitStatus),
}

/// A command running on the server.
///
/// Its output arrives through [`RemoteCommand::next_event`]; the server may
/// only run ahead of the caller by the channel's window, so a caller that
/// stops calling stops the remote command (and only it). Dropping the handle
/// detaches it: its output is then read and discarded.
#[derive(Debug)]
pub struct RemoteCommand {
    channel: u32,
    shared: Arc<Shared>,
    /// Keeps the connection open while the command is in hand.
    _open: Arc<OpenHandle>,
    events: mpsc::UnboundedReceiver<ChannelEvent>,
    stdin: StdinWriter,
    /// Output bytes consumed since the last window grant.
    consumed: u64,
    finished: bool,
}

impl RemoteCommand {
    pub(crate) fn new(
        channel: u32,
        shared: Arc<Shared>,
        open: Arc<OpenHandle>,
        events: mpsc::UnboundedReceiver<ChannelEvent>,
        stdin_window: Arc<Window>,
    ) -> Self {
        RemoteCommand {
            channel,
            stdin: StdinWriter {
                channel,
                shared: shared.clone(),
                window: stdin_window,
            },
            shared,
            _open: open,
            events,
            consumed: 0,
            finished: false,
        }
    }

    /// The channel id this command runs on.
    pub fn channel(&self) -> u32 {
        self.channel
    }

    /// The next thing the command did: output, then exactly one
    /// [`Event::Exit`]; `None` after that.
    ///
    /// # Errors
    /// [`ClientError::Refused`] if the server refused to run it,
    /// [`ClientError::ConnectionLost`] if the connection ended first.
    pub async fn next_event(&mut self) -> Result<Option<Event>, ClientError> {
        if self.finished {
            return Ok(None);
        }
        let Some(event) = self.events.recv().await else {
            self.finished = true;
            return Err(self.shared.lost_error());
        };
        match event {
            ChannelEvent::Stdout(data) => {
                self.consumed(data.len()).await;
                Ok(Some(Event::Stdout(data)))
            }
            ChannelEvent::Stderr(data) => {
                self.consumed(data.len()).await;
                Ok(Some(Event::Stderr(data)))
            }
            ChannelEvent::Exit(status) => {
                self.finished = true;
                Ok(Some(Event::Exit(status)))
            }
            ChannelEvent::Refused { kind, message } => {
                self.finished = true;
                Err(ClientError::Refused { kind, message })
            }
            ChannelEvent::Lost(reason) => {
                self.finished = true;
                Err(reason.into_error())
            }
        }
    }

    /// Tops the server's window up once a quarter of it has been consumed,
    /// so output keeps flowing without a grant per chunk.
    async fn consumed(&mut self, bytes: usize) {
        self.consumed += bytes as u64;
        if self.consumed < u64::from(OUTPUT_WINDOW / 4) {
            return;
        }
        let increment = self.consumed as u32;
        self.consumed = 0;
        {
            let mut channels = self.shared.channels();
            match channels.get_mut(&self.channel) {
                Some(entry) => entry.output_allowed += u64::from(increment),
                None => return,
            }
        }
        let _ = self
            .shared
            .frames
            .send(Frame::WindowAdjust {
                channel: self.channel,
                increment,
            })
            .await;
    }

    /// A handle to feed the command's stdin, usable from another task.
    pub fn stdin(&self) -> StdinWriter {
        self.stdin.clone()
    }

    /// Sends bytes to the command's stdin (see [`StdinWriter::write`]).
    ///
    /// # Errors
    /// As [`StdinWriter::write`].
    pub async fn write_stdin(&self, data: impl Into<Bytes>) -> Result<(), ClientError> {
        self.stdin.write(data.into()).await
    }

    /// Ends the command's stdin.
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`].
    pub async fn close_stdin(&self) -> Result<(), ClientError> {
        self.stdin.close().await
    }

    /// Delivers a signal (see [`crate::signal`]) to the command's process
    /// group.
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`].
    pub async fn signal(&self, signal: u8) -> Result<(), ClientError> {
        self.signaller().send(signal).await
    }

    /// A handle to signal the command from another task (a Ctrl-C handler).
    pub fn signaller(&self) -> Signaller {
        Signaller {
            channel: self.channel,
            shared: self.shared.clone(),
        }
    }

    /// Tells the server the command's terminal has a new size (see
    /// [`Resizer::send`]).
    ///
    /// # Errors
    /// As [`Resizer::send`].
    pub async fn resize(&self, size: PtySize) -> Result<(), ClientError> {
        self.resizer().send(size).await
    }

    /// A handle to resize the command's pty from another task (a SIGWINCH
    /// handler).
    pub fn resizer(&self) -> Resizer {
        Resizer {
            channel: self.channel,
            shared: self.shared.clone(),
        }
    }

    /// Reads every event to the end and returns the whole output.
    ///
    /// # Errors
    /// As [`RemoteCommand::next_event`].
    pub async fn collect(mut self) -> Result<Output, ClientError> {
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        loop {
            match self.next_event().await? {
                Some(Event::Stdout(data)) => stdout.extend_from_slice(&data),
                Some(Event::Stderr(data)) => stderr.extend_from_slice(&data),
                Some(Event::Exit(status)) => {
                    return Ok(Output {
                        stdout,
                        stderr,
                        status,
                    })
                }
                None => {
                    return Err(ClientError::connection_lost(
                        "command already finished".to_owned(),
                    ))
                }
            }
        }
    }
}

/// Feeds one command's stdin, within the window the server grants.
#[derive(Debug, Clone)]
pub struct StdinWriter {
    channel: u32,
    shared: Arc<Shared>,
    window: Arc<Window>,
}

impl StdinWriter {
    /// Sends bytes, waiting for window when the command is not keeping up.
    ///
    /// # Errors
    /// [`ClientError::StdinClosed`] once the command has ended,
    /// [`ClientError::ConnectionLost`] if the connection is gone.
    pub async fn write(&self, mut data: Bytes) -> Result<(), ClientError> {
        while !data.is_empty() {
            let want = data.len().min(MAX_DATA_LEN);
            let granted = tokio::select! {
                granted = self.window.reserve(want) => granted,
                () = self.shared.closed.cancelled() => None,
            };
            let Some(granted) = granted else {
                return Err(if self.shared.closed.is_cancelled() {
                    self.shared.lost_error()
                } else {
                    ClientError::StdinClosed
                });
            };
            let chunk = data.split_to(granted);
            self.shared
                .frames
                .send(Frame::Stdin {
                    channel: self.channel,
                    data: chunk,
                })
                .await
                .map_err(|_| self.shared.lost_error())?;
        }
        Ok(())
    }

    /// Ends the command's stdin (it reads end of file).
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`].
    pub async fn close(&self) -> Result<(), ClientError> {
        self.shared
            .frames
            .send(Frame::StdinEnd {
                channel: self.channel,
            })
            .await
            .map_err(|_| self.shared.lost_error())
    }
}

/// Sends signals to one remote command.
#[derive(Debug, Clone)]
pub struct Signaller {
    channel: u32,
    shared: Arc<Shared>,
}

impl Signaller {
    /// Delivers `signal` (see [`crate::signal`]) to the command's process
    /// group.
    ///
    /// # Errors
    /// [`ClientError::ConnectionLost`].
    pub async fn send(&self, signal: u8) -> Result<(), ClientError> {
        self.shared
            .frames
            .send(Frame::Signal {
                channel: self.channel,
                signal,
            })
            .await
            .map_err(|_| self.shared.lost_error())
    }
}

/// Sends terminal size changes for one remote command's pty.
#[derive(Debug, Clone)]
pub struct Resizer {
    channel: u32,
    shared: Arc<Shared>,
}

impl Resizer {
    /// Sets the remote pty's size; the server ignores it for a command
    /// without a pty, or one that has ended.
    ///
    /// # Errors
    /// [`ClientError::Unsupported`] on a version-1 connection (which has no
    /// ptys), [`ClientError::ConnectionLost`].
    pub async fn send(&self, size: PtySize) -> Result<(), ClientError> {
        if self.shared.version < 2 {
            return Err(ClientError::Unsupported {
                what: "terminal sessions (pty)",
                version: self.shared.version,
            });
        }
        self.shared
            .frames
            .send(Frame::Resize {
                channel: self.channel,
                size,
            })
            .await
            .map_err(|_| self.shared.lost_error())
    }
}
