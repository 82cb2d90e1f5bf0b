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
//! - A config file writable by group or others is refused, as ssh refuses it.
//!
//! Parsing reads files (and the directories of `Include` globs) and nothing
//! else; resolution is pure.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How deep `Include` may nest, as ssh's `READCONF_MAX_DEPTH`.
pub const MAX_INCLUDE_DEPTH: usize = 16;
/// What `ServerAliveCountMax` is when no configuration sets it (as ssh).
pub const DEFAULT_SERVER_ALIVE_COUNT_MAX: u32 = 3;

/// Where a setting came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of a config file.
    File {
        /// The file.
        path: PathBuf,
        /// The line number, from 1.
        line: usize,
    },
    /// A command-line option (`-o KEY=VALUE`, `-p`, `-l`, `-i`).
    CommandLine,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::CommandLine => f.write_str("command line"),
        }
    }
}

/// A config file or `-o` option that cannot be used. Every variant that is
/// about a line names the file and line (or the command line).
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// A file could not be read.
    #[error("cannot read {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: io::Error,
    },
    /// A config file others could change, refused as ssh refuses it.
    #[error("bad permissions on {path}: it is writable by group or others")]
    Permissions {
        /// The file.
        path: PathBuf,
    },
    /// A keyword neither rsh nor ssh knows.
    #[error("{origin}: Bad configuration option: {keyword}")]
    BadOption {
        /// Where.
        origin: Origin,
        /// The keyword as written.
        keyword: String,
    },
    /// A known keyword with a missing, extra or malformed argument.
    #[error("{origin}: {keyword}: {reason}")]
    BadValue {
        /// Where.
        origin: Origin,
        /// The keyword, as rsh spells it.
        keyword: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A line that cannot be split into a keyword and arguments.
    #[error("{origin}: {reason}")]
    Syntax {
        /// Where.
        origin: Origin,
        /// What is wrong.
        reason: String,
    },
    /// An ssh keyword rsh refuses rather than ignores (`Match`), or one not
    /// allowed where it appears (`Host` or `Include` in `-o`).
    #[error("{origin}: {keyword} is not supported by rsh{hint}")]
    Unsupported {
        /// Where.
        origin: Origin,
        /// The keyword, as rsh spells it.
        keyword: &'static str,
        /// More words, or empty.
        hint: &'static str,
    },
}

/// What to do with a host key the client has not pinned yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// Refuse unknown hosts (`yes`).
    Yes,
    /// Record unknown hosts' keys and go on (`accept-new`, and also `no`,
    /// `off`, `false`: rsh never accepts a changed key).
    AcceptNew,
    /// Ask on the terminal; refuse when there is none (`ask`, the default).
    Ask,
}

impl StrictHostKeyChecking {
    /// The word `ssh -G` prints for it.
    pub fn as_ssh_g(self) -> &'static str {
        match self {
            StrictHostKeyChecking::Yes => "true",
            StrictHostKeyChecking::AcceptNew => "accept-new",
            StrictHostKeyChecking::Ask => "ask",
        }
    }
}

/// An ssh option that was accepted and has no effect in rsh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ignored {
    /// The keyword as written.
    pub keyword: String,
    /// Its arguments, joined by single spaces.
    pub value: String,
    /// Where it was given.
    pub origin: Origin,
}

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

/// The keys rsh acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Key {
    HostName,
    Port,
    User,
    IdentityFile,
    ConnectTimeout,
    ServerAliveInterval,
    ServerAliveCountMax,
    StrictHostKeyChecking,
    BatchMode,
}

impl Key {
    const ALL: [Key; 9] = [
        Key::HostName,
        Key::Port,
        Key::User,
        Key::IdentityFile,
        Key::ConnectTimeout,
        Key::ServerAliveInterval,
        Key::ServerAliveCountMax,
        Key::StrictHostKeyChecking,
        Key::BatchMode,
    ];

