//! Figure 7: one command on many hosts. Many distinct hosts on one machine
//! are distinct loopback addresses: a few `rsh-server`s listen on 250
//! addresses each (127.3.x.y), named `f1`...`fN` in a private client
//! config; for OpenSSH, four sshds listen on 16 addresses each (its limit),
//! driven by `pdsh -R ssh`.

use crate::report::Row;
use crate::rsh::Binaries;
use crate::util::{proc_status_kib, Stats};
use anyhow::{bail, Context};
use std::fmt::Write as _;
use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const FIGURE: u8 = 7;
/// Listen addresses per rsh-server.
const ADDRESSES_PER_SERVER: usize = 250;
/// Listen addresses per sshd (OpenSSH's limit).
const ADDRESSES_PER_SSHD: usize = 16;
/// Bound on one fleet run.
const RUN_LIMIT: Duration = Duration::from_secs(120);
/// How often the client's peak memory is sampled.
const POLL: Duration = Duration::from_millis(2);

/// rsh-servers for `hosts` hosts and a client RSH_HOME that knows them.
struct RshFleet {
    _servers: Vec<rsh_harness::Server>,
    home: tempfile::TempDir,
}

fn rsh_address(i: usize) -> String {
    format!("127.3.{}.{}", i / 200, i % 200 + 1)
}

impl RshFleet {
    fn start(bins: &Binaries, hosts: usize) -> anyhow::Result<RshFleet> {
        let home = tempfile::Builder::new()
            .prefix("rsh-bench-fleet")
            .tempdir()
            .context("cannot create the client's RSH_HOME")?;
        let key = rsh_harness::client_fingerprint(&bins.client, home.path())?;
        let mut config = String::new();
        let mut known_hosts = String::new();
        let mut servers = Vec::new();
        let mut next = 0;
        while next < hosts {
            let count = ADDRESSES_PER_SERVER.min(hosts - next);
            let mut args = vec!["--shutdown-grace".to_owned(), "1".to_owned()];
            for i in next..next + count {
                args.push("--listen".to_owned());
                args.push(format!("{}:0", rsh_address(i)));
            }
            let server = rsh_harness::ServerBuilder::new(bins)
                .unix(false)
                .tls(false)
                .args(args)
                .keep_log_lines(100)
                .temp_prefix("rsh-bench-fleet")
                .stop_grace(Duration::from_secs(5))
                .start()?;
            std::fs::write(
                server.home.path().join("authorized_keys"),
                format!("{key}\n"),
            )
            .context("cannot write authorized_keys")?;
            let fingerprint = server
                .ready
                .fingerprint
                .clone()
                .context("the server reported no fingerprint")?;
            for (offset, endpoint) in server.ready.endpoints.iter().enumerate() {
                let rsh_config::Endpoint::Tcp { host, port } = endpoint else {
                    bail!("unexpected endpoint {endpoint}");
                };
                let _ = writeln!(known_hosts, "{endpoint} {fingerprint}");
                let _ = writeln!(
                    config,
                    "Host f{}\n  HostName {host}\n  Port {port}",
                    next + offset + 1
                );
            }
            next += count;
            servers.push(server);
        }
        std::fs::write(home.path().join("config"), config).context("cannot write config")?;
        std::fs::write(home.path().join("known_hosts"), known_hosts)
            .context("cannot write known_hosts")?;
        Ok(RshFleet {
            _servers: servers,
            home,
        })
    }

    fn client(&self, bins: &Binaries, hosts: usize) -> Command {
        let mut command = Command::new(&bins.client);
        command
            .env("RSH_HOME", self.home.path())
            .arg("-H")
            .arg(format!("f[1-{hosts}]"))
            .args(["-c", "true"]);
        command
    }
}

/// One timed run: wall time and the peak resident memory seen.
struct Timed {
    elapsed: Duration,
    peak_kib: u64,
}

