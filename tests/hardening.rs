//! Issue 18's trust and log-hygiene points against the real binaries: the
//! config file is trusted only as authorized_keys is (owner, mode, every
//! directory up the path, a regular file of bounded size, read without
//! blocking), RSH_HOME must be private in every mode, every line an
//! outsider can cause is rate-limited, and text a peer chose cannot forge a
//! log line.

use crate::util::{self, TestServer, Transport, WAIT};
use futures::{SinkExt, StreamExt};
use nix::sys::signal::Signal;
use rsh_proto::{Codec, ErrorKind, Exec, ExitStatus, Frame};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use tokio_util::codec::Framed;

const NOBODY: u32 = 65534;

/// Hostile events sent in each log test: well past every burst.
const HOSTILE_EVENTS: usize = 300;

/// The most lines a rate-limited kind may write for [`HOSTILE_EVENTS`]
/// events inside one interval: the documented burst (10) and a summary.
const LINES_ALLOWED: usize = 11;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

fn write_private(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    chmod(path, 0o600);
}

/// `rsh-server` with RSH_HOME at `home` and `args`, expected to refuse to
/// start: its output. A server that is still running after [`WAIT`] (ready,
/// or blocked reading its config) fails the test.
fn start_fails(home: &Path, args: &[&str]) -> std::process::Output {
    let mut child = Command::new(util::server_bin())
        .args(args)
        .env("RSH_HOME", home)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rsh-server");
    if util::wait_child(&mut child, WAIT).is_none() {
        let _ = child.kill();
        let out = child.wait_with_output().expect("server output");
        panic!("rsh-server did not refuse to start: {}", util::stderr(&out));
    }
    let out = child.wait_with_output().expect("server output");
    assert!(!out.status.success(), "{}", util::stderr(&out));
    out
}

fn private_home() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

// ---------------------------------------------------------------------------
// Point 4: the config file is a trust file
// ---------------------------------------------------------------------------

#[test]
fn config_file_in_a_group_writable_directory_is_refused_at_start() {
    let home = private_home();
    let dir = home.path().join("etc");
    std::fs::create_dir(&dir).expect("mkdir");
    chmod(&dir, 0o775);
    let config = dir.join("server.toml");
    write_private(&config, "max-commands = 2\n");
    let socket = format!("unix:{}", home.path().join("s.sock").display());
    let config_arg = config.display().to_string();
    let out = start_fails(home.path(), &["--config", &config_arg, "--listen", &socket]);
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: writable by group/others (mode 0775)",
            dir.display()
        )),
        "{err}"
    );
    // The file itself group-writable: refused too.
    chmod(&dir, 0o755);
    chmod(&config, 0o620);
    let out = start_fails(home.path(), &["--config", &config_arg, "--listen", &socket]);
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: writable by group/others (mode 0620)",
            config.display()
        )),
        "{err}"
    );
}

#[test]
fn a_fifo_config_file_is_refused_at_start_without_blocking() {
    let home = private_home();
    let fifo = home.path().join("rsh-server.toml");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let socket = format!("unix:{}", home.path().join("s.sock").display());
    // As the default file and as --config.
    for args in [
        vec!["--listen", &socket],
        vec![
            "--listen",
            &socket,
            "--config",
            fifo.to_str().expect("utf-8"),
        ],
    ] {
        let out = start_fails(home.path(), &args);
        let err = util::stderr(&out);
        assert!(err.contains("not a regular file (a FIFO)"), "{err}");
    }
}

#[test]
fn an_oversized_config_file_is_refused_at_start() {
    let home = private_home();
    let config = home.path().join("rsh-server.toml");
    // Valid TOML (comments), one byte over the cap.
    let mut text = "#".repeat(1024 * 1024);
    text.push('\n');
    write_private(&config, &text);
    let socket = format!("unix:{}", home.path().join("s.sock").display());
    let out = start_fails(home.path(), &["--listen", &socket]);
    let err = util::stderr(&out);
    assert!(err.contains("larger than 1048576 bytes"), "{err}");
}

#[test]
fn a_unix_only_server_refuses_a_writable_rsh_home() {
    for mode in [0o770, 0o777] {
        let home = private_home();
        chmod(home.path(), mode);
        let socket = format!("unix:{}", home.path().join("s.sock").display());
        // Explicit Unix endpoint, and the default one (no --listen).
        for args in [vec!["--listen", socket.as_str()], vec![]] {
            let out = start_fails(home.path(), &args);
            let err = util::stderr(&out);
            assert!(
                err.contains(&format!(
                    "{}: writable by group/others (mode {mode:04o})",
                    home.path().display()
                )),
                "{err}"
            );
        }
    }
}

