//! What the client trusts and what it tells its user (issue 18): a Unix
//! socket served by another user is refused, a fleet's hosts are capped in
//! total, a refused key is not blamed on authorized_keys, a server that
//! shuts down under a command says so, and `-i` never mints a key. Against
//! the real binaries, on loopback and temp Unix sockets.

use crate::util::{self, TestServer, Transport, WAIT};
use std::io::{BufRead, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

const NOBODY: u32 = 65534;

/// `rsh-client ARGS...` with RSH_HOME at `home`, stdin from a thread.
fn client_in(home: &Path, args: &[&str], stdin: &[u8]) -> std::process::Output {
    let mut command = Command::new(util::client_bin());
    command.env("RSH_HOME", home).args(args);
    util::run_with_stdin(&mut command, stdin)
}

/// Waits (bounded) for a child and collects its output; kills it and fails
/// the test if it runs past `WAIT`.
fn finish(mut child: Child, what: &str) -> std::process::Output {
    if util::wait_child(&mut child, WAIT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{what} still running after {WAIT:?}");
    }
    child.wait_with_output().expect("child output")
}

/// A listener on a Unix socket at `path`, run by `nobody`: a forked child
/// that drops to that uid, binds and listens, accepts one connection and
/// reports how many bytes it received before the peer closed. Only raw
/// system calls run after the fork (nothing allocates), as the test process
/// has other threads.
struct ForeignListener {
    pid: nix::unistd::Pid,
    report: std::os::fd::OwnedFd,
}

impl ForeignListener {
    fn start(path: &Path) -> ForeignListener {
        use nix::sys::socket::{
            accept, bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
        };
        use nix::unistd::{fork, pipe, read, setgid, setuid, write, ForkResult, Gid, Uid};
        use std::os::fd::AsRawFd;
        let addr = UnixAddr::new(path).expect("socket address");
        let (ready_rx, ready_tx) = pipe().expect("pipe");
        let (report_rx, report_tx) = pipe().expect("pipe");
        // SAFETY: the child runs only async-signal-safe system calls on
        // memory prepared before the fork, then `_exit`s; it never returns
        // into the test harness.
        #[allow(unsafe_code)]
        match unsafe { fork() }.expect("fork") {
            ForkResult::Child => {
                let served = (|| -> nix::Result<u64> {
                    setgid(Gid::from_raw(NOBODY))?;
                    setuid(Uid::from_raw(NOBODY))?;
                    let listener = socket(
                        AddressFamily::Unix,
                        SockType::Stream,
                        SockFlag::empty(),
                        None,
                    )?;
                    bind(listener.as_raw_fd(), &addr)?;
                    listen(&listener, Backlog::new(1)?)?;
                    write(&ready_tx, b"r")?;
                    let conn = accept(listener.as_raw_fd())?;
                    let mut buf = [0u8; 4096];
                    let mut total = 0u64;
                    loop {
                        match read(conn, &mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => total += n as u64,
                        }
                    }
                    Ok(total)
                })();
                let code = match served {
                    Ok(total) => {
                        let _ = write(&report_tx, &total.to_le_bytes());
                        0
                    }
                    Err(_) => 1,
                };
                // SAFETY: ends the child at once, without running the
                // parent's exit handlers or destructors.
                #[allow(unsafe_code)]
                unsafe {
                    nix::libc::_exit(code)
                }
            }
            ForkResult::Parent { child } => {
                drop(ready_tx);
                drop(report_tx);
                let mut ready = [0u8; 1];
                let n = read(ready_rx.as_raw_fd(), &mut ready).expect("read ready");
                assert_eq!(n, 1, "the foreign listener did not start");
                ForeignListener {
                    pid: child,
                    report: report_rx,
                }
            }
        }
    }

    /// The bytes the listener received, once its peer closed (bounded).
    fn received(self) -> u64 {
        let report = std::fs::File::from(self.report.try_clone().expect("dup"));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut report = report;
            let mut bytes = [0u8; 8];
            let _ = tx.send(report.read_exact(&mut bytes).map(|()| bytes));
        });
        let bytes = rx
            .recv_timeout(WAIT)
            .expect("the listener reports in time")
            .expect("the listener reports");
        u64::from_le_bytes(bytes)
    }
}

