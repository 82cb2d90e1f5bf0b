//! A private `rsh-server` (the release binary next to this one) with its own
//! RSH_HOME, on a temp Unix socket and on 127.0.0.1:PORT with keys set up
//! both ways, as the integration tests do.

use crate::util::{is_executable, kill};
use anyhow::{bail, Context};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

/// Where the rsh binaries are: next to our own executable.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub server: PathBuf,
    pub client: PathBuf,
}

const BUILD_HINT: &str = "build them with `cargo build --release -p rsh -p rsh-bench`";

impl Binaries {
    pub fn locate() -> anyhow::Result<Binaries> {
        let exe = std::env::current_exe().context("cannot find our own executable")?;
        let dir = exe
            .parent()
            .context("our executable has no parent directory")?;
        let server = dir.join("rsh-server");
        let client = dir.join("rsh-client");
        for bin in [&server, &client] {
            if !is_executable(bin) {
                bail!("{} is missing: {BUILD_HINT}", bin.display());
            }
        }
        // `cargo run -p rsh-bench` builds the client library, not the
        // binaries: warn when a source they are built from is newer.
        let sources = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        if let Some(newest) = newest_source(&sources) {
            for bin in [&server, &client] {
                if modified(bin).is_some_and(|built| built < newest) {
                    eprintln!(
                        "warning: {} is older than its sources and may be stale; {BUILD_HINT}",
                        bin.display()
                    );
                }
            }
        }
        Ok(Binaries { server, client })
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the server's and client's sources
/// (`crates/*/src/**`, `crates/*/Cargo.toml` and the root package's `src/`
/// with the thin mains), if they are here.
fn newest_source(crates: &Path) -> Option<std::time::SystemTime> {
    let mut newest = None;
    let mut dirs = Vec::new();
    for name in ["proto", "config", "tls", "server", "client"] {
        let krate = crates.join(name);
        newest = newest.max(modified(&krate.join("Cargo.toml")));
        dirs.push(krate.join("src"));
    }
    dirs.push(crates.join("../src"));
    // Bounded: a source tree of a few dozen files.
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                newest = newest.max(modified(&path));
            }
        }
    }
    newest
}

/// Which endpoints a server listens on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listen {
    Unix,
    UnixAndTls,
}

/// A running `rsh-server`; killed on drop.
pub struct RshServer {
    child: Child,
    bins: Binaries,
    _home: tempfile::TempDir,
    client_home: tempfile::TempDir,
    pub socket: PathBuf,
    /// `127.0.0.1:PORT` when listening on TCP.
    pub tcp: Option<String>,
    log: Arc<Mutex<VecDeque<String>>>,
}

const LOG_KEEP: usize = 200;
const START_LIMIT: Duration = Duration::from_secs(20);
const STOP_LIMIT: Duration = Duration::from_secs(5);

