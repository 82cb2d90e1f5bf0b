//! A private OpenSSH server on 127.0.0.1 for the baselines: throwaway host
//! and user keys and its own config in a temp dir; no system file touched.

use crate::util::{free_port, kill, wait_for_listener};
use anyhow::{bail, Context};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SSHD: &str = "/usr/sbin/sshd";
pub const INSTALL_HINT: &str =
    "OpenSSH baselines skipped: /usr/sbin/sshd not found; install it with `apt-get install openssh-server`";

/// A running private sshd; stopped on drop (with its multiplexing master).
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
    key: PathBuf,
    control_path: PathBuf,
    mux_started: bool,
}

/// How an ssh client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A new connection (key exchange, authentication) per command.
    New,
    /// Through a ControlMaster connection kept open.
    Multiplexed,
}

impl Sshd {
    /// `Ok(None)` when sshd is not installed.
    pub fn start() -> anyhow::Result<Option<Sshd>> {
        Sshd::start_on(&["127.0.0.1"])
    }

    /// The same on each of `addresses` (loopback ones, at most 16: sshd's
    /// limit of ListenAddress lines), all on one port.
    pub fn start_on(addresses: &[&str]) -> anyhow::Result<Option<Sshd>> {
        if !Path::new(SSHD).exists() {
            return Ok(None);
        }
        ensure_privsep_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("rsh-bench-sshd")
            .tempdir()
            .context("cannot create a temp dir for sshd")?;
        let host_key = dir.path().join("host_ed25519");
        let key = dir.path().join("id_ed25519");
        keygen(&host_key)?;
        keygen(&key)?;
        let public = std::fs::read_to_string(key.with_extension("pub"))
            .context("cannot read the user's public key")?;
        let authorized = dir.path().join("authorized_keys");
        std::fs::write(&authorized, public).context("cannot write authorized_keys")?;
        let port = free_port()?;
        let config = dir.path().join("sshd_config");
        let root = nix::unistd::geteuid().is_root();
        let listen: String = addresses
            .iter()
            .map(|address| format!("ListenAddress {address}\n"))
            .collect();
        // `SetEnv SHLVL=1`: bash, as a login shell run by sshd, would source
        // ~/.bashrc for every command (here that costs ~150 ms: pyenv init);
        // rsh's `sh -c` reads no rc file, so neither does the baseline.
        std::fs::write(
            &config,
            format!(
                "Port {port}\n\
                 {listen}\
                 HostKey {host}\n\
                 AuthorizedKeysFile {auth}\n\
                 PidFile {pid}\n\
                 UsePAM no\n\
                 StrictModes no\n\
                 PubkeyAuthentication yes\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin {root_login}\n\
                 PrintMotd no\n\
                 PrintLastLog no\n\
                 UseDNS no\n\
                 SetEnv SHLVL=1\n\
                 LogLevel ERROR\n",
                host = host_key.display(),
                auth = authorized.display(),
                pid = dir.path().join("sshd.pid").display(),
                root_login = if root { "prohibit-password" } else { "no" },
            ),
        )
        .context("cannot write sshd_config")?;
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start sshd")?;
        if let Some(mut stderr) = child.stderr.take() {
            // Drained for its whole life so it never blocks on a full pipe.
            std::thread::spawn(move || {
                let mut sink = [0u8; 4096];
                while matches!(stderr.read(&mut sink), Ok(n) if n > 0) {}
            });
        }
        let mut sshd = Sshd {
            child,
            control_path: dir.path().join("cm"),
            dir,
            port,
            key,
            mux_started: false,
        };
        let first = addresses.first().copied().unwrap_or("127.0.0.1");
        wait_for_listener(first, port, Duration::from_secs(10), &mut sshd.child).context("sshd")?;
        Ok(Some(sshd))
    }

    /// `ssh [options] 127.0.0.1 REMOTE`, batch mode, no user config.
    pub fn ssh(&self, mode: Mode, cipher: Option<&str>, remote: &str) -> Command {
        let mut command = Command::new("ssh");
        command.args(self.options());
        if mode == Mode::Multiplexed {
            command
                .arg("-o")
                .arg(format!("ControlPath={}", self.control_path.display()))
                .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=300"]);
        }
        if let Some(cipher) = cipher {
            command.args(["-c", cipher]);
        }
        command.arg("127.0.0.1").arg(remote);
        command
    }

    /// `ssh -tt -e none [options] 127.0.0.1 REMOTE`: a remote pty although
    /// stdin is a pipe (the options' `-T` comes first; `-tt` overrides it),
    /// no escape character.
    pub fn ssh_tty(&self, remote: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .args(self.options())
            .args(["-tt", "-e", "none", "127.0.0.1"])
            .arg(remote);
        command
    }

    /// Same, for tokio.
    pub fn tokio_ssh(&self, remote: &str) -> tokio::process::Command {
        tokio::process::Command::from(self.ssh(Mode::New, None, remote))
    }

    fn options(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "-F",
            "/dev/null",
            "-T",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "ConnectTimeout=60",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.push("-i".to_owned());
        args.push(self.key.display().to_string());
        args.push("-p".to_owned());
        args.push(self.port.to_string());
        args
    }

    /// Opens the multiplexing master (its first command is not timed).
    pub fn start_mux(&mut self) -> anyhow::Result<()> {
        let out = self
            .ssh(Mode::Multiplexed, None, "true")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .context("cannot run ssh")?;
        self.mux_started = true;
        if !out.status.success() {
            bail!(
                "ssh multiplexing master failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The user's private key, authorized by this sshd.
    pub fn key(&self) -> &Path {
        &self.key
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if self.mux_started {
            let mut stop = Command::new("ssh");
            stop.args(self.options())
                .arg("-o")
                .arg(format!("ControlPath={}", self.control_path.display()))
                .args(["-O", "exit", "127.0.0.1"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            if let Ok(mut child) = stop.spawn() {
                let deadline = Instant::now() + Duration::from_secs(5);
                while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        kill(self.child.id(), nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if !matches!(self.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn keygen(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "rsh-bench", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// sshd needs its privilege separation directory, /run/sshd.
pub fn ensure_privsep_dir() -> anyhow::Result<()> {
    let dir = Path::new("/run/sshd");
    if dir.exists() {
        return Ok(());
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("/run/sshd is missing and only root can create it");
    }
    std::fs::create_dir_all(dir).context("cannot create /run/sshd")?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .context("cannot chmod /run/sshd")?;
    Ok(())
}
