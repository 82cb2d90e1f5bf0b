//! What the server does with the processes and pipes of commands, against the
//! real `rsh-server` binary: every child reaped (adopted orphans included),
//! any output window from one byte up usable, stdin bounded by the server-wide
//! budget. The flow-control tests speak the protocol directly (rsh-proto's
//! codec over the Unix socket), as a client written from docs/PROTOCOL.md would.

use crate::util::{self, TestServer, Transport, WAIT};
use futures::{SinkExt, StreamExt};
use rsh_proto::{Codec, Exec, ExitStatus, Frame};
use std::time::{Duration, Instant};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

/// A protocol-level client on the server's Unix socket.
struct Raw {
    framed: Framed<UnixStream, Codec>,
}

impl Raw {
    async fn connect(server: &TestServer) -> Raw {
        Raw::connect_to(&server.socket).await
    }

    /// A raw connection to the server listening on the Unix socket `socket`.
    async fn connect_to(socket: &std::path::Path) -> Raw {
        let mut stream = tokio::time::timeout(WAIT, UnixStream::connect(socket))
            .await
            .expect("connect in time")
            .expect("connect");
        let version = rsh_proto::io::greet(&mut stream, WAIT)
            .await
            .expect("greeting");
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

    /// The next frame; panics on end of stream or after [`WAIT`].
    async fn next(&mut self) -> Frame {
        self.next_within(WAIT)
            .await
            .expect("a frame from the server in time")
    }

    async fn next_within(&mut self, limit: Duration) -> Option<Frame> {
        match tokio::time::timeout(limit, self.framed.next()).await {
            Err(_) => None,
            Ok(Some(Ok(frame))) => Some(frame),
            Ok(Some(Err(err))) => panic!("bad frame from the server: {err}"),
            Ok(None) => panic!("server closed the connection"),
        }
    }

    async fn exec(&mut self, channel: u32, window: u32, command: &str) {
        self.send(Frame::Exec(Exec {
            channel,
            window,
            command: command.as_bytes().to_vec(),
            ..Exec::default()
        }))
        .await;
    }
}

// ---------------------------------------------------------------------------
// Defect 2: zombies
// ---------------------------------------------------------------------------

/// Zombie processes whose parent is `parent`.
fn zombie_children(parent: u32) -> Vec<u32> {
    rsh_sys::ProcStat::all(usize::MAX)
        .into_iter()
        .filter(|stat| stat.is_zombie() && stat.ppid == parent)
        .map(|stat| stat.pid)
        .collect()
}

/// Processes that leave the command's group (`setsid -f`) or double-fork
/// are re-parented to the server (a subreaper); it must reap them all.
#[test]
fn processes_that_leave_their_group_are_reaped() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let client = server.connect().await;
        for i in 0..50 {
            for command in [
                "setsid -f true",
                "sh -c '(sleep 0.2 </dev/null >/dev/null 2>&1 &) &'",
            ] {
                let output = tokio::time::timeout(WAIT, client.run(command))
                    .await
                    .expect("command in time")
                    .expect("command runs");
                assert_eq!(output.status, ExitStatus::Code(0), "{command} (round {i})");
            }
        }
    });
    // The last orphans may still be running (sleep 0.2); bounded wait for
    // every one of them to be reaped.
    let deadline = Instant::now() + WAIT;
    let mut zombies = zombie_children(server.pid());
    while !zombies.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        zombies = zombie_children(server.pid());
    }
    assert!(
        zombies.is_empty(),
        "{} zombie children left under the server: {zombies:?}",
        zombies.len()
    );
}

// ---------------------------------------------------------------------------
// Defect 5: any output window works
// ---------------------------------------------------------------------------

/// How the test client gives output credit back.
#[derive(Debug, Clone, Copy)]
enum TopUp {
    /// After every data frame, exactly its length.
    EachFrame,
    /// Once at least a quarter of the window is consumed, exactly the
    /// consumed amount (the reference client's policy).
    Quarter,
}

#[derive(Debug, Default)]
struct Received {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<ExitStatus>,
}

