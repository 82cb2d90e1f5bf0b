//! Figure 4: many clients at once, released together, and under attack.

use super::{Bench, CROWD_LIMIT, ONE_WAY_DELAY, PROXY_LISTEN};
use crate::delay::DelayProxy;
use crate::report::Row;
use crate::rsh::RshServer;
use crate::util::Stats;
use anyhow::Context;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Bench {
    /// Figure 4: many clients at once, each a new process and connection;
    /// then released at the same instant; then the same under attack.
    pub fn crowd(&mut self, server: &RshServer) -> anyhow::Result<()> {
        let n = self.params.clients;
        let tls = server.tls_dest()?.to_owned();
        let rsh = self
            .rt
            .block_on(crowd(n, || server.tokio_client(&tls, "echo hi")));
        push_crowd(&mut self.rows, "rsh tls", n, &rsh, true);
        let synced = self
            .rt
            .block_on(crowd(n, || released(&server.client(&tls, "echo hi"))));
        push_crowd(
            &mut self.rows,
            "rsh tls, released at once",
            n,
            &synced,
            true,
        );
        let (tricklers, silent) = (self.params.tricklers, self.params.silent_attackers);
        let attacked = self.rt.block_on(async {
            let attack = Attack::start(&tls, tricklers, silent).await;
            let result = crowd(n, || released(&server.client(&tls, "echo hi"))).await;
            attack.stop().await;
            result
        });
        push_crowd(
            &mut self.rows,
            &format!(
                "rsh tls, released at once, {tricklers} trickling + {silent} silent attackers"
            ),
            n,
            &attacked,
            true,
        );
        // The same through a 25 ms-each-way relay (clients and attackers
        // alike): the kernel here has no netem (see crate::delay).
        let upstream: std::net::SocketAddr = tls
            .parse()
            .with_context(|| format!("bad TLS address {tls:?}"))?;
        let proxy = DelayProxy::start(PROXY_LISTEN.into(), upstream, ONE_WAY_DELAY)?;
        let via = proxy.dest();
        server.trust_alias(&via)?;
        let delayed = self.rt.block_on(async {
            let attack = Attack::start(&via, tricklers, silent).await;
            let result = crowd(n, || released(&server.client(&via, "echo hi"))).await;
            attack.stop().await;
            result
        });
        if delayed.failed > 0 {
            // What the server said about them (its pre-auth summaries).
            let log = server.log();
            eprintln!(
                "{} of {n} failed through the delay proxy; the server's last log lines:",
                delayed.failed
            );
            for line in log.iter().skip(log.len().saturating_sub(20)) {
                eprintln!("  {line}");
            }
        }
        let relayed = proxy.counts().accepted.load(Ordering::Relaxed);
        let resets = proxy.counts().resets.load(Ordering::Relaxed);
        drop(proxy);
        push_crowd_with(
            &mut self.rows,
            &format!(
                "rsh tls, released at once, {tricklers} trickling + {silent} silent attackers, \
                 +{} ms RTT (userspace delay proxy)",
                (2 * ONE_WAY_DELAY).as_millis()
            ),
            n,
            &delayed,
            Some(n / 100),
            &format!("proxy relayed {relayed} connections, {resets} resets"),
        );
        match &self.sshd {
            Some(sshd) => {
                std::thread::sleep(Duration::from_secs(1));
                let ssh = self.rt.block_on(crowd(n, || sshd.tokio_ssh("echo hi")));
                push_crowd(&mut self.rows, "ssh (MaxStartups default)", n, &ssh, false);
            }
            None => {
                self.rows.push(self.ssh_row(4, "ssh: total time", "s"));
            }
        }
        Ok(())
    }
}

struct CrowdResult {
    elapsed: Duration,
    failed: usize,
    errors: Vec<String>,
}

