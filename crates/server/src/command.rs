//! One command or terminal session: spawned, supervised, finished.
//!
//! - **spawn** starts the program and hands back one `Spawned` value: what
//!   it started ([`Started`]: the process group, or the terminal session,
//!   and the leader's exit status to come from the [`crate::reaper`]), where
//!   the client's stdin goes and the output streams to forward. There are
//!   two ways to spawn, feeding the same loop: on pipes (`spawn_piped`:
//!   `SHELL -c COMMAND`, or the user's login shell reading its commands from
//!   stdin), and on a new pseudo-terminal (`spawn_pty`, see [`crate::pty`]:
//!   the login shell or `SHELL -c COMMAND`, stdout and stderr one stream).
//! - **supervise** runs the channel's pumps ([`crate::channel::pump`]),
//!   delivers signals and resizes, and watches the timeout, the client and
//!   the server's shutdown, until it knows how the command ended
//!   ([`Outcome`]).
//! - **finish** ends what is left ([`Started::end`]: the process group;
//!   under a pty the whole session, hung up first as a terminal is), then
//!   reports the end exactly once through the channel's [`ChannelEnd`]: the
//!   connection's table marks the channel free, then the `Exit` frame goes
//!   out (unless the client is gone).
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
//! is ended.

use crate::budget::StdinBudget;
use crate::channel::pump::{pump_output, pump_stdin, Counters, Flow, Input, Output, Stream};
use crate::channel::{ChannelEnd, ChannelInputs, ChannelKind};
use crate::login::{self, Account};
use crate::peer::ConnectionInfo;
use crate::process::Started;
use crate::process_group;
use crate::pty;
use crate::reaper::Reaper;
use crate::ServerConfig;
use rsh_proto::{Exec, ExitStatus, Frame, PtyRequest, PtySize};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// The connection-wide things a command needs.
#[derive(Debug, Clone)]
pub(crate) struct CommandContext {
    pub config: Arc<ServerConfig>,
    pub frames: mpsc::Sender<Frame>,
    /// Cancelled when the client is gone: end the group, send nothing.
    pub client_gone: CancellationToken,
    /// Cancelled when the server shuts down (once the connection has told a
    /// version-3 client so): end the group after the grace.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
    pub reaper: Reaper,
    pub stdin_budget: StdinBudget,
    /// Where the client is (`RSH_CONNECTION`).
    pub connection: Arc<ConnectionInfo>,
}

impl CommandContext {
    /// What the channel's pumps need.
    fn flow(&self) -> Flow {
        Flow {
            frames: self.frames.clone(),
            stdin_budget: self.stdin_budget.clone(),
            chunk_size: self.config.chunk_size,
            stdin_window: self.config.stdin_window,
        }
    }
}

