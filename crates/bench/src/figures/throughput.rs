//! Figure 3: bulk stdout and stdin through the client binaries.

use super::{in_mb_per_s, mb, out_mb_per_s, run_cases, Bench, Case, BULK_LIMIT};
use crate::report::Row;
use crate::rsh::RshServer;
use crate::ssh::Mode;
use crate::util::{Feed, Run, Stats};
use anyhow::{ensure, Context};
use std::process::Command;
use std::time::Instant;

impl Bench {
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
