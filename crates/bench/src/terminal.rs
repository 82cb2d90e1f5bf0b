//! Figure 9: terminal sessions, side by side with `ssh -tt` in the same
//! run. Both clients run with `-tt` (a remote pty although the bench's end is
//! a pipe) and `-e none`, rsh over TLS to its own server, ssh to the private
//! sshd.
//!
//! - Keystroke round trip: the client runs on a local pty (a terminal, as a
//!   user's), the remote side is `cat` on the remote pty in canonical mode,
//!   so each byte typed is echoed by the remote line discipline at once (what
//!   a shell's echo of a typed key costs, without the shell). One byte is
//!   written to the local pty, its echo read back, then the next.
//! - Output: 100 MB of `head -c` through the remote pty, timed from the first
//!   byte to the last, so the connection setup is not in it.

use crate::figures::Bench;
use crate::report::Row;
use crate::rsh::{Listen, RshServer};
use crate::util::Stats;
use anyhow::{bail, Context};
use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIGURE: u8 = 9;
/// Bound on one session (setup, keystrokes or the whole transfer).
const SESSION_LIMIT: Duration = Duration::from_secs(120);
/// Printed by the remote side once it runs (`$((6*7))` so that no echo of a
/// command line could match).
const READY_REMOTE: &str = "echo rsh-bench-$((6*7)); exec cat";
const READY: &[u8] = b"rsh-bench-42";
/// Keystrokes sent before the timed ones.
const WARM_UP: usize = 20;
/// Output through the pty.
const OUTPUT_BYTES: u64 = 100_000_000;

/// The `p`-th percentile (0..=100) of `samples`, nearest rank.
fn percentile(samples: &[f64], p: f64) -> Option<f64> {
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.max(1) - 1).copied()
}

/// Stops a client we spawned (bounded), whatever state it is in.
fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// A client on a local pty (a terminal, as a user's: raw mode and all; a
/// pipe would time other code paths), its remote side `cat`, ready for
/// keystrokes.
struct Typist<'a> {
    child: Child,
    master: std::fs::File,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    _armed: crate::util::Armed<'a>,
}

impl<'a> Typist<'a> {
    fn start(bench: &'a Bench, mut command: Command) -> anyhow::Result<Typist<'a>> {
        let pty = nix::pty::openpty(None, None).context("openpty")?;
        let slave = std::fs::File::from(pty.slave);
        command
            .stdin(slave.try_clone().context("dup")?)
            .stdout(slave.try_clone().context("dup")?)
            .stderr(Stdio::null());
        let child = command.spawn().context("cannot spawn the client")?;
        let armed = bench.watchdog.arm(child.id(), SESSION_LIMIT);
        let master = std::fs::File::from(pty.master);
        let (tx, output) = std::sync::mpsc::channel::<Vec<u8>>();
        let mut reader = master.try_clone().context("dup")?;
        // Ends with EIO once the client (the last slave) is gone.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let typist = Typist {
            child,
            master,
            output,
            _armed: armed,
        };
        let mut seen = Vec::new();
        while !seen.windows(READY.len()).any(|w| w == READY) {
            let chunk = typist
                .output
                .recv_timeout(SESSION_LIMIT)
                .context("the session never became ready")?;
            seen.extend_from_slice(&chunk);
        }
        // The client's raw mode is on (else the local terminal would echo,
        // and the round trip would never leave this machine).
        let raw = nix::sys::termios::tcgetattr(&slave).context("tcgetattr")?;
        if raw
            .local_flags
            .contains(nix::sys::termios::LocalFlags::ECHO)
        {
            bail!("the client did not put its terminal in raw mode");
        }
        Ok(typist)
    }

