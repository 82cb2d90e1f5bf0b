//! The tools that drive ssh, driving `rsh-client` instead: rsync, git, GNU
//! parallel, pdsh, tar and Ansible (its connection plugin in
//! `integrations/ansible`), run for real against `rsh-server`s over TLS on
//! loopback. Each test asserts on what arrived, not only on exit codes.
//!
//! The tools call `rsh-client` by name, so each test puts a temp dir holding
//! a `rsh-client` symlink first on the tool's PATH. The servers listen on
//! distinct loopback addresses (127.0.0.11, .12, ...) and are reached through
//! `Host` aliases `host1`, `host2`, ... of the client's config file (HostName,
//! Port, User), with their keys pinned in known_hosts and
//! `StrictHostKeyChecking yes`, so a tool that connects anywhere else fails.
//!
//! A tool missing from PATH skips its test (`util::tools_present`: a
//! `skipped:` line now, a count at the end of the run); with
//! `RSH_REQUIRE_TOOLS` set (as `.ci/run` does, after installing them) it
//! fails the test instead.

use crate::util::{self, random_bytes};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;
use tempfile::TempDir;

/// Bound on one tool run (rsync of 20 MB, a clone, a pdsh fan-out).
const TOOL_LIMIT: Duration = Duration::from_secs(120);
/// Bound on one Ansible run (a playbook of ten tasks on three hosts).
const ANSIBLE_LIMIT: Duration = Duration::from_secs(300);

/// Servers on 127.0.0.11, .12, ... and one client RSH_HOME that reaches
/// each as `hostN` (a config alias), plus a scratch dir and the PATH and
/// HOME the tools run with.
struct Fleet {
    servers: Vec<rsh_harness::Server>,
    /// `127.0.0.1N:PORT` of each server, in order.
    addrs: Vec<(String, u16)>,
    /// The client's RSH_HOME: id, config, known_hosts.
    rsh_home: TempDir,
    /// The tools' HOME (git, parallel and Ansible write dotfiles there) and
    /// the tests' files.
    scratch: TempDir,
    /// A dir whose `rsh-client` is the binary under test, first on `path`.
    _bin: TempDir,
    path: OsString,
    /// The user the servers run as (and the aliases' `User`).
    user: String,
}

impl Fleet {
    fn start(hosts: usize) -> Fleet {
        let rsh_home = tempdir("rsh-tools-client");
        let key = util::client_fingerprint(rsh_home.path());
        let user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .expect("the current user has a name")
            .name;
        let mut servers = Vec::new();
        let mut addrs = Vec::new();
        let mut config = String::new();
        let mut known_hosts = String::new();
        for n in 1..=hosts {
            let ip = format!("127.0.0.{}", 10 + n);
            let server = rsh_harness::ServerBuilder::new(&util::binaries())
                .unix(false)
                .args(["--listen", &format!("{ip}:0")])
                .temp_prefix("rsh-tools")
                .start_limit(util::WAIT)
                .start()
                .unwrap_or_else(|err| panic!("cannot start rsh-server on {ip}: {err:#}"));
            // Read on every connection, so writing it after the start is fine.
            std::fs::write(
                server.home.path().join("authorized_keys"),
                format!("{key}\n"),
            )
            .expect("write authorized_keys");
            let endpoint = server.tls_dest().expect("a TCP endpoint in the ready file");
            let port: u16 = endpoint
                .rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
                .expect("HOST:PORT");
            let fingerprint = server.ready.fingerprint.clone().expect("a host key");
            writeln!(known_hosts, "{endpoint} {fingerprint}").expect("write to a String");
            writeln!(
                config,
                "Host host{n}\n    HostName {ip}\n    Port {port}\n    User {user}\n",
            )
            .expect("write to a String");
            addrs.push((ip, port));
            servers.push(server);
        }
        // Pinned keys only: a tool that reached some other endpoint fails.
        config.push_str("Host *\n    StrictHostKeyChecking yes\n    BatchMode yes\n");
        std::fs::write(rsh_home.path().join("config"), config).expect("write config");
        std::fs::write(rsh_home.path().join("known_hosts"), known_hosts)
            .expect("write known_hosts");

        let bin = tempdir("rsh-tools-bin");
        symlink(util::client_bin(), bin.path().join("rsh-client")).expect("symlink rsh-client");
        let mut dirs = vec![bin.path().to_owned()];
        dirs.extend(std::env::split_paths(
            &std::env::var_os("PATH").unwrap_or_default(),
        ));
        let path = std::env::join_paths(dirs).expect("PATH");
        Fleet {
            servers,
            addrs,
            rsh_home,
            scratch: tempdir("rsh-tools-scratch"),
            _bin: bin,
            path,
            user,
        }
    }

