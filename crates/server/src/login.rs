//! What a version-2 Exec may ask beyond a command: which user to run as, the
//! user's login shell, a pty. Checked after the request is found well formed
//! and before anything runs: only the user can be refused (the server runs
//! everything as itself); login shells and ptys are always served.
//!
//! Also who that user is ([`Account`]): what a login shell, on pipes or on
//! a pty, is started with.

use rsh_proto::{ErrorKind, Exec};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
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
    // A pty and a login shell are always served.
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

/// The server user, as the passwd entry (or, failing that, the daemon's
/// environment) describes them. Also what a login shell on pipes (a v2
/// `login_shell` request without a pty) needs.
#[derive(Debug, Clone)]
pub struct Account {
    /// User name (`USER`, `LOGNAME`).
    pub name: OsString,
    /// Home directory (`HOME`, and where sessions start); `/` if the
    /// passwd entry's is not a directory, as sshd does.
    pub home: PathBuf,
    /// Login shell (`SHELL`); `/bin/sh` if the entry has none.
    pub shell: PathBuf,
}

/// Looks the server user (the effective uid) up. Blocking (NSS may ask a
/// directory server): call it off the runtime.
pub fn account() -> Account {
    let uid = nix::unistd::geteuid();
    let entry = nix::unistd::User::from_uid(uid).ok().flatten();
    let name = match &entry {
        Some(user) => OsString::from(&user.name),
        None => std::env::var_os("USER").unwrap_or_else(|| uid.to_string().into()),
    };
    let home = entry
        .as_ref()
        .map(|user| user.dir.clone())
        .filter(|dir| !dir.as_os_str().is_empty())
        .or_else(|| std::env::var_os("HOME").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    // As sshd: a home that is not there is not fatal, the shell starts in /.
    let home = if home.is_dir() {
        home
    } else {
        PathBuf::from("/")
    };
    let shell = entry
        .map(|user| user.shell)
        .filter(|shell| !shell.as_os_str().is_empty())
        .unwrap_or_else(|| PathBuf::from("/bin/sh"));
    Account { name, home, shell }
}

/// A login shell's `argv[0]`: `-` and the shell's file name (`-bash`), as
/// login and sshd start it, so it reads the profile.
pub fn login_arg0(shell: &Path) -> OsString {
    let name = shell.file_name().unwrap_or(shell.as_os_str());
    let mut arg0 = OsString::from("-");
    arg0.push(name);
    arg0
}
