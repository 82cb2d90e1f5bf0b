//! One command or terminal session: spawned, supervised, finished.
//!
//! - **spawn** starts the program and hands back one `Spawned` value: its
//!   process group, where the client's stdin goes, the output streams to
//!   forward, the terminal (for a pty session), and the leader's exit
//!   status to come (from the [`crate::reaper`]). There are two ways to
//!   spawn, feeding the same loop: on pipes (`spawn_piped`: `SHELL -c
//!   COMMAND`, or the user's login shell reading its commands from stdin),
//!   and on a new pseudo-terminal (`spawn_pty`, see [`crate::pty`]: the
//!   login shell or `SHELL -c COMMAND`, stdout and stderr one stream).
//! - **supervise** pumps stdin and output under the channel's flow-control
//!   windows, delivers signals (to the terminal's foreground job under a
//!   pty) and resizes, and watches the timeout, the client and the server's
//!   shutdown, until it knows how the command ended ([`Outcome`]).
//! - **finish** ends what is left (the process group; under a pty the whole
//!   session, hung up first as a terminal is), then reports the end exactly
//!   once through the channel's [`ChannelEnd`]: the connection's table marks
//!   the channel free, then the `Exit` frame goes out (unless the client is
//!   gone).
//!
//! The command is over when its shell has exited and every output stream is
//! at end of file. A background process that keeps the pipes open cannot hold
//! the reply forever: once the shell has exited, output that stays idle for
//! [`ServerConfig::linger`] (while the client's window is open) ends the wait.
//! In every case, whatever is left of the process group afterwards gets
//! SIGTERM, then SIGKILL: a command leaves nothing behind unless it left its
//! group on purpose (`setsid`).
//!
//! Under a pty the shell puts each job in its own process group, so the unit
//! is the session instead: when the shell exits, what it left of the session
//! is ended at once (as sshd does; a job holding the terminal would keep the
//! output open for ever), and the output then reaches its end (EIO on the
//! master). The linger rule stays as a backstop for a process that left the
//! session but kept the terminal open. When the client goes away (or the
//! timeout or the shutdown grace expires) the terminal is hung up: SIGHUP to
//! the shell and the foreground job, then whatever of the session is left
//! is ended ([`pty::hang_up`]).
//!
//! Flow control: an output stream waits until its pipe is readable *before*
//! it takes credit from the shared output window, and reads at most what it
//! took; credit is never held while a pipe is idle, so any window from one
//! byte up works, however the client tops it up. Stdin window is granted out
//! of the server-wide [`StdinBudget`](crate::budget::StdinBudget).

use crate::budget::StdinBudget;
use crate::connection::ChannelEnd;
use crate::login::{self, Account};
use crate::peer::ConnectionInfo;
use crate::process_group;
use crate::pty::{self, PtyControl, PtyReader, PtyWriter};
use crate::reaper::{LeaderExit, Reaper};
use crate::ServerConfig;
use bytes::{BufMut, Bytes, BytesMut};
use rsh_proto::io::ChunkBuffers;
use rsh_proto::{Exec, ExitStatus, Frame, PtyRequest, PtySize, Window};
use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

/// What the connection keeps to talk to a running command.
#[derive(Debug)]
pub(crate) struct CommandInputs {
    /// Stdin bytes from the client, already checked against the window.
    pub stdin: mpsc::UnboundedReceiver<Bytes>,
    /// Signals (Linux numbering) the client asked to deliver.
    pub signals: mpsc::UnboundedReceiver<u8>,
    /// Credit for stdout+stderr bytes, granted by the client.
    pub output_window: Arc<Window>,
    /// Credit the client has for stdin bytes; the command grants it.
    pub stdin_credit: Arc<Window>,
    /// The latest terminal size the client sent (a pty session only):
    /// resizes that come faster than they are applied collapse into one.
    pub resizes: Option<watch::Receiver<PtySize>>,
}

