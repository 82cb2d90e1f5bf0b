//! Shared test harness: the real `rsh-server` binary on a temp socket (or,
//! with TLS, an ephemeral loopback port), and the real `rsh-client` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

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

/// A running `rsh-server` with its own RSH_HOME in a temp dir; killed on drop.
pub struct TestServer {
    pub transport: Transport,
    /// The server's RSH_HOME.
    pub home: tempfile::TempDir,
    /// The client's RSH_HOME (its key and known_hosts).
    pub client_home: tempfile::TempDir,
    pub child: Option<Child>,
    /// `DEST` as the client takes it.
    pub dest: String,
    pub socket: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
    lines: Mutex<mpsc::Receiver<String>>,
}

impl TestServer {
    pub fn start(transport: Transport) -> TestServer {
        Self::start_with(transport, &[])
    }

    pub fn start_with(transport: Transport, extra_args: &[&str]) -> TestServer {
        let home = tempfile::tempdir().expect("temp RSH_HOME");
        let client_home = tempfile::tempdir().expect("temp client RSH_HOME");
        let socket = home.path().join("rsh.sock");
        let listen = match transport {
            Transport::Unix => format!("unix:{}", socket.display()),
            Transport::Tls => {
                // The client's key, authorized on the server.
                let key = client_fingerprint(client_home.path());
                std::fs::write(
                    home.path().join("authorized_keys"),
                    format!("# test client\n{key}\n"),
                )
                .expect("write authorized_keys");
                "127.0.0.1:0".to_owned()
            }
        };
        let mut child = Command::new(server_bin())
            .arg("--listen")
            .arg(&listen)
            .args([
                "--shutdown-grace",
                "5",
                "--kill-grace",
                "0.5",
                "--linger",
                "0.3",
            ])
            .args(extra_args)
            .env("RSH_HOME", home.path())
            .env("HOME", home.path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start rsh-server");
        let stderr = child.stderr.take().expect("piped stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if std::env::var_os("RSH_TEST_SHOW_LOG").is_some() {
                        eprintln!("[server] {line}");
                    }
                    log.lock().expect("log lock").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        let mut server = TestServer {
            transport,
            home,
            client_home,
            child: Some(child),
            dest: listen,
            socket,
            log,
            lines: Mutex::new(rx),
        };
        let listening = server.wait_for_log("listening");
        if transport == Transport::Tls {
            // The real port, and the host key pinned in the client's known_hosts.
            let endpoint = listening
                .split("endpoint=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("listening line names the endpoint")
                .to_owned();
            let host_key = server.wait_for_log("host key fingerprint=");
            let fingerprint = host_key
                .split("fingerprint=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .expect("fingerprint in the log")
                .to_owned();
            std::fs::write(
                server.client_home.path().join("known_hosts"),
                format!("{endpoint} {fingerprint}\n"),
            )
            .expect("write known_hosts");
            server.dest = endpoint;
        }
        server
    }

    /// The endpoint the client connects to.
    pub fn endpoint(&self) -> rsh_config::Endpoint {
        self.dest.parse().expect("valid endpoint")
    }

    /// Library connect options with the client's home.
    pub fn connect_options(&self) -> rsh_client::ConnectOptions {
        rsh_client::ConnectOptions::new(rsh_config::RshHome::at(self.client_home.path()))
    }

    /// Blocks until a log line containing `needle` appears (bounded).
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
            return line;
        }
        let lines = self.lines.lock().expect("lines lock");
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => continue,
                Err(_) => panic!(
                    "server never logged {needle:?}; log:\n{}",
                    self.log().join("\n")
                ),
            }
        }
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().expect("log lock").clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server running").id()
    }

    /// A client command for this server (`rsh-client DEST ARGS...`).
    pub fn client(&self) -> Command {
        let mut command = Command::new(client_bin());
        command
            .env("RSH_HOME", self.client_home.path())
            .arg(&self.dest);
        command
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
        let mut child = self.child.take().expect("server running");
        signal(child.id(), nix::sys::signal::Signal::SIGTERM);
        wait_child(&mut child, WAIT).expect("server exits after SIGTERM")
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `rsh-client --fingerprint` with RSH_HOME at `home` (creates the key).
pub fn client_fingerprint(home: &Path) -> String {
    let out = Command::new(client_bin())
        .arg("--fingerprint")
        .env("RSH_HOME", home)
        .output()
        .expect("rsh-client --fingerprint");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

pub fn signal(pid: u32, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, signal).expect("send signal");
}

/// Waits for a child up to `limit`; `None` if it is still running.
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
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

/// Pids of live processes in process group `pgid` (from /proc).
pub fn processes_in_group(pgid: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return pids;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Fields after the parenthesised command name: state ppid pgrp ...
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = after.split_whitespace().collect();
        if fields.get(2).and_then(|p| p.parse::<u32>().ok()) == Some(pgid) {
            pids.push(pid);
        }
    }
    pids
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
