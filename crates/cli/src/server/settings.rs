//! The server's settings, declared once.
//!
//! Every setting is one field of [`Settings`], written inside `settings!`.
//! From that one field come:
//! - the command-line flag and its help, which is also the man page (clap
//!   derive: the doc comment and `#[arg(...)]`);
//! - the default: `default_value_t` (or the type's default), the only one;
//! - the config file key: the field's name in kebab-case, as the long flag
//!   is spelt (serde derive; a key the struct does not have is an error
//!   naming the file and line, see [`super::config_file`]); a setting only
//!   the file gives (`log-level`) is `#[arg(skip)]`;
//! - the effective value: the command line over the file over the default
//!   ([`Settings::overlay_command_line`]);
//! - its line in `--check-config`'s output ([`Settings::toml_lines`]);
//! - what SIGHUP does when the file changes it, written after the type:
//!   - `=> NewConnections`: connections accepted after the reload get the
//!     new value (running ones keep theirs);
//!   - `=> Restart`: read once at start; a changed value is logged as
//!     waiting for the next restart ([`Settings::restart_only_changes`]);
//!   - `=> CommandLine`: not a setting but something this run does or is
//!     told (`--fingerprint`, `-v`, `--config`): no file key (mark it
//!     `#[serde(skip)]`; a unit test checks), no `--check-config` line.
//!
//! So adding a setting is one field here plus its use: where it acts
//! ([`Settings::server_config`] for the library's [`ServerConfig`],
//! [`Settings::preauth_limits`] for [`PreAuthLimits`], or the start-up in
//! `super::serve`). For example:
//!
//! ```text
//! /// Seconds a client may stay idle before it is disconnected (0: never).
//! #[arg(long, value_name = "SECS", default_value_t = 0.0)]
//! idle_timeout: f64 => NewConnections,
//! ```
//!
//! gives `--idle-timeout SECS` (with this help), `idle-timeout = 300` in the
//! file, `idle-timeout = 0` in `--check-config`, and a reload that hands it
//! to new connections; `server_config` then reads `self.idle_timeout`.
//!
//! The type of a setting needs `Clone`, `PartialEq` (to tell a change), a
//! clap value parser, `serde::Deserialize` (or a `deserialize_with`) and
//! [`TomlValue`] (how `--check-config` writes it).

use super::logging::LogFormat;
use anyhow::Context;
use clap::Parser;
use rsh_config::Endpoint;
use rsh_server::{PreAuthLimits, ServerConfig};
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

/// When a changed setting takes effect (see the module's documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reload {
    /// SIGHUP hands it to connections accepted after the reload.
    NewConnections,
    /// Read once at start; a change waits for the next restart.
    Restart,
    /// Not a setting: only on the command line, not in the file.
    CommandLine,
}

