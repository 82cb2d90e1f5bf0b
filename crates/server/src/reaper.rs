//! Reaping: the one place where the server waits for its children.
//!
//! The daemon makes itself a child subreaper
//! (`process_group::become_subreaper`): whatever a command starts and
//! abandons (a `setsid -f`, a daemon that double-forks, a background job whose
//! shell exited) is re-parented to the server rather than to init. That keeps
//! the server able to end and reap everything a command left in its group, even
//! inside a container whose init does not reap, but it also makes the server
//! responsible for every such orphan: each one that exits is a zombie of ours
//! until we wait for it. Reaping only by process group missed the ones that
//! left the group on purpose, and leaked a zombie per `setsid -f`.
//!
//! So one task, woken by SIGCHLD (and a slow tick, in case), reaps:
//! - **as a subreaper** (the daemon): every child, until none is left to
//!   reap. A status whose pid is a command's leader goes to the command
//!   waiting for it (a registry pid → oneshot; the leader is held, below);
//!   any other is an adopted orphan and is dropped. Nothing else in the
//!   process may wait for its own children then, which is why commands are spawned with
//!   `std::process::Command` (whose `Child` we never wait on) and not with
//!   `tokio::process`, which reaps its children itself; and a subreaper
//!   process runs one reaper (one `Server`), or two would take each
//!   other's statuses.
//! - **otherwise** (the server as a library inside a test or another program):
//!   orphans go to init, not to us, and other code in the process may have
//!   children of its own, so only the registered leaders are reaped, each by its
//!   pid.
//!
//! Spawning and registering happen under the registry lock, and reaping takes
//! the same lock, so a leader that exits at once is never reaped before its
//! command is registered to receive the status.
//!
//! **A leader is not reaped when it exits.** Its exit is noticed at once
//! (`waitid(.., WNOWAIT)` reads the status and leaves the zombie), and the
//! status goes to its command; the zombie itself stays until every holder
//! of its [`LeaderPin`] is done (the command is over and what was left of
//! its process group or session has been ended). A zombie we own keeps its
//! pid, and so the process group and session ids the server signals, from
//! being handed to anyone else: once reaped, another user's process could
//! get the number and make itself a group leader, and our `killpg` would
//! reach it. So, as a subreaper, `waitpid(-1)` is not used (it would take
//! the held zombies too): the reaper peeks at who is waitable
//! (`waitid(P_ALL, .., WNOWAIT)`), reaps other children by pid, and when the
//! one it sees first is a held leader, finds the other zombie children in
//! `/proc` and reaps those by pid.

use nix::errno::Errno;
use nix::sys::wait::{waitid, waitpid, Id, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rsh_proto::ExitStatus;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// Reaping rounds also run this often without a SIGCHLD: a safety net, not
/// the way statuses normally arrive.
const TICK: Duration = Duration::from_secs(1);
/// Zombies reaped in one round at most; the next SIGCHLD or tick continues.
const MAX_PER_ROUND: usize = 65_536;
/// Most `/proc` entries looked at in one scan for zombie children: far above
/// any real process table, it only bounds the loop.
const MAX_PROC_ENTRIES: usize = 1 << 22;

/// The server's reaper; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    /// The command leaders spawned, until they are reaped.
    leaders: Mutex<HashMap<i32, Leader>>,
    /// Reap every child (we are a subreaper), or only registered leaders.
    all_children: bool,
}

/// One command leader, from spawn until it is reaped.
#[derive(Debug)]
struct Leader {
    /// Where its status goes, until it has gone (or nobody waits any more).
    status: Option<oneshot::Sender<ExitStatus>>,
    /// It has exited: a zombie, held until released.
    exited: bool,
    /// Its [`LeaderPin`]s are all gone: reap it as soon as it has exited.
    released: bool,
}

impl Reaper {
    /// Starts the reaping task on the current runtime. Reaps every child if
    /// this process is a child subreaper, else only the leaders it spawns.
    pub fn start() -> Reaper {
        Self::start_with(is_subreaper())
    }

