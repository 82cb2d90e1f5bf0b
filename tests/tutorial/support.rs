//! Helpers for tests/tutorial.rs: find (and if need be build) the example
//! binaries, run them as child processes that die with the test, and bound
//! every wait.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;

/// Upper bound for any single wait in these tests (a reply, a log line, a
/// process exit).
pub const STEP: Duration = Duration::from_secs(20);
/// Upper bound for building the examples when they are missing or stale.
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);

/// Every example these tests run; built together, once per test process.
const EXAMPLES: &[&str] = &[
    "tcp_echo_server",
    "tcp_echo_client",
    "udp_echo_server",
    "udp_echo_client",
    "unix_echo_server",
    "unix_echo_client",
    "naive_shell_server",
];

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

/// `target/<profile>/examples`, next to the `deps/` directory this test
/// executable lives in.
fn examples_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| anyhow!("unexpected test executable path {}", exe.display()))?;
    Ok(profile_dir.join("examples"))
}

/// Builds the examples once per test process. Cargo makes this a no-op when
/// they are fresh, and it keeps the tests from running stale binaries. If the
/// build cannot run (e.g. another crate of the workspace is mid-edit) but the
/// binaries exist, the tests go on with them and say so.
fn ensure_built() -> Result<()> {
    static BUILD: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    BUILD
        .get_or_init(|| build_examples().map_err(|err| format!("{err:#}")))
        .clone()
        .map_err(|err| anyhow!(err))
}

fn build_examples() -> Result<()> {
    let dir = examples_dir()?;
    let profile_dir = dir
        .parent()
        .ok_or_else(|| anyhow!("no profile directory above {}", dir.display()))?;
    let target_dir = profile_dir
        .parent()
        .ok_or_else(|| anyhow!("no target directory above {}", profile_dir.display()))?;
    let profile = match profile_dir.file_name().and_then(|name| name.to_str()) {
        Some("debug") | None => "dev".to_owned(),
        Some(name) => name.to_owned(),
    };

    let mut cmd = std::process::Command::new(env!("CARGO"));
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target_dir)
        .arg("--profile")
        .arg(&profile);
    for name in EXAMPLES {
        cmd.arg("--example").arg(name);
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo to build the examples")?;
    // Drain cargo's stderr on a thread so a chatty build cannot fill the pipe.
    let stderr = child.stderr.take();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut stderr) = stderr {
            let _ = std::io::Read::read_to_string(&mut stderr, &mut text);
        }
        text
    });
    let deadline = Instant::now() + BUILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for cargo")? {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let log = reader.join().unwrap_or_default();

    let all_present = EXAMPLES.iter().all(|name| dir.join(name).is_file());
    match status {
        Some(status) if status.success() => Ok(()),
        _ if all_present => {
            eprintln!(
                "warning: `cargo build --examples` failed or timed out; testing the \
                 existing (possibly stale) binaries in {}\n{log}",
                dir.display()
            );
            Ok(())
        }
        Some(status) => bail!("building the examples failed ({status}):\n{log}"),
        None => bail!("building the examples timed out after {BUILD_TIMEOUT:?}:\n{log}"),
    }
}

/// Path of an example binary, built if need be.
pub fn example(name: &str) -> Result<PathBuf> {
    ensure_built()?;
    let path = examples_dir()?.join(name);
    if !path.is_file() {
        bail!("example binary {} not found", path.display());
    }
    Ok(path)
}

/// A running example. Killed (SIGKILL) when dropped; if the test is failing,
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
    /// Starts example `name` with `args`; stdin, stdout and stderr piped.
    pub fn spawn(name: &str, args: &[&str]) -> Result<Proc> {
        let mut child = Command::new(example(name)?)
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

    /// Starts a server example and waits for its `listening on ADDR` line;
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
    let mut child = Command::new(example(name)?)
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