/// SIGHUP with an untrusted file keeps the running settings and logs why:
/// a group-writable RSH_HOME (the repro: another user plants a
/// shell), then a FIFO in place of the file, whose read must not block the
/// reload (SIGTERM still stops the server afterwards, within a bound).
#[test]
fn an_untrusted_config_file_on_sighup_keeps_the_running_settings() {
    let mut server = TestServer::start(Transport::Unix);
    let home = server.home.path().to_owned();
    let config = home.join("rsh-server.toml");
    let evil = home.join("evil-shell");
    std::fs::write(&evil, "#!/bin/sh\necho planted\n").expect("write");
    chmod(&evil, 0o755);
    write_private(&config, &format!("shell = \"{}\"\n", evil.display()));
    chmod(&home, 0o770);
    util::signal(server.pid(), Signal::SIGHUP);
    let refused = server.wait_for_event(|ev| ev.message().starts_with("reload refused"));
    assert!(
        refused
            .text("cause")
            .contains("writable by group/others (mode 0770)"),
        "{refused}"
    );
    chmod(&home, 0o700);
    assert_eq!(server.run("echo fine", b"").stdout, b"fine\n");

    std::fs::remove_file(&config).expect("rm");
    nix::unistd::mkfifo(&config, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    util::signal(server.pid(), Signal::SIGHUP);
    let refused = server.wait_for_event(|ev| {
        ev.message().starts_with("reload refused")
            && ev.text("cause").contains("not a regular file (a FIFO)")
    });
    assert!(refused.level() == "ERROR", "{refused}");
    assert_eq!(server.run("echo still", b"").stdout, b"still\n");
    // Bounded by WAIT inside.
    let status = server.terminate();
    assert!(status.success(), "{status:?}");
}

// ---------------------------------------------------------------------------
// Points 7 and 8: what a peer can make the server log
// ---------------------------------------------------------------------------

/// A raw protocol connection to a server's Unix socket.
struct Raw {
    framed: Framed<tokio::net::UnixStream, Codec>,
}

impl Raw {
    async fn connect(server: &TestServer) -> Raw {
        let (stream, version) = util::connect_greeted(server).await;
        Raw {
            framed: Framed::new(stream, Codec::new().with_version(version)),
        }
    }

    async fn send(&mut self, frame: Frame) {
        tokio::time::timeout(WAIT, self.framed.send(frame))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// Runs `echo done` on `channel` and waits for its Exit: the server has
    /// handled every frame sent before it (a connection's frames are
    /// handled in order).
    async fn round_trip(&mut self, channel: u32) {
        self.send(Frame::Exec(Exec {
            channel,
            window: 1 << 20,
            command: b"echo done".to_vec(),
            ..Exec::default()
        }))
        .await;
        self.send(Frame::StdinEnd { channel }).await;
        loop {
            let frame = tokio::time::timeout(WAIT, self.framed.next())
                .await
                .expect("a frame in time")
                .expect("connection open")
                .expect("a valid frame");
            if let Frame::Exit { channel: c, status } = frame {
                if c == channel {
                    assert_eq!(status, ExitStatus::Code(0));
                    return;
                }
            }
        }
    }
}

fn lines_with(log: &[String], text: &str) -> usize {
    log.iter().filter(|line| line.contains(text)).count()
}

/// The count `field` of the connection's closing "suppressed" line.
fn suppressed_at_close(log: &[String], field: &str) -> Option<u64> {
    log.iter()
        .filter_map(|line| rsh_harness::LogEvent::parse(line))
        .find(|ev| {
            ev.message()
                .starts_with("log lines suppressed on this connection")
        })
        .and_then(|ev| ev.field(field).and_then(serde_json::Value::as_u64))
}

#[test]
fn a_client_error_text_cannot_forge_a_log_line() {
    let mut server = TestServer::start_text_log(Transport::Unix, &[]);
    util::runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        raw.send(Frame::Error {
            channel: 0,
            kind: ErrorKind::Internal,
            message: "oops\n2026-12-03T00:00:00.000000Z  INFO rsh_server: forged".to_owned(),
        })
        .await;
        raw.round_trip(1).await;
    });
    let log = server.stop_and_read_log();
    assert_eq!(lines_with(&log, "forged"), 1, "{log:#?}");
    assert!(
        !log.iter()
            .any(|line| line.starts_with("2026-12-03T00:00:00")),
        "{log:#?}"
    );
}

