//! The rsh daemon as a library, so tests and benchmarks can run it in-process.
//!
//! How the pieces fit, outside in:
//! - [`listener`]: binds the endpoints (a Unix socket guarded by file mode and
//!   peer credentials) and accepts connections, one task each, at most
//!   `max_connections` at once (a semaphore permit is taken before `accept`).
//! - [`connection`]: greets the peer, then reads frames and routes them to the
//!   connection's commands; one writer task owns the socket's write half.
//! - [`command`]: runs one `sh -c COMMAND` in its own process group and pumps
//!   its stdin, stdout and stderr under the channel's flow-control windows.
//! - [`process_group`]: ending a command's whole process group, politely then
//!   firmly, and reaping it.
//! - [`pty`]: a login shell or a command on a new pseudo-terminal, in its own
//!   session (not wired to the connection yet); [`session`] ends and reaps a
//!   whole session when its terminal is hung up.
//!
//! Shutdown is a [`tokio_util::sync::CancellationToken`]: cancelling it stops
//! the accept loops, gives running commands [`ServerConfig::shutdown_grace`] to
//! finish, then ends them; [`Server::run`] returns once everything is reaped.
#![deny(missing_docs)]

pub mod command;
mod config;
pub mod connection;
pub mod listener;
pub mod process_group;
pub mod pty;
mod server;
pub mod session;

pub use config::ServerConfig;
pub use listener::{Listener, ListenerError, TlsSetup};
pub use server::Server;