/// `command` behind `sh -c 'read _ && exec ...'`: it starts only when a
/// line arrives on its stdin, so a crowd of them can be released at once.
fn released(command: &Command) -> tokio::process::Command {
    let mut wrapper = tokio::process::Command::new("/bin/sh");
    wrapper
        .arg("-c")
        .arg(r#"read _ && exec "$0" "$@" </dev/null"#)
        .arg(command.get_program())
        .args(command.get_args());
    for (key, value) in command.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    wrapper
}

/// Hostile connections held open while a crowd runs: `tricklers` send a TLS
/// ClientHello header and then one byte a second, `silent` send nothing;
/// each reconnects when the server closes it, as a flood would.
struct Attack {
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// How long one attacker waits before reconnecting after a failure.
const ATTACK_RETRY: Duration = Duration::from_millis(50);

impl Attack {
    async fn start(dest: &str, tricklers: usize, silent: usize) -> Attack {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let connected = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::with_capacity(tricklers + silent);
        for i in 0..tricklers + silent {
            let dest = dest.to_owned();
            let mut stopped = stopped.clone();
            let connected = connected.clone();
            let trickle = i < tricklers;
            tasks.push(tokio::spawn(async move {
                let mut first = true;
                tokio::select! {
                    () = attacker(&dest, trickle, &connected, &mut first) => {}
                    _ = stopped.wait_for(|stop| *stop) => {}
                }
            }));
        }
        // Until every attacker holds a connection (bounded).
        let deadline = Instant::now() + Duration::from_secs(30);
        while connected.load(Ordering::Relaxed) < tricklers + silent && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Attack { stop, tasks }
    }

    async fn stop(self) {
        let _ = self.stop.send(true);
        futures::future::join_all(self.tasks).await;
    }
}

/// One attacker: connects, trickles or stays silent, reconnects when closed.
async fn attacker(dest: &str, trickle: bool, connected: &AtomicUsize, first: &mut bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // A ClientHello's record header announcing 512 bytes, then filler.
    const HELLO: &[u8] = b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03";
    loop {
        let Ok(mut tcp) = tokio::net::TcpStream::connect(dest).await else {
            tokio::time::sleep(ATTACK_RETRY).await;
            continue;
        };
        if std::mem::take(first) {
            connected.fetch_add(1, Ordering::Relaxed);
        }
        if trickle {
            let mut sent = 0;
            loop {
                let byte = HELLO.get(sent).copied().unwrap_or(0);
                if tcp.write_all(&[byte]).await.is_err() {
                    break;
                }
                sent += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        } else {
            // Returns when the server closes it.
            let mut sink = [0u8; 64];
            while matches!(tcp.read(&mut sink).await, Ok(1..)) {}
        }
        tokio::time::sleep(ATTACK_RETRY).await;
    }
}

/// Starts `n` client processes at once and waits for all of them. Those
/// waiting for a line on stdin (see [`released`]) get it once all are
/// spawned.
async fn crowd(n: usize, make: impl Fn() -> tokio::process::Command) -> CrowdResult {
    let started = Instant::now();
    let mut waits = Vec::with_capacity(n);
    let mut gates = Vec::new();
    let mut failed = 0;
    let mut errors: Vec<String> = Vec::new();
    let note = |errors: &mut Vec<String>, err: String| {
        if errors.len() < 3 && !errors.contains(&err) {
            errors.push(err);
        }
    };
    for _ in 0..n {
        let mut command = make();
        let gated = command.as_std().get_program() == "/bin/sh";
        command
            .stdin(if gated { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        match command.spawn() {
            Ok(mut child) => {
                gates.extend(child.stdin.take());
                waits.push(tokio::time::timeout(CROWD_LIMIT, child.wait_with_output()));
            }
            Err(err) => {
                failed += 1;
                note(&mut errors, format!("spawn: {err}"));
            }
        }
    }
    // Released together (timed from here): one line to each stdin.
    let started = if gates.is_empty() {
        started
    } else {
        Instant::now()
    };
    for mut gate in gates {
        use tokio::io::AsyncWriteExt;
        let _ = gate.write_all(b"go\n").await;
    }
    for result in futures::future::join_all(waits).await {
        match result {
            Ok(Ok(out)) if out.status.success() && out.stdout == b"hi\n" => {}
            Ok(Ok(out)) => {
                failed += 1;
                let stderr = String::from_utf8_lossy(&out.stderr);
                let line = stderr.lines().last().unwrap_or("").trim().to_owned();
                note(&mut errors, format!("{}: {line}", out.status));
            }
            Ok(Err(err)) => {
                failed += 1;
                note(&mut errors, format!("wait: {err}"));
            }
            Err(_) => {
                failed += 1;
                note(
                    &mut errors,
                    format!("still running after {CROWD_LIMIT:?}; killed"),
                );
            }
        }
    }
    CrowdResult {
        elapsed: started.elapsed(),
        failed,
        errors,
    }
}

fn push_crowd(rows: &mut Vec<Row>, name: &str, n: usize, result: &CrowdResult, target: bool) {
    push_crowd_with(rows, name, n, result, target.then_some(0), "");
}

/// A crowd's rows; `max_failed` is the target (0: none may fail), `note`
/// goes before the first errors.
fn push_crowd_with(
    rows: &mut Vec<Row>,
    name: &str,
    n: usize,
    result: &CrowdResult,
    max_failed: Option<usize>,
    note: &str,
) {
    rows.push(Row::new(
        4,
        format!("{name}: total time"),
        "s",
        Stats::of(&[result.elapsed.as_secs_f64()]),
    ));
    let mut failed = Row::new(
        4,
        format!("{name}: failed of {n}"),
        "clients",
        Stats::of(&[result.failed as f64]),
    );
    match max_failed {
        Some(0) => failed = failed.target_value(false, 0.0, "0 failed"),
        Some(max) => failed = failed.target_value(false, max as f64, "<= 1% failed"),
        None => {}
    }
    let notes: Vec<&str> = std::iter::once(note)
        .filter(|note| !note.is_empty())
        .chain(result.errors.iter().map(String::as_str))
        .collect();
    if !notes.is_empty() {
        failed = failed.with_note(notes.join(" | "));
    }
    rows.push(failed);
}
