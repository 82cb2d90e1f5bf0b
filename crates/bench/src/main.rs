//! `rsh-bench`: measures rsh and its baselines (local spawn, plain TCP,
//! OpenSSH) in the same run and prints medians, ratios and the targets'
//! PASS/FAIL.
//!
//! It starts its own `rsh-server` (the release binary next to this one) on a
//! temp Unix socket and on 127.0.0.1, and, when `/usr/sbin/sshd` exists, a
//! private sshd on 127.0.0.1 with throwaway keys. All traffic stays on
//! loopback and temp sockets; every wait is bounded.

mod ansible;
mod delay;
mod figures;
mod fleet;
mod report;
mod rsh;
mod ssh;
mod terminal;
mod util;

use anyhow::Context;
use clap::Parser;
use figures::{Bench, Params};
use report::Report;
use rsh::{Listen, RshServer};
use std::path::PathBuf;
use std::process::ExitCode;

/// Benchmark rsh against a local spawn, plain loopback TCP and OpenSSH.
///
/// Build first: `cargo build --release -p rsh -p rsh-bench`.
#[derive(Debug, Parser)]
#[command(name = "rsh-bench", version)]
struct Args {
    /// Small N and sizes: a run under a minute, indicative only.
    #[arg(long)]
    quick: bool,

    /// Also write the figures as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,

    /// Run only these figures (comma-separated numbers, 1-9).
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    only: Vec<u8>,

    /// Skip the OpenSSH baselines even if sshd is installed.
    #[arg(long)]
    no_ssh: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("rsh-bench: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let wanted = |figure: u8| args.only.is_empty() || args.only.contains(&figure);
    let fd_limit = util::raise_fd_limit();
    let machine = util::Machine::probe();
    let bins = rsh::locate()?;
    let mut params = if args.quick {
        Params::quick()
    } else {
        Params::full()
    };
    let mut notes = Vec::new();
    if args.quick {
        notes.push(
            "--quick: throughput rows include each tool's connection setup (ssh: ~0.2 s), which \
             weighs heavily at 100 MB; judge the ssh throughput targets on a full run"
                .to_owned(),
        );
    }
    let load_at_start = util::load_average();
    let revision = util::revision();
    // Each client of figures 4 and 5 takes descriptors here (pipes, sockets).
    let fd_budget = usize::try_from(fd_limit / 4).unwrap_or(usize::MAX);
    if params.clients > fd_budget || params.idle_connections > fd_budget {
        notes.push(format!(
            "open-files limit {fd_limit}: clients cut to {fd_budget} (raise `ulimit -n`)"
        ));
        params.clients = params.clients.min(fd_budget);
        params.idle_connections = params.idle_connections.min(fd_budget);
    }
    let (sshd, ssh_skipped) = if args.no_ssh {
        (None, "skipped (--no-ssh)".to_owned())
    } else {
        match ssh::Sshd::start() {
            Ok(Some(sshd)) => (Some(sshd), String::new()),
            Ok(None) => {
                eprintln!("{}", ssh::INSTALL_HINT);
                notes.push(ssh::INSTALL_HINT.to_owned());
                (None, "skipped: sshd not installed".to_owned())
            }
            Err(err) => {
                let why = format!("OpenSSH baselines skipped: cannot start sshd: {err:#}");
                eprintln!("{why}");
                notes.push(why);
                (None, "skipped: sshd did not start".to_owned())
            }
        }
    };
    if let Some(sshd) = &sshd {
        eprintln!(
            "private sshd on 127.0.0.1:{} (keys and config in {})",
            sshd.port,
            sshd.dir().display()
        );
    }
    // One thread: the bench is a load generator and should take as little
    // CPU from the server as it can (the rsh-client binary runs the same way).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let mut bench = Bench {
        bins,
        watchdog: util::Watchdog::start(),
        rt,
        sshd,
        ssh_skipped,
        params,
        rows: Vec::new(),
    };

    if (1..=4).any(wanted) {
        let server = RshServer::start(&bench.bins, Listen::UnixAndTls)?;
        eprintln!(
            "rsh-server pid {} on {} and {}",
            server.pid(),
            server.unix_dest(),
            server.tls_dest()?
        );
        type Figure = fn(&mut Bench, &RshServer) -> anyhow::Result<()>;
        let figures: [(u8, Figure); 4] = [
            (1, Bench::latency),
            (2, Bench::rate),
            (3, Bench::throughput),
            (4, Bench::crowd),
        ];
        for (number, figure) in figures {
            if wanted(number) {
                eprintln!(
                    "figure {number}: {}",
                    report::FIGURES[usize::from(number - 1)]
                );
                figure(&mut bench, &server).with_context(|| format!("figure {number}"))?;
            }
        }
    }
    if wanted(5) {
        eprintln!("figure 5: {}", report::FIGURES[4]);
        bench.memory().context("figure 5")?;
    }
    if wanted(6) {
        eprintln!("figure 6: {}", report::FIGURES[5]);
        bench.growth().context("figure 6")?;
    }
    if wanted(7) {
        eprintln!("figure 7: {}", report::FIGURES[6]);
        bench.fleet().context("figure 7")?;
    }
    if wanted(8) {
        eprintln!("figure 8: {}", report::FIGURES[7]);
        bench.ansible().context("figure 8")?;
    }
    if wanted(9) {
        eprintln!("figure 9: {}", report::FIGURES[8]);
        bench.terminal().context("figure 9")?;
    }
    drop(bench.sshd.take());
    notes.push(format!(
        "load average (1/5/15 min) at start {load_at_start}, at end {}: other work on the machine skews every figure",
        util::load_average()
    ));
    if bench.ssh_skipped.is_empty() {
        notes.push("ssh: the private sshd sets SHLVL=1 so bash skips ~/.bashrc (rsh's sh -c reads no rc file either)".to_owned());
    }

    let report = Report {
        machine,
        quick: args.quick,
        revision,
        rows: std::mem::take(&mut bench.rows),
        notes,
    };
    print!("{}", report.render());
    if let Some(path) = &args.json {
        std::fs::write(path, report.json())
            .with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("figures written to {}", path.display());
    }
    Ok(())
}
