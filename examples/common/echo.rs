//! The echo loop the tutorial's stream servers share (`tcp_echo_server`,
//! `unix_echo_server`): one read of up to 1024 bytes, upper-cased (ASCII
//! only, like Python's `bytes.upper()`), sent back, until the client goes.
//! Included by each program with `#[path = "common/echo.rs"] mod echo;`.

use std::io::ErrorKind;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tracing::{debug, info, warn};

/// The tutorial's `conn.recv(1024)`.
const READ_SIZE: usize = 1024;
/// First pause after a failed `accept()`; doubled up to the maximum.
pub const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
pub const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The communication loop for one client. Never panics, never returns an
/// error to the caller: whatever the client does (EOF, reset, death) ends
/// only this loop, and is logged in the caller's span.
pub async fn serve<S>(mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    info!("client connected");
    let mut buf = [0u8; READ_SIZE];
    loop {
        let n = match stream.read(&mut buf).await {
            Ok(0) => {
                // The tutorial's `if len(data) == 0: break`.
                info!("client closed the connection (EOF)");
                return;
            }
            Ok(n) => n,
            Err(err) => {
                log_io_end(&err, "read");
                return;
            }
        };
        let data = &mut buf[..n];
        data.make_ascii_uppercase();
        if let Err(err) = stream.write_all(data).await {
            log_io_end(&err, "write");
            return;
        }
        debug!(bytes = n, "echoed");
    }
}

/// The tutorial's `except ConnectionResetError: break`, and its relatives.
fn log_io_end(err: &std::io::Error, op: &str) {
    match err.kind() {
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe => {
            warn!(op, error = %err, "connection reset by peer; dropping this client");
        }
        _ => warn!(op, error = %err, "I/O error; dropping this client"),
    }
}
