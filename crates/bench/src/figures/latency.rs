//! Figures 1 and 2: the latency of one command, and the rate of commands
//! over one connection.

use super::{ms, run_cases, Bench, Case, SHORT_LIMIT};
use crate::report::Row;
use crate::rsh::RshServer;
use crate::ssh::Mode;
use crate::util::{Feed, Run, Stats};
use anyhow::{bail, ensure, Context};
use rsh_client::{Client, ExitStatus};
use std::future::Future;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

impl Bench {
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