/// Declares [`Settings`] (the struct, passed through with its attributes)
/// and what is derived from its fields' names and reload rules.
macro_rules! settings {
    (
        $(#[$struct_meta:meta])*
        pub(crate) struct Settings {
            $(
                $(#[$meta:meta])*
                $field:ident : $ty:ty => $rule:ident
            ),* $(,)?
        }
    ) => {
        $(#[$struct_meta])*
        pub(crate) struct Settings {
            $( $(#[$meta])* pub(crate) $field: $ty, )*
        }

        impl Settings {
            /// Every field's name and reload rule, in declaration order.
            #[cfg(test)]
            pub(crate) const FIELDS: &'static [(&'static str, Reload)] =
                &[$((stringify!($field), Reload::$rule)),*];

            /// Takes from `cli` every value given on its command line
            /// (`matches`, which `cli` was parsed from): a flag wins over
            /// the file.
            pub(crate) fn overlay_command_line(&mut self, cli: &Settings, matches: &clap::ArgMatches) {
                $(
                    if given(matches, stringify!($field)) {
                        self.$field.clone_from(&cli.$field);
                    }
                )*
            }

            /// The file keys of the settings that need a restart and whose
            /// value here differs from `running`'s.
            pub(crate) fn restart_only_changes(&self, running: &Settings) -> Vec<String> {
                let mut changed = Vec::new();
                $(
                    if Reload::$rule == Reload::Restart && self.$field != running.$field {
                        changed.push(file_key(stringify!($field)));
                    }
                )*
                changed
            }

            /// `key = value` lines, as a config file would say these
            /// settings; a setting without a value (an unset path) has none.
            pub(crate) fn toml_lines(&self) -> Vec<String> {
                let mut lines = Vec::new();
                $(
                    if Reload::$rule != Reload::CommandLine {
                        if let Some(value) = TomlValue::toml(&self.$field) {
                            lines.push(format!("{} = {value}", file_key(stringify!($field))));
                        }
                    }
                )*
                lines
            }
        }
    };
}

settings! {
    /// Run commands for rsh clients and stream their output back.
    ///
    /// Each command runs as `SHELL -c COMMAND` in its own process group; its
    /// stdout and stderr are streamed back as they are produced, then its exit
    /// status. The Unix socket admits only this user's processes (file mode 0600
    /// and peer credentials).
    ///
    /// A TCP endpoint (HOST:PORT, [IPV6]:PORT) speaks only TLS 1.3 with both
    /// ends authenticated by keys: the host key (created on first start) and the
    /// client keys listed in authorized_keys (re-read on every connection).
    ///
    /// Files live in RSH_HOME (default ~/.rsh, created with mode 0700): rsh.sock,
    /// host_key, authorized_keys, and the optional config file rsh-server.toml
    /// (every option below, by its long name; options given here win). Like
    /// sshd's StrictModes, the keys are used only if they, RSH_HOME and every
    /// directory above it are owned by this user or root and not writable by
    /// group or others (a sticky directory such as /tmp is fine above RSH_HOME);
    /// otherwise the server refuses to start, or, if the file changes later,
    /// refuses the connection and logs why.
    ///
    /// SIGHUP reloads: the config file is re-read and new connections get its
    /// settings (running ones keep theirs); listen addresses, connection limits,
    /// the host key and logging need a restart. SIGINT, SIGTERM or SIGQUIT stops
    /// accepting, gives running commands the shutdown grace, ends the rest,
    /// removes the socket and exits 0. Under systemd (Type=notify) the server
    /// reports ready, reloading and stopping.
    #[derive(Debug, Clone, Parser, Deserialize)]
    #[command(name = "rsh-server", version)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    pub(crate) struct Settings {
        /// Endpoint to listen on: unix:PATH, HOST[:PORT] or [IPV6][:PORT]
        /// (TCP port 7022 by default). Repeat for several.
        /// Default: unix:$RSH_HOME/rsh.sock.
        #[arg(short, long = "listen", value_name = "ADDR")]
        #[serde(deserialize_with = "endpoints")]
        listen: Vec<Endpoint> => Restart,

        /// Print the host key's fingerprint (creating the key if needed) and exit.
        #[arg(long)]
        #[serde(skip)]
        fingerprint: bool => CommandLine,

        /// Seconds a TCP client has to complete the TLS handshake and greeting.
        #[arg(long, value_name = "SECS", default_value_t = 10.0)]
        handshake_timeout: f64 => NewConnections,

        /// TLS handshakes in progress at once (like sshd's MaxStartups); more
        /// wait in line for a place. A handshake that has stalled (no progress
        /// for 2 s) gives its place up to one that waits; honest ones are never
        /// pushed out. Silent connections do not count.
        #[arg(long, value_name = "N", default_value_t = 64)]
        max_startups: usize => Restart,

        /// TCP connections that have not sent a byte yet; beyond this the one
        /// silent longest is dropped, so a flood of silent connections cannot
        /// lock users out.
        #[arg(long, value_name = "N", default_value_t = 1024)]
        max_silent: usize => Restart,

        /// TCP connections waiting in line for a handshake place; beyond this a
        /// newcomer is turned away.
        #[arg(long, value_name = "N", default_value_t = 4096)]
        max_queued: usize => Restart,

        /// Seconds without traffic before TCP keepalive probes start on a
        /// client connection (then every 5 s; 3 unanswered close it), so a
        /// client that vanished without closing is noticed. 0 turns it off.
        #[arg(long, value_name = "SECS", default_value_t = 15.0)]
        keepalive: f64 => NewConnections,

        /// Seconds a frame may stay half-received: once its first byte has
        /// arrived, the rest must follow within this, or the connection is
        /// closed.
        #[arg(long, value_name = "SECS", default_value_t = 30.0)]
        frame_timeout: f64 => NewConnections,

        /// Seconds without a frame from a client after which the server sends
        /// it a probe (a Ping, which every client of protocol version 3
        /// answers), as sshd's ClientAliveInterval; older clients are never
        /// probed. 0 (the default) turns probing off.
        #[arg(long, value_name = "SECS", default_value_t = 0.0)]
        client_alive_interval: f64 => NewConnections,

        /// Probes a client may leave unanswered in a row before its connection
        /// is closed and its commands ended as if it had gone away (sshd's
        /// ClientAliveCountMax).
        #[arg(long, value_name = "N", default_value_t = 3)]
        client_alive_count_max: u32 => NewConnections,

        /// Shell that runs each command as `SHELL -c COMMAND`.
        #[arg(long, value_name = "PATH", default_value = "/bin/sh")]
        shell: PathBuf => NewConnections,

        /// Connections served at once; more wait in the listen backlog.
        #[arg(long, value_name = "N", default_value_t = 4096)]
        max_connections: usize => Restart,

        /// Commands running at once on one connection.
        #[arg(long, value_name = "N", default_value_t = 64)]
        max_commands: usize => NewConnections,

        /// Seconds running commands may go on after SIGINT or SIGTERM.
        #[arg(long, value_name = "SECS", default_value_t = 5.0)]
        shutdown_grace: f64 => NewConnections,

        /// Seconds between SIGTERM and SIGKILL when a command's group is ended.
        #[arg(long, value_name = "SECS", default_value_t = 1.0)]
        kill_grace: f64 => NewConnections,

        /// Seconds of idle output after a command's shell exits before the
        /// background processes still holding its pipes are ended.
        #[arg(long, value_name = "SECS", default_value_t = 2.0)]
        linger: f64 => NewConnections,

        /// Once listening, write the bound endpoints, the host key fingerprint
        /// and the pid to PATH, for scripts and supervisors.
        ///
        /// The file appears atomically (written beside PATH, then renamed) once
        /// every listener is bound and the server handles signals, and is removed
        /// when the server exits cleanly; a stale PATH is removed at start. One
        /// `KEY VALUE` a line; `#` lines are comments; ignore unknown keys:
        ///
        ///   pid 4242
        ///   endpoint unix /home/me/.rsh/rsh.sock
        ///   endpoint tcp 127.0.0.1:40123
        ///   fingerprint SHA256:...
        ///
        /// One `endpoint` line per --listen, in order, with the real port when 0
        /// was asked; `fingerprint` (as --fingerprint prints it) only when TCP is
        /// served.
        #[arg(
            long,
            value_name = "PATH",
            verbatim_doc_comment,
            help = "Once listening, write the bound endpoints, the host key fingerprint and the pid to PATH (format: --help)"
        )]
        ready_file: Option<PathBuf> => Restart,

        /// Stdin bytes all clients together may have buffered in the server.
        ///
        /// Counts stdin window granted to clients and bytes received but not yet
        /// read by their commands. Under load a command's stdin window is granted
        /// later or smaller, each open command's share at most this divided by
        /// the commands open; every command may still have 32 KiB in flight
        /// beyond it, so none waits for another's grant.
        #[arg(long, value_name = "BYTES", default_value_t = 64 * 1024 * 1024)]
        stdin_budget: u64 => Restart,

        /// More logging (-v debug, -vv trace); RUST_LOG overrides.
        #[arg(short, long, action = clap::ArgAction::Count)]
        #[serde(skip)]
        verbose: u8 => CommandLine,

        /// Log lines as text (no colours unless a terminal, no timestamp in the
        /// journal) or as one JSON object each, for log shippers.
        #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat => Restart,

        /// Config file [default: $RSH_HOME/rsh-server.toml, if it exists].
        #[arg(long, value_name = "PATH")]
        #[serde(skip)]
        config: Option<PathBuf> => CommandLine,

        /// Check the config file and options, print the effective settings and
        /// exit: 0 if all is well, 1 with the file and line of the first error.
        #[arg(long)]
        #[serde(skip)]
        check_config: bool => CommandLine,

        /// The default log filter, as RUST_LOG takes it (`debug`,
        /// `rsh_server=trace`); only in the file: -v and RUST_LOG cover it
        /// on the command line, and win.
        #[arg(skip)]
        log_level: Option<String> => Restart,
    }
}

