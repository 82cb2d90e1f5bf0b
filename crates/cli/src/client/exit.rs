//! `rsh-client`'s exit codes: the one table the single-host path and the
//! fleet path share, and the mapping from a remote command's status to ours.
//!
//! A remote command's status becomes ours as ssh's does: its exit code
//! (the low 8 bits), 128+N if it died of signal N, 124 if it ran past
//! `--timeout` (as timeout(1)), 255 if it could not start or rsh itself
//! failed (as ssh), 141 when our stdout is a closed pipe (as if SIGPIPE had
//! killed us), 130 after Ctrl-C ended the run (as a shell reports SIGINT).

use rsh_client::{ClientError, ExitStatus};
use std::process::ExitCode;

/// Exit code for a failure of rsh itself (connection, protocol), as ssh
/// uses; a fleet host that could not be reached or refused counts as one.
pub(crate) const EXIT_RSH_FAILURE: u8 = 255;

/// Exit code when the remote command ran past --timeout (as timeout(1) uses).
pub(crate) const EXIT_TIMED_OUT: u8 = 124;

/// Exit code when our stdout is a closed pipe (as if killed by SIGPIPE).
pub(crate) const EXIT_BROKEN_PIPE: u8 = 128 + 13;

/// Exit code after Ctrl-C ended the run (as if killed by SIGINT).
pub(crate) const EXIT_INTERRUPTED: u8 = 128 + 2;

/// Our exit code for a remote command that ended with `status`.
pub(crate) fn status_code(status: &ExitStatus) -> u8 {
    match status {
        ExitStatus::Code(code) => (*code & 0xff) as u8,
        ExitStatus::Signal(signal) => 128u8.saturating_add(*signal),
        ExitStatus::TimedOut => EXIT_TIMED_OUT,
        ExitStatus::FailedToStart(_) => EXIT_RSH_FAILURE,
    }
}

/// Says why rsh failed, on one line of stderr, and gives its exit code.
pub(crate) fn fail(reason: &str) -> ExitCode {
    eprintln!("rsh-client: {reason}");
    ExitCode::from(EXIT_RSH_FAILURE)
}

/// Why a session ended other than with a command's status.
pub(crate) enum Failure {
    /// Our stdout is a closed pipe.
    BrokenPipe,
    /// rsh itself failed.
    Rsh(ClientError),
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Self {
        Failure::Rsh(err)
    }
}

impl Failure {
    /// Our exit code for this failure (saying why on stderr first).
    pub(crate) fn exit_code(self) -> ExitCode {
        match self {
            Failure::BrokenPipe => ExitCode::from(EXIT_BROKEN_PIPE),
            Failure::Rsh(err) => fail(&err.to_string()),
        }
    }
}

/// The one-host exit code for a remote command that ended with `status`,
/// saying on stderr why when the command itself did not say it.
pub(crate) fn exit_code(status: &ExitStatus) -> ExitCode {
    match status {
        ExitStatus::Code(_) | ExitStatus::Signal(_) => {}
        ExitStatus::TimedOut => eprintln!("rsh-client: remote command timed out"),
        ExitStatus::FailedToStart(reason) => {
            eprintln!("rsh-client: remote command failed to start: {reason}");
        }
    }
    ExitCode::from(status_code(status))
}

/// ssh's line for a connection the server ended under a running command.
pub(crate) fn closed_by_remote_host(host: &str) {
    eprintln!("Connection to {host} closed by remote host.");
}

/// A local fatal signal ends the client as modern ssh does: 255, with
/// "Killed by signal N." (the remote side is hung up).
pub(crate) fn killed_by_signal(number: i32) -> ExitCode {
    eprintln!("Killed by signal {number}.");
    ExitCode::from(EXIT_RSH_FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remote_status_maps_as_ssh_and_timeout_map_it() {
        assert_eq!(status_code(&ExitStatus::Code(0)), 0);
        assert_eq!(status_code(&ExitStatus::Code(259)), 3);
        assert_eq!(status_code(&ExitStatus::Signal(9)), 137);
        assert_eq!(status_code(&ExitStatus::Signal(200)), 255);
        assert_eq!(status_code(&ExitStatus::TimedOut), 124);
        assert_eq!(
            status_code(&ExitStatus::FailedToStart("no such file".to_owned())),
            255
        );
    }
}
