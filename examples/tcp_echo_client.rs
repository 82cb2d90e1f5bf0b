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

use std::io::IsTerminal;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

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
    let mut stream = TcpStream::connect(&args.addr)
        .await
        .with_context(|| format!("cannot connect to {}", args.addr))?;

    let interactive = std::io::stdin().is_terminal();
    let mut stdin = BufReader::new(tokio::io::stdin());
    let mut stdout = tokio::io::stdout();
    let mut line = Vec::new();
    let mut reply = Vec::new();

    // The communication loop.
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
            break; // End of input: quit, instead of looping forever.
        }
        let msg = line.trim_ascii();
        if msg.is_empty() {
            continue; // The tutorial's empty-message hang, avoided.
        }

        stream
            .write_all(msg)
            .await
            .context("cannot send to the server")?;

        reply.resize(msg.len(), 0);
        stream.read_exact(&mut reply).await.map_err(|err| {
            if err.kind() == std::io::ErrorKind::UnexpectedEof {
                anyhow::anyhow!("the server closed the connection before replying")
            } else {
                anyhow::Error::new(err).context("cannot read the reply")
            }
        })?;

        stdout.write_all(&reply).await?;
        stdout.write_all(b"\n").await?;
        stdout.flush().await?;
    }

    // Tell the server we are done (it sees EOF and ends our loop only).
    stream.shutdown().await.ok();
    Ok(())
}
