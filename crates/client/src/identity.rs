//! Our key files: this client's identity (`$RSH_HOME/id` or `-i`'s file)
//! and the comment a new key gets. Only the default key is created on first
//! use: a key file named explicitly (`-i`, `IdentityFile`) that does not
//! exist is an error, as a typo there must not silently mint a new key.

use crate::error::ClientError;
use rsh_config::RshHome;
use rsh_tls::Identity;
use std::path::Path;

/// `user@host`, the default comment of a new client key.
pub(crate) fn default_comment() -> String {
    let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .ok()
        .flatten()
        .map(|user| user.name)
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "user".to_owned());
    let host = nix::unistd::gethostname()
        .ok()
        .and_then(|name| name.into_string().ok())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{user}@{host}")
}

/// Our identity, `$RSH_HOME/id`, created (mode 0600) on first use.
///
/// # Errors
/// [`ClientError::Keys`] if it cannot be created or read.
pub fn client_identity(home: &RshHome) -> Result<Identity, ClientError> {
    identity_at(home, &home.identity_path())
}

/// The identity at `path`. Created (mode 0600) on first use only when
/// `path` is the default one, `$RSH_HOME/id` (`home` is made sure of
/// first); any other path must name an existing key file.
///
/// # Errors
/// [`ClientError::Keys`] if it cannot be read (a missing file other than
/// the default one: "no such identity"), or the default one cannot be
/// created.
pub fn identity_at(home: &RshHome, path: &Path) -> Result<Identity, ClientError> {
    if path == home.identity_path() {
        return create_identity_at(home, path);
    }
    Identity::load(path).map_err(|err| match &err {
        rsh_tls::Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound => {
            ClientError::keys(
                format!(
                    "{0}: no such identity (only the default key, $RSH_HOME/id, is created on first use; --fingerprint with this path as -i creates one here)",
                    path.display()
                ),
                err,
            )
        }
        _ => key_error(path, err),
    })
}

/// The identity at `path`, created (mode 0600) if there is none: for an
/// explicit request to make a key (`rsh-client -i PATH --fingerprint`),
/// never for a connection. `home` is made sure of first.
///
/// # Errors
/// [`ClientError::Keys`] if it cannot be created or read.
pub fn create_identity_at(home: &RshHome, path: &Path) -> Result<Identity, ClientError> {
    home.ensure()
        .map_err(|err| ClientError::keys(err.to_string(), err))?;
    Identity::load_or_create(path, &default_comment()).map_err(|err| key_error(path, err))
}

/// A key file error, the file named once.
fn key_error(path: &Path, err: rsh_tls::Error) -> ClientError {
    // Most of rsh_tls's errors name the file already; say it once.
    let reason = err.to_string();
    let shown = path.display().to_string();
    let message = if reason.contains(&shown) {
        reason
    } else {
        format!("{shown}: {reason}")
    };
    ClientError::keys(message, err)
}
