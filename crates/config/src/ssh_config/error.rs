//! Where a setting came from, and the errors of reading a config file.

use std::fmt;
use std::io;
use std::path::PathBuf;

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
    /// A config file (the main one or an `Include`d one) owned by another
    /// user, refused as ssh refuses it: its owner could change it.
    #[error("bad owner on {path}: owned by uid {owner}, not by this user or root")]
    BadOwner {
        /// The file.
        path: PathBuf,
        /// Its owner's uid.
        owner: u32,
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

/// A keyword rsh refuses where it stands (`Match`; `Host` or `Include` in `-o`).
pub(super) fn unsupported(
    origin: Origin,
    keyword: &'static str,
    hint: &'static str,
) -> ConfigFileError {
    ConfigFileError::Unsupported {
        origin,
        keyword,
        hint,
    }
}
