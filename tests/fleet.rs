//! `rsh-client -H`: one command on many hosts. Many distinct hosts on one
//! machine are distinct loopback addresses (127.0.0.N): each test starts one
//! or a few real servers listening on several of them, names each address
//! `PREFIX<n>` in the client's config file (an alias with `HostName` and
//! `Port`, so hostlists like `n[1-20]` work), and pins every server's key in
//! the client's known_hosts.

use crate::util::{self, WAIT};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A client RSH_HOME and the servers it knows, as config aliases.
struct Fleet {
    client_home: tempfile::TempDir,
    key: String,
    config: String,
    known_hosts: String,
    servers: Vec<rsh_harness::Server>,
    /// Listeners kept open but never accepted: hosts that never answer.
    silent: Vec<std::net::TcpListener>,
    /// The next 127.0.0.N to hand out.
    next_address: u8,
}

impl Fleet {
    fn new() -> Fleet {
        let client_home = tempfile::Builder::new()
            .prefix("rsh-fleet-client")
            .tempdir()
            .expect("temp dir");
        let key = util::client_fingerprint(client_home.path());
        Fleet {
            client_home,
            key,
            config: String::new(),
            known_hosts: String::new(),
            servers: Vec::new(),
            silent: Vec::new(),
            next_address: 2,
        }
    }

    fn address(&mut self) -> String {
        let address = format!("127.0.0.{}", self.next_address);
        self.next_address += 1;
        address
    }

    fn alias(&mut self, name: &str, host: &str, port: u16, extra: &str) {
        let _ = write!(
            self.config,
            "Host {name}\n  HostName {host}\n  Port {port}\n{extra}"
        );
        self.flush();
    }

    /// Starts a server listening on `count` addresses, named
    /// `{prefix}{first}`, `{prefix}{first+1}`, ...; it authorizes our key
    /// when `authorized`; `variant` is written to `variant` in its home (the
    /// commands' working directory), for commands that behave differently
    /// on some hosts.
    fn add_server(
        &mut self,
        prefix: &str,
        first: usize,
        count: usize,
        authorized: bool,
        variant: Option<&str>,
    ) {
        let mut args = vec![
            "--kill-grace".to_owned(),
            "0.5".to_owned(),
            "--linger".to_owned(),
            "0.3".to_owned(),
        ];
        for _ in 0..count {
            args.push("--listen".to_owned());
            args.push(format!("{}:0", self.address()));
        }
        let server = rsh_harness::ServerBuilder::new(&util::binaries())
            .unix(false)
            .tls(false)
            .temp_prefix("rsh-fleet")
            .args(args)
            .start_limit(WAIT)
            .start()
            .unwrap_or_else(|err| panic!("cannot start rsh-server: {err:#}"));
        if authorized {
            std::fs::write(
                server.home.path().join("authorized_keys"),
                format!("{}\n", self.key),
            )
            .expect("write authorized_keys");
        }
        if let Some(variant) = variant {
            std::fs::write(server.home.path().join("variant"), variant).expect("write variant");
        }
        let fingerprint = server.ready.fingerprint.clone().expect("TCP fingerprint");
        let endpoints = server.ready.endpoints.clone();
        assert_eq!(endpoints.len(), count, "one endpoint per --listen");
        for (i, endpoint) in endpoints.iter().enumerate() {
            let rsh_config::Endpoint::Tcp { host, port } = endpoint else {
                panic!("TCP endpoints only, got {endpoint}");
            };
            let _ = writeln!(self.known_hosts, "{endpoint} {fingerprint}");
            self.alias(&format!("{prefix}{}", first + i), host, *port, "");
        }
        self.servers.push(server);
    }

    /// A host whose port has nothing listening (connection refused).
    fn add_down(&mut self, name: &str) {
        let address = self.address();
        let listener = std::net::TcpListener::bind((address.as_str(), 0)).expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        drop(listener);
        self.alias(name, &address, port, "");
    }

