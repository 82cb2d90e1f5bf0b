//! The client's record of server keys.

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::authorized_keys::truncate;
use crate::lines::content_lines;
use crate::trust::open_regular;
use crate::{Error, Fingerprint, LineWarning};

/// One known_hosts entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownHost {
    /// `host:port`, with IPv6 addresses bracketed (`[::1]:7022`); host names
    /// are kept lower-case.
    pub host_port: String,
    /// The server's key fingerprint.
    pub fingerprint: Fingerprint,
}

/// The server keys a client knows, read from a file of
/// `host:port SHA256:<base64>` lines (blank lines and `#` comments allowed,
/// anything after the fingerprint ignored).
#[derive(Clone, Debug, Default)]
pub struct KnownHosts {
    hosts: Vec<KnownHost>,
    warnings: Vec<LineWarning>,
}

/// Whether a server key is the one known for its host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// One of the entries for the host lists this key.
    Known,
    /// The host has no entry: first contact.
    Unknown,
    /// The host has entries and none lists this key: refuse (the host key
    /// changed, or someone is in the middle).
    Changed {
        /// The keys known for the host.
        expected: Vec<Fingerprint>,
    },
}

/// `a`, or `a or b`, for messages about pinned keys.
pub(crate) fn one_of(fingerprints: &[Fingerprint]) -> String {
    let all: Vec<String> = fingerprints.iter().map(ToString::to_string).collect();
    all.join(" or ")
}

/// The known_hosts spelling of a host and port: `host:port`, or
/// `[addr]:port` for an IPv6 address (brackets are added if missing).
pub fn host_port(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Checks a `host:port` and returns its normal (lower-case) form.
fn normalize_host_port(s: &str) -> Option<String> {
    let (host, port) = s.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    if host.is_empty()
        || host.starts_with('#')
        || host.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return None;
    }
    if let Some(inner) = host.strip_prefix('[') {
        let inner = inner.strip_suffix(']')?;
        if inner.is_empty() || inner.contains(['[', ']']) {
            return None;
        }
    } else if host.contains([':', '[', ']']) {
        // An unbracketed IPv6 address is ambiguous.
        return None;
    }
    Some(s.to_ascii_lowercase())
}

impl KnownHosts {
    /// Reads the file at `path`; a missing file is an empty set. Malformed
    /// lines are skipped and listed by [`KnownHosts::warnings`].
    /// Anything but a regular file (a FIFO...) is refused, and at most
    /// [`crate::trust::MAX_TRUST_FILE_LEN`] bytes are read.
    pub fn load(path: &Path) -> Result<KnownHosts, Error> {
        match open_regular(path, None)? {
            Some(file) => Ok(KnownHosts::parse(&file.read_text()?)),
            None => Ok(KnownHosts::default()),
        }
    }

    /// Parses the contents of a known_hosts file.
    pub fn parse(text: &str) -> KnownHosts {
        let mut known = KnownHosts::default();
        for (line, content) in content_lines(text) {
            let mut words = content.split_whitespace();
            let (Some(hp), fp) = (words.next(), words.next()) else {
                continue;
            };
            let Some(host_port) = normalize_host_port(hp) else {
                known.warnings.push(LineWarning {
                    line,
                    message: format!("expected host:port, found {:?}", truncate(hp)),
                });
                continue;
            };
            match fp.map(str::parse::<Fingerprint>) {
                Some(Ok(fingerprint)) => known.hosts.push(KnownHost {
                    host_port,
                    fingerprint,
                }),
                _ => known.warnings.push(LineWarning {
                    line,
                    message: format!(
                        "expected SHA256:<base64 fingerprint> after {hp}, found {:?}",
                        truncate(fp.unwrap_or(""))
                    ),
                }),
            }
        }
        known
    }

    /// Every fingerprint recorded for `host_port` (see [`host_port`] for
    /// the spelling), in file order, without repeats. A host may be listed
    /// more than once (its old and new key during a key change): a server
    /// presenting any of them is the host, as for ssh.
    pub fn fingerprints(&self, host_port: &str) -> Vec<Fingerprint> {
        let wanted = host_port.to_ascii_lowercase();
        let mut found = Vec::new();
        for h in self.hosts.iter().filter(|h| h.host_port == wanted) {
            if !found.contains(&h.fingerprint) {
                found.push(h.fingerprint);
            }
        }
        found
    }

    /// What known_hosts says about `presented` as the key of `host_port`.
    pub fn check(&self, host_port: &str, presented: &Fingerprint) -> HostKeyStatus {
        let known = self.fingerprints(host_port);
        if known.is_empty() {
            HostKeyStatus::Unknown
        } else if known.contains(presented) {
            HostKeyStatus::Known
        } else {
            HostKeyStatus::Changed { expected: known }
        }
    }

    /// All entries, in file order.
    pub fn hosts(&self) -> &[KnownHost] {
        &self.hosts
    }

    /// The malformed lines skipped by [`KnownHosts::load`] or
    /// [`KnownHosts::parse`].
    pub fn warnings(&self) -> &[LineWarning] {
        &self.warnings
    }

