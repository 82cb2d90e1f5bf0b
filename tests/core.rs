//! The core behaviour a user relies on, against the real binaries. Every test
//! runs once per transport from the same body (see `transport_tests!`).

use crate::util::{self, TestServer, Transport, WAIT};
use rsh_client::{ClientError, ErrorKind, Event, ExecRequest, ExitStatus};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

macro_rules! transport_tests {
    ($($name:ident),* $(,)?) => {
        mod unix {
            $(
                #[test]
                fn $name() {
                    super::util::runtime().block_on(super::$name(super::Transport::Unix));
                }
            )*
        }
        mod tls {
            $(
                #[test]
                fn $name() {
                    super::util::runtime().block_on(super::$name(super::Transport::Tls));
                }
            )*
        }
    };
}

transport_tests!(
    echo,
    fifty_megabytes_out_byte_exact,
    ten_megabytes_in,
    stdout_and_stderr_apart,
    exit_codes_and_signals,
    fifty_clients_at_once,
    ten_commands_on_one_connection_with_a_stalled_reader,
    killed_client_leaves_no_process_behind,
    garbage_and_oversized_frames_leave_server_serving,
    empty_command_is_refused_clearly,
    sigterm_shuts_down_cleanly,
    ctrl_c_interrupts_the_remote_command,
    background_job_holding_pipes_does_not_hang_reply,
    script_mode_runs_each_line,
    timeout_kills_the_group,
    stdin_not_read_stalls_only_its_channel,
    cwd_and_env_are_applied,
    commands_are_logged_safely,
    stdin_stops_when_the_command_closes_it,
    dev_null_stdin_reads_as_empty,
);

fn code(output: &std::process::Output) -> i32 {
    output.status.code().expect("client exited normally")
}

async fn echo(t: Transport) {
    let server = TestServer::start(t);
    let out = server.run("echo hello", b"");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(code(&out), 0);
    let event = server.wait_for_command_finished();
    assert!(
        event.has("command", "echo hello")
            && event.has("status", "Code(0)")
            && event.has("bytes_out", "6"),
        "{event}"
    );
}

async fn fifty_megabytes_out_byte_exact(t: Transport) {
    let server = TestServer::start(t);
    let data = util::random_bytes(50_000_000, 0x5eed);
    let file = server.home.path().join("random.bin");
    std::fs::write(&file, &data).expect("write test data");
    let out = server.run(&format!("cat '{}'", file.display()), b"");
    assert_eq!(
        code(&out),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), data.len());
    assert!(out.stdout == data, "50 MB came back altered");
}

async fn ten_megabytes_in(t: Transport) {
    let server = TestServer::start(t);
    let data = util::random_bytes(10_000_000, 42);
    let copy = server.home.path().join("copy.bin");
    let out = server.run(
        &format!("cat > '{}' && wc -c < '{}'", copy.display(), copy.display()),
        &data,
    );
    assert_eq!(
        code(&out),
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10000000");
    assert!(
        std::fs::read(&copy).expect("copy written") == data,
        "stdin arrived altered"
    );
    // And both directions at once: stdin echoed straight back.
    let out = server.run("cat", &data);
    assert!(out.stdout == data, "stdin echoed back altered");
}

async fn stdout_and_stderr_apart(t: Transport) {
    let server = TestServer::start(t);
    let out = server.run("echo out; echo err >&2; printf '\\377\\000bin'", b"");
    assert_eq!(out.stdout, b"out\n\xff\x00bin");
    assert_eq!(out.stderr, b"err\n");
    assert_eq!(code(&out), 0);
}

async fn exit_codes_and_signals(t: Transport) {
    let server = TestServer::start(t);
    for expected in [0, 1, 7, 255] {
        let out = server.run(&format!("exit {expected}"), b"");
        assert_eq!(code(&out), expected);
        assert!(out.stderr.is_empty());
    }
    let out = server.run("kill -TERM $$", b"");
    assert_eq!(code(&out), 128 + 15);
    let out = server.run("kill -KILL $$", b"");
    assert_eq!(code(&out), 128 + 9);
    let client = server.connect().await;
    let output = client.run("kill -USR1 $$").await.expect("run");
    assert_eq!(output.status, ExitStatus::Signal(10));
}

async fn fifty_clients_at_once(t: Transport) {
    let server = TestServer::start(t);
    let children: Vec<_> = (0..50)
        .map(|i| server.spawn_client(&format!("echo client-{i}")))
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().expect("client output");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("client-{i}\n"),
            "exit {:?}, stderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(code(&out), 0);
    }
}

