//! Ending a whole Unix session (`setsid`): finding its members, signalling
//! them, waiting for them to go.
//!
//! A terminal session's shell puts each job in its own process group, so
//! ending "the command's process group" (`process_group`) no longer
//! reaches everything. What does hold everything together is the session: all
//! of them share the session id, which is the pid of the session leader (the
//! shell we spawned). Linux has no `killsession`, so the members are found by
//! scanning `/proc/*/stat` (field 6, `session`) and signalled one by one.
//!
//! A pid cannot be reused while it still names a live session or process
//! group, and the session leader (our child) is not reaped while the
//! session may still be signalled (it stays a zombie, pinned: see the
//! `reaper` module), so the session id is ours for as long as we use it.
//! Between one scan and the signal a member may exit and, in theory, its pid
//! be reused by an unrelated process; the window is one scan long and the
//! kernel hands out pids in increasing order, so this is accepted.
//!
//! Processes that left with `setsid` have another session id and are not
//! touched: they left on purpose.
//!
//! Nothing is reaped here: a zombie member counts as gone. The leader's
//! status belongs to whoever spawned it, and the orphans a session leaves
//! are re-parented to the daemon (the subreaper, see
//! `process_group::become_subreaper`), whose one reaper waits for
//! every child; waiting here as well would race it for statuses.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::time::Instant;

/// Poll interval while waiting for a session to empty.
const POLL: Duration = Duration::from_millis(10);

/// Most `/proc` entries looked at in one scan: far above any real process
/// table, it only bounds the loop.
const MAX_PROC_ENTRIES: usize = 1 << 22;

/// Rounds of polling after SIGKILL (each [`POLL`] long) before giving up on
/// members that cannot die (uninterruptible sleep).
const KILL_ROUNDS: usize = 200;

/// One process of a session, as `/proc/PID/stat` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Its pid.
    pub pid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// Exited but not yet reaped.
    pub zombie: bool,
}

/// Every process (zombies included) whose session id is `sid`.
///
/// Reads `/proc`, which is memory, not disk; still, callers on the runtime
/// should prefer [`members_async`] for big process tables.
pub fn members(sid: u32) -> Vec<Member> {
    rsh_sys::ProcStat::all(MAX_PROC_ENTRIES)
        .into_iter()
        .filter(|stat| stat.session == sid)
        .map(|stat| Member {
            pid: stat.pid,
            pgrp: stat.pgrp,
            zombie: stat.is_zombie(),
        })
        .collect()
}

/// [`members`] off the runtime's threads.
pub async fn members_async(sid: u32) -> Vec<Member> {
    tokio::task::spawn_blocking(move || members(sid))
        .await
        .unwrap_or_default()
}

/// The pids of the session's live (not zombie) processes.
#[cfg(test)]
pub fn session_members(sid: u32) -> Vec<u32> {
    members(sid)
        .into_iter()
        .filter(|member| !member.zombie)
        .map(|member| member.pid)
        .collect()
}

fn signal_pid(pid: u32, signal: Signal) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    // Pid 0 or negative would mean a process group, never a member.
    raw > 0 && !matches!(kill(Pid::from_raw(raw), signal), Err(Errno::ESRCH))
}

fn signal_members(members: &[Member], signal: Signal) -> usize {
    members
        .iter()
        .filter(|member| !member.zombie)
        .filter(|member| signal_pid(member.pid, signal))
        .count()
}

/// Whether any member is left that is not a zombie.
fn any_alive(members: &[Member]) -> bool {
    members.iter().any(|member| !member.zombie)
}

/// Ends the session: SIGTERM (with SIGCONT, so stopped jobs can act on it)
/// to every live member, the leader included if it is still running; then
/// SIGKILL to whatever is left after `grace`. Returns once no member is left
/// running (zombies wait for their reaper), or when the bounded wait after
/// SIGKILL is over (a process in uninterruptible sleep): at most `grace`
/// plus two seconds of polling after SIGKILL.
pub async fn end_session(sid: u32, grace: Duration) {
    let found = members_async(sid).await;
    if !any_alive(&found) {
        return;
    }
    signal_members(&found, Signal::SIGTERM);
    signal_members(&found, Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
        if !any_alive(&members_async(sid).await) {
            return;
        }
    }
    // SIGKILL again each round: a fork that was under way may have added a
    // member since.
    for _ in 0..KILL_ROUNDS {
        let found = members_async(sid).await;
        if !any_alive(&found) {
            return;
        }
        signal_members(&found, Signal::SIGKILL);
        tokio::time::sleep(POLL).await;
    }
}

/// Waits up to `limit` for the session to end on its own (every member gone
/// or a zombie); whether it did.
pub async fn wait_empty(sid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if !any_alive(&members_async(sid).await) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_session_has_us_in_it() {
        let own = std::process::id();
        let Ok(sid) = nix::unistd::getsid(None) else {
            return;
        };
        let sid = u32::try_from(sid.as_raw()).unwrap_or(0);
        assert!(members(sid).iter().any(|member| member.pid == own));
    }
}
