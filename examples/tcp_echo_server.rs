//! The tutorial's upper-casing TCP echo server, with its connection loop and
//! communication loop done right.
//!
//! What the Python version left broken, and what this one does instead:
//!
//! * It served one client at a time (the connection loop waited for the
//!   communication loop to finish). Here every accepted connection gets its
//!   own tokio task, so any number of clients are served at once.
//! * A client that vanished crashed the server (`ConnectionResetError` on
//!   Windows) or spun it on empty reads (Linux). Here EOF and connection reset
//!   both end only that client's loop, and both are logged inside a span that
//!   names the peer.
//! * An `accept()` error (for example running out of file descriptors) ended
//!   the server. Here it is logged, the loop backs off briefly and carries on.
//!
//! The bytes on the wire are exactly the tutorial's: no framing, one read of up
//! to 1024 bytes, upper-case it (ASCII only, like Python's `bytes.upper()`),
//! send it back. The tutorial's Python client works against this server with
//! only the port changed.
//!
//! ```text
//! cargo run --example tcp_echo_server -- --addr 127.0.0.1:8080
//! ```
//!
//! The first line on stdout is `listening on ADDR` with the real bound
//! address, so `--addr 127.0.0.1:0` lets the OS pick a free port. Logs go to
//! stderr; set `RUST_LOG=debug` to see every message.

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, info_span, warn, Instrument};

#[path = "common/echo.rs"]
mod echo;
#[path = "common/logging.rs"]
mod logging;

/// Upper-casing TCP echo server (the tutorial's server, fixed).
///
/// Speaks the tutorial's raw bytes: one read of up to 1024 bytes, upper-cased,
/// sent back. Serves many clients at once; a client that disconnects or
/// resets only ends its own connection. Prints `listening on ADDR` on stdout
/// once bound; logs go to stderr (RUST_LOG=debug for more).
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; use port 0 to let the OS pick a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init_tracing();
    let args = Args::parse();

    let listener = TcpListener::bind(&args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    let local = listener
        .local_addr()
        .context("cannot read the bound address")?;
    // Install the signal handlers before announcing readiness, and keep
    // them for the whole loop so no signal falls between two iterations.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    println!("listening on {local}");
    info!(%local, "listening");

    // The connection loop.
    let mut backoff = echo::ACCEPT_BACKOFF_MIN;
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    backoff = echo::ACCEPT_BACKOFF_MIN;
                    tokio::spawn(echo::serve(stream).instrument(info_span!("conn", %peer)));
                }
                Err(err) => {
                    // EMFILE, ENFILE, ECONNABORTED, ...: none of them is a
                    // reason to stop serving everybody else.
                    warn!(error = %err, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(echo::ACCEPT_BACKOFF_MAX);
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
