//! The interactive terminal session loop, as ssh's `client_loop`: what is
//! typed goes through the escape filter to the remote terminal, what the
//! remote terminal prints goes to ours byte for byte, window changes follow
//! SIGWINCH, and the session ends with the remote status, `~.`, a local
//! signal or a lost connection.
//!
//! The loop is generic over the remote side ([`RemoteInput`] and
//! [`RemoteOutput`], two halves so input can wait for flow-control credit
//! while output keeps draining), over the local terminal ([`LocalTerminal`])
//! and over the local byte streams, so it runs the same against a real
//! connection and stdin/stdout as against in-memory fakes in tests.
//!
//! Raw mode itself is the caller's: it enters it ([`crate::terminal::RawMode`])
//! before calling [`run`] and the guard puts the terminal back however the
//! loop ends. Wiring it in `rsh-client`, once the pty session is open:
//!
//! ```text
//! let raw = RawMode::enter(std::io::stdin())?;
//! let input = Tty::raw_input(std::io::stdin())?;     // else tokio::io::stdin()
//! let output = TtyOutput::open(std::io::stdout())?;  // if stdout is a terminal
//! let end = session::run(
//!     Local { input, output, messages: tokio::io::stderr() },
//!     &raw, LocalSignals::install()?, EscapeFilter::new(escape_char),
//!     &remote_input, remote_output,
//! ).await;
//! drop(raw);  // before printing "Connection to HOST closed." (ssh does)
//! // Exited(status) -> the status as for commands; the rest -> 255, as ssh.
//! ```

use crate::error::ClientError;
use crate::escape::{EscapeAction, EscapeFilter};
use crate::terminal::RawMode;
use bytes::Bytes;
use rsh_proto::ExitStatus;
use rsh_proto::PtySize;
use std::future::Future;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// Bytes read from the local terminal at once (a paste can be large; typing
/// gives one byte at a time).
const INPUT_CHUNK: usize = 16 * 1024;

/// What the remote terminal did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEvent {
    /// It printed these bytes (stdout and stderr are one stream on a pty).
    Output(Bytes),
    /// Its session ended; nothing follows.
    Exit(ExitStatus),
}

/// The sending half of a remote terminal.
pub trait RemoteInput {
    /// Sends typed bytes, waiting for flow-control credit if need be.
    fn send(&self, data: Bytes) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// Ends the remote terminal's input (our stdin reached its end).
    fn close(&self) -> impl Future<Output = Result<(), ClientError>> + Send;
    /// Tells the remote terminal its new window size.
    fn resize(&self, size: PtySize) -> impl Future<Output = Result<(), ClientError>> + Send;
}

/// The receiving half of a remote terminal.
pub trait RemoteOutput {
    /// The next thing the remote terminal did; `Ok(None)` if its events
    /// ended without an exit status.
    fn next_event(
        &mut self,
    ) -> impl Future<Output = Result<Option<RemoteEvent>, ClientError>> + Send;
}

/// What the loop needs of the local terminal besides its bytes.
pub trait LocalTerminal {
    /// Its window size now, if known.
    fn window_size(&self) -> Option<PtySize>;
    /// Gives the terminal back and stops the client until it is continued
    /// (`~^Z`), then takes it again.
    ///
    /// # Errors
    /// If the terminal cannot be set.
    fn suspend(&self) -> std::io::Result<()>;
}

impl LocalTerminal for RawMode {
    fn window_size(&self) -> Option<PtySize> {
        RawMode::window_size(self)
    }

    fn suspend(&self) -> std::io::Result<()> {
        RawMode::suspend(self)
    }
}

/// A local signal the session reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalSignal {
    /// SIGWINCH: our window changed size.
    WindowChange,
    /// SIGTERM, SIGHUP, SIGINT or SIGQUIT (by number): end the session.
    /// In raw mode the keyboard sends none of these (Ctrl-C is a byte for
    /// the remote), so one of them comes from `kill` or a closed terminal.
    Terminate(i32),
}