    /// Appends `host_port fingerprint` to the file at `path`, creating it
    /// with mode 0600 if it does not exist (its directory must exist).
    pub fn append(path: &Path, host_port: &str, fingerprint: &Fingerprint) -> Result<(), Error> {
        let host_port =
            normalize_host_port(host_port).ok_or_else(|| Error::BadHostPort(host_port.into()))?;
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        // Do not glue the new entry onto a last line without a newline.
        let mut line = String::new();
        let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::End(-1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(|e| Error::io(path, e))?;
            if last[0] != b'\n' {
                line.push('\n');
            }
        }
        line.push_str(&format!("{host_port} {fingerprint}\n"));
        file.write_all(line.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| Error::io(path, e))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn first(known: &KnownHosts, host_port: &str) -> Option<Fingerprint> {
        known.fingerprints(host_port).first().copied()
    }

    #[test]
    fn any_entry_for_the_host_matches() {
        let old = Fingerprint::of_spki_der(b"old");
        let new = Fingerprint::of_spki_der(b"new");
        let other = Fingerprint::of_spki_der(b"other");
        let text = format!("h:1 {old}\nelsewhere:1 {other}\nH:1 {new}\nh:1 {old}\n");
        let known = KnownHosts::parse(&text);
        assert_eq!(known.fingerprints("h:1"), vec![old, new]);
        assert_eq!(known.check("h:1", &old), HostKeyStatus::Known);
        // The second entry counts too (it used to be ignored).
        assert_eq!(known.check("h:1", &new), HostKeyStatus::Known);
        assert_eq!(
            known.check("h:1", &other),
            HostKeyStatus::Changed {
                expected: vec![old, new]
            }
        );
        assert_eq!(known.check("h:2", &old), HostKeyStatus::Unknown);
        assert_eq!(one_of(&[old, new]), format!("{old} or {new}"));
    }

    #[test]
    fn load_refuses_a_fifo() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert!(KnownHosts::load(&path).is_err());
    }

    #[test]
    fn host_port_spelling() {
        assert_eq!(host_port("Example.COM", 22), "example.com:22");
        assert_eq!(host_port("10.0.0.1", 7022), "10.0.0.1:7022");
        assert_eq!(host_port("::1", 7022), "[::1]:7022");
        assert_eq!(host_port("[::1]", 7022), "[::1]:7022");
    }

    #[test]
    fn append_and_lookup() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let a = Fingerprint::of_spki_der(b"a");
        let b = Fingerprint::of_spki_der(b"b");
        let c = Fingerprint::of_spki_der(b"c");

        assert!(KnownHosts::load(&path)
            .expect("missing is empty")
            .hosts()
            .is_empty());
        KnownHosts::append(&path, "server.example:7022", &a).expect("append");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        KnownHosts::append(&path, "[::1]:7022", &b).expect("append v6");
        KnownHosts::append(&path, &host_port("fe80::2", 22), &c).expect("append v6");

        let known = KnownHosts::load(&path).expect("load");
        assert!(known.warnings().is_empty());
        assert_eq!(first(&known, "server.example:7022"), Some(a));
        assert_eq!(first(&known, "SERVER.example:7022"), Some(a));
        assert_eq!(first(&known, "server.example:22"), None);
        assert_eq!(first(&known, "[::1]:7022"), Some(b));
        assert_eq!(first(&known, &host_port("::1", 7022)), Some(b));
        assert_eq!(first(&known, "[fe80::2]:22"), Some(c));
        assert_eq!(first(&known, "::1:7022"), None);

        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            format!("server.example:7022 {a}\n[::1]:7022 {b}\n[fe80::2]:22 {c}\n")
        );
    }

    #[test]
    fn append_refuses_bad_host_port() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let a = Fingerprint::of_spki_der(b"a");
        for bad in [
            "host",
            "host:",
            "host:99999",
            "::1:22",
            "a b:22",
            "h\n:22",
            ":22",
            "[]:22",
        ] {
            assert!(
                matches!(
                    KnownHosts::append(&path, bad, &a),
                    Err(Error::BadHostPort(_))
                ),
                "accepted {bad:?}"
            );
        }
        assert!(!path.exists());
    }

    #[test]
    fn append_after_line_without_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let a = Fingerprint::of_spki_der(b"a");
        let b = Fingerprint::of_spki_der(b"b");
        std::fs::write(&path, format!("# hosts\nh1:1 {a}")).expect("write");
        KnownHosts::append(&path, "h2:2", &b).expect("append");
        let known = KnownHosts::load(&path).expect("load");
        assert_eq!(first(&known, "h1:1"), Some(a));
        assert_eq!(first(&known, "h2:2"), Some(b));
    }

    #[test]
    fn parse_skips_malformed_lines() {
        let a = Fingerprint::of_spki_der(b"a");
        let text = format!(
            "# comment\n\nh1:1 {a} trailing comment\nh2 {a}\nh3:3 nope\nh4:4\n  [::1]:9 {a}\n"
        );
        let known = KnownHosts::parse(&text);
        assert_eq!(first(&known, "h1:1"), Some(a));
        assert_eq!(first(&known, "[::1]:9"), Some(a));
        assert_eq!(known.hosts().len(), 2);
        let lines: Vec<usize> = known.warnings().iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![4, 5, 6]);
    }
}