/// The connection-wide things a command needs.
#[derive(Debug, Clone)]
pub(crate) struct CommandContext {
    pub config: Arc<ServerConfig>,
    pub frames: mpsc::Sender<Frame>,
    /// Cancelled when the client is gone: end the group, send nothing.
    pub client_gone: CancellationToken,
    /// Cancelled when the server shuts down: end the group after the grace.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub reaper: Reaper,
    pub stdin_budget: StdinBudget,
    /// Where the client is (`RSH_CONNECTION`).
    pub connection: Arc<ConnectionInfo>,
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

/// A started command, however it was started.
pub(crate) struct Spawned {
    /// The leader's pid, which is also the process group's id (and, under a
    /// pty, the session's).
    pub pgid: u32,
    pub stdin: Input,
    /// Stdout and stderr for a piped command; a terminal has one stream.
    pub outputs: Vec<(Stream, Output)>,
    /// The terminal of a pty session (resize, foreground job, hangup);
    /// `None` on pipes.
    pub terminal: Option<PtyControl>,
    pub leader: LeaderExit,
}

/// How supervision ended.
#[derive(Debug)]
enum Outcome {
    /// The shell exited and the output reached its end.
    Finished(ExitStatus),
    /// The shell exited; background processes held the output idle.
    Lingered(ExitStatus),
    TimedOut,
    ClientGone,
    ShutdownGraceOver,
    /// The leader's status can never come (the reaper stopped).
    LeaderLost,
}

#[derive(Debug, Default)]
struct Counters {
    stdout: AtomicU64,
    stderr: AtomicU64,
    stdin: AtomicU64,
}

impl Counters {
    fn output(&self) -> u64 {
        self.stdout.load(Ordering::Relaxed) + self.stderr.load(Ordering::Relaxed)
    }
}

/// Runs the command to its end and reports it through `end` (an `Exit`
/// frame unless the client is gone). Returns once the leader is reaped.
pub(crate) async fn run(exec: Exec, inputs: CommandInputs, ctx: CommandContext, end: ChannelEnd) {
    let started = Instant::now();
    let spawned = match spawn(&exec, &ctx).await {
        Ok(spawned) => spawned,
        Err(reason) => {
            warn!(%reason, "command failed to start");
            end.report(Some(ExitStatus::FailedToStart(reason))).await;
            return;
        }
    };
    tracing::Span::current().record("pid", spawned.pgid);
    debug!("command started");
    let pgid = spawned.pgid;
    let on_pty = spawned.terminal.is_some();
    let output_window = inputs.output_window.clone();
    let counters = Counters::default();
    let (outcome, exited, terminal, mut leader) =
        supervise(spawned, exec.channel, exec.timeout, inputs, &ctx, &counters).await;
    let status = finish(outcome, exited, pgid, terminal, &mut leader, &ctx.config).await;

    let bytes_out = counters.output();
    let bytes_in = counters.stdin.load(Ordering::Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    // The reply first; logging and cleanup are off the client's path.
    end.report(status.clone()).await;
    match (status, on_pty) {
        (Some(status), _) => {
            // Let the writer (likely queued on this very thread) put the
            // exit on the wire before we spend time on the log line.
            tokio::task::yield_now().await;
            if on_pty {
                info!(
                    ?status,
                    duration_ms, bytes_out, bytes_in, "session finished"
                );
            } else {
                info!(
                    ?status,
                    duration_ms, bytes_out, bytes_in, "command finished"
                );
            }
        }
        (None, true) => info!(
            status = "client gone",
            duration_ms, bytes_out, bytes_in, "session hung up"
        ),
        (None, false) => info!(
            status = "client gone",
            duration_ms, bytes_out, bytes_in, "command ended"
        ),
    }
    output_window.close();
    // Leftovers (background jobs): swept in the background if any. A pty
    // session's were swept when its shell exited or it was hung up.
    if !on_pty && process_group::group_exists(pgid) {
        let grace = ctx.config.kill_grace;
        ctx.tracker
            .spawn(async move { process_group::sweep(pgid, grace).await });
    }
}

/// Pumps and watches a started command until it is known how it ended.
/// Returns the outcome, the leader's status if it has exited, and the
/// leader's handle (to reap it if it has not).
async fn supervise(
    spawned: Spawned,
    channel: u32,
    timeout: Option<Duration>,
    inputs: CommandInputs,
    ctx: &CommandContext,
    counters: &Counters,
) -> (Outcome, Option<ExitStatus>, Option<PtyControl>, LeaderExit) {
    let Spawned {
        pgid,
        stdin,
        outputs,
        terminal,
        mut leader,
    } = spawned;
    let CommandInputs {
        stdin: incoming,
        mut signals,
        output_window,
        stdin_credit,
        mut resizes,
    } = inputs;
    let config = &ctx.config;

    let stdin_pump = pump_stdin(stdin, incoming, &stdin_credit, ctx, channel, counters);
    let output_pump = futures::future::join_all(outputs.into_iter().map(|(stream, output)| {
        pump_output(output, stream, channel, &output_window, ctx, counters)
    }));
    let timeout = async {
        match timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let shutdown_grace_over = async {
        ctx.shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::pin!(stdin_pump, output_pump, timeout, shutdown_grace_over);
    let mut signals_open = true;
    let mut stdin_done = false;
    let mut output_done = false;
    let mut exited: Option<ExitStatus> = None;
    let mut linger = tokio::time::interval(config.linger);
    let mut output_at_last_tick = 0;

    let outcome = loop {
        tokio::select! {
            // In order, not at random: the pumps first, so output that
            // became readable in the same wake-up as a linger tick (a
            // server starved of CPU for the whole linger period) is read
            // before the tick decides the output is idle and drops it.
            biased;
            () = &mut stdin_pump, if !stdin_done => stdin_done = true,
            _ = &mut output_pump, if !output_done => {
                output_done = true;
                if let Some(status) = &exited {
                    break Outcome::Finished(status.clone());
                }
            }
            status = leader.wait(), if exited.is_none() => match status {
                Some(status) => {
                    if let Some(terminal) = &terminal {
                        // The jobs the shell left would hold the terminal,
                        // and so the output, open for ever.
                        ctx.tracker.spawn(
                            pty::sweep_after_exit(terminal.clone(), config.kill_grace)
                                .in_current_span(),
                        );
                    }
                    if output_done {
                        break Outcome::Finished(status);
                    }
                    exited = Some(status);
                    linger.reset();
                    output_at_last_tick = counters.output();
                }
                None => break Outcome::LeaderLost,
            },
            _ = linger.tick(), if exited.is_some() && !output_done => {
                let output = counters.output();
                // Idle output with an open window: a background process holds the pipes.
                if output == output_at_last_tick && output_window.available() > 0 {
                    if let Some(status) = &exited {
                        break Outcome::Lingered(status.clone());
                    }
                }
                output_at_last_tick = output;
            }
            signal = signals.recv(), if signals_open => match signal {
                // Under a pty, where a typed Ctrl-C goes: the foreground job.
                Some(number) => deliver_signal(
                    terminal
                        .as_ref()
                        .and_then(PtyControl::foreground_group)
                        .unwrap_or(pgid),
                    number,
                ),
                None => signals_open = false,
            },
            size = next_resize(&mut resizes) => {
                if let Some(terminal) = &terminal {
                    debug!(cols = size.cols, rows = size.rows, "resizing the terminal");
                    if let Err(err) = terminal.resize(size) {
                        warn!(cause = %err, "cannot resize the terminal");
                    }
                }
            }
            // Both still apply after the shell exits, while a background job
            // keeps the output flowing.
            () = &mut timeout => break Outcome::TimedOut,
            () = ctx.client_gone.cancelled() => break Outcome::ClientGone,
            () = &mut shutdown_grace_over => break Outcome::ShutdownGraceOver,
        }
    };
    (outcome, exited, terminal, leader)
}

/// The next size the client sent; pending for ever once there can be none.
async fn next_resize(resizes: &mut Option<watch::Receiver<PtySize>>) -> PtySize {
    if let Some(rx) = resizes {
        if rx.changed().await.is_ok() {
            return *rx.borrow_and_update();
        }
    }
    *resizes = None;
    std::future::pending().await
}

/// Ends the group as the outcome requires and says what to report: the
/// status for the `Exit` frame, or `None` when the client is gone.
async fn finish(
    outcome: Outcome,
    exited: Option<ExitStatus>,
    pgid: u32,
    terminal: Option<PtyControl>,
    leader: &mut LeaderExit,
    config: &ServerConfig,
) -> Option<ExitStatus> {
    let grace = config.kill_grace;
    let what = if terminal.is_some() {
        "session"
    } else {
        "process group"
    };
    match outcome {
        Outcome::Finished(status) => Some(status),
        Outcome::Lingered(status) => {
            debug!("output held open after the shell exited; ending the {what}");
            Some(status)
        }
        Outcome::TimedOut => {
            info!("command timed out; ending its {what}");
            end_all(pgid, terminal, leader, grace).await;
            Some(ExitStatus::TimedOut)
        }
        Outcome::ShutdownGraceOver => {
            info!("server shutting down; ending the command's {what}");
            let ended = end_all(pgid, terminal, leader, grace).await;
            // The shell's own status if it had exited; else how it was ended.
            Some(
                exited
                    .or(ended)
                    .unwrap_or(ExitStatus::Signal(rsh_proto::signal::KILL)),
            )
        }
        Outcome::LeaderLost => {
            warn!("the command's exit status was lost; ending its {what}");
            end_all(pgid, terminal, leader, grace).await;
            // "Neither a code nor a signal" (PROTOCOL.md §8.1).
            Some(ExitStatus::Code(-1))
        }
        Outcome::ClientGone => {
            info!("client gone; ending the command's {what}");
            end_all(pgid, terminal, leader, grace).await;
            None
        }
    }
}

/// Ends a command's process group, or hangs a pty session up as a terminal
/// is and ends what is left of it; the leader's status, if it could be had.
async fn end_all(
    pgid: u32,
    terminal: Option<PtyControl>,
    leader: &mut LeaderExit,
    grace: Duration,
) -> Option<ExitStatus> {
    match terminal {
        None => process_group::terminate(pgid, leader, grace).await,
        Some(terminal) => {
            pty::hang_up(terminal, grace).await;
            // Bounded: the reaper may be gone (server stopping).
            tokio::time::timeout(AFTER_KILL, leader.wait())
                .await
                .ok()
                .flatten()
        }
    }
}

/// After SIGKILL, how long to wait for a session leader's status.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Starts what `exec` asks for: on a pty if it asks for one, else on pipes.
async fn spawn(exec: &Exec, ctx: &CommandContext) -> Result<Spawned, String> {
    match &exec.pty {
        Some(request) => spawn_pty(exec, request, ctx).await,
        None if exec.login_shell => {
            // NSS may read files or ask a daemon: off the runtime.
            let account = tokio::task::spawn_blocking(login::account)
                .await
                .map_err(|err| format!("cannot look the user up: {err}"))?;
            spawn_piped(exec, Some(&account), ctx)
        }
        None => spawn_piped(exec, None, ctx),
    }
}

/// Starts a login shell or `SHELL -c COMMAND` on a new pty, in its own
/// session (see [`crate::pty`]).
async fn spawn_pty(
    exec: &Exec,
    request: &PtyRequest,
    ctx: &CommandContext,
) -> Result<Spawned, String> {
    let spec = pty::PtySpec {
        program: if exec.login_shell {
            pty::Program::LoginShell
        } else {
            pty::Program::Command(exec.command.clone())
        },
        term: request.term.clone(),
        size: request.size,
        cwd: exec.cwd.clone(),
        env: exec.env.clone(),
        connection: (*ctx.connection).clone(),
    };
    let ((child, leader), terminal) = pty::spawn_with(&spec, &ctx.config.shell, |start| {
        ctx.reaper.spawn_with(start)
    })
    .await
    .map_err(|err| err.to_string())?;
    // The `Child` is never waited on: the reaper has its pid.
    drop(child);
    tracing::Span::current().record("tty", tracing::field::display(terminal.tty.display()));
    Ok(Spawned {
        pgid: terminal.sid,
        stdin: Input::Pty(terminal.writer),
        outputs: vec![(Stream::Stdout, Output::Pty(terminal.reader))],
        terminal: Some(terminal.control),
        leader,
    })
}

/// Spawns `SHELL -c COMMAND`, or with `login` the user's login shell (which
/// then reads its commands from stdin, as `ssh HOST < script.sh` does), in
/// its own process group with its three standard streams on pipes.
fn spawn_piped(
    exec: &Exec,
    login: Option<&Account>,
    ctx: &CommandContext,
) -> Result<Spawned, String> {
    let config = &ctx.config;
    // std's Command, not tokio's: tokio reaps its children itself, and the
    // reaper must be the only one waiting (see `crate::reaper`).
    let program = match login {
        Some(account) => &account.shell,
        None => &config.shell,
    };
    let mut command = std::process::Command::new(program);
    match login {
        Some(account) => {
            // As sshd starts a session's shell: a login shell, told who it
            // is; then the request's variables on top.
            command
                .arg0(login::login_arg0(&account.shell))
                .env("HOME", &account.home)
                .env("USER", &account.name)
                .env("LOGNAME", &account.name)
                .env("SHELL", &account.shell);
        }
        None => {
            // SHELL names the shell that runs the command, as sshd sets it:
            // tools rely on it remotely (GNU parallel's worker execs
            // `$SHELL`), and a daemon started by init may have none.
            command
                .arg("-c")
                .arg(OsStr::from_bytes(&exec.command))
                .env("SHELL", &config.shell);
        }
    }
    command
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Like ssh: commands start in the home directory, and a relative
    // directory is taken from there, not from wherever the daemon started.
    let home = match login {
        Some(account) => Some(account.home.clone()),
        None => std::env::var_os("HOME").map(std::path::PathBuf::from),
    };
    let cwd = exec
        .cwd
        .as_deref()
        .map(|cwd| std::path::Path::new(OsStr::from_bytes(cwd)));
    match (cwd, &home) {
        (Some(cwd), Some(home)) if cwd.is_relative() => {
            command.current_dir(home.join(cwd));
        }
        (Some(cwd), _) => {
            command.current_dir(cwd);
        }
        (None, Some(home)) => {
            command.current_dir(home);
        }
        (None, None) => {}
    }
    for (key, value) in &exec.env {
        command.env(OsStr::from_bytes(key), OsStr::from_bytes(value));
    }
    // What the server knows to be true, as sshd's SSH_CONNECTION.
    command.env("RSH_CONNECTION", ctx.connection.to_env());
    let (mut child, leader) = ctx
        .reaper
        .spawn(&mut command)
        .map_err(|err| match &exec.cwd {
            Some(cwd) => format!(
                "cannot run {} in {}: {err}",
                program.display(),
                String::from_utf8_lossy(cwd)
            ),
            None => format!("cannot run {}: {err}", program.display()),
        })?;
    let pgid = child.id();
    let pipes = (|| {
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            return Err(std::io::Error::other("missing pipe"));
        };
        Ok((
            pipe::Sender::from_owned_fd(OwnedFd::from(stdin))?,
            pipe::Receiver::from_owned_fd(OwnedFd::from(stdout))?,
            pipe::Receiver::from_owned_fd(OwnedFd::from(stderr))?,
        ))
    })();
    // The `Child` is never waited on: the reaper has its pid.
    drop(child);
    match pipes {
        Ok((stdin, stdout, stderr)) => Ok(Spawned {
            pgid,
            stdin: Input::Pipe(stdin),
            outputs: vec![
                (Stream::Stdout, Output::Pipe(stdout)),
                (Stream::Stderr, Output::Pipe(stderr)),
            ],
            terminal: None,
            leader,
        }),
        Err(err) => {
            // Started but unusable: end it (the reaper reaps it).
            process_group::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            Err(format!("internal error setting up the pipes: {err}"))
        }
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

fn deliver_signal(pgid: u32, number: u8) {
    match nix::sys::signal::Signal::try_from(i32::from(number)) {
        Ok(signal) => {
            debug!(%signal, pgid, "delivering signal to the process group");
            process_group::signal_group(pgid, signal);
        }
        Err(_) => warn!(number, "ignoring request for an unknown signal"),
    }
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
async fn pump_output(
    mut output: Output,
    stream: Stream,
    channel: u32,
    window: &Window,
    ctx: &CommandContext,
    counters: &Counters,
) {
    let chunk = ctx.config.chunk_size.clamp(1, rsh_proto::MAX_DATA_LEN);
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
        if ctx.frames.send(frame).await.is_err() {
            return;
        }
    }
}

/// Feeds the command's stdin and keeps the client's stdin window topped up
/// to `ServerConfig::stdin_window`, out of the server-wide budget: bytes
/// written to the pipe go back to the budget and are granted again, as the
/// budget allows. A command that does not read stops the client's stdin on
/// this channel only. Ends (closing the command's stdin) at the client's
/// `StdinEnd`; whatever the channel held of the budget returns then.
async fn pump_stdin(
    mut sink: Input,
    mut incoming: mpsc::UnboundedReceiver<Bytes>,
    credit: &Window,
    ctx: &CommandContext,
    channel: u32,
    counters: &Counters,
) {
    let window = u64::from(ctx.config.stdin_window);
    let mut lease = ctx.stdin_budget.lease();
    let mut enlarged = false;
    loop {
        let want = window.saturating_sub(lease.held());
        // Top up only once half the window is used, as ssh does: a grant
        // per Stdin frame would put one more frame on the wire (and one more
        // wake-up in the client) for every keystroke of a terminal session.
        let top_up = want > 0 && lease.held() <= window / 2;
        tokio::select! {
            // Data first: a client that already ended stdin (most one-shot
            // commands) is granted nothing, one frame fewer per command.
            biased;
            data = incoming.recv() => {
                let Some(data) = data else { break };
                if !enlarged && data.len() >= ENLARGE_PIPE_AFTER {
                    if let Some(fd) = sink.pipe_fd() {
                        enlarge_pipe(fd);
                    }
                    enlarged = true;
                }
                if let Err(err) = sink.write_all(&data).await {
                    // The command closed its stdin: grant no more credit, so
                    // the client stops sending what nobody will read. Its
                    // writer gets `StdinClosed` when the command ends.
                    debug!(cause = %err, "command's stdin closed");
                    break;
                }
                counters
                    .stdin
                    .fetch_add(data.len() as u64, Ordering::Relaxed);
                lease.give_back(data.len() as u64);
            }
            taken = ctx.stdin_budget.take(want), if top_up => {
                lease.add(taken);
                // Credit first, then the frame: the client may send as soon
                // as it reads it.
                credit.grant(taken);
                let increment = u32::try_from(taken).unwrap_or(u32::MAX);
                if ctx
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
    drop(sink);
}