    /// `program` with the fleet's PATH, RSH_HOME and HOME, in the scratch
    /// dir, in its own process group (so a run past its bound is ended
    /// whole).
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command
            .env("PATH", &self.path)
            .env("RSH_HOME", self.rsh_home.path())
            .env("HOME", self.scratch.path())
            .env("LC_ALL", "C")
            .current_dir(self.scratch.path())
            .process_group(0);
        command
    }

    /// A dir of our own under the scratch dir.
    fn dir(&self, name: &str) -> PathBuf {
        let dir = self.scratch.path().join(name);
        std::fs::create_dir_all(&dir).expect("create a dir");
        dir
    }

    /// The HOME each server's commands run with (the server's RSH_HOME), by
    /// which a command's output tells on which server it ran.
    fn server_home(&self, n: usize) -> String {
        self.servers[n].home.path().display().to_string()
    }
}

fn tempdir(prefix: &str) -> TempDir {
    tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .expect("create a temp dir")
}

/// Runs `command` with `stdin`, waiting up to `limit`; past it, its whole
/// process group is killed and the test fails.
fn run(command: &mut Command, stdin: &[u8], limit: Duration) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|err| panic!("cannot start {command:?}: {err}"));
    let pid = child.id();
    let mut pipe = child.stdin.take().expect("piped stdin");
    let input = stdin.to_vec();
    let feeder = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let output = match rx.recv_timeout(limit) {
        Ok(output) => output.expect("collect the output"),
        Err(_) => {
            let group = nix::unistd::Pid::from_raw(-i32::try_from(pid).expect("pid fits"));
            let _ = nix::sys::signal::kill(group, nix::sys::signal::Signal::SIGKILL);
            panic!("{command:?} did not finish within {limit:?}");
        }
    };
    let _ = feeder.join();
    output
}

/// Runs `command` and asserts it succeeded; returns stdout as text.
fn run_ok(command: &mut Command, limit: Duration) -> String {
    let output = run(command, b"", limit);
    assert!(
        output.status.success(),
        "{command:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// What a tree holds, path by path: a file's mode and SHA-256, a symlink's
/// target, a directory.
#[derive(Debug, PartialEq, Eq)]
enum Entry {
    File { mode: u32, sha256: String },
    Symlink(PathBuf),
    Dir,
}

fn snapshot(root: &Path) -> BTreeMap<PathBuf, Entry> {
    let mut entries = BTreeMap::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read a dir") {
            let path = entry.expect("a dir entry").path();
            let relative = path.strip_prefix(root).expect("under root").to_owned();
            let meta = std::fs::symlink_metadata(&path).expect("stat");
            let entry = if meta.file_type().is_symlink() {
                Entry::Symlink(std::fs::read_link(&path).expect("read a symlink"))
            } else if meta.is_dir() {
                pending.push(path.clone());
                Entry::Dir
            } else {
                let bytes = std::fs::read(&path).expect("read a file");
                Entry::File {
                    mode: meta.permissions().mode() & 0o7777,
                    sha256: sha256_hex(&bytes),
                }
            };
            entries.insert(relative, entry);
        }
    }
    entries
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .fold(String::new(), |mut hex, byte| {
            let _ = write!(hex, "{byte:02x}");
            hex
        })
}