/// Where the loop's [`LocalSignal`]s come from.
#[derive(Debug)]
pub struct LocalSignals {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Os {
        winch: tokio::signal::unix::Signal,
        term: tokio::signal::unix::Signal,
        hup: tokio::signal::unix::Signal,
        int: tokio::signal::unix::Signal,
        quit: tokio::signal::unix::Signal,
    },
    Channel(mpsc::UnboundedReceiver<LocalSignal>),
}

impl LocalSignals {
    /// Catches SIGWINCH, SIGTERM, SIGHUP, SIGINT and SIGQUIT for the
    /// session (the signals ssh's client loop catches). Must be called from
    /// a tokio runtime. The handlers stay for the life of the process, as
    /// tokio's do.
    ///
    /// # Errors
    /// If a handler cannot be installed.
    pub fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(LocalSignals {
            source: Source::Os {
                winch: signal(SignalKind::window_change())?,
                term: signal(SignalKind::terminate())?,
                hup: signal(SignalKind::hangup())?,
                int: signal(SignalKind::interrupt())?,
                quit: signal(SignalKind::quit())?,
            },
        })
    }

    /// Signals from a channel instead (tests, or a caller that already
    /// handles the OS's signals).
    pub fn from_channel(signals: mpsc::UnboundedReceiver<LocalSignal>) -> Self {
        LocalSignals {
            source: Source::Channel(signals),
        }
    }

    /// The next signal; `None` once no more can come.
    pub async fn recv(&mut self) -> Option<LocalSignal> {
        use nix::sys::signal::Signal;
        match &mut self.source {
            Source::Os {
                winch,
                term,
                hup,
                int,
                quit,
            } => {
                let terminate = |signal: Signal| Some(LocalSignal::Terminate(signal as i32));
                tokio::select! {
                    Some(()) = winch.recv() => Some(LocalSignal::WindowChange),
                    Some(()) = term.recv() => terminate(Signal::SIGTERM),
                    Some(()) = hup.recv() => terminate(Signal::SIGHUP),
                    Some(()) = int.recv() => terminate(Signal::SIGINT),
                    Some(()) = quit.recv() => terminate(Signal::SIGQUIT),
                    else => None,
                }
            }
            Source::Channel(signals) => signals.recv().await,
        }
    }
}

/// How a session ended; the caller turns it into an exit code (the remote
/// status, as for commands; ssh exits 255 for the others).
#[derive(Debug)]
pub enum SessionEnd {
    /// The remote session ended with this status.
    Exited(ExitStatus),
    /// The user typed `~.`.
    Disconnected,
    /// A local signal ended the session (its number).
    Signalled(i32),
    /// The connection ended before the remote session did.
    ConnectionLost(String),
    /// Our output could not be written (the terminal is gone).
    LocalOutput(std::io::Error),
}

/// The local side of a session: the bytes typed, where the remote output
/// goes, where the client's own messages (`~?` help) go.
#[derive(Debug)]
pub struct Local<I, O, M> {
    /// What the user types (stdin).
    pub input: I,
    /// Where the remote terminal's output goes (stdout).
    pub output: O,
    /// Where escape messages go (stderr, as in ssh).
    pub messages: M,
}

