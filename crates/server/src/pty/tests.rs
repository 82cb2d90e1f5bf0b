//! The pty mechanism against real shells on real pseudo-terminals.

use super::*;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::{timeout, Instant};

/// Upper bound for any one wait in these tests; they normally take
/// milliseconds.
const LIMIT: Duration = Duration::from_secs(30);

fn spec(program: Program) -> PtySpec {
    PtySpec {
        program,
        term: b"xterm-256color".to_vec(),
        size: PtySize {
            cols: 100,
            rows: 30,
            ..PtySize::default()
        },
        cwd: None,
        env: Vec::new(),
        connection: ConnectionInfo::Tcp {
            client: SocketAddr::from(([127, 0, 0, 1], 50122)),
            server: SocketAddr::from(([127, 0, 0, 2], 7022)),
        },
    }
}

fn command(line: &str) -> PtySpec {
    spec(Program::Command(line.as_bytes().to_vec()))
}

/// A started session: its leader (never waited for by the module) and its
/// terminal.
struct Session {
    child: std::process::Child,
    terminal: Terminal,
}

async fn start(spec: &PtySpec) -> Session {
    handle_terminal_signals();
    match spawn(spec, Path::new("/bin/sh")).await {
        Ok((child, terminal)) => Session { child, terminal },
        Err(err) => panic!("cannot start a pty session: {err}"),
    }
}

/// Handles SIGHUP, SIGINT and SIGQUIT in this process, as the daemon does
/// (`crate::reload`), so that the sessions started here get their default
/// action: exec resets a handled signal, but an ignored one stays ignored,
/// and a test runner started under `nohup` or in the background ignores
/// them (a shell ignoring SIGHUP would outlive its hangup).
fn handle_terminal_signals() {
    use std::sync::OnceLock;
    use tokio::signal::unix::{signal, SignalKind};
    static HANDLED: OnceLock<()> = OnceLock::new();
    HANDLED.get_or_init(|| {
        for kind in [
            SignalKind::hangup(),
            SignalKind::interrupt(),
            SignalKind::quit(),
        ] {
            // The handler stays installed for the process's life once
            // registered, whether or not the stream is kept.
            let _ = signal(kind);
        }
    });
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// Reads until `needle` has been seen (returns true) or end of output.
async fn read_until(reader: &mut PtyReader, out: &mut Vec<u8>, needle: &[u8]) -> bool {
    let deadline = Instant::now() + LIMIT;
    let mut block = vec![0; 64 * 1024];
    while !contains(out, needle) {
        let n = match tokio::time::timeout_at(deadline, reader.read(&mut block)).await {
            Ok(Ok(n)) => n,
            Ok(Err(err)) => panic!("reading the pty failed: {err}"),
            Err(_) => panic!(
                "no {:?} within {LIMIT:?}; got {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(out)
            ),
        };
        if n == 0 {
            return false;
        }
        out.extend_from_slice(&block[..n]);
    }
    true
}

/// Reads to end of output (EIO, seen as end of file), bounded.
async fn read_to_eof(reader: &mut PtyReader, out: &mut Vec<u8>) {
    match timeout(LIMIT, reader.read_to_end(out)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => panic!("reading the pty failed (EIO must be end of file): {err}"),
        Err(_) => panic!(
            "no end of output within {LIMIT:?}; got {:?}",
            String::from_utf8_lossy(out)
        ),
    }
}

/// The leader's exit status, polled without blocking the runtime (bounded).
async fn exit_status(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + LIMIT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) => {}
            Err(err) => panic!("cannot wait for the session leader: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "the session leader did not exit within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) for an orphan adopted by this process (a subreaper) to
/// end, and reaps it; how it ended.
async fn reap_orphan(pid: u32) -> WaitStatus {
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid"));
    let deadline = Instant::now() + LIMIT;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status) => return status,
            Err(err) => panic!("{pid} is not an adopted child: {err}"),
        }
        assert!(
            Instant::now() < deadline,
            "{pid} still running {LIMIT:?} after the session ended"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Output lines with the terminal's CR LF turned back into LF.
fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).replace("\r\n", "\n")
}

