//! One command: `sh -c COMMAND` in its own process group, its pipes pumped
//! under the channel's flow-control windows.
//!
//! The command is over when its shell has exited and both output pipes are at
//! end of file. A background process that keeps the pipes open cannot hold the
//! reply forever: once the shell has exited, output that stays idle for
//! [`ServerConfig::linger`] (while the client's window is open) ends the wait.
//! In every case, whatever is left of the process group afterwards gets
//! SIGTERM, then SIGKILL: a command leaves nothing behind unless it left its
//! group on purpose (`setsid`).

use crate::process_group;
use crate::ServerConfig;
use bytes::{BufMut, Bytes};
use rsh_proto::io::ChunkBuffers;
use rsh_proto::{Exec, ExitStatus, Frame, Window};
use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

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
}

/// Why the command loop stopped.
#[derive(Debug)]
enum Outcome {
    Finished(std::process::ExitStatus),
    Lingered(std::process::ExitStatus),
    TimedOut,
    ClientGone,
    ShutdownGraceOver,
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

/// Runs the command to its end and sends its `Exit` frame (unless the client
/// is gone). Returns once the leader is reaped.
pub(crate) async fn run(
    exec: Exec,
    inputs: CommandInputs,
    ctx: CommandContext,
    finished: Arc<AtomicBool>,
) {
    let started = Instant::now();
    let channel = exec.channel;
    let config = ctx.config.clone();
    let mut child = match spawn(&exec, &config) {
        Ok(child) => child,
        Err(reason) => {
            warn!(%reason, "command failed to start");
            finished.store(true, Ordering::Release);
            let _ = ctx
                .frames
                .send(Frame::Exit {
                    channel,
                    status: ExitStatus::FailedToStart(reason),
                })
                .await;
            return;
        }
    };
    let Some(pgid) = child.id() else {
        // Cannot happen right after spawn; still, the client gets its exit.
        warn!("command vanished before it could be tracked");
        finished.store(true, Ordering::Release);
        let status = child
            .wait()
            .await
            .map_or(ExitStatus::Signal(rsh_proto::signal::KILL), exit_status);
        let _ = ctx.frames.send(Frame::Exit { channel, status }).await;
        return;
    };
    tracing::Span::current().record("pid", pgid);
    debug!("command started");

    let counters = Counters::default();
    let (Some(stdin), Some(stdout), Some(stderr)) =
        (child.stdin.take(), child.stdout.take(), child.stderr.take())
    else {
        // Cannot happen: all three were configured as pipes.
        process_group::terminate(pgid, &mut child, config.kill_grace).await;
        finished.store(true, Ordering::Release);
        let status = ExitStatus::FailedToStart("internal error: missing pipe".to_owned());
        let _ = ctx.frames.send(Frame::Exit { channel, status }).await;
        return;
    };

    // Credit first, then the frame: the client may send as soon as it reads
    // it. A client that already ended stdin (most one-shot commands) needs
    // none: one frame and one wake-up fewer per command.
    if !inputs.stdin.is_closed() {
        inputs.stdin_credit.grant(u64::from(config.stdin_window));
        if ctx
            .frames
            .send(Frame::WindowAdjust {
                channel,
                increment: config.stdin_window,
            })
            .await
            .is_err()
        {
            ctx.client_gone.cancel();
        }
    }

    let stdin_pump = pump_stdin(
        stdin,
        inputs.stdin,
        &inputs.stdin_credit,
        &ctx,
        channel,
        &counters,
    );
    let output_pump = async {
        tokio::join!(
            pump_output(
                stdout,
                Stream::Stdout,
                channel,
                &inputs.output_window,
                &ctx,
                &counters
            ),
            pump_output(
                stderr,
                Stream::Stderr,
                channel,
                &inputs.output_window,
                &ctx,
                &counters
            ),
        )
    };
    let timeout = async {
        match exec.timeout {
            Some(limit) => tokio::time::sleep(limit).await,
            None => std::future::pending().await,
        }
    };
    let shutdown_grace_over = async {
        ctx.shutdown.cancelled().await;
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::pin!(stdin_pump, output_pump, timeout, shutdown_grace_over);
    let mut signals = inputs.signals;
    let mut signals_open = true;
    let mut stdin_done = false;
    let mut output_done = false;
    let mut exited: Option<std::process::ExitStatus> = None;
    let mut linger = tokio::time::interval(config.linger);
    let mut output_at_last_tick = 0;

    let outcome = loop {
        tokio::select! {
            () = &mut stdin_pump, if !stdin_done => stdin_done = true,
            _ = &mut output_pump, if !output_done => {
                output_done = true;
                if let Some(status) = exited {
                    break Outcome::Finished(status);
                }
            }
            status = child.wait(), if exited.is_none() => match status {
                Ok(status) => {
                    if output_done {
                        break Outcome::Finished(status);
                    }
                    exited = Some(status);
                    linger.reset();
                    output_at_last_tick = counters.output();
                }
                Err(err) => {
                    warn!(cause = %err, "waiting for the command failed");
                    break Outcome::ClientGone;
                }
            },
            _ = linger.tick(), if exited.is_some() && !output_done => {
                let output = counters.output();
                // Idle output with an open window: a background process holds the pipes.
                if output == output_at_last_tick && inputs.output_window.available() > 0 {
                    if let Some(status) = exited {
                        break Outcome::Lingered(status);
                    }
                }
                output_at_last_tick = output;
            }
            signal = signals.recv(), if signals_open => match signal {
                Some(number) => deliver_signal(pgid, number),
                None => signals_open = false,
            },
            // Both still apply after the shell exits, while a background job
            // keeps the output flowing.
            () = &mut timeout => break Outcome::TimedOut,
            () = ctx.client_gone.cancelled() => break Outcome::ClientGone,
            () = &mut shutdown_grace_over => break Outcome::ShutdownGraceOver,
        }
    };

    let status = match outcome {
        Outcome::Finished(status) => Some(exit_status(status)),
        Outcome::Lingered(status) => {
            debug!("output pipes held open after the shell exited; ending the group");
            Some(exit_status(status))
        }
        Outcome::TimedOut => {
            info!("command timed out; ending its process group");
            process_group::terminate(pgid, &mut child, config.kill_grace).await;
            Some(ExitStatus::TimedOut)
        }
        Outcome::ShutdownGraceOver => {
            info!("server shutting down; ending the command's process group");
            let ended = process_group::terminate(pgid, &mut child, config.kill_grace).await;
            // The shell's own status if it had exited; else how it was ended.
            Some(
                exited
                    .or(ended)
                    .map_or(ExitStatus::Signal(rsh_proto::signal::KILL), exit_status),
            )
        }
        Outcome::ClientGone => {
            info!("client gone; ending the command's process group");
            process_group::terminate(pgid, &mut child, config.kill_grace).await;
            None
        }
    };
    let bytes_out = counters.output();
    let bytes_in = counters.stdin.load(Ordering::Relaxed);
    let duration_ms = started.elapsed().as_millis() as u64;
    // The reply first; logging and cleanup are off the client's path.
    match &status {
        Some(status) => {
            finished.store(true, Ordering::Release);
            let _ = ctx
                .frames
                .send(Frame::Exit {
                    channel,
                    status: status.clone(),
                })
                .await;
            // Let the writer (likely queued on this very thread) put the
            // exit on the wire before we spend time on the log line.
            tokio::task::yield_now().await;
            info!(
                ?status,
                duration_ms, bytes_out, bytes_in, "command finished"
            );
        }
        None => info!(
            status = "client gone",
            duration_ms, bytes_out, bytes_in, "command ended"
        ),
    }
    inputs.output_window.close();
    // Leftovers (background jobs): swept in the background if any.
    process_group::reap_group(pgid);
    if process_group::group_exists(pgid) {
        let grace = config.kill_grace;
        ctx.tracker
            .spawn(async move { process_group::sweep(pgid, grace).await });
    }
}

fn spawn(exec: &Exec, config: &ServerConfig) -> Result<Child, String> {
    let mut command = tokio::process::Command::new(&config.shell);
    command
        .arg("-c")
        .arg(OsStr::from_bytes(&exec.command))
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Like ssh: commands start in the home directory, and a relative
    // directory is taken from there, not from wherever the daemon started.
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
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
    command.spawn().map_err(|err| match &exec.cwd {
        Some(cwd) => format!(
            "cannot run {} in {}: {err}",
            config.shell.display(),
            String::from_utf8_lossy(cwd)
        ),
        None => format!("cannot run {}: {err}", config.shell.display()),
    })
}

/// Size of the recycled blocks output chunks are read into.
const OUTPUT_BLOCK: usize = 512 * 1024;

/// Bytes a command's pipes may hold: with Linux's default 64 KiB, a fast
/// writer wakes the reader for every 64 KiB; 1 MiB lets one read or write
/// move a whole frame's worth. Best effort: the default still works. Done
/// only once a pipe carries big chunks: most commands move a few bytes.
const ENLARGE_PIPE_AFTER: usize = 32 * 1024;
const PIPE_SIZE: i32 = 1024 * 1024;

fn enlarge_pipe(fd: std::os::fd::RawFd) {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fcntl, FcntlArg};
        if let Err(err) = fcntl(fd, FcntlArg::F_SETPIPE_SZ(PIPE_SIZE)) {
            debug!(cause = %err, "cannot enlarge the output pipe");
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = fd;
}

fn exit_status(status: std::process::ExitStatus) -> ExitStatus {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitStatus::Code(code),
        (None, Some(signal)) => ExitStatus::Signal(u8::try_from(signal).unwrap_or(u8::MAX)),
        (None, None) => ExitStatus::Code(-1),
    }
}

fn deliver_signal(pgid: u32, number: u8) {
    match nix::sys::signal::Signal::try_from(i32::from(number)) {
        Ok(signal) => {
            debug!(%signal, "delivering signal to the process group");
            process_group::signal_group(pgid, signal);
        }
        Err(_) => warn!(number, "ignoring request for an unknown signal"),
    }
}

#[derive(Debug, Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Forwards one output pipe, never reading more than the window allows, so a
/// client that stops reading stops the command at a full pipe.
async fn pump_output(
    mut pipe: impl AsyncRead + AsRawFd + Unpin,
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
        let Some(credit) = window.reserve(chunk).await else {
            return;
        };
        let buf = buffers.room(credit);
        let read = pipe.read_buf(&mut buf.limit(credit)).await;
        let n = match read {
            Ok(n) => n,
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
            enlarge_pipe(pipe.as_raw_fd());
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

/// Feeds the command's stdin and gives the client credit back as the command
/// takes the bytes. A command that does not read stops the client's stdin on
/// this channel only. Ends (closing the command's stdin) at the client's
/// `StdinEnd`.
async fn pump_stdin(
    mut stdin: ChildStdin,
    mut incoming: mpsc::UnboundedReceiver<Bytes>,
    credit: &Window,
    ctx: &CommandContext,
    channel: u32,
    counters: &Counters,
) {
    let mut enlarged = false;
    while let Some(data) = incoming.recv().await {
        if !enlarged && data.len() >= ENLARGE_PIPE_AFTER {
            enlarge_pipe(stdin.as_raw_fd());
            enlarged = true;
        }
        if let Err(err) = stdin.write_all(&data).await {
            // The command closed its stdin: grant no more credit, so the
            // client stops sending what nobody will read. Its writer gets
            // `StdinClosed` when the command ends.
            debug!(cause = %err, "command's stdin closed");
            break;
        }
        counters
            .stdin
            .fetch_add(data.len() as u64, Ordering::Relaxed);
        let increment = data.len() as u32;
        credit.grant(u64::from(increment));
        if ctx
            .frames
            .send(Frame::WindowAdjust { channel, increment })
            .await
            .is_err()
        {
            break;
        }
    }
    drop(stdin);
}
