//! Our key and `known_hosts`, parsed once per change of the file instead of
//! once per connection: a fan-out to 1,000 hosts would otherwise read and
//! parse the same two files 1,000 times (a quarter of the client's CPU with
//! a 1,000-line `known_hosts`). A file is known by its device, inode, size
//! and modification time, so a host key appended by `--accept-new`, or a
//! key file replaced, is read again at the next connection.

use crate::error::ClientError;
use crate::identity::identity_at;
use rsh_config::RshHome;
use rsh_tls::{Identity, KnownHosts};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What identifies one version of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    path: PathBuf,
    dev: u64,
    ino: u64,
    len: u64,
    mtime: (i64, i64),
}

impl Stamp {
    fn of(path: &Path) -> Option<Stamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(Stamp {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
        })
    }
}

/// The last version read of one kind of file.
struct Slot<T>(Mutex<Option<(Stamp, Arc<T>)>>);

impl<T> Slot<T> {
    const fn new() -> Self {
        Slot(Mutex::new(None))
    }

    fn get(&self, stamp: &Stamp) -> Option<Arc<T>> {
        let cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match &*cached {
            Some((seen, value)) if seen == stamp => Some(value.clone()),
            _ => None,
        }
    }

    fn put(&self, stamp: Option<Stamp>, value: &Arc<T>) {
        let mut cached = self.0.lock().unwrap_or_else(|e| e.into_inner());
        *cached = stamp.map(|stamp| (stamp, value.clone()));
    }
}

static IDENTITIES: Slot<Identity> = Slot::new();
static KNOWN_HOSTS: Slot<KnownHosts> = Slot::new();

/// [`identity_at`], cached per file.
pub(crate) fn identity(home: &RshHome, path: &Path) -> Result<Arc<Identity>, ClientError> {
    // Stamped before reading: a change while we read is seen next time.
    let stamp = Stamp::of(path);
    if let Some(identity) = stamp.as_ref().and_then(|stamp| IDENTITIES.get(stamp)) {
        return Ok(identity);
    }
    let identity = Arc::new(identity_at(home, path)?);
    IDENTITIES.put(stamp, &identity);
    Ok(identity)
}

/// [`KnownHosts::load`], cached.
pub(crate) fn known_hosts(path: &Path) -> Result<Arc<KnownHosts>, rsh_tls::Error> {
    let stamp = Stamp::of(path);
    if let Some(known) = stamp.as_ref().and_then(|stamp| KNOWN_HOSTS.get(stamp)) {
        return Ok(known);
    }
    let known = Arc::new(KnownHosts::load(path)?);
    KNOWN_HOSTS.put(stamp, &known);
    Ok(known)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_hosts_appended_to_is_read_again() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("known_hosts");
        let first = Identity::generate("a").expect("key").fingerprint();
        let second = Identity::generate("b").expect("key").fingerprint();
        KnownHosts::append(&path, "h1:7022", &first).expect("append");
        let known = known_hosts(&path).expect("load");
        assert_eq!(known.fingerprints("h1:7022"), vec![first]);
        KnownHosts::append(&path, "h2:7022", &second).expect("append");
        assert_eq!(
            known_hosts(&path).expect("reload").fingerprints("h2:7022"),
            vec![second]
        );
    }
}
