//! Ending a whole Unix session (`setsid`) and reaping it.
//!
//! A terminal session's shell puts each job in its own process group, so
//! ending "the command's process group" ([`crate::process_group`]) no longer
//! reaches everything. What does hold everything together is the session: all
//! of them share the session id, which is the pid of the session leader (the
//! shell we spawned). Linux has no `killsession`, so the members are found by
//! scanning `/proc/*/stat` (field 6, `session`) and signalled one by one.
//!
//! A pid cannot be reused while it still names a live session or process
//! group, so as long as any member is left, the session id is still ours.
//! Between one scan and the signal a member may exit and, in theory, its pid
//! be reused by an unrelated process; the window is one scan long and the
//! kernel hands out pids in increasing order, so this is accepted.
//!
//! Processes that left with `setsid` have another session id and are not
//! touched: they left on purpose.
//!
//! Members that become zombies are reaped here when they are our children
//! (orphans are re-parented to us when the daemon is the subreaper, see
//! [`crate::process_group::become_subreaper`]); the leader is never reaped
//! here but through its [`Child`], so tokio keeps its exit status.

use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::time::Duration;
use tokio::process::Child;
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

/// Parses the fields of `/proc/PID/stat` that matter here: state, process
/// group and session. The command name (field 2) is in parentheses and may
/// itself contain spaces and parentheses, so the fields are counted from the
/// last `)`.
fn parse_stat(stat: &str) -> Option<(char, u32, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    let session = fields.next()?.parse().ok()?;
    Some((state, pgrp, session))
}

/// Every process (zombies included) whose session id is `sid`.
///
/// Reads `/proc`, which is memory, not disk; still, callers on the runtime
/// should prefer [`members_async`] for big process tables.
pub fn members(sid: u32) -> Vec<Member> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for entry in entries.take(MAX_PROC_ENTRIES).flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|name| name.parse::<u32>().ok()) else {
            continue;
        };
        // A process may exit between the listing and the read: skip it.
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        if let Some((state, pgrp, session)) = parse_stat(&stat) {
            if session == sid {
                found.push(Member {
                    pid,
                    pgrp,
                    zombie: state == 'Z',
                });
            }
        }
    }
    found
}

/// [`members`] off the runtime's threads.
pub async fn members_async(sid: u32) -> Vec<Member> {
    tokio::task::spawn_blocking(move || members(sid))
        .await
        .unwrap_or_default()
}

/// The pids of the session's live (not zombie) processes.
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

/// Sends `signal` to every live member of the session; returns how many got
/// it.
pub fn signal_session(sid: u32, signal: Signal) -> usize {
    signal_members(&members(sid), signal)
}

fn signal_members(members: &[Member], signal: Signal) -> usize {
    members
        .iter()
        .filter(|member| !member.zombie)
        .filter(|member| signal_pid(member.pid, signal))
        .count()
}

/// Reaps the session's zombies that are our children, except the leader
/// (`sid` itself), whose status belongs to its [`Child`].
fn reap_members(sid: u32, members: &[Member]) {
    for member in members {
        if !member.zombie || member.pid == sid {
            continue;
        }
        let Ok(raw) = i32::try_from(member.pid) else {
            continue;
        };
        // ECHILD: not ours (its parent, still in the session, or init
        // reaps it). Either way there is nothing more to do here.
        let _ = waitpid(Pid::from_raw(raw), Some(WaitPidFlag::WNOHANG));
    }
}

/// Whether any member other than zombies we cannot reap is left.
fn any_alive(members: &[Member]) -> bool {
    members.iter().any(|member| !member.zombie)
}

/// Ends the session: SIGTERM (with SIGCONT, so stopped jobs can act on it)
/// to every member, then SIGKILL to whatever is left after `grace`. Reaps
/// the leader through `leader` and returns its exit status, if it could be
/// had; reaps the other members that are our children.
///
/// Bounded: at most `grace` plus [`KILL_ROUNDS`] polls.
pub async fn end_session(
    sid: u32,
    leader: &mut Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    let mut status = leader.try_wait().ok().flatten();
    let found = members_async(sid).await;
    reap_members(sid, &found);
    if any_alive(&found) || status.is_none() {
        signal_all(&found, leader, Signal::SIGTERM);
        signal_all(&found, leader, Signal::SIGCONT);
        let deadline = Instant::now() + grace;
        loop {
            if status.is_none() {
                status = leader.try_wait().ok().flatten();
            }
            let found = members_async(sid).await;
            reap_members(sid, &found);
            if status.is_some() && !any_alive(&found) {
                return status;
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(POLL).await;
        }
        let found = members_async(sid).await;
        signal_all(&found, leader, Signal::SIGKILL);
        reap_after_kill(sid).await;
    }
    match status {
        Some(status) => Some(status),
        // Bounded, though it cannot take long: the leader got SIGKILL.
        None => tokio::time::timeout(POLL * KILL_ROUNDS as u32, leader.wait())
            .await
            .ok()
            .and_then(Result::ok),
    }
}

/// Signals the live members and the leader, even if `/proc` did not show
/// it (a `Child` that is not yet reaped has its pid; once reaped, none).
fn signal_all(members: &[Member], leader: &Child, signal: Signal) {
    signal_members(members, signal);
    if let Some(pid) = leader.id() {
        if !members.iter().any(|member| member.pid == pid) {
            signal_pid(pid, signal);
        }
    }
}

/// After SIGKILL, members die at once (unless in uninterruptible sleep);
/// reap them as they do, and SIGKILL anything that joined meanwhile (a
/// fork that was under way).
async fn reap_after_kill(sid: u32) {
    for _ in 0..KILL_ROUNDS {
        let found = members_async(sid).await;
        reap_members(sid, &found);
        if !any_alive(&found) {
            return;
        }
        signal_members(&found, Signal::SIGKILL);
        tokio::time::sleep(POLL).await;
    }
}

/// Ends what is left of a session whose leader has already been reaped
/// (background jobs of a shell that exited): SIGTERM, then SIGKILL after
/// `grace`, reaping as they go.
pub async fn sweep_session(sid: u32, grace: Duration) {
    let found = members_async(sid).await;
    reap_members(sid, &found);
    if !any_alive(&found) {
        return;
    }
    signal_members(&found, Signal::SIGTERM);
    signal_members(&found, Signal::SIGCONT);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        let found = members_async(sid).await;
        reap_members(sid, &found);
        if !any_alive(&found) {
            return;
        }
        tokio::time::sleep(POLL).await;
    }
    let found = members_async(sid).await;
    signal_members(&found, Signal::SIGKILL);
    reap_after_kill(sid).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "4242 (a (b) c) S 1 4240 4239 34816 4240 4194560 0";
        assert_eq!(parse_stat(stat), Some(('S', 4240, 4239)));
        let zombie = "7 (sleep) Z 1 7 7 0 -1 4194564";
        assert_eq!(parse_stat(zombie), Some(('Z', 7, 7)));
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

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
