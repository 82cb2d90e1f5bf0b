//! Terminal sessions and login shells on the real server, spoken to as a
//! version-2 client written from docs/PROTOCOL.md would (rsh-proto's codec
//! over the Unix socket): a pty Exec, Stdin typed on the terminal, Resize,
//! Signal, and the connection's end as a hangup. The real client on a real
//! terminal is `terminal.rs`'s.

use crate::util::{self, TestServer, Transport, WAIT};
use futures::{SinkExt, StreamExt};
use rsh_proto::{Codec, Exec, ExitStatus, Frame, PtyRequest, PtySize};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// Output window granted at start; topped up as output is read.
const WINDOW: u32 = 1024 * 1024;
/// The channel every test uses.
const CHANNEL: u32 = 1;

fn size(cols: u16, rows: u16) -> PtySize {
    PtySize {
        cols,
        rows,
        pixel_width: 0,
        pixel_height: 0,
    }
}

/// One channel of a version-2 connection on the server's Unix socket, with
/// what it has seen so far.
struct Session {
    framed: Framed<UnixStream, Codec>,
    /// Everything the channel printed (Stdout frames).
    out: Vec<u8>,
    /// How far `wait_for` has matched in `out`.
    seen: usize,
    /// Stderr frames seen (none under a pty).
    stderr_frames: usize,
    /// Stdin credit the server granted and we have not used.
    stdin_credit: u64,
    exit: Option<ExitStatus>,
}

impl Session {
    async fn connect(server: &TestServer) -> Session {
        let (stream, version) = util::connect_greeted(server).await;
        assert!(version >= 2, "the server speaks version 2 or later");
        Session {
            framed: Framed::new(stream, Codec::new().with_version(version)),
            out: Vec::new(),
            seen: 0,
            stderr_frames: 0,
            stdin_credit: 0,
            exit: None,
        }
    }

    /// Starts `command` (the login shell if `None`), on a pty of `size` if
    /// given, else on pipes.
    async fn start(server: &TestServer, command: Option<&str>, pty: Option<PtySize>) -> Session {
        Session::start_exec(server, exec(command, pty)).await
    }

    async fn start_exec(server: &TestServer, exec: Exec) -> Session {
        let mut session = Session::connect(server).await;
        session.send(Frame::Exec(exec)).await;
        session
    }

    async fn send(&mut self, frame: Frame) {
        tokio::time::timeout(WAIT, self.framed.send(frame))
            .await
            .expect("send in time")
            .expect("send");
    }

    /// Reads and handles one frame (bounded by `deadline`).
    async fn pump(&mut self, deadline: Instant, waiting_for: &str) {
        let left = deadline.saturating_duration_since(Instant::now());
        let frame = match tokio::time::timeout(left, self.framed.next()).await {
            Err(_) => panic!(
                "no {waiting_for} within {WAIT:?}; the session printed {:?}",
                String::from_utf8_lossy(&self.out)
            ),
            Ok(None) => panic!(
                "server closed the connection while waiting for {waiting_for}; printed {:?}",
                String::from_utf8_lossy(&self.out)
            ),
            Ok(Some(Err(err))) => panic!("bad frame from the server: {err}"),
            Ok(Some(Ok(frame))) => frame,
        };
        match frame {
            Frame::Stdout { data, .. } => {
                self.out.extend_from_slice(&data);
                let increment = u32::try_from(data.len()).expect("frame fits u32");
                self.send(Frame::WindowAdjust {
                    channel: CHANNEL,
                    increment,
                })
                .await;
            }
            Frame::Stderr { data, .. } => {
                self.stderr_frames += 1;
                let increment = u32::try_from(data.len()).expect("frame fits u32");
                self.send(Frame::WindowAdjust {
                    channel: CHANNEL,
                    increment,
                })
                .await;
            }
            Frame::WindowAdjust { increment, .. } => self.stdin_credit += u64::from(increment),
            Frame::Exit { status, .. } => {
                assert!(self.exit.is_none(), "a second Exit");
                self.exit = Some(status);
            }
            Frame::Error { kind, message, .. } => {
                panic!("the server refused: {kind:?}: {message}")
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }

    /// Types `text` on the terminal (or writes it to the shell's stdin),
    /// within the stdin window.
    async fn type_in(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        while self.stdin_credit < text.len() as u64 {
            self.pump(deadline, "stdin credit").await;
        }
        self.stdin_credit -= text.len() as u64;
        self.send(Frame::Stdin {
            channel: CHANNEL,
            data: text.as_bytes().to_vec().into(),
        })
        .await;
    }

    /// Waits until the output shows `needle` after what earlier waits
    /// matched; returns the output from the end of the last match to the
    /// end of this one.
    async fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(at) = find(&self.out[self.seen..], needle.as_bytes()) {
                let end = self.seen + at + needle.len();
                let text = String::from_utf8_lossy(&self.out[self.seen..end]).into_owned();
                self.seen = end;
                return text;
            }
            assert!(
                self.exit.is_none(),
                "the session ended ({:?}) before printing {needle:?}; printed {:?}",
                self.exit,
                String::from_utf8_lossy(&self.out)
            );
            self.pump(deadline, needle).await;
        }
    }