/// A tree with binary files (every byte value), an empty file, an
/// executable, a name with spaces, relative, absolute and dangling symlinks,
/// a symlink to a directory, and one file of `big` bytes.
fn make_tree(root: &Path, big: usize) {
    let deep = root.join("sub/deep");
    std::fs::create_dir_all(&deep).expect("create dirs");
    std::fs::create_dir_all(root.join("empty dir")).expect("create a dir");
    let all_bytes: Vec<u8> = (0..=255u8).cycle().take(64 * 1024 + 3).collect();
    std::fs::write(root.join("all-bytes.bin"), &all_bytes).expect("write");
    std::fs::write(deep.join("random.bin"), random_bytes(300_001, 7)).expect("write");
    std::fs::write(root.join("empty"), b"").expect("write");
    std::fs::write(root.join("name with spaces.txt"), b"spaced\n").expect("write");
    let script = root.join("run.sh");
    std::fs::write(&script, b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::write(root.join("big.bin"), random_bytes(big, 11)).expect("write");
    symlink("sub/deep/random.bin", root.join("link-relative")).expect("symlink");
    symlink("/nonexistent/rsh-tools-target", root.join("link-dangling")).expect("symlink");
    symlink("deep", root.join("sub/link-to-dir")).expect("symlink");
}

fn assert_same_tree(src: &Path, dst: &Path) {
    let want = snapshot(src);
    let got = snapshot(dst);
    assert!(want.len() >= 10, "the source tree is what make_tree made");
    assert_eq!(
        got,
        want,
        "{} differs from {}",
        dst.display(),
        src.display()
    );
}

#[test]
fn rsync_over_rsh_copies_a_tree_exactly_then_nothing() {
    if !util::tools_present(&["rsync"]) {
        return;
    }
    let fleet = Fleet::start(1);
    let src = fleet.dir("src");
    make_tree(&src, 20 * 1024 * 1024);
    let dst = fleet.dir("dst");
    let rsync = |extra: &[&str]| {
        let mut command = fleet.command("rsync");
        command
            .args(["-a", "--stats", "-e", "rsh-client"])
            .args(extra)
            .arg(format!("{}/", src.display()))
            .arg(format!("host1:{}/", dst.display()));
        run_ok(&mut command, TOOL_LIMIT)
    };
    let transferred = |stats: &str| -> u32 {
        stats
            .lines()
            .find_map(|line| line.strip_prefix("Number of regular files transferred: "))
            .and_then(|n| n.trim().replace(',', "").parse().ok())
            .unwrap_or_else(|| panic!("no transfer count in rsync's stats:\n{stats}"))
    };

    let first = rsync(&[]);
    assert_same_tree(&src, &dst);
    assert_eq!(transferred(&first), 6, "{first}");

    // Nothing changed: nothing moves, and -i itemizes nothing.
    let second = rsync(&["-i"]);
    assert_eq!(transferred(&second), 0, "{second}");
    let itemized: Vec<&str> = second
        .lines()
        .take_while(|line| !line.is_empty())
        .filter(|line| !line.starts_with("Number of"))
        .collect();
    assert!(itemized.is_empty(), "{second}");

    // One file changed: exactly it moves (so the zero above is no accident).
    std::fs::write(src.join("sub/deep/random.bin"), random_bytes(300_001, 8)).expect("write");
    let third = rsync(&[]);
    assert_eq!(transferred(&third), 1, "{third}");
    assert_same_tree(&src, &dst);

    // The other way: the remote side sends.
    let pulled = fleet.dir("pulled");
    let mut command = fleet.command("rsync");
    command
        .args(["-a", "-e", "rsh-client"])
        .arg(format!("host1:{}/", dst.display()))
        .arg(format!("{}/", pulled.display()));
    run_ok(&mut command, TOOL_LIMIT);
    assert_same_tree(&src, &pulled);
}

#[test]
fn tar_through_rsh_client_unpacks_remotely() {
    if !util::tools_present(&["tar"]) {
        return;
    }
    let fleet = Fleet::start(1);
    let src = fleet.dir("src");
    make_tree(&src.join("tree"), 1024 * 1024);
    let dst = fleet.dir("dst");
    let mut command = fleet.command("sh");
    command.arg("-c").arg(format!(
        "tar c -C {src} tree | rsh-client host1 tar x -C {dst}",
        src = src.display(),
        dst = dst.display()
    ));
    run_ok(&mut command, TOOL_LIMIT);
    assert_same_tree(&src.join("tree"), &dst.join("tree"));
}

#[test]
fn git_clone_and_push_through_git_ssh_command() {
    if !util::tools_present(&["git"]) {
        return;
    }
    let fleet = Fleet::start(1);
    let git = |dir: &Path, args: &[&str]| -> String {
        let mut command = fleet.command("git");
        command
            .current_dir(dir)
            .env("GIT_SSH_COMMAND", "rsh-client")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "rsh tests")
            .env("GIT_AUTHOR_EMAIL", "tests@rsh.invalid")
            .env("GIT_COMMITTER_NAME", "rsh tests")
            .env("GIT_COMMITTER_EMAIL", "tests@rsh.invalid")
            .args(["-c", "init.defaultBranch=main"])
            .args(args);
        run_ok(&mut command, TOOL_LIMIT).trim().to_owned()
    };
    // The "remote" repository, seeded locally (not through rsh).
    let remote = fleet.dir("remote").join("repo.git");
    let remote_str = remote.display().to_string();
    git(fleet.scratch.path(), &["init", "-q", "--bare", &remote_str]);
    let seed = fleet.dir("seed");
    git(&seed, &["init", "-q"]);
    std::fs::write(seed.join("README"), b"seeded\n").expect("write");
    std::fs::write(seed.join("blob.bin"), random_bytes(200_000, 3)).expect("write");
    git(&seed, &["add", "."]);
    git(&seed, &["commit", "-q", "-m", "seed"]);
    git(&seed, &["push", "-q", &remote_str, "main"]);
    let seeded = git(&seed, &["rev-parse", "HEAD"]);

    // Clone over rsh: scp-like URL through the config alias.
    let work = fleet.scratch.path().join("work");
    git(
        fleet.scratch.path(),
        &[
            "clone",
            "-q",
            &format!("host1:{remote_str}"),
            &work.display().to_string(),
        ],
    );
    assert_eq!(git(&work, &["rev-parse", "HEAD"]), seeded);
    assert_eq!(
        std::fs::read(work.join("blob.bin")).expect("cloned blob"),
        random_bytes(200_000, 3)
    );

    // Push over rsh.
    std::fs::write(work.join("pushed.txt"), b"pushed through rsh\n").expect("write");
    git(&work, &["add", "pushed.txt"]);
    git(&work, &["commit", "-q", "-m", "pushed through rsh"]);
    git(&work, &["push", "-q", "origin", "main"]);
    let pushed = git(&work, &["rev-parse", "HEAD"]);
    assert_ne!(pushed, seeded);
    assert_eq!(
        git(
            fleet.scratch.path(),
            &["--git-dir", &remote_str, "rev-parse", "main"]
        ),
        pushed
    );
    assert_eq!(
        git(
            fleet.scratch.path(),
            &["--git-dir", &remote_str, "show", "main:pushed.txt"]
        ),
        "pushed through rsh"
    );

    // A URL with a port: git passes `-p PORT` only to a client that its
    // `-G` probe recognised as OpenSSH-like (else "ssh variant 'simple'
    // does not support setting port"), so this proves that probe works.
    let (ip, port) = &fleet.addrs[0];
    let listed = git(
        fleet.scratch.path(),
        &[
            "ls-remote",
            &format!("ssh://{ip}:{port}{remote_str}"),
            "main",
        ],
    );
    assert_eq!(listed, format!("{pushed}\trefs/heads/main"));
}

