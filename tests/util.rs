//! Shared test helpers: the real `rsh-server` binary on a temp socket (or,
//! with TLS, an ephemeral loopback port), and the real `rsh-client` binary,
//! both found through `CARGO_BIN_EXE_*`. Starting servers is the
//! `rsh-harness` crate's job (shared with rsh-bench); this adds the tests'
//! conveniences (panics instead of errors, one body per transport).
//!
//! Test servers log JSON: a test waits for what the server did with
//! [`TestServer::wait_for_event`], matching the event's fields (`cause`,
//! `reason`, `peer`, `fingerprint`, `command`...), never the wording of a
//! log line. A test that cannot run here calls [`skip`] (or
//! [`tools_present`]): it says so on stderr and is counted in a summary
//! printed when the test binary exits.
#![allow(dead_code)]

pub use rsh_harness::LogEvent;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Upper bound for any single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(30);

/// How the client reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// The local Unix socket.
    Unix,
    /// TCP on 127.0.0.1 with TLS and keys set up both ways.
    Tls,
}

/// The directory holding the binaries Cargo built for these tests.
pub fn bin_dir() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_rsh-server"))
        .parent()
        .expect("a binary lives in a directory")
}

/// The `rsh-server` binary Cargo built for these tests.
pub fn server_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rsh-server"))
}

/// The `rsh-client` binary Cargo built for these tests.
pub fn client_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_rsh-client"))
}

/// Both binaries, for `rsh_harness`.
pub fn binaries() -> rsh_harness::Binaries {
    rsh_harness::Binaries {
        server: server_bin(),
        client: client_bin(),
    }
}

/// A running `rsh-server` with its own RSH_HOME in a temp dir; killed on
/// drop. Derefs to [`rsh_harness::Server`] (`home`, `client_home`, `socket`,
/// `child`, `ready`, ...).
pub struct TestServer {
    pub transport: Transport,
    /// `DEST` as the client takes it.
    pub dest: String,
    inner: rsh_harness::Server,
}

impl std::ops::Deref for TestServer {
    type Target = rsh_harness::Server;

    fn deref(&self) -> &rsh_harness::Server {
        &self.inner
    }
}

impl std::ops::DerefMut for TestServer {
    fn deref_mut(&mut self) -> &mut rsh_harness::Server {
        &mut self.inner
    }
}

impl TestServer {
    pub fn start(transport: Transport) -> TestServer {
        Self::start_with(transport, &[])
    }

    /// A server for `transport` (its endpoint first), with `extra_args`,
    /// logging JSON (see [`TestServer::wait_for_event`]).
    pub fn start_with(transport: Transport, extra_args: &[&str]) -> TestServer {
        Self::start_logging(transport, extra_args, true)
    }

    /// A server logging the human-readable text (for tests of that text),
    /// with `extra_args`.
    pub fn start_text_log(transport: Transport, extra_args: &[&str]) -> TestServer {
        Self::start_logging(transport, extra_args, false)
    }

    fn start_logging(transport: Transport, extra_args: &[&str], json_log: bool) -> TestServer {
        let inner = rsh_harness::ServerBuilder::new(&binaries())
            .json_log(json_log)
            .unix(transport == Transport::Unix)
            .tls(transport == Transport::Tls)
            .args([
                "--shutdown-grace",
                "5",
                "--kill-grace",
                "0.5",
                "--linger",
                "0.3",
            ])
            .args(extra_args.iter().copied())
            .start_limit(WAIT)
            .start()
            .unwrap_or_else(|err| panic!("cannot start rsh-server: {err:#}"));
        let dest = match transport {
            Transport::Unix => inner.unix_dest(),
            Transport::Tls => inner.tls_dest(),
        }
        .expect("the server listens where asked");
        TestServer {
            transport,
            dest,
            inner,
        }
    }