    /// Waits for a number printed as `{tag}=NUMBER=` (the echo of the
    /// typed line shows `{tag}=$...=`, never digits).
    async fn wait_for_number(&mut self, tag: &str) -> u32 {
        let prefix = format!("{tag}=");
        let deadline = Instant::now() + WAIT;
        loop {
            let text = String::from_utf8_lossy(&self.out[self.seen..]).into_owned();
            let mut from = 0;
            while let Some(at) = text[from..].find(&prefix) {
                let start = from + at + prefix.len();
                let digits: String = text[start..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                if !digits.is_empty() && text[start + digits.len()..].starts_with('=') {
                    self.seen += start + digits.len() + 1;
                    return digits.parse().expect("a pid");
                }
                from = start;
            }
            self.pump(deadline, &prefix).await;
        }
    }

    /// Reads to the channel's Exit.
    async fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        while self.exit.is_none() {
            self.pump(deadline, "Exit").await;
        }
        self.exit.clone().expect("exit seen")
    }
}

/// An Exec on [`CHANNEL`]: `command` (the login shell if `None`), on a pty
/// of `size` if given, else on pipes.
fn exec(command: Option<&str>, pty: Option<PtySize>) -> Exec {
    Exec {
        channel: CHANNEL,
        window: WINDOW,
        command: command.unwrap_or_default().as_bytes().to_vec(),
        cwd: None,
        env: Vec::new(),
        timeout: None,
        login_shell: command.is_none(),
        user: None,
        pty: pty.map(|size| PtyRequest {
            term: b"xterm".to_vec(),
            size,
        }),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// `/proc/PID/stat`'s state, process group, session and the terminal's
/// foreground group, or `None` once the process is gone.
fn stat(pid: u32) -> Option<(char, u32, u32, i64)> {
    rsh_sys::ProcStat::read(pid).map(|s| (s.state, s.pgrp, s.session, s.tpgid))
}

/// Running, not a zombie waiting for the server's reaper.
pub(crate) fn alive(pid: u32) -> bool {
    stat(pid).is_some_and(|(state, ..)| state != 'Z')
}

/// Polls (bounded by `limit`) until none of `pids` is alive; the ones left.
pub(crate) fn wait_gone(pids: &[u32], limit: Duration) -> Vec<u32> {
    let deadline = Instant::now() + limit;
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&pid| alive(pid)).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits until a `sleep` of session `sid` is the terminal's foreground job;
/// its pid.
pub(crate) fn foreground_sleep(sid: u32) -> u32 {
    foreground_job(sid, "sleep")
}

/// Waits until a process named `name` (its `comm`) of session `sid` is in
/// the terminal's foreground process group; its pid.
pub(crate) fn foreground_job(sid: u32, name: &str) -> u32 {
    let deadline = Instant::now() + WAIT;
    loop {
        let found = crate::util::live_session_members(sid)
            .into_iter()
            .find(|&pid| {
                let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
                comm.trim() == name
                    && stat(pid).is_some_and(|(_, pgrp, _, tpgid)| i64::from(pgrp) == tpgid)
            });
        if let Some(pid) = found {
            return pid;
        }
        assert!(
            Instant::now() < deadline,
            "no foreground {name} in session {sid} within {WAIT:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_command_on_a_pty_runs_on_a_pts_with_stderr_in_the_same_stream() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut session = Session::start(
            &server,
            Some("tty; echo to-stderr >&2; test -t 0 && test -t 2 && echo all-terminal"),
            Some(size(80, 24)),
        )
        .await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(0));
        let out = String::from_utf8_lossy(&session.out).into_owned();
        assert!(out.starts_with("/dev/pts/"), "tty printed {out:?}");
        assert!(out.contains("to-stderr\r\n"), "{out:?}");
        assert!(out.contains("all-terminal\r\n"), "{out:?}");
        assert_eq!(session.stderr_frames, 0, "no Stderr under a pty");
    });
}

