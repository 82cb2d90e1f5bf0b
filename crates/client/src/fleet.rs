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
//! after Ctrl-C.

mod hosts;
mod sink;
mod stdin;

use crate::{Client, ClientError, ConnectOptions, Event, ExecRequest, ExitStatus, Fingerprint};
use bytes::Bytes;
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

/// Exit code when a host could not be reached or refused (ssh's 255).
const EXIT_UNREACHABLE: u8 = 255;
/// Exit code after Ctrl-C.
const EXIT_INTERRUPTED: u8 = 130;
/// Exit code for a timed-out remote command (as timeout(1)).
const EXIT_TIMED_OUT: u8 = 124;
/// Exit code when our stdout is a closed pipe (as if killed by SIGPIPE).
const EXIT_BROKEN_PIPE: u8 = 141;
/// Reports queued between the host tasks and the sink.
const REPORT_QUEUE: usize = 256;

/// The fleet options of `rsh-client`: run one command on many hosts.
#[derive(Debug, Clone, Default, clap::Args)]
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

impl FleetOptions {
    /// Options from the environment: `$RSH_HOME` and its `config` (if any),
    /// no overrides, stdin forwarded unless it is a terminal.
    ///
    /// # Errors
    /// `$RSH_HOME` cannot be found or its config file is malformed.
    pub fn from_env(accept_new: bool) -> anyhow::Result<FleetOptions> {
        let home = RshHome::from_env()?;
        let config = ClientConfig::load_if_exists(home.config_path())?;
        Ok(FleetOptions {
            home,
            config,
            overrides: Overrides::new(),
            accept_new,
            connect_timeout: Duration::from_secs(10),
            forward_stdin: !std::io::stdin().is_terminal(),
            quiet: false,
        })
    }
}

/// Which stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// How one host's run ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The command ran and ended so.
    Exited(ExitStatus),
    /// The host could not be reached, or the connection broke.
    Unreachable(String),
    /// The host refused us (key, authorization, the command), or we refused
    /// its key.
    Refused { reason: String, hint: Hint },
    /// Ctrl-C ended the run before this host was done.
    Interrupted,
}

/// What the summary tells the user to do about a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    None,
    UnknownHostKey,
    NotAuthorized,
}

/// The summary's classes of hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
    Succeeded,
    Failed,
    Unreachable,
    Refused,
    Interrupted,
}

impl Category {
    fn json_name(self) -> &'static str {
        match self {
            Category::Succeeded => "success",
            Category::Failed => "failed",
            Category::Unreachable => "unreachable",
            Category::Refused => "refused",
            Category::Interrupted => "interrupted",
        }
    }
}

impl Outcome {
    fn from_error(err: ClientError) -> Outcome {
        match err {
            ClientError::Connect { .. }
            | ClientError::Greeting(_)
            | ClientError::Tls(_)
            | ClientError::ConnectionLost(_) => Outcome::Unreachable(err.to_string()),
            ClientError::UnknownHost { .. } | ClientError::HostKeyNotAccepted(_) => {
                Outcome::Refused {
                    reason: err.to_string(),
                    hint: Hint::UnknownHostKey,
                }
            }
            ClientError::NotAuthorized { .. } => Outcome::Refused {
                // The message carries our key line; once in the summary is
                // enough, not once per host.
                reason: "not authorized: the server does not list this client's key".to_owned(),
                hint: Hint::NotAuthorized,
            },
            other => Outcome::Refused {
                reason: other.to_string(),
                hint: Hint::None,
            },
        }
    }

    pub(crate) fn category(&self) -> Category {
        match self {
            Outcome::Exited(ExitStatus::Code(0)) => Category::Succeeded,
            Outcome::Exited(ExitStatus::FailedToStart(_)) => Category::Refused,
            Outcome::Exited(_) => Category::Failed,
            Outcome::Unreachable(_) => Category::Unreachable,
            Outcome::Refused { .. } => Category::Refused,
            Outcome::Interrupted => Category::Interrupted,
        }
    }

