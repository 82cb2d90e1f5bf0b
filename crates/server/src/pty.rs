//! Running a login shell or a command on a new pseudo-terminal: the second
//! way to spawn, beside the command module's pipes.
//!
//! # Design
//! - **Session.** The child is made the leader of a new session (`setsid`)
//!   with the pty's slave as its controlling terminal (`TIOCSCTTY`), which
//!   `pty-process` does between fork and exec (the workspace denies our own
//!   `unsafe`, so no `pre_exec` of ours). Job control, `/dev/tty`, Ctrl-C and
//!   SIGWINCH then work as on a local terminal. The session id is the
//!   child's pid.
//! - **Spawning and reaping.** The child is a [`std::process::Child`]
//!   started by `pty-process`'s blocking `Command` (std's, not tokio's: tokio
//!   reaps its own children, which would race the server's one reaper). The
//!   caller runs that spawn step itself ([`spawn_with`]), so a reaper can
//!   register the pid under its lock; [`spawn`] just runs it. Nothing here
//!   waits for any process.
//! - **Output.** Stdout and stderr are the same slave, so there is one output
//!   stream: the master. Once the last slave fd closes (the shell and every
//!   job that inherited the terminal are gone), Linux answers a read on the
//!   master with `EIO`: [`PtyReader`] turns that into end of file, as wezterm
//!   does (`pty/src/unix.rs`). The parent keeps no slave fd, or the end would
//!   never come. The master is non-blocking and registered with tokio
//!   ([`tokio::io::unix::AsyncFd`]); reader, writer and [`PtyControl`] share
//!   it, and it closes when the last of them is dropped.
//! - **Size.** The initial size is set before the child starts, so its first
//!   `stty size` is right; [`PtyControl::resize`] sets `TIOCSWINSZ` on the
//!   master and the kernel sends SIGWINCH to the foreground process group.
//! - **Hangup.** When the client goes away the session is hung up as a real
//!   terminal is ([`hang_up`]): SIGHUP and SIGCONT to the foreground process
//!   group and to the shell (what the kernel does when the master's last fd
//!   closes; doing it ourselves does not depend on when the reader and writer
//!   tasks drop their halves). A shell passes SIGHUP on to its jobs. After a
//!   grace, whatever is left of the *session* — other process groups the
//!   shell's job control created included — gets SIGTERM, then SIGKILL
//!   ([`crate::session`]). When the shell exits by itself, the jobs it left
//!   would hold the terminal (and so the output) open for ever: as sshd
//!   does, they are ended too ([`sweep_after_exit`]). Nothing outlives the
//!   session unless it left it on purpose (`setsid`).
//! - **Environment.** The daemon's own environment, then `HOME`, `USER`,
//!   `LOGNAME` and `SHELL` from the passwd entry (as sshd sets them), then
//!   the request's variables, then what the server knows to be true and the
//!   client must not override: `TERM` from the pty request, `RSH_CONNECTION`
//!   ([`ConnectionInfo::to_env`]) and `RSH_TTY` (the slave's path).
//!
//! # Use
//! The command module's `spawn_pty` starts a session here with the server's
//! reaper running the spawn step, and feeds the terminal's reader, writer
//! and control into the same supervise loop as a piped command's.

use crate::login::{account, login_arg0};
use crate::peer::ConnectionInfo;
use crate::session;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use rsh_proto::PtySize;
use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};

/// Why a pty session could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PtyError {
    /// No pseudo-terminal could be allocated (or sized, or named).
    #[error("cannot allocate a pseudo-terminal: {0}")]
    Open(#[source] io::Error),
    /// The program could not be started on it.
    #[error("cannot run {program}: {cause}")]
    Spawn {
        /// The program, as it would appear in a message.
        program: String,
        /// What went wrong.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: io::Error,
    },
}

fn io_error(err: pty_process::Error) -> io::Error {
    // More variants exist with pty-process's "async" feature.
    #[allow(unreachable_patterns)]
    match err {
        pty_process::Error::Io(err) => err,
        pty_process::Error::Rustix(errno) => errno.into(),
        other => io::Error::other(other.to_string()),
    }
}