#[test]
fn client_error_frames_are_rate_limited() {
    let mut server = TestServer::start(Transport::Unix);
    util::runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        for n in 0..HOSTILE_EVENTS {
            raw.send(Frame::Error {
                channel: 0,
                kind: ErrorKind::Internal,
                message: format!("noise {n}"),
            })
            .await;
        }
        raw.round_trip(1).await;
    });
    let log = server.stop_and_read_log();
    let lines = lines_with(&log, "client reported an error");
    eprintln!("{HOSTILE_EVENTS} Error frames: {lines} log lines");
    assert!((1..=LINES_ALLOWED).contains(&lines), "{lines} lines");
    // Nothing is lost: the rest are counted in one line at the end.
    assert_eq!(
        suppressed_at_close(&log, "client_errors"),
        Some((HOSTILE_EVENTS - lines) as u64)
    );
}

#[test]
fn unknown_signal_frames_are_rate_limited() {
    let mut server = TestServer::start(Transport::Unix);
    util::runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        raw.send(Frame::Exec(Exec {
            channel: 1,
            window: 1 << 20,
            command: b"cat".to_vec(),
            ..Exec::default()
        }))
        .await;
        for _ in 0..HOSTILE_EVENTS {
            raw.send(Frame::Signal {
                channel: 1,
                signal: 200,
            })
            .await;
        }
        raw.round_trip(2).await;
        raw.send(Frame::StdinEnd { channel: 1 }).await;
    });
    let log = server.stop_and_read_log();
    let lines = lines_with(&log, "unknown signal");
    eprintln!("{HOSTILE_EVENTS} unknown Signal frames: {lines} log lines");
    assert!((1..=LINES_ALLOWED).contains(&lines), "{lines} lines");
    assert_eq!(
        suppressed_at_close(&log, "unknown_signals"),
        Some((HOSTILE_EVENTS - lines) as u64)
    );
}

/// authorized_keys made unusable while the server runs (group-writable):
/// every handshake is refused, but the log gets the burst, not a line each.
#[test]
fn an_unusable_authorized_keys_is_logged_rate_limited() {
    let mut server = TestServer::start(Transport::Tls);
    chmod(&server.home.path().join("authorized_keys"), 0o660);
    let handshakes = 200;
    util::runtime().block_on(async {
        let options = server.connect_options();
        for _ in 0..handshakes {
            let refused = rsh_client::Client::connect(&server.endpoint(), &options).await;
            assert!(
                refused.is_err(),
                "an unusable authorized_keys lets no one in"
            );
        }
    });
    let log = server.stop_and_read_log();
    let lines = lines_with(&log, "cannot use authorized_keys");
    eprintln!("{handshakes} handshakes with an unusable authorized_keys: {lines} log lines");
    assert!((1..=LINES_ALLOWED).contains(&lines), "{lines} lines");
}

/// Another user connecting to the Unix socket in a loop (here `nobody`,
/// the socket opened to it): refused each time, logged within the burst.
/// Needs root and util-linux's `setpriv`.
#[test]
fn foreign_uid_connections_are_logged_rate_limited() {
    let setpriv = Path::new("/usr/bin/setpriv");
    if !nix::unistd::geteuid().is_root() || !setpriv.exists() {
        util::skip("needs root and setpriv");
        return;
    }
    let mut server = TestServer::start(Transport::Unix);
    chmod(server.home.path(), 0o755);
    chmod(&server.socket, 0o666);
    let stranger_home = tempfile::tempdir().expect("tmp");
    chmod(stranger_home.path(), 0o777);
    let attempts = 200;
    let script = format!(
        "i=0; while [ $i -lt {attempts} ]; do \"$0\" \"$1\" -c true 2>/dev/null; i=$((i+1)); done"
    );
    let status = Command::new(setpriv)
        .args([
            "--reuid",
            &NOBODY.to_string(),
            "--regid",
            &NOBODY.to_string(),
        ])
        .arg("--clear-groups")
        .args(["sh", "-c", &script])
        .arg(util::client_bin())
        .arg(&server.dest)
        .env("RSH_HOME", stranger_home.path())
        .stdin(Stdio::null())
        .status()
        .expect("run the stranger's loop");
    assert!(status.success(), "{status:?}");
    let refused = server
        .events()
        .iter()
        .filter(|ev| ev.message().starts_with("refusing a peer of another user"))
        .count();
    if refused == 0 {
        util::skip("nobody cannot reach the client binary (a private target dir)");
        return;
    }
    let log = server.stop_and_read_log();
    let lines = lines_with(&log, "refusing a peer of another user");
    eprintln!("{attempts} foreign-uid connections: {lines} log lines");
    assert!((1..=LINES_ALLOWED).contains(&lines), "{lines} lines");
}
