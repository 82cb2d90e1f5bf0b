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
//! - [`command`]: runs one `sh -c COMMAND` in its own process group and pumps
//!   its stdin, stdout and stderr under the channel's flow-control windows.
//! - [`process_group`]: ending a command's whole process group, politely then
//!   firmly, and reaping it.
//!
//! Shutdown is a [`tokio_util::sync::CancellationToken`]: cancelling it stops
//! the accept loops, gives running commands [`ServerConfig::shutdown_grace`] to
//! finish, then ends them; [`Server::run`] returns once everything is reaped.
#![deny(missing_docs)]

pub mod command;
mod config;
pub mod connection;
mod frame_deadline;
pub mod listener;
pub mod log_limit;
pub mod preauth;
pub mod process_group;
mod server;

pub use config::ServerConfig;
pub use listener::{Listener, ListenerError, TlsSetup};
pub use preauth::PreAuthLimits;
pub use server::Server;