    /// A host that accepts TCP (the kernel's backlog does) and never
    /// answers: only the connect timeout (1 s here) ends the attempt.
    fn add_silent(&mut self, name: &str) {
        let address = self.address();
        let listener = std::net::TcpListener::bind((address.as_str(), 0)).expect("bind");
        let port = listener.local_addr().expect("local addr").port();
        self.silent.push(listener);
        self.alias(name, &address, port, "  ConnectTimeout 1\n");
    }

    fn flush(&self) {
        let home = self.client_home.path();
        std::fs::write(home.join("config"), &self.config).expect("write config");
        std::fs::write(home.join("known_hosts"), &self.known_hosts).expect("write known_hosts");
    }

    /// `rsh-client ARGS... -c COMMAND` with our RSH_HOME.
    fn client(&self, args: &[&str], command: &str) -> Command {
        let mut client = Command::new(util::client_bin());
        client
            .env("RSH_HOME", self.client_home.path())
            .args(args)
            .arg("-c")
            .arg(command);
        client
    }

    fn run(&self, args: &[&str], command: &str) -> Output {
        util::run_with_stdin(&mut self.client(args, command), b"")
    }
}

fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).expect("UTF-8 output")
}

/// Splits `host: rest` lines into host -> its lines, in order.
fn by_host(output: &str) -> BTreeMap<String, Vec<String>> {
    let mut hosts: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in output.lines() {
        let (host, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("line without a host prefix: {line:?}"));
        hosts
            .entry(host.to_owned())
            .or_default()
            .push(rest.to_owned());
    }
    hosts
}

#[test]
fn twenty_hosts_live_every_line_whole_and_prefixed() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 20, true, None);
    // A line written in two pieces, whole lines, a last line without a
    // newline, and stderr: the pieces must come out as one line, after the
    // host's prefix, with no other host's bytes inside.
    let out = fleet.run(
        &["-H", "n[1-20]"],
        "printf 'alpha '; sleep 0.1; echo one; echo two; echo err >&2; printf tail",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = by_host(text(&out.stdout));
    assert_eq!(stdout.len(), 20, "{stdout:?}");
    for n in 1..=20 {
        assert_eq!(stdout[&format!("n{n}")], ["alpha one", "two", "tail"]);
    }
    let stderr = text(&out.stderr);
    let (lines, summary): (Vec<&str>, Vec<&str>) =
        stderr.lines().partition(|l| !l.starts_with("rsh-client:"));
    let errs = by_host(&lines.join("\n"));
    assert_eq!(errs.len(), 20, "{stderr}");
    assert!(errs.values().all(|l| l == &["err"]), "{stderr}");
    let summary = summary.join("\n");
    assert!(summary.contains("20 hosts: 20 succeeded"), "{summary}");
    assert!(summary.contains("succeeded: n[1-20]"), "{summary}");
}

#[test]
fn gather_groups_identical_output_and_separates_differences() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 4, true, None);
    fleet.add_server("n", 5, 1, true, Some("different"));
    fleet.add_server("n", 6, 1, true, Some("fail"));
    let command = r#"v=$(cat variant 2>/dev/null); case "$v" in
        different) echo hello; echo other ;;
        fail) echo hello; echo world; exit 3 ;;
        *) echo hello; echo world ;;
        esac"#;
    let out = fleet.run(&["-H", "n[1-6]", "--gather"], command);
    // pdsh -S: the largest remote status.
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let rule = "-".repeat(15);
    assert_eq!(
        text(&out.stdout),
        format!(
            "{rule}\nn[1-4] (4)\n{rule}\nhello\nworld\n\
             {rule}\nn5 (1)\n{rule}\nhello\nother\n\
             {rule}\nn6 (1): exit 3\n{rule}\nhello\nworld\n"
        )
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("6 hosts: 5 succeeded, 1 failed"),
        "{stderr}"
    );
    assert!(stderr.contains("failed (non-zero status): n6"), "{stderr}");
}