#[test]
fn stty_size_is_the_requested_size_and_a_resize_reaches_the_foreground_job() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        // The trap runs between two short sleeps; bounded by the test's
        // waits (the session is hung up when the connection drops).
        let script = "trap 'echo new=$(stty size)=; exit 0' WINCH; \
                      echo old=$(stty size)=; \
                      while :; do sleep 0.05; done";
        let mut session = Session::start(&server, Some(script), Some(size(100, 30))).await;
        session.wait_for("old=30 100=").await;
        session
            .send(Frame::Resize {
                channel: CHANNEL,
                size: size(120, 40),
            })
            .await;
        session.wait_for("new=40 120=").await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(0));
    });
}

#[test]
fn the_login_shell_on_a_pty_keeps_its_state_from_line_to_line() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut session = Session::start(&server, None, Some(size(250, 24))).await;
        session.type_in("cd /tmp\n").await;
        session.type_in("X=4$((1+1))\n").await;
        session.type_in("echo \"at:$(pwd) x:$X\"\n").await;
        session.wait_for("at:/tmp x:42").await;
        // Where it comes from, as sshd's SSH_CONNECTION / SSH_TTY.
        session
            .type_in("echo \"tty[$RSH_TTY][$(tty)] conn[$RSH_CONNECTION]\"\n")
            .await;
        let text = session.wait_for("]\r\n").await;
        // Not the echo of the typed line: the one the shell printed.
        let at = text
            .find("tty[/dev/pts/")
            .unwrap_or_else(|| panic!("no RSH_TTY line in {text:?}"));
        let line = text[at..].trim_end().to_owned();
        let fields: Vec<&str> = line.split(['[', ']']).collect();
        assert_eq!(fields[1], fields[3], "RSH_TTY names the terminal: {line}");
        let conn: Vec<&str> = fields[5].split(' ').collect();
        assert_eq!(conn.len(), 4, "four fields: {line}");
        assert!(conn[0].starts_with("unix:uid="), "{line}");
        assert_eq!(
            conn[2],
            format!("unix:{}", server.socket.display()),
            "{line}"
        );
        session.type_in("exit 7\n").await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(7));
        // Logged as commands are: who, from where, on what, how it ended.
        let logged = server.wait_for_event(|ev| ev.message() == "session finished");
        assert!(logged.text("peer").starts_with("unix:uid="), "{logged}");
        assert!(logged.has("login_shell", "true"), "{logged}");
        assert!(logged.text("tty").starts_with("/dev/pts/"), "{logged}");
        assert!(logged.has("status", "Code(7)"), "{logged}");
        assert!(logged.field("bytes_in").is_some(), "{logged}");
    });
}

#[test]
fn twenty_megabytes_through_the_pty_arrive_whole() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        const LEN: usize = 20_000_000;
        // -opost: the terminal passes the bytes as they are (no \r added).
        let command = format!("stty -opost; yes 0123456789abcdef | head -c {LEN}");
        let mut session = Session::start(&server, Some(&command), Some(size(80, 24))).await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(0));
        assert_eq!(session.out.len(), LEN, "every byte, nothing more");
        let line = b"0123456789abcdef\n";
        assert!(
            session
                .out
                .chunks(line.len())
                .all(|chunk| chunk == &line[..chunk.len()]),
            "the bytes arrive in order, unchanged"
        );
    });
}

#[test]
fn a_signal_frame_interrupts_the_foreground_job_and_the_shell_prompts_again() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut session = Session::start(&server, None, Some(size(80, 24))).await;
        session.type_in("echo sh=$$=\n").await;
        let shell = session.wait_for_number("sh").await;
        session.type_in("sleep 100\n").await;
        let sleep = foreground_sleep(shell);
        session
            .send(Frame::Signal {
                channel: CHANNEL,
                signal: rsh_proto::signal::INT,
            })
            .await;
        session.type_in("echo back-$((40+2))\n").await;
        session.wait_for("back-42").await;
        assert!(!alive(sleep), "the sleep was interrupted");
        assert!(alive(shell), "the shell itself was not");
        session.type_in("exit\n").await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(0));
    });
}

