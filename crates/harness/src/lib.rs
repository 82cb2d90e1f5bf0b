//! Starts real `rsh-server` and `rsh-client` processes, for the integration
//! tests (`tests/util.rs`) and for `rsh-bench`: one copy of "a private server
//! with its own RSH_HOME, keys set up both ways".
//!
//! A [`Server`] runs the given `rsh-server` binary with its own temporary
//! `RSH_HOME`, on a Unix socket in it and/or on `127.0.0.1:0` with TLS, and a
//! second temporary `RSH_HOME` for the client whose key is in the server's
//! `authorized_keys` and whose `known_hosts` pins the server's key. It learns
//! the bound port and the host key from the server's `--ready-file` (see
//! [`rsh_config::ready`]), never from log lines; it waits for that file with
//! a bounded wait that stops early if the server exits. The server's log is
//! drained for its whole life (a server blocked on a full stderr pipe would
//! stall) and kept for assertions and error messages. With
//! [`ServerBuilder::json_log`] its lines are JSON objects, and tests wait for
//! a [`LogEvent`] by its fields ([`Server::wait_for_event`]), never for a
//! phrase of the human-readable text, which is free to change.
//!
//! The binaries are given, not found: tests pass `env!("CARGO_BIN_EXE_...")`,
//! rsh-bench the release binaries next to itself.
#![deny(missing_docs)]

use anyhow::{bail, Context};
use rsh_config::Endpoint;
pub use rsh_config::ReadyFile;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Default bound on starting a server (the ready file) and on one wait for a
/// log line.
pub const START_LIMIT: Duration = Duration::from_secs(30);
/// How often the ready file and the child are looked at while waiting.
const POLL: Duration = Duration::from_millis(10);

/// The two binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `rsh-server`.
    pub server: PathBuf,
    /// `rsh-client`.
    pub client: PathBuf,
}

/// How to start a [`Server`]; [`ServerBuilder::start`] starts it.
#[derive(Debug, Clone)]
pub struct ServerBuilder {
    bins: Binaries,
    unix: bool,
    tls: bool,
    args: Vec<OsString>,
    log_keep: Option<usize>,
    temp_prefix: String,
    stop_grace: Duration,
    start_limit: Duration,
    json_log: bool,
}

impl ServerBuilder {
    /// A server on a Unix socket in its RSH_HOME, no TCP, the whole log kept,
    /// killed at once when dropped.
    pub fn new(bins: &Binaries) -> ServerBuilder {
        ServerBuilder {
            bins: bins.clone(),
            unix: true,
            tls: false,
            args: Vec::new(),
            log_keep: None,
            temp_prefix: "rsh-harness".to_owned(),
            stop_grace: Duration::ZERO,
            start_limit: START_LIMIT,
            json_log: false,
        }
    }

    /// `--log-format json`: one JSON object per log line, for
    /// [`Server::wait_for_event`] and [`Server::events`] (off by default).
    pub fn json_log(mut self, on: bool) -> Self {
        self.json_log = on;
        self
    }

    /// Listen on `unix:RSH_HOME/rsh.sock` (on by default).
    pub fn unix(mut self, on: bool) -> Self {
        self.unix = on;
        self
    }

    /// Listen on `127.0.0.1:0` with TLS, the client's key authorized and the
    /// server's key pinned in the client's known_hosts.
    pub fn tls(mut self, on: bool) -> Self {
        self.tls = on;
        self
    }

    /// Extra server arguments, after the harness's own `--listen`s (so the
    /// harness's endpoints come first in the ready file).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Keep only the last `lines` log lines (a long benchmark logs a lot).
    pub fn keep_log_lines(mut self, lines: usize) -> Self {
        self.log_keep = Some(lines);
        self
    }

    /// Name prefix of the temporary RSH_HOMEs.
    pub fn temp_prefix(mut self, prefix: &str) -> Self {
        self.temp_prefix = prefix.to_owned();
        self
    }

    /// On drop, SIGTERM and up to this long to exit before SIGKILL; zero
    /// (the default) kills at once.
    pub fn stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// Bound on the wait for the ready file.
    pub fn start_limit(mut self, limit: Duration) -> Self {
        self.start_limit = limit;
        self
    }

