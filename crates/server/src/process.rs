//! What a command started and how to end it: the one owner of a command's
//! processes from spawn to reaping.
//!
//! A command started on pipes is the leader of a new process group, and
//! `killpg` reaches everything it started ([`crate::process_group`]). A
//! session on a pty is the leader of a new Unix session, whose shell puts
//! each job in a group of its own, so the unit is the session: it is hung up
//! as a terminal is ([`crate::pty::hang_up`]) and its members found and
//! ended one by one ([`crate::session`]). Either way the leader's status
//! comes from the server's one [`crate::reaper`].
//!
//! [`Started`] holds the unit and the leader's status to come; `end()` ends
//! the unit, politely then firmly, and is the only way the server ends a
//! command. A later unit (a cgroup, a pidfd) is one more variant here.
//!
//! The ids signalled (process group, session) are the leader's pid, so the
//! leader is never reaped while anything may still signal them: `Started`
//! and every task that sweeps after it hold a [`LeaderPin`], which keeps the
//! exited leader a zombie of ours. A reaped leader's pid could be anyone's,
//! and a group or session made with it someone else's.

use crate::process_group;
use crate::pty::{self, PtyControl};
use crate::reaper::{LeaderExit, LeaderPin};
use nix::sys::signal::Signal;
use rsh_proto::{ExitStatus, PtySize};
use std::time::Duration;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn, Instrument};

/// After SIGKILL, how long to wait for a session leader's status.
const AFTER_KILL: Duration = Duration::from_secs(2);

/// What a command started: its process group or its terminal session, and
/// its leader's exit status to come.
#[derive(Debug)]
pub(crate) struct Started {
    unit: Unit,
    leader: LeaderExit,
}

#[derive(Debug)]
enum Unit {
    /// A command on pipes: the group whose id is the leader's pid.
    Group { pgid: u32 },
    /// A session on a pty: the terminal (resize, foreground job, hangup);
    /// the session id is the leader's pid.
    Session(PtyControl),
}

/// What a command on pipes may leave behind once it is over: background
/// jobs still in its process group. Pins the leader until swept.
#[derive(Debug)]
pub(crate) struct Leftovers {
    pgid: Option<u32>,
    pin: Option<LeaderPin>,
}

impl Started {
    /// A command leading the process group `pgid`.
    pub(crate) fn group(pgid: u32, leader: LeaderExit) -> Started {
        Started {
            unit: Unit::Group { pgid },
            leader,
        }
    }

    /// A session leader on the terminal `control`.
    pub(crate) fn session(control: PtyControl, leader: LeaderExit) -> Started {
        Started {
            unit: Unit::Session(control),
            leader,
        }
    }

    /// The leader's pid: the process group's id, and a session's id.
    pub(crate) fn pid(&self) -> u32 {
        match &self.unit {
            Unit::Group { pgid } => *pgid,
            Unit::Session(control) => control.sid(),
        }
    }

    /// What `end()` ends, for the log.
    pub(crate) fn what(&self) -> &'static str {
        match self.unit {
            Unit::Group { .. } => "process group",
            Unit::Session(_) => "session",
        }
    }

    /// The leader's status, once it has exited; `None` if it can never
    /// come (the reaper stopped).
    pub(crate) async fn leader_exit(&mut self) -> Option<ExitStatus> {
        self.leader.wait().await
    }

    /// Delivers a signal the client asked for: to the process group, or
    /// under a pty to the terminal's foreground job (where a typed Ctrl-C
    /// goes).
    pub(crate) fn signal(&self, number: u8) {
        let pgid = match &self.unit {
            Unit::Group { pgid } => *pgid,
            Unit::Session(control) => foreground_or_leader(control),
        };
        match Signal::try_from(i32::from(number)) {
            Ok(signal) => {
                debug!(%signal, pgid, "delivering signal to the process group");
                process_group::signal_group(pgid, signal);
            }
            Err(_) => warn!(number, "ignoring request for an unknown signal"),
        }
    }

    /// Sets a session's terminal size; nothing on pipes.
    pub(crate) fn resize(&self, size: PtySize) {
        if let Unit::Session(control) = &self.unit {
            debug!(cols = size.cols, rows = size.rows, "resizing the terminal");
            if let Err(err) = control.resize(size) {
                warn!(cause = %err, "cannot resize the terminal");
            }
        }
    }

    /// The leader has exited. Under a pty, the jobs the shell left would
    /// hold the terminal, and so the output, open for ever: they are ended
    /// now (in `tracker`), as sshd does. A group's wait for its output.
    pub(crate) fn leader_exited(&self, tracker: &TaskTracker, grace: Duration) {
        if let Unit::Session(control) = &self.unit {
            let (control, pin) = (control.clone(), self.leader.pin());
            tracker.spawn(
                async move {
                    pty::sweep_after_exit(control, grace).await;
                    drop(pin);
                }
                .in_current_span(),
            );
        }
    }

    /// What may be left once the command is over (see [`Leftovers::sweep`]).
    pub(crate) fn leftovers(&self) -> Leftovers {
        match self.unit {
            Unit::Group { pgid } => Leftovers {
                pgid: Some(pgid),
                pin: self.leader.pin(),
            },
            // Swept when its shell exited or it was hung up.
            Unit::Session(_) => Leftovers {
                pgid: None,
                pin: None,
            },
        }
    }

    /// Ends what the command started: the process group gets SIGTERM, then
    /// SIGKILL after `grace`; a session is hung up as a terminal is, and
    /// what is left of it ended the same way. Returns the leader's status,
    /// if it could be had.
    pub(crate) async fn end(mut self, grace: Duration) -> Option<ExitStatus> {
        match self.unit {
            Unit::Group { pgid } => process_group::terminate(pgid, &mut self.leader, grace).await,
            Unit::Session(control) => {
                pty::hang_up(control, grace).await;
                // Bounded: the reaper may be gone (server stopping).
                tokio::time::timeout(AFTER_KILL, self.leader.wait())
                    .await
                    .ok()
                    .flatten()
            }
        }
    }
}

impl Leftovers {
    /// Ends, in `tracker`, whatever is left of a finished command's process
    /// group (background jobs), SIGTERM then SIGKILL after `grace`; the
    /// leader is reaped once that is done.
    pub(crate) fn sweep(self, tracker: &TaskTracker, grace: Duration) {
        if let (Some(pgid), Some(pin)) = (self.pgid, self.pin) {
            tracker.spawn(async move { process_group::sweep(pgid, grace, pin).await });
        }
    }
}

/// Where a signal for a session goes: the terminal's foreground job (where
/// a typed Ctrl-C goes), if that group is still one of the session's; else
/// the session leader's group, whose id the leader's pin keeps ours. The
/// terminal names its foreground group by number even once the group is
/// empty, and an empty group's number may have been handed out again.
fn foreground_or_leader(control: &PtyControl) -> u32 {
    let sid = control.sid();
    control
        .foreground_group()
        .filter(|&pgrp| {
            pgrp == sid
                || crate::session::members(sid)
                    .iter()
                    .any(|member| member.pgrp == pgrp && !member.zombie)
        })
        .unwrap_or(sid)
}
