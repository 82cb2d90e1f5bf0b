//! rsh-client's ssh-shaped command line against real servers: DEST forms and
//! config aliases, the requested user, `-G`, `-o` and the ssh options rsh
//! ignores, `-p` against a port in DEST, `--`, `-n`, how command words are
//! joined, stdin from a terminal, and a script on stdin run by one shell.

use crate::util::{self, TestServer, Transport, WAIT};
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};

fn code(output: &Output) -> i32 {
    output.status.code().unwrap_or(-1)
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `rsh-client ARGS...` (no DEST added) with the server's client RSH_HOME,
/// stdin empty.
fn client(server: &TestServer, args: &[&str]) -> Output {
    let mut command = Command::new(util::client_bin());
    command
        .env("RSH_HOME", server.client_home.path())
        .args(args);
    util::run_with_stdin(&mut command, b"")
}

/// The user the servers run as (the test's own user).
fn own_user() -> String {
    nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("passwd lookup")
        .expect("a passwd entry for the test user")
        .name
}

/// A user name that is not the test's own.
fn other_user() -> &'static str {
    if own_user() == "nobody" {
        "daemon"
    } else {
        "nobody"
    }
}

fn tcp_port(server: &TestServer) -> u16 {
    server
        .dest
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .expect("TLS dest is 127.0.0.1:PORT")
}

fn write_config(server: &TestServer, text: &str) {
    std::fs::write(server.client_home.path().join("config"), text).expect("write config");
}

#[test]
fn config_alias_with_hostname_port_and_user() {
    let server = TestServer::start(Transport::Tls);
    let port = tcp_port(&server);
    write_config(
        &server,
        &format!(
            "Host web\n    HostName 127.0.0.1\n    Port {port}\n    User {}\n\
             Host stranger\n    HostName 127.0.0.1\n    Port {port}\n    User {}\n",
            own_user(),
            other_user()
        ),
    );
    let out = client(&server, &["web", "echo", "via", "alias"]);
    assert_eq!(stdout(&out), "via alias\n", "{}", util::stderr(&out));
    assert_eq!(code(&out), 0);
    // The config's User goes to the server, which refuses anyone else.
    let out = client(&server, &["stranger", "echo", "never"]);
    assert_eq!(code(&out), 255);
    assert_eq!(stdout(&out), "");
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!("cannot log in as {}", other_user())),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
}

#[test]
fn user_at_host_with_the_servers_user_works_and_another_is_refused() {
    for transport in [Transport::Unix, Transport::Tls] {
        let server = TestServer::start(transport);
        let dest = format!("{}@{}", own_user(), server.dest);
        let out = client(&server, &[&dest, "echo", "ok"]);
        assert_eq!(
            stdout(&out),
            "ok\n",
            "{transport:?}: {}",
            util::stderr(&out)
        );
        let dest = format!("{}@{}", other_user(), server.dest);
        let out = client(&server, &[&dest, "echo", "never"]);
        assert_eq!(code(&out), 255, "{transport:?}");
        let expected = format!(
            "this server runs commands as {}; cannot log in as {}",
            own_user(),
            other_user()
        );
        assert!(
            util::stderr(&out).contains(&expected),
            "{}",
            util::stderr(&out)
        );
        // -l says the same, and wins over the user in DEST, as in ssh.
        let out = client(&server, &["-l", other_user(), &server.dest, "true"]);
        assert_eq!(code(&out), 255);
        let joined = format!("-l{}", own_user());
        let dest = format!("{}@{}", other_user(), server.dest);
        let out = client(&server, &[&joined, &dest, "echo", "pdsh"]);
        assert_eq!(stdout(&out), "pdsh\n", "{}", util::stderr(&out));
    }
}

