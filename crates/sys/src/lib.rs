//! The operating-system plumbing more than one rsh crate needs, written
//! once: TCP keepalive settings, `/proc/PID/stat` (the one parser for the
//! server's session scans, the benchmarks and the tests), the open-files
//! limit, and "is this an executable file".
//!
//! Everything here is a thin, synchronous wrapper over a system call or a
//! `/proc` read; callers on an async runtime decide where to run it.
#![deny(missing_docs)]

use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

/// How a TCP connection notices a peer that vanished without FIN or RST.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Between unanswered probes.
    pub interval: Duration,
    /// Unanswered probes before the connection fails.
    pub count: u32,
    /// Also fail the connection when sent data stays unacknowledged for as
    /// long as the probes would take (`TCP_USER_TIMEOUT`): keepalive alone
    /// does not probe while data is outstanding.
    pub user_timeout: bool,
}

impl Keepalive {
    /// Turns keepalive on for `tcp` with these settings (each at least one
    /// second, as the kernel counts them).
    ///
    /// # Errors
    /// The `setsockopt` that failed.
    pub fn apply(&self, tcp: &impl AsFd) -> nix::Result<()> {
        use nix::sys::socket::{setsockopt, sockopt};
        let secs = |d: Duration| u32::try_from(d.as_secs().max(1)).unwrap_or(u32::MAX);
        let count = self.count.max(1);
        setsockopt(tcp, sockopt::KeepAlive, &true)?;
        setsockopt(tcp, sockopt::TcpKeepIdle, &secs(self.idle))?;
        setsockopt(tcp, sockopt::TcpKeepInterval, &secs(self.interval))?;
        setsockopt(tcp, sockopt::TcpKeepCount, &count)?;
        if self.user_timeout {
            let ms = secs(self.idle)
                .saturating_add(secs(self.interval).saturating_mul(count))
                .saturating_mul(1000);
            setsockopt(tcp, sockopt::TcpUserTimeout, &ms)?;
        }
        Ok(())
    }
}

/// The fields of `/proc/PID/stat` rsh looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The process's own pid.
    pub pid: u32,
    /// One letter: `R`, `S`, `D`, `Z` (exited, not yet reaped), `T`...
    pub state: char,
    /// Its parent.
    pub ppid: u32,
    /// Its process group.
    pub pgrp: u32,
    /// Its session.
    pub session: u32,
    /// Its controlling terminal's foreground process group (-1: none).
    pub tpgid: i64,
}

impl ProcStat {
    /// Exited but not yet reaped.
    pub fn is_zombie(&self) -> bool {
        self.state == 'Z'
    }

    /// Parses one `/proc/PID/stat` line. The command name (field 2) is in
    /// parentheses and may itself hold spaces and parentheses, so the fields
    /// are counted from the last `)`.
    pub fn parse(pid: u32, stat: &str) -> Option<ProcStat> {
        let rest = &stat[stat.rfind(')')? + 1..];
        let mut fields = rest.split_ascii_whitespace();
        let state = fields.next()?.chars().next()?;
        let ppid = fields.next()?.parse().ok()?;
        let pgrp = fields.next()?.parse().ok()?;
        let session = fields.next()?.parse().ok()?;
        let _tty_nr = fields.next()?;
        let tpgid = fields.next()?.parse().ok()?;
        Some(ProcStat {
            pid,
            state,
            ppid,
            pgrp,
            session,
            tpgid,
        })
    }

    /// Reads one process's stat; `None` once it is gone (or unreadable).
    pub fn read(pid: u32) -> Option<ProcStat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        ProcStat::parse(pid, &stat)
    }

    /// Every process in `/proc` (at most `limit`; a process that exits
    /// between the listing and its read is skipped).
    pub fn all(limit: usize) -> Vec<ProcStat> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .take(limit)
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(ProcStat::read)
            .collect()
    }
}

/// Whether `pid` exists and has not exited (a zombie counts as gone).
pub fn is_alive(pid: u32) -> bool {
    ProcStat::read(pid).is_some_and(|stat| !stat.is_zombie())
}

/// Lifts the soft open-files limit to the hard one (each connection and
/// each command's pipes take descriptors, and 1,024 is too few for a busy
/// server or a big fleet); returns the soft limit now in force (0 if it
/// cannot be read).
pub fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        Err(_) => 0,
    }
}

/// Whether `path` is a regular file with an execute bit set.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a) b (c)) S 1 4242 4242 34816 4300 4194560 0 0";
        let stat = ProcStat::parse(4242, line).expect("parses");
        assert_eq!(stat.state, 'S');
        assert_eq!((stat.ppid, stat.pgrp, stat.session), (1, 4242, 4242));
        assert_eq!(stat.tpgid, 4300);
        assert!(ProcStat::parse(1, "1 (init S 0").is_none());
    }

    #[test]
    fn this_process_is_alive_and_readable() {
        let me = std::process::id();
        let stat = ProcStat::read(me).expect("own stat");
        assert_eq!(stat.pid, me);
        assert!(is_alive(me));
        assert!(ProcStat::all(1 << 20).iter().any(|s| s.pid == me));
    }

    #[test]
    fn keepalive_applies_to_a_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let tcp = std::net::TcpStream::connect(addr).expect("connect");
        let keepalive = Keepalive {
            idle: Duration::from_secs(7),
            interval: Duration::from_secs(2),
            count: 3,
            user_timeout: true,
        };
        keepalive.apply(&tcp).expect("setsockopt");
        use nix::sys::socket::{getsockopt, sockopt};
        assert!(getsockopt(&tcp, sockopt::KeepAlive).expect("get"));
        assert_eq!(getsockopt(&tcp, sockopt::TcpKeepIdle).expect("get"), 7);
        assert_eq!(
            getsockopt(&tcp, sockopt::TcpUserTimeout).expect("get"),
            13_000
        );
    }
}
