//! The rsh daemon as a library, so tests and benchmarks can run it in-process.
//!
//! How the pieces fit, outside in:
//! - [`listener`]: binds the endpoints (a Unix socket guarded by file mode and
//!   peer credentials) and accepts connections, one task each, at most
//!   `max_connections` at once (a semaphore permit is taken before `accept`).
//! - [`preauth`]: what an unauthenticated TCP peer may hold (silent pool,
//!   a fair line for handshake places, dropping only stalled handshakes);
//!   [`log_limit`] keeps strangers and noisy clients from flooding the log.
//! - [`connection`]: greets the peer, then reads frames and routes them to the
//!   connection's commands; one writer task owns the socket's write half.
//! - `login`: what a version-2 request may ask beyond a command (which
//!   user, a login shell, a pty), checked before anything runs.
//! - [`command`]: runs one `sh -c COMMAND` (or a login shell) in its own
//!   process group on pipes, or a session on a pty, and pumps its stdin and
//!   output under the channel's flow-control windows.
//! - [`process_group`]: ending a command's whole process group, politely then
//!   firmly.
//! - [`reaper`]: the one place children are waited for: every child of the
//!   daemon (a subreaper), adopted orphans included, each status handed to the
//!   command waiting for that pid.
//! - [`budget`]: the stdin bytes all connections together may have in flight
//!   to the server; stdin windows are granted out of it.
//! - [`pty`]: a login shell or a command on a new pseudo-terminal, in its own
//!   session (the second way [`command`] spawns); [`session`] finds and ends
//!   a whole session when its terminal is hung up.
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

pub mod budget;
pub mod command;
mod config;
pub mod connection;
mod frame_deadline;
pub mod listener;
pub mod log_limit;
pub mod logging;
mod login;
pub mod preauth;
pub mod process_group;
pub mod pty;
pub mod reaper;
mod server;
pub mod session;

pub use config::ServerConfig;
pub use listener::{Listener, ListenerError, TlsSetup};
pub use preauth::PreAuthLimits;
pub use server::{serve_connection, Server};
