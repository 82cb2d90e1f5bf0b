//! Shared handling of line-oriented trust files.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

use crate::Error;

/// A line of authorized_keys or known_hosts that was skipped because it is
/// malformed. Such lines are never fatal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LineWarning {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with the line.
    pub message: String,
}

impl fmt::Display for LineWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The contents of a text file, or `None` if it does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, Error> {
    match std::fs::read(path) {
        Ok(bytes) => match String::from_utf8(bytes) {
            Ok(text) => Ok(Some(text)),
            // Invalid UTF-8 lines become warnings rather than failing the file.
            Err(e) => Ok(Some(String::from_utf8_lossy(e.as_bytes()).into_owned())),
        },
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// The meaningful lines of a trust file, with their 1-based numbers:
/// blank lines and `#` comment lines are left out, the rest is trimmed.
pub(crate) fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .map(|(i, line)| (i + 1, line.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
}

/// Refuses a trust file that group or others may write (a missing file is
/// fine: it trusts nobody).
pub(crate) fn refuse_if_writable_by_others(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                Err(Error::WritableByOthers {
                    path: path.to_owned(),
                    mode,
                })
            } else {
                Ok(())
            }
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Io {
            path: path.to_owned(),
            source,
        }),
    }
}