/// Runs `command` to its end (bounded), stdin from /dev/null, stdout
/// discarded, sampling its peak RSS; fails unless it exits 0 and its stderr
/// contains `expect` (when given).
fn timed(command: &mut Command, expect: Option<&str>) -> anyhow::Result<Timed> {
    let start = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start the client")?;
    let mut stderr = child.stderr.take().context("no stderr pipe")?;
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let pid = child.id();
    let mut peak_kib = 0;
    let status = loop {
        if let Some(status) = child.try_wait().context("cannot wait for the client")? {
            break status;
        }
        if start.elapsed() > RUN_LIMIT {
            stop(&mut child);
            bail!("still running after {RUN_LIMIT:?}");
        }
        // VmHWM is the peak so far; gone once the process is a zombie.
        if let Ok(kib) = proc_status_kib(pid, "VmHWM") {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(POLL);
    };
    let elapsed = start.elapsed();
    let stderr = reader.join().unwrap_or_default();
    if !status.success() {
        bail!("exited with {status}: {}", tail(&stderr));
    }
    if let Some(expect) = expect {
        if !stderr.contains(expect) {
            bail!("its summary lacks {expect:?}: {}", tail(&stderr));
        }
    }
    Ok(Timed { elapsed, peak_kib })
}

fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Four (or so) private sshds on 16 addresses each, one port, and the
/// `pdsh -R ssh` command line that reaches them.
struct SshFleet {
    children: Vec<Child>,
    dir: tempfile::TempDir,
    port: u16,
    key: std::path::PathBuf,
}

fn ssh_address(i: usize) -> String {
    format!("127.4.0.{}", i + 1)
}

impl SshFleet {
    fn start(hosts: usize) -> anyhow::Result<SshFleet> {
        crate::ssh::ensure_privsep_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("rsh-bench-pdsh")
            .tempdir()
            .context("cannot create a temp dir for the sshds")?;
        let host_key = dir.path().join("host_ed25519");
        let key = dir.path().join("id_ed25519");
        crate::ssh::keygen(&host_key)?;
        crate::ssh::keygen(&key)?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::copy(key.with_extension("pub"), &authorized)
            .context("cannot write authorized_keys")?;
        let port = crate::util::free_port()?;
        let root = nix::unistd::geteuid().is_root();
        let mut fleet = SshFleet {
            children: Vec::new(),
            dir,
            port,
            key,
        };
        for (n, first) in (0..hosts).step_by(ADDRESSES_PER_SSHD).enumerate() {
            let mut config = format!(
                "Port {port}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
                 UsePAM no\nStrictModes no\nPubkeyAuthentication yes\nPasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\nPermitRootLogin {}\nPrintMotd no\nPrintLastLog no\n\
                 UseDNS no\nSetEnv SHLVL=1\nLogLevel ERROR\nMaxStartups 100\n",
                host_key.display(),
                authorized.display(),
                fleet.dir.path().join(format!("sshd{n}.pid")).display(),
                if root { "prohibit-password" } else { "no" },
            );
            for i in first..(first + ADDRESSES_PER_SSHD).min(hosts) {
                let _ = writeln!(config, "ListenAddress {}", ssh_address(i));
            }
            let path = fleet.dir.path().join(format!("sshd{n}.conf"));
            std::fs::write(&path, config).context("cannot write sshd_config")?;
            let child = Command::new(crate::ssh::SSHD)
                .args(["-D", "-e", "-f"])
                .arg(&path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .context("cannot start sshd")?;
            fleet.children.push(child);
        }
        // Ready when every address accepts.
        let deadline = Instant::now() + Duration::from_secs(20);
        for i in 0..hosts {
            while std::net::TcpStream::connect((ssh_address(i).as_str(), port)).is_err() {
                if Instant::now() > deadline {
                    bail!("sshd on {}:{port} not ready", ssh_address(i));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        Ok(fleet)
    }

    fn pdsh(&self, hosts: usize) -> Command {
        let mut command = Command::new("pdsh");
        command
            .args(["-R", "ssh", "-f", "64", "-S", "-w"])
            .arg(format!("127.4.0.[1-{hosts}]"))
            .arg("true")
            .env(
                "PDSH_SSH_ARGS_APPEND",
                format!(
                    "-F /dev/null -T -p {} -i {} -o BatchMode=yes -o StrictHostKeyChecking=no \
                     -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o IdentitiesOnly=yes",
                    self.port,
                    self.key.display()
                ),
            );
        command
    }
}

impl Drop for SshFleet {
    fn drop(&mut self) {
        for child in &mut self.children {
            stop(child);
        }
    }
}

/// Runs `make` `runs` times (after one warm-up run) and returns the wall
/// times in ms and the largest peak RSS in KiB, or why it failed.
fn series(
    runs: usize,
    mut make: impl FnMut() -> Command,
    expect: Option<&str>,
) -> Result<(Vec<f64>, u64), String> {
    let mut samples = Vec::new();
    let mut peak = 0;
    for round in 0..=runs {
        let run = timed(&mut make(), expect).map_err(|err| format!("{err:#}"))?;
        if round > 0 {
            samples.push(run.elapsed.as_secs_f64() * 1e3);
            peak = peak.max(run.peak_kib);
        }
    }
    Ok((samples, peak))
}

fn row(name: &str, unit: &'static str, result: &Result<(Vec<f64>, u64), String>) -> Row {
    match result {
        Ok((samples, _)) => Row::new(FIGURE, name, unit, Stats::of(samples)),
        Err(err) => Row::skipped(FIGURE, name, unit, format!("failed: {err}")),
    }
}

impl crate::figures::Bench {
    /// Figure 7: `true` on 1,000 hosts from one `rsh-client -H`, and on 64
    /// hosts against `pdsh -R ssh`.
    pub fn fleet(&mut self) -> anyhow::Result<()> {
        let (many, runs, pdsh_runs) = if self.params.clients >= 1000 {
            (1000, 5, 3)
        } else {
            (self.params.clients.max(64), 3, 1)
        };
        let few = 64;
        let fleet = RshFleet::start(&self.bins, many)?;
        let bins = self.bins.clone();
        let big = series(
            runs,
            || fleet.client(&bins, many),
            Some(&format!("{many} hosts: {many} succeeded")),
        );
        let peak_mb = big.as_ref().ok().map(|(_, kib)| *kib as f64 / 1024.0);
        self.rows.push(
            row(&format!("rsh-client -H f[1-{many}] true"), "ms", &big).target_value(
                false,
                1500.0,
                "<= 1.5 s (1,000 hosts)",
            ),
        );
        self.rows.push(
            match peak_mb {
                Some(mb) => Row::new(
                    FIGURE,
                    format!("rsh-client peak RSS, {many} hosts"),
                    "MB",
                    Stats::of(&[mb]),
                ),
                None => Row::skipped(FIGURE, "rsh-client peak RSS", "MB", "the runs failed"),
            }
            .target_value(false, 100.0, "<= 100 MB"),
        );
        let small = series(
            runs * 2,
            || fleet.client(&bins, few),
            Some(&format!("{few} hosts: {few} succeeded")),
        );
        let rsh_small = row(&format!("rsh-client -H f[1-{few}] true"), "ms", &small);
        self.rows.push(rsh_small);
        drop(fleet);
        let pdsh_name = format!("pdsh -R ssh -f 64 -w 127.4.0.[1-{few}] true");
        let have = |tool: &str| {
            Command::new(tool)
                .arg("-V")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok()
        };
        let pdsh_row = if !self.ssh_skipped.is_empty() {
            Row::skipped(FIGURE, &pdsh_name, "ms", self.ssh_skipped.clone())
        } else if !have("pdsh") {
            Row::skipped(
                FIGURE,
                &pdsh_name,
                "ms",
                "skipped: pdsh not installed (apt-get install pdsh)",
            )
        } else {
            match SshFleet::start(few) {
                Ok(sshs) => row(
                    &pdsh_name,
                    "ms",
                    &series(pdsh_runs, || sshs.pdsh(few), None),
                ),
                Err(err) => Row::skipped(FIGURE, &pdsh_name, "ms", format!("failed: {err:#}")),
            }
        };
        let pdsh_median = pdsh_row.median();
        self.rows.push(pdsh_row);
        if let Some(last) = self
            .rows
            .iter_mut()
            .rev()
            .find(|r| r.name.starts_with(&format!("rsh-client -H f[1-{few}]")))
        {
            *last = last
                .clone()
                .ratio_to(pdsh_median, true, "faster than pdsh+ssh")
                .target_ratio(true, 30.0, ">= 30x pdsh -R ssh");
        }
        Ok(())
    }
}