#[tokio::test]
async fn tty_names_the_pts_device_it_runs_on() {
    let mut session = start(&command(r#"tty; echo "RSH_TTY=$RSH_TTY""#)).await;
    let mut out = Vec::new();
    read_to_eof(&mut session.terminal.reader, &mut out).await;
    let out = text(&out);
    let tty = session.terminal.tty.display().to_string();
    assert!(tty.starts_with("/dev/pts/"), "{tty}");
    assert!(out.contains(&format!("{tty}\n")), "{out:?}");
    assert!(out.contains(&format!("RSH_TTY={tty}\n")), "{out:?}");
    assert!(exit_status(&mut session.child).await.success());
}

#[tokio::test]
async fn stty_size_shows_the_initial_size_and_winch_brings_the_new_one() {
    // The trap is set before "ready", so no resize can come before it; the
    // loop is bounded (30 s) in case the SIGWINCH never comes.
    let mut session = start(&command(
        "stty size; trap 'stty size; exit 0' WINCH; echo ready; \
         i=0; while [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; exit 3",
    ))
    .await;
    let mut out = Vec::new();
    assert!(read_until(&mut session.terminal.reader, &mut out, b"ready\r\n").await);
    assert!(text(&out).starts_with("30 100\n"), "{:?}", text(&out));

    let new = PtySize {
        cols: 120,
        rows: 40,
        pixel_width: 960,
        pixel_height: 640,
    };
    session.terminal.control.resize(new).expect("resize");
    assert_eq!(session.terminal.control.size().ok(), Some(new));
    read_to_eof(&mut session.terminal.reader, &mut out).await;
    assert!(text(&out).ends_with("ready\n40 120\n"), "{:?}", text(&out));
    assert_eq!(exit_status(&mut session.child).await.code(), Some(0));
}

#[tokio::test]
async fn two_megabytes_of_output_arrive_whole_before_the_end() {
    let lines = 330_000;
    let mut session = start(&command(&format!("seq 1 {lines}"))).await;
    let mut out = Vec::new();
    read_to_eof(&mut session.terminal.reader, &mut out).await;
    let expected: String = (1..=lines).map(|n| format!("{n}\n")).collect();
    assert!(expected.len() > 2_000_000);
    let got = text(&out);
    assert_eq!(got.len(), expected.len());
    assert!(got == expected, "output differs from seq's");
    assert!(exit_status(&mut session.child).await.success());
}

#[tokio::test]
async fn a_line_written_to_the_master_is_read_on_the_terminal() {
    let mut session = start(&command(r#"read line; echo "got:$line""#)).await;
    session
        .terminal
        .writer
        .write_all(b"hello world\n")
        .await
        .expect("write to the master");
    let mut out = Vec::new();
    read_to_eof(&mut session.terminal.reader, &mut out).await;
    let out = text(&out);
    // The terminal echoes what is typed, then the command answers.
    assert!(out.contains("hello world\ngot:hello world\n"), "{out:?}");
    assert!(exit_status(&mut session.child).await.success());
}

#[tokio::test]
async fn the_environment_says_where_the_session_comes_from() {
    let mut spec = command(r#"echo "T=$TERM C=$RSH_CONNECTION X=$X U=$USER L=$LOGNAME H=$HOME""#);
    // TERM is the pty request's, whatever the request's variables say.
    spec.env = vec![
        (b"X".to_vec(), b"from the client".to_vec()),
        (b"TERM".to_vec(), b"bogus".to_vec()),
    ];
    let mut session = start(&spec).await;
    let mut out = Vec::new();
    read_to_eof(&mut session.terminal.reader, &mut out).await;
    let account = account();
    let name = account.name.to_string_lossy();
    let expected = format!(
        "T=xterm-256color C=127.0.0.1 50122 127.0.0.2 7022 X=from the client U={name} L={name} H={}\n",
        account.home.display()
    );
    assert!(text(&out).contains(&expected), "{:?}", text(&out));
    assert!(exit_status(&mut session.child).await.success());
}

#[tokio::test]
async fn the_login_shell_is_the_passwd_shell_as_a_login_shell_at_home() {
    let uid = nix::unistd::geteuid();
    let Ok(Some(user)) = nix::unistd::User::from_uid(uid) else {
        // No passwd entry: nothing to compare with.
        return;
    };
    let shell = if user.shell.as_os_str().is_empty() {
        PathBuf::from("/bin/sh")
    } else {
        user.shell.clone()
    };
    let mut session = start(&spec(Program::LoginShell)).await;
    // Typed into the shell: the echo of the typed line shows `$0` and
    // `$(pwd)` unexpanded, so only the answers match below.
    session
        .terminal
        .writer
        .write_all(b"echo \"A=$0\"; echo \"P=$(pwd)\"; exit\n")
        .await
        .expect("write to the master");
    let mut out = Vec::new();
    read_to_eof(&mut session.terminal.reader, &mut out).await;
    let out = text(&out);
    let name = shell
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(out.contains(&format!("A=-{name}\n")), "{out:?}");
    // `pwd` may resolve symbolic links in the home's path.
    let home = std::fs::canonicalize(&user.dir).unwrap_or(user.dir.clone());
    assert!(
        out.contains(&format!("P={}\n", user.dir.display()))
            || out.contains(&format!("P={}\n", home.display())),
        "{out:?}"
    );
    assert!(exit_status(&mut session.child).await.success());
}

#[tokio::test]
async fn hangup_ends_the_whole_session_background_jobs_included() {
    // Orphans come to this process, so the test can see how they ended.
    assert!(crate::process_group::become_subreaper());
    // Job control on: the background sleep gets a process group of its own,
    // which neither the hangup's SIGHUP to the foreground group nor a
    // killpg of the shell's group reaches; dash does not pass SIGHUP on.
    let mut session = start(&command(r#"set -m; sleep 100 & echo "bg=$!"; sleep 100"#)).await;
    let sid = session.terminal.control.sid();
    let background = background_pid(&mut session).await;
    let member = session::members(sid)
        .into_iter()
        .find(|member| member.pid == background);
    let member = member.expect("the background job is in the session");
    assert_ne!(member.pgrp, sid, "the job has a process group of its own");

    let Session {
        mut child,
        terminal,
    } = session;
    let Terminal {
        reader,
        writer,
        control,
        ..
    } = terminal;
    drop(reader);
    drop(writer);
    hang_up(control, Duration::from_millis(500)).await;

    assert!(session::session_members(sid).is_empty());
    // The hangup ended the shell: it died of SIGHUP, or (if its foreground
    // job died first and it was already on its way out) exited with the
    // job's 128+SIGHUP. The job, in no foreground, ended by the sweep's
    // SIGTERM.
    let status = exit_status(&mut child).await;
    assert!(
        status.signal() == Some(Signal::SIGHUP as i32) || status.code() == Some(129),
        "{status:?}"
    );
    assert_eq!(
        reap_orphan(background).await,
        WaitStatus::Signaled(
            Pid::from_raw(i32::try_from(background).expect("pid")),
            Signal::SIGTERM,
            false
        )
    );
}

/// Reads the `bg=PID` line the session prints first.
async fn background_pid(session: &mut Session) -> u32 {
    let mut out = Vec::new();
    assert!(read_until(&mut session.terminal.reader, &mut out, b"\r\n").await);
    text(&out)
        .lines()
        .find_map(|line| line.strip_prefix("bg="))
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no bg= line in {:?}", text(&out)))
}

#[tokio::test]
async fn a_job_left_running_at_exit_is_swept_and_the_output_then_ends() {
    assert!(crate::process_group::become_subreaper());
    // The shell exits at once; its background job (own process group, so
    // the kernel's SIGHUP to the foreground group at the leader's exit does
    // not reach it) still holds the terminal open.
    let mut session = start(&command(r#"set -m; sleep 100 & echo "bg=$!""#)).await;
    let sid = session.terminal.control.sid();
    let background = background_pid(&mut session).await;
    assert!(exit_status(&mut session.child).await.success());
    assert!(session::session_members(sid).contains(&background));

    sweep_after_exit(session.terminal.control, Duration::from_millis(500)).await;
    assert!(session::session_members(sid).is_empty());
    assert!(matches!(
        reap_orphan(background).await,
        WaitStatus::Signaled(_, Signal::SIGTERM, _)
    ));
    // The last slave fd went with the job: end of output.
    let mut out = Vec::new();
    read_to_eof(&mut session.terminal.reader, &mut out).await;
}

#[tokio::test]
async fn a_directory_that_is_not_there_is_a_clear_error() {
    let mut spec = command("true");
    spec.cwd = Some(b"/nonexistent/rsh-test".to_vec());
    match spawn(&spec, Path::new("/bin/sh")).await {
        Ok(_) => panic!("started in a directory that is not there"),
        Err(err) => {
            let message = err.to_string();
            assert!(
                message.starts_with("cannot run /bin/sh in /nonexistent/rsh-test: "),
                "{message}"
            );
        }
    }
}
