//! Our key files: this client's identity (`$RSH_HOME/id` or `-i`'s file),
//! created on first use, and the comment a new key gets.

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

/// The identity at `path` (created, mode 0600, on first use); `home` is
/// made sure of first, as the default identity lives there.
///
/// # Errors
/// [`ClientError::Keys`] if it cannot be created or read.
pub fn identity_at(home: &RshHome, path: &Path) -> Result<Identity, ClientError> {
    home.ensure()
        .map_err(|err| ClientError::keys(err.to_string(), err))?;
    Identity::load_or_create(path, &default_comment()).map_err(|err| {
        // Most of rsh_tls's errors name the file already; say it once.
        let reason = err.to_string();
        let shown = path.display().to_string();
        let message = if reason.contains(&shown) {
            reason
        } else {
            format!("{shown}: {reason}")
        };
        ClientError::keys(message, err)
    })
}
