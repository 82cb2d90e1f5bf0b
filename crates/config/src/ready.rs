//! The ready file: how a supervisor (a test harness, a benchmark, a service
//! script) learns that the server is listening, on which addresses, and with
//! which host key, without parsing log lines meant for people.
//!
//! With `--ready-file PATH` the server writes PATH once every listener is
//! bound and its signal handlers are installed, and removes it when it exits
//! cleanly. The file is written to a temporary name in the same directory
//! and renamed into place, so a reader never sees half a file: once PATH
//! exists, it is complete. A stale PATH is removed at start, before binding.
//!
//! The format is text, one `KEY VALUE` per line; lines starting with `#` are
//! comments, and readers ignore keys they do not know (later versions may add
//! some):
//!
//! ```text
//! # rsh-server ready file
//! pid 4242
//! endpoint unix /home/me/.rsh/rsh.sock
//! endpoint tcp 127.0.0.1:40123
//! endpoint tcp [::1]:40124
//! fingerprint SHA256:3q2+7w...
//! ```
//!
//! - `pid`: the server's process id.
//! - `endpoint unix PATH` / `endpoint tcp HOST:PORT`: one line per listener,
//!   in the order of the `--listen` options, TCP ports as actually bound
//!   (the real port when 0 was asked). An IPv6 host is in brackets.
//! - `fingerprint`: the host key's fingerprint, as `--fingerprint` prints it
//!   and as known_hosts records it; only when a TCP endpoint is served.

use crate::Endpoint;
use std::io::Write;
use std::path::{Path, PathBuf};

/// What the ready file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyFile {
    /// The server's process id.
    pub pid: u32,
    /// Every listening endpoint, as bound.
    pub endpoints: Vec<Endpoint>,
    /// The host key's fingerprint when TCP is served.
    pub fingerprint: Option<String>,
}

/// Why a ready file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum ReadyFileError {
    /// A socket path the line format cannot carry (a newline in it, or not
    /// UTF-8).
    #[error("{0}: a socket path with a newline or invalid UTF-8 cannot go in the ready file")]
    UnwritablePath(PathBuf),
    /// A line that does not follow the format.
    #[error("ready file line {line}: {reason}")]
    Malformed {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// Writing, renaming or reading failed.
    #[error("ready file {path}: {cause}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The failure.
        /// Not a `#[source]`: the message already ends with it, and a
        /// `{:#}` chain would print it twice.
        cause: std::io::Error,
    },
}

impl ReadyFile {
    /// The file's text.
    ///
    /// # Errors
    /// [`ReadyFileError::UnwritablePath`] for a socket path the format cannot
    /// carry.
    pub fn render(&self) -> Result<String, ReadyFileError> {
        let mut text = format!("# rsh-server ready file\npid {}\n", self.pid);
        for endpoint in &self.endpoints {
            match endpoint {
                Endpoint::Unix(path) => {
                    let shown = path
                        .to_str()
                        .filter(|s| !s.contains('\n'))
                        .ok_or_else(|| ReadyFileError::UnwritablePath(path.clone()))?;
                    text.push_str(&format!("endpoint unix {shown}\n"));
                }
                Endpoint::Tcp { .. } => text.push_str(&format!("endpoint tcp {endpoint}\n")),
            }
        }
        if let Some(fingerprint) = &self.fingerprint {
            text.push_str(&format!("fingerprint {fingerprint}\n"));
        }
        Ok(text)
    }

    /// Parses the file's text; unknown keys and `#` comments are skipped.
    ///
    /// # Errors
    /// [`ReadyFileError::Malformed`] naming the first bad line.
    pub fn parse(text: &str) -> Result<ReadyFile, ReadyFileError> {
        let mut pid = None;
        let mut endpoints = Vec::new();
        let mut fingerprint = None;
        for (index, line) in text.lines().enumerate() {
            let bad = |reason: &str| ReadyFileError::Malformed {
                line: index + 1,
                reason: reason.to_owned(),
            };
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (key, value) = line.split_once(' ').ok_or_else(|| bad("no value"))?;
            match key {
                "pid" => pid = Some(value.parse().map_err(|_| bad("pid is not a number"))?),
                "endpoint" => {
                    let endpoint = match value.split_once(' ') {
                        Some(("unix", path)) if !path.is_empty() => {
                            Endpoint::Unix(PathBuf::from(path))
                        }
                        Some(("tcp", addr)) => addr
                            .parse()
                            .ok()
                            .filter(|e| matches!(e, Endpoint::Tcp { .. }))
                            .ok_or_else(|| bad("not a HOST:PORT address"))?,
                        _ => {
                            return Err(bad(
                                "expected `endpoint unix PATH` or `endpoint tcp HOST:PORT`",
                            ))
                        }
                    };
                    endpoints.push(endpoint);
                }
                "fingerprint" => fingerprint = Some(value.to_owned()),
                _ => {}
            }
        }
        let pid = pid.ok_or(ReadyFileError::Malformed {
            line: 0,
            reason: "no pid line".to_owned(),
        })?;
        Ok(ReadyFile {
            pid,
            endpoints,
            fingerprint,
        })
    }