async fn ten_commands_on_one_connection_with_a_stalled_reader(t: Transport) {
    let server = TestServer::start(t);
    let client = server.connect().await;
    // The stalled one: endless output that nobody reads.
    let stalled = client.exec("yes").await.expect("exec yes");
    stalled.close_stdin().await.expect("close stdin");
    let baseline = server.rss_kib();
    let mut running = Vec::new();
    for i in 0..9u64 {
        let client = client.clone();
        running.push(tokio::spawn(async move {
            client
                .run(format!("head -c 3000000 /dev/zero | tr '\\0' '{}'", i))
                .await
        }));
    }
    for (i, task) in running.into_iter().enumerate() {
        let output = tokio::time::timeout(WAIT, task)
            .await
            .expect("the other nine finish while one reader stalls")
            .expect("task")
            .expect("run");
        assert_eq!(output.status, ExitStatus::Code(0));
        assert_eq!(output.stdout.len(), 3_000_000);
        let digit = b'0' + i as u8;
        assert!(output.stdout.iter().all(|&b| b == digit));
    }
    // The stalled command is still alive and blocked, and the server has not
    // buffered its output: memory stays within a few windows.
    // `yes` has filled every buffer it can once it sleeps in a write to
    // its full pipe.
    wait_for_a_child_blocked_on_a_full_pipe(server.pid());
    let grown = server.rss_kib().saturating_sub(baseline);
    assert!(
        grown < 32 * 1024,
        "server grew by {grown} KiB with a stalled reader"
    );
    drop(stalled);
    drop(client);
}

