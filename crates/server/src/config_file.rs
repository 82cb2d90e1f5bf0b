//! The server's config file, `$RSH_HOME/rsh-server.toml` (or `--config
//! PATH`): every setting the command line has, under the flag's own name
//! without the dashes in front. A flag given on the command line wins over
//! the file, the file over the built-in default.
//!
//! ```toml
//! listen = ["unix:/home/me/.rsh/rsh.sock", "127.0.0.1:7022"]
//! shell = "/bin/bash"
//! max-commands = 16
//! shutdown-grace = 30       # seconds; integers or decimals
//! log-format = "json"
//! log-level = "debug"       # as RUST_LOG: info, debug, rsh_server=trace...
//! ```
//!
//! Unknown keys are errors (a misspelt setting silently ignored is worse
//! than a refused start), reported with the file and line. `rsh-server
//! --check-config` validates the file and prints the effective settings.
//!
//! A new command-line setting gets a field here and a line in
//! `cli::Args::with_file`.

use crate::logging::LogFormat;
use rsh_config::Endpoint;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The file's name in RSH_HOME.
pub const FILE_NAME: &str = "rsh-server.toml";

/// The settings a config file gives; `None` where it says nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FileConfig {
    /// Endpoints to listen on.
    pub listen: Option<Vec<Endpoint>>,
    /// Seconds for the TLS handshake and greeting.
    pub handshake_timeout: Option<f64>,
    /// TLS handshakes in progress at once.
    pub max_startups: Option<usize>,
    /// TCP connections that have not sent a byte yet.
    pub max_silent: Option<usize>,
    /// Connections waiting in line for a handshake place.
    pub max_queued: Option<usize>,
    /// Seconds of quiet before TCP keepalive probes (0: off).
    pub keepalive: Option<f64>,
    /// Seconds a frame may stay half-received.
    pub frame_timeout: Option<f64>,
    /// Bytes of stdin all connections together may have buffered.
    pub stdin_budget: Option<u64>,
    /// Shell running each command.
    pub shell: Option<PathBuf>,
    /// Connections served at once.
    pub max_connections: Option<usize>,
    /// Commands at once per connection.
    pub max_commands: Option<usize>,
    /// Seconds commands may go on after a stop signal.
    pub shutdown_grace: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL.
    pub kill_grace: Option<f64>,
    /// Seconds of idle output after the shell exits.
    pub linger: Option<f64>,
    /// Where to write the ready file.
    pub ready_file: Option<PathBuf>,
    /// Log line format.
    pub log_format: Option<LogFormat>,
    /// Default log filter, as `RUST_LOG` takes it.
    pub log_level: Option<String>,
}

/// The file as written; `listen` entries keep their position for errors.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawFile {
    listen: Option<Vec<toml::Spanned<String>>>,
    handshake_timeout: Option<f64>,
    max_startups: Option<usize>,
    max_silent: Option<usize>,
    max_queued: Option<usize>,
    keepalive: Option<f64>,
    frame_timeout: Option<f64>,
    stdin_budget: Option<u64>,
    shell: Option<PathBuf>,
    max_connections: Option<usize>,
    max_commands: Option<usize>,
    shutdown_grace: Option<f64>,
    kill_grace: Option<f64>,
    linger: Option<f64>,
    ready_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
}

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    /// The file exists (or was named with --config) but cannot be read, or
    /// is writable by group or others.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
    },
    /// The file is not valid TOML or has a bad setting.
    #[error("{}:{line}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the problem.
        line: usize,
        /// What is wrong.
        message: String,
    },
}

