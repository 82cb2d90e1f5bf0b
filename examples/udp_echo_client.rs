//! The tutorial's UDP echo client, fixed.
//!
//! Reads lines from stdin and sends each one (stripped, no newline) as one
//! datagram with `send_to`, like the Python client's `sendto`, then waits for
//! the upper-cased reply with `recv_from`.
//!
//! What the Python version left broken, and what this one does instead:
//!
//! * `recvfrom()` waited forever. UDP may drop a datagram (or there may be no
//!   server at all), and then no reply ever comes. Here each wait has a
//!   timeout (`--timeout-ms`, default 1000) and the client says so when it
//!   expires; the exit status is 1 if any datagram went unanswered.
//! * Any datagram from anyone was taken as the reply. Here only datagrams from
//!   the server's address count, and a reply that arrives after its timeout
//!   is reported as late instead of being mistaken for the next reply.
//!
//! An empty line is sent as an empty datagram: unlike TCP, UDP delivers it,
//! and the server answers with an empty datagram, so there is no hang.
//!
//! ```text
//! cargo run --example udp_echo_client -- --addr 127.0.0.1:8080 --timeout-ms 1000
//! ```

use std::io::IsTerminal;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UdpSocket;

/// Upper-casing UDP echo client (the tutorial's UDP client, fixed).
///
/// Sends each line of stdin as one datagram and prints the reply. Waits at
/// most --timeout-ms for each reply and says so when none comes (UDP may
/// drop datagrams). Exits 1 if any datagram went unanswered.
#[derive(Debug, Parser)]
struct Args {
    /// Address of the echo server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// How long to wait for each reply, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
}

const BUF_SIZE: usize = 64 * 1024;
/// At most this many stale datagrams are drained before each request.
const MAX_DRAIN: usize = 1024;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let timeout = Duration::from_millis(args.timeout_ms);
    let server = tokio::net::lookup_host(&args.addr)
        .await
        .with_context(|| format!("cannot resolve {}", args.addr))?
        .next()
        .with_context(|| format!("{} resolves to no address", args.addr))?;
    let local: SocketAddr = if server.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(local)
        .await
        .context("cannot bind a local UDP socket")?;

    let interactive = std::io::stdin().is_terminal();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdout = tokio::io::stdout();
    let mut line = Vec::new();
    let mut buf = vec![0u8; BUF_SIZE];
    let (mut sent, mut unanswered) = (0usize, 0usize);

    loop {
        if interactive {
            eprint!("> ");
        }
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .await
            .context("cannot read stdin")?
            == 0
        {
            break;
        }
        let msg = line.trim_ascii();

        drain_late_replies(&socket, server, &mut buf);
        sent += 1;
        if let Err(err) = socket.send_to(msg, server).await {
            // E.g. "Message too long" for more than 65507 bytes.
            eprintln!("cannot send {} bytes to {server}: {err}", msg.len());
            unanswered += 1;
            continue;
        }

        match wait_for_reply(&socket, server, &mut buf, timeout).await {
            Reply::Data(n) => {
                stdout.write_all(&buf[..n]).await?;
                stdout.write_all(b"\n").await?;
                stdout.flush().await?;
            }
            Reply::TimedOut => {
                eprintln!(
                    "no reply within {} ms (UDP may drop datagrams, or no server is listening at {server})",
                    args.timeout_ms
                );
                unanswered += 1;
            }
            Reply::Failed(err) => {
                eprintln!("no reply: {err}");
                unanswered += 1;
            }
        }
    }

    if unanswered > 0 {
        bail!("{unanswered} of {sent} datagrams got no reply");
    }
    Ok(())
}

enum Reply {
    Data(usize),
    TimedOut,
    Failed(std::io::Error),
}

/// Waits until `deadline` for a datagram from `server`, ignoring others.
async fn wait_for_reply(
    socket: &UdpSocket,
    server: SocketAddr,
    buf: &mut [u8],
    timeout: Duration,
) -> Reply {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match tokio::time::timeout_at(deadline, socket.recv_from(buf)).await {
            Err(_elapsed) => return Reply::TimedOut,
            Ok(Err(err)) => return Reply::Failed(err),
            Ok(Ok((n, from))) if is_server(from, server) => return Reply::Data(n),
            Ok(Ok((n, from))) => eprintln!("ignoring {n} bytes from {from}: not the server"),
        }
    }
}

/// Reports replies that came in after their timeout, so they are not taken
/// for the reply to the next datagram.
fn drain_late_replies(socket: &UdpSocket, server: SocketAddr, buf: &mut [u8]) {
    for _ in 0..MAX_DRAIN {
        match socket.try_recv_from(buf) {
            Ok((n, from)) if is_server(from, server) => {
                let late = String::from_utf8_lossy(&buf[..n]);
                eprintln!("late reply (after its timeout): {late}");
            }
            Ok((n, from)) => eprintln!("ignoring {n} bytes from {from}: not the server"),
            Err(_) => return, // WouldBlock: nothing pending.
        }
    }
}

fn is_server(from: SocketAddr, server: SocketAddr) -> bool {
    from == server || (server.ip().is_unspecified() && from.port() == server.port())
}
