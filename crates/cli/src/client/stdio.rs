//! Our stdio when no terminal session is wired: stdin forwarded to the
//! remote command (a reading thread for pipes and files, a non-blocking
//! reader for a terminal), its output written to ours as it arrives, Ctrl-C
//! forwarded as SIGINT.

use super::exit::{exit_code, killed_by_signal, Failure, EXIT_INTERRUPTED, EXIT_RSH_FAILURE};
use super::plan::Template;
use bytes::BufMut;
use rsh_client::{
    signal, Client, ClientError, ErrorKind, Event, ExecRequest, ExitStatus, RemoteCommand,
    StdinWriter, MAX_STDIN_CHUNK,
};
use rsh_proto::io::ChunkBuffers;
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use tokio::io::AsyncReadExt;

/// Ctrl-C presses after which the client gives up on the remote command.
const DISCONNECT_AFTER_INTERRUPTS: u32 = 3;

/// When our stdin or stdout is a pipe, let it hold 1 MiB: big chunks then
/// move without waking the other end several times over (64 KiB is Linux's
/// default). Best effort, up to /proc/sys/fs/pipe-max-size.
pub(super) fn enlarge_pipes() {
    #[cfg(target_os = "linux")]
    {
        use nix::fcntl::{fcntl, FcntlArg};
        use std::os::fd::AsRawFd;
        for fd in [std::io::stdin().as_raw_fd(), std::io::stdout().as_raw_fd()] {
            let is_pipe = nix::sys::stat::fstat(fd)
                .map(|stat| stat.st_mode & nix::libc::S_IFMT == nix::libc::S_IFIFO)
                .unwrap_or(false);
            if is_pipe {
                let _ = fcntl(fd, FcntlArg::F_SETPIPE_SZ(1024 * 1024));
            }
        }
    }
}

/// Puts our stdin and stdout back in blocking mode. rsync hands its remote
/// shell a stdout (and other tools may hand a stdin) with O_NONBLOCK set, as
/// ssh copes with; our writes to stdout and tokio's reads of stdin are
/// blocking ones, which would fail with EAGAIN mid-stream (stdout: the run
/// aborts; stdin: it would look like end of file).
pub(super) fn blocking_stdio() {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::AsRawFd;
    for fd in [std::io::stdin().as_raw_fd(), std::io::stdout().as_raw_fd()] {
        let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
            continue;
        };
        let flags = OFlag::from_bits_truncate(flags);
        if flags.contains(OFlag::O_NONBLOCK) {
            tracing::debug!(fd, "clearing O_NONBLOCK on our stdio");
            let _ = fcntl(fd, FcntlArg::F_SETFL(flags - OFlag::O_NONBLOCK));
        }
    }
}

/// Whether stdin is /dev/null: nothing to forward, so the remote stdin is
/// closed at once instead of starting a reader thread to learn that.
pub(super) fn stdin_is_dev_null() -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(stdin), Ok(null)) = (
        nix::sys::stat::fstat(std::io::stdin().as_raw_fd()),
        nix::sys::stat::stat("/dev/null"),
    ) else {
        return false;
    };
    let is_char = |mode: nix::libc::mode_t| mode & nix::libc::S_IFMT == nix::libc::S_IFCHR;
    is_char(stdin.st_mode) && is_char(null.st_mode) && stdin.st_rdev == null.st_rdev
}

/// Whether the remote command gets our stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LocalInput {
    /// Forwarded until its end (typed lines too when it is a terminal).
    Open,
    /// `-n` or /dev/null: the remote stdin ends at once.
    Closed,
}

/// Our stdin as an async reader: a terminal through its own non-blocking
/// file (no thread left blocked on it when we exit), else tokio's stdin.
fn local_reader() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    terminal_reader(rsh_client::terminal::Tty::input)
}

/// [`local_reader`] for a session that keeps our terminal in raw mode.
pub(super) fn raw_local_reader() -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    terminal_reader(rsh_client::terminal::Tty::raw_input)
}

fn terminal_reader(
    open: fn(std::io::Stdin) -> std::io::Result<rsh_client::terminal::Tty>,
) -> Box<dyn tokio::io::AsyncRead + Unpin + Send> {
    if std::io::stdin().is_terminal() {
        if let Ok(tty) = open(std::io::stdin()) {
            return Box::new(tty);
        }
    }
    Box::new(tokio::io::stdin())
}

