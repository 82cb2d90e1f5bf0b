//! Where a fleet run's output goes: one [`Sink`] per run, fed every host's
//! output chunks and end, by one task, so nothing deep in the connection
//! code writes to the process's stdout and lines of different hosts cannot
//! interleave.
//!
//! - [`LiveSink`]: each line as it arrives, `host: ` in front (pdsh's style).
//! - [`GatherSink`]: at the end, hosts with the same output and status
//!   under one header (`clush -b`'s style).
//! - [`JsonSink`]: one JSON object per host, a line each.

use super::outcome::{HostResult, Outcome, Stream};
use bytes::{Bytes, BytesMut};
use std::collections::HashMap;
use std::io::{self, Write};
use std::sync::Arc;

/// A partial line longer than this is written as a line of its own: a host
/// printing without newlines must not make us hold its output without bound.
pub(crate) const MAX_PARTIAL_LINE: usize = 64 * 1024;

/// Receives a fleet run's output. Hosts are numbered in the order of the
/// run's host list.
pub(crate) trait Sink {
    /// `data` arrived from `host` on `stream`.
    fn output(&mut self, host: usize, stream: Stream, data: &Bytes) -> io::Result<()>;
    /// `host` is done; no output follows from it.
    fn done(&mut self, host: usize, result: &HostResult) -> io::Result<()>;
    /// Every host is done.
    fn finish(&mut self) -> io::Result<()>;
}

/// The one line said about a host that did not end with status 0, after its
/// output: `host: rsh-client: exit 3`.
fn status_line(label: &str, outcome: &Outcome) -> Option<String> {
    match outcome {
        Outcome::Exited(rsh_proto::ExitStatus::Code(0)) | Outcome::Interrupted => None,
        other => Some(format!("{label}: rsh-client: {}\n", other.describe())),
    }
}

/// Live output, each line prefixed with its host.
pub(crate) struct LiveSink<O: Write, E: Write> {
    labels: Arc<[String]>,
    out: O,
    err: E,
    /// The unfinished last line of each host's stream.
    partial: HashMap<(usize, Stream), Vec<u8>>,
}

impl<O: Write, E: Write> LiveSink<O, E> {
    pub fn new(labels: Arc<[String]>, out: O, err: E) -> Self {
        LiveSink {
            labels,
            out,
            err,
            partial: HashMap::new(),
        }
    }

    fn write(&mut self, stream: Stream, text: &[u8]) -> io::Result<()> {
        if text.is_empty() {
            return Ok(());
        }
        match stream {
            Stream::Stdout => self.out.write_all(text).and_then(|()| self.out.flush()),
            // A closed stderr is not worth ending the run for.
            Stream::Stderr => {
                let _ = self.err.write_all(text).and_then(|()| self.err.flush());
                Ok(())
            }
        }
    }

    /// Writes the held partial line of `host`'s `stream`, ended with a
    /// newline.
    fn flush_partial(&mut self, host: usize, stream: Stream) -> io::Result<()> {
        let Some(rest) = self.partial.remove(&(host, stream)) else {
            return Ok(());
        };
        if rest.is_empty() {
            return Ok(());
        }
        let mut text = prefix(&self.labels[host]);
        text.extend_from_slice(&rest);
        text.push(b'\n');
        self.write(stream, &text)
    }
}

fn prefix(label: &str) -> Vec<u8> {
    let mut text = Vec::with_capacity(label.len() + 80);
    text.extend_from_slice(label.as_bytes());
    text.extend_from_slice(b": ");
    text
}

impl<O: Write, E: Write> Sink for LiveSink<O, E> {
    fn output(&mut self, host: usize, stream: Stream, data: &Bytes) -> io::Result<()> {
        let label = &self.labels[host];
        let held = self.partial.entry((host, stream)).or_default();
        held.extend_from_slice(data);
        let mut text = Vec::new();
        if let Some(end) = held.iter().rposition(|&b| b == b'\n') {
            // One write for every whole line of the chunk: one host's lines
            // stay together and no other host's bytes land inside them.
            let whole: Vec<u8> = held.drain(..=end).collect();
            text.reserve(whole.len() + 16 * (label.len() + 2));
            for line in whole.split_inclusive(|&b| b == b'\n') {
                text.extend_from_slice(label.as_bytes());
                text.extend_from_slice(b": ");
                text.extend_from_slice(line);
            }
        }
        if held.len() > MAX_PARTIAL_LINE {
            text.extend_from_slice(label.as_bytes());
            text.extend_from_slice(b": ");
            text.append(held);
            text.push(b'\n');
        }
        self.write(stream, &text)
    }