impl FileConfig {
    /// Reads and checks the file at `path`. A missing file is `Ok(None)`
    /// unless `required` (named explicitly with --config).
    ///
    /// Blocking: call it before the runtime starts or in `spawn_blocking`.
    ///
    /// # Errors
    /// [`ConfigFileError`] naming the file and, for bad content, the line.
    pub fn load(path: &Path, required: bool) -> Result<Option<FileConfig>, ConfigFileError> {
        let file = std::fs::File::open(path).and_then(|mut file| {
            use std::io::Read;
            use std::os::unix::fs::PermissionsExt;
            // The file names the shell every command runs under: whoever can
            // write it runs commands as this user, as with authorized_keys.
            let mode = file.metadata()?.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!(
                        "writable by group or others (mode {mode:04o}); refusing it (chmod go-w)"
                    ),
                ));
            }
            let mut text = String::new();
            file.read_to_string(&mut text)?;
            Ok(text)
        });
        match file {
            Ok(text) => FileConfig::parse(&text, path).map(Some),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound && !required => Ok(None),
            Err(source) => Err(ConfigFileError::Io {
                path: path.to_owned(),
                cause: source,
            }),
        }
    }

    /// Parses a config file's text; `path` only names it in errors.
    ///
    /// # Errors
    /// [`ConfigFileError::Invalid`] with the line of the first problem.
    pub fn parse(text: &str, path: &Path) -> Result<FileConfig, ConfigFileError> {
        let invalid = |offset: usize, message: String| ConfigFileError::Invalid {
            path: path.to_owned(),
            line: line_of(text, offset),
            message,
        };
        let raw: RawFile = toml::from_str(text).map_err(|err| {
            let offset = err.span().map_or(0, |span| span.start);
            invalid(offset, err.message().trim_end().to_owned())
        })?;
        let listen = match raw.listen {
            None => None,
            Some(entries) => Some(
                entries
                    .into_iter()
                    .map(|entry| {
                        let offset = entry.span().start;
                        entry
                            .get_ref()
                            .parse::<Endpoint>()
                            .map_err(|err| invalid(offset, format!("listen: {err}")))
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(FileConfig {
            listen,
            handshake_timeout: raw.handshake_timeout,
            max_startups: raw.max_startups,
            max_silent: raw.max_silent,
            max_queued: raw.max_queued,
            keepalive: raw.keepalive,
            frame_timeout: raw.frame_timeout,
            stdin_budget: raw.stdin_budget,
            shell: raw.shell,
            max_connections: raw.max_connections,
            max_commands: raw.max_commands,
            shutdown_grace: raw.shutdown_grace,
            kill_grace: raw.kill_grace,
            linger: raw.linger,
            ready_file: raw.ready_file,
            log_format: raw.log_format,
            log_level: raw.log_level,
        })
    }
}

/// Whether the argument `id` was given on the command line (or through its
/// environment variable), so it overrides the file.
pub fn given(matches: &clap::ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(clap::parser::ValueSource::CommandLine | clap::parser::ValueSource::EnvVariable)
    )
}

/// 1-based line number of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    let offset = offset.min(text.len());
    text.as_bytes()[..offset]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Quotes `value` as a TOML string (for printing effective settings).
pub fn toml_string(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FileConfig, ConfigFileError> {
        FileConfig::parse(text, Path::new("rsh-server.toml"))
    }

    #[test]
    fn every_setting_parses() {
        let config = parse(
            "listen = [\"unix:/tmp/s\", \"127.0.0.1:7022\"]\nshell = \"/bin/bash\"\n\
             max-commands = 3\nshutdown-grace = 30\nkill-grace = 0.5\nlog-format = \"json\"\n\
             log-level = \"debug\"\n",
        )
        .expect("valid");
        assert_eq!(config.listen.as_ref().map(Vec::len), Some(2));
        assert_eq!(config.shell, Some(PathBuf::from("/bin/bash")));
        assert_eq!(config.max_commands, Some(3));
        assert_eq!(
            config.shutdown_grace,
            Some(30.0),
            "an integer is seconds too"
        );
        assert_eq!(config.kill_grace, Some(0.5));
        assert_eq!(config.log_format, Some(LogFormat::Json));
        assert_eq!(config.max_connections, None);
    }

    #[test]
    fn errors_name_the_line() {
        let err = parse("shell = \"/bin/sh\"\n\nmax-comands = 3\n").expect_err("unknown key");
        let text = err.to_string();
        assert!(text.starts_with("rsh-server.toml:3: "), "{text}");
        assert!(text.contains("max-comands"), "{text}");

        let err = parse("max-commands = \"many\"\n").expect_err("wrong type");
        assert!(err.to_string().starts_with("rsh-server.toml:1: "), "{err}");

        let err = parse("listen = [\n  \"unix:/ok\",\n  \"host:notaport\",\n]\n")
            .expect_err("bad endpoint");
        assert!(
            err.to_string().starts_with("rsh-server.toml:3: listen: "),
            "{err}"
        );
    }

    #[test]
    fn a_file_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join(FILE_NAME);
        std::fs::write(&path, "max-commands = 2\n").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o664)).expect("chmod");
        let err = FileConfig::load(&path, false).expect_err("group-writable");
        assert!(
            err.to_string().contains("writable by group or others"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let config = FileConfig::load(&path, false)
            .expect("fine")
            .expect("present");
        assert_eq!(config.max_commands, Some(2));
        assert!(FileConfig::load(&dir.path().join("none"), false)
            .expect("missing is fine")
            .is_none());
        assert!(FileConfig::load(&dir.path().join("none"), true).is_err());
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        assert_eq!(parse("# nothing\n").expect("valid"), FileConfig::default());
    }
}