#[test]
fn closing_the_connection_ends_every_process_of_the_session() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut session = Session::start(&server, None, Some(size(80, 24))).await;
        // A job in a process group of its own (job control), one that
        // ignores SIGHUP, and one in the foreground.
        session
            .type_in("set -m; sleep 100 & echo bg=$!=; (trap '' HUP; exec sleep 101) & echo nohup=$!=; echo sh=$$=\n")
            .await;
        let background = session.wait_for_number("bg").await;
        let ignores_hup = session.wait_for_number("nohup").await;
        let shell = session.wait_for_number("sh").await;
        session.type_in("sleep 102\n").await;
        let foreground = foreground_sleep(shell);
        let pids = [shell, background, ignores_hup, foreground];
        let groups: Vec<u32> = pids
            .iter()
            .map(|&pid| stat(pid).expect("running").1)
            .collect();
        assert!(
            groups[1] != groups[0] && groups[3] != groups[0],
            "jobs have process groups of their own: {groups:?}"
        );

        drop(session);
        let left = wait_gone(&pids, Duration::from_secs(2));
        assert!(left.is_empty(), "still running 2 s after the hangup: {left:?}");
    });
}

#[test]
fn a_background_job_left_at_exit_does_not_keep_the_session_alive() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut session = Session::start(&server, None, Some(size(80, 24))).await;
        session.type_in("set -m; sleep 100 & echo bg=$!=\n").await;
        let background = session.wait_for_number("bg").await;
        session.type_in("exit 3\n").await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(3));
        let left = wait_gone(&[background], WAIT);
        assert!(left.is_empty(), "the job outlived its session");
    });
}

#[test]
fn a_login_shell_without_a_pty_reads_its_script_from_stdin() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut session = Session::start(&server, None, None).await;
        session
            .type_in("cd /tmp\npwd\nX=5\necho \"x$X\"\nexit 3\necho never\n")
            .await;
        session.send(Frame::StdinEnd { channel: CHANNEL }).await;
        assert_eq!(session.wait_exit().await, ExitStatus::Code(3));
        let out = String::from_utf8_lossy(&session.out).into_owned();
        assert!(
            out.ends_with("/tmp\nx5\n"),
            "one shell ran the script: {out:?}"
        );
    });
}

#[test]
fn a_timeout_ends_the_whole_session() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        // A job in a process group of its own, which ending the shell's
        // group would not reach.
        let mut exec = exec(
            Some("set -m; sleep 100 & echo bg=$!=; sleep 100"),
            Some(size(80, 24)),
        );
        exec.timeout = Some(Duration::from_millis(500));
        let mut session = Session::start_exec(&server, exec).await;
        let background = session.wait_for_number("bg").await;
        assert_eq!(session.wait_exit().await, ExitStatus::TimedOut);
        let left = wait_gone(&[background], WAIT);
        assert!(left.is_empty(), "the job outlived the timed-out session");
    });
}

/// `RSH_CONNECTION` says where the client is, as sshd's `SSH_CONNECTION`,
/// for plain commands as well.
#[test]
fn rsh_connection_names_both_ends() {
    for transport in [Transport::Unix, Transport::Tls] {
        let server = TestServer::start(transport);
        util::current_thread_runtime().block_on(async {
            let client = server.connect().await;
            let out = client
                .run("echo \"$RSH_CONNECTION\"")
                .await
                .expect("command runs");
            let value = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            let fields: Vec<&str> = value.split(' ').collect();
            assert_eq!(fields.len(), 4, "{transport:?}: {value:?}");
            match transport {
                Transport::Unix => {
                    assert_eq!(
                        fields[0],
                        format!(
                            "unix:uid={},pid={}",
                            nix::unistd::geteuid(),
                            std::process::id()
                        ),
                        "the peer is this test process"
                    );
                    assert_eq!(fields[2], format!("unix:{}", server.socket.display()));
                }
                Transport::Tls => {
                    // DEST is 127.0.0.1:PORT: the server's end.
                    assert_eq!(format!("{}:{}", fields[2], fields[3]), server.dest);
                    assert_eq!(fields[0], "127.0.0.1");
                    assert!(fields[1].parse::<u16>().is_ok_and(|port| port > 0));
                }
            }
        });
    }
}
