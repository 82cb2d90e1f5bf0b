//! The tutorial's upper-casing UDP echo server.
//!
//! UDP has no connections, so there is no connection loop and no
//! communication loop per client: one datagram in, one upper-cased datagram
//! back to whoever sent it. Datagrams keep their boundaries (no sticky
//! packets), an empty datagram is a real message, and nothing is retried: a
//! lost datagram stays lost.
//!
//! The Python version read with `recvfrom(1024)`, which silently truncates
//! any longer datagram. This one reads into a 64 KiB buffer, so every
//! datagram that fits in IPv4 UDP (up to 65507 bytes of payload) comes back
//! whole. A client that sends garbage, or vanishes, cannot stop it; a failed
//! receive or send is logged and the loop carries on.
//!
//! ```text
//! cargo run --example udp_echo_server -- --addr 127.0.0.1:8080
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Logs go to stderr.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::net::UdpSocket;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{debug, info, warn};

#[path = "common/logging.rs"]
mod logging;

/// Upper-casing UDP echo server (the tutorial's UDP server, fixed).
///
/// One datagram in (up to 65507 bytes), one upper-cased datagram back to its
/// sender. Prints `listening on ADDR` on stdout once bound; logs go to stderr.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; use port 0 to let the OS pick a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
}

/// Larger than any UDP payload (65507 bytes over IPv4, 65527 over IPv6
/// without jumbograms), so nothing is ever truncated.
const BUF_SIZE: usize = 64 * 1024;
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init_tracing();
    let args = Args::parse();

    let socket = UdpSocket::bind(&args.addr)
        .await
        .with_context(|| format!("cannot bind {}", args.addr))?;
    let local = socket
        .local_addr()
        .context("cannot read the bound address")?;
    // Install the signal handlers before announcing readiness, and keep
    // them for the whole loop so no signal falls between two iterations.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    println!("listening on {local}");
    info!(%local, "listening");

    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok((n, peer)) => {
                    let data = &mut buf[..n];
                    data.make_ascii_uppercase();
                    match socket.send_to(data, peer).await {
                        Ok(_) => debug!(%peer, bytes = n, "echoed"),
                        Err(err) => warn!(%peer, error = %err, "cannot send the reply"),
                    }
                }
                Err(err) => {
                    // E.g. an ICMP error reported on some systems; it concerns
                    // one peer, not the server. Pause so a persistent error
                    // cannot spin the CPU.
                    warn!(error = %err, "receive failed; carrying on");
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
            },
            _ = sigint.recv() => {
                info!("Ctrl-C: shutting down");
                return Ok(());
            }
            _ = sigterm.recv() => {
                info!("SIGTERM: shutting down");
                return Ok(());
            }
        }
    }
}
