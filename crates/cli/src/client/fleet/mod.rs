//! Fan-out: one command on many hosts from one process (`rsh-client -H
//! web[01-20] ...`), one connection per host, at most `--fanout` connecting
//! or running at once.
//!
//! The pieces: [`hosts`] turns `-H`/`--hosts-file`/`--exclude` into resolved
//! hosts; [`run`] is the scheduler (a semaphore of `--fanout` permits, one
//! task per host holding a permit, one cancellation token for Ctrl-C); each
//! host task sends its output and its end over one channel to the loop that
//! owns the run's [`sink::Sink`] (live, gathered or JSON); the summary and
//! exit code come from the hosts' results at the end.
//!
//! Exit code: 0 when every host ran its command and it exited 0; otherwise
//! the largest of the hosts' statuses (as `pdsh -S`; 128+N for signal N, 124
//! for a timeout); 255 when any host could not be reached or refused; 130
//! after Ctrl-C. The codes and the mapping of a status are those of one host
//! (`super::exit`); [`outcome`] folds the hosts' into one.

mod hosts;
mod outcome;
mod sink;
mod stdin;

use super::exit::{EXIT_BROKEN_PIPE, EXIT_RSH_FAILURE};
use bytes::Bytes;
use outcome::{exit_code, summary, Category, HostResult, Outcome, Stream};
use rsh_client::{Client, ClientError, ConnectOptions, Event, ExecRequest, Fingerprint};
use rsh_config::ssh_config::{ClientConfig, Overrides};
use rsh_config::RshHome;
use sink::{GatherSink, JsonSink, LiveSink, Sink};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};
use stdin::StdinTape;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Default `--max-hosts`: as many hosts as `--fanout` may run at once at
/// most, far beyond any cluster pdsh or clush is pointed at.
const DEFAULT_MAX_HOSTS: u32 = 65_536;

/// Reports queued between the host tasks and the sink.
const REPORT_QUEUE: usize = 256;

/// The fleet options of `rsh-client`: run one command on many hosts.
#[derive(Debug, Clone, clap::Args)]
pub struct FleetArgs {
    /// Run the command on these hosts instead of one DEST. Repeatable.
    ///
    /// A hostlist as pdsh and ClusterShell write them (`web[01-20]`, `db[1,3-5]`,
    /// `rack[1-2]-node[01-08]`), comma-separated, each entry optionally
    /// `user@` before and `:PORT` after; names may be config-file aliases.
    #[arg(short = 'H', long = "hosts", value_name = "HOSTLIST")]
    pub hosts: Vec<String>,

    /// Read hosts from FILE, one a line. Repeatable.
    ///
    /// Each line is a host or a hostlist; `#` starts a comment.
    #[arg(long = "hosts-file", value_name = "FILE")]
    pub hosts_file: Vec<PathBuf>,

    /// Leave these hosts out (a hostlist). Repeatable.
    ///
    /// An entry without a port leaves the host out on every port.
    #[arg(long, value_name = "HOSTLIST")]
    pub exclude: Vec<String>,

    /// Hosts connecting or running at once.
    #[arg(long, value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub fanout: u32,

    /// Most hosts one run may name: every -H list and hosts-file line
    /// together, counted as written (repeats included).
    ///
    /// A run that names more stops before it connects anywhere, so a
    /// mistyped range cannot expand to millions of hosts.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_HOSTS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_hosts: u32,

    /// Print output at the end, identical outputs once (like `clush -b`).
    ///
    /// Hosts with identical output and exit status are grouped under one
    /// header naming them, instead of each line printed as it comes
    /// prefixed with its host.
    #[arg(long, conflicts_with = "json")]
    pub gather: bool,

    /// Print one JSON object per host, a line each.
    ///
    /// The fields are described in the README, "Fleets".
    #[arg(long)]
    pub json: bool,
}

impl FleetArgs {
    /// Whether hosts were given, i.e. this is a fleet run.
    pub fn is_active(&self) -> bool {
        !self.hosts.is_empty() || !self.hosts_file.is_empty()
    }
}

/// The rest of the command line a fleet run needs (the options it shares
/// with a one-host run).
#[derive(Debug, Clone)]
pub struct FleetOptions {
    /// Our key and known_hosts.
    pub home: RshHome,
    /// The client config file, for aliases and per-host settings.
    pub config: ClientConfig,
    /// `-p`, `-l`, `-o`: applied to every host, before the config file.
    pub overrides: Overrides,
    /// `--accept-new`: record unknown host keys.
    pub accept_new: bool,
    /// Connect timeout for hosts the config gives none.
    pub connect_timeout: Duration,
    /// Forward our stdin to every host (off for `-n` or a terminal).
    pub forward_stdin: bool,
    /// `-q`: no summary unless stderr is a terminal.
    pub quiet: bool,
}