/// What runs on the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Program {
    /// The server user's login shell (passwd entry; `/bin/sh` if none), as a
    /// login shell (`argv[0]` is `-` and its name, as sshd and login do).
    LoginShell,
    /// `SHELL -c COMMAND`, with the server's configured shell, as piped
    /// commands are run.
    Command(Vec<u8>),
}

/// Everything needed to start a session on a pty.
#[derive(Debug, Clone)]
pub struct PtySpec {
    /// Login shell or command.
    pub program: Program,
    /// `TERM` for the session (`xterm-256color`, ...). Empty: `dumb`.
    pub term: Vec<u8>,
    /// The terminal's size at start.
    pub size: PtySize,
    /// Working directory; relative to the home directory; home if absent.
    pub cwd: Option<Vec<u8>>,
    /// The request's environment variables.
    pub env: Vec<(Vec<u8>, Vec<u8>)>,
    /// Where the client is, for `RSH_CONNECTION`.
    pub connection: ConnectionInfo,
}

/// The terminal side of a session: the master's halves and its control.
#[derive(Debug)]
pub struct Terminal {
    /// The slave's path (`/dev/pts/3`), as `RSH_TTY` tells the session.
    pub tty: PathBuf,
    /// The terminal's output (stdout and stderr of the session).
    pub reader: PtyReader,
    /// The terminal's input (what is typed).
    pub writer: PtyWriter,
    /// Resize and hangup.
    pub control: PtyControl,
}

/// The spawn step [`spawn_with`] hands its caller: call it once, where the
/// child must be started (a reaper's `spawn_with(|| start())`, say).
pub type Start<'a> = Box<dyn FnOnce() -> io::Result<std::process::Child> + Send + 'a>;

/// Starts `spec` on a new pty and returns the child and the terminal.
/// `shell` runs commands (`SHELL -c COMMAND`); the login shell comes from
/// the passwd entry. Nothing waits for the child: reaping it is the
/// caller's.
///
/// # Errors
/// As [`spawn_with`].
#[cfg(test)]
pub async fn spawn(
    spec: &PtySpec,
    shell: &Path,
) -> Result<(std::process::Child, Terminal), PtyError> {
    spawn_with(spec, shell, |start| start()).await
}