impl Drop for ForeignListener {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

/// Point 5: a socket outside RSH_HOME squatted by another user. The client
/// checks who serves it before it sends a byte, and refuses as ssh refuses
/// an unknown host: exit 255, a message naming the uid; the squatter gets
/// nothing (no greeting, no command, no stdin).
#[test]
fn a_unix_socket_served_by_another_user_is_refused() {
    if !nix::unistd::geteuid().is_root() {
        util::skip("serving a socket as another user needs root");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let socket = dir.path().join("rsh.sock");
    let squatter = ForeignListener::start(&socket);
    let home = tempfile::tempdir().expect("client home");
    let dest = format!("unix:{}", socket.display());
    let out = client_in(home.path(), &[&dest, "cat > /dev/null"], b"the password\n");
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains(&format!("uid {NOBODY}")), "{err}");
    assert!(err.contains(&socket.display().to_string()), "{err}");
    assert_eq!(err.lines().count(), 1, "one-line reason: {err}");
    assert_eq!(squatter.received(), 0, "the squatter received bytes");
}

/// The owner's own server on a socket outside RSH_HOME is still used.
#[test]
fn a_unix_socket_served_by_the_same_user_is_used() {
    let server = TestServer::start(Transport::Unix);
    let home = tempfile::tempdir().expect("client home");
    let dest = format!("unix:{}", server.socket.display());
    let out = client_in(home.path(), &[&dest, "echo", "mine"], b"");
    assert_eq!(out.stdout, b"mine\n", "{}", util::stderr(&out));
}

/// Point 12, the default cap: several host lists, each under the cap of one
/// list, that name more hosts together than a run takes. The run stops
/// while expanding (before any connection), says what the cap is and how
/// to raise it.
#[test]
fn a_fleet_is_capped_in_total_over_every_list() {
    let home = tempfile::tempdir().expect("client home");
    let hosts_file = home.path().join("hosts");
    // 51,000 hosts a line (each list under the 100,000 of one hostlist).
    std::fs::write(
        &hosts_file,
        "127.2.[0-199].[0-254]:9\n127.3.[0-199].[0-254]:9\n",
    )
    .expect("write hosts file");
    let child = Command::new(util::client_bin())
        .env("RSH_HOME", home.path())
        .args(["-H", "127.1.[0-199].[0-254]:9", "--hosts-file"])
        .arg(&hosts_file)
        .args(["-n", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let out = finish(child, "a run over 153,000 hosts");
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(out.stdout.is_empty(), "nothing ran");
    assert!(err.contains("65536"), "names the cap: {err}");
    assert!(err.contains("--max-hosts"), "says how to raise it: {err}");
}

/// Point 12, the cap given: `--max-hosts N` counts every list and every
/// hosts-file line together.
#[test]
fn max_hosts_caps_every_list_together() {
    let home = tempfile::tempdir().expect("client home");
    let hosts_file = home.path().join("hosts");
    std::fs::write(&hosts_file, "b[1-2]\nc[1-2]\n").expect("write hosts file");
    let out = client_in(
        home.path(),
        &[
            "--max-hosts",
            "5",
            "-H",
            "a[1-2]",
            "--hosts-file",
            hosts_file.to_str().expect("utf-8 path"),
            "-n",
            "true",
        ],
        b"",
    );
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(err.contains("more than 5 hosts"), "{err}");
    assert!(err.contains("--max-hosts"), "{err}");
}

/// Point 18: the server refuses a key it lists, because its authorized_keys
/// is group-writable (StrictModes). The client cannot know why, so it does
/// not claim the key is missing: it says the server refused it and that the
/// server's log says why (where the exact reason still is).
#[test]
fn a_refused_key_is_not_said_to_be_missing() {
    let server = TestServer::start(Transport::Tls);
    let keys = server.home.path().join("authorized_keys");
    std::fs::set_permissions(&keys, std::fs::Permissions::from_mode(0o660)).expect("chmod");
    let out = server.run("echo should not run", b"");
    let err = util::stderr(&out);
    assert_eq!(out.status.code(), Some(255), "{err}");
    assert!(out.stdout.is_empty());
    assert!(!err.contains("does not list"), "{err}");
    assert!(err.contains("refused this client's key"), "{err}");
    assert!(err.contains("log says why"), "{err}");
    server.wait_for_event(|ev| {
        ev.text("error")
            .contains("writable by group/others (mode 0660)")
    });
}

/// Point 19: the server shuts down under a running command. The command's
/// status stays what it was (killed by SIGTERM: 143), and the client says
/// on stderr that the server closed the connection, as ssh says
/// "Connection to HOST closed by remote host." Over both transports.
#[test]
fn a_server_shutting_down_under_a_command_is_reported() {
    // A command killed by the shutdown, and one whose TERM trap exits with
    // its own code: both are reported, the exit code is the command's.
    const KILLED: &str = "echo started; sleep 100";
    const TRAPPED: &str = "trap 'exit 9' TERM; echo started; sleep 100 & wait";
    for (transport, command, code) in [
        (Transport::Unix, KILLED, 143),
        (Transport::Tls, KILLED, 143),
        (Transport::Unix, TRAPPED, 9),
    ] {
        let mut server = rsh_harness::ServerBuilder::new(&util::binaries())
            .json_log(true)
            .unix(transport == Transport::Unix)
            .tls(transport == Transport::Tls)
            .args(["--shutdown-grace", "0.2", "--kill-grace", "0.5"])
            .start_limit(WAIT)
            .start()
            .unwrap_or_else(|err| panic!("cannot start rsh-server: {err:#}"));
        let dest = match transport {
            Transport::Unix => server.unix_dest(),
            Transport::Tls => server.tls_dest(),
        }
        .expect("the server listens where asked");
        let mut child = server
            .client(&dest)
            .args([command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn client");
        // ssh names the host, without the port.
        let host = match transport {
            Transport::Tls => dest
                .rsplit_once(':')
                .map_or(dest.as_str(), |(host, _)| host),
            Transport::Unix => dest.as_str(),
        };
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("first line");
        assert_eq!(line, "started\n", "{transport:?}");
        let server_pid = server.child.as_ref().expect("server running").id();
        util::signal(server_pid, nix::sys::signal::Signal::SIGTERM);
        let out = finish(child, "the client");
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(code), "{transport:?}: {err}");
        assert_eq!(
            err,
            format!("Connection to {host} closed by remote host.\n"),
            "{transport:?}: one line, as ssh's"
        );
        let _ = server.terminate(WAIT);
    }
}

/// A command killed by SIGTERM on a server that goes on serving: no such
/// line, the status as before.
#[test]
fn a_command_killed_on_a_running_server_is_not_reported_as_a_shutdown() {
    let server = TestServer::start(Transport::Unix);
    let out = server.run("kill -TERM $$", b"");
    assert_eq!(out.status.code(), Some(143), "{}", util::stderr(&out));
    assert_eq!(util::stderr(&out), "");
    assert_eq!(
        server.run("echo still serving", b"").stdout,
        b"still serving\n"
    );
}

/// The client learns of a shutdown from the server's notice, not by asking:
/// a command killed by a signal on a running server costs the server no
/// refused request (the empty Exec an earlier client sent as a probe).
#[test]
fn a_command_killed_by_a_signal_sends_the_server_no_probe() {
    let mut server = TestServer::start(Transport::Unix);
    let out = server.run("kill -TERM $$", b"");
    assert_eq!(out.status.code(), Some(143), "{}", util::stderr(&out));
    server.wait_for_command_finished();
    let refusals: Vec<_> = server
        .stop_and_read_log()
        .iter()
        .filter_map(|line| rsh_harness::LogEvent::parse(line))
        // A refusal's event carries the refusal's `kind` (its `message`
        // field is the refusal's text).
        .filter(|event| event.field("kind").is_some())
        .map(|event| event.json().clone())
        .collect();
    assert!(refusals.is_empty(), "{refusals:?}");
}

/// Point 20: `-i` naming a key file that does not exist is an error naming
/// it, as ssh's "no such identity", and no key is created there (only the
/// default `$RSH_HOME/id` is created on first use).
#[test]
fn a_missing_identity_file_is_an_error_and_is_not_created() {
    let server = TestServer::start(Transport::Tls);
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("id_work");
    for key in [missing.as_path(), Path::new("/nonexistent/dir/key")] {
        let key_text = key.to_str().expect("utf-8 path");
        let out = client_in(
            server.client_home.path(),
            &["-i", key_text, &server.dest, "true"],
            b"",
        );
        let err = util::stderr(&out);
        assert_eq!(out.status.code(), Some(255), "{err}");
        assert!(err.contains(key_text), "{err}");
        assert!(err.contains("no such identity"), "{err}");
        assert!(!key.exists(), "a key was created at {}", key.display());
    }
    // The same key file named in the config file.
    std::fs::write(
        server.client_home.path().join("config"),
        format!("Host *\n    IdentityFile {}\n", missing.display()),
    )
    .expect("write config");
    let out = client_in(server.client_home.path(), &[&server.dest, "true"], b"");
    assert_eq!(out.status.code(), Some(255), "{}", util::stderr(&out));
    assert!(!missing.exists(), "a key was created from IdentityFile");
}
