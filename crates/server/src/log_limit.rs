//! Keeping what strangers (and noisy clients) do from flooding the log.
//!
//! Two tools: [`LogLimiter`] lets a few lines through per interval and
//! counts the rest, so the next line that gets through can say how many were
//! suppressed; [`Tally`] aggregates events by reason and source address into
//! one summary line per interval, naming only the busiest sources. Both take
//! the time as an argument (tokio's clock, so tests can pause it) and keep
//! bounded state whatever the peer does.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;
use tokio::time::Instant;

/// At most `burst` lines per `interval`; the rest are counted.
#[derive(Debug)]
pub struct LogLimiter {
    interval: Duration,
    burst: u32,
    window_start: Option<Instant>,
    used: u32,
    suppressed: u64,
}

impl LogLimiter {
    /// A limiter letting `burst` lines through per `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        LogLimiter {
            interval,
            burst: burst.max(1),
            window_start: None,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be written at `now`: `Some(n)` if yes, with `n`
    /// the lines suppressed since the last one that got through; `None` if
    /// this one is suppressed (and counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        let fresh = match self.window_start {
            None => true,
            Some(start) => now.saturating_duration_since(start) >= self.interval,
        };
        if fresh {
            self.window_start = Some(now);
            self.used = 0;
        }
        if self.used < self.burst {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }

    /// Lines suppressed and not yet reported.
    #[cfg(test)]
    pub fn suppressed(&self) -> u64 {
        self.suppressed
    }

    /// Lines suppressed and not yet reported, now reported (for a summary
    /// when the limiter goes away).
    pub fn take_suppressed(&mut self) -> u64 {
        std::mem::take(&mut self.suppressed)
    }
}

/// Distinct sources counted per interval; beyond this, events still count
/// under their reason but their source is not remembered.
const MAX_SOURCES: usize = 4096;

/// Events counted by reason and by source between two summaries.
#[derive(Debug)]
pub struct Tally {
    reasons: Vec<(&'static str, u64)>,
    sources: HashMap<IpAddr, Source>,
    /// Lines written one by one in this interval, at most one per source.
    individual: LogLimiter,
    unattributed: u64,
}

#[derive(Debug, Default, Clone, Copy)]
struct Source {
    events: u64,
    logged: bool,
}

impl Tally {
    /// A tally that lets at most `individual` events per `interval` be
    /// logged one by one (one per source), the rest only in the summary.
    pub fn new(interval: Duration, individual: u32) -> Self {
        Tally {
            reasons: Vec::new(),
            sources: HashMap::new(),
            individual: LogLimiter::new(interval, individual),
            unattributed: 0,
        }
    }

    /// Counts one event; `true` if it may also be logged on its own line
    /// (the first from its source in this interval, within the overall
    /// budget).
    pub fn record(&mut self, reason: &'static str, source: IpAddr, now: Instant) -> bool {
        let Some(entry) = self.count_event(reason, source) else {
            return false;
        };
        if entry.logged {
            return false;
        }
        if self.individual.check(now).is_some() {
            if let Some(entry) = self.sources.get_mut(&source) {
                entry.logged = true;
            }
            return true;
        }
        false
    }

    /// Counts one event that is never logged on its own line (and so does
    /// not use up its source's line).
    pub fn count(&mut self, reason: &'static str, source: IpAddr) {
        self.count_event(reason, source);
    }

    fn count_event(&mut self, reason: &'static str, source: IpAddr) -> Option<Source> {
        match self.reasons.iter_mut().find(|(name, _)| *name == reason) {
            Some((_, count)) => *count += 1,
            None => self.reasons.push((reason, 1)),
        }
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&source) {
            self.unattributed += 1;
            return None;
        }
        let entry = self.sources.entry(source).or_default();
        entry.events += 1;
        Some(*entry)
    }