/// Runs `command` on `channel` with an output window of `window`, consuming
/// and granting back per `top_up`, after first not reading for `stall`.
/// Checks that the server never sends beyond the window.
async fn run_with_window(
    raw: &mut Raw,
    channel: u32,
    command: &str,
    window: u32,
    top_up: TopUp,
    stall: Duration,
) -> Received {
    raw.exec(channel, window, command).await;
    raw.send(Frame::StdinEnd { channel }).await;
    if !stall.is_zero() {
        tokio::time::sleep(stall).await;
    }
    let mut credit = u64::from(window);
    let mut consumed = 0u64;
    let mut received = Received::default();
    loop {
        let (data, to_stdout) = match raw.next().await {
            Frame::Stdout { channel: c, data } if c == channel => (data, true),
            Frame::Stderr { channel: c, data } if c == channel => (data, false),
            Frame::Exit { channel: c, status } if c == channel => {
                received.status = Some(status);
                return received;
            }
            Frame::WindowAdjust { .. } => continue,
            other => panic!("unexpected frame {other:?}"),
        };
        let len = data.len() as u64;
        assert!(
            len <= credit,
            "server sent {len} bytes with {credit} of credit (window {window})"
        );
        credit -= len;
        if to_stdout {
            received.stdout.extend_from_slice(&data);
        } else {
            received.stderr.extend_from_slice(&data);
        }
        consumed += len;
        let grant = match top_up {
            TopUp::EachFrame => true,
            TopUp::Quarter => consumed >= (u64::from(window) / 4).max(1),
        };
        if grant && consumed > 0 {
            let increment = u32::try_from(consumed).expect("consumed fits u32");
            raw.send(Frame::WindowAdjust { channel, increment }).await;
            credit += consumed;
            consumed = 0;
        }
    }
}

/// A command writing only to stderr gets all its output through windows of
/// 1 byte, 100 bytes, 64 KiB and 256 KiB. Before the fix the idle stdout
/// reader held the whole window, and a command writing more than its pipe
/// holds never delivered a byte.
#[test]
fn stderr_only_output_flows_through_any_window() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        let cases: [(u32, usize, TopUp); 4] = [
            (1, 5_000, TopUp::EachFrame),
            (100, 200_000, TopUp::EachFrame),
            (64 * 1024, 1_000_000, TopUp::Quarter),
            (256 * 1024, 1_000_000, TopUp::Quarter),
        ];
        for (i, (window, len, top_up)) in cases.into_iter().enumerate() {
            let channel = i as u32 + 1;
            let command = format!("head -c {len} /dev/zero | tr '\\0' e >&2");
            let got =
                run_with_window(&mut raw, channel, &command, window, top_up, Duration::ZERO).await;
            assert_eq!(got.status, Some(ExitStatus::Code(0)), "window {window}");
            assert!(got.stdout.is_empty(), "window {window}: stdout not empty");
            assert_eq!(got.stderr.len(), len, "window {window}: stderr length");
            assert!(got.stderr.iter().all(|&b| b == b'e'), "window {window}");
        }
    });
}

/// Both streams, a 64 KiB window, and a reader that does not read at first
/// and then grants back exactly what it consumed: everything arrives.
#[test]
fn stalled_then_resumed_reader_with_a_small_window_finishes() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        let command = "head -c 1000000 /dev/zero | tr '\\0' o; \
                       head -c 1000000 /dev/zero | tr '\\0' e >&2; \
                       head -c 300000 /dev/zero | tr '\\0' o";
        for (channel, stall) in [(1, Duration::from_millis(300)), (2, Duration::ZERO)] {
            let got =
                run_with_window(&mut raw, channel, command, 64 * 1024, TopUp::Quarter, stall).await;
            assert_eq!(got.status, Some(ExitStatus::Code(0)));
            assert_eq!(got.stdout.len(), 1_300_000);
            assert_eq!(got.stderr.len(), 1_000_000);
            assert!(got.stdout.iter().all(|&b| b == b'o'));
            assert!(got.stderr.iter().all(|&b| b == b'e'));
        }
    });
}

// ---------------------------------------------------------------------------
// Defect 9: stdin bounded by a server-wide budget
// ---------------------------------------------------------------------------

const BUDGET: u64 = 256 * 1024;
/// Below the server's pipe-enlarging threshold, so each command's stdin
/// pipe stays at Linux's default 64 KiB.
const STDIN_FRAME: u64 = 16 * 1024;
const PIPE: u64 = 64 * 1024;
/// What each channel may hold beyond the budget (PROTOCOL.md §7, the
/// server's `budget::FLOOR`), so that no channel waits for another's bytes.
const FLOOR: u64 = 32 * 1024;