/// Waits (bounded) until a descendant of process `ancestor` sleeps in a
/// write to a full pipe: the kernel's wait channel names the pipe write.
fn wait_for_a_child_blocked_on_a_full_pipe(ancestor: u32) {
    let deadline = Instant::now() + WAIT;
    loop {
        let all = rsh_sys::ProcStat::all(usize::MAX);
        let parent_of: std::collections::HashMap<u32, u32> =
            all.iter().map(|stat| (stat.pid, stat.ppid)).collect();
        // Bounded by the depth of the process tree.
        let descends = |mut pid: u32| {
            for _ in 0..parent_of.len() {
                match parent_of.get(&pid) {
                    Some(&parent) if parent == ancestor => return true,
                    Some(&parent) if parent > 1 => pid = parent,
                    _ => return false,
                }
            }
            false
        };
        let blocked = all
            .iter()
            .filter(|stat| stat.state == 'S' && descends(stat.pid))
            .any(|stat| {
                std::fs::read_to_string(format!("/proc/{}/wchan", stat.pid))
                    .is_ok_and(|wchan| wchan.contains("pipe_write") || wchan.contains("pipe_wait"))
            });
        if blocked {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no descendant of {ancestor} blocked on a full pipe within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn killed_client_leaves_no_process_behind(t: Transport) {
    let server = TestServer::start(t);
    let mut child = server
        .client()
        .arg("-c")
        .arg("echo $$; sleep 100 & sleep 100 & wait")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn client");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read pgid");
    let pgid: u32 = line.trim().parse().expect("the shell's pid");
    // Both sleeps started?
    let deadline = Instant::now() + WAIT;
    while util::processes_in_group(pgid).len() < 3 {
        assert!(
            Instant::now() < deadline,
            "command's processes never appeared"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let members = util::processes_in_group(pgid);
    child.kill().expect("kill client");
    let _ = child.wait();
    // Bounded well under the sleeps' 100 s: they are ended, not finished.
    let deadline = Instant::now() + WAIT;
    while !util::processes_in_group(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "processes {:?} of group {pgid} (was {members:?}) still alive {WAIT:?} after the client died",
            util::processes_in_group(pgid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // And the server still serves.
    assert_eq!(server.run("echo still here", b"").stdout, b"still here\n");
}

async fn garbage_and_oversized_frames_leave_server_serving(t: Transport) {
    let server = TestServer::start(t);
    if t == Transport::Unix {
        // Not rsh at all.
        let mut raw = std::os::unix::net::UnixStream::connect(&server.socket).expect("connect");
        raw.set_read_timeout(Some(WAIT)).expect("timeout");
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write garbage");
        read_until_closed(&mut raw);
        server.wait_for_event(|ev| ev.text("cause").contains("bad magic"));

        // A good greeting, then a length far over the limit.
        let mut raw = std::os::unix::net::UnixStream::connect(&server.socket).expect("connect");
        raw.set_read_timeout(Some(WAIT)).expect("timeout");
        raw.write_all(&rsh_proto::Hello::current().encode())
            .expect("hello");
        raw.write_all(&[0xff, 0xff, 0xff, 0xf0, 0x01, 0, 0, 0, 1])
            .expect("oversized header");
        read_until_closed(&mut raw);
        server.wait_for_event(|ev| ev.text("cause").contains("exceeds the 1048576-byte limit"));

        // A well-formed frame of an unknown type.
        let mut raw = std::os::unix::net::UnixStream::connect(&server.socket).expect("connect");
        raw.set_read_timeout(Some(WAIT)).expect("timeout");
        raw.write_all(&rsh_proto::Hello::current().encode())
            .expect("hello");
        raw.write_all(&[0, 0, 0, 5, 0x7e, 0, 0, 0, 1])
            .expect("unknown frame");
        read_until_closed(&mut raw);
        server.wait_for_event(|ev| ev.text("cause").contains("unknown frame type 0x7e"));

        // Another protocol version: both sides learn it.
        let mut raw = std::os::unix::net::UnixStream::connect(&server.socket).expect("connect");
        raw.set_read_timeout(Some(WAIT)).expect("timeout");
        raw.write_all(&rsh_proto::Hello::only(9).encode())
            .expect("hello");
        let reply = read_until_closed(&mut raw);
        assert_eq!(
            reply,
            rsh_proto::Hello::current().encode(),
            "server announces its version, then closes"
        );
        server.wait_for_event(|ev| ev.text("cause").contains("peer speaks version 9"));
    }
    if t == Transport::Tls {
        // Plaintext on the TLS port only closes that connection.
        let addr = server.dest.clone();
        let mut raw = std::net::TcpStream::connect(&addr).expect("connect");
        raw.set_read_timeout(Some(WAIT)).expect("timeout");
        raw.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .expect("write garbage");
        read_until_closed(&mut raw);
        server.wait_for_event(|ev| ev.has("reason", "handshake_failed"));
    }
    assert!(server.child.as_ref().is_some(), "server still running");
    assert_eq!(server.run("echo alive", b"").stdout, b"alive\n");
}

/// Reads until the server closes; a reset (it closed with our bytes unread)
/// counts as closed too.
fn read_until_closed(stream: &mut impl Read) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(err) if err.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(err) => panic!("server neither answered nor closed: {err}"),
        }
    }
}

async fn empty_command_is_refused_clearly(t: Transport) {
    let server = TestServer::start(t);
    let out = server.run("", b"");
    assert_eq!(code(&out), 255);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("empty command"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let client = server.connect().await;
    match client.run("   ").await {
        Err(ClientError::Refused {
            kind: ErrorKind::BadRequest,
            message,
        }) => assert_eq!(message, "empty command"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // The connection is still good afterwards.
    assert_eq!(client.run("echo ok").await.expect("run").stdout, b"ok\n");
}

async fn sigterm_shuts_down_cleanly(t: Transport) {
    let mut server = TestServer::start(t);
    let (mut running, mut stdout) =
        server.spawn_started("echo started; sleep 0.5; echo finished", Stdio::null());
    let status = server.terminate();
    assert!(status.success(), "server exit status {status:?}");
    // The running command was allowed to finish within the grace period.
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest");
    assert_eq!(rest, "finished\n");
    assert_eq!(running.wait().expect("client").code(), Some(0));
    if t == Transport::Unix {
        assert!(!server.socket.exists(), "socket file removed");
    }
    assert!(
        !server.home.path().join("ready").exists(),
        "ready file removed"
    );
    server.wait_for_event(|ev| ev.message() == "shutdown complete");
}

async fn ctrl_c_interrupts_the_remote_command(t: Transport) {
    let server = TestServer::start(t);
    let mut child = server
        .client()
        .arg("-c")
        .arg("trap 'echo got INT; exit 3' INT; echo ready; sleep 20 & wait")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("ready line");
    assert_eq!(line, "ready\n");
    util::signal(child.id(), nix::sys::signal::Signal::SIGINT);
    let mut rest = String::new();
    stdout.read_to_string(&mut rest).expect("rest");
    assert_eq!(rest, "got INT\n");
    let status = util::wait_child(&mut child, WAIT).expect("client exits");
    assert_eq!(status.code(), Some(3));

    // A command that shrugs off SIGINT: the third Ctrl-C disconnects, and the
    // server ends the command's group.
    let mut child = server
        .client()
        .arg("-c")
        .arg("trap 'echo got INT' INT; echo $$; while :; do sleep 0.1; done")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("pgid line");
    let pgid: u32 = line.trim().parse().expect("the shell's pid");
    for _ in 0..2 {
        util::signal(child.id(), nix::sys::signal::Signal::SIGINT);
        line.clear();
        stdout.read_line(&mut line).expect("trap output");
        assert_eq!(line, "got INT\n");
    }
    util::signal(child.id(), nix::sys::signal::Signal::SIGINT);
    let status = util::wait_child(&mut child, WAIT).expect("client gives up");
    assert_eq!(status.code(), Some(130));
    let deadline = Instant::now() + WAIT;
    while !util::processes_in_group(pgid).is_empty() {
        assert!(
            Instant::now() < deadline,
            "remote command left running after disconnect"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

async fn background_job_holding_pipes_does_not_hang_reply(t: Transport) {
    let server = TestServer::start(t); // --linger 0.3
                                       // `run` gives up after WAIT, well before the job's 60 s: a reply at
                                       // all is a reply that did not wait for the job.
    let out = server.run("sleep 60 & echo $!", b"");
    assert_eq!(code(&out), 0);
    let bg: i32 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("background pid");
    // Its group is ended after the reply.
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::path::Path::new(&format!("/proc/{bg}")).exists() {
        assert!(
            Instant::now() < deadline,
            "background job {bg} left running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The human-readable log (JSON escapes by itself): a newline in a command
/// is quoted, not written out.
async fn commands_are_logged_safely(t: Transport) {
    let mut server = TestServer::start_text_log(t, &[]);
    let out = server.run("true\nINFO rsh_server: FORGED LINE", b"");
    assert_eq!(
        code(&out),
        127,
        "the second line runs as a (missing) command"
    );
    // Once the server has exited its log is complete.
    let log = server.stop_and_read_log();
    assert!(
        log.iter()
            .any(|l| l.contains(r"true\nINFO rsh_server: FORGED LINE")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|l| l.starts_with("INFO rsh_server: FORGED")),
        "a newline in a command forged a log line"
    );
}

async fn stdin_stops_when_the_command_closes_it(t: Transport) {
    let server = TestServer::start(t);
    let out = server.run(
        "exec 0<&-; sleep 0.5; echo done",
        &util::random_bytes(50_000_000, 7),
    );
    assert_eq!(out.stdout, b"done\n");
    let event = server.wait_for_command_finished();
    let bytes_in = event
        .field("bytes_in")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or_else(|| panic!("bytes_in logged: {event}"));
    assert!(
        bytes_in < 8 * 1024 * 1024,
        "{bytes_in} bytes of stdin went to a command that closed it"
    );
}

async fn dev_null_stdin_reads_as_empty(t: Transport) {
    let server = TestServer::start(t);
    let out = server
        .client()
        .args(["-c", "wc -c"])
        .stdin(Stdio::null())
        .output()
        .expect("client");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert_eq!(code(&out), 0);
}

async fn script_mode_runs_each_line(t: Transport) {
    let server = TestServer::start(t);
    let out = util::run_with_stdin(&mut server.client(), b"echo one\n\necho two >&2\nexit 4\n");
    assert_eq!(out.stdout, b"one\n");
    assert_eq!(out.stderr, b"two\n");
    assert_eq!(code(&out), 4);
}

async fn timeout_kills_the_group(t: Transport) {
    let server = TestServer::start(t);
    let out = run_args(&server, &["--timeout", "0.3", "-c", "sleep 30"]);
    assert_eq!(code(&out), 124);
    assert!(String::from_utf8_lossy(&out.stderr).contains("timed out"));
    let client = server.connect().await;
    let output = client
        .run(ExecRequest::new("sleep 30").timeout(Duration::from_millis(200)))
        .await
        .expect("run");
    assert_eq!(output.status, ExitStatus::TimedOut);
    // The timeout still holds after the shell exits while a background job
    // keeps the output flowing (the linger rule never fires).
    let output = tokio::time::timeout(
        WAIT,
        client.run(
            ExecRequest::new("(while :; do echo x; sleep 0.05; done) & exit 3")
                .timeout(Duration::from_millis(800)),
        ),
    )
    .await
    .expect("timeout ends a command kept alive by its background job")
    .expect("run");
    assert_eq!(output.status, ExitStatus::TimedOut);
    assert!(output.stdout.starts_with(b"x\n"));
}

fn run_args(server: &TestServer, args: &[&str]) -> std::process::Output {
    util::run_with_stdin(server.client().args(args), b"")
}

async fn stdin_not_read_stalls_only_its_channel(t: Transport) {
    let server = TestServer::start(t);
    let client = server.connect().await;
    // A command that never reads stdin: the client's writes stop at the window.
    let deaf = client.exec("sleep 30").await.expect("exec");
    let writer = deaf.stdin();
    let push = tokio::spawn(async move {
        writer
            .write(bytes::Bytes::from(vec![b'x'; 64 * 1024 * 1024]))
            .await
    });
    // Another channel on the same connection is unaffected.
    let output = tokio::time::timeout(WAIT, client.run("echo fine"))
        .await
        .expect("other channel flows")
        .expect("run");
    assert_eq!(output.stdout, b"fine\n");
    deaf.signal(rsh_client::signal::KILL).await.expect("signal");
    let mut deaf = deaf;
    loop {
        match tokio::time::timeout(WAIT, deaf.next_event())
            .await
            .expect("exit arrives")
        {
            Ok(Some(Event::Exit(status))) => {
                assert_eq!(status, ExitStatus::Signal(9));
                break;
            }
            Ok(Some(_)) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
    // The write never completed: 64 MiB cannot fit in the window of a
    // command that does not read, and its end refuses the rest.
    let pushed = tokio::time::timeout(WAIT, push)
        .await
        .expect("writer released")
        .expect("task");
    assert!(
        matches!(pushed, Err(ClientError::StdinClosed)),
        "{pushed:?}"
    );
}

async fn cwd_and_env_are_applied(t: Transport) {
    let server = TestServer::start(t);
    let dir = server.home.path().join("work dir");
    std::fs::create_dir(&dir).expect("mkdir");
    let out = run_args(
        &server,
        &[
            "--cwd",
            dir.to_str().expect("utf-8 path"),
            "--env",
            "GREETING=hi there",
            "-c",
            "pwd; echo \"$GREETING\"",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\nhi there\n", dir.display())
    );
    // Like ssh, a relative directory is taken from the home directory.
    let out = run_args(&server, &["--cwd", "work dir", "-c", "pwd"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n", dir.display())
    );
    // HOME's directory, and SHELL names the shell running the command even
    // though the harness starts the daemon without one.
    let out = run_args(&server, &["-c", "pwd; echo \"$SHELL\""]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}\n/bin/sh\n", server.home.path().display())
    );
    let out = run_args(&server, &["--cwd", "/nonexistent/dir", "-c", "true"]);
    assert_eq!(code(&out), 255);
    assert!(String::from_utf8_lossy(&out.stderr).contains("failed to start"));
}

/// A server that cannot start is reported at once with its reason, not
/// after the harness's whole start limit.
#[test]
fn harness_reports_a_server_that_exits_before_it_is_ready() {
    // "exited", not "was not ready within": the harness saw the exit.
    let err = rsh_harness::ServerBuilder::new(&util::binaries())
        .args(["--shell", "/nonexistent/shell"])
        .start_limit(Duration::from_secs(600))
        .start()
        .expect_err("a server without a shell does not start");
    let err = format!("{err:#}");
    assert!(err.contains("exited"), "{err}");
    assert!(
        err.contains("/nonexistent/shell"),
        "the server's reason: {err}"
    );
}

#[test]
fn socket_and_home_are_private() {
    let server = TestServer::start(Transport::Unix);
    let mode = std::fs::metadata(&server.socket)
        .expect("socket")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // Default RSH_HOME is created 0700 by the server.
    let tmp = tempfile::tempdir().expect("tmp");
    let home = tmp.path().join("fresh-home");
    let ready_path = tmp.path().join("ready");
    let mut child = std::process::Command::new(util::server_bin())
        .env("RSH_HOME", &home)
        .arg("--ready-file")
        .arg(&ready_path)
        .stderr(Stdio::null())
        .spawn()
        .expect("server");
    let ready = rsh_harness::wait_for_ready_file(&ready_path, &mut child, WAIT);
    let ready = ready.unwrap_or_else(|err| panic!("{err:#}"));
    assert_eq!(
        ready.endpoints,
        [rsh_config::Endpoint::Unix(home.join("rsh.sock"))],
        "the default endpoint"
    );
    assert_eq!(ready.pid, child.id());
    assert_eq!(ready.fingerprint, None, "no TCP, no host key");
    let mode = std::fs::metadata(&home).expect("home").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // A second server on the same socket is refused; the first keeps it.
    let second = std::process::Command::new(util::server_bin())
        .env("RSH_HOME", &home)
        .output()
        .expect("second server");
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains("already running"));
    util::signal(child.id(), nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait();
    // A stale socket (crashed server) is replaced.
    assert!(home.join("rsh.sock").exists());
    // The killed server's ready file is stale too; the harness waits past it.
    assert!(ready_path.exists());
    let mut third = std::process::Command::new(util::server_bin())
        .env("RSH_HOME", &home)
        .arg("--ready-file")
        .arg(&ready_path)
        .stderr(Stdio::null())
        .spawn()
        .expect("third server");
    let ready = rsh_harness::wait_for_ready_file(&ready_path, &mut third, WAIT);
    let ready = ready.unwrap_or_else(|err| panic!("{err:#}"));
    assert_eq!(
        ready.endpoints,
        [rsh_config::Endpoint::Unix(home.join("rsh.sock"))]
    );
    let _ = third.kill();
    let _ = third.wait();
}

/// README.md shows each binary's `-h` text verbatim; keep them in step.
#[test]
fn readme_usage_matches_help() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    for bin in [util::server_bin(), util::client_bin()] {
        let help = std::process::Command::new(&bin)
            .arg("-h")
            .output()
            .expect("run -h");
        let help = String::from_utf8(help.stdout).expect("utf-8 help");
        assert!(
            readme.contains(help.trim_end()),
            "README.md does not contain the current `{} -h` output:\n{help}",
            bin.display()
        );
    }
}

/// The Unix socket admits only the server's own user: another user who gets
/// past the file mode (here: the socket made world-writable) is still
/// refused by the peer-credential check, and the refusal is logged.
/// Needs root (to act as `nobody`) and util-linux's `setpriv`.
#[test]
fn unix_socket_refuses_other_users() {
    let setpriv = std::path::Path::new("/usr/bin/setpriv");
    if !nix::unistd::geteuid().is_root() || !setpriv.exists() {
        util::skip("needs root and setpriv");
        return;
    }
    let server = TestServer::start(Transport::Unix);
    // Let `nobody` reach the socket and the client binary.
    std::fs::set_permissions(server.home.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod home");
    std::fs::set_permissions(&server.socket, std::fs::Permissions::from_mode(0o666))
        .expect("chmod socket");
    let stranger_home = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(stranger_home.path(), std::fs::Permissions::from_mode(0o777))
        .expect("chmod");
    let marker = stranger_home.path().join("ran");
    let out = std::process::Command::new(setpriv)
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(util::client_bin())
        .arg(&server.dest)
        .arg("-c")
        .arg(format!("touch '{}'", marker.display()))
        .env("RSH_HOME", stranger_home.path())
        .stdin(Stdio::null())
        .output()
        .expect("run client as nobody");
    if String::from_utf8_lossy(&out.stderr).contains("Permission denied")
        && !server
            .events()
            .iter()
            .any(|ev| ev.message() == "refusing a peer of another user")
    {
        // The client binary itself is out of nobody's reach (a private target dir).
        util::skip("nobody cannot reach the client binary (a private target dir)");
        return;
    }
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "another user's command ran");
    let event = server.wait_for_event(|ev| ev.message() == "refusing a peer of another user");
    assert!(event.text("peer").contains("uid=65534"), "{event}");
    // The owner still gets in.
    assert_eq!(server.run("echo owner", b"").stdout, b"owner\n");
}

/// `--max-connections`: at the limit the server stops accepting, and the
/// next client waits in the backlog until a place frees up (it is neither
/// refused nor served out of turn).
#[test]
fn max_connections_makes_the_next_client_wait() {
    let server = TestServer::start_with(Transport::Unix, &["--max-connections", "1"]);
    let rt = util::runtime();
    let first = rt.block_on(server.connect());
    let output = rt.block_on(first.run("echo first")).expect("first runs");
    assert_eq!(output.stdout, b"first\n");
    let mut second = server
        .client()
        .args(["-c", "echo second"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn second client");
    assert!(
        util::wait_child(&mut second, Duration::from_millis(500)).is_none(),
        "a second client was served beyond --max-connections 1"
    );
    drop(first);
    let status =
        util::wait_child(&mut second, WAIT).expect("second client served once the first left");
    assert_eq!(status.code(), Some(0));
    let mut out = String::new();
    second
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(out, "second\n");
}
