//! The server's list of client keys allowed in.

use std::collections::HashMap;
use std::path::Path;

use crate::lines::{content_lines, read_optional, refuse_if_writable_by_others};
use crate::{Error, Fingerprint, LineWarning};

/// One authorized client key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthorizedKey {
    /// The key's fingerprint.
    pub fingerprint: Fingerprint,
    /// The rest of the line after the fingerprint (may be empty).
    pub comment: String,
}

/// The set of client keys a server lets in.
///
/// The file holds one key per line, `SHA256:<base64> [comment...]`; blank
/// lines and lines starting with `#` are ignored, and malformed lines are
/// skipped with a [`LineWarning`].
#[derive(Clone, Debug, Default)]
pub struct AuthorizedKeys {
    keys: Vec<AuthorizedKey>,
    index: HashMap<Fingerprint, usize>,
}

impl AuthorizedKeys {
    /// Reads the file at `path`. A missing file is an empty set, not an
    /// error; a file that exists but cannot be read is an error.
    pub fn load(path: &Path) -> Result<(AuthorizedKeys, Vec<LineWarning>), Error> {
        refuse_if_writable_by_others(path)?;
        match read_optional(path)? {
            Some(text) => Ok(AuthorizedKeys::parse(&text)),
            None => Ok((AuthorizedKeys::default(), Vec::new())),
        }
    }

    /// Parses the contents of an authorized_keys file.
    pub fn parse(text: &str) -> (AuthorizedKeys, Vec<LineWarning>) {
        let mut set = AuthorizedKeys::default();
        let mut warnings = Vec::new();
        for (line, content) in content_lines(text) {
            let (fp, comment) = match content.split_once(char::is_whitespace) {
                Some((fp, comment)) => (fp, comment.trim()),
                None => (content, ""),
            };
            match fp.parse::<Fingerprint>() {
                Ok(fingerprint) => set.insert(AuthorizedKey {
                    fingerprint,
                    comment: comment.to_owned(),
                }),
                Err(_) => warnings.push(LineWarning {
                    line,
                    message: format!(
                        "expected SHA256:<base64 fingerprint> [comment], found {:?}",
                        truncate(fp)
                    ),
                }),
            }
        }
        (set, warnings)
    }

    /// Adds a key (the first entry for a fingerprint wins on lookup).
    pub fn insert(&mut self, key: AuthorizedKey) {
        self.index.entry(key.fingerprint).or_insert(self.keys.len());
        self.keys.push(key);
    }

    /// The entry for `fingerprint`, if it is authorized.
    pub fn lookup(&self, fingerprint: &Fingerprint) -> Option<&AuthorizedKey> {
        self.index.get(fingerprint).map(|&i| &self.keys[i])
    }

    /// All entries, in file order.
    pub fn keys(&self) -> &[AuthorizedKey] {
        &self.keys
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether no key is authorized.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// At most 60 characters of a bad token, for messages.
pub(crate) fn truncate(s: &str) -> String {
    let mut out: String = s.chars().take(60).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_comments_blanks_and_malformed_lines() {
        let a = Fingerprint::of_spki_der(b"a");
        let b = Fingerprint::of_spki_der(b"b");
        let c = Fingerprint::of_spki_der(b"c");
        let text = format!(
            "# authorized keys\n\
             \n\
             {a} alice@laptop  work key\n\
             \t  \n\
             ssh-ed25519 AAAAC3Nza bob@old\n\
             \x20 {b}\n\
             SHA256:short carol\n\
             {c}\tcarol@desk\n"
        );
        let (set, warnings) = AuthorizedKeys::parse(&text);
        assert_eq!(set.len(), 3);
        assert_eq!(
            set.lookup(&a).map(|k| k.comment.as_str()),
            Some("alice@laptop  work key")
        );
        assert_eq!(set.lookup(&b).map(|k| k.comment.as_str()), Some(""));
        assert_eq!(
            set.lookup(&c).map(|k| k.comment.as_str()),
            Some("carol@desk")
        );
        assert_eq!(set.lookup(&Fingerprint::of_spki_der(b"d")), None);
        let lines: Vec<usize> = warnings.iter().map(|w| w.line).collect();
        assert_eq!(lines, vec![5, 7]);
        assert!(warnings[0].message.contains("ssh-ed25519"));
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (set, warnings) =
            AuthorizedKeys::load(&dir.path().join("nope")).expect("missing file is fine");
        assert!(set.is_empty());
        assert!(warnings.is_empty());
    }

    #[test]
    fn loads_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        let a = Fingerprint::of_spki_der(b"a");
        std::fs::write(&path, format!("{a} a\nbad\n")).expect("write");
        let (set, warnings) = AuthorizedKeys::load(&path).expect("load");
        assert!(set.lookup(&a).is_some());
        assert_eq!(warnings.iter().map(|w| w.line).collect::<Vec<_>>(), vec![2]);
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, format!("{} a\n", Fingerprint::of_spki_der(b"a"))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(
            AuthorizedKeys::load(&path),
            Err(Error::WritableByOthers { mode: 0o666, .. })
        ));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(AuthorizedKeys::load(&path).is_ok());
    }
}
