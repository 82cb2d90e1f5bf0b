//! rsh-server as a service: SIGHUP reloads without dropping sessions, the
//! config file and `--check-config`, log formats for the journal and for
//! log shippers, and sd_notify readiness on a `NOTIFY_SOCKET`.

use crate::util::{self, TestServer, Transport, WAIT};
use nix::sys::signal::Signal;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};

/// Writes a config file private to its owner (the server refuses one that
/// others can write, whatever the umask).
fn write_config(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write config");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

/// A shell that says it ran, then runs the command with /bin/sh: a reload
/// that switches to it is visible in the next command's output.
fn marking_shell(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("marking-shell");
    std::fs::write(
        &path,
        "#!/bin/sh\necho via-reloaded-shell\nexec /bin/sh \"$@\"\n",
    )
    .expect("write shell");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

#[test]
fn sighup_reloads_without_dropping_a_running_command() {
    let server = TestServer::start(Transport::Unix);
    // A command that waits for a line on stdin, so it is surely running
    // across the reload.
    let (mut running, mut stdout) = server.spawn_started(
        "echo started; read word; echo finished $word",
        Stdio::piped(),
    );

    let shell = marking_shell(server.home.path());
    write_config(
        &server.home.path().join("rsh-server.toml"),
        &format!("shell = \"{}\"\n", shell.display()),
    );
    util::signal(server.pid(), Signal::SIGHUP);
    // The reload names the file it read.
    server.wait_for_event(|ev| ev.field("config").is_some());

    // The running command was not touched: it gets its input and finishes.
    let mut stdin = running.stdin.take().expect("stdin");
    stdin.write_all(b"ok\n").expect("write stdin");
    drop(stdin);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).expect("rest");
    assert_eq!(rest, "finished ok\n");
    let status = util::wait_child(&mut running, WAIT).expect("client exits");
    assert_eq!(status.code(), Some(0));

    // The server still serves, and new connections get the new settings.
    let out = server.run("echo still here", b"");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "via-reloaded-shell\nstill here\n"
    );
    assert!(server.child.as_ref().is_some(), "server still running");
    let stops = server
        .events()
        .into_iter()
        .filter(|ev| ev.message().contains("shutting down"))
        .count();
    assert_eq!(stops, 0, "{}", server.log_tail());
}

#[test]
fn a_bad_config_file_on_reload_keeps_the_running_settings() {
    let server = TestServer::start(Transport::Unix);
    write_config(
        &server.home.path().join("rsh-server.toml"),
        "max-commands = \"lots\"\n",
    );
    util::signal(server.pid(), Signal::SIGHUP);
    let refused = server.wait_for_event(|ev| ev.text("cause").contains("rsh-server.toml:"));
    assert!(
        refused.text("cause").contains("rsh-server.toml:1"),
        "{refused}"
    );
    let out = server.run("echo fine", b"");
    assert_eq!(out.stdout, b"fine\n");
}

fn check_config(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(util::server_bin())
        .env("RSH_HOME", home)
        .env_remove("RUST_LOG")
        .arg("--check-config")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run --check-config")
}