#[test]
fn json_lines_parse_and_carry_binary_output() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 4, true, None);
    // The hosts come from a file with comments, minus an --exclude.
    let hosts_file = fleet.client_home.path().join("hosts");
    std::fs::write(&hosts_file, "# web tier\nn[1-2]\n\nn3  # the odd one\nn4\n")
        .expect("write hosts file");
    let out = fleet.run(
        &[
            "--hosts-file",
            hosts_file.to_str().expect("UTF-8 path"),
            "--exclude",
            "n2",
            "--json",
        ],
        r"printf '\377\000\001\n'; printf 'warn' >&2",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let mut hosts = BTreeSet::new();
    for line in text(&out.stdout).lines() {
        let value: serde_json::Value = serde_json::from_str(line).expect("a JSON object a line");
        use base64::Engine;
        let stdout = base64::engine::general_purpose::STANDARD
            .decode(value["stdout"].as_str().expect("stdout is a string"))
            .expect("base64");
        assert_eq!(stdout, b"\xff\x00\x01\n", "{line}");
        assert_eq!(value["stdout_encoding"], "base64", "{line}");
        assert_eq!(value["stderr"], "warn", "{line}");
        assert_eq!(value["stderr_encoding"], "utf-8", "{line}");
        assert_eq!(value["exit"], 0, "{line}");
        assert_eq!(value["result"], "success", "{line}");
        assert!(value["duration_ms"].is_u64(), "{line}");
        hosts.insert(value["host"].as_str().expect("host").to_owned());
    }
    assert_eq!(
        hosts,
        BTreeSet::from(["n1".to_owned(), "n3".to_owned(), "n4".to_owned()])
    );
}

#[test]
fn down_refusing_and_silent_hosts_leave_the_others_complete() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 3, true, None);
    fleet.add_server("locked", 1, 1, false, None);
    fleet.add_server("hang", 1, 1, true, Some("hang"));
    fleet.add_down("down1");
    fleet.add_silent("slow1");
    // hang1's command runs past --timeout; slow1 never answers the
    // connection (its ConnectTimeout is 1 s).
    let out = fleet.run(
        &["-H", "n[1-3],locked1,down1,slow1,hang1", "--timeout", "2"],
        "echo start; if [ -e variant ]; then sleep 30; fi; echo done",
    );
    // Any host that could not be reached or refused: 255.
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    let stdout = by_host(text(&out.stdout));
    assert_eq!(stdout.len(), 4, "{stdout:?}");
    for n in 1..=3 {
        assert_eq!(stdout[&format!("n{n}")], ["start", "done"]);
    }
    assert_eq!(stdout["hang1"], ["start"]);
    let stderr = text(&out.stderr);
    assert!(
        stderr
            .contains("7 hosts: 3 succeeded, 1 failed (non-zero status), 2 unreachable, 1 refused"),
        "{stderr}"
    );
    assert!(
        stderr.contains("hang1: rsh-client: timed out\n"),
        "{stderr}"
    );
    assert!(
        stderr.contains("failed (non-zero status): hang1\n"),
        "{stderr}"
    );
    assert!(stderr.contains("succeeded: n[1-3]\n"), "{stderr}");
    assert!(stderr.contains("unreachable: down1,slow1\n"), "{stderr}");
    assert!(stderr.contains("refused: locked1\n"), "{stderr}");
    assert!(
        stderr.contains("refused this client's key (their logs say why): locked1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("slow1: rsh-client: cannot connect"),
        "{stderr}"
    );
}

#[test]
fn fanout_two_never_runs_more_than_two_at_once() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 6, true, None);
    let dir = tempfile::tempdir().expect("temp dir");
    // Each command counts itself in and out under a lock, and records the
    // count it saw on entry.
    let command = r#"
        flock "$DIR/lock" sh -c 'n=$(cat "$DIR/now" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$DIR/now"; echo $n >> "$DIR/seen"'
        sleep 0.3
        flock "$DIR/lock" sh -c 'n=$(cat "$DIR/now"); echo $((n-1)) > "$DIR/now"'
    "#;
    let dir_env = format!("DIR={}", dir.path().display());
    let out = fleet.run(
        &["-H", "n[1-6]", "--fanout", "2", "--env", &dir_env],
        command,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let seen = std::fs::read_to_string(dir.path().join("seen")).expect("read counts");
    let counts: Vec<u32> = seen
        .lines()
        .map(|l| l.trim().parse().expect("a count"))
        .collect();
    assert_eq!(counts.len(), 6, "{seen}");
    assert!(counts.iter().all(|&c| (1..=2).contains(&c)), "{seen}");
}