/// Runs an interactive session to its end.
///
/// The three parts run concurrently in one task: typed input (through
/// `escape`) to the remote, remote output to `local.output`, and signals
/// (a window change sends the new size; a terminating signal ends the
/// session). When our input ends, the remote input is closed and the session
/// goes on until the remote one ends, as ssh does.
pub async fn run<I, O, M, T, RI, RO>(
    local: Local<I, O, M>,
    terminal: &T,
    mut signals: LocalSignals,
    mut escape: EscapeFilter,
    remote_input: &RI,
    mut remote_output: RO,
) -> SessionEnd
where
    I: AsyncRead + Unpin,
    O: AsyncWrite + Unpin,
    M: AsyncWrite + Unpin,
    T: LocalTerminal,
    RI: RemoteInput,
    RO: RemoteOutput,
{
    let Local {
        mut input,
        mut output,
        mut messages,
    } = local;

    let typing = async {
        let mut buf = vec![0u8; INPUT_CHUNK];
        let mut out = Vec::with_capacity(INPUT_CHUNK);
        loop {
            let len = match input.read(&mut buf).await {
                Ok(0) => break,
                Ok(len) => len,
                Err(err) => {
                    tracing::debug!(cause = %err, "local input failed; treated as its end");
                    break;
                }
            };
            let mut rest = &buf[..len];
            loop {
                let (consumed, action) = escape.feed(rest, &mut out);
                rest = &rest[consumed..];
                if !out.is_empty() {
                    let data = Bytes::copy_from_slice(&out);
                    out.clear();
                    if let Err(err) = remote_input.send(data).await {
                        // The remote side stopped taking input (it is ending):
                        // its exit status or the lost connection ends the
                        // session, through the output.
                        tracing::debug!(cause = %err, "remote input closed");
                        return std::future::pending().await;
                    }
                }
                let Some(action) = action else { break };
                // A closed stderr is no reason to fail the session.
                let _ = write_flush(&mut messages, escape.action_echo(action).as_bytes()).await;
                match action {
                    EscapeAction::Disconnect => return SessionEnd::Disconnected,
                    EscapeAction::Help => {}
                    EscapeAction::Suspend => {
                        if let Err(err) = terminal.suspend() {
                            tracing::warn!(cause = %err, "cannot suspend");
                        }
                        // The window may have changed while we were stopped.
                        if let Some(size) = terminal.window_size() {
                            let _ = remote_input.resize(size).await;
                        }
                    }
                }
            }
        }
        if let Err(err) = remote_input.close().await {
            tracing::debug!(cause = %err, "cannot close the remote input");
        }
        std::future::pending().await
    };

    let printing = async {
        loop {
            match remote_output.next_event().await {
                Ok(Some(RemoteEvent::Output(data))) => {
                    if let Err(err) = write_flush(&mut output, &data).await {
                        return SessionEnd::LocalOutput(err);
                    }
                }
                Ok(Some(RemoteEvent::Exit(status))) => return SessionEnd::Exited(status),
                Ok(None) => {
                    return SessionEnd::ConnectionLost(
                        "the session ended without a status".to_owned(),
                    )
                }
                Err(err) => return SessionEnd::ConnectionLost(err.to_string()),
            }
        }
    };

    let signalled = async {
        while let Some(signal) = signals.recv().await {
            match signal {
                LocalSignal::WindowChange => {
                    if let Some(size) = terminal.window_size() {
                        if let Err(err) = remote_input.resize(size).await {
                            tracing::debug!(cause = %err, "cannot send the window size");
                        }
                    }
                }
                LocalSignal::Terminate(number) => return SessionEnd::Signalled(number),
            }
        }
        std::future::pending().await
    };

    // `biased`: the remote's exit status wins over a signal that arrives at
    // the same moment, and output is written before a `~.` typed after it.
    tokio::select! {
        biased;
        end = printing => end,
        end = signalled => end,
        end = typing => end,
    }
}

/// The sending half of a remote command's terminal, for [`run`].
#[derive(Debug, Clone)]
pub struct CommandInput {
    stdin: crate::command::StdinWriter,
    resizer: crate::command::Resizer,
}

impl CommandInput {
    /// The input half of `command` (its stdin and its window size).
    pub fn of(command: &crate::command::RemoteCommand) -> Self {
        CommandInput {
            stdin: command.stdin(),
            resizer: command.resizer(),
        }
    }
}

impl RemoteInput for CommandInput {
    async fn send(&self, data: Bytes) -> Result<(), ClientError> {
        self.stdin.write(data).await
    }

    async fn close(&self) -> Result<(), ClientError> {
        self.stdin.close().await
    }

    async fn resize(&self, size: PtySize) -> Result<(), ClientError> {
        self.resizer.send(size).await
    }
}

