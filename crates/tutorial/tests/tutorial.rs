//! The tutorial's programs, rebuilt in the root examples/ and built here as
//! this package's binaries, driven as real processes.
//!
//! Each test starts a program (found through `CARGO_BIN_EXE_*`, see
//! `support.rs`), waits for the first line of its stdout, `listening on
//! ADDR` (the programs' documented readiness line: it names the port the OS
//! picked), and bounds every wait. Servers bind port 0 or a socket path in a
//! temporary directory, so the tests can run in parallel.
//!
//! Run with `cargo test -p rsh-tutorial`.

mod support;

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket, UnixStream};

use support::{echo, run_client, within, Proc};

/// What the echo clients are fed: empty and blank lines (the tutorial's
/// hang), a line longer than the tutorial's 1024-byte `recv`, non-ASCII text
/// (upper-cased like Python's `bytes.upper()`: ASCII only) and a last line
/// without a newline.
fn client_input() -> (Vec<u8>, Vec<u8>) {
    let long = "abc".repeat(1000);
    let input = format!("hello\n\n   \nworld wide\n{long}\nhéllo\nno newline at the end");
    let expected = format!(
        "HELLO\nWORLD WIDE\n{}\nHéLLO\nNO NEWLINE AT THE END\n",
        long.to_ascii_uppercase()
    );
    (input.into_bytes(), expected.into_bytes())
}

fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

// ---------------------------------------------------------------------------
// TCP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn tcp_replies_are_upper_cased_and_clients_are_served_at_once() -> Result<()> {
    let (mut server, addr) = Proc::server("tcp_echo_server", &["--addr", "127.0.0.1:0"]).await?;

    // Two clients connected at the same time. The tutorial's server would
    // still be inside A's communication loop and never answer B.
    let mut a = within("client A to connect", TcpStream::connect(&addr)).await??;
    let mut b = within("client B to connect", TcpStream::connect(&addr)).await??;
    assert_eq!(show(&echo(&mut b, b"from b").await?), "FROM B");
    assert_eq!(show(&echo(&mut a, b"from a").await?), "FROM A");
    assert_eq!(
        show(&echo(&mut b, b"Mixed Case 123").await?),
        "MIXED CASE 123"
    );
    assert_eq!(show(&echo(&mut a, "héllo".as_bytes()).await?), "HéLLO");

    // More than one 1024-byte read: the server echoes the byte stream whole.
    let long = b"x".repeat(5000);
    assert_eq!(echo(&mut a, &long).await?, b"X".repeat(5000));

    server.assert_running()
}

#[tokio::test]
async fn tcp_client_reset_eof_or_death_ends_only_that_client() -> Result<()> {
    let (mut server, addr) = Proc::server("tcp_echo_server", &["--addr", "127.0.0.1:0"]).await?;
    // A client that stays connected through all of it.
    let mut steady = within("steady client", TcpStream::connect(&addr)).await??;
    assert_eq!(show(&echo(&mut steady, b"before").await?), "BEFORE");

    // 1. Reset mid-conversation: SO_LINGER 0, then close, sends RST. On
    //    Windows this is the tutorial's ConnectionResetError crash.
    let mut rude = within("resetting client", TcpStream::connect(&addr)).await??;
    assert_eq!(show(&echo(&mut rude, b"bye").await?), "BYE");
    let peer = format!("peer={}", rude.local_addr()?);
    rude.set_zero_linger()?;
    drop(rude);
    server
        .wait_log("the reset", |l| l.contains(&peer) && l.contains("reset"))
        .await?;

    // 2. Plain EOF: the tutorial's `if len(data) == 0: break` on Linux.
    let mut polite = within("closing client", TcpStream::connect(&addr)).await??;
    assert_eq!(show(&echo(&mut polite, b"bye").await?), "BYE");
    let peer = format!("peer={}", polite.local_addr()?);
    drop(polite);
    server
        .wait_log("the EOF", |l| l.contains(&peer) && l.contains("EOF"))
        .await?;

    // 3. The client process killed mid-conversation (the tutorial's "stop
    //    the client by hand").
    let mut client = Proc::spawn("tcp_echo_client", &["--addr", &addr])?;
    let stdin = client.stdin.as_mut().context("client stdin")?;
    within("client stdin", stdin.write_all(b"mid conversation\n")).await??;
    assert_eq!(client.line().await?, "MID CONVERSATION");
    within("killing the client", client.child.kill()).await??;
    server
        .wait_log("the killed client's end", |l| {
            l.contains("EOF") || l.contains("reset")
        })
        .await?;

    // The server is still up and serves old and new clients alike.
    server.assert_running()?;
    assert_eq!(show(&echo(&mut steady, b"after").await?), "AFTER");
    let mut next = within("next client", TcpStream::connect(&addr)).await??;
    assert_eq!(show(&echo(&mut next, b"next").await?), "NEXT");
    Ok(())
}