    fn start_with(all_children: bool) -> Reaper {
        let inner = Arc::new(Inner {
            leaders: Mutex::new(HashMap::new()),
            all_children,
        });
        let stop = CancellationToken::new();
        // Registered before any command is spawned, so no SIGCHLD is missed.
        let sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child());
        if let Err(err) = &sigchld {
            warn!(cause = %err, "cannot watch SIGCHLD; reaping on a timer only");
        }
        let task_inner = inner.clone();
        let task_stop = stop.clone();
        tokio::spawn(async move {
            let mut sigchld = sigchld.ok();
            let mut tick = tokio::time::interval(TICK);
            loop {
                if task_inner.reap() == Round::HeldLeaderFirst {
                    // The other zombie children, found without the lock
                    // (spawns wait on it) and off the runtime's threads (a
                    // scan grows with the process table), then reaped by pid.
                    let zombies = tokio::task::spawn_blocking(zombie_children)
                        .await
                        .unwrap_or_default();
                    task_inner.reap_listed(&zombies);
                }
                tokio::select! {
                    Some(()) = async {
                        match sigchld.as_mut() {
                            Some(stream) => stream.recv().await,
                            None => std::future::pending().await,
                        }
                    } => {}
                    _ = tick.tick() => {}
                    () = task_stop.cancelled() => break,
                }
            }
            // Commands still waiting learn that no status will come; held
            // zombies stay until their pins are released.
            for leader in task_inner.lock().values_mut() {
                leader.status = None;
            }
        });
        Reaper { inner, stop }
    }

    /// Spawns `command` and registers its pid for its exit status.
    ///
    /// # Errors
    /// What [`std::process::Command::spawn`] returns.
    pub fn spawn(
        &self,
        command: &mut std::process::Command,
    ) -> std::io::Result<(std::process::Child, LeaderExit)> {
        self.spawn_with(|| command.spawn())
    }

    /// Runs `start`, which spawns one child (a pty session's, say), and
    /// registers the child's pid for its exit status.
    ///
    /// # Errors
    /// What `start` returns.
    pub fn spawn_with(
        &self,
        start: impl FnOnce() -> std::io::Result<std::process::Child>,
    ) -> std::io::Result<(std::process::Child, LeaderExit)> {
        let mut leaders = self.inner.lock();
        // Under the lock: the reaper cannot take this child's status before
        // it is registered (nor during spawn's own wait for a failed exec).
        let child = start()?;
        let (tx, rx) = oneshot::channel();
        let pin = i32::try_from(child.id()).ok().map(|pid| {
            leaders.insert(
                pid,
                Leader {
                    status: Some(tx),
                    exited: false,
                    released: false,
                },
            );
            LeaderPin(Arc::new(PinnedLeader {
                pid,
                reaper: self.inner.clone(),
            }))
        });
        drop(leaders);
        Ok((
            child,
            LeaderExit {
                rx: Some(rx),
                status: None,
                pin,
            },
        ))
    }

    /// Stops the task; leaders still running get no status.
    pub fn stop(&self) {
        self.stop.cancel();
    }

    /// Leaders registered and not yet reaped (for tests and diagnostics).
    #[cfg(test)]
    pub fn waiting(&self) -> usize {
        self.inner.lock().len()
    }

    /// Runs one reaping round now (tests).
    #[cfg(test)]
    fn reap_now(&self) {
        if self.inner.reap() == Round::HeldLeaderFirst {
            self.inner.reap_listed(&zombie_children());
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, Leader>> {
        // Every update leaves the map consistent; a panic cannot tear it.
        self.leaders
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// One round: leaders checked, other children reaped until none is
    /// waitable, or until a held leader is the one `waitid` shows first.
    fn reap(&self) -> Round {
        let mut leaders = self.lock();
        // Leaders: noticed when they exit, reaped only once released.
        let pids: Vec<i32> = leaders.keys().copied().collect();
        for pid in pids {
            check_leader(&mut leaders, pid);
        }
        if !self.all_children {
            return Round::Done;
        }
        // Every other child: peek at who is waitable, reap it by pid.
        for _ in 0..MAX_PER_ROUND {
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
            match waitid(Id::All, flags) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return Round::Done,
                Ok(status) => match status.pid() {
                    Some(pid) if leaders.contains_key(&pid.as_raw()) => {
                        check_leader(&mut leaders, pid.as_raw());
                        if leaders.contains_key(&pid.as_raw()) {
                            // A held leader comes first and would come
                            // first again: the others are found in /proc.
                            return Round::HeldLeaderFirst;
                        }
                    }
                    Some(pid) => reap_orphan(pid),
                    None => return Round::Done,
                },
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    warn!(cause = %err, "waitid failed");
                    return Round::Done;
                }
            }
        }
        Round::Done
    }

    /// Reaps those of `zombies` that are no held leader.
    fn reap_listed(&self, zombies: &[i32]) {
        let leaders = self.lock();
        for &pid in zombies {
            if !leaders.contains_key(&pid) {
                reap_orphan(Pid::from_raw(pid));
            }
        }
    }

    /// The last pin of `pid` is gone: reap it now if it has exited, else as
    /// soon as it does.
    fn release(&self, pid: i32) {
        let mut leaders = self.lock();
        if let Some(leader) = leaders.get_mut(&pid) {
            leader.released = true;
            check_leader(&mut leaders, pid);
        }
    }
}

