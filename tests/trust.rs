//! Which files the server trusts (StrictModes), trust files that would
//! block a read (a FIFO), and known_hosts with several keys for a host.
//! Against the real binaries, on loopback and temp Unix sockets.

use crate::util::{self, TestServer, Transport, WAIT};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// Whether this test runs as root and so can hand a file to another user;
/// the foreign-owner tests need that and say so when skipped.
fn running_as_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        crate::util::skip(&format!("{test}: giving a file to another user needs root"));
        false
    }
}

/// `rsh-server` on a TCP port with RSH_HOME at `home`, expected to refuse
/// to start: its exit status and stderr.
fn start_fails(home: &Path) -> std::process::Output {
    let mut child = Command::new(crate::util::server_bin())
        .args(["--listen", "127.0.0.1:0"])
        .env("RSH_HOME", home)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rsh-server");
    if crate::util::wait_child(&mut child, WAIT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("rsh-server started with an untrusted RSH_HOME");
    }
    child.wait_with_output().expect("server output")
}

/// A private RSH_HOME with a host key and an authorized_keys file.
fn private_home() -> tempfile::TempDir {
    let home = tempfile::tempdir().expect("tempdir");
    std::fs::write(home.path().join("authorized_keys"), "").expect("authorized_keys");
    home
}

#[test]
fn server_refuses_to_start_with_a_writable_rsh_home() {
    let home = private_home();
    chmod(home.path(), 0o777);
    let out = start_fails(home.path());
    assert!(!out.status.success());
    let err = util::stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: writable by group/others (mode 0777)",
            home.path().display()
        )),
        "{err}"
    );
    // Sticky does not help RSH_HOME itself.
    chmod(home.path(), 0o1777);
    let out = start_fails(home.path());
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains("(mode 1777)"),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn server_refuses_to_start_with_a_writable_directory_above_rsh_home() {
    let top = tempfile::tempdir().expect("tempdir");
    let home = top.path().join("rsh");
    std::fs::create_dir(&home).expect("mkdir");
    chmod(&home, 0o700);
    std::fs::write(home.join("authorized_keys"), "").expect("authorized_keys");
    chmod(top.path(), 0o777);
    let out = start_fails(&home);
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains(&format!(
            "{}: writable by group/others (mode 0777)",
            top.path().display()
        )),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn server_refuses_to_start_with_a_foreign_authorized_keys() {
    if !running_as_root("server_refuses_to_start_with_a_foreign_authorized_keys") {
        return;
    }
    let home = private_home();
    let keys = home.path().join("authorized_keys");
    chmod(&keys, 0o644);
    std::os::unix::fs::chown(&keys, Some(NOBODY), None).expect("chown");
    let out = start_fails(home.path());
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains(&format!("{}: owned by uid {NOBODY}", keys.display())),
        "{}",
        util::stderr(&out)
    );
}