/// Feeds `local` (after `first`, a chunk already read) to the remote stdin,
/// then ends it.
async fn forward_stdin(
    mut local: Box<dyn tokio::io::AsyncRead + Unpin + Send>,
    stdin: StdinWriter,
    first: Option<bytes::Bytes>,
) {
    if let Some(first) = first {
        if stdin.write(first).await.is_err() {
            return;
        }
    }
    // Three 1 MiB blocks cover the 1 MiB window plus the one filling.
    let mut buffers = ChunkBuffers::new(1024 * 1024, 3);
    loop {
        let buf = buffers.room(MAX_STDIN_CHUNK);
        match local.read_buf(&mut buf.limit(MAX_STDIN_CHUNK)).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let chunk = buf.split().freeze();
                if stdin.write(chunk).await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stdin.close().await;
}

/// Reads in flight from a piped stdin: enough to keep the reading thread
/// one chunk ahead of the connection.
const STDIN_AHEAD: usize = 2;

/// Feeds our stdin (a pipe or a file, not a terminal) to the remote stdin,
/// then ends it. A thread reads it with blocking reads straight into
/// recycled blocks, so each chunk is read once and sent as it is: tokio's
/// stdin would read into its own buffer on a blocking-pool thread, then copy.
async fn forward_piped_stdin(stdin: StdinWriter) {
    let (chunks_tx, mut chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(STDIN_AHEAD);
    let reader = std::thread::Builder::new()
        .name("stdin".to_owned())
        .spawn(move || read_stdin_chunks(&chunks_tx));
    if reader.is_err() {
        // No thread to be had: tokio's reader does the same, slower.
        return forward_stdin(local_reader(), stdin, None).await;
    }
    while let Some(chunk) = chunks.recv().await {
        if stdin.write(chunk).await.is_err() {
            // The reading thread stops at its next chunk (the channel is
            // closed) or stays blocked until we exit, as tokio's would.
            return;
        }
    }
    let _ = stdin.close().await;
}

/// The reading thread of [`forward_piped_stdin`]: chunks until end of file
/// (or an error, taken as the end, as before), or until nobody listens.
fn read_stdin_chunks(chunks: &tokio::sync::mpsc::Sender<bytes::Bytes>) {
    use std::io::Read;
    use std::os::fd::AsFd;
    let Ok(fd) = std::io::stdin().as_fd().try_clone_to_owned() else {
        return;
    };
    let mut file = std::fs::File::from(fd);
    // The remote window (1 MiB), the chunks queued here and the one filling.
    let mut buffers = ChunkBuffers::new(1024 * 1024, 4);
    loop {
        let buf = buffers.room(MAX_STDIN_CHUNK);
        let start = buf.len();
        buf.resize(start + MAX_STDIN_CHUNK, 0);
        let n = match file.read(&mut buf[start..]) {
            Ok(n) => n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {
                buf.truncate(start);
                continue;
            }
            Err(_) => 0,
        };
        buf.truncate(start + n);
        if n == 0 {
            return;
        }
        if chunks.blocking_send(buf.split().freeze()).is_err() {
            return;
        }
    }
}

pub(super) async fn one_shot(
    client: &Client,
    request: ExecRequest,
    input: LocalInput,
) -> Result<ExitCode, Failure> {
    let command = client.exec(request).await?;
    let forwarder = match input {
        LocalInput::Open if !std::io::stdin().is_terminal() => {
            Some(tokio::spawn(forward_piped_stdin(command.stdin())))
        }
        LocalInput::Open => Some(tokio::spawn(forward_stdin(
            local_reader(),
            command.stdin(),
            None,
        ))),
        LocalInput::Closed => {
            command.close_stdin().await?;
            None
        }
    };
    let status = stream_output(command, Vec::new()).await;
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(exit_code(&status?))
}

/// `rsh-client DEST < script`: one remote shell reads the whole script, so
/// `cd`, variables and `exit` carry through it, as with ssh. The login shell
/// (protocol version 2), or `sh` from a server that cannot start one.
pub(super) async fn remote_shell(
    client: &Client,
    template: &Template,
    input: LocalInput,
) -> Result<ExitCode, Failure> {
    let fallback = || template.with("exec sh");
    let mut command = match client
        .exec(template.apply(ExecRequest::login_shell()))
        .await
    {
        Ok(command) => command,
        Err(ClientError::Unsupported { .. }) => return one_shot(client, fallback(), input).await,
        Err(err) => return Err(err.into()),
    };
    let mut local = local_reader();
    let first = match input {
        LocalInput::Closed => None,
        LocalInput::Open => {
            let mut buf = bytes::BytesMut::with_capacity(MAX_STDIN_CHUNK);
            match local.read_buf(&mut buf).await {
                Ok(0) | Err(_) => None,
                Ok(_) => Some(buf.freeze()),
            }
        }
    };
    // The server grants stdin credit once the shell has started, and refuses
    // a login shell it cannot start before that: until the first chunk is
    // taken, a refusal as unsupported means "try `sh`", with nothing lost.
    let stdin = command.stdin();
    let mut pending = Vec::new();
    let nothing_to_resend = first.is_none();
    let started = {
        let send_first = async {
            match first.clone() {
                Some(chunk) => stdin.write(chunk).await,
                None => {
                    // Ending stdin says nothing about the shell: wait for
                    // its first event instead.
                    let _ = stdin.close().await;
                    std::future::pending().await
                }
            }
        };
        tokio::pin!(send_first);
        loop {
            tokio::select! {
                biased;
                event = command.next_event() => match event {
                    Err(ClientError::Refused { kind: ErrorKind::Unsupported, message }) => {
                        tracing::info!(%message, "no login shell from this server; running sh");
                        break false;
                    }
                    Err(err) => return Err(err.into()),
                    Ok(Some(event)) => {
                        let exited = matches!(event, Event::Exit(_));
                        pending.push(event);
                        if exited || nothing_to_resend {
                            break true;
                        }
                    }
                    Ok(None) => break true,
                },
                _ = &mut send_first => break true,
            }
        }
    };
    if !started {
        let command = client.exec(fallback()).await?;
        let forwarder = match (input, first) {
            (LocalInput::Open, Some(first)) => Some(tokio::spawn(forward_stdin(
                local,
                command.stdin(),
                Some(first),
            ))),
            _ => {
                command.close_stdin().await?;
                None
            }
        };
        let status = stream_output(command, Vec::new()).await;
        if let Some(forwarder) = forwarder {
            forwarder.abort();
        }
        return Ok(exit_code(&status?));
    }
    let forwarder = (input == LocalInput::Open && first.is_some())
        .then(|| tokio::spawn(forward_stdin(local, command.stdin(), None)));
    let status = stream_output(command, pending).await;
    if let Some(forwarder) = forwarder {
        forwarder.abort();
    }
    Ok(exit_code(&status?))
}

/// Writes the command's output to ours as it arrives, forwarding Ctrl-C as
/// SIGINT, until it exits.
async fn stream_output(
    mut command: RemoteCommand,
    pending: Vec<Event>,
) -> Result<ExitStatus, Failure> {
    // The handlers are in place before any output is shown, so a signal
    // sent by someone who saw it is caught.
    use tokio::signal::unix::{signal as catch, SignalKind};
    let caught = (
        catch(SignalKind::interrupt()),
        catch(SignalKind::terminate()),
        catch(SignalKind::hangup()),
    );
    let interrupts = tokio::spawn({
        let signaller = command.signaller();
        async move {
            let (Ok(mut int), Ok(mut term), Ok(mut hup)) = caught else {
                return;
            };
            // Each Ctrl-C goes to the remote command; a third one in a row
            // means the user wants out even if the command ignores SIGINT:
            // disconnecting makes the server end its whole process group.
            let mut presses = 0;
            loop {
                tokio::select! {
                    pressed = int.recv() => {
                        if pressed.is_none() {
                            return;
                        }
                    }
                    Some(()) = term.recv() => {
                        let _ = killed_by_signal(nix::libc::SIGTERM);
                        std::process::exit(i32::from(EXIT_RSH_FAILURE));
                    }
                    Some(()) = hup.recv() => {
                        let _ = killed_by_signal(nix::libc::SIGHUP);
                        std::process::exit(i32::from(EXIT_RSH_FAILURE));
                    }
                }
                presses += 1;
                if presses == DISCONNECT_AFTER_INTERRUPTS {
                    eprintln!("rsh-client: interrupted {presses} times; disconnecting");
                    std::process::exit(i32::from(EXIT_INTERRUPTED));
                }
                if signaller.send(signal::INT).await.is_err() {
                    return;
                }
            }
        }
    });
    let result = async {
        let mut stdout = RawStdout::new();
        let mut stderr = std::io::stderr();
        let mut pending = pending.into_iter();
        loop {
            let event = match pending.next() {
                Some(event) => Some(event),
                None => command.next_event().await?,
            };
            match event {
                Some(Event::Stdout(data)) => write_out(&mut stdout, &data)?,
                Some(Event::Stderr(data)) => {
                    // A closed stderr is not worth failing the command for.
                    let _ = stderr.write_all(&data).and_then(|()| stderr.flush());
                }
                Some(Event::Exit(status)) => return Ok(status),
                None => {
                    return Err(Failure::Rsh(ClientError::connection_lost(
                        "command ended without a status".to_owned(),
                    )))
                }
            }
        }
    }
    .await;
    interrupts.abort();
    result
}

/// Our stdout, written without `std::io::Stdout`'s line buffering: that
/// would scan every chunk of binary output for newlines for nothing.
enum RawStdout {
    File(std::fs::File),
    Std(std::io::Stdout),
}

impl RawStdout {
    fn new() -> Self {
        use std::os::fd::AsFd;
        match std::io::stdout().as_fd().try_clone_to_owned() {
            Ok(fd) => RawStdout::File(std::fs::File::from(fd)),
            Err(_) => RawStdout::Std(std::io::stdout()),
        }
    }

    fn write_all(&mut self, data: &[u8]) -> std::io::Result<()> {
        match self {
            RawStdout::File(file) => file.write_all(data),
            RawStdout::Std(stdout) => {
                let mut out = stdout.lock();
                out.write_all(data).and_then(|()| out.flush())
            }
        }
    }
}

fn write_out(stdout: &mut RawStdout, data: &[u8]) -> Result<(), Failure> {
    match stdout.write_all(data) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Err(Failure::BrokenPipe),
        Err(err) => Err(Failure::Rsh(ClientError::connection_lost(format!(
            "cannot write to stdout: {err}"
        )))),
    }
}