/// Prepares `spec` on a new pty (sized, environment set), then has `run`
/// perform the spawn by calling the [`Start`] it is given, and returns what
/// `run` returned with the terminal. `run` should return the error of
/// `Start` if it calls it and it fails.
///
/// # Errors
/// [`PtyError::Open`] if no pty can be had, [`PtyError::Spawn`] if the
/// program cannot be started (not there, not executable, bad directory),
/// or `run` failed.
pub async fn spawn_with<T>(
    spec: &PtySpec,
    shell: &Path,
    run: impl FnOnce(Start<'_>) -> io::Result<T>,
) -> Result<(T, Terminal), PtyError> {
    let account = tokio::task::spawn_blocking(account)
        .await
        .map_err(|err| PtyError::Open(io::Error::other(err)))?;

    let (pty, pts) = pty_process::blocking::open().map_err(|err| PtyError::Open(io_error(err)))?;
    // Before the child starts, so its first look at the size is right.
    pty.resize(size_of(spec.size))
        .map_err(|err| PtyError::Open(io_error(err)))?;
    let tty = nix::unistd::ttyname(pts.as_fd()).map_err(|err| PtyError::Open(err.into()))?;
    // pty-process opened it close-on-exec: no other child inherits the
    // master and delays the hangup that its last close brings.
    let master = Master::new(OwnedFd::from(pty)).map_err(PtyError::Open)?;

    let (mut command, program) = match &spec.program {
        Program::LoginShell => (
            pty_process::blocking::Command::new(&account.shell).arg0(login_arg0(&account.shell)),
            account.shell.display().to_string(),
        ),
        Program::Command(line) => (
            pty_process::blocking::Command::new(shell)
                .arg("-c")
                .arg(OsStr::from_bytes(line)),
            shell.display().to_string(),
        ),
    };
    let cwd = match spec
        .cwd
        .as_deref()
        .map(|cwd| Path::new(OsStr::from_bytes(cwd)))
    {
        Some(cwd) => account.home.join(cwd),
        None => account.home.clone(),
    };
    let term: &[u8] = if spec.term.is_empty() {
        b"dumb"
    } else {
        &spec.term
    };
    command = command
        .current_dir(&cwd)
        .env("HOME", &account.home)
        .env("USER", &account.name)
        .env("LOGNAME", &account.name)
        .env("SHELL", &account.shell);
    for (key, value) in &spec.env {
        command = command.env(OsStr::from_bytes(key), OsStr::from_bytes(value));
    }
    command = command
        .env("TERM", OsStr::from_bytes(term))
        .env("RSH_CONNECTION", spec.connection.to_env())
        .env("RSH_TTY", &tty);

    let mut pid = None;
    let start: Start<'_> = Box::new(|| {
        // Consumes `pts`: once the child has it, the parent holds no slave.
        let child = command.spawn(pts).map_err(io_error)?;
        pid = Some(child.id());
        Ok(child)
    });
    let started = run(start);
    let spawn_error = |source| PtyError::Spawn {
        program: match &spec.cwd {
            Some(_) => format!("{program} in {}", cwd.display()),
            None => program.clone(),
        },
        cause: source,
    };
    let started = started.map_err(spawn_error)?;
    let Some(sid) = pid else {
        return Err(spawn_error(io::Error::other(
            "the spawn step was not called",
        )));
    };
    let master = Arc::new(master);
    Ok((
        started,
        Terminal {
            tty,
            reader: PtyReader {
                master: master.clone(),
                eof: false,
            },
            writer: PtyWriter {
                master: master.clone(),
            },
            control: PtyControl { master, sid },
        },
    ))
}

fn size_of(size: PtySize) -> pty_process::Size {
    pty_process::Size::new_with_pixel(size.rows, size.cols, size.pixel_width, size.pixel_height)
}

/// The master, non-blocking and registered with the runtime.
#[derive(Debug)]
struct Master(AsyncFd<OwnedFd>);

impl Master {
    fn new(fd: OwnedFd) -> io::Result<Master> {
        use nix::fcntl::{fcntl, FcntlArg, OFlag};
        let flags = fcntl(fd.as_raw_fd(), FcntlArg::F_GETFL)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(fd.as_raw_fd(), FcntlArg::F_SETFL(flags))?;
        // tokio deprecated the safe constructor because an arbitrary
        // `AsRawFd` may close or change its fd while registered; the
        // replacement, `register`, is `unsafe`, which the workspace denies.
        // An `OwnedFd` meets `register`'s contract by construction: the fd
        // is open and the same for as long as the `AsyncFd` owns it.
        #[allow(deprecated)]
        let registered = AsyncFd::new(fd)?;
        Ok(Master(registered))
    }

    fn fd(&self) -> &OwnedFd {
        self.0.get_ref()
    }
}

/// Most bytes asked for in one read: the kernel hands out a few KiB of pty
/// output per read, and a larger buffer would only be zeroed for nothing
/// when the caller's is not initialized yet.
const MAX_READ: usize = 64 * 1024;

/// The read half of the master: the session's output.
///
/// `EIO`, which Linux returns once the last slave fd has closed, is end of
/// file here, not an error.
#[derive(Debug)]
pub struct PtyReader {
    master: Arc<Master>,
    eof: bool,
}

