//! Issue 18's trust and log-hygiene points against the real binaries: the
//! config file is trusted only as authorized_keys is (owner, mode, every
//! directory up the path, a regular file of bounded size, read without
//! blocking), RSH_HOME must be private in every mode, every line an
//! outsider can cause is rate-limited, and text a peer chose cannot forge a
//! log line.

use crate::util::{self, TestServer, Transport, WAIT};
use nix::sys::signal::Signal;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};

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