/// A started command, however it was started.
pub(crate) struct Spawned {
    /// The process group or the session, and the leader's status to come.
    pub started: Started,
    pub stdin: Input,
    /// Stdout and stderr for a piped command; a terminal has one stream.
    pub outputs: Vec<(Stream, Output)>,
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

/// Runs the command to its end and reports it through `end` (an `Exit`
/// frame unless the client is gone). The leader is reaped once what the
/// command left of its group has been swept (see `crate::reaper`).
pub(crate) async fn run(exec: Exec, inputs: ChannelInputs, ctx: CommandContext, end: ChannelEnd) {
    let started = Instant::now();
    let spawned = match spawn(&exec, &ctx).await {
        Ok(spawned) => spawned,
        Err(reason) => {
            // Names the client's cwd: escaped, as any text a peer chose.
            warn!(reason = ?crate::logging::PeerText(reason.as_bytes()), "command failed to start");
            end.report(Some(ExitStatus::FailedToStart(reason))).await;
            return;
        }
    };
    tracing::Span::current().record("pid", spawned.started.pid());
    debug!("command started");
    let on_pty = ChannelKind::of(&exec) == ChannelKind::Session;
    let leftovers = spawned.started.leftovers();
    let output_window = inputs.output_window.clone();
    let counters = Counters::default();
    let (status, stdin) =
        supervise(spawned, exec.channel, exec.timeout, inputs, &ctx, &counters).await;
    // Only now, with the command ended: a client that vanished mid-upload
    // must not look like end of input (see `pump_stdin`).
    drop(stdin);

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
    leftovers.sweep(&ctx.tracker, ctx.config.kill_grace);
}

/// Pumps and watches a started command until it is known how it ended,
/// then ends what it started as the outcome requires. Returns the status
/// to report (`None`: the client is gone) and the command's stdin if still
/// open (to close only now, with the command ended).
async fn supervise(
    spawned: Spawned,
    channel: u32,
    timeout: Option<Duration>,
    inputs: ChannelInputs,
    ctx: &CommandContext,
    counters: &Counters,
) -> (Option<ExitStatus>, Option<Input>) {
    let Spawned {
        mut started,
        stdin,
        outputs,
    } = spawned;
    let ChannelInputs {
        stdin: incoming,
        mut signals,
        output_window,
        stdin_credit,
        mut resizes,
    } = inputs;
    let config = &ctx.config;
    let flow = ctx.flow();

    let mut stdin = Some(stdin);
    let stdin_pump = pump_stdin(
        &mut stdin,
        incoming,
        &stdin_credit,
        &flow,
        channel,
        counters,
    );
    let output_pump = futures::future::join_all(outputs.into_iter().map(|(stream, output)| {
        pump_output(output, stream, channel, &output_window, &flow, counters)
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
    let mut signals_open = true;
    let mut stdin_done = false;
    let mut output_done = false;
    let mut exited: Option<ExitStatus> = None;
    let mut linger = tokio::time::interval(config.linger);
    let mut output_at_last_tick = 0;

    let status = {
        tokio::pin!(stdin_pump, output_pump, timeout, shutdown_grace_over);
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
                status = started.leader_exit(), if exited.is_none() => match status {
                    Some(status) => {
                        started.leader_exited(&ctx.tracker, config.kill_grace);
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
                    Some(number) => started.signal(number),
                    None => signals_open = false,
                },
                size = next_resize(&mut resizes) => started.resize(size),
                // Both still apply after the shell exits, while a background job
                // keeps the output flowing.
                () = &mut timeout => break Outcome::TimedOut,
                () = ctx.client_gone.cancelled() => break Outcome::ClientGone,
                () = &mut shutdown_grace_over => break Outcome::ShutdownGraceOver,
            }
        };
        let still_writing =
            !output_done && matches!(outcome, Outcome::TimedOut | Outcome::ShutdownGraceOver);
        let finishing = finish(outcome, exited, started, config);
        if still_writing {
            // Ended by us while it may still be writing (a TERM trap's last
            // words): its output goes on to the client while its group is
            // ended, so it is not killed by SIGPIPE instead and what it
            // wrote arrives before its Exit.
            tokio::pin!(finishing);
            let status = loop {
                tokio::select! {
                    biased;
                    _ = &mut output_pump, if !output_done => output_done = true,
                    status = &mut finishing => break status,
                }
            };
            // What is left in the pipes; bounded, since a process that left
            // the group may hold them open.
            if !output_done {
                let _ = tokio::time::timeout(config.linger, &mut output_pump).await;
            }
            status
        } else {
            finishing.await
        }
    };
    (status, stdin)
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

/// Ends what the command started as the outcome requires and says what to
/// report: the status for the `Exit` frame, or `None` when the client is
/// gone.
async fn finish(
    outcome: Outcome,
    exited: Option<ExitStatus>,
    started: Started,
    config: &ServerConfig,
) -> Option<ExitStatus> {
    let grace = config.kill_grace;
    let what = started.what();
    match outcome {
        Outcome::Finished(status) => Some(status),
        Outcome::Lingered(status) => {
            debug!("output held open after the shell exited; ending the {what}");
            Some(status)
        }
        Outcome::TimedOut => {
            info!("command timed out; ending its {what}");
            started.end(grace).await;
            Some(ExitStatus::TimedOut)
        }
        Outcome::ShutdownGraceOver => {
            info!("server shutting down; ending the command's {what}");
            let ended = started.end(grace).await;
            // The shell's own status if it had exited; else how it was ended.
            Some(
                exited
                    .or(ended)
                    .unwrap_or(ExitStatus::Signal(rsh_proto::signal::KILL)),
            )
        }
        Outcome::LeaderLost => {
            warn!("the command's exit status was lost; ending its {what}");
            started.end(grace).await;
            // "Neither a code nor a signal" (PROTOCOL.md §8.1).
            Some(ExitStatus::Code(-1))
        }
        Outcome::ClientGone => {
            info!("client gone; ending the command's {what}");
            started.end(grace).await;
            None
        }
    }
}

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
        started: Started::session(terminal.control, leader),
        stdin: Input::Pty(terminal.writer),
        outputs: vec![(Stream::Stdout, Output::Pty(terminal.reader))],
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
            started: Started::group(pgid, leader),
            stdin: Input::Pipe(stdin),
            outputs: vec![
                (Stream::Stdout, Output::Pipe(stdout)),
                (Stream::Stderr, Output::Pipe(stderr)),
            ],
        }),
        Err(err) => {
            // Started but unusable: end it (the reaper reaps it).
            process_group::signal_group(pgid, nix::sys::signal::Signal::SIGKILL);
            Err(format!("internal error setting up the pipes: {err}"))
        }
    }
}