    fn name(self) -> &'static str {
        match self {
            Key::HostName => "HostName",
            Key::Port => "Port",
            Key::User => "User",
            Key::IdentityFile => "IdentityFile",
            Key::ConnectTimeout => "ConnectTimeout",
            Key::ServerAliveInterval => "ServerAliveInterval",
            Key::ServerAliveCountMax => "ServerAliveCountMax",
            Key::StrictHostKeyChecking => "StrictHostKeyChecking",
            Key::BatchMode => "BatchMode",
        }
    }

    fn lookup(keyword: &str) -> Option<Key> {
        Key::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(keyword))
    }
}

/// OpenSSH client keywords (ssh_config(5), current and deprecated) that rsh
/// accepts and ignores. Lowercase.
const SSH_KEYWORDS: &[&str] = &[
    "addkeystoagent",
    "addressfamily",
    "batchmode",
    "bindaddress",
    "bindinterface",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "casignaturealgorithms",
    "certificatefile",
    "challengeresponseauthentication",
    "channeltimeout",
    "checkhostip",
    "cipher",
    "ciphers",
    "clearallforwardings",
    "compression",
    "compressionlevel",
    "connectionattempts",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "dsaauthentication",
    "dynamicforward",
    "enableescapecommandline",
    "enablesshkeysign",
    "escapechar",
    "exitonforwardfailure",
    "fallbacktorsh",
    "fingerprinthash",
    "forkafterauthentication",
    "forwardagent",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "globalknownhostsfile",
    "gssapiauthentication",
    "gssapiclientidentity",
    "gssapidelegatecredentials",
    "gssapikeyexchange",
    "gssapirenewalforcesrekey",
    "gssapiserveridentity",
    "gssapitrustdns",
    "hashknownhosts",
    "hostbasedacceptedalgorithms",
    "hostbasedauthentication",
    "hostbasedkeytypes",
    "hostkeyalgorithms",
    "hostkeyalias",
    "identitiesonly",
    "identityagent",
    "ipqos",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "kexalgorithms",
    "knownhostscommand",
    "localcommand",
    "localforward",
    "loglevel",
    "logverbose",
    "macs",
    "nohostauthenticationforlocalhost",
    "numberofpasswordprompts",
    "obscurekeystroketiming",
    "passwordauthentication",
    "permitlocalcommand",
    "permitremoteopen",
    "pkcs11provider",
    "preferredauthentications",
    "protocol",
    "proxycommand",
    "proxyjump",
    "proxyusefdpass",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthentication",
    "rekeylimit",
    "remotecommand",
    "remoteforward",
    "requesttty",
    "requiredrsasize",
    "revokedhostkeys",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "sendenv",
    "sessiontype",
    "setenv",
    "smartcarddevice",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "syslogfacility",
    "tag",
    "tcpkeepalive",
    "tunnel",
    "tunneldevice",
    "updatehostkeys",
    "usekeychain",
    "useprivilegedport",
    "useroaming",
    "userknownhostsfile",
    "verifyhostkeydns",
    "visualhostkey",
    "warnweakcrypto",
    "xauthlocation",
];

/// A typed value of a [`Key`]. Paths and host names keep their tokens until
/// resolution, where the host is known.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Text(String),
    Port(u16),
    Duration(Duration),
    Count(u32),
    Strict(StrictHostKeyChecking),
    Bool(bool),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Setting { key: Key, value: Value },
    Ignored(Ignored),
}

/// One setting with the `Host` lines (indices into `ClientConfig::hosts`)
/// that must all match for it to apply: the enclosing block's, and those of
/// the blocks around the `Include`s that led to its file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    conditions: Vec<usize>,
    item: Item,
}

/// One `Host` line: (negated, lowercase pattern) pairs.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostLine(Vec<(bool, String)>);

impl HostLine {
    fn matches(&self, alias_lower: &str) -> bool {
        let mut positive = false;
        for (negated, pattern) in &self.0 {
            if glob_match(pattern.as_bytes(), alias_lower.as_bytes()) {
                if *negated {
                    return false;
                }
                positive = true;
            }
        }
        positive
    }
}

/// `*` matches any run (also empty), `?` any one byte; all else literally.
/// Iterative with one backtrack point, so it is linear-ish and cannot blow up.
fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c == text[t] => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
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

