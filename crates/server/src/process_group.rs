//! Ending a command's whole process group and reaping it.
//!
//! Every command runs as the leader of a new process group (pgid = its pid),
//! so `killpg` reaches everything it started, however deep, unless a process
//! deliberately left the group (`setsid`).
//!
//! Background members outlive the shell that started them and are re-parented
//! to the nearest subreaper. The daemon makes itself that subreaper
//! ([`become_subreaper`]), so it can reap them here with `waitid(P_PGID)`
//! instead of leaving zombies to init.

use nix::errno::Errno;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::process::Child;
use tokio::time::Instant;

/// Poll interval while waiting for a group to empty after SIGTERM.
const POLL: Duration = Duration::from_millis(10);

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

/// Reaps every exited member of the group that is our child. Only call
/// once the leader has been reaped through its `Child` handle, so this never
/// takes the leader's status from tokio.
pub fn reap_group(pgid: u32) {
    use nix::sys::wait::{waitid, Id, WaitPidFlag, WaitStatus};
    let Ok(raw) = i32::try_from(pgid) else {
        return;
    };
    // Bounded: each round reaps one zombie, and a group has finitely many.
    for _ in 0..4096 {
        match waitid(
            Id::PGid(Pid::from_raw(raw)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::StillAlive) | Err(_) => return,
            Ok(_) => continue,
        }
    }
}

/// Sends `signal` to the group; `false` if the group no longer exists.
pub fn signal_group(pgid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(killpg(Pid::from_raw(raw), signal), Err(Errno::ESRCH))
}

/// Whether any process (zombies included) is left in the group.
pub fn group_exists(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    !matches!(killpg(Pid::from_raw(raw), None), Err(Errno::ESRCH))
}

/// Ends the group: SIGTERM, then SIGKILL to whatever is left after `grace`.
/// Reaps the leader (`child`) and returns its exit status, if it could be
/// had.
pub async fn terminate(
    pgid: u32,
    child: &mut Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    signal_group(pgid, Signal::SIGTERM);
    // SIGCONT, so a stopped group can act on the SIGTERM.
    signal_group(pgid, Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    let mut status = None;
    while Instant::now() < deadline {
        if status.is_none() {
            status = child.try_wait().ok().flatten();
        }
        if status.is_some() {
            reap_group(pgid);
            if !group_exists(pgid) {
                return status;
            }
        }
        tokio::time::sleep(POLL).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    let status = match status {
        Some(status) => Some(status),
        None => child.wait().await.ok(),
    };
    reap_after_kill(pgid).await;
    status
}

/// After SIGKILL, members die at once; reap them as they do.
async fn reap_after_kill(pgid: u32) {
    for _ in 0..100 {
        reap_group(pgid);
        if !group_exists(pgid) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends what is left of a group whose leader has already been reaped.
pub async fn sweep(pgid: u32, grace: Duration) {
    reap_group(pgid);
    if !group_exists(pgid) {
        return;
    }
    signal_group(pgid, Signal::SIGTERM);
    signal_group(pgid, Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap_group(pgid);
        if !group_exists(pgid) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    signal_group(pgid, Signal::SIGKILL);
    reap_after_kill(pgid).await;
}