#[test]
fn gnu_parallel_runs_jobs_on_rsh_hosts() {
    if !util::tools_present(&["parallel", "perl"]) {
        return;
    }
    let fleet = Fleet::start(2);
    let parallel = |args: &[&str]| -> String {
        let mut command = fleet.command("parallel");
        command
            .args(["--will-cite", "--ssh", "rsh-client"])
            .args(args);
        run_ok(&mut command, TOOL_LIMIT)
    };
    // The remote shell does the arithmetic.
    assert_eq!(
        parallel(&["-S", "host1", "--nonall", "echo $((1+1))"]),
        "2\n"
    );
    // --nonall on both: each host answers once, with its own HOME.
    let mut homes: Vec<String> = parallel(&["-S", "host1,host2", "--nonall", "echo $HOME"])
        .lines()
        .map(str::to_owned)
        .collect();
    homes.sort();
    let mut want = vec![fleet.server_home(0), fleet.server_home(1)];
    want.sort();
    assert_eq!(homes, want);

    // A ::: job list across both hosts, one job slot each: every job runs
    // once, remotely, and both hosts take jobs (the first two jobs start at
    // once, one per slot).
    let jobs = ["a", "b", "c", "d", "e", "f"];
    let mut args = vec!["-S", "1/host1,1/host2", "echo {} $HOME", ":::"];
    args.extend(jobs);
    let output = parallel(&args);
    let mut seen: Vec<&str> = Vec::new();
    let mut hosts_used = std::collections::BTreeSet::new();
    for line in output.lines() {
        let (job, home) = line.split_once(' ').expect("JOB HOME");
        let host = (0..2)
            .find(|&n| fleet.server_home(n) == home)
            .unwrap_or_else(|| panic!("job {job} ran outside the rsh servers: {line}"));
        hosts_used.insert(host);
        seen.push(job);
    }
    seen.sort_unstable();
    assert_eq!(seen, jobs, "{output}");
    assert_eq!(hosts_used.len(), 2, "{output}");
}