fn unsupported(origin: Origin, keyword: &'static str, hint: &'static str) -> ConfigFileError {
    ConfigFileError::Unsupported {
        origin,
        keyword,
        hint,
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

/// What one line says.
enum Directive {
    Item(Item),
    Host(HostLine),
    Include(Vec<String>),
    IgnoreUnknown(Vec<String>),
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
    /// it, and the line errors for a bad line.
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
            config: &mut config,
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

/// Replaces `%%` by `%` and `%c` by `lookup(c)`; a token with no value is
/// left as written (validation at parse time refuses unknown tokens).
fn expand_tokens(s: &str, lookup: impl Fn(char) -> Option<String>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('%') => out.push('%'),
            Some(t) => match lookup(t) {
                Some(v) => out.push_str(&v),
                None => {
                    out.push('%');
                    out.push(t);
                }
            },
            None => out.push('%'),
        }
    }
    out
}

/// Checks that `s` uses only the `%` tokens in `allowed` (and `%%`).
fn check_tokens(s: &str, allowed: &str) -> Result<(), String> {
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '%' {
            match chars.next() {
                Some('%') => {}
                Some(t) if allowed.contains(t) => {}
                Some(t) => return Err(format!("unknown token %{t}")),
                None => return Err("'%' at the end (write %% for a %)".into()),
            }
        }
    }
    Ok(())
}

