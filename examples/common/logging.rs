//! Logging for the tutorial's servers: to stderr, `RUST_LOG` or `info`,
//! colours only on a terminal. Included by each server with
//! `#[path = "common/logging.rs"] mod logging;`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}
