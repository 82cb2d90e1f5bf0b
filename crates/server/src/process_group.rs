//! Ending a command's whole process group.
//!
//! Every command runs as the leader of a new process group (pgid = its pid),
//! so `killpg` reaches everything it started, however deep, unless a process
//! deliberately left the group (`setsid`).
//!
//! The group's id is the leader's pid, and the leader is not reaped while
//! anything may still signal the group (it stays a zombie, pinned: see the
//! `reaper` module), so `killpg` here never reaches a group that took over
//! a recycled pid.
//!
//! Background members outlive the shell that started them and are re-parented
//! to the nearest subreaper. The daemon makes itself that subreaper
//! ([`become_subreaper`]), and its reaper (the `reaper` module) reaps every child it has,
//! adopted or not; here we only signal and wait for the group to be gone.

use crate::reaper::{LeaderExit, LeaderPin};
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

/// Most `/proc` entries looked at in one scan: far above any real process
/// table, it only bounds the loop.
const MAX_PROC_ENTRIES: usize = 1 << 22;

/// Whether any process that is not a zombie is left in the group. (The
/// leader itself stays a zombie while pinned, so `killpg(pgid, 0)` alone
/// would say yes until it is reaped.)
///
/// A scan of `/proc` grows with the host's process table, so it runs on a
/// blocking thread, never on the runtime's.
async fn group_alive(pgid: u32) -> bool {
    tokio::task::spawn_blocking(move || group_alive_now(pgid))
        .await
        .unwrap_or(true)
}

fn group_alive_now(pgid: u32) -> bool {
    let Ok(raw) = i32::try_from(pgid) else {
        return false;
    };
    if matches!(killpg(Pid::from_raw(raw), None), Err(Errno::ESRCH)) {
        return false;
    }
    rsh_sys::ProcStat::all(MAX_PROC_ENTRIES)
        .iter()
        .any(|stat| stat.pgrp == pgid && !stat.is_zombie())
}

/// Ends the group: SIGTERM, then SIGKILL to whatever is left after `grace`.
/// Waits for the leader's status (from the reaper) and returns it, if it
/// could be had.
///
/// `leader` must pin the group's leader (see `reaper::LeaderPin`): then
/// `pgid` is ours for as long as this runs, even once the group is empty.
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
        if leader.try_status().is_some() && !group_alive(pgid).await {
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

/// Polls until no process of the group is left running, up to `limit`.
async fn wait_until_gone(pgid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !group_alive(pgid).await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Ends what is left of a group whose leader has exited. `_pin` keeps the
/// leader a zombie, so `pgid` is still ours, until this returns.
pub(crate) async fn sweep(pgid: u32, grace: Duration, _pin: LeaderPin) {
    if !group_alive(pgid).await {
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