/// What a host task tells the sink's loop.
enum Report {
    Output {
        host: usize,
        stream: Stream,
        data: Bytes,
    },
    Done {
        host: usize,
        result: HostResult,
    },
}

/// Runs `request` on every host of `fleet`; prints their output through the
/// sink `fleet` asks for, then the summary; returns the exit code (see the
/// module docs).
pub async fn run(fleet: &FleetArgs, request: ExecRequest, options: FleetOptions) -> ExitCode {
    let targets = match hosts::targets(fleet, &options).await {
        Ok(targets) => targets,
        Err(err) => {
            eprintln!("rsh-client: {err:#}");
            return ExitCode::from(EXIT_RSH_FAILURE);
        }
    };
    let labels: Arc<[String]> = targets.iter().map(|t| t.label.clone()).collect();
    let mut sink: Box<dyn Sink> = if fleet.json {
        Box::new(JsonSink::new(labels.clone(), stdout()))
    } else if fleet.gather {
        Box::new(GatherSink::new(labels.clone(), stdout(), std::io::stderr()))
    } else {
        Box::new(LiveSink::new(labels.clone(), stdout(), std::io::stderr()))
    };
    let stdin = options
        .forward_stdin
        .then(|| StdinTape::record(tokio::io::stdin()));

    let cancel = CancellationToken::new();
    // Ctrl-C (and SIGTERM) cancel the run: every host task sees the one
    // token, drops its connection (the server then ends that host's
    // command) and reports itself interrupted.
    let signals = tokio::spawn(cancel_on_signal(cancel.clone()));
    let (reports_tx, mut reports) = mpsc::channel(REPORT_QUEUE);
    let scheduler = tokio::spawn(schedule(
        targets,
        Arc::new(request),
        options.home.clone(),
        fleet.fanout,
        stdin,
        reports_tx,
        cancel.clone(),
    ));

    let mut results: Vec<Option<HostResult>> = vec![None; labels.len()];
    let mut broken_pipe = false;
    // Gathered output shows nothing until the end: say how far along it is,
    // on a terminal only (never in pipes or with --json).
    let mut progress =
        (fleet.gather && std::io::stderr().is_terminal()).then(|| Progress::new(labels.len()));
    while let Some(report) = reports.recv().await {
        let written = match report {
            Report::Output { host, stream, data } => sink.output(host, stream, &data),
            Report::Done { host, result } => {
                let written = sink.done(host, &result);
                if let Some(progress) = &mut progress {
                    progress.done(result.outcome.category() != Category::Succeeded);
                }
                results[host] = Some(result);
                written
            }
        };
        if let Err(err) = written {
            if !broken_pipe {
                if err.kind() != std::io::ErrorKind::BrokenPipe {
                    eprintln!("rsh-client: cannot write to stdout: {err}");
                }
                broken_pipe = true;
                cancel.cancel();
            }
        }
    }
    let _ = scheduler.await;
    signals.abort();
    drop(progress);
    // Hosts never started (Ctrl-C came first) are interrupted too.
    let results: Vec<HostResult> = results
        .into_iter()
        .enumerate()
        .map(|(host, result)| {
            result.unwrap_or_else(|| {
                let result = HostResult {
                    outcome: Outcome::Interrupted,
                    duration: Duration::ZERO,
                };
                let _ = sink.done(host, &result);
                result
            })
        })
        .collect();
    if sink.finish().is_err() {
        broken_pipe = true;
    }
    if std::io::stderr().is_terminal() || !options.quiet {
        eprint!("{}", summary(&labels, &results));
    }
    if broken_pipe {
        return ExitCode::from(EXIT_BROKEN_PIPE);
    }
    ExitCode::from(exit_code(&results, cancel.is_cancelled()))
}

/// The progress line of `--gather` on a terminal: `[done/total] N failed`,
/// redrawn at most every 100 ms, erased when dropped.
struct Progress {
    total: usize,
    done: usize,
    failed: usize,
    drawn: Option<Instant>,
}

impl Progress {
    const EVERY: Duration = Duration::from_millis(100);

    fn new(total: usize) -> Progress {
        Progress {
            total,
            done: 0,
            failed: 0,
            drawn: None,
        }
    }

    fn done(&mut self, failed: bool) {
        self.done += 1;
        self.failed += usize::from(failed);
        if self.drawn.is_some_and(|at| at.elapsed() < Self::EVERY) {
            return;
        }
        self.drawn = Some(Instant::now());
        eprint!(
            "\r\x1b[K[{}/{}] {} failed",
            self.done, self.total, self.failed
        );
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if self.drawn.is_some() {
            eprint!("\r\x1b[K");
        }
    }
}

