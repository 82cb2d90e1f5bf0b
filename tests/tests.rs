//! The integration tests, compiled into one test binary (as ripgrep's):
//! `cargo test --test tests` runs them all, `cargo test --test tests core::`
//! one module. They run the real `rsh-server` and `rsh-client` binaries
//! (found through `CARGO_BIN_EXE_*`, see `util`), except `protocol`, which
//! drives the server library in-process over `tokio::io::duplex`.

mod util;

mod alive;
mod cli;
mod client_hardening;
mod core;
mod fleet;
mod hardening;
mod interop;
mod network;
mod processes;
mod protocol;
mod pty;
mod service;
mod terminal;
mod tls;
mod tools;
mod trust;
mod v2;