impl Default for Settings {
    /// The defaults, as clap gives them to an empty command line: the
    /// `#[arg]` defaults are the only ones written down.
    fn default() -> Self {
        Settings::parse_from(["rsh-server"])
    }
}

/// Whether the argument `id` was given on the command line (or through its
/// environment variable), so it overrides the file. False for fields that
/// have no argument (`#[arg(skip)]`).
fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    matches.ids().any(|present| present.as_str() == id)
        && matches!(
            matches.value_source(id),
            Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
        )
}

/// A field's name as the file (and the long flag) spells it.
fn file_key(field: &str) -> String {
    field.replace('_', "-")
}

/// `listen` in the file: each entry parsed as `--listen` parses it; a bad
/// one is reported at its own line.
fn endpoints<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<Endpoint>, D::Error> {
    /// One entry, parsed while the entry is being read, so that the file
    /// format can place the error at the entry.
    struct Entry(Endpoint);
    impl<'de> Deserialize<'de> for Entry {
        fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
            deserializer.deserialize_str(EntryVisitor)
        }
    }
    struct EntryVisitor;
    impl serde::de::Visitor<'_> for EntryVisitor {
        type Value = Entry;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Entry, E> {
            text.parse()
                .map(Entry)
                .map_err(|err| E::custom(format!("listen: {err}")))
        }
    }
    let entries = Vec::<Entry>::deserialize(deserializer)?;
    Ok(entries
        .into_iter()
        .map(|Entry(endpoint)| endpoint)
        .collect())
}

