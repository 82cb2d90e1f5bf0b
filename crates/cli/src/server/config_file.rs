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
//! Which keys there are, and their types and defaults, is
//! [`Settings`]'s business: this module reads the file into it and lays
//! the command line over it.

use super::settings::Settings;
use rsh_config::RshHome;
use std::path::{Path, PathBuf};

/// The file's name in RSH_HOME.
pub(crate) const FILE_NAME: &str = "rsh-server.toml";

/// Why a config file could not be used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConfigFileError {
    /// The file exists (or was named with --config) but cannot be read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
    },
    /// The file, or a directory on its path, could be changed by another
    /// user, or it is not a regular file, or it is too large (the message
    /// names the path and why).
    #[error("{0}")]
    Untrusted(rsh_tls::Error),
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

/// Reads and checks the file at `path`, with the defaults for what it does
/// not set. A missing file is `Ok(None)` unless `required` (named
/// explicitly with --config).
///
/// The file names the shell every command runs under: whoever can write it
/// runs commands as this user, so it is read only as a trust file is
/// (`rsh_tls::trust`, sshd's StrictModes): owned by this user or root and
/// not writable by group or others, nor any directory above it; a regular
/// file (a FIFO is refused, not waited on), at most 1 MiB.
///
/// Blocking: call it before the runtime starts or in `spawn_blocking`.
///
/// # Errors
/// [`ConfigFileError`] naming the file and, for bad content, the line.
pub(crate) fn load(path: &Path, required: bool) -> Result<Option<Settings>, ConfigFileError> {
    let read = rsh_tls::trust::read_trusted_file(path, rsh_tls::trust::effective_uid())
        .map_err(ConfigFileError::Untrusted)?;
    let Some(bytes) = read else {
        if required {
            return Err(ConfigFileError::Io {
                path: path.to_owned(),
                cause: nix::errno::Errno::ENOENT.into(),
            });
        }
        return Ok(None);
    };
    let text = String::from_utf8(bytes).map_err(|_| ConfigFileError::Io {
        path: path.to_owned(),
        cause: std::io::Error::new(std::io::ErrorKind::InvalidData, "not valid UTF-8"),
    })?;
    parse(&text, path).map(Some)
}

/// Parses a config file's text; `path` only names it in errors.
///
/// # Errors
/// [`ConfigFileError::Invalid`] with the line of the first problem.
pub(crate) fn parse(text: &str, path: &Path) -> Result<Settings, ConfigFileError> {
    toml::from_str(text).map_err(|err| ConfigFileError::Invalid {
        path: path.to_owned(),
        line: line_of(text, err.span().map_or(0, |span| span.start)),
        message: err.message().trim_end().to_owned(),
    })
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

/// Where the settings come from: the command line as given at start and the
/// config file it names (or the default one). Kept for SIGHUP, which
/// re-reads the file under the same command line.
#[derive(Debug, Clone)]
pub(crate) struct ConfigSource {
    cli: Settings,
    matches: clap::ArgMatches,
    /// The file.
    pub(crate) path: PathBuf,
    /// Named with --config: a missing file is an error, not "no file".
    required: bool,
}

impl ConfigSource {
    /// The command line `cli`, parsed from `matches`, and the file it names.
    ///
    /// # Errors
    /// No --config and no RSH_HOME to find the file in.
    pub(crate) fn new(cli: Settings, matches: clap::ArgMatches) -> anyhow::Result<ConfigSource> {
        let (path, required) = match &cli.config {
            Some(path) => (path.clone(), true),
            None => (RshHome::from_env()?.dir().join(FILE_NAME), false),
        };
        Ok(ConfigSource {
            cli,
            matches,
            path,
            required,
        })
    }

    /// The effective settings: the command line over the file over the
    /// defaults. Blocking (reads the file).
    ///
    /// # Errors
    /// The file cannot be read or is invalid.
    pub(crate) fn load(&self) -> anyhow::Result<Settings> {
        let mut settings = load(&self.path, self.required)?.unwrap_or_default();
        settings.overlay_command_line(&self.cli, &self.matches);
        Ok(settings)
    }

    /// Whether the file is there (`--check-config` says so when not).
    pub(crate) fn file_exists(&self) -> bool {
        self.path.exists()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::logging::LogFormat;

    fn parse(text: &str) -> Result<Settings, ConfigFileError> {
        super::parse(text, Path::new("rsh-server.toml"))
    }

    #[test]
    fn every_setting_parses() {
        let settings = parse(
            "listen = [\"unix:/tmp/s\", \"127.0.0.1:7022\"]\nshell = \"/bin/bash\"\n\
             max-commands = 3\nshutdown-grace = 30\nkill-grace = 0.5\nlog-format = \"json\"\n\
             log-level = \"debug\"\n",
        )
        .expect("valid");
        assert_eq!(settings.listen.len(), 2);
        assert_eq!(settings.shell, PathBuf::from("/bin/bash"));
        assert_eq!(settings.max_commands, 3);
        assert_eq!(settings.shutdown_grace, 30.0, "an integer is seconds too");
        assert_eq!(settings.kill_grace, 0.5);
        assert_eq!(settings.log_format, LogFormat::Json);
        assert_eq!(settings.log_level.as_deref(), Some("debug"));
        assert_eq!(
            settings.max_connections,
            Settings::default().max_connections
        );
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
        let err = load(&path, false).expect_err("group-writable");
        assert!(
            err.to_string()
                .contains("writable by group/others (mode 0664): refusing to trust it"),
            "{err}"
        );
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let settings = load(&path, false).expect("fine").expect("present");
        assert_eq!(settings.max_commands, 2);
        assert!(load(&dir.path().join("none"), false)
            .expect("missing is fine")
            .is_none());
        assert!(load(&dir.path().join("none"), true).is_err());
    }

    #[test]
    fn an_empty_file_sets_nothing() {
        let settings = parse("# nothing\n").expect("valid");
        assert_eq!(settings.toml_lines(), Settings::default().toml_lines());
    }
}