    fn done(&mut self, host: usize, result: &HostResult) -> io::Result<()> {
        self.flush_partial(host, Stream::Stdout)?;
        self.flush_partial(host, Stream::Stderr)?;
        if let Some(line) = status_line(&self.labels[host], &result.outcome) {
            self.write(Stream::Stderr, line.as_bytes())?;
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Each running host's whole output, held until the host is done: the
/// sinks that print a host only at its end ([`GatherSink`], [`JsonSink`])
/// share it.
#[derive(Default)]
struct HeldOutput {
    running: HashMap<usize, (BytesMut, BytesMut)>,
}

impl HeldOutput {
    /// `data` arrived from `host` on `stream`.
    fn hold(&mut self, host: usize, stream: Stream, data: &[u8]) {
        let (out, err) = self.running.entry(host).or_default();
        match stream {
            Stream::Stdout => out.extend_from_slice(data),
            Stream::Stderr => err.extend_from_slice(data),
        }
    }

    /// `host`'s whole (stdout, stderr), now that it is done.
    fn take(&mut self, host: usize) -> (Bytes, Bytes) {
        let (out, err) = self.running.remove(&host).unwrap_or_default();
        (out.freeze(), err.freeze())
    }
}

/// What makes two hosts' results the same for `--gather`.
#[derive(Debug, PartialEq, Eq, Hash)]
struct GroupKey {
    /// `None` for exit status 0, else how it ended.
    status: Option<String>,
    stdout: Bytes,
    stderr: Bytes,
}

/// Gathered output: hosts grouped by identical (stdout, stderr, status).
///
/// Grouping hashes each host's whole result once into a map, so 1,000
/// identical answers are one entry (one copy of the output) with 1,000 host
/// numbers, with no comparison of hosts against each other.
pub(crate) struct GatherSink<O: Write, E: Write> {
    labels: Arc<[String]>,
    out: O,
    err: E,
    /// Output of hosts still running.
    running: HeldOutput,
    groups: HashMap<GroupKey, Vec<usize>>,
    /// Why hosts without output ended (unreachable, refused), printed at
    /// the end with the rest.
    errors: Vec<String>,
}

impl<O: Write, E: Write> GatherSink<O, E> {
    pub fn new(labels: Arc<[String]>, out: O, err: E) -> Self {
        GatherSink {
            labels,
            out,
            err,
            running: HeldOutput::default(),
            groups: HashMap::new(),
            errors: Vec::new(),
        }
    }
}

/// `---` above and below `text`, as clush's header.
fn header(text: &str) -> String {
    let rule = "-".repeat(text.chars().count().max(15));
    format!("{rule}\n{text}\n{rule}\n")
}

impl<O: Write, E: Write> Sink for GatherSink<O, E> {
    fn output(&mut self, host: usize, stream: Stream, data: &Bytes) -> io::Result<()> {
        self.running.hold(host, stream, data);
        Ok(())
    }

    fn done(&mut self, host: usize, result: &HostResult) -> io::Result<()> {
        let (stdout, stderr) = self.running.take(host);
        match &result.outcome {
            Outcome::Exited(status)
                if !matches!(status, rsh_proto::ExitStatus::FailedToStart(_)) =>
            {
                let key = GroupKey {
                    status: match status {
                        rsh_proto::ExitStatus::Code(0) => None,
                        _ => Some(result.outcome.describe()),
                    },
                    stdout,
                    stderr,
                };
                self.groups.entry(key).or_default().push(host);
            }
            other => {
                // No output to group: why it ended is said at the end.
                if let Some(line) = status_line(&self.labels[host], other) {
                    self.errors.push(line);
                }
            }
        }
        Ok(())
    }

    fn finish(&mut self) -> io::Result<()> {
        let mut groups: Vec<(GroupKey, Vec<usize>)> = self.groups.drain().collect();
        // In the order of the host list: the group of the first host first.
        groups.sort_by_key(|(_, hosts)| hosts.iter().min().copied());
        for (key, hosts) in groups {
            if key.status.is_none() && key.stdout.is_empty() && key.stderr.is_empty() {
                continue;
            }
            let names = rsh_hostlist::compress(hosts.iter().map(|&h| self.labels[h].as_str()));
            let title = match &key.status {
                None => format!("{names} ({})", hosts.len()),
                Some(status) => format!("{names} ({}): {status}", hosts.len()),
            };
            let title = header(&title);
            if !key.stdout.is_empty() || key.stderr.is_empty() {
                self.out.write_all(title.as_bytes())?;
                self.out.write_all(&key.stdout)?;
                if !key.stdout.ends_with(b"\n") && !key.stdout.is_empty() {
                    self.out.write_all(b"\n")?;
                }
            }
            if !key.stderr.is_empty() {
                self.out.flush()?;
                let _ = self.err.write_all(title.as_bytes());
                let _ = self.err.write_all(&key.stderr);
                if !key.stderr.ends_with(b"\n") {
                    let _ = self.err.write_all(b"\n");
                }
                let _ = self.err.flush();
            }
        }
        self.out.flush()?;
        for line in self.errors.drain(..) {
            let _ = self.err.write_all(line.as_bytes());
        }
        let _ = self.err.flush();
        Ok(())
    }
}

/// One JSON object per host, on a line of its own, when the host is done
/// (the format is documented in the README, "Fleets").
pub(crate) struct JsonSink<O: Write> {
    labels: Arc<[String]>,
    out: O,
    running: HeldOutput,
}

impl<O: Write> JsonSink<O> {
    pub fn new(labels: Arc<[String]>, out: O) -> Self {
        JsonSink {
            labels,
            out,
            running: HeldOutput::default(),
        }
    }
}

/// One host's line of `--json`.
#[derive(Debug, serde::Serialize)]
pub(crate) struct HostRecord<'a> {
    pub host: &'a str,
    /// `success`, `failed`, `unreachable`, `refused` or `interrupted`.
    pub result: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<u8>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub stdout: String,
    pub stdout_encoding: &'static str,
    pub stderr: String,
    pub stderr_encoding: &'static str,
    pub duration_ms: u64,
}

/// Output as JSON text: UTF-8 as is when it is valid, else base64.
fn encode(data: &[u8]) -> (String, &'static str) {
    use base64::Engine;
    match std::str::from_utf8(data) {
        Ok(text) => (text.to_owned(), "utf-8"),
        Err(_) => (
            base64::engine::general_purpose::STANDARD.encode(data),
            "base64",
        ),
    }
}

impl<O: Write> Sink for JsonSink<O> {
    fn output(&mut self, host: usize, stream: Stream, data: &Bytes) -> io::Result<()> {
        self.running.hold(host, stream, data);
        Ok(())
    }

    fn done(&mut self, host: usize, result: &HostResult) -> io::Result<()> {
        let (stdout, stderr) = self.running.take(host);
        let (stdout, stdout_encoding) = encode(&stdout);
        let (stderr, stderr_encoding) = encode(&stderr);
        let (mut exit, mut signal, mut timed_out, mut error) = (None, None, false, None);
        match &result.outcome {
            Outcome::Exited(rsh_proto::ExitStatus::Code(code)) => exit = Some(*code),
            Outcome::Exited(rsh_proto::ExitStatus::Signal(number)) => signal = Some(*number),
            Outcome::Exited(rsh_proto::ExitStatus::TimedOut) => timed_out = true,
            other => error = Some(other.describe()),
        }
        let record = HostRecord {
            host: &self.labels[host],
            result: result.outcome.category().json_name(),
            exit,
            signal,
            timed_out,
            error,
            stdout,
            stdout_encoding,
            stderr,
            stderr_encoding,
            duration_ms: u64::try_from(result.duration.as_millis()).unwrap_or(u64::MAX),
        };
        let mut line = serde_json::to_vec(&record).map_err(io::Error::other)?;
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsh_proto::ExitStatus;
    use std::time::Duration;

    fn labels(names: &[&str]) -> Arc<[String]> {
        names.iter().map(|s| (*s).to_owned()).collect()
    }

    fn exited(code: i32) -> HostResult {
        HostResult {
            outcome: Outcome::Exited(ExitStatus::Code(code)),
            duration: Duration::from_millis(5),
        }
    }

    fn text(bytes: &[u8]) -> &str {
        std::str::from_utf8(bytes).expect("utf-8")
    }

    #[test]
    fn live_holds_partial_lines_until_newline_or_end() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let mut sink = LiveSink::new(labels(&["a", "b"]), &mut out, &mut err);
            let chunk = |s: &'static str| Bytes::from_static(s.as_bytes());
            sink.output(0, Stream::Stdout, &chunk("one\ntw"))
                .expect("write");
            sink.output(1, Stream::Stdout, &chunk("x")).expect("write");
            sink.output(0, Stream::Stdout, &chunk("o\nthr"))
                .expect("write");
            sink.output(1, Stream::Stderr, &chunk("oops\n"))
                .expect("write");
            sink.output(1, Stream::Stdout, &chunk("y\n"))
                .expect("write");
            sink.done(0, &exited(0)).expect("write");
            sink.done(1, &exited(2)).expect("write");
            sink.finish().expect("flush");
        }
        assert_eq!(text(&out), "a: one\na: two\nb: xy\na: thr\n");
        assert_eq!(text(&err), "b: oops\nb: rsh-client: exit 2\n");
    }

    #[test]
    fn live_splits_an_endless_line() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let mut sink = LiveSink::new(labels(&["a"]), &mut out, &mut err);
        let long = Bytes::from(vec![b'x'; MAX_PARTIAL_LINE + 1]);
        sink.output(0, Stream::Stdout, &long).expect("write");
        drop(sink);
        assert_eq!(out.len(), MAX_PARTIAL_LINE + 1 + 4);
    }

