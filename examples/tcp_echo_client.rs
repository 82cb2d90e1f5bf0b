//! The tutorial's TCP echo client, fixed.
//!
//! Reads lines from stdin, sends each one (stripped, without the newline,
//! exactly the bytes the Python client sends), prints the upper-cased reply
//! and quits cleanly at end of input.
//!
//! What the Python version left broken, and what this one does instead:
//!
//! * Pressing Enter on an empty line sent zero bytes. TCP has nothing to
//!   deliver for that, so the server never answered and the client hung in
//!   `recv()`. Here empty (or all-whitespace) lines are skipped.
//! * `recv(1024)` took at most 1024 bytes, so a longer reply was cut and its
//!   tail showed up as the "reply" to the next message (the sticky-packet
//!   problem in miniature). Upper-casing keeps the length, so this client
//!   reads exactly as many bytes as it sent.
//! * `while True: input()` had no way out but Ctrl-C. Here end of input
//!   (Ctrl-D, or the end of a pipe) closes the connection and exits 0.
//!
//! ```text
//! cargo run --example tcp_echo_client -- --addr 127.0.0.1:8080
//! printf 'hello\n\nworld\n' | cargo run --example tcp_echo_client
//! ```

use anyhow::Context;
use clap::Parser;
use tokio::net::TcpStream;

#[path = "common/echo_client.rs"]
mod echo_client;

/// Upper-casing TCP echo client (the tutorial's client, fixed).
///
/// Sends each non-empty line of stdin (stripped, no newline: the tutorial's
/// bytes), prints each reply, exits 0 at end of input. Works against the
/// tutorial's Python server too.
#[derive(Debug, Parser)]
struct Args {
    /// Address of the echo server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stream = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;

    echo_client::run(stream).await
}
