//! Readiness and status for systemd (`Type=notify` units): the few lines of
//! the `sd_notify(3)` protocol, one datagram of `KEY=VALUE` lines to the
//! Unix socket named by `$NOTIFY_SOCKET`.
//!
//! Written here rather than taken from a crate: the protocol is one
//! `sendto` on a datagram socket, stable since systemd 209, and the
//! workspace forbids `unsafe`; std's `UnixDatagram` (with the Linux
//! abstract-namespace address for `@` names) covers it all.
//!
//! Without `$NOTIFY_SOCKET` (not started by systemd) every call is a no-op.
//! The socket is non-blocking: a notification never stalls the runtime; if
//! systemd's queue is full the message is dropped with a debug line, which
//! costs at most a late status, as with libsystemd.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};

/// The target of this module's log events, as when it was the library's
/// (see the `server` module's documentation).
const LOG_TARGET: &str = "rsh_server::notify";

/// The server is up: every listener is bound.
pub(crate) const READY: &str = "READY=1";
/// The server is stopping (graceful shutdown began).
pub(crate) const STOPPING: &str = "STOPPING=1";

/// `RELOADING=1` with the monotonic timestamp systemd (>= 253) asks for.
pub(crate) fn reloading() -> String {
    let usec = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|ts| ts.tv_sec() as u64 * 1_000_000 + ts.tv_nsec() as u64 / 1_000)
        .unwrap_or(0);
    format!("RELOADING=1\nMONOTONIC_USEC={usec}")
}

/// Sends `state` (newline-separated `KEY=VALUE` assignments) to the service
/// manager. Returns `Ok(false)` when there is no `$NOTIFY_SOCKET`.
///
/// # Errors
/// The socket named in `$NOTIFY_SOCKET` is unusable or the send failed.
pub(crate) fn notify(state: &str) -> io::Result<bool> {
    let Some(name) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let addr = address(name.as_encoded_bytes())?;
    let socket = UnixDatagram::unbound()?;
    socket.set_nonblocking(true)?;
    socket.send_to_addr(state.as_bytes(), &addr)?;
    Ok(true)
}

/// Like [`notify`], logging a failure instead of returning it: losing a
/// notification must not stop the server.
pub(crate) fn notify_logged(state: &str) {
    match notify(state) {
        Ok(true) => tracing::debug!(target: LOG_TARGET, state, "told the service manager"),
        Ok(false) => {}
        Err(err) => {
            tracing::warn!(target: LOG_TARGET, cause = %err, state, "cannot notify the service manager")
        }
    }
}

/// The socket address of a `$NOTIFY_SOCKET` value: a path, or `@name` for
/// Linux's abstract namespace.
fn address(name: &[u8]) -> io::Result<SocketAddr> {
    match name {
        [b'@', rest @ ..] => abstract_address(rest),
        [b'/', ..] => {
            use std::os::unix::ffi::OsStrExt;
            SocketAddr::from_pathname(std::ffi::OsStr::from_bytes(name))
        }
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "NOTIFY_SOCKET is neither an absolute path nor an @abstract name",
        )),
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<SocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract NOTIFY_SOCKET names exist only on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_abstract_names_are_addresses() {
        assert!(address(b"/run/systemd/notify").is_ok());
        assert!(address(b"@/org/freedesktop/systemd1/notify/1").is_ok());
        assert!(address(b"relative").is_err());
        assert!(address(b"").is_err());
    }

    #[test]
    fn reloading_carries_a_timestamp() {
        let text = reloading();
        assert!(text.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{text}");
    }
}