    #[test]
    fn gather_groups_by_output_and_status() {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        {
            let names = labels(&["n1", "n2", "n3", "n4", "n5"]);
            let mut sink = GatherSink::new(names, &mut out, &mut err);
            let same = Bytes::from_static(b"same\n");
            for host in 0..5 {
                let data = if host == 3 {
                    Bytes::from_static(b"other\n")
                } else {
                    same.clone()
                };
                sink.output(host, Stream::Stdout, &data).expect("write");
            }
            for host in [4, 0, 1, 2, 3] {
                sink.done(host, &exited(if host == 4 { 1 } else { 0 }))
                    .expect("write");
            }
            sink.finish().expect("flush");
        }
        let rule = "-".repeat(15);
        assert_eq!(
            text(&out),
            format!(
                "{rule}\nn[1-3] (3)\n{rule}\nsame\n{rule}\nn4 (1)\n{rule}\nother\n{rule}\nn5 (1): exit 1\n{rule}\nsame\n"
            )
        );
        assert!(err.is_empty());
    }

    #[test]
    fn json_encodes_invalid_utf8_as_base64() {
        let mut out = Vec::new();
        let mut sink = JsonSink::new(labels(&["h"]), &mut out);
        sink.output(0, Stream::Stdout, &Bytes::from_static(b"\xff\x00"))
            .expect("write");
        sink.output(0, Stream::Stderr, &Bytes::from_static(b"warn\n"))
            .expect("write");
        sink.done(0, &exited(3)).expect("write");
        drop(sink);
        let value: serde_json::Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(value["host"], "h");
        assert_eq!(value["result"], "failed");
        assert_eq!(value["exit"], 3);
        assert_eq!(value["stdout"], "/wA=");
        assert_eq!(value["stdout_encoding"], "base64");
        assert_eq!(value["stderr"], "warn\n");
        assert_eq!(value["stderr_encoding"], "utf-8");
        assert_eq!(value["duration_ms"], 5);
        assert!(value.get("signal").is_none() && value.get("error").is_none());
    }
}
