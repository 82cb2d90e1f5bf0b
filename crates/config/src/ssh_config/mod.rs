//! The client's configuration file, `$RSH_HOME/config`, in ssh_config(5)'s
//! syntax and with its rules, so that an ssh user's habits carry over.
//!
//! What is the same as ssh:
//! - `Host PATTERN...` starts a block that applies when the name given on the
//!   command line (the alias, not the `HostName`) matches. Patterns use `*` and
//!   `?`, compare case-insensitively, and `!PATTERN` negates: a `Host` line
//!   applies if at least one plain pattern matches and no negated one does.
//!   Lines before the first `Host` apply to every host.
//! - A line is `Keyword argument`, or `Keyword=argument`; keywords are
//!   case-insensitive; arguments may be quoted with `"` or `'`; a `#` that
//!   starts a line or a word is a comment.
//! - The first value obtained for a key wins: command-line options
//!   ([`Overrides`], ssh's `-o`, `-p`, `-l`, `-i`) first, then the blocks of
//!   the file in order. Put specific `Host` blocks before general ones.
//! - `Include FILE...` reads other files in place (globs allowed; relative
//!   names are taken from the directory of the main config file, i.e.
//!   `$RSH_HOME`; missing files are skipped as ssh does; at most
//!   [`MAX_INCLUDE_DEPTH`] levels). An `Include` inside a `Host` block applies
//!   only when that block does.
//! - `IgnoreUnknown PATTERN,...` turns later unknown keywords into ignored
//!   ones instead of errors.
//! - A keyword ssh does not know is an error naming the file and line ("Bad
//!   configuration option"), as is a malformed line or value, even inside a
//!   block that does not apply.
//!
//! What differs:
//! - The keys rsh uses are `HostName` (with `%h`), `Port`, `User`,
//!   `IdentityFile`, `ConnectTimeout`, `ServerAliveInterval`,
//!   `ServerAliveCountMax`, `StrictHostKeyChecking` and `BatchMode`. Every
//!   other ssh keyword (`SendEnv`, `ControlMaster`, `ProxyJump`, ...) is
//!   accepted and reported in [`Resolved::ignored`], which the client prints
//!   at `-v`, so that configurations and command lines written for ssh work.
//! - `Match` is refused with an error: silently ignoring it would apply its
//!   block's settings to the wrong hosts.
//! - `StrictHostKeyChecking no` (or `off`, `false`) does not trust changed
//!   keys: it means [`StrictHostKeyChecking::AcceptNew`], recording keys of
//!   unknown hosts while still refusing a host whose key changed.
//! - `IdentityFile` is not cumulative: rsh uses one identity, the first one
//!   obtained.
//! - A config file writable by group or others, or owned by a user other
//!   than this one and root, is refused, as ssh refuses it; an `Include`d
//!   file too.
//!
//! Parsing reads files (and the directories of `Include` globs) and nothing
//! else; resolution is pure. The parts: `parse` (lines, values, `Host`
//! blocks and `Include`), `keywords` (what rsh acts on, what it ignores),
//! `matching` (`Host` patterns, `Include` globs), `tokens` (`%`
//! expansion), `error` (where a line came from, what was wrong with it).
//!
//! # Why not a crate
//! `ssh2-config` (0.9, the maintained one on crates.io, checked for issue 17)
//! parses the same syntax but would lose behaviour the tests check:
//! - its errors (`SshParserError`) carry no file and line, and ours name
//!   both ("config line 3: Bad configuration option ...");
//! - it expands no `%` tokens (`HostName %h.example`, `IdentityFile
//!   ~/.rsh/%r@%h`), neither at resolution nor as a check at parse time;
//! - it has no `Match` handling to refuse, so a `Match` block's settings
//!   are not kept off the wrong hosts;
//! - it takes `~` and relative `Include`s from the `dirs` crate's home, not
//!   from `$RSH_HOME` or the `home` given to [`ClientConfig::with_local`],
//!   and does not refuse a file that others can write;
//! - it resolves the whole ssh option set into its own `HostParams`, so
//!   rsh's report of the ignored ssh options (`-v`) would have to be
//!   rebuilt beside it.
//!
//! The other candidates (`ssh_config` 0.1, parsers inside tools) are
//! unmaintained or not libraries. The parser here is about 800 lines
//! without its tests.

