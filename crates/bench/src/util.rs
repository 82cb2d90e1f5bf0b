//! Measuring helpers: statistics, bounded child processes, /proc readings.

use anyhow::{bail, Context};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Median, min and max of a series of samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Stats {
    /// `None` for an empty series.
    pub fn of(samples: &[f64]) -> Option<Stats> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: sorted[0],
            max: sorted[n - 1],
            runs: n,
        })
    }
}

/// Kills children that run past their deadline. One thread serves every
/// measurement, so arming costs a channel send, not a thread spawn, and stays
/// out of the timed region.
pub struct Watchdog {
    tx: mpsc::Sender<Msg>,
    next_id: std::sync::atomic::AtomicU64,
}

enum Msg {
    Arm {
        id: u64,
        pid: u32,
        deadline: Instant,
    },
    Disarm(u64),
}

/// Disarms its entry on drop.
pub struct Armed<'a> {
    watchdog: &'a Watchdog,
    id: u64,
}

impl Drop for Armed<'_> {
    fn drop(&mut self) {
        let _ = self.watchdog.tx.send(Msg::Disarm(self.id));
    }
}

impl Watchdog {
    pub fn start() -> Watchdog {
        let (tx, rx) = mpsc::channel::<Msg>();
        std::thread::spawn(move || {
            let mut armed: HashMap<u64, (u32, Instant)> = HashMap::new();
            loop {
                let next = armed.values().map(|&(_, deadline)| deadline).min();
                let msg = match next {
                    Some(deadline) => {
                        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(msg) => Some(msg),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    None => match rx.recv() {
                        Ok(msg) => Some(msg),
                        Err(_) => return,
                    },
                };
                match msg {
                    Some(Msg::Arm { id, pid, deadline }) => {
                        armed.insert(id, (pid, deadline));
                    }
                    Some(Msg::Disarm(id)) => {
                        armed.remove(&id);
                    }
                    None => {
                        let now = Instant::now();
                        armed.retain(|_, &mut (pid, deadline)| {
                            if deadline <= now {
                                kill(pid, nix::sys::signal::Signal::SIGKILL);
                                false
                            } else {
                                true
                            }
                        });
                    }
                }
            }
        });
        Watchdog {
            tx,
            next_id: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// Kills `pid` (SIGKILL) if the guard is still alive after `limit`.
    pub fn arm(&self, pid: u32, limit: Duration) -> Armed<'_> {
        let id = self
            .next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let _ = self.tx.send(Msg::Arm {
            id,
            pid,
            deadline: Instant::now() + limit,
        });
        Armed { watchdog: self, id }
    }
}

pub fn kill(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
    }
}

/// What a child gets on stdin.
#[derive(Debug, Clone, Copy)]
pub enum Feed {
    /// /dev/null.
    Null,
    /// This many zero bytes through a pipe, then end of file.
    Zeros(u64),
}

/// One bounded run of a child process.
#[derive(Debug)]
pub struct Run {
    pub elapsed: Duration,
    pub status: ExitStatus,
    /// Bytes read from its stdout (0 when not captured).
    pub stdout_bytes: u64,
    /// Bytes of stdin it took before closing the pipe.
    pub stdin_fed: u64,
    /// The end of its stderr (empty when not captured).
    pub stderr_tail: String,
}

impl Run {
    /// An error naming the command unless it exited 0.
    pub fn check(&self, what: &str) -> anyhow::Result<()> {
        if self.status.success() {
            Ok(())
        } else {
            bail!(
                "{what} failed ({}): {}",
                self.status,
                self.stderr_tail.trim()
            )
        }
    }
}

const STDERR_KEEP: usize = 4096;

/// Runs `command` to its end (killed after `limit`), timing from just before
/// the spawn to the exit and the end of its stdout. With `capture`, stdout is
/// drained and counted and stderr kept; without, both go to /dev/null (the
/// cheapest setup, for latency).
pub fn run_bounded(
    command: &mut Command,
    feed: Feed,
    capture: bool,
    limit: Duration,
    watchdog: &Watchdog,
) -> anyhow::Result<Run> {
    command.stdin(match feed {
        Feed::Null => Stdio::null(),
        Feed::Zeros(_) => Stdio::piped(),
    });
    if capture {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
    } else {
        command.stdout(Stdio::null()).stderr(Stdio::null());
    }
    let started = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {:?}", command.get_program()))?;
    let armed = watchdog.arm(child.id(), limit);
    // The bench's ends of the pipes get 1 MiB, as rsh-client gives its own
    // stdio: the floors and ssh rows then see the same pipes as rsh rows.
    if let Some(pipe) = &child.stdin {
        widen_pipe(pipe);
    }
    if let Some(pipe) = &child.stdout {
        widen_pipe(pipe);
    }
    let feeder = match (feed, child.stdin.take()) {
        (Feed::Zeros(total), Some(pipe)) => {
            Some(std::thread::spawn(move || feed_zeros(pipe, total)))
        }
        _ => None,
    };
    let stdout = child
        .stdout
        .take()
        .map(|pipe| std::thread::spawn(move || drain(pipe)));
    let stderr = child
        .stderr
        .take()
        .map(|pipe| std::thread::spawn(move || drain_tail(pipe, STDERR_KEEP)));
    let status = child.wait().context("waiting for a child")?;
    let stdout_bytes = join(stdout).unwrap_or_default();
    let elapsed = started.elapsed();
    drop(armed);
    let stdin_fed = join(feeder).unwrap_or(0);
    let stderr_tail = join(stderr).unwrap_or_default();
    Ok(Run {
        elapsed,
        status,
        stdout_bytes,
        stdin_fed,
        stderr_tail,
    })
}

/// Bytes a bench-side pipe can hold.
const PIPE_SIZE: i32 = 1 << 20;

/// Grows a pipe to [`PIPE_SIZE`] (best effort: the size is a hint).
fn widen_pipe(pipe: &impl std::os::fd::AsRawFd) {
    let _ = nix::fcntl::fcntl(
        pipe.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE),
    );
}