/// One read; `Ok(0)` at the end (EIO).
fn read_master(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<usize> {
    match nix::unistd::read(fd.as_raw_fd(), buf) {
        Ok(n) => Ok(n),
        Err(Errno::EIO) => Ok(0),
        Err(errno) => Err(errno.into()),
    }
}

impl PtyReader {
    /// Waits until a read would not block (output, or the end, is there).
    ///
    /// # Errors
    /// The runtime's (its reactor is gone).
    pub async fn readable(&self) -> io::Result<()> {
        if self.eof {
            return Ok(());
        }
        self.master.0.readable().await.map(|_| ())
    }

    /// The first read after [`PtyReader::readable`]: as
    /// [`PtyReader::try_read`], except that a read shorter than `trickle`
    /// also forgets the readiness, as an EAGAIN would, without the extra
    /// read. The terminal hands over all it holds in one read, so a short
    /// one drained it; readiness that arrived since is kept (tokio compares
    /// its tick with the one this guard saw).
    ///
    /// # Errors
    /// As [`PtyReader::try_read`].
    pub async fn read_first(&mut self, buf: &mut [u8], trickle: usize) -> io::Result<usize> {
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        loop {
            // At once when `readable` was just awaited: it is cached.
            let mut guard = self.master.0.readable().await?;
            match guard.try_io(|fd| read_master(fd.get_ref(), buf)) {
                Ok(Ok(0)) => {
                    self.eof = true;
                    return Ok(0);
                }
                Ok(Ok(n)) => {
                    if n < trickle {
                        guard.clear_ready();
                    }
                    return Ok(n);
                }
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(err)) => return Err(err),
                Err(_would_block) => return Err(io::ErrorKind::WouldBlock.into()),
            }
        }
    }

    /// Reads what is there without waiting: `Ok(0)` is the end of output,
    /// `WouldBlock` that nothing is there yet.
    ///
    /// # Errors
    /// `WouldBlock`, or the read's error (not EIO, which is the end).
    pub fn try_read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.eof || buf.is_empty() {
            return Ok(0);
        }
        loop {
            // A WouldBlock from the read clears the readiness tokio cached.
            match self
                .master
                .0
                .try_io(Interest::READABLE, |fd| read_master(fd, buf))
            {
                Ok(0) => {
                    self.eof = true;
                    return Ok(0);
                }
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl AsyncRead for PtyReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.eof || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            let mut guard = ready!(self.master.0.poll_read_ready(cx))?;
            let want = buf.remaining().min(MAX_READ);
            let unfilled = buf.initialize_unfilled_to(want);
            match guard.try_io(|fd| read_master(fd.get_ref(), unfilled)) {
                Ok(Ok(0)) => {
                    self.eof = true;
                    return Poll::Ready(Ok(()));
                }
                Ok(Ok(n)) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(err)) => return Poll::Ready(Err(err)),
                Err(_would_block) => continue,
            }
        }
    }
}

impl AsRawFd for PtyReader {
    fn as_raw_fd(&self) -> RawFd {
        self.master.fd().as_raw_fd()
    }
}

/// The write half of the master: what is typed on the session's terminal.
///
/// Shutting it down does nothing: a terminal has no half-close; its end of
/// input is the EOF character (Ctrl-D), typed like any other.
#[derive(Debug)]
pub struct PtyWriter {
    master: Arc<Master>,
}

