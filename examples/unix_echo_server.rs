//! The tutorial's upper-casing echo server over an `AF_UNIX` stream socket.
//!
//! Everything `tcp_echo_server` does (a task per client, EOF and reset end
//! only that client, accept errors back off), but the address is a path in
//! the file system instead of an IP and port. Only processes on this machine
//! that may open the path can connect.
//!
//! A Unix socket leaves a file behind. This server:
//!
//! * on start, removes a *stale* socket file at the path (one nobody listens
//!   on any more), but refuses to touch a live socket or anything that is not
//!   a socket;
//! * on Ctrl-C (SIGINT) or SIGTERM, removes its socket file and exits 0.
//!
//! ```text
//! cargo run --example unix_echo_server -- --addr /tmp/rsh-tutorial.sock
//! ```
//!
//! The first line on stdout is `listening on PATH`. Logs go to stderr.

use std::io::ErrorKind;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::{bail, Context};
use clap::Parser;
use tokio::net::{UnixListener, UnixStream};
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info, info_span, warn, Instrument};

#[path = "common/echo.rs"]
mod echo;
#[path = "common/logging.rs"]
mod logging;

/// Upper-casing echo server on a Unix socket (the tutorial's AF_UNIX server, fixed).
///
/// Speaks the tutorial's raw bytes: one read of up to 1024 bytes, upper-cased,
/// sent back. Serves many clients at once. Removes a stale socket file on
/// start and its own socket file on Ctrl-C/SIGTERM. Prints `listening on PATH`
/// on stdout once bound; logs go to stderr.
#[derive(Debug, Parser)]
struct Args {
    /// Path of the Unix socket to listen on.
    #[arg(long, default_value = "/tmp/rsh-tutorial.sock")]
    addr: PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    logging::init_tracing();
    let args = Args::parse();
    let path = args.addr;

    // Install the signal handlers before announcing readiness, and keep
    // them for the whole loop so no signal falls between two iterations.
    let mut sigint = signal(SignalKind::interrupt()).context("cannot listen for Ctrl-C")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    remove_stale_socket(&path).await?;
    let listener = UnixListener::bind(&path)
        .with_context(|| format!("cannot listen on {}", path.display()))?;
    println!("listening on {}", path.display());
    info!(path = %path.display(), "listening");

    let next_id = AtomicU64::new(1);
    let mut backoff = echo::ACCEPT_BACKOFF_MIN;
    // The connection loop.
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _addr)) => {
                    backoff = echo::ACCEPT_BACKOFF_MIN;
                    // Unix peers are usually unnamed; name them by number and
                    // by the credentials the kernel vouches for.
                    let id = next_id.fetch_add(1, Ordering::Relaxed);
                    let (pid, uid) = match stream.peer_cred() {
                        Ok(cred) => (cred.pid().unwrap_or(-1), cred.uid()),
                        Err(_) => (-1, u32::MAX),
                    };
                    tokio::spawn(echo::serve(stream).instrument(info_span!("conn", id, pid, uid)));
                }
                Err(err) => {
                    warn!(error = %err, ?backoff, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(echo::ACCEPT_BACKOFF_MAX);
                }
            },
            _ = sigint.recv() => {
                info!("Ctrl-C: shutting down");
                break;
            }
            _ = sigterm.recv() => {
                info!("SIGTERM: shutting down");
                break;
            }
        }
    }

    drop(listener);
    match std::fs::remove_file(&path) {
        Ok(()) => info!(path = %path.display(), "removed the socket file"),
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => warn!(path = %path.display(), error = %err, "cannot remove the socket file"),
    }
    Ok(())
}

/// A socket file outlives the process that bound it, and `bind()` on an
/// existing path fails with "address in use". Remove it only if it is a
/// socket nobody is listening on.
async fn remove_stale_socket(path: &Path) -> anyhow::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(err).with_context(|| format!("cannot inspect {}", path.display()));
        }
    };
    if !meta.file_type().is_socket() {
        bail!(
            "{} exists and is not a socket; refusing to replace it",
            path.display()
        );
    }
    match UnixStream::connect(path).await {
        Ok(_) => bail!("another server is already listening on {}", path.display()),
        Err(err) if err.kind() == ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove stale socket {}", path.display()))?;
            info!(path = %path.display(), "removed a stale socket file");
            Ok(())
        }
        Err(err) => {
            Err(err).with_context(|| format!("cannot tell whether {} is stale", path.display()))
        }
    }
}
