//! Helpers for tests/tutorial.rs: run the tutorial's programs (this
//! package's binaries) as child processes that die with the test, and bound
//! every wait.

use std::future::Future;
use std::path::PathBuf;
use std::process::{ExitStatus, Output, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// Upper bound for any single wait in these tests (a reply, a log line, a
/// process exit).
pub const STEP: Duration = Duration::from_secs(20);
/// Runs `fut` for at most [`STEP`].
pub async fn within<F: Future>(what: &str, fut: F) -> Result<F::Output> {
    tokio::time::timeout(STEP, fut)
        .await
        .map_err(|_| anyhow!("timed out after {STEP:?} waiting for {what}"))
}

/// Sends `msg` and reads exactly as many bytes back (upper-casing keeps the
/// length), bounded by [`STEP`].
pub async fn echo<S>(stream: &mut S, msg: &[u8]) -> Result<Vec<u8>>
where
    S: tokio::io::AsyncRead + AsyncWrite + Unpin,
{
    within("sending a message", stream.write_all(msg)).await??;
    let mut reply = vec![0u8; msg.len()];
    within("the echo reply", stream.read_exact(&mut reply)).await??;
    Ok(reply)
}

/// Path of a tutorial program: a binary of this package, which Cargo built
/// before these tests.
pub fn program(name: &str) -> Result<PathBuf> {
    let path = match name {
        "tcp_echo_server" => env!("CARGO_BIN_EXE_tcp_echo_server"),
        "tcp_echo_client" => env!("CARGO_BIN_EXE_tcp_echo_client"),
        "udp_echo_server" => env!("CARGO_BIN_EXE_udp_echo_server"),
        "udp_echo_client" => env!("CARGO_BIN_EXE_udp_echo_client"),
        "unix_echo_server" => env!("CARGO_BIN_EXE_unix_echo_server"),
        "unix_echo_client" => env!("CARGO_BIN_EXE_unix_echo_client"),
        "naive_shell_server" => env!("CARGO_BIN_EXE_naive_shell_server"),
        other => bail!("no tutorial program named {other}"),
    };
    Ok(PathBuf::from(path))
}

/// A running tutorial program. Killed (SIGKILL) when dropped; if the test is failing,
/// prints what the process logged to help find out why.
pub struct Proc {
    name: String,
    pub child: Child,
    pub stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    log_rx: mpsc::UnboundedReceiver<String>,
    log: Vec<String>,
}

impl Proc {
    /// Starts program `name` with `args`; stdin, stdout and stderr piped.
    pub fn spawn(name: &str, args: &[&str]) -> Result<Proc> {
        let mut child = Command::new(program(name)?)
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("{name}: no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("{name}: no stderr pipe"))?;
        // Drain stderr (the tracing logs) so the child never blocks on a full
        // pipe, and hand each line to the test.
        let (tx, log_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Proc {
            name: name.to_owned(),
            stdin: child.stdin.take(),
            child,
            stdout: BufReader::new(stdout).lines(),
            log_rx,
            log: Vec::new(),
        })
    }

    /// Starts a server program and waits for its `listening on ADDR` line;
    /// returns the process and ADDR.
    pub async fn server(name: &str, args: &[&str]) -> Result<(Proc, String)> {
        let mut proc = Proc::spawn(name, args)?;
        let line = proc.line().await?;
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow!("{name}: expected `listening on ADDR`, got {line:?}"))?
            .to_owned();
        Ok((proc, addr))
    }

    /// The next line the process prints on stdout.
    pub async fn line(&mut self) -> Result<String> {
        let what = format!("a line on {}'s stdout", self.name);
        within(&what, self.stdout.next_line())
            .await??
            .ok_or_else(|| anyhow!("{} closed its stdout", self.name))
    }

    /// Waits for the next log line (stderr) that satisfies `pred`, skipping
    /// the ones before it.
    pub async fn wait_log(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> Result<String> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.log_rx.recv()).await {
                Ok(Some(line)) => line,
                Ok(None) => bail!("{} closed its stderr before logging {what}", self.name),
                Err(_) => bail!(
                    "{} did not log {what} within {STEP:?}; it logged:\n{}",
                    self.name,
                    self.log.join("\n")
                ),
            };
            self.log.push(line.clone());
            if pred(&line) {
                return Ok(line);
            }
        }
    }

    /// Fails if the process has exited.
    pub fn assert_running(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            None => Ok(()),
            Some(status) => {
                let log = self.drain_log();
                bail!("{} exited ({status}); it logged:\n{log}", self.name)
            }
        }
    }

    /// Waits (bounded) for the process to exit.
    pub async fn wait(&mut self) -> Result<ExitStatus> {
        match tokio::time::timeout(STEP, self.child.wait()).await {
            Ok(status) => Ok(status?),
            Err(_) => {
                let log = self.drain_log();
                bail!(
                    "{} did not exit within {STEP:?}; it logged:\n{log}",
                    self.name
                )
            }
        }
    }

    /// The rest of the stderr log, for a failing assertion's message.
    pub fn drain_log(&mut self) -> String {
        while let Ok(line) = self.log_rx.try_recv() {
            self.log.push(line);
        }
        self.log.join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            let log = self.drain_log();
            eprintln!("--- {} logged:\n{log}", self.name);
        }
    }
}

/// Runs a client example to completion with `input` on its stdin, bounded by
/// [`STEP`]; the child is killed if it does not finish in time.
pub async fn run_client(name: &str, args: &[&str], input: &[u8]) -> Result<Output> {
    let mut child = Command::new(program(name)?)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("{name}: no stdin pipe"))?;
    let input = input.to_vec();
    let what = format!("{name} to finish");
    within(&what, async move {
        // Feed stdin while collecting the output, so neither side can block
        // the other on a full pipe; closing stdin is the client's EOF.
        let feed = async move {
            let written = stdin.write_all(&input).await;
            drop(stdin);
            written
        };
        let (written, output) = tokio::join!(feed, child.wait_with_output());
        match written {
            // A client that quits early (say, it cannot connect) closes its
            // stdin; its output tells why.
            Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
                return Err(anyhow!(err).context("cannot write the client's stdin"));
            }
            _ => {}
        }
        output.context("cannot collect the client's output")
    })
    .await?
}
