//! The six figures. Each measures rsh and its baselines in the same run,
//! interleaving them run by run so drift (other load, CPU frequency) hits
//! every row alike.

use crate::delay::DelayProxy;
use crate::report::Row;
use crate::rsh::{Binaries, Listen, RshServer};
use crate::ssh::{Mode, Sshd};
use crate::util::{proc_status_kib, run_bounded, Feed, Run, Stats, Watchdog};
use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use rsh_client::{Client, Event, ExitStatus};
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Sizes and repetitions; `--quick` shrinks them.
#[derive(Debug, Clone)]
pub struct Params {
    pub latency_runs: usize,
    pub latency_runs_ssh: usize,
    pub rate_rounds: usize,
    pub rate_commands: usize,
    pub out_bytes: u64,
    pub in_bytes: u64,
    pub throughput_runs: usize,
    pub clients: usize,
    /// Figure 4's attackers: connections trickling a ClientHello at one
    /// byte a second, and connections that stay silent.
    pub tricklers: usize,
    pub silent_attackers: usize,
    pub idle_connections: usize,
    pub stall: Duration,
    /// Output sizes for figure 6, with runs each.
    pub growth: Vec<(u64, usize)>,
    /// Playbook runs per series of figure 7 (each some seconds).
    pub ansible_runs: usize,
}

impl Params {
    pub fn full() -> Params {
        Params {
            latency_runs: 200,
            latency_runs_ssh: 40,
            rate_rounds: 5,
            rate_commands: 500,
            out_bytes: 1_000_000_000,
            in_bytes: 500_000_000,
            throughput_runs: 5,
            clients: 1000,
            tricklers: 500,
            silent_attackers: 2000,
            idle_connections: 1000,
            stall: Duration::from_secs(5),
            growth: vec![
                (1_000_000, 20),
                (10_000_000, 10),
                (100_000_000, 5),
                (1_000_000_000, 3),
            ],
            ansible_runs: 5,
        }
    }

    pub fn quick() -> Params {
        Params {
            latency_runs: 20,
            latency_runs_ssh: 5,
            rate_rounds: 3,
            rate_commands: 100,
            out_bytes: 100_000_000,
            in_bytes: 50_000_000,
            throughput_runs: 3,
            clients: 200,
            tricklers: 100,
            silent_attackers: 400,
            idle_connections: 200,
            stall: Duration::from_secs(2),
            growth: vec![(1_000_000, 5), (10_000_000, 3), (100_000_000, 3)],
            ansible_runs: 1,
        }
    }
}

/// Upper bound for one command of a latency or rate measurement.
const SHORT_LIMIT: Duration = Duration::from_secs(30);
/// Upper bound for one bulk transfer.
const BULK_LIMIT: Duration = Duration::from_secs(300);
/// Upper bound for one client of the crowd.
const CROWD_LIMIT: Duration = Duration::from_secs(120);
/// Figure 4's added latency, each way (so +50 ms round-trip time).
const ONE_WAY_DELAY: Duration = Duration::from_millis(25);
/// Where the delay proxy listens: a loopback address of its own, so its
/// port is never mistaken for the server's.
const PROXY_LISTEN: ([u8; 4], u16) = ([127, 0, 0, 2], 0);

pub struct Bench {
    pub bins: Binaries,
    pub watchdog: Watchdog,
    pub rt: tokio::runtime::Runtime,
    pub sshd: Option<Sshd>,
    /// Why the ssh rows are skipped, when they are.
    pub ssh_skipped: String,
    pub params: Params,
    pub rows: Vec<Row>,
}

/// Checks a run (exit status, byte counts).
type Check<'a> = Box<dyn Fn(&Run) -> anyhow::Result<()> + 'a>;

/// One series of a figure, measured round-robin with the others.
struct Case<'a> {
    name: String,
    runs: usize,
    make: Box<dyn Fn() -> Command + 'a>,
    feed: Feed,
    capture: bool,
    limit: Duration,
    /// Checks a run (exit status, byte counts); a failure ends the series.
    check: Check<'a>,
    /// Turns a run into a sample.
    sample: fn(&Run) -> f64,
    samples: Vec<f64>,
    error: Option<String>,
}