impl AsyncWrite for PtyWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        loop {
            let mut guard = ready!(self.master.0.poll_write_ready(cx))?;
            match guard.try_io(|fd| nix::unistd::write(fd.get_ref(), buf).map_err(io::Error::from))
            {
                Ok(Err(err)) if err.kind() == io::ErrorKind::Interrupted => continue,
                Ok(result) => return Poll::Ready(result),
                Err(_would_block) => continue,
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl AsRawFd for PtyWriter {
    fn as_raw_fd(&self) -> RawFd {
        self.master.fd().as_raw_fd()
    }
}

/// Resizes and hangs up a session's terminal while its reader and writer are
/// in other tasks. Shares the master with them: the kernel's own hangup on
/// the master's last close comes only once all three are dropped;
/// [`PtyControl::hangup`] does not wait for that.
#[derive(Debug, Clone)]
pub struct PtyControl {
    master: Arc<Master>,
    sid: u32,
}

impl PtyControl {
    /// The session id (the leader's pid).
    pub fn sid(&self) -> u32 {
        self.sid
    }

    /// Sets the terminal's size (`TIOCSWINSZ`); the kernel sends SIGWINCH to
    /// the foreground process group if the size changed.
    ///
    /// # Errors
    /// The `ioctl`'s error (not expected on a pty we opened).
    pub fn resize(&self, size: PtySize) -> io::Result<()> {
        rustix::termios::tcsetwinsize(
            self.master.fd(),
            rustix::termios::Winsize {
                ws_row: size.rows,
                ws_col: size.cols,
                ws_xpixel: size.pixel_width,
                ws_ypixel: size.pixel_height,
            },
        )?;
        Ok(())
    }

    /// The terminal's current size.
    ///
    /// # Errors
    /// The `ioctl`'s error.
    #[cfg(test)]
    pub fn size(&self) -> io::Result<PtySize> {
        let size = rustix::termios::tcgetwinsize(self.master.fd())?;
        Ok(PtySize {
            cols: size.ws_col,
            rows: size.ws_row,
            pixel_width: size.ws_xpixel,
            pixel_height: size.ws_ypixel,
        })
    }

    /// The terminal's foreground process group, while the session has one.
    pub fn foreground_group(&self) -> Option<u32> {
        let pgrp = nix::unistd::tcgetpgrp(self.master.fd()).ok()?;
        u32::try_from(pgrp.as_raw()).ok().filter(|&pgrp| pgrp > 0)
    }

    /// Hangs the terminal up as the kernel does when a modem line drops:
    /// SIGHUP then SIGCONT to the foreground process group and to the
    /// session leader. A shell passes SIGHUP on to its jobs and exits;
    /// whatever ignores it is ended by [`hang_up`]'s sweep.
    ///
    /// The leader is signalled only while it is still a member of its
    /// session (running or a zombie not yet reaped): once reaped, its pid may
    /// be someone else's.
    pub fn hangup(&self) {
        let foreground = self
            .foreground_group()
            .and_then(|pgrp| i32::try_from(pgrp).ok());
        let leader_there = session::members(self.sid)
            .iter()
            .any(|member| member.pid == self.sid);
        let leader = i32::try_from(self.sid)
            .ok()
            .filter(|&pid| leader_there && pid > 0);
        // The leader first, as the kernel's hangup does: a shell whose
        // foreground job dies first may be on its way out with signals
        // blocked by the time its own SIGHUP comes.
        for signal in [Signal::SIGHUP, Signal::SIGCONT] {
            if let Some(pid) = leader {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            if let Some(pgrp) = foreground.filter(|&pgrp| Some(pgrp) != leader) {
                let _ = killpg(Pid::from_raw(pgrp), signal);
            }
        }
    }
}

/// Ends a session whose client has gone: hangs the terminal up
/// ([`PtyControl::hangup`]) and drops `control`, gives the session `grace`
/// to end on its own, then ends whatever of it is left, SIGTERM then SIGKILL
/// after another `grace` ([`session::end_session`]). Returns once no member
/// is running; reaping the leader (and the orphans) is the caller's.
///
/// The reader and writer should be dropped too: until the master's last fd
/// closes, the kernel's own hangup does not happen, though the signals above
/// have already been sent.
pub async fn hang_up(control: PtyControl, grace: Duration) {
    let sid = control.sid;
    // `members` reads /proc: off the runtime's threads.
    let control = tokio::task::spawn_blocking(move || {
        control.hangup();
        control
    })
    .await;
    drop(control);
    // Bounded by `grace`; a shell that exits on SIGHUP ends it early.
    if session::wait_empty(sid, grace).await {
        return;
    }
    session::end_session(sid, grace).await;
}

/// Ends what is left of a session whose leader has exited, as sshd does
/// when the shell of a pty session exits: background jobs still holding the
/// terminal would otherwise keep its output open for ever.
///
/// The kernel has already sent SIGHUP to the foreground process group when
/// the leader exited; this drops `control` and ends the other process
/// groups of the session, SIGTERM then SIGKILL after `grace`. Once they are
/// gone, the reader reaches end of output.
pub async fn sweep_after_exit(control: PtyControl, grace: Duration) {
    let sid = control.sid;
    drop(control);
    session::end_session(sid, grace).await;
}

#[cfg(test)]
mod tests;