#[test]
fn check_config_prints_effective_settings_and_names_bad_lines() {
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path();
    write_config(
        &home.join("rsh-server.toml"),
        "# a comment\nmax-commands = 7\nkill-grace = 3\nlisten = [\"unix:/tmp/x.sock\"]\n",
    );
    let out = check_config(home, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("max-commands = 7\n"), "{stdout}");
    assert!(stdout.contains("kill-grace = 3\n"), "{stdout}");
    assert!(
        stdout.contains("listen = [\"unix:/tmp/x.sock\"]\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains("max-connections = 4096\n"),
        "defaults shown: {stdout}"
    );

    // The command line wins over the file.
    let out = check_config(home, &["--max-commands", "9"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("max-commands = 9\n"));

    // A misspelt key: refused, with file and line.
    write_config(
        &home.join("rsh-server.toml"),
        "shell = \"/bin/sh\"\nmax-comands = 3\n",
    );
    let out = check_config(home, &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("rsh-server.toml:2: "), "{stderr}");
    assert!(stderr.contains("max-comands"), "{stderr}");

    // A valid file with a bad value.
    write_config(
        &home.join("rsh-server.toml"),
        "shell = \"/nonexistent/sh\"\n",
    );
    let out = check_config(home, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/sh"));

    // --config names a file that must exist.
    let out = check_config(home, &["--config", "/nonexistent/rsh-server.toml"]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn an_unreadable_file_is_reported_once_on_one_line() {
    // The I/O error was both in the message and its error source, so the
    // `{:#}` chain printed "No such file or directory" twice.
    let tmp = tempfile::tempdir().expect("tmp");
    let out = check_config(tmp.path(), &["--config", "/nonexistent/rsh-server.toml"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr,
        "rsh-server: /nonexistent/rsh-server.toml: No such file or directory (os error 2)\n"
    );

    // The same for the client's config file (-F).
    let out = Command::new(util::client_bin())
        .env("RSH_HOME", tmp.path())
        .args(["-F", "/nonexistent/config", "-c", "true"])
        .stdin(Stdio::null())
        .output()
        .expect("run rsh-client");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert_eq!(
        stderr,
        "rsh-client: cannot read /nonexistent/config: No such file or directory (os error 2)\n"
    );
}

#[test]
fn log_lines_have_no_colours_when_stderr_is_not_a_terminal() {
    let mut server = TestServer::start_text_log(Transport::Unix, &[]);
    server.run("echo hi", b"");
    for line in server.stop_and_read_log() {
        assert!(!line.contains('\u{1b}'), "ANSI escape in {line:?}");
    }
}

/// Starts the server with stderr to `log` and `env`, waits for its ready
/// file, runs one command, stops it, and returns the log.
fn run_server_logging_to_file(
    home: &Path,
    args: &[&str],
    env: impl Fn(&std::fs::Metadata) -> Vec<(String, String)>,
) -> String {
    let log_path = home.join("server.log");
    let log = std::fs::File::create(&log_path).expect("log file");
    let meta = log.metadata().expect("log metadata");
    let socket = home.join("rsh.sock");
    let ready = home.join("ready");
    let mut child = Command::new(util::server_bin())
        .env("RSH_HOME", home)
        .env("RUST_LOG", "info")
        .envs(env(&meta))
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--ready-file")
        .arg(&ready)
        .args(args)
        .stdin(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("server");
    rsh_harness::wait_for_ready_file(&ready, &mut child, WAIT)
        .unwrap_or_else(|err| panic!("{err:#}"));
    let out = Command::new(util::client_bin())
        .env("RSH_HOME", home)
        .arg(format!("unix:{}", socket.display()))
        .arg("-c")
        .arg("echo hi; exit 3")
        .stdin(Stdio::null())
        .output()
        .expect("client");
    assert_eq!(out.stdout, b"hi\n");
    util::signal(child.id(), Signal::SIGTERM);
    let status = util::wait_child(&mut child, WAIT).expect("server exits");
    assert!(status.success());
    std::fs::read_to_string(&log_path).expect("read log")
}

#[test]
fn in_the_journal_lines_carry_a_priority_and_no_timestamp() {
    use std::os::unix::fs::MetadataExt;
    let tmp = tempfile::tempdir().expect("tmp");
    let log = run_server_logging_to_file(tmp.path(), &[], |meta| {
        vec![(
            "JOURNAL_STREAM".to_owned(),
            format!("{}:{}", meta.dev(), meta.ino()),
        )]
    });
    let lines: Vec<&str> = log.lines().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            line.starts_with("<6> INFO ") || line.starts_with("<4> WARN "),
            "{line:?}"
        );
        assert!(!line.contains('\u{1b}'), "{line:?}");
    }
    let finished = lines
        .iter()
        .find(|line| line.contains("command finished"))
        .unwrap_or_else(|| panic!("no command line in {log}"));
    // Who ran what, from where, how it ended, how long, how many bytes.
    for field in [
        "peer=",
        "command=",
        "status=",
        "duration_ms=",
        "bytes_out=3",
    ] {
        assert!(finished.contains(field), "{field} missing in {finished}");
    }

    // A JOURNAL_STREAM that is not our stderr (inherited, then redirected)
    // is not the journal: timestamps stay.
    let tmp = tempfile::tempdir().expect("tmp");
    let log = run_server_logging_to_file(tmp.path(), &[], |_| {
        vec![("JOURNAL_STREAM".to_owned(), "1:1".to_owned())]
    });
    assert!(log.lines().all(|line| !line.starts_with('<')), "{log}");
}

#[test]
fn json_log_lines_parse_and_keep_the_command_fields() {
    let tmp = tempfile::tempdir().expect("tmp");
    let log = run_server_logging_to_file(tmp.path(), &["--log-format", "json"], |_| Vec::new());
    let mut finished = None;
    for line in log.lines() {
        let value: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|err| panic!("{err}: {line:?}"));
        assert!(value.get("timestamp").is_some(), "{line}");
        assert!(value.get("level").is_some(), "{line}");
        if value["message"] == "command finished" {
            finished = Some(value);
        }
    }
    let finished = finished.unwrap_or_else(|| panic!("no command line in {log}"));
    assert_eq!(finished["bytes_out"], 3, "{finished}");
    assert!(
        finished["status"].as_str().is_some_and(|s| s.contains('3')),
        "{finished}"
    );
    let spans = finished["spans"].as_array().expect("spans");
    assert!(
        spans
            .iter()
            .any(|span| span["name"] == "conn" && span.get("peer").is_some()),
        "{finished}"
    );
    // The command as typed: escaped by JSON once, not quoted twice.
    assert!(
        spans
            .iter()
            .any(|span| span["command"] == "echo hi; exit 3"),
        "{finished}"
    );
}

/// Reads one datagram from the notify socket (bounded by its timeout).
fn next_notification(socket: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    let len = socket
        .recv(&mut buf)
        .expect("a notification within the timeout");
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[test]
fn sd_notify_says_ready_reloading_and_stopping() {
    let tmp = tempfile::tempdir().expect("tmp");
    let notify_path = tmp.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).expect("bind notify socket");
    notify.set_read_timeout(Some(WAIT)).expect("timeout");
    let socket = tmp.path().join("rsh.sock");
    let mut child = Command::new(util::server_bin())
        .env("RSH_HOME", tmp.path())
        .env("NOTIFY_SOCKET", &notify_path)
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let ready = next_notification(&notify);
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    assert!(ready.contains("STATUS=listening on unix:"), "{ready:?}");
    // Ready means ready: the socket accepts a command now.
    let out = Command::new(util::client_bin())
        .env("RSH_HOME", tmp.path())
        .arg(format!("unix:{}", socket.display()))
        .arg("-c")
        .arg("echo up")
        .stdin(Stdio::null())
        .output()
        .expect("client");
    assert_eq!(out.stdout, b"up\n");

    util::signal(child.id(), Signal::SIGHUP);
    let reloading = next_notification(&notify);
    assert!(
        reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="),
        "{reloading:?}"
    );
    assert_eq!(next_notification(&notify), "READY=1");

    util::signal(child.id(), Signal::SIGTERM);
    assert_eq!(next_notification(&notify), "STOPPING=1");
    let status = util::wait_child(&mut child, WAIT).expect("server exits");
    assert!(status.success());
}
