//! The tutorial's echo client over an `AF_UNIX` stream socket, fixed.
//!
//! The same as `tcp_echo_client` (skips empty lines, reads the whole reply,
//! exits 0 at end of input) but `--addr` is the path of the server's socket
//! file. The Python equivalent is the tutorial's client with
//! `socket(AF_UNIX, SOCK_STREAM)` and `connect("/tmp/rsh-tutorial.sock")`.
//!
//! ```text
//! cargo run --example unix_echo_client -- --addr /tmp/rsh-tutorial.sock
//! printf 'hello\n\nworld\n' | cargo run --example unix_echo_client
//! ```

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::net::UnixStream;

#[path = "common/echo_client.rs"]
mod echo_client;

/// Upper-casing echo client on a Unix socket (the tutorial's client, fixed).
///
/// Sends each non-empty line of stdin (stripped, no newline: the tutorial's
/// bytes), prints each reply, exits 0 at end of input.
#[derive(Debug, Parser)]
struct Args {
    /// Path of the echo server's Unix socket.
    #[arg(long, default_value = "/tmp/rsh-tutorial.sock")]
    addr: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let stream = UnixStream::connect(&args.addr)
        .await
        .with_context(|| format!("cannot connect to {}", args.addr.display()))?;

    echo_client::run(stream).await
}
