//! Terminal sessions end to end: the real `rsh-client` on a real
//! pseudo-terminal (in a session of its own, the pty its controlling
//! terminal, as in a terminal emulator) against the real server, over the
//! Unix socket and TLS.
//!
//! The terminal echoes what is typed, so the tests only trust output that
//! cannot be that echo: a marker typed as `echo =b$((7))=` shows as
//! `=b$((7))=` in the echo and as `=b7=` only when the shell ran it.

use crate::pty::{alive, foreground_job, foreground_sleep, wait_gone};
use crate::util::{self, TestServer, Transport, WAIT};
use nix::sys::termios::{self, Termios};
use std::io::{Read, Write};
use std::process::Child;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The prompt the tests give the remote shell (typed as `'rsh''> '`, so
/// the echo of that line never shows it).
const PROMPT: &str = "rsh> ";

/// How long the session's processes may take to go once it ended: the
/// hangup, the test server's 0.5 s kill grace, and the reaper.
const GONE: Duration = Duration::from_secs(2);

/// Where `needle` starts in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The client on a pty, and what its terminal showed.
struct Session {
    child: Child,
    master: std::fs::File,
    /// Kept to compare the terminal's settings before and after.
    slave: std::fs::File,
    before: Termios,
    output: mpsc::Receiver<Vec<u8>>,
    /// Shown but not yet consumed by a `wait_for`.
    seen: Vec<u8>,
    /// Numbers the markers of [`Session::ask`], so each is unique.
    asked: u32,
}

impl Session {
    fn start(server: &TestServer, rows: u16, cols: u16) -> Session {
        Session::start_at(&server.dest, server.client_home.path(), rows, cols)
    }

    fn start_at(dest: &str, home: &std::path::Path, rows: u16, cols: u16) -> Session {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = std::fs::File::from(pty.slave);
        let before = termios::tcgetattr(&slave).expect("tcgetattr");
        let child = std::process::Command::new("setsid")
            .arg("--ctty")
            .arg(util::client_bin())
            .arg(dest)
            .env("RSH_HOME", home)
            .env("TERM", "xterm")
            .stdin(slave.try_clone().expect("dup"))
            .stdout(slave.try_clone().expect("dup"))
            .stderr(slave.try_clone().expect("dup"))
            .spawn()
            .expect("spawn the client (needs util-linux setsid)");
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("dup master");
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            // Ends when the last slave closes (EIO) or the test is done.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Session {
            child,
            master,
            slave,
            before,
            output,
            seen: Vec::new(),
            asked: 0,
        }
    }

    /// A session on `server` whose remote shell shows [`PROMPT`], and
    /// shows it now.
    fn with_prompt(server: &TestServer, rows: u16, cols: u16) -> Session {
        let mut s = Session::start(server, rows, cols);
        s.type_keys(b"PS1='rsh''> '\r");
        s.wait_for(PROMPT);
        s
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).expect("type");
    }

    /// One more piece of output, or a panic after `limit` with what showed.
    fn receive(&mut self, limit: Duration, waiting_for: &str) {
        match self.output.recv_timeout(limit) {
            Ok(chunk) => self.seen.extend_from_slice(&chunk),
            Err(_) => panic!(
                "the terminal never showed {waiting_for:?}; it showed {:?}",
                String::from_utf8_lossy(&self.seen)
            ),
        }
    }

    /// Waits until the terminal shows `needle`; returns what came before it
    /// (and consumes both).
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.seen, needle.as_bytes()) {
                let upto: Vec<u8> = self.seen.drain(..at + needle.len()).collect();
                return String::from_utf8_lossy(&upto[..at]).into_owned();
            }
            self.receive(deadline.saturating_duration_since(Instant::now()), needle);
        }
    }

    /// Counts `byte` in what the terminal shows until `end`, looking at each
    /// piece once (the output may be many megabytes). Bounded by `WAIT`
    /// without output and by ten times that in all.
    fn count_until(&mut self, byte: u8, end: &str) -> usize {
        let end = end.as_bytes();
        let overall = Instant::now() + 10 * WAIT;
        let mut count = 0;
        loop {
            if let Some(at) = find(&self.seen, end) {
                count += self.seen[..at].iter().filter(|&&b| b == byte).count();
                self.seen.drain(..at + end.len());
                return count;
            }
            // Keep what could be the start of `end`; count the rest.
            let done = self.seen.len().saturating_sub(end.len());
            count += self.seen[..done].iter().filter(|&&b| b == byte).count();
            self.seen.drain(..done);
            assert!(
                Instant::now() < overall,
                "no end marker within {:?}",
                10 * WAIT
            );
            self.receive(WAIT, &String::from_utf8_lossy(end));
        }
    }

    /// Runs `command` in the remote shell and returns what it printed,
    /// trimmed: the output between two markers only the shell prints.
    fn ask(&mut self, command: &str) -> String {
        self.asked += 1;
        let n = self.asked;
        self.type_keys(format!("echo =b$(({n}))=; {command}; echo =e$(({n}))=\r").as_bytes());
        self.wait_for(&format!("=b{n}=\r\n"));
        self.wait_for(&format!("=e{n}=\r\n")).trim().to_owned()
    }

    /// The remote shell's pid (which is also its session id).
    fn shell_pid(&mut self) -> u32 {
        self.ask("echo $$").parse().expect("the shell's pid")
    }

    fn resize(&self, rows: u16, cols: u16) {
        let size = rustix::termios::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // Sets the size and sends SIGWINCH to the client, as a terminal
        // emulator does when its window changes.
        rustix::termios::tcsetwinsize(&self.master, size).expect("TIOCSWINSZ");
    }

    fn wait_exit(&mut self) -> Option<i32> {
        util::wait_child(&mut self.child, WAIT)
            .expect("the client exits")
            .code()
    }

    /// The terminal's settings are what they were before the session
    /// (what `stty -g` shows: every flag and control character).
    fn assert_terminal_restored(&self) {
        let after = termios::tcgetattr(&self.slave).expect("tcgetattr");
        assert_eq!(after.input_flags, self.before.input_flags);
        assert_eq!(after.output_flags, self.before.output_flags);
        assert_eq!(after.local_flags, self.before.local_flags);
        assert_eq!(after.control_flags, self.before.control_flags);
        assert_eq!(after.control_chars, self.before.control_chars);
        assert_eq!(
            termios::cfgetispeed(&after),
            termios::cfgetispeed(&self.before)
        );
        assert_eq!(
            termios::cfgetospeed(&after),
            termios::cfgetospeed(&self.before)
        );
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn shell_state_tty_and_size(transport: Transport) {
    let server = TestServer::start(transport);
    let mut s = Session::start(&server, 33, 101);
    s.type_keys(b"cd /tmp\r");
    s.type_keys(b"X=5\r");
    assert_eq!(s.ask("pwd"), "/tmp");
    assert_eq!(s.ask("echo \"X is $X\""), "X is 5");
    let tty = s.ask("tty");
    assert!(tty.starts_with("/dev/pts/"), "tty printed {tty:?}");
    assert_eq!(s.ask("stty size"), "33 101");
    s.resize(40, 120);
    // The resize travels on its own; ask until the new size shows (bounded).
    let mut size = String::new();
    for _ in 0..50 {
        size = s.ask("stty size");
        if size == "40 120" {
            break;
        }
    }
    assert_eq!(size, "40 120");
    // A program reading /dev/tty (as sudo does for a password) gets the
    // line. It is typed once `head` runs: the shell's line editor would
    // take it as typeahead before that.
    let shell = s.shell_pid();
    s.type_keys(b"head -n 1 < /dev/tty | sed 's/^/got:/'\r");
    foreground_job(shell, "head");
    s.type_keys(b"secret\r");
    s.wait_for("got:secret");
    s.type_keys(b"exit 7\r");
    assert_eq!(s.wait_exit(), Some(7));
    s.assert_terminal_restored();
}

#[test]
fn unix_shell_state_tty_and_size() {
    shell_state_tty_and_size(Transport::Unix);
}

#[test]
fn tls_shell_state_tty_and_size() {
    shell_state_tty_and_size(Transport::Tls);
}

/// Ctrl-C interrupts the remote foreground job and the shell prompts
/// again; `~.` then disconnects, and every process of the session (a job in
/// its own process group and a foreground one included) is gone soon after.
fn ctrl_c_interrupts_and_tilde_dot_disconnects(transport: Transport) {
    let server = TestServer::start(transport);
    let mut s = Session::with_prompt(&server, 24, 80);
    let shell = s.shell_pid();
    let background: u32 = s
        .ask("sleep 101 & echo $!")
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("the background job's pid");
    s.wait_for(PROMPT);

    s.type_keys(b"sleep 100\r");
    // Typed before the shell has read the line, Ctrl-C would flush it.
    let sleep = foreground_sleep(shell);
    s.type_keys(b"\x03");
    assert!(
        wait_gone(&[sleep], WAIT).is_empty(),
        "Ctrl-C ended the sleep"
    );
    s.wait_for(PROMPT);
    assert_eq!(s.ask("echo back"), "back");
    assert!(alive(shell) && alive(background));

    // `~.` after a newline, with a job in the foreground: the client
    // leaves, the session ends.
    s.type_keys(b"sleep 102\r");
    let foreground = foreground_sleep(shell);
    let members = crate::util::live_session_members(shell);
    for pid in [shell, background, foreground] {
        assert!(members.contains(&pid), "{pid} is in session {shell}");
    }
    s.type_keys(b"\r~.");
    assert_eq!(s.wait_exit(), Some(255));
    s.assert_terminal_restored();
    assert_eq!(
        wait_gone(&members, GONE),
        Vec::<u32>::new(),
        "processes of the session outlived ~."
    );
}

#[test]
fn unix_ctrl_c_interrupts_and_tilde_dot_disconnects() {
    ctrl_c_interrupts_and_tilde_dot_disconnects(Transport::Unix);
}

#[test]
fn tls_ctrl_c_interrupts_and_tilde_dot_disconnects() {
    ctrl_c_interrupts_and_tilde_dot_disconnects(Transport::Tls);
}

/// `exit` with a job still running in the background ends the session: the
/// client exits with the shell's status and the job does not live on.
fn a_background_job_does_not_keep_the_session(transport: Transport) {
    let server = TestServer::start(transport);
    let mut s = Session::with_prompt(&server, 24, 80);
    let shell = s.shell_pid();
    let job: u32 = s
        .ask("sleep 103 & echo $!")
        .lines()
        .last()
        .and_then(|line| line.trim().parse().ok())
        .expect("the background job's pid");
    assert!(alive(job));
    s.type_keys(b"exit 4\r");
    assert_eq!(s.wait_exit(), Some(4));
    s.assert_terminal_restored();
    assert_eq!(wait_gone(&[shell, job], GONE), Vec::<u32>::new());
}

#[test]
fn unix_a_background_job_does_not_keep_the_session() {
    a_background_job_does_not_keep_the_session(Transport::Unix);
}

#[test]
fn tls_a_background_job_does_not_keep_the_session() {
    a_background_job_does_not_keep_the_session(Transport::Tls);
}

fn terminal_is_restored_when_the_server_dies(transport: Transport) {
    let server = TestServer::start(transport);
    let mut s = Session::start(&server, 24, 80);
    assert_eq!(s.ask("echo up"), "up");
    util::signal(server.pid(), nix::sys::signal::Signal::SIGKILL);
    assert_eq!(s.wait_exit(), Some(255));
    s.assert_terminal_restored();
}

#[test]
fn unix_terminal_is_restored_when_the_server_dies() {
    terminal_is_restored_when_the_server_dies(Transport::Unix);
}

#[test]
fn tls_terminal_is_restored_when_the_server_dies() {
    terminal_is_restored_when_the_server_dies(Transport::Tls);
}

/// 20 MB of 'x' in 1000-byte lines between two markers: every one arrives.
fn twenty_megabytes_through_the_pty_arrive_whole(transport: Transport) {
    let server = TestServer::start(transport);
    let mut s = Session::start(&server, 24, 80);
    s.type_keys(
        b"echo =s$((1))=; head -c 20000000 /dev/zero | tr '\\0' x | fold -w 1000; echo =t$((1))=\r",
    );
    s.wait_for("=s1=\r\n");
    assert_eq!(s.count_until(b'x', "=t1=\r\n"), 20_000_000);
    s.type_keys(b"exit\r");
    assert_eq!(s.wait_exit(), Some(0));
    s.assert_terminal_restored();
}

#[test]
fn unix_twenty_megabytes_through_the_pty_arrive_whole() {
    twenty_megabytes_through_the_pty_arrive_whole(Transport::Unix);
}

#[test]
fn tls_twenty_megabytes_through_the_pty_arrive_whole() {
    twenty_megabytes_through_the_pty_arrive_whole(Transport::Tls);
}

/// A paste: 200 kB typed in one go into a program that reads the remote
/// terminal raw. Every byte arrives: the client reads its raw terminal with
/// a shortcut (a short read is taken to have drained it) that must not
/// strand what is still queued.
fn a_paste_arrives_whole(transport: Transport) {
    let server = TestServer::start(transport);
    let mut s = Session::start(&server, 24, 80);
    s.type_keys(
        b"stty raw -echo; echo =r$((1))=; head -c 200000 | tr -dc x | wc -c; stty sane; echo =t$((1))=\r",
    );
    s.wait_for("=r1=");
    s.type_keys(&[b'x'; 200_000]);
    assert_eq!(s.wait_for("=t1=").trim(), "200000");
    s.type_keys(b"\rexit\r");
    assert_eq!(s.wait_exit(), Some(0));
}

#[test]
fn unix_a_paste_arrives_whole() {
    a_paste_arrives_whole(Transport::Unix);
}

#[test]
fn tls_a_paste_arrives_whole() {
    a_paste_arrives_whole(Transport::Tls);
}

/// Ctrl-\ quits the remote foreground job even when the server was started
/// with SIGQUIT ignored, as `rsh-server &` from a script starts it: the
/// shells it runs get the default action, not the server's inheritance.
#[test]
fn ctrl_backslash_quits_though_the_server_was_started_ignoring_sigquit() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let wrapper = dir.path().join("rsh-server-ignoring-quit");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\ntrap '' QUIT\nexec '{}' \"$@\"\n",
            util::server_bin().display()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let bins = rsh_harness::Binaries {
        server: wrapper,
        client: util::client_bin(),
    };
    let server = rsh_harness::ServerBuilder::new(&bins)
        .args(["--kill-grace", "0.5"])
        .start_limit(WAIT)
        .start()
        .expect("start the server");
    let dest = server.unix_dest().expect("a Unix socket");
    let mut s = Session::start_at(&dest, server.client_home.path(), 24, 80);
    s.type_keys(b"PS1='rsh''> '\r");
    s.wait_for(PROMPT);
    let shell = s.shell_pid();
    s.wait_for(PROMPT);
    s.type_keys(b"sleep 100\r");
    let sleep = foreground_sleep(shell);
    s.type_keys(b"\x1c");
    assert!(
        wait_gone(&[sleep], WAIT).is_empty(),
        "Ctrl-\\ ended the sleep"
    );
    s.wait_for(PROMPT);
    s.type_keys(b"exit 0\r");
    assert_eq!(s.wait_exit(), Some(0));
    s.assert_terminal_restored();
}

