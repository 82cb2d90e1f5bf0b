//! The rsh client as a library: connect to a server, run commands, stream
//! their output, feed their stdin, get their exit status.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rsh_client::ClientError> {
//! let client = rsh_client::Client::connect_unix("/home/me/.rsh/rsh.sock").await?;
//! let output = client.run("uname -a").await?;
//! print!("{}", String::from_utf8_lossy(&output.stdout));
//! # Ok(()) }
//! ```
//!
//! One [`Client`] is one connection; it runs any number of commands at once,
//! each on its own channel with its own flow-control window, so a command
//! whose output nobody reads stalls only itself.
//!
//! Layers, each using only those below it: `error` ([`ClientError`]) at the
//! bottom; `identity` (our key file), `keycache` (key and known_hosts read
//! once per change) and `tls` (an authenticated TCP stream and the server's
//! key); `connection` (shared state, reader and writer tasks), `command`
//! ([`RemoteCommand`] on a channel), and `client` ([`Client`],
//! [`ExecRequest`]) on top. [`terminal`] and [`escape`] know nothing of the
//! connection; [`session`], over them and a [`RemoteCommand`], is the
//! terminal side: a session on a remote pty, wired to a local terminal.
//!
//! The `rsh-client` command line is not here: it lives in the `rsh-cli`
//! crate (`rsh_cli::client`), as ripgrep's `crates/core`.
#![deny(missing_docs)]

mod client;
mod command;
mod connection;
mod error;
pub mod escape;
mod identity;
mod keycache;
pub mod session;
pub mod terminal;
mod tls;

pub use client::{Client, ExecRequest};
pub use command::{Event, Output, RemoteCommand, Resizer, Signaller, StdinWriter};
pub use connection::ServerAlive;
pub use error::ClientError;
pub use identity::{client_identity, create_identity_at, identity_at};
pub use rsh_proto::{signal, ErrorKind, ExitStatus, PtySize, MAX_DATA_LEN as MAX_STDIN_CHUNK};
pub use rsh_tls::Fingerprint;
pub use tls::{AddressFamily, ConnectOptions, HostKeyNotice, HostKeyPolicy, HostKeyPrompt};
