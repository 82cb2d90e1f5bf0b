//! The command lines of the rsh binaries, as ripgrep's `crates/core`: the
//! argument parsing, the plan of what to run where, the wiring of our stdio
//! and terminal, and the exit codes. The root package's binaries are thin
//! `main`s over this crate; the libraries (`rsh-client`, `rsh-server`) stay
//! libraries, with no clap, anyhow or log subscriber of their own.
#![deny(missing_docs)]

pub mod client;