    /// The summary of the interval, if anything happened, and a fresh
    /// start: counts per reason (`reason=N ...`) and the `top` busiest
    /// sources (`addr=N ...`).
    pub fn take_summary(&mut self, top: usize) -> Option<Summary> {
        if self.reasons.is_empty() {
            return None;
        }
        let mut counts = String::new();
        let mut total = 0;
        for (reason, count) in self.reasons.drain(..) {
            total += count;
            let _ = write!(counts, "{}{reason}={count}", sep(&counts));
        }
        let mut sources: Vec<(IpAddr, u64)> = self
            .sources
            .drain()
            .map(|(addr, source)| (addr, source.events))
            .collect();
        sources.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let mut top_sources = String::new();
        for (addr, count) in sources.iter().take(top) {
            let _ = write!(top_sources, "{}{addr}={count}", sep(&top_sources));
        }
        if self.unattributed > 0 {
            let _ = write!(
                top_sources,
                "{}(untracked)={}",
                sep(&top_sources),
                self.unattributed
            );
        }
        let summary = Summary {
            total,
            counts,
            distinct_sources: sources.len(),
            top_sources,
        };
        self.unattributed = 0;
        Some(summary)
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() {
        ""
    } else {
        " "
    }
}

/// One interval of a [`Tally`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Events in all.
    pub total: u64,
    /// `reason=N` for each reason seen.
    pub counts: String,
    /// Distinct sources remembered.
    pub distinct_sources: usize,
    /// `addr=N` for the busiest sources.
    pub top_sources: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_lets_a_burst_through_then_reports_what_it_suppressed() {
        let mut limiter = LogLimiter::new(Duration::from_secs(10), 3);
        let passed = (0..10_000)
            .filter(|_| limiter.check(Instant::now()).is_some())
            .count();
        assert_eq!(passed, 3);
        assert_eq!(limiter.suppressed(), 9_997);
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(limiter.check(Instant::now()), None, "same window");
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(limiter.check(Instant::now()), Some(9_998));
        assert_eq!(limiter.check(Instant::now()), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn tally_logs_one_line_per_source_and_summarises_the_rest() {
        let mut tally = Tally::new(Duration::from_secs(10), 5);
        let mut logged = 0;
        for i in 0..634_226u32 {
            let source = ip(u8::try_from(i % 3).expect("small"));
            let reason = if i % 2 == 0 { "silent" } else { "stalled" };
            if tally.record(reason, source, Instant::now()) {
                logged += 1;
            }
        }
        assert_eq!(logged, 3, "one individual line per source");
        let summary = tally.take_summary(2).expect("a summary");
        assert_eq!(summary.total, 634_226);
        assert_eq!(summary.counts, "silent=317113 stalled=317113");
        assert_eq!(summary.distinct_sources, 3);
        assert_eq!(summary.top_sources, "192.0.2.0=211409 192.0.2.1=211409");
        assert_eq!(tally.take_summary(2), None, "a fresh start");
        // The per-source budget renews with the interval.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(tally.record("silent", ip(0), Instant::now()));
        assert!(!tally.record("silent", ip(0), Instant::now()));
        // Quiet events count without using up a source's line.
        tally.count("closed", ip(1));
        assert!(tally.record("silent", ip(1), Instant::now()));
        let summary = tally.take_summary(1).expect("a summary");
        assert_eq!(summary.counts, "silent=3 closed=1");
    }

    #[tokio::test(start_paused = true)]
    async fn tally_bounds_individual_lines_and_remembered_sources() {
        let mut tally = Tally::new(Duration::from_secs(10), 5);
        let mut logged = 0;
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let source = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            if tally.record("silent", source, Instant::now()) {
                logged += 1;
            }
        }
        assert_eq!(logged, 5, "the overall budget holds across sources");
        let summary = tally.take_summary(1).expect("a summary");
        assert_eq!(summary.distinct_sources, MAX_SOURCES);
        assert!(
            summary.top_sources.ends_with("(untracked)=100"),
            "{summary:?}"
        );
    }
}
