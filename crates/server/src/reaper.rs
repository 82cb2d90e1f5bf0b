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
//! - **as a subreaper** (the daemon): every child, `waitpid(-1, WNOHANG)` until
//!   none is left to reap. A status whose pid is a command's leader goes to the
//!   command waiting for it (a registry pid → oneshot); any other is an adopted
//!   orphan and is dropped. Nothing else in the process may wait for its own
//!   children then, which is why commands are spawned with
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

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
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

/// The server's reaper; cheap to clone.
#[derive(Debug, Clone)]
pub struct Reaper {
    inner: Arc<Inner>,
    stop: CancellationToken,
}

#[derive(Debug)]
struct Inner {
    /// Leaders whose commands wait for their status.
    waiting: Mutex<HashMap<i32, oneshot::Sender<ExitStatus>>>,
    /// Reap every child (we are a subreaper), or only registered leaders.
    all_children: bool,
}

impl Reaper {
    /// Starts the reaping task on the current runtime. Reaps every child if
    /// this process is a child subreaper, else only the leaders it spawns.
    pub fn start() -> Reaper {
        Self::start_with(is_subreaper())
    }

    fn start_with(all_children: bool) -> Reaper {
        let inner = Arc::new(Inner {
            waiting: Mutex::new(HashMap::new()),
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
                task_inner.reap();
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
            // Commands still waiting learn that no status will come.
            task_inner.lock().clear();
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
        let mut waiting = self.inner.lock();
        // Under the lock: the reaper cannot take this child's status before
        // it is registered (nor during spawn's own wait for a failed exec).
        let child = start()?;
        let (tx, rx) = oneshot::channel();
        if let Ok(pid) = i32::try_from(child.id()) {
            waiting.insert(pid, tx);
        }
        drop(waiting);
        Ok((
            child,
            LeaderExit {
                rx: Some(rx),
                status: None,
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
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, HashMap<i32, oneshot::Sender<ExitStatus>>> {
        // Every update leaves the map consistent; a panic cannot tear it.
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn reap(&self) {
        let mut waiting = self.lock();
        if self.all_children {
            for _ in 0..MAX_PER_ROUND {
                match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                    Ok(status) => deliver(&mut waiting, status),
                    Err(Errno::EINTR) => continue,
                    Err(err) => {
                        warn!(cause = %err, "waitpid failed");
                        return;
                    }
                }
            }
        } else {
            let pids: Vec<i32> = waiting.keys().copied().collect();
            for pid in pids {
                match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::StillAlive) => {}
                    Ok(status) => deliver(&mut waiting, status),
                    Err(Errno::ECHILD) => {
                        // Someone else waited for it: the status is lost.
                        warn!(pid, "a command's leader was reaped elsewhere");
                        waiting.remove(&pid);
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

fn deliver(waiting: &mut HashMap<i32, oneshot::Sender<ExitStatus>>, status: WaitStatus) {
    let (pid, status) = match status {
        WaitStatus::Exited(pid, code) => (pid, ExitStatus::Code(code)),
        WaitStatus::Signaled(pid, signal, _) => (
            pid,
            ExitStatus::Signal(u8::try_from(signal as i32).unwrap_or(u8::MAX)),
        ),
        // Not asked for (no WUNTRACED / WCONTINUED).
        _ => return,
    };
    match waiting.remove(&pid.as_raw()) {
        Some(tx) => {
            let _ = tx.send(status);
        }
        None => debug!(pid = pid.as_raw(), ?status, "reaped an adopted orphan"),
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

/// A command leader's exit status, once the reaper has it.
#[derive(Debug)]
pub struct LeaderExit {
    rx: Option<oneshot::Receiver<ExitStatus>>,
    status: Option<ExitStatus>,
}

impl LeaderExit {
    /// Waits for the status; `None` if it can never come (the reaper
    /// stopped). Cancel-safe, and may be called again after it returned.
    pub async fn wait(&mut self) -> Option<ExitStatus> {
        if let Some(rx) = &mut self.rx {
            self.status = rx.await.ok();
            self.rx = None;
        }
        self.status.clone()
    }

    /// The status if the leader has been reaped already.
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