use error::unsupported;
pub use error::{ConfigFileError, Origin};
pub use keywords::{Ignored, StrictHostKeyChecking};
pub use parse::MAX_INCLUDE_DEPTH;

use keywords::{Entry, Item, Key, Value};
use matching::HostLine;
use parse::{parse_directive, read_config, split_line, Directive, Parser};
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokens::expand_tokens;

mod error;
mod keywords;
mod matching;
mod parse;
mod tokens;

/// What `ServerAliveCountMax` is when no configuration sets it (as ssh).
pub const DEFAULT_SERVER_ALIVE_COUNT_MAX: u32 = 3;

/// The configuration resolved for one destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// The name given on the command line (the alias).
    pub host: String,
    /// The name or address to connect to: `HostName` with `%h` expanded, else
    /// the alias.
    pub hostname: String,
    /// `Port`.
    pub port: Option<u16>,
    /// `User`.
    pub user: Option<String>,
    /// `IdentityFile`, with `~` and tokens expanded.
    pub identity_file: Option<PathBuf>,
    /// `ConnectTimeout` (zero: none).
    pub connect_timeout: Option<Duration>,
    /// `ServerAliveInterval` (zero: no keepalive).
    pub server_alive_interval: Option<Duration>,
    /// `ServerAliveCountMax`.
    pub server_alive_count_max: Option<u32>,
    /// `StrictHostKeyChecking`.
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `BatchMode`.
    pub batch_mode: Option<bool>,
    /// ssh options that applied to this host and that rsh ignores, in the
    /// order met (command line first).
    pub ignored: Vec<Ignored>,
}

impl Resolved {
    /// Writes the resolution as `ssh -G` does: one lowercase `key value` line
    /// per key. Keys left unset print rsh's defaults (port
    /// [`crate::DEFAULT_TCP_PORT`], `connecttimeout none`, no keepalive,
    /// `stricthostkeychecking ask`, `batchmode no`); `user` and
    /// `identityfile` are printed only when set, so a caller that knows the
    /// local user and default identity fills them in first.
    ///
    /// # Errors
    /// Whatever writing to `w` returns.
    pub fn print_like_ssh_g(&self, w: &mut impl Write) -> io::Result<()> {
        writeln!(w, "host {}", self.host)?;
        writeln!(w, "hostname {}", self.hostname)?;
        if let Some(user) = &self.user {
            writeln!(w, "user {user}")?;
        }
        writeln!(w, "port {}", self.port.unwrap_or(crate::DEFAULT_TCP_PORT))?;
        if let Some(path) = &self.identity_file {
            writeln!(w, "identityfile {}", path.display())?;
        }
        match self.connect_timeout {
            Some(t) if !t.is_zero() => writeln!(w, "connecttimeout {}", t.as_secs())?,
            _ => writeln!(w, "connecttimeout none")?,
        }
        writeln!(
            w,
            "serveraliveinterval {}",
            self.server_alive_interval.map_or(0, |t| t.as_secs())
        )?;
        writeln!(
            w,
            "serveralivecountmax {}",
            self.server_alive_count_max
                .unwrap_or(DEFAULT_SERVER_ALIVE_COUNT_MAX)
        )?;
        writeln!(
            w,
            "stricthostkeychecking {}",
            self.strict_host_key_checking
                .unwrap_or(StrictHostKeyChecking::Ask)
                .as_ssh_g()
        )?;
        writeln!(
            w,
            "batchmode {}",
            if self.batch_mode.unwrap_or(false) {
                "yes"
            } else {
                "no"
            }
        )
    }
}

/// Command-line settings, applied before the file: ssh's `-o KEY=VALUE`, and
/// `-p`, `-l`, `-i`. As in ssh, the first value given for a key wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    items: Vec<Item>,
    ignore_unknown: Vec<String>,
}

impl Overrides {
    /// No overrides.
    pub fn new() -> Self {
        Overrides::default()
    }