fn read_config(path: &Path) -> Result<String, ConfigFileError> {
    let io = |source| ConfigFileError::Io {
        path: path.to_owned(),
        cause: source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(ConfigFileError::Permissions {
            path: path.to_owned(),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

struct Parser<'a> {
    config: &'a mut ClientConfig,
    base: &'a Path,
    /// `IgnoreUnknown` patterns met so far, lowercase. As ssh, they apply to
    /// the lines after them.
    ignore_unknown: Vec<String>,
}

impl Parser<'_> {
    /// Parses one file whose lines all sit under the `outer` conditions.
    fn file(
        &mut self,
        text: &str,
        name: &Path,
        outer: &[usize],
        depth: usize,
    ) -> Result<(), ConfigFileError> {
        let mut conditions = outer.to_vec();
        for (index, line) in text.lines().enumerate() {
            let origin = Origin::File {
                path: name.to_owned(),
                line: index + 1,
            };
            let Some((keyword, args)) = split_line(line, &origin)? else {
                continue;
            };
            match parse_directive(&keyword, &args, &origin, &self.ignore_unknown)? {
                Directive::Host(host) => {
                    self.config.hosts.push(host);
                    conditions = outer.to_vec();
                    conditions.push(self.config.hosts.len() - 1);
                }
                Directive::Item(item) => self.config.entries.push(Entry {
                    conditions: conditions.clone(),
                    item,
                }),
                Directive::IgnoreUnknown(patterns) => self.ignore_unknown.extend(patterns),
                Directive::Include(patterns) => {
                    if depth + 1 > MAX_INCLUDE_DEPTH {
                        return Err(ConfigFileError::Syntax {
                            origin,
                            reason: format!("Include nested deeper than {MAX_INCLUDE_DEPTH}"),
                        });
                    }
                    for pattern in patterns {
                        let pattern = self.include_path(&pattern);
                        for path in glob_paths(&pattern) {
                            let text = read_config(&path)?;
                            self.file(&text, &path, &conditions, depth + 1)?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    fn include_path(&self, pattern: &str) -> PathBuf {
        if let (Some(rest), Some(home)) = (pattern.strip_prefix("~/"), &self.config.home) {
            return home.join(rest);
        }
        self.base.join(pattern)
    }
}

fn split_line(
    line: &str,
    origin: &Origin,
) -> Result<Option<(String, Vec<String>)>, ConfigFileError> {
    let line = line.trim_start_matches([' ', '\t', '\r']);
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let key_end = line
        .find(|c: char| c.is_ascii_whitespace() || c == '=')
        .unwrap_or(line.len());
    let keyword = &line[..key_end];
    if keyword.is_empty() {
        return Err(ConfigFileError::Syntax {
            origin: origin.clone(),
            reason: "missing keyword before '='".into(),
        });
    }
    // ssh's strdelim: whitespace, at most one '=', whitespace.
    let rest = line[key_end..].trim_start_matches(|c: char| c.is_ascii_whitespace());
    let rest = rest.strip_prefix('=').unwrap_or(rest);
    let args = split_args(rest).map_err(|reason| ConfigFileError::Syntax {
        origin: origin.clone(),
        reason: reason.into(),
    })?;
    Ok(Some((keyword.to_owned(), args)))
}

/// Splits arguments as ssh's `argv_split`: whitespace separates, `"` and `'`
/// quote, a backslash escapes a quote, a backslash or a space, and a `#`
/// starting a word begins a comment.
fn split_args(s: &str) -> Result<Vec<String>, &'static str> {
    let mut args = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            chars.next();
        }
        match chars.peek() {
            None | Some('#') => return Ok(args),
            Some(_) => {}
        }
        let mut word = String::new();
        let mut quote: Option<char> = None;
        while let Some(&c) = chars.peek() {
            if quote.is_none() && c.is_ascii_whitespace() {
                break;
            }
            chars.next();
            match (c, quote) {
                ('\\', _) if matches!(chars.peek(), Some('"' | '\'' | '\\' | ' ')) => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                ('"' | '\'', None) => quote = Some(c),
                (c, Some(q)) if c == q => quote = None,
                (c, _) => word.push(c),
            }
        }
        if quote.is_some() {
            return Err("unterminated quote");
        }
        args.push(word);
    }
}

fn parse_directive(
    keyword: &str,
    args: &[String],
    origin: &Origin,
    ignore_unknown: &[String],
) -> Result<Directive, ConfigFileError> {
    let lower = keyword.to_ascii_lowercase();
    match lower.as_str() {
        "host" => {
            if args.is_empty() {
                return Err(bad_value(origin, "Host", "missing pattern"));
            }
            let patterns = args
                .iter()
                .map(|a| match a.strip_prefix('!') {
                    Some(p) => (true, p.to_ascii_lowercase()),
                    None => (false, a.to_ascii_lowercase()),
                })
                .collect();
            return Ok(Directive::Host(HostLine(patterns)));
        }
        "match" => return Err(unsupported(origin.clone(), "Match", " (use Host blocks)")),
        "include" => {
            if args.is_empty() {
                return Err(bad_value(origin, "Include", "missing file name"));
            }
            return Ok(Directive::Include(args.to_vec()));
        }
        "ignoreunknown" => {
            let [list] = args else {
                return Err(bad_value(origin, "IgnoreUnknown", arg_count_reason(args)));
            };
            let patterns = list.split(',').map(|p| p.to_ascii_lowercase()).collect();
            return Ok(Directive::IgnoreUnknown(patterns));
        }
        _ => {}
    }
    if let Some(key) = Key::lookup(keyword) {
        let [arg] = args else {
            return Err(bad_value(origin, key.name(), arg_count_reason(args)));
        };
        let value =
            parse_value(key, arg).map_err(|reason| bad_value(origin, key.name(), reason))?;
        return Ok(Directive::Item(Item::Setting { key, value }));
    }
    let ignorable = SSH_KEYWORDS.contains(&lower.as_str())
        || ignore_unknown
            .iter()
            .any(|p| glob_match(p.as_bytes(), lower.as_bytes()));
    if !ignorable {
        return Err(ConfigFileError::BadOption {
            origin: origin.clone(),
            keyword: keyword.to_owned(),
        });
    }
    Ok(Directive::Item(Item::Ignored(Ignored {
        keyword: keyword.to_owned(),
        value: args.join(" "),
        origin: origin.clone(),
    })))
}

fn arg_count_reason(args: &[String]) -> &'static str {
    if args.is_empty() {
        "missing argument"
    } else {
        "garbage at end of line (quote an argument that has spaces)"
    }
}

fn bad_value(origin: &Origin, keyword: &'static str, reason: impl Into<String>) -> ConfigFileError {
    ConfigFileError::BadValue {
        origin: origin.clone(),
        keyword,
        reason: reason.into(),
    }
}

fn parse_value(key: Key, arg: &str) -> Result<Value, String> {
    Ok(match key {
        Key::HostName => {
            if arg.is_empty()
                || arg.starts_with('-')
                || arg.contains(|c: char| c.is_whitespace() || c == '/')
            {
                return Err(format!("{arg:?} is not a host name or address"));
            }
            check_tokens(arg, "h")?;
            Value::Text(arg.to_owned())
        }
        Key::User => {
            if arg.is_empty() {
                return Err("empty user".into());
            }
            Value::Text(arg.to_owned())
        }
        Key::IdentityFile => {
            check_tokens(arg, "dhnpru")?;
            Value::Text(arg.to_owned())
        }
        Key::Port => match arg.parse::<u16>() {
            Ok(port) if port != 0 => Value::Port(port),
            _ => return Err(format!("{arg:?} is not a port (1-65535)")),
        },
        Key::ConnectTimeout | Key::ServerAliveInterval => Value::Duration(parse_time(arg)?),
        Key::ServerAliveCountMax => {
            Value::Count(arg.parse().map_err(|_| format!("{arg:?} is not a count"))?)
        }
        Key::StrictHostKeyChecking => Value::Strict(match arg.to_ascii_lowercase().as_str() {
            "yes" | "true" => StrictHostKeyChecking::Yes,
            "accept-new" | "no" | "off" | "false" => StrictHostKeyChecking::AcceptNew,
            "ask" => StrictHostKeyChecking::Ask,
            _ => return Err(format!("{arg:?}: expected yes, accept-new, ask or no")),
        }),
        Key::BatchMode => Value::Bool(match arg.to_ascii_lowercase().as_str() {
            "yes" | "true" => true,
            "no" | "false" => false,
            _ => return Err(format!("{arg:?}: expected yes or no")),
        }),
    })
}

/// ssh's time format: seconds, or numbers with `s`, `m`, `h`, `d`, `w`
/// suffixes added up (`90`, `1m30s`).
fn parse_time(arg: &str) -> Result<Duration, String> {
    let bad = || format!("{arg:?} is not a time (seconds, or like 1m30s)");
    if arg.is_empty() {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut rest = arg;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit = match rest.chars().next() {
            None => 1,
            Some(c) => {
                rest = &rest[c.len_utf8()..];
                match c.to_ascii_lowercase() {
                    's' => 1,
                    'm' => 60,
                    'h' => 3600,
                    'd' => 86_400,
                    'w' => 604_800,
                    _ => return Err(bad()),
                }
            }
        };
        total = n
            .checked_mul(unit)
            .and_then(|s| total.checked_add(s))
            .filter(|&s| s <= i32::MAX as u64)
            .ok_or_else(bad)?;
    }
    Ok(Duration::from_secs(total))
}

/// Expands a file name pattern (`*` and `?` in any component, no match for a
/// leading `.` unless written) into the existing paths, sorted as glob(3)
/// sorts them. A name without wildcards is returned if it exists.
fn glob_paths(pattern: &Path) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::new()];
    for component in pattern.components() {
        let part = component.as_os_str().to_string_lossy();
        let mut next = Vec::new();
        for dir in &found {
            if !part.contains(['*', '?']) {
                next.push(dir.join(component));
                continue;
            }
            let listing = if dir.as_os_str().is_empty() {
                std::fs::read_dir(".")
            } else {
                std::fs::read_dir(dir)
            };
            let Ok(listing) = listing else { continue };
            let mut names: Vec<String> = listing
                .filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| !n.starts_with('.') || part.starts_with('.'))
                .filter(|n| glob_match(part.as_bytes(), n.as_bytes()))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|n| dir.join(n)));
        }
        found = next;
    }
    found.retain(|p| p.is_file());
    found
}

#[cfg(test)]
#[path = "ssh_config_tests.rs"]
mod tests;
