//! The command lines of the rsh binaries, as ripgrep's `crates/core`: what
//! only a program started from a shell or a service manager needs (argument
//! parsing, the config file, installing the log subscriber, signals and
//! readiness), kept out of the libraries so that they stay libraries. The
//! binaries in the root package are thin `main`s over these modules.
//!
//! - [`server`]: `rsh-server`, over the `rsh-server` library.
#![deny(missing_docs)]

pub mod server;
