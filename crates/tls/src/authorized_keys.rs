//! The server's list of client keys allowed in.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::lines::content_lines;
use crate::trust::{effective_uid, open_regular, Stamp};
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
    /// Reads the file at `path`, on this thread (it may block: on the
    /// runtime use [`AuthorizedKeysFile::refresh`]). A missing file is an
    /// empty set, not an error; a file that exists but cannot be read, or
    /// that is not trusted (see [`crate::trust`]), is an error.
    pub fn load(path: &Path) -> Result<(AuthorizedKeys, Vec<LineWarning>), Error> {
        match open_regular(path, Some(effective_uid()))? {
            Some(file) => Ok(AuthorizedKeys::parse(&file.read_text()?)),
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

/// The outcome of reading an authorized_keys file: the keys, or why the
/// file is not usable (then nobody gets in).
pub type LoadedKeys = Result<Arc<AuthorizedKeys>, Arc<Error>>;

/// An authorized_keys file as the server uses it: checked and re-read for
/// every handshake, but never on the async runtime's threads.
///
/// [`AuthorizedKeysFile::refresh`] reads the file on tokio's blocking pool;
/// concurrent refreshes share one read (so a file that hangs, on a dead NFS
/// server say, holds one thread, not one per connection), and each waits
/// for a read that began after it asked, so a key removed from the file is
/// refused from the next handshake on. Each read checks the file and its
/// directories (see [`crate::trust`]); the contents are parsed again only
/// when the file's inode, size, mtime or ctime changed, and malformed lines
/// are logged once per version of the file.
///
/// The TLS verifier ([`crate::server_config`]) only looks at the result of
/// the latest read ([`AuthorizedKeysFile::current`]): refresh before each
/// handshake.
#[derive(Debug)]
pub struct AuthorizedKeysFile {
    path: PathBuf,
    uid: u32,
    state: Mutex<LoadState>,
    /// The highest request number a finished read covers.
    covered: tokio::sync::watch::Sender<u64>,
}

#[derive(Debug, Default)]
struct LoadState {
    /// Refreshes asked for so far.
    requested: u64,
    /// Whether a blocking read is under way.
    loading: bool,
    snapshot: Option<Snapshot>,
}

#[derive(Clone, Debug)]
struct Snapshot {
    /// The version of the file the keys were parsed from (`None`: missing).
    stamp: Option<Stamp>,
    keys: LoadedKeys,
}

impl AuthorizedKeysFile {
    /// The file at `path`, trusted if owned by this process's effective uid
    /// or root. Nothing is read yet.
    pub fn new(path: PathBuf) -> Arc<AuthorizedKeysFile> {
        AuthorizedKeysFile::with_owner(path, effective_uid())
    }

    /// The file at `path`, trusted if owned by `uid` or root.
    pub fn with_owner(path: PathBuf, uid: u32) -> Arc<AuthorizedKeysFile> {
        Arc::new(AuthorizedKeysFile {
            path,
            uid,
            state: Mutex::new(LoadState::default()),
            covered: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Where the file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The result of the latest finished read, `None` before the first.
    pub fn current(&self) -> Option<LoadedKeys> {
        self.lock().snapshot.as_ref().map(|s| s.keys.clone())
    }

    /// Reads the file now, on this thread (for start-up, before serving).
    pub fn load_blocking(&self) -> LoadedKeys {
        let previous = self.lock().snapshot.clone();
        let snapshot = self.read(previous);
        let keys = snapshot.keys.clone();
        self.lock().snapshot = Some(snapshot);
        keys
    }

    /// Reads the file off the runtime (sharing a read already under way
    /// only if it began after this call) and returns the result. Must be
    /// called inside a tokio runtime. Cancel-safe: a caller that gives up
    /// (a timeout) leaves the read to finish for the next one.
    pub async fn refresh(self: &Arc<Self>) -> LoadedKeys {
        let (target, start) = {
            let mut state = self.lock();
            state.requested += 1;
            let start = !state.loading;
            state.loading = true;
            (state.requested, start)
        };
        let mut covered = self.covered.subscribe();
        if start {
            let this = Arc::clone(self);
            // Log where the caller logs (a thread-local subscriber included).
            let dispatch = tracing::dispatcher::get_default(Clone::clone);
            tokio::task::spawn_blocking(move || {
                tracing::dispatcher::with_default(&dispatch, || this.read_until_covered());
            });
        }
        // The sender lives in `self`, so the channel cannot close.
        let _ = covered.wait_for(|&n| n >= target).await;
        // A finished read always leaves a snapshot.
        self.current().unwrap_or_else(|| {
            Err(Arc::new(Error::io(
                &self.path,
                std::io::Error::other("not read yet"),
            )))
        })
    }

    /// The blocking reader: reads until no refresh is left waiting for a
    /// newer read.
    fn read_until_covered(&self) {
        /// Lets later refreshes start a reader even if this one panics.
        struct Loading<'a>(&'a AuthorizedKeysFile, bool);
        impl Drop for Loading<'_> {
            fn drop(&mut self) {
                if !self.1 {
                    self.0.lock().loading = false;
                }
            }
        }
        let mut guard = Loading(self, false);
        loop {
            let (target, previous) = {
                let state = self.lock();
                (state.requested, state.snapshot.clone())
            };
            let snapshot = self.read(previous);
            let done = {
                let mut state = self.lock();
                state.snapshot = Some(snapshot);
                let done = state.requested == target;
                if done {
                    state.loading = false;
                    guard.1 = true;
                }
                done
            };
            self.covered.send_modify(|n| *n = (*n).max(target));
            if done {
                return;
            }
        }
    }

    /// One read: the trust checks always, the contents only if changed.
    fn read(&self, previous: Option<Snapshot>) -> Snapshot {
        let opened = match open_regular(&self.path, Some(self.uid)) {
            Ok(Some(file)) => file,
            Ok(None) => {
                return Snapshot {
                    stamp: None,
                    keys: Ok(Arc::new(AuthorizedKeys::default())),
                }
            }
            Err(err) => {
                return Snapshot {
                    stamp: None,
                    keys: Err(Arc::new(err)),
                }
            }
        };
        if let Some(previous) = previous {
            if previous.stamp == Some(opened.stamp) && previous.keys.is_ok() {
                return previous;
            }
        }
        let stamp = opened.stamp;
        let keys = opened.read_text().map(|text| {
            let (keys, warnings) = AuthorizedKeys::parse(&text);
            for w in &warnings {
                tracing::warn!(
                    line = w.line,
                    reason = %w.message,
                    path = %self.path.display(),
                    "skipping malformed authorized_keys line"
                );
            }
            Arc::new(keys)
        });
        Snapshot {
            stamp: Some(stamp),
            keys: keys.map_err(Arc::new),
        }
    }

    fn lock(&self) -> MutexGuard<'_, LoadState> {
        // The state is consistent between statements, even after a panic.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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

    #[tokio::test]
    async fn refresh_rereads_only_when_changed_and_rechecks_every_time() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        let file = AuthorizedKeysFile::new(path.clone());
        assert!(file.current().is_none());
        assert!(file.refresh().await.expect("missing is empty").is_empty());
        let a = Fingerprint::of_spki_der(b"a");
        std::fs::write(&path, format!("{a} a\n")).expect("write");
        let first = file.refresh().await.expect("load");
        assert!(first.lookup(&a).is_some());
        let again = file.refresh().await.expect("load");
        assert!(
            Arc::ptr_eq(&first, &again),
            "unchanged file is not re-parsed"
        );
        // Many at once share reads and all see the file.
        let all = futures_join(&file, 50).await;
        assert!(all
            .iter()
            .all(|k| k.as_ref().is_ok_and(|k| k.lookup(&a).is_some())));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
            .expect("chmod");
        let refused = file.refresh().await.expect_err("untrusted");
        assert!(matches!(*refused, Error::Untrusted(_)), "{refused}");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700))
            .expect("chmod");
        std::fs::write(&path, "").expect("truncate");
        assert!(
            file.refresh().await.expect("load").is_empty(),
            "a removed key is gone"
        );
    }

    async fn futures_join(file: &Arc<AuthorizedKeysFile>, n: usize) -> Vec<LoadedKeys> {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..n {
            let file = file.clone();
            tasks.spawn(async move { file.refresh().await });
        }
        let mut out = Vec::new();
        while let Some(done) = tasks.join_next().await {
            out.push(done.expect("task"));
        }
        out
    }

    #[test]
    fn a_file_others_may_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("authorized_keys");
        std::fs::write(&path, format!("{} a\n", Fingerprint::of_spki_der(b"a"))).expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        match AuthorizedKeys::load(&path) {
            Err(Error::Untrusted(untrusted)) => assert_eq!(
                untrusted.to_string(),
                format!("{}: writable by group/others (mode 0666)", path.display())
            ),
            other => panic!("expected Untrusted, got {other:?}"),
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(AuthorizedKeys::load(&path).is_ok());
    }
}