    /// A few words for the user: `exit 3`, `killed by signal 9`, the error.
    pub(crate) fn describe(&self) -> String {
        match self {
            Outcome::Exited(ExitStatus::Code(code)) => format!("exit {code}"),
            Outcome::Exited(ExitStatus::Signal(number)) => format!("killed by signal {number}"),
            Outcome::Exited(ExitStatus::TimedOut) => "timed out".to_owned(),
            Outcome::Exited(ExitStatus::FailedToStart(reason)) => {
                format!("failed to start: {reason}")
            }
            Outcome::Unreachable(reason) | Outcome::Refused { reason, .. } => reason.clone(),
            Outcome::Interrupted => "interrupted".to_owned(),
        }
    }

    /// This host's part of the exit code (see the module docs).
    fn exit_byte(&self) -> u8 {
        match self {
            Outcome::Exited(ExitStatus::Code(code)) => (*code & 0xff) as u8,
            Outcome::Exited(ExitStatus::Signal(number)) => 128u8.saturating_add(*number),
            Outcome::Exited(ExitStatus::TimedOut) => EXIT_TIMED_OUT,
            Outcome::Exited(ExitStatus::FailedToStart(_))
            | Outcome::Unreachable(_)
            | Outcome::Refused { .. } => EXIT_UNREACHABLE,
            Outcome::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// One host's end.
#[derive(Debug, Clone)]
pub(crate) struct HostResult {
    pub outcome: Outcome,
    /// From its turn to start to its end.
    pub duration: Duration,
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

/// The command line's entry: `request` is the command (if one was given),
/// `dest` whether a DEST was given too (an error with `-H`).
pub async fn main(
    fleet: &FleetArgs,
    request: Option<ExecRequest>,
    dest: bool,
    accept_new: bool,
) -> ExitCode {
    let request = match (request, dest) {
        (Some(request), false) => request,
        (_, true) => return usage("-H/--hosts-file replace DEST; give one or the other"),
        // The interactive prompt of clush/pdsh is not there yet.
        (None, false) => return usage("-H/--hosts-file need a command to run"),
    };
    match FleetOptions::from_env(accept_new) {
        Ok(options) => run(fleet, request, options).await,
        Err(err) => usage(&format!("{err:#}")),
    }
}

fn usage(reason: &str) -> ExitCode {
    eprintln!("rsh-client: {reason}");
    ExitCode::from(EXIT_UNREACHABLE)
}

/// Runs `request` on every host of `fleet`; prints their output through the
/// sink `fleet` asks for, then the summary; returns the exit code (see the
/// module docs).
pub async fn run(fleet: &FleetArgs, request: ExecRequest, options: FleetOptions) -> ExitCode {
    let targets = match hosts::targets(fleet, &options).await {
        Ok(targets) => targets,
        Err(err) => {
            eprintln!("rsh-client: {err:#}");
            return ExitCode::from(EXIT_UNREACHABLE);
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
                    return Err(ClientError::ConnectionLost(
                        "command ended without a status".to_owned(),
                    ))
                }
            };
            if reports
                .send(Report::Output { host, stream, data })
                .await
                .is_err()
            {
                return Err(ClientError::ConnectionLost("the run ended".to_owned()));
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

/// The exit code of the run (see the module docs).
fn exit_code(results: &[HostResult], interrupted: bool) -> u8 {
    if interrupted {
        return EXIT_INTERRUPTED;
    }
    let unreachable = results.iter().any(|r| {
        matches!(
            r.outcome.category(),
            Category::Unreachable | Category::Refused
        )
    });
    if unreachable {
        return EXIT_UNREACHABLE;
    }
    results
        .iter()
        .map(|r| r.outcome.exit_byte())
        .max()
        .unwrap_or(0)
}

/// The summary printed on stderr at the end: counts, and each class of
/// hosts as a compressed hostlist.
fn summary(labels: &[String], results: &[HostResult]) -> String {
    use std::fmt::Write;
    let of = |wanted: Category| -> Vec<&str> {
        results
            .iter()
            .zip(labels)
            .filter(|(r, _)| r.outcome.category() == wanted)
            .map(|(_, label)| label.as_str())
            .collect()
    };
    let classes = [
        (Category::Succeeded, "succeeded"),
        (Category::Failed, "failed (non-zero status)"),
        (Category::Unreachable, "unreachable"),
        (Category::Refused, "refused"),
        (Category::Interrupted, "interrupted"),
    ];
    let mut text = String::new();
    let mut counts = Vec::new();
    let mut lists = String::new();
    for (category, name) in classes {
        let hosts = of(category);
        if hosts.is_empty() && category != Category::Succeeded {
            continue;
        }
        counts.push(format!("{} {name}", hosts.len()));
        if !hosts.is_empty() {
            let _ = writeln!(
                lists,
                "rsh-client:   {name}: {}",
                rsh_hostlist::compress(&hosts)
            );
        }
    }
    let _ = writeln!(
        text,
        "rsh-client: {} hosts: {}",
        results.len(),
        counts.join(", ")
    );
    text.push_str(&lists);
    let hinted = |wanted: Hint| -> Vec<&str> {
        results
            .iter()
            .zip(labels)
            .filter(|(r, _)| matches!(r.outcome, Outcome::Refused { hint, .. } if hint == wanted))
            .map(|(_, label)| label.as_str())
            .collect()
    };
    let unknown = hinted(Hint::UnknownHostKey);
    if !unknown.is_empty() {
        let _ = writeln!(
            text,
            "rsh-client: host keys not in known_hosts: {}; compare each with `rsh-server --fingerprint` on that host, then rerun with --accept-new to record them",
            rsh_hostlist::compress(&unknown)
        );
    }
    let unauthorized = hinted(Hint::NotAuthorized);
    if !unauthorized.is_empty() {
        let _ = writeln!(
            text,
            "rsh-client: this client's key is not in the authorized_keys of: {}; add the line `rsh-client --fingerprint` prints there",
            rsh_hostlist::compress(&unauthorized)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> HostResult {
        HostResult {
            outcome,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn exit_code_is_the_largest_status_or_255() {
        let code =
            |o: Vec<Outcome>| exit_code(&o.into_iter().map(result).collect::<Vec<_>>(), false);
        let exited = |c| Outcome::Exited(ExitStatus::Code(c));
        assert_eq!(code(vec![exited(0), exited(0)]), 0);
        assert_eq!(code(vec![exited(3), exited(0), exited(7)]), 7);
        assert_eq!(
            code(vec![exited(1), Outcome::Exited(ExitStatus::Signal(9))]),
            137
        );
        assert_eq!(
            code(vec![exited(0), Outcome::Exited(ExitStatus::TimedOut)]),
            124
        );
        assert_eq!(
            code(vec![exited(7), Outcome::Unreachable("down".to_owned())]),
            255
        );
    }

    #[test]
    fn summary_names_each_class_as_a_hostlist() {
        let labels: Vec<String> = (1..=5).map(|n| format!("n{n}")).collect();
        let results: Vec<HostResult> = [
            Outcome::Exited(ExitStatus::Code(0)),
            Outcome::Exited(ExitStatus::Code(0)),
            Outcome::Exited(ExitStatus::Code(2)),
            Outcome::Unreachable("down".to_owned()),
            Outcome::from_error(ClientError::UnknownHost {
                host_port: "n5:7022".to_owned(),
                fingerprint: "SHA256:x".to_owned(),
            }),
        ]
        .into_iter()
        .map(result)
        .collect();
        let text = summary(&labels, &results);
        assert!(
            text.contains(
                "5 hosts: 2 succeeded, 1 failed (non-zero status), 1 unreachable, 1 refused"
            ),
            "{text}"
        );
        assert!(text.contains("succeeded: n[1-2]\n"), "{text}");
        assert!(text.contains("unreachable: n4\n"), "{text}");
        assert!(text.contains("host keys not in known_hosts: n5;"), "{text}");
    }
}