/// Our stdout as a plain file: the sinks write whole lines in one call, and
/// `std::io::Stdout`'s line buffer would only split them up again.
fn stdout() -> Box<dyn std::io::Write> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
}

async fn cancel_on_signal(cancel: CancellationToken) {
    use tokio::signal::unix::{signal as unix_signal, SignalKind};
    let Ok(mut term) = unix_signal(SignalKind::terminate()) else {
        // Without a SIGTERM handler, Ctrl-C alone still cancels.
        if tokio::signal::ctrl_c().await.is_ok() {
            cancel.cancel();
        }
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("rsh-client: interrupted; ending the command on every host");
    cancel.cancel();
}

/// Starts one task per host, at most `fanout` at once, in order.
async fn schedule(
    targets: Vec<hosts::Target>,
    request: Arc<ExecRequest>,
    home: RshHome,
    fanout: u32,
    stdin: Option<Arc<StdinTape>>,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(fanout as usize));
    let mut tasks = tokio::task::JoinSet::new();
    for (host, target) in targets.into_iter().enumerate() {
        // The permit is taken before the task exists (mini-redis's accept
        // loop): no more than `fanout` hosts connecting or running, and no
        // idle tasks queued for the rest.
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = cancel.cancelled() => break,
        };
        let Ok(permit) = permit else { break };
        let span = tracing::info_span!("host", host = %target.label);
        let task = run_host(
            host,
            target,
            request.clone(),
            home.clone(),
            stdin.clone(),
            reports.clone(),
            cancel.clone(),
        );
        tasks.spawn(
            async move {
                task.await;
                drop(permit);
            }
            .instrument(span),
        );
        // Reap finished tasks as we go, so 1,000 hosts do not keep 1,000
        // finished entries.
        while tasks.try_join_next().is_some() {}
    }
    while tasks.join_next().await.is_some() {}
}

/// Connects to one host, runs the command, streams its output to the sink
/// loop, and reports how it ended.
async fn run_host(
    host: usize,
    target: hosts::Target,
    request: Arc<ExecRequest>,
    home: RshHome,
    stdin: Option<Arc<StdinTape>>,
    reports: mpsc::Sender<Report>,
    cancel: CancellationToken,
) {
    let started = Instant::now();
    let work = async {
        let mut options = ConnectOptions::new(home);
        options.host_keys = target.host_keys.clone();
        if target.note_added_key {
            // As for one host (and as ssh under pdsh): each key recorded is
            // named, so a first --accept-new run shows what it now trusts.
            let label = target.label.clone();
            options.host_key_added = Some(Arc::new(
                move |host_port: &str, fingerprint: &Fingerprint| {
                    // One write for the whole line, so it does not split another's.
                    let line = format!(
                    "{label}: Warning: Permanently added '{host_port}' ({fingerprint}) to the list of known hosts.\n"
                );
                    eprint!("{line}");
                },
            ));
        }
        options.connect_timeout = target.connect_timeout;
        let client = Client::connect(&target.endpoint, &options).await?;
        let mut request = (*request).clone();
        if let Some(user) = &target.user {
            request = request.user(user.as_str());
        }
        let mut command = client.exec(request).await?;
        let feeder = match &stdin {
            Some(tape) => {
                let (tape, writer) = (tape.clone(), command.stdin());
                Some(AbortOnDrop(tokio::spawn(
                    async move { tape.feed(writer).await },
                )))
            }
            None => {
                command.close_stdin().await?;
                None
            }
        };
        loop {
            let (stream, data) = match command.next_event().await? {
                Some(Event::Stdout(data)) => (Stream::Stdout, data),
                Some(Event::Stderr(data)) => (Stream::Stderr, data),
                Some(Event::Exit(status)) => {
                    drop(feeder);
                    return Ok::<_, ClientError>(status);
                }
                None => {
                    return Err(ClientError::connection_lost(
                        "command ended without a status".to_owned(),
                    ))
                }
            };
            if reports
                .send(Report::Output { host, stream, data })
                .await
                .is_err()
            {
                return Err(ClientError::connection_lost("the run ended".to_owned()));
            }
        }
    };
    let outcome = tokio::select! {
        result = work => match result {
            Ok(status) => Outcome::Exited(status),
            Err(err) => Outcome::from_error(err),
        },
        // Dropping `work` drops the connection; the server ends the
        // command's process group when its client goes.
        () = cancel.cancelled() => Outcome::Interrupted,
    };
    tracing::debug!(outcome = %outcome.describe(), "host done");
    let result = HostResult {
        outcome,
        duration: started.elapsed(),
    };
    let _ = reports.send(Report::Done { host, result }).await;
}

/// Aborts the task when dropped: a host's stdin feeder ends with its
/// command, however the command ends.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
