//! The tutorial's "simulated ssh" remote shell, kept exactly as broken as it
//! was, to show the sticky-packet problem. DO NOT use it for anything else.
//!
//! Like the Python original it:
//!
//! * serves one client at a time (connection loop around communication loop);
//! * takes a command with ONE read of up to 1024 bytes (`conn.recv(1024)`);
//! * runs it with `sh -c` (Python's `subprocess.Popen(cmd, shell=True)`);
//! * sends stdout followed by stderr as raw bytes, with nothing to mark where
//!   the output ends (`conn.send(stdout + stderr)`).
//!
//! The tutorial's client reads the answer with one `recv(1024)`. If the output
//! is longer, the rest stays in the socket and comes out as the "answer" to
//! the next command: the output bleeds from one command into the next. A
//! command with no output sends nothing, and that client waits forever. Two
//! commands sent quickly may be read as one. rsh fixes all of this with a
//! length-prefixed framed protocol; see docs/FROM-THE-TUTORIAL.md.
//!
//! It also runs anything anyone sends, with no authentication, so it refuses
//! to listen on anything but a loopback address unless given --allow-remote.
//!
//! ```text
//! cargo run --example naive_shell_server -- --addr 127.0.0.1:8080
//! ```
//!
//! The first line on stdout is `listening on ADDR`. Logs go to stderr.

use std::ffi::OsStr;
use std::io::ErrorKind;
use std::os::unix::ffi::OsStrExt;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tracing::{info, info_span, warn, Instrument};

#[path = "common/logging.rs"]
mod logging;

/// The tutorial's naive remote shell, DELIBERATELY BROKEN: a teaching aid for
/// the sticky-packet problem, not a tool.
///
/// Reads a command with one read of up to 1024 bytes, runs it with `sh -c`,
/// and sends its stdout+stderr back raw, with no framing. A client that reads
/// one 1024-byte chunk per command sees long output cut, and the rest bleeds
/// into the reply to its next command. One client at a time; no
/// authentication: it runs whatever it is sent, so it only listens on
/// loopback unless --allow-remote is given. Use rsh for the real thing.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on; use port 0 to let the OS pick a free port.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    /// Allow a non-loopback address. Anyone who can connect can run commands
    /// as you.
    #[arg(long)]
    allow_remote: bool,
}

/// The tutorial's `conn.recv(1024)`.
const READ_SIZE: usize = 1024;

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
    if !local.ip().is_loopback() && !args.allow_remote {
        bail!("{local} is not a loopback address; this server runs anything anyone sends (pass --allow-remote if you really mean it)");
    }
    println!("listening on {local}");
    info!(%local, "listening (deliberately broken: no framing, see --help)");

    // The connection loop: one client at a time, exactly like the tutorial.
    loop {
        let (conn, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        serve(conn).instrument(info_span!("conn", %peer)).await;
    }
}

/// The communication loop, as in the tutorial.
async fn serve(mut conn: TcpStream) {
    info!("client connected");
    let mut buf = [0u8; READ_SIZE];
    loop {
        // cmd = conn.recv(1024): whatever happens to be there, up to 1024 bytes.
        let n = match conn.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == ErrorKind::ConnectionReset => break,
            Err(err) => {
                warn!(error = %err, "read failed");
                break;
            }
        };
        let cmd = &buf[..n];
        info!(cmd = %String::from_utf8_lossy(cmd), "running");

        // subprocess.Popen(cmd, shell=True, stdout=PIPE, stderr=PIPE)
        let reply = match Command::new("sh")
            .arg("-c")
            .arg(OsStr::from_bytes(cmd))
            .stdin(Stdio::null())
            .output()
            .await
        {
            // conn.send(stdout + stderr): no length, no boundary, no status.
            Ok(out) => [out.stdout, out.stderr].concat(),
            Err(err) => format!("naive_shell_server: cannot run sh: {err}\n").into_bytes(),
        };
        if let Err(err) = conn.write_all(&reply).await {
            warn!(error = %err, "write failed");
            break;
        }
    }
    info!("client gone");
}
