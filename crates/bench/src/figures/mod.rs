//! The six figures. Each measures rsh and its baselines in the same run,
//! interleaving them run by run so drift (other load, CPU frequency) hits
//! every row alike.
//!
//! One file per job: [`latency`] (figures 1 and 2), [`throughput`] (3),
//! [`crowd`] (4), [`memory`] (5 and 6); this one holds what they share (the
//! parameters, the time limits and the round-robin runner).

mod crowd;
mod latency;
mod memory;
mod throughput;

use crate::report::Row;
use crate::rsh::Binaries;
use crate::ssh::Sshd;
use crate::util::{run_bounded, Feed, Run, Stats, Watchdog};
use anyhow::bail;
use std::process::Command;
use std::time::Duration;

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
}
