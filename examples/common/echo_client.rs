//! The communication loop the tutorial's stream clients share
//! (`tcp_echo_client`, `unix_echo_client`): each non-empty line of stdin,
//! stripped, goes out as the tutorial's bytes; as many bytes come back
//! (upper-casing keeps the length) and are printed. Included by each client
//! with `#[path = "common/echo_client.rs"] mod echo_client;`.

use std::io::IsTerminal;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

/// Runs the loop until end of input, then shuts the write side down so the
/// server sees EOF and ends this client's loop only.
///
/// # Errors
/// stdin or stdout failed, or the server went away before a reply.
pub async fn run<S>(mut stream: S) -> anyhow::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
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