    /// Starts the server and waits until it is ready.
    ///
    /// # Errors
    /// Temp dirs, keys or the process could not be set up, or the server
    /// exited or did not get ready within the start limit (the error carries
    /// its log).
    pub fn start(self) -> anyhow::Result<Server> {
        let home = temp_home(&format!("{}-server", self.temp_prefix))?;
        let client_home = temp_home(&format!("{}-client", self.temp_prefix))?;
        let socket = home.path().join("rsh.sock");
        let ready_path = home.path().join("ready");
        let mut command = Command::new(&self.bins.server);
        if self.unix {
            command
                .arg("--listen")
                .arg(format!("unix:{}", socket.display()));
        }
        if self.tls {
            let key = client_fingerprint(&self.bins.client, client_home.path())?;
            std::fs::write(
                home.path().join("authorized_keys"),
                format!("# harness client\n{key}\n"),
            )
            .context("cannot write authorized_keys")?;
            command.args(["--listen", "127.0.0.1:0"]);
        }
        if self.json_log {
            command.args(["--log-format", "json"]);
        }
        let child = command
            .arg("--ready-file")
            .arg(&ready_path)
            .args(&self.args)
            .env("RSH_HOME", home.path())
            .env("HOME", home.path())
            .env("RUST_LOG", "info")
            // As a daemon started by init or a CI job may be: commands must
            // not depend on the daemon's own SHELL.
            .env_remove("SHELL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.bins.server.display()))?;
        let mut server = Server {
            child: Some(child),
            home,
            client_home,
            socket,
            ready: ReadyFile {
                pid: 0,
                endpoints: Vec::new(),
                fingerprint: None,
            },
            bins: self.bins.clone(),
            log: ServerLog(Arc::new(Log::new(self.log_keep))),
            stop_grace: self.stop_grace,
        };
        server.drain_log()?;
        let ready = match server.child.as_mut() {
            Some(child) => wait_for_ready_file(&ready_path, child, self.start_limit),
            None => bail!("rsh-server is gone"),
        };
        if ready.is_err() {
            // An early exit's reason is its last words on stderr, which the
            // drain thread may not have read yet.
            server.log.0.wait_closed(Duration::from_secs(2));
        }
        server.ready = ready.with_context(|| format!("its log:\n{}", server.log_tail()))?;
        if self.tls {
            let (Some(tcp), Some(fingerprint)) = (server.tls_dest(), &server.ready.fingerprint)
            else {
                bail!("the ready file names no TCP endpoint or no fingerprint");
            };
            std::fs::write(
                server.client_home.path().join("known_hosts"),
                format!("{tcp} {fingerprint}\n"),
            )
            .context("cannot write known_hosts")?;
        }
        Ok(server)
    }
}

fn temp_home(prefix: &str) -> anyhow::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("cannot create a temp RSH_HOME")
}

/// A running `rsh-server` with its own RSH_HOME; stopped when dropped (see
/// [`ServerBuilder::stop_grace`]).
#[derive(Debug)]
pub struct Server {
    /// The process; `None` once [`Server::terminate`] has reaped it.
    pub child: Option<Child>,
    /// The server's RSH_HOME.
    pub home: tempfile::TempDir,
    /// The client's RSH_HOME (its key and known_hosts).
    pub client_home: tempfile::TempDir,
    /// `RSH_HOME/rsh.sock`, listened on when [`ServerBuilder::unix`] is on.
    pub socket: PathBuf,
    /// What the server said in its ready file.
    pub ready: ReadyFile,
    bins: Binaries,
    log: ServerLog,
    stop_grace: Duration,
}

impl Server {
    /// The server's pid.
    pub fn pid(&self) -> u32 {
        self.ready.pid
    }

    /// The first Unix endpoint (`unix:PATH`), as the client takes it.
    pub fn unix_dest(&self) -> Option<String> {
        self.ready
            .endpoints
            .iter()
            .find(|e| matches!(e, Endpoint::Unix(_)))
            .map(Endpoint::to_string)
    }

    /// The first TCP endpoint (`127.0.0.1:PORT` for [`ServerBuilder::tls`]).
    pub fn tls_dest(&self) -> Option<String> {
        self.ready
            .endpoints
            .iter()
            .find(|e| matches!(e, Endpoint::Tcp { .. }))
            .map(Endpoint::to_string)
    }

    /// `rsh-client DEST` with the client's RSH_HOME; add `-c CMD` etc.
    pub fn client(&self, dest: &str) -> Command {
        let mut command = Command::new(&self.bins.client);
        command.env("RSH_HOME", self.client_home.path()).arg(dest);
        command
    }

    /// Library connect options with the client's RSH_HOME.
    pub fn connect_options(&self) -> rsh_client::ConnectOptions {
        rsh_client::ConnectOptions::new(rsh_config::RshHome::at(self.client_home.path()))
    }

    /// The log lines kept so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// The log kept so far, as one text.
    pub fn log_tail(&self) -> String {
        self.log.lines().join("\n")
    }