    /// Adds one `-o` option: `KEY=VALUE` or `KEY VALUE`, any key of the
    /// config file except `Host`, `Match` and `Include`.
    ///
    /// # Errors
    /// The same errors as the file's lines, with [`Origin::CommandLine`].
    pub fn option(&mut self, text: &str) -> Result<&mut Self, ConfigFileError> {
        let origin = Origin::CommandLine;
        let Some((keyword, args)) = split_line(text, &origin)? else {
            return Err(ConfigFileError::Syntax {
                origin,
                reason: "empty option".into(),
            });
        };
        match parse_directive(&keyword, &args, &origin, &self.ignore_unknown)? {
            Directive::Item(item) => self.items.push(item),
            Directive::IgnoreUnknown(patterns) => self.ignore_unknown.extend(patterns),
            Directive::Host(_) => return Err(unsupported(origin, "Host", " in -o")),
            Directive::Include(_) => return Err(unsupported(origin, "Include", " in -o")),
        }
        Ok(self)
    }

    /// `-p PORT`.
    pub fn port(&mut self, port: u16) -> &mut Self {
        self.push(Key::Port, Value::Port(port))
    }

    /// `-l USER` (or the user of `user@host`, whichever the client lets
    /// win).
    pub fn user(&mut self, user: impl Into<String>) -> &mut Self {
        self.push(Key::User, Value::Text(user.into()))
    }

    /// `-i IDENTITY`. `~` and `%` tokens are expanded as in the file (write
    /// `%%` for a literal `%`).
    pub fn identity_file(&mut self, path: impl Into<String>) -> &mut Self {
        self.push(Key::IdentityFile, Value::Text(path.into()))
    }

    fn push(&mut self, key: Key, value: Value) -> &mut Self {
        self.items.push(Item::Setting { key, value });
        self
    }
}

/// A parsed client config file (with its includes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientConfig {
    hosts: Vec<HostLine>,
    entries: Vec<Entry>,
    home: Option<PathBuf>,
    local_user: Option<String>,
}

impl ClientConfig {
    /// An empty configuration: every host resolves to itself.
    pub fn empty() -> Self {
        ClientConfig {
            home: env_home(),
            local_user: env_user(),
            ..ClientConfig::default()
        }
    }

