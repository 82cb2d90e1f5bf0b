//! Where the daemon's log goes and how it looks.
//!
//! - `--log-format text` (the default): one line per event. ANSI colours
//!   only when stderr is a terminal. When stderr is the journal
//!   (`$JOURNAL_STREAM` names stderr's device and inode, as systemd sets it),
//!   no timestamp (journald stamps each line itself) and a `<N>` syslog
//!   priority prefix, so `journalctl -p warning` filters by level.
//! - `--log-format json`: one JSON object per line for log shippers, with
//!   the event's fields flattened and the spans it happened in (`conn` with
//!   the peer, `cmd` with the command) under `spans`.
//!
//! `RUST_LOG` overrides the level in both.
//!
//! The library's text a peer chose (`rsh_server::logging::PeerText`) is
//! told which format is installed.

use std::io::IsTerminal;
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::EnvFilter;

/// How log lines are written to stderr.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    /// Lines for people (and the journal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The name as `--log-format` and the config file spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

/// Installs the global subscriber writing to stderr. `level` is the
/// default filter (`info`, `debug`, ...) when `RUST_LOG` is unset.
pub(crate) fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `try_init`: a second call (tests running main twice) keeps the first.
    let _ = match format {
        LogFormat::Json => {
            rsh_server::logging::set_json(true);
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(true)
                .try_init()
        }
        LogFormat::Text if stderr_is_journal() => builder
            .with_ansi(false)
            .event_format(JournalPriority(
                tracing_subscriber::fmt::format().without_time(),
            ))
            .try_init(),
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
    };
}

/// Whether stderr is connected to the journal: systemd sets
/// `JOURNAL_STREAM=DEV:INO` for the stream it hands a service, and a
/// process whose stderr was redirected since must not take it as the
/// journal, hence the comparison with stderr's own device and inode.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsRawFd;
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    // dev_t and ino_t are u64 on Linux but narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    nix::sys::stat::fstat(std::io::stderr().as_raw_fd())
        .is_ok_and(|stat| stat.st_dev as u64 == dev && stat.st_ino as u64 == ino)
}

/// Prefixes each line with its syslog priority (`<3>` error ... `<7>`
/// debug), which journald strips and records as the entry's priority.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}