    /// The endpoint the client connects to.
    pub fn endpoint(&self) -> rsh_config::Endpoint {
        self.dest.parse().expect("valid endpoint")
    }

    /// Blocks until the server logs an event for which `wanted` holds
    /// (bounded by [`WAIT`]): matched on the event's fields, never on the
    /// wording of its message.
    pub fn wait_for_event(&self, wanted: impl Fn(&LogEvent) -> bool) -> LogEvent {
        self.inner
            .wait_for_event(wanted, WAIT)
            .unwrap_or_else(|err| panic!("{err:#}"))
    }

    /// The first `command finished` event (bounded wait).
    pub fn wait_for_command_finished(&self) -> LogEvent {
        self.wait_for_event(|ev| ev.message() == "command finished")
    }

    /// SIGTERMs the server, waits for it to exit (which it must, with
    /// success) and returns its whole log.
    pub fn stop_and_read_log(&mut self) -> Vec<String> {
        let status = self.terminate();
        assert!(status.success(), "server exit status {status:?}");
        assert!(
            self.inner.wait_log_closed(WAIT),
            "the server's stderr closes"
        );
        self.log()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// A client command for this server (`rsh-client DEST ARGS...`).
    pub fn client(&self) -> Command {
        self.inner.client(&self.dest)
    }

    /// Starts `rsh-client DEST -c CMD`, stdin from /dev/null, stdout and
    /// stderr piped.
    pub fn spawn_client(&self, cmd: &str) -> Child {
        self.client()
            .args(["-c", cmd])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client")
    }

    /// Starts `rsh-client DEST -c CMD` (stdout piped, `stdin` as given) and
    /// reads its first line, which must be `started`: CMD is running. The
    /// client and the rest of its stdout.
    pub fn spawn_started(
        &self,
        cmd: &str,
        stdin: Stdio,
    ) -> (Child, std::io::BufReader<std::process::ChildStdout>) {
        use std::io::BufRead;
        let mut running = self
            .client()
            .args(["-c", cmd])
            .stdin(stdin)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn client");
        let mut stdout = std::io::BufReader::new(running.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        assert_eq!(line, "started\n");
        (running, stdout)
    }

    /// Runs `rsh-client DEST -c CMD` with `stdin` and returns its output.
    pub fn run(&self, cmd: &str, stdin: &[u8]) -> std::process::Output {
        run_with_stdin(self.client().arg("-c").arg(cmd), stdin)
    }

    /// A library client connected to this server.
    pub async fn connect(&self) -> rsh_client::Client {
        rsh_client::Client::connect(&self.endpoint(), &self.connect_options())
            .await
            .expect("connect")
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// Sends SIGTERM and waits for the exit status (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.inner
            .terminate(WAIT)
            .unwrap_or_else(|err| panic!("server exits after SIGTERM: {err:#}"))
    }
}

/// `rsh-client --fingerprint` with RSH_HOME at `home` (creates the key).
pub fn client_fingerprint(home: &Path) -> String {
    rsh_harness::client_fingerprint(&client_bin(), home).unwrap_or_else(|err| panic!("{err:#}"))
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, signal).expect("send signal");
}

/// Waits for a child up to `limit`; `None` if it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    rsh_harness::wait_child(child, limit).expect("wait for a child")
}

/// Runs a command feeding `stdin` from a thread, with a bounded wait.
pub fn run_with_stdin(command: &mut Command, stdin: &[u8]) -> std::process::Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = pipe.write_all(&input);
    });
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = rx
        .recv_timeout(WAIT)
        .expect("client finished in time")
        .expect("client output");
    let _ = feeder.join();
    output
}

pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .expect("VmRSS in /proc status")
}

/// Pids of the processes in process group `pgid`, zombies included (from /proc).
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    rsh_sys::ProcStat::all(usize::MAX)
        .into_iter()
        .filter(|stat| stat.pgrp == pgid)
        .map(|stat| stat.pid)
        .collect()
}