fn join<T>(handle: Option<JoinHandle<T>>) -> Option<T> {
    handle.and_then(|h| h.join().ok())
}

/// Writes `total` zero bytes, then closes the pipe; returns what was taken.
fn feed_zeros(mut pipe: impl Write, total: u64) -> u64 {
    let buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    while sent < total {
        let n = usize::try_from((total - sent).min(buf.len() as u64)).unwrap_or(buf.len());
        if pipe.write_all(&buf[..n]).is_err() {
            break;
        }
        sent += n as u64;
    }
    sent
}

/// Reads to end of file, counting.
fn drain(mut pipe: impl Read) -> u64 {
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        match pipe.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => total += n as u64,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    total
}

fn drain_tail(mut pipe: impl Read, keep: usize) -> String {
    let mut all = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                all.extend_from_slice(&buf[..n]);
                if all.len() > 2 * keep {
                    all.drain(..all.len() - keep);
                }
            }
        }
    }
    let start = all.len().saturating_sub(keep);
    String::from_utf8_lossy(&all[start..]).into_owned()
}

/// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
pub fn proc_status_kib(pid: u32, field: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("cannot read /proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

pub use rsh_sys::{is_executable, raise_fd_limit};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// Waits until `address:port` accepts connections (bounded), failing at once
/// if `child` exits first.
pub fn wait_for_listener(
    address: &str,
    port: u16,
    limit: Duration,
    child: &mut Child,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if std::net::TcpStream::connect((address, port)).is_ok() {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!("exited ({status}) before listening on port {port}");
        }
        if Instant::now() >= deadline {
            bail!("nothing listens on port {port} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Facts about the machine, for the top of the report.
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub openssh: Option<String>,
}

impl Machine {
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim() == "model name").then(|| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let memory_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|kib| kib.parse::<f64>().ok())
            })
            .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        let openssh = Command::new("ssh")
            .arg("-V")
            .stdin(Stdio::null())
            .output()
            .ok()
            .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_owned())
            .filter(|v| !v.is_empty());
        Machine {
            cpu,
            cores,
            memory_gib,
            kernel,
            openssh,
        }
    }
}

/// The workspace's git revision, `+dirty` with uncommitted changes to the
/// crates; `None` outside a git checkout.
pub fn revision() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|out| out.status.success())
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    };
    let head = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty = git(&[
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "crates",
    ])
    .is_some_and(|status| !status.is_empty());
    Some(if dirty { format!("{head}+dirty") } else { head })
}

/// The 1, 5 and 15 minute load averages, as /proc/loadavg shows them.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}