    /// Reads a config file (`$RSH_HOME/config`, or `-F FILE`). Relative
    /// `Include` names are taken from the file's directory.
    ///
    /// # Errors
    /// [`ConfigFileError::Io`] if the file (or an included one that exists)
    /// cannot be read, [`ConfigFileError::Permissions`] if others can write
    /// it (or an included one), [`ConfigFileError::BadOwner`] if another
    /// user owns it (or an included one), and the line errors for a bad line.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        let path = path.as_ref();
        ClientConfig::load_relative_to(path, path.parent().unwrap_or(Path::new(".")))
    }

    /// Reads a config file whose relative `Include` names are taken from
    /// `base`: for `-F FILE`, pass `$RSH_HOME`, as ssh takes them from
    /// `~/.ssh` whichever file names them.
    ///
    /// # Errors
    /// As [`ClientConfig::load`].
    pub fn load_relative_to(path: &Path, base: &Path) -> Result<Self, ConfigFileError> {
        let text = read_config(path)?;
        ClientConfig::parse_with_base(&text, path, base)
    }

    /// Reads `path` if it exists, else an empty configuration (ssh treats a
    /// missing `~/.ssh/config` the same way).
    ///
    /// # Errors
    /// As [`ClientConfig::load`], except for a missing file.
    pub fn load_if_exists(path: impl AsRef<Path>) -> Result<Self, ConfigFileError> {
        match ClientConfig::load(path.as_ref()) {
            Err(ConfigFileError::Io { cause: source, .. })
                if source.kind() == io::ErrorKind::NotFound && !path.as_ref().exists() =>
            {
                Ok(ClientConfig::empty())
            }
            other => other,
        }
    }

    /// Parses config text; `name` is the file name used in errors, `base`
    /// the directory for relative `Include` names.
    ///
    /// # Errors
    /// The line errors, and those of reading included files.
    pub fn parse_with_base(text: &str, name: &Path, base: &Path) -> Result<Self, ConfigFileError> {
        let mut config = ClientConfig::empty();
        let mut parser = Parser {
            hosts: &mut config.hosts,
            entries: &mut config.entries,
            home: config.home.as_deref(),
            base,
            ignore_unknown: Vec::new(),
        };
        parser.file(text, name, &[], 0)?;
        Ok(config)
    }

    /// Uses `home` for `~` and `%d`, and `user` for `%u` (and `%r` when no
    /// `User` is set), instead of `$HOME` and `$USER`.
    pub fn with_local(mut self, home: Option<PathBuf>, user: Option<String>) -> Self {
        self.home = home;
        self.local_user = user;
        self
    }

    /// Resolves `alias` (the host part of DEST): for each key the first value
    /// obtained from `overrides`, then from the blocks of the file that match
    /// `alias`, in order.
    pub fn resolve(&self, alias: &str, overrides: &Overrides) -> Resolved {
        let alias_lower = alias.to_ascii_lowercase();
        let matched: Vec<bool> = self.hosts.iter().map(|h| h.matches(&alias_lower)).collect();
        let from_file = self
            .entries
            .iter()
            .filter(|e| e.conditions.iter().all(|&i| matched[i]))
            .map(|e| &e.item);
        let mut resolved = Resolved {
            host: alias.to_owned(),
            hostname: alias.to_owned(),
            port: None,
            user: None,
            identity_file: None,
            connect_timeout: None,
            server_alive_interval: None,
            server_alive_count_max: None,
            strict_host_key_checking: None,
            batch_mode: None,
            ignored: Vec::new(),
        };
        let mut seen = HashSet::new();
        let mut identity = None;
        for item in overrides.items.iter().chain(from_file) {
            let (key, value) = match item {
                Item::Ignored(ignored) => {
                    resolved.ignored.push(ignored.clone());
                    continue;
                }
                Item::Setting { key, value } => (*key, value),
            };
            if !seen.insert(key) {
                continue;
            }
            match (key, value) {
                (Key::HostName, Value::Text(v)) => {
                    resolved.hostname = expand_tokens(v, |t| (t == 'h').then(|| alias.to_owned()))
                }
                (Key::Port, Value::Port(v)) => resolved.port = Some(*v),
                (Key::User, Value::Text(v)) => resolved.user = Some(v.clone()),
                (Key::IdentityFile, Value::Text(v)) => identity = Some(v.clone()),
                (Key::ConnectTimeout, Value::Duration(v)) => resolved.connect_timeout = Some(*v),
                (Key::ServerAliveInterval, Value::Duration(v)) => {
                    resolved.server_alive_interval = Some(*v)
                }
                (Key::ServerAliveCountMax, Value::Count(v)) => {
                    resolved.server_alive_count_max = Some(*v)
                }
                (Key::StrictHostKeyChecking, Value::Strict(v)) => {
                    resolved.strict_host_key_checking = Some(*v)
                }
                (Key::BatchMode, Value::Bool(v)) => resolved.batch_mode = Some(*v),
                // parse_value builds each key's own variant.
                _ => {}
            }
        }
        // Expanded last: %h means the resolved HostName and %r the user.
        resolved.identity_file =
            identity.map(|raw| PathBuf::from(self.expand_path(&raw, &resolved)));
        resolved
    }

    fn expand_path(&self, raw: &str, r: &Resolved) -> String {
        let home = self.home.as_ref().map(|h| h.to_string_lossy().into_owned());
        let tilde = match (raw.strip_prefix('~'), &home) {
            (Some(rest), Some(home)) if rest.is_empty() || rest.starts_with('/') => {
                // `~` alone or `~/...`; `~user` is left as written.
                format!("{}{}", home.replace('%', "%%"), rest)
            }
            _ => raw.to_owned(),
        };
        expand_tokens(&tilde, |t| match t {
            'd' => home.clone(),
            'h' => Some(r.hostname.clone()),
            'n' => Some(r.host.clone()),
            'p' => Some(r.port.unwrap_or(crate::DEFAULT_TCP_PORT).to_string()),
            'r' => r.user.clone().or_else(|| self.local_user.clone()),
            'u' => self.local_user.clone(),
            _ => None,
        })
    }
}

fn env_home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

fn env_user() -> Option<String> {
    ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
}

#[cfg(test)]
mod tests;
