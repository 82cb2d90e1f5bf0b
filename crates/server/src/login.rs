//! What a version-2 Exec may ask beyond a command: which user to run as, the
//! user's login shell, a pty. Checked after the request is found well formed
//! and before anything runs: only the user can be refused (the server runs
//! everything as itself); login shells and ptys are always served.

use rsh_proto::{ErrorKind, Exec};
use tokio::sync::OnceCell;

/// Refuses what this server cannot do for `exec`, with the error kind and
/// the message the client shows.
pub(crate) async fn check(exec: &Exec) -> Result<(), (ErrorKind, String)> {
    if let Some(wanted) = &exec.user {
        let runs_as = server_user().await;
        if wanted.as_slice() != runs_as.as_bytes() {
            // The server has no way to become another user: say so, as sshd
            // would refuse a login it cannot serve. Escaped: the name comes
            // from the network and the message is logged.
            return Err((
                ErrorKind::WrongUser,
                format!(
                    "this server runs commands as {runs_as}; cannot log in as {}",
                    String::from_utf8_lossy(wanted).escape_debug()
                ),
            ));
        }
    }
    // A pty and a login shell are served (see `crate::command`'s spawn).
    Ok(())
}

/// The name of the user the server runs as (its effective uid), from the
/// passwd database; the uid in decimal if it has no entry. Looked up once,
/// off the runtime's threads (NSS may read files or ask a daemon).
pub(crate) async fn server_user() -> &'static str {
    static NAME: OnceCell<String> = OnceCell::const_new();
    NAME.get_or_init(|| async {
        let uid = nix::unistd::Uid::effective();
        let lookup = tokio::task::spawn_blocking(move || nix::unistd::User::from_uid(uid)).await;
        match lookup {
            Ok(Ok(Some(user))) => user.name,
            _ => uid.to_string(),
        }
    })
    .await
}
