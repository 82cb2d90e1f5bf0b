//! The command lines of the rsh binaries, as ripgrep's `crates/core`: what
//! only a program started from a shell or a service manager needs (argument
//! parsing, the plan of what to run where, the config file, the wiring of
//! our stdio and terminal, exit codes, installing the log subscriber,
//! signals and readiness), kept out of the libraries so that they stay
//! libraries, with no clap, anyhow or log subscriber of their own. The
//! binaries in the root package are thin `main`s over these modules.
//!
//! - [`client`]: `rsh-client`, over the `rsh-client` library.
//! - [`server`]: `rsh-server`, over the `rsh-server` library.
#![deny(missing_docs)]

pub mod client;
pub mod server;