#[tokio::test]
async fn tcp_echo_client_skips_empty_lines_and_exits_at_eof() -> Result<()> {
    let (_server, addr) = Proc::server("tcp_echo_server", &["--addr", "127.0.0.1:0"]).await?;
    let (input, expected) = client_input();
    let out = run_client("tcp_echo_client", &["--addr", &addr], &input).await?;
    ensure!(
        out.status.success(),
        "client failed ({}): {}",
        out.status,
        show(&out.stderr)
    );
    assert_eq!(show(&out.stdout), show(&expected));
    Ok(())
}

// ---------------------------------------------------------------------------
// Unix sockets
// ---------------------------------------------------------------------------

fn path_arg(path: &std::path::Path) -> Result<&str> {
    path.to_str().context("temporary path is not UTF-8")
}

#[tokio::test]
async fn unix_replies_are_upper_cased_and_clients_are_served_at_once() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("echo.sock");
    let (mut server, addr) =
        Proc::server("unix_echo_server", &["--addr", path_arg(&sock)?]).await?;
    assert_eq!(addr, path_arg(&sock)?);

    let mut a = within("client A to connect", UnixStream::connect(&sock)).await??;
    let mut b = within("client B to connect", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut b, b"from b").await?), "FROM B");
    assert_eq!(show(&echo(&mut a, b"from a").await?), "FROM A");
    assert_eq!(
        show(&echo(&mut b, b"Mixed Case 123").await?),
        "MIXED CASE 123"
    );
    let long = b"y".repeat(5000);
    assert_eq!(echo(&mut a, &long).await?, b"Y".repeat(5000));

    server.assert_running()
}

#[tokio::test]
async fn unix_client_reset_eof_or_death_ends_only_that_client() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("echo.sock");
    let (mut server, _) = Proc::server("unix_echo_server", &["--addr", path_arg(&sock)?]).await?;
    let me = format!("pid={}", std::process::id());
    let mut steady = within("steady client", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut steady, b"before").await?), "BEFORE");

    // 1. Reset: close while the server's reply sits unread in our buffer.
    //    Linux then hands the server ECONNRESET instead of EOF.
    let mut rude = within("resetting client", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut rude, b"one").await?), "ONE");
    within("sending", rude.write_all(b"two")).await??;
    within("the unread reply", rude.readable()).await??;
    drop(rude);
    let expected = if cfg!(target_os = "linux") {
        &["reset"][..]
    } else {
        &["reset", "EOF"][..]
    };
    server
        .wait_log("the reset", |l| {
            l.contains(&me) && expected.iter().any(|word| l.contains(word))
        })
        .await?;

    // 2. Plain EOF.
    let mut polite = within("closing client", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut polite, b"bye").await?), "BYE");
    drop(polite);
    server
        .wait_log("the EOF", |l| l.contains(&me) && l.contains("EOF"))
        .await?;

    // 3. The client process killed mid-conversation; the server names it by
    //    the pid the kernel reports for the peer.
    let mut client = Proc::spawn("unix_echo_client", &["--addr", path_arg(&sock)?])?;
    let pid = format!("pid={}", client.child.id().context("client pid")?);
    let stdin = client.stdin.as_mut().context("client stdin")?;
    within("client stdin", stdin.write_all(b"mid conversation\n")).await??;
    assert_eq!(client.line().await?, "MID CONVERSATION");
    within("killing the client", client.child.kill()).await??;
    server
        .wait_log("the killed client's end", |l| {
            l.contains(&pid) && (l.contains("EOF") || l.contains("reset"))
        })
        .await?;

    server.assert_running()?;
    assert_eq!(show(&echo(&mut steady, b"after").await?), "AFTER");
    let mut next = within("next client", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut next, b"next").await?), "NEXT");
    Ok(())
}

#[tokio::test]
async fn unix_echo_client_skips_empty_lines_and_exits_at_eof() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("echo.sock");
    let (_server, _) = Proc::server("unix_echo_server", &["--addr", path_arg(&sock)?]).await?;
    let (input, expected) = client_input();
    let out = run_client("unix_echo_client", &["--addr", path_arg(&sock)?], &input).await?;
    ensure!(
        out.status.success(),
        "client failed ({}): {}",
        out.status,
        show(&out.stderr)
    );
    assert_eq!(show(&out.stdout), show(&expected));
    Ok(())
}