    /// One keystroke's round trip, in microseconds.
    fn key(&mut self) -> anyhow::Result<f64> {
        let started = Instant::now();
        self.master.write_all(b"a").context("write a keystroke")?;
        // Anything left of the ready line comes first.
        loop {
            let chunk = self.output.recv_timeout(SESSION_LIMIT).context("no echo")?;
            if chunk.contains(&b'a') {
                return Ok(started.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
}

impl Drop for Typist<'_> {
    fn drop(&mut self) {
        // A newline and an end of file end `cat`, and so the session.
        let _ = self.master.write_all(b"\r\x04");
        stop(&mut self.child);
    }
}

/// Keystroke round trips (microseconds) of several clients, taken in turn
/// (one key each, then the next round), so drift hits all alike.
fn type_in_turn(
    typists: &mut [Option<Typist<'_>>],
    keystrokes: usize,
) -> Vec<anyhow::Result<Vec<f64>>> {
    let mut results: Vec<anyhow::Result<Vec<f64>>> = typists
        .iter()
        .map(|_| Ok(Vec::with_capacity(keystrokes)))
        .collect();
    for i in 0..WARM_UP + keystrokes {
        for (typist, result) in typists.iter_mut().zip(results.iter_mut()) {
            let (Some(t), Ok(samples)) = (typist.as_mut(), result.as_mut()) else {
                continue;
            };
            match t.key() {
                Ok(us) if i >= WARM_UP => samples.push(us),
                Ok(_) => {}
                Err(err) => *result = Err(err),
            }
        }
    }
    results
}

impl Bench {
    fn spawn_piped(&self, mut command: Command) -> anyhow::Result<Child> {
        command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot spawn the client")
    }

    /// MB/s of `OUTPUT_BYTES` through the remote pty, first byte to last.
    fn pty_output(&self, command: Command) -> anyhow::Result<f64> {
        let mut child = self.spawn_piped(command)?;
        let _armed = self.watchdog.arm(child.id(), SESSION_LIMIT);
        let result = (|| {
            // Kept open: an end of input is not an end of a pty session.
            let _stdin = child.stdin.take().context("no stdin")?;
            let mut stdout = child.stdout.take().context("no stdout")?;
            let mut buf = vec![0u8; 1 << 20];
            let mut total = 0u64;
            let mut first = None;
            loop {
                let n = stdout.read(&mut buf).context("read")?;
                if n == 0 {
                    break;
                }
                first.get_or_insert_with(Instant::now);
                total += n as u64;
            }
            let seconds = first.map_or(0.0, |at| at.elapsed().as_secs_f64());
            if total != OUTPUT_BYTES {
                bail!("{total} bytes arrived, not {OUTPUT_BYTES}");
            }
            Ok(OUTPUT_BYTES as f64 / 1e6 / seconds)
        })();
        stop(&mut child);
        result
    }

    /// Figure 9: keystroke round trip and output through a pty, rsh and ssh.
    pub fn terminal(&mut self) -> anyhow::Result<()> {
        let (keystrokes, runs) = if self.params.clients >= 1000 {
            (300, 3)
        } else {
            (100, 1)
        };
        let server = RshServer::start(&self.bins, Listen::UnixAndTls)?;
        let dest = server.tls_dest()?;
        let rsh = |remote: &str| server.tty_client(&dest, remote);
        let ssh = |remote: &str| self.sshd.as_ref().map(|sshd| sshd.ssh_tty(remote));

        let rsh_typist = Typist::start(self, rsh(READY_REMOTE));
        let ssh_typist = ssh(READY_REMOTE).map(|command| Typist::start(self, command));
        let mut typists = Vec::new();
        let mut start_errors = Vec::new();
        for typist in [Some(rsh_typist), ssh_typist].into_iter().flatten() {
            match typist {
                Ok(typist) => {
                    typists.push(Some(typist));
                    start_errors.push(None);
                }
                Err(err) => {
                    typists.push(None);
                    start_errors.push(Some(err));
                }
            }
        }
        let mut results = type_in_turn(&mut typists, keystrokes).into_iter();
        drop(typists);
        let mut start_errors = start_errors.into_iter();
        let mut next_result = || -> anyhow::Result<Vec<f64>> {
            let result = results.next().unwrap_or_else(|| Ok(Vec::new()));
            match start_errors.next().flatten() {
                Some(err) => Err(err),
                None => result,
            }
        };
        let rsh_keys = next_result();
        let ssh_keys = self.sshd.as_ref().map(|_| next_result());
        let output = format!("head -c {OUTPUT_BYTES} /dev/zero");
        let mut rsh_out = Vec::new();
        let mut ssh_out = Vec::new();
        let mut out_errors = Vec::new();
        // Round-robin, so drift hits both alike.
        for _ in 0..runs {
            match self.pty_output(rsh(&output)) {
                Ok(rate) => rsh_out.push(rate),
                Err(err) => out_errors.push(format!("rsh: {err:#}")),
            }
            if let Some(command) = ssh(&output) {
                match self.pty_output(command) {
                    Ok(rate) => ssh_out.push(rate),
                    Err(err) => out_errors.push(format!("ssh: {err:#}")),
                }
            }
        }
        drop(server);

        let rsh_name = "rsh-client -tt (TLS)";
        let ssh_name = "ssh -tt";
        let key_rows = |name: &str, keys: &anyhow::Result<Vec<f64>>| -> (Row, Row) {
            match keys {
                Ok(samples) => (
                    Row::new(
                        FIGURE,
                        format!("keystroke round trip, {name}: median"),
                        "us",
                        Stats::of(samples),
                    ),
                    Row::new(
                        FIGURE,
                        format!("keystroke round trip, {name}: p99"),
                        "us",
                        percentile(samples, 99.0).and_then(|p99| Stats::of(&[p99])),
                    ),
                ),
                Err(err) => (
                    Row::skipped(
                        FIGURE,
                        format!("keystroke round trip, {name}"),
                        "us",
                        format!("{err:#}"),
                    ),
                    Row::skipped(
                        FIGURE,
                        format!("keystroke round trip, {name}: p99"),
                        "us",
                        "failed",
                    ),
                ),
            }
        };
        let (rsh_median, rsh_p99) = key_rows(rsh_name, &rsh_keys);
        let (ssh_median, ssh_p99) = match &ssh_keys {
            Some(keys) => key_rows(ssh_name, keys),
            None => (
                Row::skipped(
                    FIGURE,
                    format!("keystroke round trip, {ssh_name}"),
                    "us",
                    self.ssh_skipped.clone(),
                ),
                Row::skipped(
                    FIGURE,
                    format!("keystroke round trip, {ssh_name}: p99"),
                    "us",
                    self.ssh_skipped.clone(),
                ),
            ),
        };
        let rsh_median = rsh_median
            .ratio_to(ssh_median.median(), false, "vs ssh")
            .target_ratio(false, 1.0, "<= ssh");
        let rsh_p99 = rsh_p99
            .ratio_to(ssh_p99.median(), false, "vs ssh")
            .target_ratio(false, 1.0, "<= ssh");
        self.rows.extend([rsh_median, ssh_median, rsh_p99, ssh_p99]);

        let out_name = |name: &str| format!("100 MB out through the pty, {name}");
        let note = out_errors.join("; ");
        let rsh_row = Row::new(FIGURE, out_name(rsh_name), "MB/s", Stats::of(&rsh_out))
            .with_note(note.clone());
        let ssh_row = if self.sshd.is_some() {
            Row::new(FIGURE, out_name(ssh_name), "MB/s", Stats::of(&ssh_out)).with_note(note)
        } else {
            Row::skipped(FIGURE, out_name(ssh_name), "MB/s", self.ssh_skipped.clone())
        };
        let rsh_row = rsh_row
            .ratio_to(ssh_row.median(), false, "vs ssh")
            .target_ratio(true, 1.0, ">= ssh");
        self.rows.extend([rsh_row, ssh_row]);
        Ok(())
    }
}
