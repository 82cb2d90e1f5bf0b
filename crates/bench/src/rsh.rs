//! A private `rsh-server` (the release binary next to this one) with its own
//! RSH_HOME, on a temp Unix socket and on 127.0.0.1:PORT with keys set up
//! both ways: the `rsh-harness` crate, shared with the integration tests.

use crate::util::is_executable;
use anyhow::{bail, Context};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

pub use rsh_harness::Binaries;

const BUILD_HINT: &str = "build them with `cargo build --release -p rsh -p rsh-bench`";

/// Where the rsh binaries are: next to our own executable.
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

/// A running `rsh-server`; stopped (SIGTERM, then SIGKILL) on drop.
pub struct RshServer {
    server: rsh_harness::Server,
}

/// Log lines kept for error messages.
const LOG_KEEP: usize = 200;
const START_LIMIT: Duration = Duration::from_secs(20);
const STOP_LIMIT: Duration = Duration::from_secs(5);

impl RshServer {
    pub fn start(bins: &Binaries, listen: Listen) -> anyhow::Result<RshServer> {
        let server = rsh_harness::ServerBuilder::new(bins)
            .tls(listen == Listen::UnixAndTls)
            // Only how fast it stops when the bench is done with it.
            .args(["--shutdown-grace", "1", "--kill-grace", "0.5"])
            .keep_log_lines(LOG_KEEP)
            .temp_prefix("rsh-bench")
            .start_limit(START_LIMIT)
            .stop_grace(STOP_LIMIT)
            .start()?;
        Ok(RshServer { server })
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// `unix:SOCK`, as the client takes it.
    pub fn unix_dest(&self) -> String {
        format!("unix:{}", self.server.socket.display())
    }

    /// `127.0.0.1:PORT`.
    pub fn tls_dest(&self) -> anyhow::Result<String> {
        self.server
            .tls_dest()
            .context("this server does not listen on TCP")
    }

    /// `rsh-client DEST -c COMMAND` with the client's RSH_HOME.
    pub fn client(&self, dest: &str, remote: &str) -> Command {
        let mut command = self.server.client(dest);
        command.args(["-c", remote]);
        command
    }

    /// `rsh-client DEST -tt -e none -c COMMAND`: a remote pty although stdin
    /// is a pipe, no escape character.
    pub fn tty_client(&self, dest: &str, remote: &str) -> Command {
        let mut command = self.server.client(dest);
        command.args(["-tt", "-e", "none", "-c", remote]);
        command
    }

    /// Same, for tokio.
    pub fn tokio_client(&self, dest: &str, remote: &str) -> tokio::process::Command {
        tokio::process::Command::from(self.client(dest, remote))
    }

    /// Library options with the client's home (its key and known_hosts).
    pub fn connect_options(&self) -> rsh_client::ConnectOptions {
        self.server.connect_options()
    }

    /// The server's last log lines (at most `LOG_KEEP`).
    pub fn log(&self) -> Vec<String> {
        self.server.log()
    }

    /// Pins the server's host key for `dest` too, in the client's
    /// known_hosts: a proxy in front of the server (see [`crate::delay`])
    /// is another host:port to the client.
    pub fn trust_alias(&self, dest: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let fingerprint = self
            .server
            .ready
            .fingerprint
            .as_deref()
            .context("the server named no host key fingerprint")?;
        let path = self.server.client_home.path().join("known_hosts");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        writeln!(file, "{dest} {fingerprint}")
            .with_context(|| format!("cannot write {}", path.display()))
    }

    pub fn endpoint(&self, dest: &str) -> anyhow::Result<rsh_config::Endpoint> {
        dest.parse()
            .with_context(|| format!("bad endpoint {dest:?}"))
    }
}