#[tokio::test]
async fn unix_server_replaces_a_stale_socket_and_removes_its_own_on_ctrl_c() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("echo.sock");
    // A stale socket file: bound, then its listener gone.
    drop(std::os::unix::net::UnixListener::bind(&sock)?);
    ensure!(sock.exists(), "the stale socket file should exist");

    let (mut server, _) = Proc::server("unix_echo_server", &["--addr", path_arg(&sock)?]).await?;
    let mut client = within("client", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut client, b"fresh").await?), "FRESH");

    let pid = server.child.id().context("server pid")?;
    kill(Pid::from_raw(i32::try_from(pid)?), Signal::SIGINT)?;
    let status = server.wait().await?;
    ensure!(status.success(), "server exited with {status} on Ctrl-C");
    ensure!(!sock.exists(), "the server left its socket file behind");
    Ok(())
}

#[tokio::test]
async fn unix_server_never_removes_a_live_socket_or_a_regular_file() -> Result<()> {
    let dir = tempfile::tempdir()?;

    let sock = dir.path().join("live.sock");
    let (mut first, _) = Proc::server("unix_echo_server", &["--addr", path_arg(&sock)?]).await?;
    let mut second = Proc::spawn("unix_echo_server", &["--addr", path_arg(&sock)?])?;
    let status = second.wait().await?;
    ensure!(!status.success(), "a second server took over a live socket");
    let mut client = within("client", UnixStream::connect(&sock)).await??;
    assert_eq!(show(&echo(&mut client, b"still here").await?), "STILL HERE");
    first.assert_running()?;

    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "precious")?;
    let mut third = Proc::spawn("unix_echo_server", &["--addr", path_arg(&file)?])?;
    let status = third.wait().await?;
    ensure!(!status.success(), "the server started on a regular file");
    assert_eq!(std::fs::read_to_string(&file)?, "precious");
    Ok(())
}

// ---------------------------------------------------------------------------
// UDP
// ---------------------------------------------------------------------------

#[tokio::test]
async fn udp_answers_one_datagram_with_one_upper_cased_datagram() -> Result<()> {
    let (mut server, addr) = Proc::server("udp_echo_server", &["--addr", "127.0.0.1:0"]).await?;
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    socket.connect(&addr).await?;
    let mut buf = vec![0u8; 65536];

    // 1 byte, a typical Ethernet-sized 1500 bytes, the IPv4 maximum, and an
    // empty datagram (which UDP, unlike TCP, does deliver).
    for size in [1usize, 1500, 65507, 0] {
        let msg: Vec<u8> = (0..size).map(|i| b"abcxyz"[i % 6]).collect();
        within("sending a datagram", socket.send(&msg)).await??;
        let n = within("the reply datagram", socket.recv(&mut buf)).await??;
        assert_eq!(n, size, "reply to a {size}-byte datagram has {n} bytes");
        assert_eq!(buf[..n], msg.to_ascii_uppercase()[..]);
    }
    server.assert_running()
}

#[tokio::test]
async fn udp_echo_client_prints_replies() -> Result<()> {
    let (_server, addr) = Proc::server("udp_echo_server", &["--addr", "127.0.0.1:0"]).await?;
    let out = run_client(
        "udp_echo_client",
        &["--addr", &addr],
        b"hello\nworld wide\n",
    )
    .await?;
    ensure!(
        out.status.success(),
        "client failed ({}): {}",
        out.status,
        show(&out.stderr)
    );
    assert_eq!(show(&out.stdout), "HELLO\nWORLD WIDE\n");
    Ok(())
}

#[tokio::test]
async fn udp_echo_client_reports_a_timeout_when_no_server_listens() -> Result<()> {
    // A port nobody listens on: bind one, then let it go.
    let addr = UdpSocket::bind("127.0.0.1:0")
        .await?
        .local_addr()?
        .to_string();
    let out = run_client(
        "udp_echo_client",
        &["--addr", &addr, "--timeout-ms", "200"],
        b"anyone there?\n",
    )
    .await?;
    let stderr = show(&out.stderr);
    ensure!(!out.status.success(), "client succeeded without a server");
    ensure!(
        stderr.contains("no reply within 200 ms"),
        "client did not report the timeout: {stderr}"
    );
    assert_eq!(show(&out.stdout), "");
    Ok(())
}

// ---------------------------------------------------------------------------
// The 1024-byte limit and sticky packets
// ---------------------------------------------------------------------------

