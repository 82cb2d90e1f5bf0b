//! Ending a command's whole process group.
//!
//! Every command runs as the leader of a new process group (pgid = its pid),
//! so `killpg` reaches everything it started, however deep, unless a process
//! deliberately left the group (`setsid`).
//!
//! Background members outlive the shell that started them and are re-parented
//! to the nearest subreaper. The daemon makes itself that subreaper
//! ([`become_subreaper`]), and its reaper (the `reaper` module) reaps every child it has,
//! adopted or not; here we only signal and wait for the group to be gone.

use crate::reaper::LeaderExit;
use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use rsh_proto::ExitStatus;
use std::time::Duration;
use tokio::time::Instant;

/// Poll interval while waiting for a group to empty after a signal.
const POLL: Duration = Duration::from_millis(10);
/// After SIGKILL, how long to wait for the group to be reaped.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// Makes this process the reaper of its orphaned descendants (Linux), so
/// a command's background processes are reaped by us, not by init.
pub fn become_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::set_child_subreaper(true).is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// Sends `signal` to the group; `false` if the group no longer exists.
pub(crate) fn signal_group(pgid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(killpg(Pid::from_raw(raw), signal), Err(Errno::ESRCH))
}

/// Whether any process (zombies included) is left in the group.
pub(crate) fn group_exists(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(killpg(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Ends the group: SIGTERM, then SIGKILL to whatever is left after `grace`.
/// Waits for the leader's status (from the reaper) and returns it, if it
/// could be had.
pub(crate) async fn terminate(
    pgid: u32,
    leader: &mut LeaderExit,
    grace: Duration,
) -> Option<ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    // SIGCONT, so a stopped group can act on the SIGTERM.
    signal_group(pgid, Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if leader.try_status().is_some() && !group_exists(pgid) {
            return leader.try_status();
        }
        tokio::time::sleep(POLL).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    // Bounded: the reaper may be gone (server stopping).
    let status = tokio::time::timeout(AFTER_KILL, leader.wait())
        .await
        .ok()
        .flatten();
    wait_until_gone(pgid, AFTER_KILL).await;
    status
}

/// Polls until the group is gone (its members reaped), up to `limit`.
async fn wait_until_gone(pgid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !group_exists(pgid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends what is left of a group whose leader has already been reaped.
pub(crate) async fn sweep(pgid: u32, grace: Duration) {
    if !group_exists(pgid) {
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    signal_group(pgid, Signal::SIGCONT);
    if wait_until_gone(pgid, grace).await {
        return;
    }
    signal_group(pgid, Signal::SIGKILL);
    wait_until_gone(pgid, AFTER_KILL).await;
}