#[test]
fn server_refuses_to_start_with_an_authorized_keys_fifo() {
    let home = private_home();
    let keys = home.path().join("authorized_keys");
    std::fs::remove_file(&keys).expect("rm");
    nix::unistd::mkfifo(&keys, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");
    let out = start_fails(home.path());
    assert!(!out.status.success());
    assert!(
        util::stderr(&out).contains("not a regular file (a FIFO)"),
        "{}",
        util::stderr(&out)
    );
}

/// The repro, run by the file system instead of a second user: a
/// home that becomes writable after start, and (as root) a key file swapped
/// for another user's, are refused at the next connection, with the reason
/// in the log; nothing runs. Fixing the file lets the client in again.
#[test]
fn trust_is_checked_again_for_every_connection() {
    let server = TestServer::start(Transport::Tls);
    let home = server.home.path();
    let marker = home.join("ran");
    let touch = format!("touch '{}'", marker.display());

    chmod(home, 0o777);
    let out = server.run(&touch, b"");
    assert_eq!(out.status.code(), Some(255), "{}", util::stderr(&out));
    let refused = format!("{}: writable by group/others (mode 0777)", home.display());
    server.wait_for_event(|ev| ev.text("error").contains(&refused));
    chmod(home, 0o700);

    if running_as_root("trust_is_checked_again_for_every_connection (foreign owner)") {
        // `mv -f` of another user's file over authorized_keys, keeping the
        // same (authorized) contents and a mode of 0644.
        let keys = home.join("authorized_keys");
        let planted = home.join("ak.new");
        std::fs::copy(&keys, &planted).expect("copy");
        chmod(&planted, 0o644);
        std::os::unix::fs::chown(&planted, Some(NOBODY), None).expect("chown");
        std::fs::rename(&planted, &keys).expect("mv -f");
        let out = server.run(&touch, b"");
        assert_eq!(out.status.code(), Some(255), "{}", util::stderr(&out));
        let refused = format!("{}: owned by uid {NOBODY}", keys.display());
        server.wait_for_event(|ev| ev.text("error").contains(&refused));
        std::os::unix::fs::chown(&keys, Some(0), None).expect("chown back");

        // A link into a sticky, world-writable directory where the other
        // user placed the file.
        let drop_box = tempfile::tempdir().expect("tempdir");
        chmod(drop_box.path(), 0o1777);
        let target = drop_box.path().join("ak");
        std::fs::copy(&keys, &target).expect("copy");
        std::os::unix::fs::chown(&target, Some(NOBODY), None).expect("chown");
        std::fs::remove_file(&keys).expect("rm");
        std::os::unix::fs::symlink(&target, &keys).expect("symlink");
        let out = server.run(&touch, b"");
        assert_eq!(out.status.code(), Some(255), "{}", util::stderr(&out));
        std::os::unix::fs::chown(&target, Some(0), None).expect("chown to root");
        // Root's own file there is still refused: its directory is writable.
        let out = server.run(&touch, b"");
        assert_eq!(out.status.code(), Some(255), "{}", util::stderr(&out));
        let refused = format!(
            "{}: writable by group/others (mode 1777)",
            drop_box.path().display()
        );
        server.wait_for_event(|ev| ev.text("error").contains(&refused));
        std::fs::remove_file(&keys).expect("rm link");
        std::fs::copy(&target, &keys).expect("copy back");
    }
    assert!(
        !marker.exists(),
        "nothing ran on an untrusted authorized_keys"
    );
    let out = server.run("echo trusted again", b"");
    assert_eq!(out.stdout, b"trusted again\n", "{}", util::stderr(&out));
}

/// authorized_keys replaced by a FIFO: reading it would block forever. The
/// connections are refused with the reason logged, and the daemon keeps
/// serving: its Unix socket answers while several TCP clients try at once,
/// a regular file lets clients in again, and SIGTERM stops it.
#[test]
fn authorized_keys_fifo_does_not_freeze_the_server() {
    let sockets = tempfile::tempdir().expect("tempdir");
    let socket = sockets.path().join("rsh.sock");
    let unix = format!("unix:{}", socket.display());
    let mut server = TestServer::start_with(Transport::Tls, &["--listen", &unix]);
    // Ready means listening on every endpoint.
    assert!(
        server.ready.endpoints.iter().any(|e| e.to_string() == unix),
        "{:?}",
        server.ready.endpoints
    );
    let keys = server.home.path().join("authorized_keys");
    let authorized = std::fs::read(&keys).expect("read authorized_keys");
    std::fs::remove_file(&keys).expect("rm");
    nix::unistd::mkfifo(&keys, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");

    // More clients at once than the server has runtime workers on any
    // plausible machine: each blocked read used to take one.
    let workers = std::thread::available_parallelism().map_or(2, usize::from);
    let mut tcp_clients: Vec<_> = (0..(2 * workers).max(4))
        .map(|_| server.spawn_client("echo should not run"))
        .collect();
    server.wait_for_event(|ev| ev.text("error").contains("not a regular file (a FIFO)"));

    let out = crate::util::run_with_stdin(
        Command::new(crate::util::client_bin())
            .env("RSH_HOME", server.client_home.path())
            .arg(&unix)
            .args(["-c", "echo local"]),
        b"",
    );
    assert_eq!(out.stdout, b"local\n", "{}", util::stderr(&out));

    for child in &mut tcp_clients {
        let status = crate::util::wait_child(child, WAIT).expect("TCP client refused in time");
        assert_eq!(status.code(), Some(255));
    }
    for child in tcp_clients {
        let out = child.wait_with_output().expect("client output");
        assert!(out.stdout.is_empty(), "nothing ran");
    }

    std::fs::remove_file(&keys).expect("rm fifo");
    std::fs::write(&keys, authorized).expect("restore authorized_keys");
    chmod(&keys, 0o600);
    let out = server.run("echo back", b"");
    assert_eq!(out.stdout, b"back\n", "{}", util::stderr(&out));
    assert!(server.terminate().success(), "SIGTERM stops the server");
}

/// A host listed in known_hosts with an old key first and its current key
/// after: the client connects (any entry may match, as for ssh), and adds
/// nothing to the file.
#[test]
fn any_known_hosts_entry_for_the_host_may_match() {
    let server = TestServer::start(Transport::Tls);
    let known_hosts = server.client_home.path().join("known_hosts");
    let current = std::fs::read_to_string(&known_hosts).expect("known_hosts");
    let other = tempfile::tempdir().expect("tmp");
    let old_key = Command::new(crate::util::server_bin())
        .arg("--fingerprint")
        .env("RSH_HOME", other.path())
        .output()
        .expect("another host key");
    let old_key = String::from_utf8(old_key.stdout).expect("utf-8");
    let text = format!("{} {}\n{current}", server.dest, old_key.trim());
    std::fs::write(&known_hosts, &text).expect("write known_hosts");
    let out = server.run("echo rekeyed", b"");
    assert_eq!(out.stdout, b"rekeyed\n", "{}", util::stderr(&out));
    assert_eq!(
        std::fs::read_to_string(&known_hosts).expect("known_hosts"),
        text
    );
}
