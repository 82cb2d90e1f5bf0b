//! The rsh daemon as a library, so tests and benchmarks can run it in-process.
//!
//! The public API is small: a [`Server`] over bound [`Listener`]s (a Unix
//! socket, or TCP with [`TlsSetup`] and its [`PreAuthLimits`]), configured by
//! [`ServerConfig`]; [`serve_connection`] serves one already-authenticated
//! stream (tests over an in-memory pipe). The modules the `rsh-server`
//! command line uses are public too ([`logging`] for the log's format,
//! [`process_group`] for becoming a subreaper); the rest is internal.
//!
//! How the pieces fit, outside in (each module imports only the ones below
//! it):
//! - `server`: [`Server::run`] starts the accept loops, then drains and
//!   reaps at shutdown.
//! - `listener`: binds the endpoints (a Unix socket guarded by file mode and
//!   peer credentials) and accepts connections, one task each, at most
//!   `max_connections` at once, backing off on accept errors.
//! - `preauth`: a TCP peer's life before authentication (the silent pool, a
//!   fair line for handshake places, dropping only stalled handshakes, the
//!   TLS handshake under its deadline, a summary of what was closed);
//!   `log_limit` keeps strangers and noisy clients from flooding the log.
//! - `connection`: greets the peer, then reads frames and routes them to
//!   the connection's channels; one writer task owns the socket's write
//!   half. `login` checks what a version-2 request may ask beyond a command
//!   (which user, a login shell, a pty) before anything runs, and knows the
//!   server user's account.
//! - `channel`: the connection's channel table (which ids are open, the
//!   routes to each channel's task, the end each reports exactly once), the
//!   channel kinds, and the pumps that carry bytes under the flow-control
//!   windows; `budget` is the stdin bytes all connections together may have
//!   in flight, out of which stdin windows are granted.
//! - `command`: one `Exec`: spawns `sh -c COMMAND` (or a login shell) on
//!   pipes, or a session on a pty, supervises it (pumps, signals, resizes,
//!   timeout, client gone, shutdown) and reports its exit.
//! - `process`: what a command started and how to end it: its process group
//!   ([`process_group`]) or its terminal session (`session` finds and ends
//!   a session's members), with its leader's status to come.
//! - `pty`: the pseudo-terminal (spawning on it, reading, writing, resizing,
//!   hanging up); `peer` says where the client is (`RSH_CONNECTION`).
//! - `reaper`: the one place children are waited for: every child of the
//!   daemon (a subreaper), adopted orphans included, each status handed to
//!   the command waiting for that pid.
//! - [`logging`]: what the library's log events need to know about the
//!   log's format (text a peer chose is escaped once).
//!
//! The `rsh-server` command line (settings, config file, signals, systemd
//! readiness, the log subscriber) is the binary's business: it lives in
//! `rsh-cli` (`rsh_cli::server`); the ready file's format is
//! `rsh_config::ready`.
//!
//! Shutdown is a [`tokio_util::sync::CancellationToken`]: cancelling it stops
//! the accept loops, gives running commands [`ServerConfig::shutdown_grace`] to
//! finish, then ends them; [`Server::run`] returns once everything is reaped.
#![deny(missing_docs)]

mod budget;
mod channel;
mod command;
mod config;
mod connection;
mod frame_deadline;
mod listener;
mod log_limit;
pub mod logging;
mod login;
mod peer;
mod preauth;
mod process;
pub mod process_group;
mod pty;
mod reaper;
mod server;
mod session;

pub use config::ServerConfig;
pub use listener::{Listener, ListenerError};
pub use preauth::{PreAuthLimits, TlsSetup};
pub use server::{serve_connection, Server};