/// A remote command is the receiving half: on a pty, all its output is one
/// stream (a stray Stderr frame is shown too).
impl RemoteOutput for crate::command::RemoteCommand {
    async fn next_event(&mut self) -> Result<Option<RemoteEvent>, ClientError> {
        Ok(
            match crate::command::RemoteCommand::next_event(self).await? {
                Some(crate::command::Event::Stdout(data) | crate::command::Event::Stderr(data)) => {
                    Some(RemoteEvent::Output(data))
                }
                Some(crate::command::Event::Exit(status)) => Some(RemoteEvent::Exit(status)),
                None => None,
            },
        )
    }
}

/// A local window size as the protocol sends it: the same type now, kept
/// for the command line's use.
pub fn pty_size(size: PtySize) -> PtySize {
    size
}

/// The [`LocalTerminal`] of a session whose stdin is not a terminal (`-tt`
/// with a pipe): no size to report, nothing to suspend.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTerminal;

impl LocalTerminal for NoTerminal {
    fn window_size(&self) -> Option<PtySize> {
        None
    }

    fn suspend(&self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn write_flush(writer: &mut (impl AsyncWrite + Unpin), data: &[u8]) -> std::io::Result<()> {
    writer.write_all(data).await?;
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;
    use std::time::Duration;
    use tokio::io::{AsyncWriteExt, DuplexStream};

    /// What the loop did to the remote side.
    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Call {
        Send(Bytes),
        Close,
        Resize(PtySize),
    }

    struct FakeInput {
        calls: mpsc::UnboundedSender<Call>,
        /// Sends never complete: a remote whose window stays shut.
        stalled: bool,
        /// Sends fail: a remote whose input is gone.
        closed: bool,
    }

    impl RemoteInput for FakeInput {
        async fn send(&self, data: Bytes) -> Result<(), ClientError> {
            if self.stalled {
                return std::future::pending().await;
            }
            if self.closed {
                return Err(ClientError::StdinClosed);
            }
            let _ = self.calls.send(Call::Send(data));
            Ok(())
        }

        async fn close(&self) -> Result<(), ClientError> {
            let _ = self.calls.send(Call::Close);
            Ok(())
        }

        async fn resize(&self, size: PtySize) -> Result<(), ClientError> {
            let _ = self.calls.send(Call::Resize(size));
            Ok(())
        }
    }

    struct FakeOutput(mpsc::UnboundedReceiver<Result<RemoteEvent, ClientError>>);

    impl RemoteOutput for FakeOutput {
        async fn next_event(&mut self) -> Result<Option<RemoteEvent>, ClientError> {
            self.0.recv().await.transpose()
        }
    }

    struct FakeTerminal {
        size: Mutex<Option<PtySize>>,
        suspends: AtomicUsize,
    }

    impl LocalTerminal for FakeTerminal {
        fn window_size(&self) -> Option<PtySize> {
            *self.size.lock().expect("size")
        }

        fn suspend(&self) -> std::io::Result<()> {
            self.suspends.fetch_add(1, Ordering::SeqCst);
            // The user resized the window while the client was stopped.
            *self.size.lock().expect("size") = Some(size(100, 40));
            Ok(())
        }
    }

    fn size(cols: u16, rows: u16) -> PtySize {
        PtySize {
            cols,
            rows,
            ..PtySize::default()
        }
    }

    /// One session against fakes, with handles to drive and observe it.
    struct Harness {
        keyboard: DuplexStream,
        remote: mpsc::UnboundedSender<Result<RemoteEvent, ClientError>>,
        signals: mpsc::UnboundedSender<LocalSignal>,
        calls: mpsc::UnboundedReceiver<Call>,
        session: tokio::task::JoinHandle<(SessionEnd, Vec<u8>, Vec<u8>, usize)>,
    }

    fn start(stalled: bool, closed: bool) -> Harness {
        let (keyboard, input) = tokio::io::duplex(1024);
        let (remote, events) = mpsc::unbounded_channel();
        let (signals, signal_rx) = mpsc::unbounded_channel();
        let (calls_tx, calls) = mpsc::unbounded_channel();
        let session = tokio::spawn(async move {
            let terminal = FakeTerminal {
                size: Mutex::new(Some(size(80, 24))),
                suspends: AtomicUsize::new(0),
            };
            let remote_input = FakeInput {
                calls: calls_tx,
                stalled,
                closed,
            };
            let mut output = Vec::new();
            let mut messages = Vec::new();
            let end = run(
                Local {
                    input,
                    output: &mut output,
                    messages: &mut messages,
                },
                &terminal,
                LocalSignals::from_channel(signal_rx),
                EscapeFilter::new(Some(b'~')),
                &remote_input,
                FakeOutput(events),
            )
            .await;
            let suspends = terminal.suspends.load(Ordering::SeqCst);
            (end, output, messages, suspends)
        });
        Harness {
            keyboard,
            remote,
            signals,
            calls,
            session,
        }
    }

    impl Harness {
        async fn type_keys(&mut self, keys: &[u8]) {
            self.keyboard.write_all(keys).await.expect("typing");
        }

        /// The next call the loop made on the remote side.
        async fn call(&mut self) -> Call {
            tokio::time::timeout(Duration::from_secs(10), self.calls.recv())
                .await
                .expect("a call within 10 s")
                .expect("the session is running")
        }

        /// Bytes sent to the remote until `len` have arrived.
        async fn sent(&mut self, len: usize) -> Vec<u8> {
            let mut sent = Vec::new();
            while sent.len() < len {
                match self.call().await {
                    Call::Send(data) => sent.extend_from_slice(&data),
                    other => panic!("expected input, got {other:?}"),
                }
            }
            sent
        }

        fn remote(&self, event: RemoteEvent) {
            self.remote.send(Ok(event)).expect("session listening");
        }

        async fn end(self) -> (SessionEnd, Vec<u8>, Vec<u8>, usize) {
            tokio::time::timeout(Duration::from_secs(10), self.session)
                .await
                .expect("the session ends within 10 s")
                .expect("the session does not panic")
        }
    }

    fn exited(code: i32) -> RemoteEvent {
        RemoteEvent::Exit(ExitStatus::Code(code))
    }

    #[tokio::test]
    async fn remote_output_is_written_raw_and_the_exit_status_ends_the_session() {
        let h = start(false, false);
        h.remote(RemoteEvent::Output(Bytes::from_static(
            b"\x1b[?1049hhello\r\n",
        )));
        h.remote(RemoteEvent::Output(Bytes::from_static(b"\x00\xff")));
        h.remote(exited(3));
        let (end, output, messages, _) = h.end().await;
        assert!(
            matches!(end, SessionEnd::Exited(ExitStatus::Code(3))),
            "{end:?}"
        );
        assert_eq!(output, b"\x1b[?1049hhello\r\n\x00\xff");
        assert!(messages.is_empty());
    }

    #[tokio::test]
    async fn typed_bytes_control_characters_included_go_to_the_remote() {
        let mut h = start(false, false);
        h.type_keys(b"sleep 100\r\x03\x1a\x1c\x04").await;
        assert_eq!(h.sent(14).await, b"sleep 100\r\x03\x1a\x1c\x04");
        h.remote(exited(0));
        let (end, ..) = h.end().await;
        assert!(
            matches!(end, SessionEnd::Exited(ExitStatus::Code(0))),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn tilde_dot_disconnects_after_sending_the_line_before_it() {
        let mut h = start(false, false);
        h.type_keys(b"ls\r~.").await;
        assert_eq!(h.sent(3).await, b"ls\r");
        let (end, _, messages, _) = h.end().await;
        assert!(matches!(end, SessionEnd::Disconnected), "{end:?}");
        assert_eq!(messages, b"~.\r\n");
    }

    #[tokio::test]
    async fn tilde_tilde_sends_one_tilde() {
        let mut h = start(false, false);
        h.type_keys(b"~~x").await;
        assert_eq!(h.sent(2).await, b"~x");
        h.remote(exited(0));
        let (_, _, messages, _) = h.end().await;
        assert!(messages.is_empty());
    }

    #[tokio::test]
    async fn tilde_question_mark_prints_help_and_the_session_goes_on() {
        let mut h = start(false, false);
        h.type_keys(b"~?date\r").await;
        assert_eq!(h.sent(5).await, b"date\r");
        h.remote(exited(0));
        let (end, output, messages, _) = h.end().await;
        assert!(matches!(end, SessionEnd::Exited(_)), "{end:?}");
        assert!(output.is_empty(), "help goes to messages, not output");
        let messages = String::from_utf8(messages).expect("text");
        assert!(
            messages.contains("Supported escape sequences:\r\n"),
            "{messages:?}"
        );
    }

    #[tokio::test]
    async fn tilde_ctrl_z_suspends_then_resends_the_window_size() {
        let mut h = start(false, false);
        h.type_keys(b"~\x1aabc").await;
        assert_eq!(h.call().await, Call::Resize(size(100, 40)));
        assert_eq!(h.sent(3).await, b"abc");
        h.remote(exited(0));
        let (_, _, messages, suspends) = h.end().await;
        assert_eq!(suspends, 1);
        assert_eq!(messages, b"~^Z [suspend rsh-client]\r\n");
    }

    #[tokio::test]
    async fn sigwinch_sends_the_new_window_size() {
        let mut h = start(false, false);
        h.signals
            .send(LocalSignal::WindowChange)
            .expect("session listening");
        assert_eq!(h.call().await, Call::Resize(size(80, 24)));
        h.remote(exited(0));
        h.end().await;
    }

    #[tokio::test]
    async fn a_terminating_signal_ends_the_session() {
        let h = start(false, false);
        h.signals
            .send(LocalSignal::Terminate(15))
            .expect("session listening");
        let (end, ..) = h.end().await;
        assert!(matches!(end, SessionEnd::Signalled(15)), "{end:?}");
    }

    #[tokio::test]
    async fn a_lost_connection_ends_the_session() {
        let h = start(false, false);
        h.remote(RemoteEvent::Output(Bytes::from_static(b"partial")));
        h.remote
            .send(Err(ClientError::connection_lost("server gone")))
            .expect("session listening");
        let (end, output, ..) = h.end().await;
        assert!(
            matches!(&end, SessionEnd::ConnectionLost(reason) if reason.contains("server gone")),
            "{end:?}"
        );
        assert_eq!(output, b"partial");

        let h = start(false, false);
        drop(h.remote);
        let (end, ..) = tokio::time::timeout(Duration::from_secs(10), h.session)
            .await
            .expect("ends")
            .expect("no panic");
        assert!(matches!(end, SessionEnd::ConnectionLost(_)), "{end:?}");
    }

    #[tokio::test]
    async fn end_of_local_input_closes_the_remote_input_and_waits_for_the_exit() {
        let mut h = start(false, false);
        h.type_keys(b"exit\r").await;
        assert_eq!(h.sent(5).await, b"exit\r");
        drop(std::mem::replace(&mut h.keyboard, tokio::io::duplex(1).0));
        assert_eq!(h.call().await, Call::Close);
        h.remote(RemoteEvent::Output(Bytes::from_static(b"logout\r\n")));
        h.remote(exited(0));
        let (end, output, ..) = h.end().await;
        assert!(
            matches!(end, SessionEnd::Exited(ExitStatus::Code(0))),
            "{end:?}"
        );
        assert_eq!(output, b"logout\r\n");
    }

    #[tokio::test]
    async fn output_keeps_flowing_while_input_waits_for_credit() {
        // Input is stuck (no window), yet the output, the exit and the
        // signals are still served: no deadlock with a remote that is
        // itself blocked on its output.
        let mut h = start(true, false);
        h.type_keys(b"some input").await;
        h.remote(RemoteEvent::Output(Bytes::from_static(b"out")));
        h.signals
            .send(LocalSignal::WindowChange)
            .expect("session listening");
        assert_eq!(h.call().await, Call::Resize(size(80, 24)));
        h.remote(exited(7));
        let (end, output, ..) = h.end().await;
        assert!(
            matches!(end, SessionEnd::Exited(ExitStatus::Code(7))),
            "{end:?}"
        );
        assert_eq!(output, b"out");
    }

    #[tokio::test]
    async fn a_remote_that_stops_taking_input_still_delivers_its_status() {
        let mut h = start(false, true);
        h.type_keys(b"x").await;
        h.remote(exited(1));
        let (end, ..) = h.end().await;
        assert!(
            matches!(end, SessionEnd::Exited(ExitStatus::Code(1))),
            "{end:?}"
        );
    }

    #[tokio::test]
    async fn a_closed_local_output_ends_the_session() {
        struct Closed;
        impl AsyncWrite for Closed {
            fn poll_write(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                _: &[u8],
            ) -> std::task::Poll<std::io::Result<usize>> {
                std::task::Poll::Ready(Err(std::io::ErrorKind::BrokenPipe.into()))
            }
            fn poll_flush(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
            fn poll_shutdown(
                self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                std::task::Poll::Ready(Ok(()))
            }
        }
        let (_keyboard, input) = tokio::io::duplex(16);
        let (remote, events) = mpsc::unbounded_channel();
        let (calls, _calls_rx) = mpsc::unbounded_channel();
        let (_signals, signal_rx) = mpsc::unbounded_channel();
        remote
            .send(Ok(RemoteEvent::Output(Bytes::from_static(b"x"))))
            .expect("queued");
        let terminal = FakeTerminal {
            size: Mutex::new(None),
            suspends: AtomicUsize::new(0),
        };
        let end = run(
            Local {
                input,
                output: Closed,
                messages: Vec::new(),
            },
            &terminal,
            LocalSignals::from_channel(signal_rx),
            EscapeFilter::new(None),
            &FakeInput {
                calls,
                stalled: false,
                closed: false,
            },
            FakeOutput(events),
        )
        .await;
        assert!(matches!(end, SessionEnd::LocalOutput(_)), "{end:?}");
    }

    /// The pieces together on a real pseudo-terminal: in raw mode each key
    /// reaches the loop as typed (no line buffering, Ctrl-C and `\r` as
    /// bytes), and `~.` with no newline after it disconnects. In the pty's
    /// default cooked mode none of this would arrive.
    #[test]
    fn on_a_real_pty_in_raw_mode_keys_arrive_as_typed() {
        use std::io::Write;
        let _serial = crate::terminal::tests::serial();
        let pty = nix::pty::openpty(None, None).expect("openpty");
        let raw = RawMode::enter(&pty.slave).expect("raw mode");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let (end, sent) = runtime.block_on(async {
            let input = crate::terminal::Tty::raw_input(&pty.slave).expect("open the tty");
            let mut keyboard = std::fs::File::from(pty.master.try_clone().expect("dup"));
            keyboard.write_all(b"a\x03\r~.").expect("typing");
            let (calls_tx, mut calls) = mpsc::unbounded_channel();
            let (_remote, events) = mpsc::unbounded_channel();
            let (_signals, signal_rx) = mpsc::unbounded_channel();
            let terminal = FakeTerminal {
                size: Mutex::new(None),
                suspends: AtomicUsize::new(0),
            };
            let end = tokio::time::timeout(
                Duration::from_secs(10),
                run(
                    Local {
                        input,
                        output: Vec::new(),
                        messages: Vec::new(),
                    },
                    &terminal,
                    LocalSignals::from_channel(signal_rx),
                    EscapeFilter::new(Some(b'~')),
                    &FakeInput {
                        calls: calls_tx,
                        stalled: false,
                        closed: false,
                    },
                    FakeOutput(events),
                ),
            )
            .await;
            let mut sent = Vec::new();
            while let Ok(Call::Send(data)) = calls.try_recv() {
                sent.extend_from_slice(&data);
            }
            (end, sent)
        });
        drop(raw);
        let end = end.expect("the session sees ~. within 10 s");
        assert!(matches!(end, SessionEnd::Disconnected), "{end:?}");
        assert_eq!(sent, b"a\x03\r");
    }
}