    /// The log, as a handle that outlives a borrow of the server (for a
    /// callback that must wait for the server's side of something).
    pub fn log_handle(&self) -> ServerLog {
        self.log.clone()
    }

    /// The events logged so far (see [`ServerBuilder::json_log`]).
    pub fn events(&self) -> Vec<LogEvent> {
        self.log.events()
    }

    /// The first logged event for which `wanted` holds, waiting up to
    /// `limit` for it (see [`ServerBuilder::json_log`]).
    ///
    /// # Errors
    /// No such event within `limit`, or the server's stderr closed first.
    pub fn wait_for_event(
        &self,
        wanted: impl Fn(&LogEvent) -> bool,
        limit: Duration,
    ) -> anyhow::Result<LogEvent> {
        self.log.wait_for_event(wanted, limit)
    }

    /// Waits up to `limit` for the end of the log: the server's stderr
    /// closed, normally because it exited. After [`Server::terminate`] this
    /// makes the log complete.
    pub fn wait_log_closed(&self, limit: Duration) -> bool {
        self.log.0.wait_closed(limit)
    }

    /// Sends SIGTERM and waits up to `limit` for the exit status.
    ///
    /// # Errors
    /// Already reaped, or still running after `limit` (then it is killed).
    pub fn terminate(&mut self, limit: Duration) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("the server was already reaped")?;
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        match wait_child(&mut child, limit)? {
            Some(status) => Ok(status),
            None => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("rsh-server did not exit within {limit:?} of SIGTERM")
            }
        }
    }

    /// Starts the thread that drains stderr into the log.
    fn drain_log(&mut self) -> anyhow::Result<()> {
        let stderr = self
            .child
            .as_mut()
            .and_then(|child| child.stderr.take())
            .context("rsh-server has no stderr pipe")?;
        let log = self.log.0.clone();
        let show = std::env::var_os("RSH_TEST_SHOW_LOG").is_some();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if show {
                    eprintln!("[server] {line}");
                }
                log.push(line);
            }
            log.close();
        });
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !self.stop_grace.is_zero() {
            // SIGTERM lets it end its commands' process groups.
            signal(child.id(), nix::sys::signal::Signal::SIGTERM);
            if matches!(wait_child(&mut child, self.stop_grace), Ok(Some(_))) {
                return;
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// The server's stderr lines, kept whole or as a tail.
#[derive(Debug)]
struct Log {
    state: Mutex<LogState>,
    changed: Condvar,
    keep: Option<usize>,
}

#[derive(Debug, Default)]
struct LogState {
    lines: VecDeque<String>,
    /// The writer is done: no line will come.
    closed: bool,
}

impl Log {
    fn new(keep: Option<usize>) -> Log {
        Log {
            state: Mutex::new(LogState::default()),
            changed: Condvar::new(),
            keep,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, LogState> {
        // A panic elsewhere while holding the lock leaves plain data behind.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn push(&self, line: String) {
        let mut state = self.state();
        if self.keep.is_some_and(|keep| state.lines.len() >= keep) {
            state.lines.pop_front();
        }
        state.lines.push_back(line);
        drop(state);
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state().closed = true;
        self.changed.notify_all();
    }

    /// Waits up to `limit` for the end of the log (the server's stderr
    /// closed, normally because it exited).
    fn wait_closed(&self, limit: Duration) -> bool {
        let state = self.state();
        self.changed
            .wait_timeout_while(state, limit, |state| !state.closed)
            .map_or_else(
                |poisoned| poisoned.into_inner().0.closed,
                |(state, _)| state.closed,
            )
    }

    fn lines(&self) -> Vec<String> {
        self.state().lines.iter().cloned().collect()
    }

    /// The first line for which `wanted` gives a value, waiting up to
    /// `limit` for it; `what` names it in the error.
    fn wait_for<T>(
        &self,
        wanted: impl Fn(&str) -> Option<T>,
        what: &str,
        limit: Duration,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + limit;
        let mut state = self.state();
        loop {
            if let Some(found) = state.lines.iter().find_map(|line| wanted(line)) {
                return Ok(found);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if state.closed || left.is_zero() {
                let why = if state.closed {
                    "its stderr closed"
                } else {
                    "timed out"
                };
                let log: Vec<&str> = state.lines.iter().map(String::as_str).collect();
                bail!(
                    "server never logged {what} ({why}); log:\n{}",
                    log.join("\n")
                );
            }
            state = self
                .changed
                .wait_timeout(state, left)
                .map(|(state, _)| state)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

/// A server's log, shared with the thread that drains its stderr.
#[derive(Debug, Clone)]
pub struct ServerLog(Arc<Log>);

impl ServerLog {
    /// The lines kept so far.
    pub fn lines(&self) -> Vec<String> {
        self.0.lines()
    }

    /// The events logged so far: the lines that are JSON objects.
    pub fn events(&self) -> Vec<LogEvent> {
        self.0
            .lines()
            .iter()
            .filter_map(|l| LogEvent::parse(l))
            .collect()
    }

    /// The first logged event for which `wanted` holds, waiting up to
    /// `limit` for it.
    ///
    /// # Errors
    /// No such event within `limit`, or the server's stderr closed first.
    pub fn wait_for_event(
        &self,
        wanted: impl Fn(&LogEvent) -> bool,
        limit: Duration,
    ) -> anyhow::Result<LogEvent> {
        self.0.wait_for(
            |line| LogEvent::parse(line).filter(|event| wanted(event)),
            "the awaited event",
            limit,
        )
    }
}

/// One line of a server logging with `--log-format json`: the event's own
/// fields (`message`, `level`, `cause`, `reason`, ...) at the top, the spans
/// it happened in (`conn` with `peer` and `user`, `cmd` with `command`)
/// under `spans`, outermost first.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEvent(serde_json::Value);

impl LogEvent {
    /// The event on `line`; `None` for a line that is not a JSON object.
    pub fn parse(line: &str) -> Option<LogEvent> {
        serde_json::from_str::<serde_json::Value>(line)
            .ok()
            .filter(serde_json::Value::is_object)
            .map(LogEvent)
    }

    /// The whole object.
    pub fn json(&self) -> &serde_json::Value {
        &self.0
    }

    /// The event's message (its fixed text; "" if none).
    pub fn message(&self) -> &str {
        self.0["message"].as_str().unwrap_or("")
    }

    /// `INFO`, `WARN`, ...
    pub fn level(&self) -> &str {
        self.0["level"].as_str().unwrap_or("")
    }

    /// A field of the event or, failing that, of the innermost span that
    /// has it.
    pub fn field(&self, name: &str) -> Option<&serde_json::Value> {
        self.0.get(name).or_else(|| {
            self.0["spans"]
                .as_array()?
                .iter()
                .rev()
                .find_map(|span| span.get(name))
        })
    }

    /// [`LogEvent::field`] as text: a string as it is, anything else
    /// (a number, a boolean) as JSON writes it; "" when absent.
    pub fn text(&self, name: &str) -> String {
        match self.field(name) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(other) => other.to_string(),
            None => String::new(),
        }
    }

    /// Whether the event has the field `name` equal to `value` (as
    /// [`LogEvent::text`] gives it).
    pub fn has(&self, name: &str, value: &str) -> bool {
        self.field(name).is_some() && self.text(name) == value
    }
}

impl std::fmt::Display for LogEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Waits up to `limit` for `path` (an `rsh-server --ready-file`) written by
/// `child` to appear, and reads it; fails at once if `child` exits first. A
/// file from another process (a stale one the server has not yet removed) is
/// waited past.
///
/// # Errors
/// The server exited, the limit passed, or the file is malformed.
pub fn wait_for_ready_file(
    path: &Path,
    child: &mut Child,
    limit: Duration,
) -> anyhow::Result<ReadyFile> {
    let deadline = Instant::now() + limit;
    loop {
        // The server renames the file into place whole, so once it exists
        // it is complete.
        match ReadyFile::read(path) {
            Ok(ready) if ready.pid == child.id() => return Ok(ready),
            Ok(_) => {}
            Err(rsh_config::ReadyFileError::Io { cause: source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err.into()),
        }
        if let Some(status) = child.try_wait().context("cannot wait for rsh-server")? {
            bail!("rsh-server exited ({status}) before it was ready");
        }
        if Instant::now() >= deadline {
            bail!(
                "rsh-server was not ready within {limit:?} (no {})",
                path.display()
            );
        }
        std::thread::sleep(POLL);
    }
}

/// `rsh-client --fingerprint` with RSH_HOME at `home` (creates the key): the
/// client's authorized_keys line.
///
/// # Errors
/// The client could not run or failed.
pub fn client_fingerprint(client: &Path, home: &Path) -> anyhow::Result<String> {
    let out = Command::new(client)
        .arg("--fingerprint")
        .env("RSH_HOME", home)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --fingerprint", client.display()))?;
    if !out.status.success() {
        bail!(
            "rsh-client --fingerprint failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Sends `signal` to `pid`, ignoring failure (it may be gone already).
pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(raw), signal);
    }
}

/// Waits for `child` up to `limit`; `None` if it is still running.
///
/// # Errors
/// The child could not be waited for.
pub fn wait_child(child: &mut Child, limit: Duration) -> anyhow::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for a child")? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(POLL);
    }
}