/// Notices whether the leader `pid` has exited (its status to its command,
/// the zombie left in place) and reaps it if it is released.
fn check_leader(leaders: &mut HashMap<i32, Leader>, pid: i32) {
    let Some(leader) = leaders.get_mut(&pid) else {
        return;
    };
    if !leader.exited {
        let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT;
        match waitid(Id::Pid(Pid::from_raw(pid)), flags) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => return,
            Ok(status) => {
                leader.exited = true;
                if let (Some(tx), Some(status)) = (leader.status.take(), exit_status(status)) {
                    let _ = tx.send(status);
                }
            }
            Err(Errno::ECHILD) => {
                // Someone else waited for it: the status is lost.
                warn!(pid, "a command's leader was reaped elsewhere");
                leaders.remove(&pid);
                return;
            }
            Err(err) => {
                warn!(pid, cause = %err, "waitid failed");
                return;
            }
        }
    }
    if leader.released {
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::EINTR) => {}
            Ok(_) | Err(_) => {
                leaders.remove(&pid);
            }
        }
    }
}

/// Reaps an adopted orphan (or any child that is no command's leader).
fn reap_orphan(pid: Pid) {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => {}
        Ok(status) => debug!(pid = pid.as_raw(), ?status, "reaped an adopted orphan"),
        Err(err) => debug!(pid = pid.as_raw(), cause = %err, "cannot reap a child"),
    }
}

/// How a reaping round ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Round {
    /// No child is left to reap.
    Done,
    /// The first waitable child is a held leader: others may be waiting
    /// behind it, found only in `/proc`.
    HeldLeaderFirst,
}

/// This process's zombie children, from `/proc`.
fn zombie_children() -> Vec<i32> {
    let own = std::process::id();
    rsh_sys::ProcStat::all(MAX_PROC_ENTRIES)
        .into_iter()
        .filter(|stat| stat.ppid == own && stat.is_zombie())
        .filter_map(|stat| i32::try_from(stat.pid).ok())
        .collect()
}

fn exit_status(status: WaitStatus) -> Option<ExitStatus> {
    match status {
        WaitStatus::Exited(_, code) => Some(ExitStatus::Code(code)),
        WaitStatus::Signaled(_, signal, _) => Some(ExitStatus::Signal(
            u8::try_from(signal as i32).unwrap_or(u8::MAX),
        )),
        // Not asked for (no WSTOPPED / WCONTINUED).
        _ => None,
    }
}

/// Whether this process adopts its orphaned descendants.
fn is_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    {
        nix::sys::prctl::get_child_subreaper().unwrap_or(false)
    }
    #[cfg(not(target_os = "linux"))]
    {
        false
    }
}

/// A command leader's exit status, once the reaper has it; and a pin on
/// the leader (see [`LeaderPin`]).
#[derive(Debug)]
pub struct LeaderExit {
    rx: Option<oneshot::Receiver<ExitStatus>>,
    status: Option<ExitStatus>,
    pin: Option<LeaderPin>,
}