/// Sixteen commands that never read their stdin, a client that sends every
/// byte of stdin window it is granted: the server cannot take in more than
/// the budget plus what the commands' pipes hold, plus each channel's floor.
/// Before the budget each
/// channel got its own 1 MiB, 16 MiB in all.
#[test]
fn unread_stdin_is_bounded_by_the_server_budget() {
    let server = TestServer::start_with(Transport::Unix, &["--stdin-budget", "262144"]);
    let marks = tempfile::tempdir().expect("temp dir");
    util::current_thread_runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        const N: u32 = 16;
        let mut credit = vec![0u64; N as usize + 1];
        let mut sent = 0u64;
        for channel in 1..=N {
            let command = format!(
                "touch {}/started.{channel}; exec sleep 60",
                marks.path().display()
            );
            raw.exec(channel, 1024 * 1024, &command).await;
        }
        // Every command has been spawned (so had its chance at a grant).
        let deadline = Instant::now() + WAIT;
        while (1..=N).any(|c| !marks.path().join(format!("started.{c}")).exists()) {
            assert!(Instant::now() < deadline, "commands did not start");
            while let Some(frame) = raw.next_within(Duration::from_millis(20)).await {
                note_grant(&frame, &mut credit);
            }
        }
        // Send all credit; then a marker command's round trip shows whether
        // more was granted meanwhile. Stop once a round brings nothing new.
        let mut marker = 100;
        for _round in 0..200 {
            for channel in 1..=N {
                while credit[channel as usize] > 0 {
                    let len = credit[channel as usize].min(STDIN_FRAME);
                    credit[channel as usize] -= len;
                    sent += len;
                    let data = bytes::Bytes::from(vec![b'x'; len as usize]);
                    raw.send(Frame::Stdin { channel, data }).await;
                }
            }
            assert!(
                sent <= BUDGET + u64::from(N) * (PIPE + FLOOR),
                "the server took {sent} bytes of unread stdin; budget {BUDGET}"
            );
            marker += 1;
            raw.exec(marker, 1024, "true").await;
            raw.send(Frame::StdinEnd { channel: marker }).await;
            let mut granted = false;
            loop {
                match raw.next().await {
                    Frame::Exit { channel, .. } if channel == marker => break,
                    frame => granted |= note_grant(&frame, &mut credit),
                }
            }
            if !granted && credit.iter().all(|&c| c == 0) {
                break;
            }
        }
        assert!(sent >= BUDGET, "only {sent} bytes of stdin were granted");
        drop(raw);

        // Once those channels are gone, their share of the budget is back:
        // a new command is granted the whole budget (bounded retries while
        // the old commands are being ended).
        let mut raw = Raw::connect(&server).await;
        let mut whole = false;
        for channel in 1..=200u32 {
            raw.exec(channel, 1024, "cat >/dev/null").await;
            let grant = loop {
                match raw.next().await {
                    Frame::WindowAdjust {
                        channel: c,
                        increment,
                    } if c == channel => break u64::from(increment),
                    // Earlier probes ending, or topped up before their end.
                    Frame::Exit { .. } | Frame::WindowAdjust { .. } => continue,
                    other => panic!("unexpected frame {other:?}"),
                }
            };
            raw.send(Frame::StdinEnd { channel }).await;
            if grant == BUDGET {
                whole = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(whole, "the budget never came back whole");
    });
}

/// Adds a stdin grant to the channel's credit; `true` if it was one.
fn note_grant(frame: &Frame, credit: &mut [u64]) -> bool {
    match frame {
        Frame::WindowAdjust { channel, increment } => {
            if let Some(c) = credit.get_mut(*channel as usize) {
                *c += u64::from(*increment);
                true
            } else {
                false
            }
        }
        Frame::Exit { channel, status } => panic!("channel {channel} ended early: {status:?}"),
        Frame::Error {
            channel, message, ..
        } => panic!("error on channel {channel}: {message}"),
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The channel table: an id is free as soon as its Exit is seen
// ---------------------------------------------------------------------------

/// A client may reuse a channel id the moment it reads the Exit (§6): the
/// server frees the id before it queues the Exit, so the next Exec on the
/// same id is never taken for an Exec on a running channel.
#[test]
fn a_channel_id_is_free_as_soon_as_its_exit_is_seen() {
    let server = TestServer::start(Transport::Unix);
    util::current_thread_runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        for round in 0..200 {
            raw.exec(1, 1024, "true").await;
            raw.send(Frame::StdinEnd { channel: 1 }).await;
            loop {
                match raw.next().await {
                    Frame::Exit { channel: 1, status } => {
                        assert_eq!(status, ExitStatus::Code(0), "round {round}");
                        break;
                    }
                    Frame::WindowAdjust { .. } => {}
                    other => panic!("round {round}: unexpected frame {other:?}"),
                }
            }
        }
    });
}

