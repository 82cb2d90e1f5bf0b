//! Figure 8: the Ansible playbook of the integration tests
//! (`integrations/ansible/test/playbook.yml`: a 5 MB copy checked by
//! checksum, a template, a fetch, shell tasks, a failure on one host) on
//! three loopback hosts, over rsh (the `rsh` connection plugin, one
//! `rsh-client` per step) and over ssh (Ansible's own plugin, with its
//! default `ControlMaster=auto`/`ControlPersist=60s`), without and with
//! pipelining. The series are interleaved run by run, as the other figures'.

use crate::figures::Bench;
use crate::report::Row;
use crate::ssh::Sshd;
use crate::util::{is_executable, Stats};
use anyhow::{bail, ensure, Context};
use sha2::{Digest, Sha256};
use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The hosts, each on its own loopback address (ssh's ControlPersist keeps
/// one master per host, so they must be distinct hosts).
const ADDRESSES: [&str; 3] = ["127.0.0.11", "127.0.0.12", "127.0.0.13"];
/// Upper bound on one playbook run.
const PLAYBOOK_LIMIT: Duration = Duration::from_secs(300);
/// The playbook fails one task on host3, on purpose: ansible-playbook's
/// exit code for "a task failed".
const EXPECTED_EXIT: i32 = 2;

/// One series: a playbook run against one inventory.
struct Series {
    name: &'static str,
    inventory: PathBuf,
    pipelining: bool,
    /// The playbook's `rsh_test_dir` (payload in, files out).
    dir: PathBuf,
    samples: Vec<f64>,
    error: Option<String>,
}

const NAMES: [&str; 4] = [
    "rsh plugin (rsh-client per step)",
    "ssh plugin, ControlPersist 60s (default)",
    "rsh plugin, pipelining",
    "ssh plugin, ControlPersist 60s, pipelining",
];

impl Bench {
    /// Figure 8: the playbook over rsh and over ssh.
    pub fn ansible(&mut self) -> anyhow::Result<()> {
        let Some(playbook_bin) = find_in_path("ansible-playbook") else {
            for name in NAMES {
                self.rows.push(Row::skipped(
                    8,
                    name,
                    "s",
                    "ansible-playbook not on PATH (.ci/run installs ansible-core into a venv)",
                ));
            }
            return Ok(());
        };
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let plugins = repo.join("integrations/ansible");
        let playbook = plugins.join("test/playbook.yml");
        ensure!(playbook.exists(), "{} is missing", playbook.display());
        // The hosts are this machine: the Python Ansible runs on serves them.
        let python = playbook_bin
            .parent()
            .map(|dir| dir.join("python3"))
            .filter(|python| is_executable(python))
            .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
        let scratch = tempfile::Builder::new()
            .prefix("rsh-bench-ansible")
            .tempdir()
            .context("cannot create a temp dir")?;
        let root = scratch.path();
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .context("the current user has no name")?
            .name;

        // rsh: three servers, one client home authorized on each and
        // pinning each one's key.
        let client_home = root.join("rsh-client");
        std::fs::create_dir_all(&client_home).context("cannot create the client's home")?;
        let key = rsh_harness::client_fingerprint(&self.bins.client, &client_home)?;
        let mut servers = Vec::new();
        let mut known_hosts = String::new();
        let mut rsh_inventory = String::from("[fleet]\n");
        for (n, address) in ADDRESSES.iter().enumerate() {
            let server = rsh_harness::ServerBuilder::new(&self.bins)
                .unix(false)
                .args(["--listen", &format!("{address}:0")])
                .args(["--shutdown-grace", "1", "--kill-grace", "0.5"])
                .keep_log_lines(200)
                .temp_prefix("rsh-bench-ansible")
                .stop_grace(Duration::from_secs(5))
                .start()?;
            // authorized_keys is read on every connection.
            std::fs::write(
                server.home.path().join("authorized_keys"),
                format!("{key}\n"),
            )
            .context("cannot write authorized_keys")?;
            let endpoint = server.tls_dest().context("no TCP endpoint")?;
            let port = endpoint
                .rsplit_once(':')
                .map(|(_, port)| port)
                .context("HOST:PORT")?
                .to_owned();
            let fingerprint = server.ready.fingerprint.clone().context("no host key")?;
            let _ = writeln!(known_hosts, "{endpoint} {fingerprint}");
            let _ = writeln!(
                rsh_inventory,
                "host{} ansible_host={address} ansible_port={port}",
                n + 1
            );
            servers.push(server);
        }
        std::fs::write(client_home.join("known_hosts"), known_hosts)
            .context("cannot write known_hosts")?;
        let _ = write!(
            rsh_inventory,
            "\n[fleet:vars]\nansible_connection=rsh\nansible_rsh_executable={}\n\
             ansible_rsh_home={}\nansible_python_interpreter={}\n",
            self.bins.client.display(),
            client_home.display(),
            python.display()
        );

        // ssh: one private sshd on the same three addresses.
        let sshd = if self.sshd.is_some() {
            Sshd::start_on(&ADDRESSES)?
        } else {
            None
        };
        let mut ssh_inventory = String::from("[fleet]\n");
        if let Some(sshd) = &sshd {
            for (n, address) in ADDRESSES.iter().enumerate() {
                let _ = writeln!(
                    ssh_inventory,
                    "host{} ansible_host={address} ansible_port={}",
                    n + 1,
                    sshd.port
                );
            }
            // Ansible's ssh_args (-C -o ControlMaster=auto
            // -o ControlPersist=60s) stay as they are by default.
            let _ = write!(
                ssh_inventory,
                "\n[fleet:vars]\nansible_connection=ssh\nansible_user={user}\n\
                 ansible_ssh_private_key_file={}\n\
                 ansible_ssh_common_args='-F /dev/null -o UserKnownHostsFile=/dev/null \
                 -o StrictHostKeyChecking=no -o IdentitiesOnly=yes -o LogLevel=ERROR'\n\
                 ansible_python_interpreter={}\n",
                sshd.key().display(),
                python.display()
            );
        }

        let payload: Vec<u8> = (0..5 * 1024 * 1024u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let digest = Sha256::digest(&payload)
            .iter()
            .fold(String::new(), |mut hex, byte| {
                let _ = write!(hex, "{byte:02x}");
                hex
            });
        let mut series = Vec::new();
        for (index, name) in NAMES.iter().enumerate() {
            let over_ssh = index % 2 == 1;
            if over_ssh && sshd.is_none() {
                continue;
            }
            let dir = root.join(format!("series{index}"));
            std::fs::create_dir_all(&dir).context("cannot create a dir")?;
            std::fs::write(dir.join("payload.bin"), &payload).context("cannot write")?;
            std::fs::write(dir.join("payload.sha256"), &digest).context("cannot write")?;
            let inventory = dir.join("inventory.ini");
            let text = if over_ssh {
                &ssh_inventory
            } else {
                &rsh_inventory
            };
            std::fs::write(&inventory, text).context("cannot write the inventory")?;
            series.push(Series {
                name,
                inventory,
                pipelining: index >= 2,
                dir,
                samples: Vec::new(),
                error: None,
            });
        }

        let env = ansible_env(root, &plugins);
        let runs = self.params.ansible_runs;
        // Round 0 is a warm-up (and, for ssh, opens the masters that
        // ControlPersist then keeps, as it would for a user's next run).
        for round in 0..=runs {
            for one in series.iter_mut().filter(|s| s.error.is_none()) {
                let mut command = Command::new(&playbook_bin);
                command
                    .envs(env.iter().map(|(k, v)| (k, v)))
                    .env(
                        "ANSIBLE_PIPELINING",
                        if one.pipelining { "True" } else { "False" },
                    )
                    .current_dir(root)
                    .arg("-i")
                    .arg(&one.inventory)
                    .arg("-e")
                    .arg(format!("rsh_test_dir={}", one.dir.display()))
                    .arg(&playbook);
                match self.run_playbook(&mut command) {
                    Ok(seconds) if round > 0 => one.samples.push(seconds),
                    Ok(_) => {}
                    Err(err) => one.error = Some(format!("{err:#}")),
                }
            }
        }
        stop_control_masters(&root.join("cp"), &self.watchdog);
        drop(sshd);
        drop(servers);

        let row = |one: &Series| match &one.error {
            Some(err) => Row::skipped(8, one.name, "s", format!("failed: {err}")),
            None => Row::new(8, one.name, "s", Stats::of(&one.samples)),
        };
        let find = |name: &str| series.iter().find(|s| s.name == name);
        for pair in NAMES.chunks(2) {
            let rsh = find(pair[0]).map(row);
            let rsh_median = rsh.as_ref().and_then(Row::median);
            if let Some(rsh) = rsh {
                self.rows.push(rsh);
            }
            self.rows.push(match find(pair[1]) {
                Some(ssh) => row(ssh).ratio_to(rsh_median, false, "vs rsh"),
                None => Row::skipped(8, pair[1], "s", self.ssh_skipped.clone()),
            });
        }
        Ok(())
    }

    /// One playbook run: its wall time in seconds, after checking that it
    /// ended as the playbook means to (host3's task failed, nothing else).
    fn run_playbook(&self, command: &mut Command) -> anyhow::Result<f64> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let child = command.spawn().context("cannot start ansible-playbook")?;
        let armed = self.watchdog.arm(child.id(), PLAYBOOK_LIMIT);
        let output = child
            .wait_with_output()
            .context("waiting for ansible-playbook")?;
        let elapsed = started.elapsed();
        drop(armed);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let tail = |text: &str| text.lines().rev().take(20).collect::<Vec<_>>().join("\n");
        if output.status.code() != Some(EXPECTED_EXIT) || !recap_as_expected(&stdout) {
            bail!(
                "ansible-playbook exited with {} (want {EXPECTED_EXIT}, host3 failed=1 only): {}{}",
                output.status,
                tail(&stdout),
                tail(&String::from_utf8_lossy(&output.stderr))
            );
        }
        Ok(elapsed.as_secs_f64())
    }
}

/// host1 and host2 without failures, host3 with exactly one, none
/// unreachable.
fn recap_as_expected(stdout: &str) -> bool {
    let counts = |host: &str, key: &str| -> Option<u32> {
        let line = stdout
            .lines()
            .skip_while(|line| !line.starts_with("PLAY RECAP"))
            .find(|line| line.split_whitespace().next() == Some(host))?;
        line.split_whitespace()
            .filter_map(|word| word.split_once('='))
            .find(|(k, _)| *k == key)
            .and_then(|(_, v)| v.parse().ok())
    };
    counts("host1", "failed") == Some(0)
        && counts("host2", "failed") == Some(0)
        && counts("host3", "failed") == Some(1)
        && (1..=3).all(|n| counts(&format!("host{n}"), "unreachable") == Some(0))
}

/// Ansible's environment: the rsh plugin found, no ansible.cfg read, its
/// files (temp dirs, ssh control sockets) in `root`.
fn ansible_env(root: &Path, plugins: &Path) -> Vec<(&'static str, OsString)> {
    vec![
        ("ANSIBLE_CONNECTION_PLUGINS", plugins.into()),
        ("ANSIBLE_CONFIG", root.join("no-ansible.cfg").into()),
        ("ANSIBLE_HOME", root.join("ansible-home").into()),
        ("ANSIBLE_LOCAL_TEMP", root.join("ansible-local").into()),
        ("ANSIBLE_REMOTE_TEMP", root.join("ansible-remote").into()),
        ("ANSIBLE_HOST_KEY_CHECKING", "False".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False".into()),
        ("ANSIBLE_NOCOLOR", "1".into()),
        ("ANSIBLE_DEPRECATION_WARNINGS", "False".into()),
        ("HOME", root.into()),
        // Where ssh's ControlPersist masters keep their sockets (only the
        // place: the ssh args stay Ansible's defaults), so the bench can
        // end them.
        ("ANSIBLE_SSH_CONTROL_PATH_DIR", root.join("cp").into()),
        // Ansible refuses to start without a UTF-8 locale.
        ("LC_ALL", "C.UTF-8".into()),
    ]
}

/// Ends the ssh masters ControlPersist left behind (they would linger 60 s
/// after the bench).
fn stop_control_masters(dir: &Path, watchdog: &crate::util::Watchdog) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let mut command = Command::new("ssh");
        command
            .arg("-o")
            .arg(format!("ControlPath={}", entry.path().display()))
            .args(["-O", "exit", "any"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Ok(mut child) = command.spawn() {
            let _armed = watchdog.arm(child.id(), Duration::from_secs(10));
            let _ = child.wait();
        }
    }
}

fn find_in_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}