#[test]
fn pdsh_exec_runs_on_three_hosts_with_ports() {
    if !util::tools_present(&["pdsh"]) {
        return;
    }
    let fleet = Fleet::start(3);
    // `-l%u` joined, as pdsh's ssh module passes it: the server's own user.
    let mut command = fleet.command("pdsh");
    command.args([
        "-R",
        "exec",
        "-w",
        "host[1-3]",
        "rsh-client",
        "-l%u",
        "%h",
        "echo",
        "$HOME",
        "$((6*7))",
    ]);
    let output = run_ok(&mut command, TOOL_LIMIT);
    let mut lines: Vec<&str> = output.lines().collect();
    lines.sort_unstable();
    let want: Vec<String> = (0..3)
        .map(|n| format!("host{}: {} 42", n + 1, fleet.server_home(n)))
        .collect();
    assert_eq!(lines, want, "{output}");

    // A failing host: pdsh -S returns the largest remote exit code.
    let mut command = fleet.command("pdsh");
    command.args([
        "-S",
        "-R",
        "exec",
        "-w",
        "host[1-3]",
        "rsh-client",
        "%h",
        "test $HOME != ",
        &fleet.server_home(1),
        "|| exit 7",
    ]);
    let output = run(&mut command, b"", TOOL_LIMIT);
    assert_eq!(
        output.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The Ansible side: an inventory of the fleet, the environment that points
/// Ansible at the plugin and keeps its files in the scratch dir.
struct AnsibleSetup {
    inventory: PathBuf,
    env: Vec<(&'static str, OsString)>,
}

fn ansible_setup(fleet: &Fleet) -> AnsibleSetup {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Hosts by address and port, as inventories usually have them, the
    // last by its rsh config alias alone (HostName, Port, User from there).
    let mut inventory = String::from("[rsh]\n");
    let last = fleet.addrs.len();
    for (n, (ip, port)) in fleet.addrs.iter().enumerate() {
        let name = format!("host{}", n + 1);
        if n + 1 == last {
            writeln!(inventory, "{name}")
        } else {
            writeln!(
                inventory,
                "{name} ansible_host={ip} ansible_port={port} ansible_user={}",
                fleet.user
            )
        }
        .expect("write to a String");
    }
    // The "remote" is this machine: the Python Ansible runs on serves as
    // the hosts' (discovery may find a python3.X shim that does not run).
    let python = util::find_in_path("ansible")
        .and_then(|ansible| Some(ansible.parent()?.join("python3")))
        .filter(|python| python.exists())
        .unwrap_or_else(|| PathBuf::from("/usr/bin/python3"));
    writeln!(
        inventory,
        "\n[rsh:vars]\nansible_python_interpreter={}",
        python.display()
    )
    .expect("write to a String");
    let path = fleet.scratch.path().join("inventory.ini");
    std::fs::write(&path, inventory).expect("write the inventory");
    let scratch = fleet.scratch.path();
    let env = vec![
        (
            "ANSIBLE_CONNECTION_PLUGINS",
            repo.join("integrations/ansible").into_os_string(),
        ),
        // No ansible.cfg from the working dir or HOME.
        ("ANSIBLE_CONFIG", scratch.join("no-ansible.cfg").into()),
        ("ANSIBLE_HOME", scratch.join("ansible-home").into()),
        ("ANSIBLE_LOCAL_TEMP", scratch.join("ansible-local").into()),
        ("ANSIBLE_REMOTE_TEMP", scratch.join("ansible-remote").into()),
        ("ANSIBLE_HOST_KEY_CHECKING", "False".into()),
        ("ANSIBLE_RETRY_FILES_ENABLED", "False".into()),
        ("ANSIBLE_NOCOLOR", "1".into()),
        ("ANSIBLE_FORCE_COLOR", "0".into()),
        ("ANSIBLE_DEPRECATION_WARNINGS", "False".into()),
        ("ANSIBLE_TIMEOUT", "10".into()),
        // Ansible refuses to start without a UTF-8 locale.
        ("LC_ALL", "C.UTF-8".into()),
    ];
    AnsibleSetup {
        inventory: path,
        env,
    }
}

impl AnsibleSetup {
    fn command(&self, fleet: &Fleet, program: &str) -> Command {
        let mut command = fleet.command(program);
        command.envs(self.env.iter().map(|(k, v)| (k, v)));
        command.arg("-i").arg(&self.inventory).args(["-c", "rsh"]);
        command
    }
}

#[test]
fn ansible_ping_and_shell_over_rsh() {
    if !util::tools_present(&["ansible"]) {
        return;
    }
    let fleet = Fleet::start(3);
    let setup = ansible_setup(&fleet);
    // Modules sent as input data of one command (pipelining), then as files
    // (put_file, then run): both ways the plugin carries them.
    for pipelining in ["True", "False"] {
        let mut command = setup.command(&fleet, "ansible");
        command
            .env("ANSIBLE_PIPELINING", pipelining)
            .args(["all", "-m", "ping"]);
        let output = run_ok(&mut command, ANSIBLE_LIMIT);
        for n in 1..=3 {
            assert!(
                output.contains(&format!("host{n} | SUCCESS"))
                    && output.matches("\"ping\": \"pong\"").count() == 3,
                "pipelining {pipelining}:\n{output}"
            );
        }
    }
    // A host where nothing listens is unreachable (exit 4), not failed: the
    // plugin tells rsh's own failure (255, "rsh-client: ...") from the
    // command's.
    let free_port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port();
    // So is one that asks for a user other than the server's, with the
    // server's reason.
    let (ip, port) = &fleet.addrs[0];
    let down = fleet.scratch.path().join("down.ini");
    std::fs::write(
        &down,
        format!(
            "down ansible_host=127.0.0.1 ansible_port={free_port}\n\
             stranger ansible_host={ip} ansible_port={port} ansible_user=rsh-stranger\n"
        ),
    )
    .expect("write an inventory");
    let mut command = setup.command(&fleet, "ansible");
    command
        .arg("-i")
        .arg(&down)
        .args(["down,stranger", "-m", "ping"]);
    let output = run(&mut command, b"", ANSIBLE_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(4), "{stdout}");
    assert!(stdout.contains("down | UNREACHABLE!"), "{stdout}");
    assert!(stdout.contains("stranger | UNREACHABLE!"), "{stdout}");
    assert!(stdout.contains("cannot log in as rsh-stranger"), "{stdout}");

    let mut command = setup.command(&fleet, "ansible");
    command.args(["all", "-m", "shell", "-a", "echo hi from $HOME"]);
    let output = run_ok(&mut command, ANSIBLE_LIMIT);
    for n in 0..3 {
        let line = format!("hi from {}", fleet.server_home(n));
        assert!(
            output.contains(&format!("host{} | CHANGED | rc=0 >>\n{line}\n", n + 1)),
            "{output}"
        );
    }
}

#[test]
fn ansible_playbook_over_rsh_copies_templates_fetches_and_reports_failure() {
    if !util::tools_present(&["ansible-playbook"]) {
        return;
    }
    let fleet = Fleet::start(3);
    let setup = ansible_setup(&fleet);
    let dir = fleet.dir("playbook");
    let payload = random_bytes(5 * 1024 * 1024, 5);
    std::fs::write(dir.join("payload.bin"), &payload).expect("write");
    std::fs::write(dir.join("payload.sha256"), sha256_hex(&payload)).expect("write");
    let playbook =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("integrations/ansible/test/playbook.yml");
    let mut command = setup.command(&fleet, "ansible-playbook");
    command
        .arg("-e")
        .arg(format!("rsh_test_dir={}", dir.display()))
        .arg(&playbook);
    let output = run(&mut command, b"", ANSIBLE_LIMIT);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!(
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // 2: a task failed on some host (4 would be an unreachable one).
    assert_eq!(output.status.code(), Some(2), "{report}");
    let recap = |host: &str| -> BTreeMap<String, u32> {
        let line = stdout
            .lines()
            .skip_while(|line| !line.starts_with("PLAY RECAP"))
            .find(|line| line.split_whitespace().next() == Some(host))
            .unwrap_or_else(|| panic!("no recap line for {host}:\n{report}"));
        line.split_whitespace()
            .filter_map(|word| word.split_once('='))
            .map(|(key, value)| (key.to_owned(), value.parse().expect("a count")))
            .collect()
    };
    let (one, two, three) = (recap("host1"), recap("host2"), recap("host3"));
    for (host, counts) in [("host1", &one), ("host2", &two)] {
        assert_eq!(counts["failed"], 0, "{host}:\n{report}");
        assert_eq!(counts["unreachable"], 0, "{host}:\n{report}");
    }
    assert_eq!(three["failed"], 1, "{report}");
    assert_eq!(three["unreachable"], 0, "{report}");
    // host3 did every task but the last, as the others did.
    assert_eq!(three["ok"] + 1, one["ok"], "{report}");
    assert_eq!(one["ok"], two["ok"], "{report}");

    for n in 1..=3 {
        let host = format!("host{n}");
        let workdir = dir.join(&host);
        assert_eq!(
            std::fs::read(workdir.join("payload.bin")).expect("copied payload"),
            payload,
            "{host}"
        );
        assert_eq!(
            std::fs::read_to_string(workdir.join("greeting.txt")).expect("template"),
            format!("hello from {host}\n")
        );
        // fetch keeps the remote path under dest/HOST/.
        let fetched = dir
            .join("fetched")
            .join(&host)
            .join(workdir.strip_prefix("/").expect("absolute"))
            .join("greeting.txt");
        assert_eq!(
            std::fs::read_to_string(&fetched)
                .unwrap_or_else(|err| panic!("{}: {err}\n{report}", fetched.display())),
            format!("hello from {host}\n")
        );
    }
}