/// A version-2 server that plays a remote terminal by script, so the
/// client's side of a session is tested whatever the real server offers:
/// it reports the Exec it gets, echoes typed bytes back as a pty with echo
/// would, reports window changes, and ends the session with status 3 when
/// `exit\r` is typed.
fn scripted_terminal_server(
    listener: std::os::unix::net::UnixListener,
    report: mpsc::Sender<String>,
    connections: usize,
) {
    use futures::{SinkExt, StreamExt};
    use rsh_proto::{Codec, ExitStatus, Frame};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        for _ in 0..connections {
            let Ok((stream, _)) = listener.accept() else {
                return;
            };
            stream.set_nonblocking(true).expect("nonblocking");
            let mut stream = tokio::net::UnixStream::from_std(stream).expect("tokio stream");
            let version = rsh_proto::io::greet(&mut stream, WAIT)
                .await
                .expect("greeting");
            let mut framed =
                tokio_util::codec::Framed::new(stream, Codec::new().with_version(version));
            let Some(Ok(Frame::Exec(exec))) = framed.next().await else {
                panic!("expected an Exec");
            };
            let channel = exec.channel;
            let pty = exec.pty.expect("a pty request");
            let _ = report.send(format!(
                "v{version} login_shell={} term={} size={}x{}",
                exec.login_shell,
                String::from_utf8_lossy(&pty.term),
                pty.size.cols,
                pty.size.rows
            ));
            framed
                .send(Frame::WindowAdjust {
                    channel,
                    increment: 1 << 20,
                })
                .await
                .expect("send");
            framed
                .send(Frame::Stdout {
                    channel,
                    data: bytes::Bytes::from_static(b"fake$ "),
                })
                .await
                .expect("send");
            let mut typed = Vec::new();
            while let Some(Ok(frame)) = framed.next().await {
                match frame {
                    Frame::Stdin { data, .. } => {
                        typed.extend_from_slice(&data);
                        let increment = u32::try_from(data.len()).expect("small");
                        let _ = framed
                            .send(Frame::WindowAdjust { channel, increment })
                            .await;
                        let _ = framed.send(Frame::Stdout { channel, data }).await;
                        if typed.ends_with(b"exit\r") {
                            let _ =
                                report.send(format!("typed {:?}", String::from_utf8_lossy(&typed)));
                            let status = ExitStatus::Code(3);
                            let _ = framed.send(Frame::Exit { channel, status }).await;
                        }
                    }
                    Frame::Resize { size, .. } => {
                        let _ = report.send(format!("resize {}x{}", size.cols, size.rows));
                        let text = format!("[resized {}x{}]", size.cols, size.rows);
                        let data = bytes::Bytes::from(text.into_bytes());
                        let _ = framed.send(Frame::Stdout { channel, data }).await;
                    }
                    _ => {}
                }
            }
            let _ = report.send("closed".to_owned());
        }
    });
}