/// How `--check-config` writes a setting's value: as TOML, or `None` for
/// no line at all.
pub(crate) trait TomlValue {
    /// The value as the right-hand side of a TOML `key = value`.
    fn toml(&self) -> Option<String>;
}

/// Quotes `value` as a TOML string.
pub(crate) fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

macro_rules! toml_as_display {
    ($($ty:ty),*) => {$(
        impl TomlValue for $ty {
            fn toml(&self) -> Option<String> {
                Some(self.to_string())
            }
        }
    )*};
}
// f64 as Display: `30`, `0.5`, as people write seconds.
toml_as_display!(bool, u8, u32, u64, usize, f64);

impl TomlValue for String {
    fn toml(&self) -> Option<String> {
        Some(toml_string(self))
    }
}

impl TomlValue for PathBuf {
    fn toml(&self) -> Option<String> {
        Some(toml_string(&self.display().to_string()))
    }
}

impl TomlValue for LogFormat {
    fn toml(&self) -> Option<String> {
        Some(toml_string(self.name()))
    }
}

impl TomlValue for Vec<Endpoint> {
    fn toml(&self) -> Option<String> {
        let quoted: Vec<String> = self.iter().map(|e| toml_string(&e.to_string())).collect();
        Some(format!("[{}]", quoted.join(", ")))
    }
}

impl<T: TomlValue> TomlValue for Option<T> {
    fn toml(&self) -> Option<String> {
        self.as_ref().and_then(TomlValue::toml)
    }
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value)
        .with_context(|| format!("--{name} must be a finite number of seconds >= 0"))
}

fn positive_seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    let duration = seconds(value, name)?;
    if duration.is_zero() {
        anyhow::bail!("--{name} must be more than 0 seconds");
    }
    Ok(duration)
}

impl Settings {
    /// The library's tunables for connections and commands.
    ///
    /// # Errors
    /// A number of seconds that is negative, not finite, or 0 where 0 means
    /// nothing sensible.
    pub(crate) fn server_config(&self) -> anyhow::Result<ServerConfig> {
        Ok(ServerConfig {
            shell: self.shell.clone(),
            max_connections: self.max_connections.max(1),
            max_channels_per_connection: self.max_commands.max(1),
            kill_grace: seconds(self.kill_grace, "kill-grace")?,
            shutdown_grace: seconds(self.shutdown_grace, "shutdown-grace")?,
            linger: seconds(self.linger, "linger")?.max(Duration::from_millis(10)),
            handshake_timeout: positive_seconds(self.handshake_timeout, "handshake-timeout")?,
            stdin_budget: self.stdin_budget.max(1),
            keepalive: Some(seconds(self.keepalive, "keepalive")?).filter(|idle| !idle.is_zero()),
            frame_timeout: positive_seconds(self.frame_timeout, "frame-timeout")?,
            client_alive_interval: Some(seconds(
                self.client_alive_interval,
                "client-alive-interval",
            )?)
            .filter(|interval| !interval.is_zero()),
            client_alive_count_max: self.client_alive_count_max,
            ..ServerConfig::default()
        })
    }

    /// The library's bounds on unauthenticated TCP peers.
    pub(crate) fn preauth_limits(&self) -> PreAuthLimits {
        PreAuthLimits {
            max_startups: self.max_startups,
            max_silent: self.max_silent,
            max_queued: self.max_queued,
            ..PreAuthLimits::default()
        }
    }

    /// The default log filter: -v wins, then the file's log-level, then info.
    pub(crate) fn log_filter(&self) -> String {
        match self.verbose {
            0 => self.log_level.clone().unwrap_or_else(|| "info".to_owned()),
            1 => "debug".to_owned(),
            _ => "trace".to_owned(),
        }
    }
}

#[cfg(test)]
#[path = "settings_tests.rs"]
mod tests;