/// Keeps a command's leader from being reaped (a zombie once it has
/// exited) while any clone of it lives: its pid, the id of its process
/// group and session, stays ours and cannot name another user's processes.
/// Whoever may still signal the group or session holds one; the last one
/// dropped lets the reaper reap the leader.
#[derive(Debug, Clone)]
pub struct LeaderPin(
    // Held for its `Drop` only.
    #[allow(dead_code)] Arc<PinnedLeader>,
);

#[derive(Debug)]
struct PinnedLeader {
    pid: i32,
    reaper: Arc<Inner>,
}

impl Drop for PinnedLeader {
    fn drop(&mut self) {
        self.reaper.release(self.pid);
    }
}

impl LeaderExit {
    /// Waits for the status (the leader has exited; it stays a zombie
    /// while pinned); `None` if it can never come (the reaper stopped). Cancel-safe, and may be called again after it returned.
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(rx) = &mut self.rx {
            self.status = rx.await.ok();
            self.rx = None;
        }
        self.status.clone()
    }

    /// A pin on the leader, for a task that may still signal its group or
    /// session after the command is over.
    pub fn pin(&self) -> Option<LeaderPin> {
        self.pin.clone()
    }

    /// The status if the leader has exited already.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if let Some(rx) = &mut self.rx {
            match rx.try_recv() {
                Ok(status) => {
                    self.status = Some(status);
                    self.rx = None;
                }
                Err(oneshot::error::TryRecvError::Closed) => self.rx = None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
        }
        self.status.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status_of(reaper: &Reaper, script: &str) -> Option<ExitStatus> {
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", script]);
        let (_child, mut exit) = reaper.spawn(&mut command).expect("spawn sh");
        tokio::time::timeout(Duration::from_secs(20), exit.wait())
            .await
            .expect("status in time")
    }

    #[tokio::test]
    async fn each_leader_gets_its_own_status() {
        // By pid: this test process is no subreaper and may have other
        // children.
        let reaper = Reaper::start_with(false);
        assert_eq!(
            status_of(&reaper, "exit 3").await,
            Some(ExitStatus::Code(3))
        );
        assert_eq!(
            status_of(&reaper, "kill -9 $$").await,
            Some(ExitStatus::Signal(9))
        );
        // Exits at once: registered before the reaper could take it.
        assert_eq!(
            status_of(&reaper, "exec true").await,
            Some(ExitStatus::Code(0))
        );
        assert_eq!(reaper.waiting(), 0);
        reaper.stop();
    }

    #[tokio::test]
    async fn an_exited_leader_stays_a_zombie_until_released() {
        let reaper = Reaper::start_with(false);
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", "exit 4"]);
        let (child, mut exit) = reaper.spawn(&mut command).expect("spawn sh");
        let pid = child.id();
        let status = tokio::time::timeout(Duration::from_secs(20), exit.wait())
            .await
            .expect("status in time");
        assert_eq!(status, Some(ExitStatus::Code(4)));
        // Its status is known, and its pid still ours: a zombie, pinned.
        let pin = exit.pin();
        drop(exit);
        reaper.reap_now();
        let stat = rsh_sys::ProcStat::read(pid).expect("the leader is still there");
        assert!(stat.is_zombie());
        assert_eq!(reaper.waiting(), 1);
        // The last pin gone, it is reaped.
        drop(pin);
        assert_eq!(reaper.waiting(), 0);
        assert!(rsh_sys::ProcStat::read(pid).is_none());
        reaper.stop();
    }

    #[tokio::test]
    async fn a_stopped_reaper_says_no_status_will_come() {
        let reaper = Reaper::start_with(false);
        let mut command = std::process::Command::new("/bin/sh");
        command.args(["-c", "sleep 5"]);
        let (mut child, mut exit) = reaper.spawn(&mut command).expect("spawn sh");
        reaper.stop();
        let status = tokio::time::timeout(Duration::from_secs(20), exit.wait())
            .await
            .expect("answer in time");
        assert_eq!(status, None);
        let _ = child.kill();
        let _ = child.wait();
    }
}
