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

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

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
    let mut stream = UnixStream::connect(&args.addr)
        .await
        .with_context(|| format!("cannot connect to {}", args.addr.display()))?;

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