    /// Writes the file atomically: to a temporary name beside `path`, then
    /// renamed over it. Blocking: call it off the runtime's threads.
    ///
    /// # Errors
    /// [`ReadyFileError::UnwritablePath`] or [`ReadyFileError::Io`].
    pub fn write_atomically(&self, path: &Path) -> Result<(), ReadyFileError> {
        let text = self.render()?;
        let io = |source| ReadyFileError::Io {
            path: path.to_owned(),
            cause: source,
        };
        let mut temp_name = path.as_os_str().to_owned();
        temp_name.push(format!(".tmp.{}", std::process::id()));
        let temp = PathBuf::from(temp_name);
        let written = std::fs::File::create(&temp).and_then(|mut file| {
            file.write_all(text.as_bytes())?;
            file.sync_all()
        });
        if let Err(err) = written.and_then(|()| std::fs::rename(&temp, path)) {
            let _ = std::fs::remove_file(&temp);
            return Err(io(err));
        }
        Ok(())
    }

    /// Reads and parses `path`. Blocking.
    ///
    /// # Errors
    /// [`ReadyFileError::Io`] (for example `NotFound` before the server is
    /// ready) or [`ReadyFileError::Malformed`].
    pub fn read(path: &Path) -> Result<ReadyFile, ReadyFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ReadyFileError::Io {
            path: path.to_owned(),
            cause: source,
        })?;
        ReadyFile::parse(&text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ReadyFile {
        ReadyFile {
            pid: 4242,
            endpoints: vec![
                Endpoint::Unix(PathBuf::from("/tmp/a dir/rsh.sock")),
                Endpoint::Tcp {
                    host: "127.0.0.1".to_owned(),
                    port: 40123,
                },
                Endpoint::Tcp {
                    host: "::1".to_owned(),
                    port: 40124,
                },
            ],
            fingerprint: Some("SHA256:abc+/=".to_owned()),
        }
    }

    #[test]
    fn renders_the_documented_format() {
        let text = sample().render().expect("render");
        assert_eq!(
            text,
            "# rsh-server ready file\npid 4242\nendpoint unix /tmp/a dir/rsh.sock\n\
             endpoint tcp 127.0.0.1:40123\nendpoint tcp [::1]:40124\nfingerprint SHA256:abc+/=\n"
        );
    }

    #[test]
    fn round_trips_and_skips_unknown_keys() {
        let mut text = sample().render().expect("render");
        text.push_str("future-key some value\n# a comment\n\n");
        assert_eq!(ReadyFile::parse(&text).expect("parse"), sample());
    }

    #[test]
    fn refuses_malformed_lines() {
        for text in [
            "endpoint tcp 127.0.0.1:1\n",
            "pid x\n",
            "pid 1\nendpoint sctp 1.2.3.4:5\n",
            "pid 1\nendpoint tcp unix:/x\n",
            "pid\n",
        ] {
            assert!(ReadyFile::parse(text).is_err(), "{text:?} was accepted");
        }
    }

    #[test]
    fn a_newline_in_a_socket_path_is_refused() {
        let ready = ReadyFile {
            pid: 1,
            endpoints: vec![Endpoint::Unix(PathBuf::from("/tmp/a\nb"))],
            fingerprint: None,
        };
        assert!(matches!(
            ready.render(),
            Err(ReadyFileError::UnwritablePath(_))
        ));
    }

    #[test]
    fn written_atomically() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("ready");
        sample().write_atomically(&path).expect("write");
        assert_eq!(ReadyFile::read(&path).expect("read"), sample());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list")
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(
            names,
            vec![std::ffi::OsString::from("ready")],
            "no temp file left"
        );
    }
}