/// Runs `command` on `channel` with stdin ended at once; its stdout and
/// status (other frames skipped).
async fn run_collecting(raw: &mut Raw, channel: u32, command: &str) -> (String, ExitStatus) {
    raw.exec(channel, 1 << 20, command).await;
    raw.send(Frame::StdinEnd { channel }).await;
    let mut stdout = Vec::new();
    loop {
        match raw.next().await {
            Frame::Stdout { channel: c, data } if c == channel => stdout.extend_from_slice(&data),
            Frame::Exit { channel: c, status } if c == channel => {
                return (String::from_utf8_lossy(&stdout).into_owned(), status)
            }
            _ => {}
        }
    }
}

/// The first line of stdout from `channel` (other frames skipped).
async fn first_line(raw: &mut Raw, channel: u32) -> String {
    let mut stdout = Vec::new();
    loop {
        if let Frame::Stdout { channel: c, data } = raw.next().await {
            if c == channel {
                stdout.extend_from_slice(&data);
                if let Some(end) = stdout.iter().position(|&b| b == b'\n') {
                    return String::from_utf8_lossy(&stdout[..end]).into_owned();
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Issue 18, point 1: a recycled pid
// ---------------------------------------------------------------------------

/// Whether this test process may make pid namespaces and set the next pid
/// in them (root, or CAP_SYS_ADMIN); marks the test skipped if not.
fn private_pid_namespaces() -> bool {
    if !util::tools_present(&["unshare", "setsid"]) {
        return false;
    }
    let works = std::process::Command::new("unshare")
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--kill-child",
            "sh",
            "-c",
        ])
        .arg("echo 100 > /proc/sys/kernel/ns_last_pid && exec true")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !works {
        util::skip("needs root for a private pid namespace and ns_last_pid");
    }
    works
}

/// `rsh-server` as pid 1 of a pid namespace of its own (with its own
/// `/proc`), listening on `DIR/rsh.sock`; killed with its namespace on drop.
struct InPidNamespace {
    child: std::process::Child,
    socket: std::path::PathBuf,
}

impl InPidNamespace {
    fn start(wrapper: &std::path::Path, dir: &std::path::Path) -> InPidNamespace {
        let home = dir.join("home");
        std::fs::create_dir(&home).expect("RSH_HOME");
        let socket = home.join("rsh.sock");
        let ready = home.join("ready");
        let child = std::process::Command::new(wrapper)
            .arg("--listen")
            .arg(format!("unix:{}", socket.display()))
            .arg("--ready-file")
            .arg(&ready)
            .args(["--kill-grace", "0.5", "--linger", "600"])
            .env("RSH_HOME", &home)
            .env("HOME", &home)
            .env_remove("SHELL")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start rsh-server in a pid namespace");
        let mut server = InPidNamespace { child, socket };
        // Its ready file names pid 1 (its pid in its namespace), so the
        // harness's check of the pid does not apply: bounded poll.
        let deadline = Instant::now() + WAIT;
        while rsh_config::ReadyFile::read(&ready).is_err() {
            assert!(
                server.child.try_wait().ok().flatten().is_none(),
                "rsh-server exited before it was ready"
            );
            assert!(
                Instant::now() < deadline,
                "rsh-server was not ready in time"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        server
    }
}

impl Drop for InPidNamespace {
    fn drop(&mut self) {
        // unshare --kill-child takes the server, and with it the namespace.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A command's shell exits while a `setsid` child holds its output open;
/// then a process of someone else's takes over the shell's pid and makes
/// itself a group leader (forced here with `ns_last_pid`, in a private pid
/// namespace the server runs in). Neither a Signal frame for the command nor
/// the end of the command may reach it: the server signals no process group
/// whose leader it has reaped (it keeps the leader a zombie, so the pid
/// cannot be had while the command may still signal it).
#[test]
fn a_recycled_leader_pid_is_never_signalled() {
    if !private_pid_namespaces() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    // The server, as pid 1 of a namespace of its own, with /proc to match.
    let wrapper = dir.path().join("rsh-server-in-pid-ns");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare --pid --fork --mount-proc --kill-child {} \"$@\"\n",
            util::server_bin().display()
        ),
    )
    .expect("write the wrapper");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .expect("chmod the wrapper");
    let server = InPidNamespace::start(&wrapper, dir.path());
    let fifo = dir.path().join("release");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).expect("mkfifo");

    let (impostor, leader) = util::current_thread_runtime().block_on(async {
        let mut raw = Raw::connect_to(&server.socket).await;
        // The shell prints its pid and exits; the setsid child keeps stdout.
        raw.exec(
            1,
            1 << 20,
            &format!("echo $$; setsid sh -c 'read x < {}' &", fifo.display()),
        )
        .await;
        raw.send(Frame::StdinEnd { channel: 1 }).await;
        let leader: u32 = first_line(&mut raw, 1).await.parse().expect("a pid");
        // Once the shell is gone (reaped, with today's bug: bounded spin),
        // the next pid handed out is the shell's: a setsid process, leader of
        // a group with the old shell's pid as its id. The command waits
        // (bounded) until it has its own session, so the sweep of this
        // command's own group cannot take it.
        let (out, status) = run_collecting(
            &mut raw,
            2,
            &format!(
                "i=0; while [ -e /proc/{leader} ] && [ $i -lt 200000 ]; do i=$((i+1)); done; \
                 echo {} > /proc/sys/kernel/ns_last_pid; \
                 setsid sleep 300 </dev/null >/dev/null 2>&1 & imp=$!; \
                 i=0; while [ $i -lt 200000 ]; do \
                   read -r stat < /proc/$imp/stat; set -- $stat; \
                   [ \"$6\" = \"$imp\" ] && break; i=$((i+1)); done; \
                 echo $imp",
                leader - 1
            ),
        )
        .await;
        assert_eq!(status, ExitStatus::Code(0), "the impostor starts: {out}");
        let impostor: u32 = out.trim().parse().expect("the impostor's pid");
        // A signal for the command, then its end: the setsid child is told to
        // go, the output ends, the command is over and what is left of its
        // group is swept.
        raw.send(Frame::Signal {
            channel: 1,
            signal: rsh_proto::signal::TERM,
        })
        .await;
        std::fs::write(&fifo, b"go\n").expect("release the lingering child");
        loop {
            if let Frame::Exit { channel: 1, .. } = raw.next().await {
                break;
            }
        }
        let (stat, _) = run_collecting(
            &mut raw,
            3,
            &format!("cat /proc/{impostor}/stat 2>/dev/null; kill {impostor} 2>/dev/null"),
        )
        .await;
        let alive =
            rsh_sys::ProcStat::parse(impostor, stat.trim()).is_some_and(|stat| !stat.is_zombie());
        assert!(
            alive,
            "a process with the pid {impostor} (the command's shell was {leader}) was killed \
             by the command's end"
        );
        (impostor, leader)
    });
    eprintln!("the impostor got pid {impostor}; the command's shell had {leader}");
}

// ---------------------------------------------------------------------------
// Issue 18, point 2: a vanished client is no end of input
// ---------------------------------------------------------------------------

/// A client that vanishes mid-upload (its connection cut with no StdinEnd)
/// must never look like end of input to the command: `cat > FILE` must not
/// see EOF and go on as if the upload were complete. The command is ended
/// first (SIGTERM, ignored here, then SIGKILL), its stdin closed after.
#[test]
fn a_vanished_client_is_never_end_of_input() {
    let server = TestServer::start(Transport::Unix);
    let upload = server.home.path().join("upload");
    let marker = server.home.path().join("complete");
    util::current_thread_runtime().block_on(async {
        let mut raw = Raw::connect(&server).await;
        raw.exec(
            1,
            1 << 20,
            &format!(
                "trap '' TERM; echo started; cat > {}; echo complete > {}",
                upload.display(),
                marker.display()
            ),
        )
        .await;
        // Stdin needs window: wait for the grant and the command's start.
        let (mut started, mut granted) = (false, false);
        while !(started && granted) {
            match raw.next().await {
                Frame::WindowAdjust { channel: 1, .. } => granted = true,
                Frame::Stdout { channel: 1, data } => {
                    assert_eq!(&data[..], b"started\n");
                    started = true;
                }
                other => panic!("unexpected frame {other:?}"),
            }
        }
        raw.send(Frame::Stdin {
            channel: 1,
            data: bytes::Bytes::from_static(b"part of the upload\n"),
        })
        .await;
        // Bounded wait for the part to reach the file.
        let deadline = Instant::now() + WAIT;
        while std::fs::read(&upload).map_or(0, |data| data.len()) < 19 {
            assert!(
                Instant::now() < deadline,
                "the upload never reached the file"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // The client vanishes: no StdinEnd, no goodbye.
        drop(raw);
    });
    server.wait_for_event(|event| event.message() == "command ended");
    assert!(
        !marker.exists(),
        "the command saw end of input from a client that vanished mid-upload"
    );
    assert_eq!(
        std::fs::read(&upload).expect("the upload"),
        b"part of the upload\n"
    );
}