#[test]
fn dash_g_prints_the_resolved_configuration_without_connecting() {
    let home = tempfile::tempdir().expect("tmp");
    std::fs::write(
        home.path().join("config"),
        "Host web\n    HostName 10.1.2.3\n    Port 2222\n    User deploy\n    ConnectTimeout 7\n",
    )
    .expect("config");
    let run = |args: &[&str]| {
        Command::new(util::client_bin())
            .env("RSH_HOME", home.path())
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run rsh-client")
    };
    // What git runs to recognise an OpenSSH-like client.
    let out = run(&["-G", "-o", "SendEnv=GIT_PROTOCOL", "web"]);
    assert_eq!(code(&out), 0, "{}", util::stderr(&out));
    let text = stdout(&out);
    for line in [
        "host web",
        "hostname 10.1.2.3",
        "port 2222",
        "user deploy",
        "connecttimeout 7",
    ] {
        assert!(text.lines().any(|l| l == line), "no {line:?} in:\n{text}");
    }
    // Command-line values come first, as in ssh.
    let out = run(&["-G", "-p", "2200", "-l", "me", "web"]);
    let text = stdout(&out);
    assert!(text.lines().any(|l| l == "port 2200"), "{text}");
    assert!(text.lines().any(|l| l == "user me"), "{text}");
    // A host not in the config resolves to itself on the default port.
    let out = run(&["-G", "plain.example"]);
    let text = stdout(&out);
    assert!(
        text.lines().any(|l| l == "hostname plain.example"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "port 7022"), "{text}");
    // A broken config file is an error that names the file and line.
    std::fs::write(home.path().join("config"), "Host web\n    NoSuchOption 1\n").expect("config");
    let out = run(&["-G", "web"]);
    assert_eq!(code(&out), 255);
    assert!(
        util::stderr(&out).contains("config:2"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn ignored_ssh_options_are_accepted_and_noted_at_dash_v() {
    let server = TestServer::start(Transport::Tls);
    let ignored = [
        "-o",
        "SendEnv=X",
        "-o",
        "ControlMaster=auto",
        "-o",
        "ControlPersist=60s",
        "-o",
        "ControlPath=/x",
        "-C",
        "-x",
        "-a",
        "-2",
    ];
    let mut args = ignored.to_vec();
    args.extend([server.dest.as_str(), "echo", "fine"]);
    let out = client(&server, &args);
    assert_eq!(stdout(&out), "fine\n", "{}", util::stderr(&out));
    assert_eq!(util::stderr(&out), "", "quiet without -v");
    args.insert(0, "-v");
    let out = client(&server, &args);
    assert_eq!(stdout(&out), "fine\n");
    assert!(
        util::stderr(&out).contains("ControlMaster"),
        "{}",
        util::stderr(&out)
    );
    // -o options that do apply, applied.
    let out = client(
        &server,
        &[
            "-o",
            "ConnectTimeout=5",
            "-o",
            "BatchMode=yes",
            "-o",
            "ServerAliveInterval=5",
            &server.dest,
            "echo",
            "applied",
        ],
    );
    assert_eq!(stdout(&out), "applied\n", "{}", util::stderr(&out));
    // An option neither rsh nor ssh knows is refused, clearly.
    let out = client(&server, &["-o", "NoSuchOption=1", &server.dest, "true"]);
    assert_eq!(code(&out), 255);
    assert!(
        util::stderr(&out).contains("NoSuchOption"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn dash_p_and_a_port_in_dest_must_agree() {
    let server = TestServer::start(Transport::Tls);
    let port = tcp_port(&server).to_string();
    let out = client(&server, &["-p", &port, &server.dest, "echo", "agree"]);
    assert_eq!(stdout(&out), "agree\n", "{}", util::stderr(&out));
    let out = client(&server, &["-p", &port, "127.0.0.1", "echo", "flag"]);
    assert_eq!(stdout(&out), "flag\n", "{}", util::stderr(&out));
    let other = if port == "1" { "2" } else { "1" };
    let out = client(&server, &["-p", other, &server.dest, "echo", "never"]);
    assert_eq!(code(&out), 255);
    assert_eq!(stdout(&out), "");
    assert!(
        util::stderr(&out).contains("disagrees"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn double_dash_ends_the_options() {
    let server = TestServer::start(Transport::Unix);
    // Ansible's shape: options, `--`, DEST, the command.
    let out = client(&server, &["-n", "--", &server.dest, "echo ok"]);
    assert_eq!(stdout(&out), "ok\n", "{}", util::stderr(&out));
    // After DEST, an option is the client's...
    let out = client(&server, &[&server.dest, "-v", "echo", "hi"]);
    assert_eq!(stdout(&out), "hi\n");
    assert!(
        util::stderr(&out).contains("connecting"),
        "{}",
        util::stderr(&out)
    );
    // ...unless `--` came first: then `-v` is the remote command (which the
    // remote shell cannot run), not a client option.
    let out = client(&server, &[&server.dest, "--", "-v"]);
    assert_ne!(code(&out), 0);
    assert!(
        !util::stderr(&out).contains("connecting"),
        "{}",
        util::stderr(&out)
    );
    assert!(
        !util::stderr(&out).contains("Usage"),
        "{}",
        util::stderr(&out)
    );
    // So is every word once the command has started.
    let out = client(&server, &[&server.dest, "echo", "-v", "-n", "--", "x"]);
    assert_eq!(stdout(&out), "-v -n -- x\n", "{}", util::stderr(&out));
}

#[test]
fn dash_n_reads_stdin_from_dev_null() {
    let server = TestServer::start(Transport::Unix);
    let mut command = server.client();
    command.args(["-n", "cat; echo end"]);
    let out = util::run_with_stdin(&mut command, b"not for the remote\n");
    assert_eq!(stdout(&out), "end\n", "{}", util::stderr(&out));
}

#[test]
fn words_after_dest_are_joined_like_ssh() {
    let server = TestServer::start(Transport::Unix);
    // Two words: the remote shell sees `echo a  b` and prints `a b`.
    let out = client(&server, &[&server.dest, "echo", "a  b"]);
    assert_eq!(stdout(&out), "a b\n");
    // One word holding the quotes: the remote shell keeps the two spaces.
    let out = client(&server, &[&server.dest, "echo 'a  b'"]);
    assert_eq!(stdout(&out), "a  b\n");
    // -c is the same as one word.
    let out = client(&server, &[&server.dest, "-c", "echo 'a  b'"]);
    assert_eq!(stdout(&out), "a  b\n");
    let out = client(&server, &[&server.dest, "-c", "true", "echo", "both"]);
    assert_eq!(code(&out), 255, "-c and COMMAND together are refused");
}

/// `rsh-client DEST cat` with a terminal as stdin forwards what is typed, as
/// ssh does; Ctrl-D at the start of a line ends it.
#[test]
fn terminal_stdin_is_forwarded_to_a_command() {
    let server = TestServer::start(Transport::Unix);
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let slave = std::fs::File::from(pty.slave);
    let mut child = server
        .client()
        .args(["cat; echo stdin-ended"])
        .stdin(slave)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut master = std::fs::File::from(pty.master);
    // The line discipline holds the line until Return, then Ctrl-D ends it.
    master.write_all(b"typed line\n").expect("type");
    master.write_all(b"\x04").expect("Ctrl-D");
    let status = util::wait_child(&mut child, WAIT).expect("client exits after Ctrl-D");
    let mut out = String::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read");
    assert_eq!(out, "typed line\nstdin-ended\n");
    assert_eq!(status.code(), Some(0));
}

/// A script on stdin runs in one remote shell: `cd`, variables and `exit`
/// carry from line to line.
#[test]
fn script_on_stdin_runs_in_one_shell() {
    for transport in [Transport::Unix, Transport::Tls] {
        let server = TestServer::start(transport);
        let script = b"cd /tmp\npwd\nX=5\necho \"x=$X\"\nexit 3\necho never\n";
        let out = util::run_with_stdin(&mut server.client(), script);
        assert_eq!(
            stdout(&out),
            "/tmp\nx=5\n",
            "{transport:?}: {}",
            util::stderr(&out)
        );
        assert_eq!(code(&out), 3);
    }
}

#[test]
fn new_host_keys_are_announced_and_can_be_forgotten() {
    let server = TestServer::start(Transport::Tls);
    let known_hosts = server.client_home.path().join("known_hosts");
    let pinned = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    std::fs::write(
        &known_hosts,
        "other.example:7022 SHA256:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
    )
    .expect("write");
    let out = client(
        &server,
        &[
            "-q",
            "-o",
            "StrictHostKeyChecking=accept-new",
            &server.dest,
            "true",
        ],
    );
    assert_eq!(code(&out), 0, "{}", util::stderr(&out));
    assert_eq!(util::stderr(&out), "", "-q: no note");
    let out = client(&server, &["--forget-host", &server.dest]);
    assert_eq!(code(&out), 0, "{}", util::stderr(&out));
    let left = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    assert!(left.contains("other.example:7022"), "{left}");
    assert!(!left.contains(&server.dest), "{left}");
    // Forgotten: refused in batch use, recorded again with a note.
    let out = client(&server, &["-o", "BatchMode=yes", &server.dest, "true"]);
    assert_eq!(code(&out), 255);
    let out = client(&server, &["--accept-new", &server.dest, "true"]);
    assert_eq!(code(&out), 0, "{}", util::stderr(&out));
    let fingerprint = pinned.split_whitespace().nth(1).expect("a fingerprint");
    assert_eq!(
        util::stderr(&out),
        format!(
            "Warning: Permanently added '{}' ({fingerprint}) to the list of known hosts.\n",
            server.dest
        )
    );
    let out = client(&server, &["--forget-host", "nowhere.example"]);
    assert_eq!(code(&out), 255);
    assert!(
        util::stderr(&out).contains("not found"),
        "{}",
        util::stderr(&out)
    );
}

/// `--forget-host HOST -p PORT` forgets HOST:PORT, as `-p` names the port
/// of a connection (it was ignored: the default port's entry was looked for).
#[test]
fn forget_host_takes_the_port_from_dash_p() {
    let server = TestServer::start(Transport::Tls);
    let port = tcp_port(&server).to_string();
    let known_hosts = server.client_home.path().join("known_hosts");
    let host = server
        .dest
        .rsplit_once(':')
        .expect("host:port")
        .0
        .to_owned();
    let out = client(&server, &["--forget-host", &host, "-p", &port]);
    assert_eq!(code(&out), 0, "{}", util::stderr(&out));
    let left = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    assert!(!left.contains(&server.dest), "{left}");
    // A -p that disagrees with the port written is a usage mistake.
    let out = client(&server, &["--forget-host", &server.dest, "-p", "1"]);
    assert_eq!(code(&out), 255);
    assert!(
        util::stderr(&out).contains("disagrees"),
        "{}",
        util::stderr(&out)
    );
}

/// Kills the namespace-holding process when the test ends, however it ends.
struct Holder(std::process::Child);

impl Drop for Holder {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server that vanishes without closing (its network gone: here the
/// loopback interface of a network namespace taken down under a running
/// command) is noticed through ServerAliveInterval/ServerAliveCountMax: the
/// client exits 255 with the reason instead of hanging. Needs root and
/// util-linux's `unshare`/`nsenter` and iproute2's `ip`.
#[test]
fn a_vanished_server_ends_the_client_with_255() {
    let tools = ["/usr/bin/unshare", "/usr/bin/nsenter"];
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .find(|path| std::path::Path::new(path).exists());
    let (true, Some(ip)) = (
        nix::unistd::geteuid().is_root() && tools.iter().all(|t| std::path::Path::new(t).exists()),
        ip,
    ) else {
        crate::util::skip("needs root, unshare, nsenter and ip");
        return;
    };
    let holder = Holder(
        Command::new("unshare")
            .args(["-n", "sleep", "600"])
            .stdin(Stdio::null())
            .spawn()
            .expect("unshare"),
    );
    let pid = holder.0.id().to_string();
    // The holder is in its own namespace once unshare has exec'd sleep.
    let own = std::fs::read_link("/proc/self/ns/net").expect("our netns");
    let deadline = std::time::Instant::now() + WAIT;
    while std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .ok()
        .as_ref()
        == Some(&own)
    {
        assert!(std::time::Instant::now() < deadline, "no network namespace");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let in_ns = |program: &str| {
        let mut command = Command::new("nsenter");
        command.args(["-t", &pid, "-n", "--", program]);
        command
    };
    let status = in_ns(ip)
        .args(["link", "set", "lo", "up"])
        .status()
        .expect("ip");
    assert!(status.success(), "lo up");
    // The harness starts "the server" through a wrapper that enters the
    // namespace first (nsenter execs it: the pid is the server's).
    let dir = tempfile::tempdir().expect("tmp");
    let wrapper = dir.path().join("rsh-server-in-netns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec nsenter -t {pid} -n -- '{}' \"$@\"\n",
            util::server_bin().display()
        ),
    )
    .expect("wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod");
    let server = rsh_harness::ServerBuilder::new(&rsh_harness::Binaries {
        server: wrapper,
        client: util::client_bin(),
    })
    .unix(false)
    .tls(true)
    .start_limit(WAIT)
    .start()
    .unwrap_or_else(|err| panic!("cannot start rsh-server in the namespace: {err:#}"));
    let dest = server.tls_dest().expect("TCP endpoint");
    let mut client = in_ns(util::client_bin().to_str().expect("utf-8 path"))
        .args(["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=2"])
        .args([dest.as_str(), "echo started; sleep 100"])
        .env("RSH_HOME", server.client_home.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    let mut stdout = client.stdout.take().expect("stdout");
    let mut started = [0u8; 8];
    stdout.read_exact(&mut started).expect("the command starts");
    assert_eq!(&started, b"started\n");
    let status = in_ns(ip)
        .args(["link", "set", "lo", "down"])
        .status()
        .expect("ip");
    assert!(status.success(), "lo down");
    let status = util::wait_child(&mut client, WAIT).expect("the client gives up, not hangs");
    assert_eq!(status.code(), Some(255));
    let mut err = String::new();
    client
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut err)
        .expect("read");
    assert!(err.starts_with("rsh-client: connection lost"), "{err}");
    drop(holder);
}

/// `-i KEY` presents that key instead of `$RSH_HOME/id`: a key the server
/// does not list is refused with its own authorized_keys line, and once
/// listed it gets in.
#[test]
fn dash_i_chooses_the_identity() {
    let server = TestServer::start(Transport::Tls);
    let key = server.client_home.path().join("other_id");
    let key = key.to_str().expect("utf-8 path");
    let out = client(&server, &["-i", key, "--fingerprint"]);
    assert_eq!(code(&out), 0, "{}", util::stderr(&out));
    let line = stdout(&out).trim().to_owned();
    let fingerprint = line
        .split_whitespace()
        .next()
        .expect("fingerprint")
        .to_owned();
    assert_ne!(line, util::client_fingerprint(server.client_home.path()));
    let out = client(&server, &["-i", key, &server.dest, "true"]);
    assert_eq!(code(&out), 255);
    assert!(
        util::stderr(&out).contains("not authorized"),
        "{}",
        util::stderr(&out)
    );
    assert!(
        util::stderr(&out).contains(&fingerprint),
        "{}",
        util::stderr(&out)
    );
    let authorized = server.home.path().join("authorized_keys");
    let mut keys = std::fs::read_to_string(&authorized).expect("authorized_keys");
    keys.push_str(&format!("{line}\n"));
    std::fs::write(&authorized, keys).expect("write authorized_keys");
    let out = client(&server, &["-i", key, &server.dest, "echo", "other key"]);
    assert_eq!(stdout(&out), "other key\n", "{}", util::stderr(&out));
    // And over IPv6 only, 127.0.0.1 has no address: a clear failure.
    let out = client(&server, &["-6", &server.dest, "true"]);
    assert_eq!(code(&out), 255);
    assert!(
        util::stderr(&out).contains("IPv6"),
        "{}",
        util::stderr(&out)
    );
}

/// A key file that cannot be created is named once in the one-line reason
/// (it read "PATH: PATH: No such file or directory").
#[test]
fn dash_i_in_a_missing_directory_names_the_file_once() {
    let server = TestServer::start(Transport::Tls);
    let key = server.client_home.path().join("no-such-dir").join("id");
    let key = key.to_str().expect("utf-8 path");
    let out = client(&server, &["-i", key, &server.dest, "true"]);
    assert_eq!(code(&out), 255, "{}", util::stderr(&out));
    assert_eq!(
        util::stderr(&out).matches(key).count(),
        1,
        "{}",
        util::stderr(&out)
    );
    assert_eq!(
        util::stderr(&out).lines().count(),
        1,
        "{}",
        util::stderr(&out)
    );
}

/// A local SIGTERM or SIGHUP ends the client as it ends ssh: exit 255 and
/// "Killed by signal N." (the server then ends the remote command).
#[test]
fn a_local_fatal_signal_exits_255_with_its_number() {
    let server = TestServer::start(Transport::Unix);
    for (signal, number) in [
        (nix::sys::signal::Signal::SIGTERM, 15),
        (nix::sys::signal::Signal::SIGHUP, 1),
    ] {
        let mut child = server
            .client()
            .args(["echo started; sleep 100"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("client");
        let mut started = [0u8; 8];
        let mut stdout = child.stdout.take().expect("stdout");
        stdout.read_exact(&mut started).expect("the command starts");
        util::signal(child.id(), signal);
        let status = util::wait_child(&mut child, WAIT).expect("the client exits");
        assert_eq!(status.code(), Some(255));
        let mut err = String::new();
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut err)
            .expect("read");
        assert_eq!(err, format!("Killed by signal {number}.\n"));
    }
}