impl RshServer {
    pub fn start(bins: &Binaries, listen: Listen) -> anyhow::Result<RshServer> {
        let home = tempfile::Builder::new()
            .prefix("rsh-bench-server")
            .tempdir()
            .context("cannot create a temp RSH_HOME")?;
        let client_home = tempfile::Builder::new()
            .prefix("rsh-bench-client")
            .tempdir()
            .context("cannot create a temp client RSH_HOME")?;
        let socket = home.path().join("rsh.sock");
        let mut command = Command::new(&bins.server);
        command
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            // Only how fast it stops when the bench is done with it.
            .args(["--shutdown-grace", "1", "--kill-grace", "0.5"]);
        if listen == Listen::UnixAndTls {
            let key = client_fingerprint(&bins.client, client_home.path())?;
            std::fs::write(
                home.path().join("authorized_keys"),
                format!("# rsh-bench client\n{key}\n"),
            )
            .context("cannot write authorized_keys")?;
            command.args(["--listen", "127.0.0.1:0"]);
        }
        let mut child = command
            .env("RSH_HOME", home.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", bins.server.display()))?;
        let Some(stderr) = child.stderr.take() else {
            bail!("rsh-server has no stderr pipe");
        };
        let log = Arc::new(Mutex::new(VecDeque::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            // Drains the log for the server's whole life, keeping the tail
            // (a server blocked on a full stderr pipe would stall).
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Ok(mut log) = log.lock() {
                        if log.len() >= LOG_KEEP {
                            log.pop_front();
                        }
                        log.push_back(line.clone());
                    }
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = RshServer {
            child,
            bins: bins.clone(),
            _home: home,
            client_home,
            socket,
            tcp: None,
            log,
        };
        let deadline = Instant::now() + START_LIMIT;
        let mut unix_up = false;
        let mut fingerprint = None;
        while !(unix_up
            && (listen == Listen::Unix || (server.tcp.is_some() && fingerprint.is_some())))
        {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).map_err(|_| {
                anyhow::anyhow!(
                    "rsh-server did not start within {START_LIMIT:?}; its log:\n{}",
                    server.log_tail()
                )
            })?;
            if let Some(endpoint) = field(&line, "listening", "endpoint=") {
                if endpoint.starts_with("unix:") {
                    unix_up = true;
                } else {
                    server.tcp = Some(endpoint);
                }
            }
            if let Some(fp) = field(&line, "host key", "fingerprint=") {
                fingerprint = Some(fp);
            }
        }
        if let (Some(tcp), Some(fp)) = (&server.tcp, &fingerprint) {
            std::fs::write(
                server.client_home.path().join("known_hosts"),
                format!("{tcp} {fp}\n"),
            )
            .context("cannot write known_hosts")?;
        }
        Ok(server)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `unix:SOCK`, as the client takes it.
    pub fn unix_dest(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    /// `127.0.0.1:PORT`.
    pub fn tls_dest(&self) -> anyhow::Result<&str> {
        self.tcp
            .as_deref()
            .context("this server does not listen on TCP")
    }

    /// `rsh-client DEST -c COMMAND` with the client's RSH_HOME.
    pub fn client(&self, dest: &str, remote: &str) -> Command {
        let mut command = Command::new(&self.bins.client);
        command
            .env("RSH_HOME", self.client_home.path())
            .args([dest, "-c", remote]);
        command
    }

    /// Same, for tokio.
    pub fn tokio_client(&self, dest: &str, remote: &str) -> tokio::process::Command {
        tokio::process::Command::from(self.client(dest, remote))
    }

    /// Library options with the client's home (its key and known_hosts).
    pub fn connect_options(&self) -> rsh_client::ConnectOptions {
        rsh_client::ConnectOptions::new(rsh_config::RshHome::at(self.client_home.path()))
    }

    pub fn endpoint(&self, dest: &str) -> anyhow::Result<rsh_config::Endpoint> {
        dest.parse()
            .with_context(|| format!("bad endpoint {dest:?}"))
    }

    pub fn log_tail(&self) -> String {
        self.log
            .lock()
            .map(|log| log.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }
}

impl Drop for RshServer {
    fn drop(&mut self) {
        // SIGTERM lets it end its commands' process groups; SIGKILL if it
        // takes too long.
        kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + STOP_LIMIT;
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        kill(self.child.id(), nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

/// The value after `key` on a log line that contains `marker`.
fn field(line: &str, marker: &str, key: &str) -> Option<String> {
    if !line.contains(marker) {
        return None;
    }
    line.split(key)
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned)
}

/// `rsh-client --fingerprint` with RSH_HOME at `home` (creates the key).
fn client_fingerprint(client: &Path, home: &Path) -> anyhow::Result<String> {
    let out = Command::new(client)
        .arg("--fingerprint")
        .env("RSH_HOME", home)
        .stdin(Stdio::null())
        .output()
        .context("cannot run rsh-client --fingerprint")?;
    if !out.status.success() {
        bail!(
            "rsh-client --fingerprint failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}