/// Pids of the live (not zombie) processes of session `sid` (from /proc).
pub fn live_session_members(sid: u32) -> Vec<u32> {
    rsh_sys::ProcStat::all(usize::MAX)
        .into_iter()
        .filter(|stat| stat.session == sid && !stat.is_zombie())
        .map(|stat| stat.pid)
        .collect()
}

/// Deterministic pseudo-random bytes (xorshift), fast enough for 50 MB.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The tests skipped in this run, with why, for the summary printed when
/// the test binary exits (libtest has no "skipped": a test that returns
/// early is reported `ok`, so the summary is what tells them apart).
static SKIPPED: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// Marks the running test skipped because `reason` (it should return right
/// after): a `skipped:` line on stderr now, and a count and list on stderr
/// when the test binary exits.
pub fn skip(reason: &str) {
    let test = std::thread::current()
        .name()
        .map_or_else(|| "a test".to_owned(), str::to_owned);
    eprintln!("skipped: {reason} ({test})");
    SKIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .push(format!("{test}: {reason}"));
    static SUMMARY: std::sync::Once = std::sync::Once::new();
    SUMMARY.call_once(|| {
        // SAFETY: `atexit` only stores the pointer of a function that takes
        // nothing, returns nothing and does not unwind (see below); it runs
        // once, when the process exits normally (libtest's `exit`).
        #[allow(unsafe_code)]
        let registered = unsafe { nix::libc::atexit(print_skip_summary) };
        if registered != 0 {
            eprintln!("note: the summary of skipped tests cannot be printed at exit");
        }
    });
}

/// Whether every one of `tools` is on PATH. When one is not, with
/// `RSH_REQUIRE_TOOLS` set this panics (CI installs them, so a missing one
/// is a broken CI); else it marks the test skipped ([`skip`]) and returns
/// false.
pub fn tools_present(tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|tool| find_in_path(tool).is_none())
        .collect();
    if missing.is_empty() {
        return true;
    }
    let missing = missing.join(", ");
    if std::env::var_os("RSH_REQUIRE_TOOLS").is_some() {
        panic!("{missing} not installed (not on PATH), and RSH_REQUIRE_TOOLS is set");
    }
    skip(&format!(
        "{missing} not installed (.ci/run installs it; RSH_REQUIRE_TOOLS=1 makes this a failure)"
    ));
    false
}

/// The executable `tool` in a directory of PATH.
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .map(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// Prints how many tests were skipped, and which, after libtest's own
/// summary. Called by the C library at exit: it must not unwind, so it
/// neither panics nor waits on a poisoned lock.
extern "C" fn print_skip_summary() {
    let skipped = SKIPPED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if skipped.is_empty() {
        return;
    }
    let mut summary = format!(
        "\n{} test(s) skipped (reported `ok` above, but they did not run):\n",
        skipped.len()
    );
    for line in skipped.iter() {
        summary.push_str("    ");
        summary.push_str(line);
        summary.push('\n');
    }
    use std::io::Write;
    let _ = std::io::stderr().write_all(summary.as_bytes());
}

/// A tokio runtime with two workers, for tests that drive the library
/// client from a plain `#[test]`.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A one-thread tokio runtime (as rsh-client's own).
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A process's stderr, as text.
pub fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The port of `HOST:PORT`.
pub fn port_of(dest: &str) -> u16 {
    dest.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port")
}

/// A raw connection to the server's Unix socket, greeted: the stream and
/// the protocol version agreed on (bounded waits).
pub async fn connect_greeted(server: &TestServer) -> (tokio::net::UnixStream, u16) {
    let mut stream = tokio::time::timeout(WAIT, tokio::net::UnixStream::connect(&server.socket))
        .await
        .expect("connect in time")
        .expect("connect");
    let version = rsh_proto::io::greet(&mut stream, WAIT)
        .await
        .expect("greeting");
    (stream, version)
}