fn ms(run: &Run) -> f64 {
    run.elapsed.as_secs_f64() * 1e3
}

fn out_mb_per_s(run: &Run) -> f64 {
    run.stdout_bytes as f64 / run.elapsed.as_secs_f64() / 1e6
}

fn in_mb_per_s(run: &Run) -> f64 {
    run.stdin_fed as f64 / run.elapsed.as_secs_f64() / 1e6
}

fn mb(bytes: u64) -> String {
    let gb = bytes / 1_000_000_000;
    if gb > 0 && gb * 1_000_000_000 == bytes {
        format!("{gb} GB")
    } else {
        format!("{} MB", bytes / 1_000_000)
    }
}

impl Case<'_> {
    fn row(&self, figure: u8, unit: &'static str) -> Row {
        match &self.error {
            Some(err) => Row::skipped(figure, &self.name, unit, format!("failed: {err}")),
            None => Row::new(figure, &self.name, unit, Stats::of(&self.samples)),
        }
    }
}

/// Runs the cases round-robin (one warm-up run each, not counted).
fn run_cases(cases: &mut [Case<'_>], watchdog: &Watchdog) {
    let rounds = cases.iter().map(|c| c.runs).max().unwrap_or(0);
    for round in 0..=rounds {
        for case in cases.iter_mut() {
            if case.error.is_some() || round > case.runs {
                continue;
            }
            let warm_up = round == 0;
            // The warm-up always captures, to report why a command fails.
            let capture = case.capture || warm_up;
            let result = run_bounded(&mut (case.make)(), case.feed, capture, case.limit, watchdog)
                .and_then(|run| {
                    if !capture && !run.status.success() {
                        // Run again with stderr kept, for the reason.
                        let again =
                            run_bounded(&mut (case.make)(), case.feed, true, case.limit, watchdog)?;
                        again.check(&case.name)?;
                        bail!("{} exited with {}", case.name, run.status);
                    }
                    (case.check)(&run)?;
                    Ok(run)
                });
            match result {
                Ok(run) if !warm_up => case.samples.push((case.sample)(&run)),
                Ok(_) => {}
                Err(err) => case.error = Some(format!("{err:#}")),
            }
        }
    }
}

impl Bench {
    fn ssh_row(&self, figure: u8, name: &str, unit: &'static str) -> Row {
        Row::skipped(figure, name, unit, self.ssh_skipped.clone())
    }

    /// Figure 1: one-shot `true`, new connection each time.
    pub fn latency(&mut self, server: &RshServer) -> anyhow::Result<()> {
        let unix = server.unix_dest();
        let tls = server.tls_dest()?.to_owned();
        let client_bin = self.bins.client.clone();
        let p = &self.params;
        if let Some(sshd) = &mut self.sshd {
            if let Err(err) = sshd.start_mux() {
                eprintln!("warning: {err:#}");
            }
        }
        let mut cases = vec![
            latency_case("local sh -c true (floor)", p.latency_runs, || {
                let mut command = Command::new("sh");
                command.args(["-c", "true"]);
                command
            }),
            latency_case(
                "rsh-client --version (its process start only)",
                p.latency_runs,
                || {
                    let mut command = Command::new(&client_bin);
                    command.arg("--version");
                    command
                },
            ),
            latency_case("rsh unix", p.latency_runs, || server.client(&unix, "true")),
            latency_case("rsh tls (tcp)", p.latency_runs, || {
                server.client(&tls, "true")
            }),
        ];
        if let Some(sshd) = &self.sshd {
            cases.push(latency_case(
                "ssh, new connection",
                p.latency_runs_ssh,
                || sshd.ssh(Mode::New, None, "true"),
            ));
            cases.push(latency_case("ssh, multiplexed", p.latency_runs, || {
                sshd.ssh(Mode::Multiplexed, None, "true")
            }));
        }
        run_cases(&mut cases, &self.watchdog);
        let floor = cases[0].row(1, "ms");
        let client_start = cases[1]
            .row(1, "ms")
            .ratio_to(floor.median(), false, "vs floor");
        let rsh_unix = cases[2]
            .row(1, "ms")
            .ratio_to(floor.median(), false, "vs floor")
            .target_ratio(false, 3.0, "<= 3x floor");
        let rsh_tls = cases[3]
            .row(1, "ms")
            .ratio_to(floor.median(), false, "vs floor");
        let (ssh_new, ssh_mux) = match cases.get(4..6) {
            Some([new, mux]) => (new.row(1, "ms"), mux.row(1, "ms")),
            _ => (
                self.ssh_row(1, "ssh, new connection", "ms"),
                self.ssh_row(1, "ssh, multiplexed", "ms"),
            ),
        };
        let ssh_new = ssh_new
            .ratio_to(rsh_tls.median(), false, "vs rsh tls")
            .target_ratio(true, 30.0, ">= 30x rsh tls");
        let ssh_mux = ssh_mux.ratio_to(rsh_unix.median(), false, "vs rsh unix");
        self.rows
            .extend([floor, client_start, rsh_unix, rsh_tls, ssh_new, ssh_mux]);
        Ok(())
    }

    /// Figure 2: commands per second over one persistent connection.
    pub fn rate(&mut self, server: &RshServer) -> anyhow::Result<()> {
        let p = self.params.clone();
        let unix = server.endpoint(&server.unix_dest())?;
        let tls = server.endpoint(&server.tls_dest()?)?;
        let options = server.connect_options();
        // The floor spawns from a multi-threaded runtime, as the server does;
        // the rsh clients run on the bench's single thread.
        let floor_rt = tokio::runtime::Runtime::new().context("cannot start a runtime")?;
        let floor = floor_rt.handle().clone();
        let rows = self.rt.block_on(async move {
            let connect = |endpoint: rsh_config::Endpoint| {
                let options = options.clone();
                async move {
                    tokio::time::timeout(SHORT_LIMIT, Client::connect(&endpoint, &options))
                        .await
                        .context("connect timed out")?
                        .context("connect")
                }
            };
            let unix_client = connect(unix).await;
            let tls_client = connect(tls).await;
            // (name, commands at once, what runs them)
            let series: [(&str, usize, Kind); 7] = [
                ("local spawn, sequential (floor)", 1, Kind::Local),
                ("local spawn, 16 at once (floor)", 16, Kind::Local),
                (
                    "local spawn with pipes + own group, sequential",
                    1,
                    Kind::LocalPiped,
                ),
                ("rsh unix, sequential", 1, Kind::Unix),
                ("rsh unix, 16 at once", 16, Kind::Unix),
                ("rsh tls, sequential", 1, Kind::Tls),
                ("rsh tls, 16 at once", 16, Kind::Tls),
            ];
            let mut samples: Vec<Vec<f64>> = vec![Vec::new(); series.len()];
            let mut errors: Vec<Option<String>> = vec![None; series.len()];
            for _ in 0..p.rate_rounds {
                for (index, &(_, parallel, kind)) in series.iter().enumerate() {
                    if errors[index].is_some() {
                        continue;
                    }
                    let n = p.rate_commands;
                    let result = match kind {
                        Kind::Local | Kind::LocalPiped => {
                            let spawned = if kind == Kind::Local {
                                floor.spawn(rate_of(n, parallel, local_spawn))
                            } else {
                                floor.spawn(rate_of(n, parallel, local_spawn_piped))
                            };
                            match spawned.await {
                                Ok(result) => result,
                                Err(err) => Err(anyhow::anyhow!("local spawns: {err}")),
                            }
                        }
                        Kind::Unix | Kind::Tls => {
                            let client = if kind == Kind::Unix {
                                &unix_client
                            } else {
                                &tls_client
                            };
                            match client {
                                Ok(client) => rate_of(n, parallel, remote_true(client)).await,
                                Err(err) => Err(anyhow::anyhow!("{err:#}")),
                            }
                        }
                    };
                    match result {
                        Ok(rate) => samples[index].push(rate),
                        Err(err) => errors[index] = Some(format!("{err:#}")),
                    }
                }
            }
            series
                .iter()
                .zip(samples.iter().zip(&errors))
                .map(|(&(name, parallel, kind), (samples, error))| {
                    let row = match error {
                        Some(err) => Row::skipped(2, name, "cmd/s", format!("failed: {err}")),
                        None => Row::new(2, name, "cmd/s", Stats::of(samples)),
                    };
                    (parallel, kind, row)
                })
                .collect::<Vec<(usize, Kind, Row)>>()
        });
        drop(floor_rt);
        let floor_of = |parallel: usize| {
            rows.iter()
                .find(|(p, kind, _)| *p == parallel && *kind == Kind::Local)
                .and_then(|(_, _, row)| row.median())
        };
        let (seq_floor, par_floor) = (floor_of(1), floor_of(16));
        for (parallel, kind, row) in rows.iter().cloned() {
            let floor = if parallel == 1 { seq_floor } else { par_floor };
            let row = match kind {
                Kind::Local => row,
                Kind::LocalPiped => row.ratio_to(floor, false, "vs floor"),
                Kind::Unix | Kind::Tls => {
                    row.ratio_to(floor, false, "vs floor")
                        .target_ratio(true, 0.8, ">= 0.8x floor")
                }
            };
            self.rows.push(row);
        }
        Ok(())
    }

    /// Figure 3: bulk stdout and stdin through the client binaries.
    pub fn throughput(&mut self, server: &RshServer) -> anyhow::Result<()> {
        let out_bytes = self.params.out_bytes;
        let in_bytes = self.params.in_bytes;
        let runs = self.params.throughput_runs;
        let unix = server.unix_dest();
        let tls = server.tls_dest()?.to_owned();
        let out_cmd = format!("head -c {out_bytes} /dev/zero");
        let in_cmd = "cat >/dev/null";
        let out_check = move |run: &Run| -> anyhow::Result<()> {
            run.check("output")?;
            ensure!(
                run.stdout_bytes == out_bytes,
                "got {} of {out_bytes} bytes",
                run.stdout_bytes
            );
            Ok(())
        };
        let in_check = move |run: &Run| -> anyhow::Result<()> {
            run.check("input")?;
            ensure!(
                run.stdin_fed == in_bytes,
                "fed {} of {in_bytes} bytes",
                run.stdin_fed
            );
            Ok(())
        };
        let out_kind: BulkKind = (runs, Feed::Null, out_mb_per_s);
        let in_kind: BulkKind = (runs, Feed::Zeros(in_bytes), in_mb_per_s);
        let out_label = mb(out_bytes);
        let in_label = mb(in_bytes);

        // Plain TCP, in-process: the floor of any byte stream on loopback.
        let mut tcp = Vec::new();
        let mut tcp_error = None;
        for round in 0..=runs {
            match tcp_copy(out_bytes) {
                // Round 0 warms up.
                Ok(rate) if round > 0 => tcp.push(rate),
                Ok(_) => {}
                Err(err) => {
                    tcp_error = Some(format!("{err:#}"));
                    break;
                }
            }
        }

        let mut outs = vec![
            bulk_case(
                out_kind,
                out_check,
                format!("{out_label} out: local pipe (floor)"),
                Box::new(|| {
                    let mut command = Command::new("sh");
                    command.args(["-c", &out_cmd]);
                    command
                }),
            ),
            bulk_case(
                out_kind,
                out_check,
                format!("{out_label} out: rsh unix"),
                Box::new(|| server.client(&unix, &out_cmd)),
            ),
            bulk_case(
                out_kind,
                out_check,
                format!("{out_label} out: rsh tls"),
                Box::new(|| server.client(&tls, &out_cmd)),
            ),
        ];
        let mut ins = vec![
            bulk_case(
                in_kind,
                in_check,
                format!("{in_label} in: local pipe (floor)"),
                Box::new(|| {
                    let mut command = Command::new("sh");
                    command.args(["-c", in_cmd]);
                    command
                }),
            ),
            bulk_case(
                in_kind,
                in_check,
                format!("{in_label} in: rsh unix"),
                Box::new(|| server.client(&unix, in_cmd)),
            ),
            bulk_case(
                in_kind,
                in_check,
                format!("{in_label} in: rsh tls"),
                Box::new(|| server.client(&tls, in_cmd)),
            ),
        ];
        if let Some(sshd) = &self.sshd {
            outs.push(bulk_case(
                out_kind,
                out_check,
                format!("{out_label} out: ssh (default cipher)"),
                Box::new(|| sshd.ssh(Mode::New, None, &out_cmd)),
            ));
            outs.push(bulk_case(
                out_kind,
                out_check,
                format!("{out_label} out: ssh aes128-gcm"),
                Box::new(|| sshd.ssh(Mode::New, Some("aes128-gcm@openssh.com"), &out_cmd)),
            ));
            ins.push(bulk_case(
                in_kind,
                in_check,
                format!("{in_label} in: ssh (default cipher)"),
                Box::new(|| sshd.ssh(Mode::New, None, in_cmd)),
            ));
            ins.push(bulk_case(
                in_kind,
                in_check,
                format!("{in_label} in: ssh aes128-gcm"),
                Box::new(|| sshd.ssh(Mode::New, Some("aes128-gcm@openssh.com"), in_cmd)),
            ));
        }
        run_cases(&mut outs, &self.watchdog);
        run_cases(&mut ins, &self.watchdog);

        let tcp_row = match tcp_error {
            Some(err) => Row::skipped(3, format!("{out_label}: plain tcp (floor)"), "MB/s", err),
            None => Row::new(
                3,
                format!("{out_label}: plain tcp (floor)"),
                "MB/s",
                Stats::of(&tcp),
            ),
        };
        let pipe_out = outs[0].row(3, "MB/s");
        let (ssh_out, ssh_out_aes) = match outs.get(3..5) {
            Some([a, b]) => (a.row(3, "MB/s"), b.row(3, "MB/s")),
            _ => (
                self.ssh_row(3, &format!("{out_label} out: ssh (default cipher)"), "MB/s"),
                self.ssh_row(3, &format!("{out_label} out: ssh aes128-gcm"), "MB/s"),
            ),
        };
        let rsh_unix_out = outs[1]
            .row(3, "MB/s")
            .ratio_to(pipe_out.median(), false, "vs pipe")
            .target_value(true, 1000.0, ">= 1000 MB/s");
        let rsh_tls_out = outs[2]
            .row(3, "MB/s")
            .ratio_to(ssh_out_aes.median(), false, "vs ssh aes")
            .target_ratio(true, 1.5, ">= 1.5x ssh aes");
        let pipe_in = ins[0].row(3, "MB/s");
        let (ssh_in, ssh_in_aes) = match ins.get(3..5) {
            Some([a, b]) => (a.row(3, "MB/s"), b.row(3, "MB/s")),
            _ => (
                self.ssh_row(3, &format!("{in_label} in: ssh (default cipher)"), "MB/s"),
                self.ssh_row(3, &format!("{in_label} in: ssh aes128-gcm"), "MB/s"),
            ),
        };
        let best_ssh_in = match (ssh_in.median(), ssh_in_aes.median()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        let rsh_unix_in = ins[1]
            .row(3, "MB/s")
            .ratio_to(pipe_in.median(), false, "vs pipe");
        let rsh_tls_in = ins[2]
            .row(3, "MB/s")
            .ratio_to(best_ssh_in, false, "vs best ssh")
            .target_ratio(true, 3.0, ">= 3x ssh");
        self.rows.extend([
            tcp_row,
            pipe_out,
            rsh_unix_out,
            rsh_tls_out,
            ssh_out,
            ssh_out_aes,
            pipe_in,
            rsh_unix_in,
            rsh_tls_in,
            ssh_in,
            ssh_in_aes,
        ]);
        Ok(())
    }

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

    /// Figure 5: server memory with many idle connections, and with a client
    /// that stops reading an endless output.
    pub fn memory(&mut self) -> anyhow::Result<()> {
        let n = self.params.idle_connections;
        let server = RshServer::start(&self.bins, Listen::UnixAndTls)?;
        let pid = server.pid();
        let tls = server.endpoint(&server.tls_dest()?)?;
        let unix = server.endpoint(&server.unix_dest())?;
        let options = server.connect_options();
        let result: anyhow::Result<(u64, u64, u64, usize, usize)> = self.rt.block_on(async {
            // One connection and command first: one-time setup is not per connection.
            let warm = connect_many(&unix, &options, 1).await?;
            for client in &warm {
                client.run("true").await?;
            }
            let warm_tls = connect_many(&tls, &options, 1).await?;
            for client in &warm_tls {
                client.run("true").await?;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = proc_status_kib(pid, "VmRSS")?;
            let tls_clients = connect_many(&tls, &options, n).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after_tls = proc_status_kib(pid, "VmRSS")?;
            let unix_clients = connect_many(&unix, &options, n).await?;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let after_unix = proc_status_kib(pid, "VmRSS")?;
            // They are really in: one of each runs a command.
            if let (Some(a), Some(b)) = (tls_clients.last(), unix_clients.last()) {
                a.run("true").await?;
                b.run("true").await?;
            }
            Ok((
                before,
                after_tls,
                after_unix,
                tls_clients.len(),
                unix_clients.len(),
            ))
        });
        drop(server);
        match result {
            Ok((before, after_tls, after_unix, tls_n, unix_n)) => {
                let per_tls = after_tls.saturating_sub(before) as f64 / tls_n as f64;
                let per_unix = after_unix.saturating_sub(after_tls) as f64 / unix_n as f64;
                self.rows.push(
                    Row::new(
                        5,
                        format!("{tls_n} idle tls connections: RSS per connection"),
                        "KiB/conn",
                        Stats::of(&[per_tls]),
                    )
                    .target_value(false, 64.0, "<= 64 KiB")
                    .with_note(format!("VmRSS {before} -> {after_tls} KiB")),
                );
                self.rows.push(
                    Row::new(
                        5,
                        format!("{unix_n} idle unix connections: RSS per connection"),
                        "KiB/conn",
                        Stats::of(&[per_unix]),
                    )
                    .with_note(format!("VmRSS {after_tls} -> {after_unix} KiB")),
                );
            }
            Err(err) => self.rows.push(Row::skipped(
                5,
                "idle tls connections: RSS per connection",
                "KiB/conn",
                format!("failed: {err:#}"),
            )),
        }

        let server = RshServer::start(&self.bins, Listen::UnixAndTls)?;
        let pid = server.pid();
        let tls = server.endpoint(&server.tls_dest()?)?;
        let options = server.connect_options();
        let stall = self.params.stall;
        let result: anyhow::Result<(Vec<f64>, u64)> = self.rt.block_on(async {
            let client = tokio::time::timeout(SHORT_LIMIT, Client::connect(&tls, &options))
                .await
                .context("connect timed out")??;
            let before = proc_status_kib(pid, "VmRSS")?;
            let mut command = client.exec("yes").await?;
            command.close_stdin().await?;
            // Read 8 MiB so the stream is flowing, then stop reading.
            let mut read = 0usize;
            while read < 8 << 20 {
                match tokio::time::timeout(SHORT_LIMIT, command.next_event()).await {
                    Ok(Ok(Some(Event::Stdout(data)))) => read += data.len(),
                    other => bail!("`yes` did not stream: {other:?}"),
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
            let mut samples = Vec::new();
            let started = Instant::now();
            while started.elapsed() < stall {
                samples.push(proc_status_kib(pid, "VmRSS")? as f64);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let _ = command.signal(rsh_client::signal::KILL).await;
            Ok((samples, before))
        });
        drop(server);
        match result {
            Ok((samples, before)) => {
                let stats = Stats::of(&samples);
                let spread = stats.map(|s| s.max - s.min);
                self.rows.push(
                    Row::new(5, "stalled reader of `yes` (tls): server RSS", "KiB", stats)
                        .target(spread.map(|s| s <= 1024.0), "max-min <= 1 MiB")
                        .with_note(format!(
                            "{} samples over {:?}; {before} KiB before the command; max-min {} KiB",
                            samples.len(),
                            stall,
                            spread.unwrap_or(0.0)
                        )),
                );
            }
            Err(err) => self.rows.push(Row::skipped(
                5,
                "stalled reader of `yes` (tls): server RSS",
                "KiB",
                format!("failed: {err:#}"),
            )),
        }
        Ok(())
    }

    /// Figure 6: time and peak server memory as the output grows.
    pub fn growth(&mut self) -> anyhow::Result<()> {
        let sizes = self.params.growth.clone();
        let mut times: Vec<(u64, Row)> = Vec::new();
        let mut peaks: Vec<(u64, Row)> = Vec::new();
        for (bytes, runs) in sizes {
            let server = RshServer::start(&self.bins, Listen::Unix)?;
            let unix = server.unix_dest();
            let remote = format!("head -c {bytes} /dev/zero");
            let mut cases = vec![Case {
                name: format!("{} out: time", mb(bytes)),
                runs,
                make: Box::new(|| server.client(&unix, &remote)),
                feed: Feed::Null,
                capture: true,
                limit: BULK_LIMIT,
                check: Box::new(move |run: &Run| {
                    run.check("output")?;
                    ensure!(
                        run.stdout_bytes == bytes,
                        "got {} of {bytes} bytes",
                        run.stdout_bytes
                    );
                    Ok(())
                }),
                sample: ms,
                samples: Vec::new(),
                error: None,
            }];
            run_cases(&mut cases, &self.watchdog);
            let row = cases[0].row(6, "ms");
            let rate = row
                .median()
                .map(|ms| bytes as f64 / (ms / 1e3) / 1e6)
                .unwrap_or(0.0);
            times.push((bytes, row.with_note(format!("{rate:.0} MB/s"))));
            let peak = proc_status_kib(server.pid(), "VmHWM");
            peaks.push((
                bytes,
                match peak {
                    Ok(kib) => Row::new(
                        6,
                        format!("{} out: server peak RSS (VmHWM)", mb(bytes)),
                        "KiB",
                        Stats::of(&[kib as f64]),
                    ),
                    Err(err) => Row::skipped(
                        6,
                        format!("{} out: server peak RSS (VmHWM)", mb(bytes)),
                        "KiB",
                        format!("{err:#}"),
                    ),
                },
            ));
        }
        // Time ~linear: the largest against the next, by their size ratio.
        if times.len() >= 2 {
            let n = times.len();
            let (small_bytes, small_median) = (times[n - 2].0, times[n - 2].1.median());
            let big_bytes = times[n - 1].0;
            let scale = big_bytes as f64 / small_bytes as f64;
            let row = times[n - 1].1.clone();
            times[n - 1].1 = row
                .ratio_to(small_median, false, &format!("vs {}", mb(small_bytes)))
                .target_ratio(
                    false,
                    scale * 1.25,
                    &format!("<= {:.1}x (linear)", scale * 1.25),
                );
        }
        if let (Some((small, first)), Some((_, last))) = (peaks.first(), peaks.last()) {
            let delta = match (first.median(), last.median()) {
                (Some(a), Some(b)) => Some(b - a),
                _ => None,
            };
            let label = format!("vs {}", mb(*small));
            let row = last
                .clone()
                .ratio_to(first.median(), false, &label)
                .target(delta.map(|d| d <= 4096.0), "+<= 4 MiB (flat)")
                .with_note(format!("+{:.0} KiB", delta.unwrap_or(0.0)));
            if let Some(slot) = peaks.last_mut() {
                slot.1 = row;
            }
        }
        self.rows.extend(times.into_iter().map(|(_, row)| row));
        self.rows.extend(peaks.into_iter().map(|(_, row)| row));
        Ok(())
    }
}

type BulkKind = (usize, Feed, fn(&Run) -> f64);

fn bulk_case<'a>(
    (runs, feed, sample): BulkKind,
    check: impl Fn(&Run) -> anyhow::Result<()> + 'a,
    name: String,
    make: Box<dyn Fn() -> Command + 'a>,
) -> Case<'a> {
    Case {
        name,
        runs,
        make,
        feed,
        capture: true,
        limit: BULK_LIMIT,
        check: Box::new(check),
        sample,
        samples: Vec::new(),
        error: None,
    }
}

fn latency_case<'a>(name: &str, runs: usize, make: impl Fn() -> Command + 'a) -> Case<'a> {
    let label = name.to_owned();
    Case {
        name: name.to_owned(),
        runs,
        make: Box::new(make),
        feed: Feed::Null,
        capture: false,
        limit: SHORT_LIMIT,
        check: Box::new(move |run: &Run| run.check(&label)),
        sample: ms,
        samples: Vec::new(),
        error: None,
    }
}

/// What runs the commands of a figure 2 series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    LocalPiped,
    Unix,
    Tls,
}

/// Rate of `total` jobs run by `parallel` tasks.
async fn rate_of<F, Fut>(total: usize, parallel: usize, job: F) -> anyhow::Result<f64>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..parallel {
        let job = job.clone();
        let next = next.clone();
        workers.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < total {
                tokio::time::timeout(SHORT_LIMIT, job())
                    .await
                    .context("a command took over 30 s")??;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = workers.join_next().await {
        done.context("a worker panicked")??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn local_spawn() -> anyhow::Result<()> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status()
        .await
        .context("cannot run sh")?;
    ensure!(status.success(), "sh -c true: {status}");
    Ok(())
}

/// A local spawn set up as the server sets up a command: stdin, stdout and
/// stderr piped (read to end of file), in its own process group.
async fn local_spawn_piped() -> anyhow::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut child = tokio::process::Command::new("sh")
        .args(["-c", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .context("cannot run sh")?;
    drop(child.stdin.take());
    let (Some(mut stdout), Some(mut stderr)) = (child.stdout.take(), child.stderr.take()) else {
        bail!("sh has no output pipes");
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let (read_out, read_err, status) = tokio::join!(
        stdout.read_to_end(&mut out),
        stderr.read_to_end(&mut err),
        child.wait()
    );
    read_out?;
    read_err?;
    let status = status?;
    ensure!(status.success(), "sh -c true: {status}");
    Ok(())
}

fn remote_true(
    client: &Client,
) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>
       + Clone
       + Send
       + 'static {
    let client = client.clone();
    move || {
        let client = client.clone();
        Box::pin(async move {
            let output = client.run("true").await?;
            ensure!(
                output.status == ExitStatus::Code(0),
                "remote true: {:?}",
                output.status
            );
            Ok(())
        })
    }
}

/// Moves `bytes` over a loopback TCP connection in-process; MB/s.
fn tcp_copy(bytes: u64) -> anyhow::Result<f64> {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let started = Instant::now();
    let receiver = std::thread::spawn(move || -> anyhow::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        stream.set_read_timeout(Some(BULK_LIMIT))?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => total += n as u64,
                Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                Err(err) => return Err(err.into()),
            }
        }
    });
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_write_timeout(Some(BULK_LIMIT))?;
    let buf = vec![0u8; 1 << 20];
    let mut sent = 0u64;
    while sent < bytes {
        let n = usize::try_from((bytes - sent).min(buf.len() as u64)).unwrap_or(buf.len());
        stream.write_all(&buf[..n])?;
        sent += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("tcp receiver panicked"))??;
    let elapsed = started.elapsed();
    ensure!(
        received == bytes,
        "tcp: received {received} of {bytes} bytes"
    );
    Ok(bytes as f64 / elapsed.as_secs_f64() / 1e6)
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

/// `n` connected clients (32 handshakes at a time).
async fn connect_many(
    endpoint: &rsh_config::Endpoint,
    options: &rsh_client::ConnectOptions,
    n: usize,
) -> anyhow::Result<Vec<Client>> {
    let results: Vec<anyhow::Result<Client>> = futures::stream::iter(0..n)
        .map(|_| async move {
            tokio::time::timeout(SHORT_LIMIT, Client::connect(endpoint, options))
                .await
                .context("connect timed out")?
                .context("connect")
        })
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}