/// The client's half of a terminal session, against a scripted server:
/// the pty request carries TERM and the window size, the terminal is raw
/// (Ctrl-C travels as a byte), a window change is sent, `~?` is answered
/// locally, the exit status is the session's, `~.` disconnects with 255,
/// and the terminal's settings are back after each.
#[test]
fn client_side_of_a_session_against_a_scripted_server() {
    let dir = tempfile::tempdir().expect("tmp");
    let socket = dir.path().join("fake.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).expect("bind");
    let (report_tx, report) = mpsc::channel();
    let server = std::thread::spawn(move || scripted_terminal_server(listener, report_tx, 3));
    let next = || {
        report
            .recv_timeout(WAIT)
            .expect("the scripted server reports")
    };
    let dest = format!("unix:{}", socket.display());
    let home = tempfile::tempdir().expect("home");

    let mut s = Session::start_at(&dest, home.path(), 33, 101);
    s.wait_for("fake$ ");
    assert_eq!(next(), "v3 login_shell=true term=xterm size=101x33");
    s.type_keys(b"ab\x03c\r");
    s.wait_for("ab\x03c\r");
    s.resize(40, 120);
    s.wait_for("[resized 120x40]");
    assert_eq!(next(), "resize 120x40");
    s.type_keys(b"~?");
    s.wait_for("Supported escape sequences");
    s.type_keys(b"~~exit\r");
    assert_eq!(s.wait_exit(), Some(3));
    assert_eq!(next(), "typed \"ab\\u{3}c\\r~exit\\r\"");
    s.wait_for("Connection to ");
    s.assert_terminal_restored();
    assert_eq!(next(), "closed");

    let mut s = Session::start_at(&dest, home.path(), 24, 80);
    s.wait_for("fake$ ");
    assert_eq!(next(), "v3 login_shell=true term=xterm size=80x24");
    s.type_keys(b"x\r~.");
    assert_eq!(s.wait_exit(), Some(255));
    s.assert_terminal_restored();
    assert_eq!(next(), "closed");

    // A local SIGTERM ends the session as ssh's does: 255, with the reason.
    let mut s = Session::start_at(&dest, home.path(), 24, 80);
    s.wait_for("fake$ ");
    assert_eq!(next(), "v3 login_shell=true term=xterm size=80x24");
    util::signal(s.child.id(), nix::sys::signal::Signal::SIGTERM);
    assert_eq!(s.wait_exit(), Some(255));
    s.wait_for("Killed by signal 15.");
    s.assert_terminal_restored();
    assert_eq!(next(), "closed");
    server.join().expect("the scripted server ends");
}