/// What `seq 1 2000` prints: 8893 bytes, far more than one 1024-byte read.
fn seq_output() -> Vec<u8> {
    (1..=2000)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

#[tokio::test]
async fn naive_shell_output_is_cut_and_bleeds_into_the_next_reply() -> Result<()> {
    let (mut server, addr) = Proc::server("naive_shell_server", &["--addr", "127.0.0.1:0"]).await?;
    let first = seq_output();
    let second = b"SECOND\n";
    let mut phone = within("connecting", TcpStream::connect(&addr)).await??;
    let mut buf = [0u8; 1024];

    // phone.send(b"seq 1 2000"); data = phone.recv(1024)
    within("sending", phone.write_all(b"seq 1 2000")).await??;
    let n = within("the first reply", phone.read(&mut buf)).await??;
    let reply1 = buf[..n].to_vec();
    ensure!(n > 0, "the server closed the connection");
    ensure!(
        first.starts_with(&reply1) && reply1.len() < first.len(),
        "the first reply should be a cut-off start of the output, got {:?}",
        show(&reply1)
    );

    // phone.send(b"echo SECOND"); data = phone.recv(1024)
    within("sending", phone.write_all(b"echo SECOND")).await??;
    let n = within("the second reply", phone.read(&mut buf)).await??;
    let reply2 = buf[..n].to_vec();
    ensure!(
        !reply2.starts_with(b"SECOND"),
        "expected the bleed, got the real answer"
    );
    let leftover = &first[reply1.len()..];
    ensure!(
        leftover.starts_with(&reply2),
        "the second reply should be the first output's leftover, got {:?}",
        show(&reply2)
    );

    // Nothing was lost, it just has no boundaries: keep reading and the byte
    // stream is the first output followed by the second.
    let mut stream = [reply1, reply2].concat();
    let want = [&first[..], &second[..]].concat();
    within("the rest of the stream", async {
        for _ in 0..want.len() {
            if stream.len() >= want.len() {
                break;
            }
            let n = phone.read(&mut buf).await?;
            if n == 0 {
                bail!("the server closed the connection");
            }
            stream.extend_from_slice(&buf[..n]);
        }
        Ok(())
    })
    .await??;
    assert_eq!(show(&stream), show(&want));
    server.assert_running()
}

// ---------------------------------------------------------------------------
// The same two commands through rsh: framed, so nothing is cut or mixed up.
// ---------------------------------------------------------------------------

#[tokio::test]
async fn rsh_keeps_each_commands_output_whole_and_apart() -> Result<()> {
    use rsh_client::{Client, ClientError, ErrorKind, ExitStatus};
    use rsh_config::Endpoint;
    use rsh_server::{Listener, Server, ServerConfig};
    use tokio_util::sync::CancellationToken;

    // An rsh server in-process, on a socket in a temporary directory.
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("rsh.sock");
    let listener = Listener::bind(&Endpoint::Unix(sock.clone()), None)?;
    let shutdown = CancellationToken::new();
    let _stop_on_failure = shutdown.clone().drop_guard();
    let server =
        tokio::spawn(Server::new(ServerConfig::default(), vec![listener]).run(shutdown.clone()));

    let client = within("connecting to rsh", Client::connect_unix(&sock)).await??;

    // The same two commands as against the naive server, on one connection.
    let first = within("seq 1 2000", client.run("seq 1 2000")).await??;
    let second = within("echo SECOND", client.run("echo SECOND")).await??;
    assert_eq!(first.status, ExitStatus::Code(0));
    assert_eq!(
        show(&first.stdout),
        show(&seq_output()),
        "first output not whole"
    );
    assert!(first.stderr.is_empty());
    assert_eq!(second.status, ExitStatus::Code(0));
    assert_eq!(
        show(&second.stdout),
        "SECOND\n",
        "outputs bled into each other"
    );

    // What the tutorial sent as one blob of stdout+stderr arrives apart,
    // with the exit status it never sent at all.
    let mixed = within(
        "a command writing to both",
        client.run("echo out; echo err >&2; exit 3"),
    )
    .await??;
    assert_eq!(show(&mixed.stdout), "out\n");
    assert_eq!(show(&mixed.stderr), "err\n");
    assert_eq!(mixed.status, ExitStatus::Code(3));

    // A command with no output: the tutorial's client waited forever for it.
    let silent = within("a silent command", client.run("true")).await??;
    assert!(silent.stdout.is_empty() && silent.stderr.is_empty());
    assert_eq!(silent.status, ExitStatus::Code(0));

    // The empty command: refused with a clear error instead of a hang.
    match within("an empty command", client.run("   ")).await? {
        Err(ClientError::Refused {
            kind: ErrorKind::BadRequest,
            message,
        }) => {
            ensure!(message.contains("empty"), "unclear refusal: {message}");
        }
        other => bail!("an empty command should be refused, got {other:?}"),
    }

    // And the connection is still good afterwards.
    let after = within("echo after", client.run("echo after")).await??;
    assert_eq!(show(&after.stdout), "after\n");

    drop(client);
    shutdown.cancel();
    within("the rsh server to stop", server).await??;
    Ok(())
}
