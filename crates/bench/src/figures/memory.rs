//! Figures 5 and 6: the server's memory with idle connections and a stalled
//! reader, and its time and peak memory as the output grows.

use super::{mb, ms, run_cases, Bench, Case, BULK_LIMIT, SHORT_LIMIT};
use crate::report::Row;
use crate::rsh::{Listen, RshServer};
use crate::util::{proc_status_kib, Feed, Run, Stats};
use anyhow::{bail, ensure, Context};
use futures::StreamExt;
use rsh_client::{Client, Event};
use std::time::{Duration, Instant};

impl Bench {
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