#[test]
fn ctrl_c_ends_the_run_and_every_host_command() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 4, true, None);
    let dir = tempfile::tempdir().expect("temp dir");
    let dir_env = format!("DIR={}", dir.path().display());
    let mut client = fleet
        .client(
            &["-H", "n[1-4]", "--env", &dir_env],
            r#"echo $$ > "$DIR/$$.pid"; exec sleep 60"#,
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let pids = wait_for_pids(dir.path(), 4);
    util::signal(client.id(), nix::sys::signal::Signal::SIGINT);
    let status = util::wait_child(&mut client, WAIT);
    let Some(status) = status else {
        let _ = client.kill();
        let _ = client.wait();
        panic!("the client did not exit after SIGINT");
    };
    assert_eq!(status.code(), Some(130));
    let deadline = Instant::now() + WAIT;
    for pid in pids {
        while alive(pid) {
            assert!(Instant::now() < deadline, "command {pid} still running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Waits (bounded) until `dir` holds `count` pid files; their pids.
fn wait_for_pids(dir: &Path, count: usize) -> Vec<i32> {
    let deadline = Instant::now() + WAIT;
    loop {
        let files: Vec<PathBuf> = std::fs::read_dir(dir)
            .expect("read dir")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pid"))
            .collect();
        let pids: Vec<i32> = files
            .iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        if pids.len() == count {
            return pids;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {count} commands started",
            pids.len()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn alive(pid: i32) -> bool {
    // A zombie is dead for this purpose; the server reaps its children.
    u32::try_from(pid).is_ok_and(rsh_sys::is_alive)
}

#[test]
fn stdin_reaches_every_host_byte_exact() {
    use sha2::Digest;
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 5, true, None);
    let input = util::random_bytes(3 * 1024 * 1024 + 17, 12);
    let expected = format!("{:x}", sha2::Sha256::digest(&input));
    // --fanout 2: the last hosts start after stdin has ended, and must
    // still get all of it.
    let out = util::run_with_stdin(
        &mut fleet.client(&["-H", "n[1-5]", "--fanout", "2"], "sha256sum"),
        &input,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = by_host(text(&out.stdout));
    assert_eq!(stdout.len(), 5, "{stdout:?}");
    for lines in stdout.values() {
        assert_eq!(lines, &[format!("{expected}  -")]);
    }
}

#[test]
fn unknown_host_keys_are_refused_and_named_then_accept_new_records_them() {
    let mut fleet = Fleet::new();
    fleet.add_server("n", 1, 3, true, None);
    // Forget the keys of n2 and n3.
    let pinned: Vec<&str> = fleet.known_hosts.lines().take(1).collect();
    let pinned = format!("{}\n", pinned.join("\n"));
    std::fs::write(fleet.client_home.path().join("known_hosts"), &pinned)
        .expect("write known_hosts");
    let out = fleet.run(&["-H", "n[1-3]"], "echo hi");
    assert_eq!(out.status.code(), Some(255), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "n1: hi\n");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("refused: n[2-3]\n"), "{stderr}");
    assert!(
        stderr.contains("host keys not in known_hosts: n[2-3]; compare"),
        "{stderr}"
    );
    assert!(stderr.contains("--accept-new"), "{stderr}");

    let out = fleet.run(&["-H", "n[1-3]", "--accept-new"], "echo hi");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Each key recorded is named, as for one host; the known one is not.
    let stderr = text(&out.stderr);
    let added: BTreeSet<&str> = stderr
        .lines()
        .filter(|line| line.contains(": Warning: Permanently added '"))
        .filter_map(|line| line.split(':').next())
        .collect();
    assert_eq!(added, BTreeSet::from(["n2", "n3"]), "{stderr}");
    let known = std::fs::read_to_string(fleet.client_home.path().join("known_hosts"))
        .expect("read known_hosts");
    let expected: BTreeSet<&str> = fleet.known_hosts.lines().collect();
    assert_eq!(known.lines().collect::<BTreeSet<_>>(), expected);
}
