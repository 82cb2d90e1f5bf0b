//! What to run where: DEST resolved with the options and the config file
//! as ssh resolves it (or, with `-H`, the settings every host of a fleet
//! shares), the options every command gets, and whether it gets a pty.

use super::args::Args;
use super::exit::{fail, EXIT_BROKEN_PIPE};
use anyhow::Context;
use rsh_client::escape::DEFAULT_ESCAPE_CHAR;
use rsh_client::{
    AddressFamily, ClientError, ConnectOptions, ExecRequest, Fingerprint, HostKeyPolicy,
};
use rsh_config::dest::{reconcile_port, Dest, Target};
use rsh_config::ssh_config::{ClientConfig, Overrides, Resolved, StrictHostKeyChecking};
use rsh_config::{Endpoint, RshHome};
use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// "No connect timeout" (`ConnectTimeout 0` / `none`): long enough to mean
/// never, short enough for tokio's timer.
const NO_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// `rsh-client true` (as `rsh-client -c true` reads) takes `true` for a
/// host, as ssh would; rsh's local default makes that an easy slip, so a
/// bare word that is no host name gets a pointer to `-c`.
pub(super) fn local_command_hint(
    args: &Args,
    endpoint: &Endpoint,
    no_command: bool,
    err: &ClientError,
) -> String {
    let Some(dest) = args.dest.as_deref() else {
        return String::new();
    };
    // Not a config alias (its HostName is the user's choice) nor a name
    // with a domain, user or port: those are meant as hosts.
    let bare = !dest.contains(['.', ':', '@', '[', '/'])
        && matches!(endpoint, Endpoint::Tcp { host, .. } if host == dest);
    let unresolved = matches!(err, ClientError::Connect { reason, .. }
        if reason.contains("failed to lookup address"));
    if no_command && bare && unresolved {
        format!(" (no host {dest:?}; to run it on the local server: rsh-client -c '{dest}')")
    } else {
        String::new()
    }
}

/// Where to connect and how, from DEST, the options and the config file.
pub(super) struct Plan {
    pub(super) endpoint: Endpoint,
    /// The user asked for (`-l`, `user@`, `User`), sent to the server.
    pub(super) user: Option<String>,
    pub(super) resolved: Resolved,
    pub(super) options: ConnectOptions,
}

/// Resolves DEST with the command line and the config file, as ssh does.
pub(super) fn plan(args: &Args, home: &RshHome) -> anyhow::Result<Plan> {
    let dest: Option<Dest> = args
        .dest
        .as_deref()
        .map(str::parse)
        .transpose()
        .context("bad DEST")?;
    let mut overrides = Overrides::new();
    for option in &args.options {
        overrides.option(option)?;
    }
    let unix = !matches!(
        &dest,
        Some(Dest {
            target: Target::Host { .. },
            ..
        })
    );
    if args.port.is_some() && unix {
        anyhow::bail!("-p applies to TCP destinations; a Unix socket has no port");
    }
    let port = reconcile_port(args.port, dest.as_ref().and_then(Dest::port))?;
    if let Some(port) = port {
        overrides.port(port);
    }
    // As ssh: -l wins over the user written in DEST.
    if let Some(user) = args
        .login
        .as_ref()
        .or(dest.as_ref().and_then(|d| d.user.as_ref()))
    {
        overrides.user(user.as_str());
    }
    if let Some(identity) = &args.identity {
        overrides.identity_file(identity.to_string_lossy().replace('%', "%%"));
    }
    let config = match &args.config {
        Some(path) => ClientConfig::load_relative_to(path, home.dir())?,
        None => ClientConfig::load_if_exists(home.config_path())?,
    };
    let alias = match dest.as_ref().map(|d| &d.target) {
        None => format!("unix:{}", home.socket_path().display()),
        Some(Target::Unix(path)) => format!("unix:{}", path.display()),
        Some(Target::Host { host, .. }) => host.clone(),
    };
    let resolved = config.resolve(&alias, &overrides);
    for ignored in &resolved.ignored {
        tracing::info!(
            option = %ignored.keyword,
            value = %ignored.value,
            origin = %ignored.origin,
            "ssh option ignored: it does not apply to rsh"
        );
    }
    let endpoint = match &dest {
        None => Endpoint::Unix(home.socket_path()),
        Some(dest) => dest.endpoint(Some(&resolved.hostname), resolved.port),
    };
    let mut options = ConnectOptions::new(home.clone());
    options.identity = resolved.identity_file.clone();
    if let Some(timeout) = resolved.connect_timeout {
        options.connect_timeout = if timeout.is_zero() {
            NO_TIMEOUT
        } else {
            timeout
        };
    }
    if let Some(interval) = resolved.server_alive_interval {
        options.keepalive = (!interval.is_zero()).then_some(interval);
    }
    if let Some(count) = resolved.server_alive_count_max {
        options.keepalive_count = count;
    }
    options.family = if args.ipv4 {
        AddressFamily::V4
    } else if args.ipv6 {
        AddressFamily::V6
    } else {
        AddressFamily::Any
    };
    let batch = resolved.batch_mode.unwrap_or(false);
    options.host_keys = if args.accept_new {
        HostKeyPolicy::AcceptNew
    } else {
        match resolved
            .strict_host_key_checking
            .unwrap_or(StrictHostKeyChecking::Ask)
        {
            StrictHostKeyChecking::Yes => HostKeyPolicy::Strict,
            StrictHostKeyChecking::AcceptNew => HostKeyPolicy::AcceptNew,
            StrictHostKeyChecking::Ask if !batch && std::io::stdin().is_terminal() => {
                HostKeyPolicy::Ask(Arc::new(ask_about_host))
            }
            StrictHostKeyChecking::Ask => HostKeyPolicy::Strict,
        }
    };
    if !args.quiet {
        options.host_key_added = Some(Arc::new(|host_port: &str, fingerprint: &Fingerprint| {
            eprintln!(
                "Warning: Permanently added '{host_port}' ({fingerprint}) to the list of known hosts."
            );
        }));
    }
    Ok(Plan {
        endpoint,
        user: resolved.user.clone(),
        resolved,
        options,
    })
}

/// `-G`: the resolved configuration, as `ssh -G` prints it, with the local
/// user and the default identity filled in.
pub(super) fn print_config(plan: &Plan) -> ExitCode {
    let mut resolved = plan.resolved.clone();
    if resolved.user.is_none() {
        resolved.user = nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|user| user.name);
    }
    if resolved.identity_file.is_none() {
        resolved.identity_file = Some(plan.options.identity_path());
    }
    // rsh's defaults, not ssh's, so what is printed is what applies.
    resolved.connect_timeout = Some(plan.options.connect_timeout).filter(|t| *t != NO_TIMEOUT);
    resolved.server_alive_interval = Some(plan.options.keepalive.unwrap_or_default());
    resolved.server_alive_count_max = Some(plan.options.keepalive_count);
    let mut out = std::io::stdout().lock();
    let written = resolved
        .print_like_ssh_g(&mut out)
        .and_then(|()| out.flush());
    match written {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_BROKEN_PIPE)
        }
        Err(err) => fail(&format!("cannot write to stdout: {err}")),
    }
}

/// `--forget-host HOST[:PORT]`: drops the host's lines from known_hosts,
/// keeping the old file as `known_hosts.old`, as `ssh-keygen -R` does.
pub(super) fn forget_host(
    home: &RshHome,
    host: &str,
    flag_port: Option<u16>,
) -> anyhow::Result<()> {
    let host_port = match host.parse::<Dest>()?.target {
        // `-p PORT` names the port as it does for a connection (it was
        // ignored, and the default port's entry looked for instead).
        Target::Host { host, port } => rsh_tls::host_port(
            &host,
            reconcile_port(flag_port, port)?.unwrap_or(rsh_config::DEFAULT_TCP_PORT),
        ),
        Target::Unix(_) => anyhow::bail!("a Unix socket has no host key"),
    };
    let path = home.known_hosts_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            anyhow::bail!("{host_port} not found in {}", path.display())
        }
        Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut kept = String::with_capacity(text.len());
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.eq_ignore_ascii_case(&host_port) {
            found.push(number + 1);
        } else {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    if found.is_empty() {
        anyhow::bail!("{host_port} not found in {}", path.display());
    }
    for line in &found {
        println!("# Host {host_port} found: line {line}");
    }
    let old = path.with_extension("old");
    let new = path.with_extension("new");
    {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&new)
            .with_context(|| format!("cannot write {}", new.display()))?;
        file.write_all(kept.as_bytes())
            .and_then(|()| file.sync_all())
            .with_context(|| format!("cannot write {}", new.display()))?;
    }
    std::fs::copy(&path, &old).with_context(|| format!("cannot write {}", old.display()))?;
    std::fs::rename(&new, &path).with_context(|| format!("cannot replace {}", path.display()))?;
    println!("{} updated.", path.display());
    println!("Original contents retained as {}", old.display());
    Ok(())
}

/// The fleet's settings from the same options one host takes.
pub(super) fn fleet_options(
    args: &Args,
    home: RshHome,
) -> anyhow::Result<super::fleet::FleetOptions> {
    let mut overrides = Overrides::new();
    for option in &args.options {
        overrides.option(option)?;
    }
    if let Some(port) = args.port {
        overrides.port(port);
    }
    if let Some(user) = &args.login {
        overrides.user(user.as_str());
    }
    let config = match &args.config {
        Some(path) => ClientConfig::load_relative_to(path, home.dir())?,
        None => ClientConfig::load_if_exists(home.config_path())?,
    };
    let forward_stdin =
        !args.null_stdin && !std::io::stdin().is_terminal() && !super::stdio::stdin_is_dev_null();
    Ok(super::fleet::FleetOptions {
        home,
        config,
        overrides,
        accept_new: args.accept_new,
        connect_timeout: Duration::from_secs(10),
        forward_stdin,
        quiet: args.quiet,
    })
}

/// The options every command of this session gets.
pub(super) struct Template {
    cwd: Option<String>,
    env: Vec<(String, String)>,
    timeout: Option<Duration>,
    user: Option<String>,
}

impl Template {
    pub(super) fn with(&self, command: &str) -> ExecRequest {
        self.apply(ExecRequest::new(command))
    }

    pub(super) fn apply(&self, mut request: ExecRequest) -> ExecRequest {
        if let Some(cwd) = &self.cwd {
            request = request.cwd(cwd.as_str());
        }
        for (key, value) in &self.env {
            request = request.env(key.as_str(), value.as_str());
        }
        if let Some(timeout) = self.timeout {
            request = request.timeout(timeout);
        }
        if let Some(user) = &self.user {
            request = request.user(user.as_str());
        }
        request
    }
}

pub(super) fn request_template(args: &Args, user: Option<String>) -> anyhow::Result<Template> {
    let timeout = args
        .timeout
        .map(|secs| {
            Duration::try_from_secs_f64(secs)
                .ok()
                .filter(|limit| !limit.is_zero())
                .context("--timeout must be a finite number of seconds > 0")
        })
        .transpose()?;
    Ok(Template {
        cwd: args.cwd.clone(),
        env: args.env.clone(),
        timeout,
        user,
    })
}

/// Asks on the terminal whether to trust an unknown host key, as ssh does.
fn ask_about_host(host_port: &str, fingerprint: &Fingerprint) -> bool {
    eprintln!("The authenticity of host '{host_port}' can't be established.");
    eprintln!("Its key fingerprint is {fingerprint}.");
    eprintln!("Compare it with `rsh-server --fingerprint` run on that host.");
    loop {
        eprint!("Are you sure you want to continue connecting (yes/no)? ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        match std::io::stdin().read_line(&mut answer) {
            Ok(0) | Err(_) => return false,
            Ok(_) => match answer.trim() {
                "yes" => return true,
                "no" => return false,
                _ => eprintln!("Please type 'yes' or 'no'."),
            },
        }
    }
}

/// Whether the command gets a pty, as ssh decides: by default only a login
/// shell on a terminal; -t asks for one (if stdin is a terminal), -tt
/// insists, -T never. Says so when -t cannot be honoured.
pub(super) fn wants_pty(args: &Args, login_shell: bool, stdin_tty: bool) -> bool {
    let want_pty = !args.no_tty && (args.tty > 0 || login_shell);
    if args.tty == 1 && !args.no_tty && !stdin_tty && !args.quiet {
        eprintln!("Pseudo-terminal will not be allocated because stdin is not a terminal.");
    }
    want_pty && (stdin_tty || args.tty > 1)
}

/// The escape character of a terminal session: `-e`'s, or `~`.
pub(super) fn escape_char(args: &Args, stdin_tty: bool) -> Option<u8> {
    if stdin_tty {
        args.escape
            .map_or(Some(DEFAULT_ESCAPE_CHAR), |escape| escape.0)
    } else {
        // Escapes are for a person at a keyboard, not for piped bytes.
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    /// `rsh-client true` read as `rsh-client -c true`: the unknown host gets
    /// a pointer to -c; a real host name, an alias or a command does not.
    /// (Checked here, not end to end: that would need a DNS lookup.)
    #[test]
    fn a_bare_word_that_is_no_host_points_to_dash_c() {
        let unresolved = ClientError::Connect {
            endpoint: "true:7022".to_owned(),
            reason: "failed to lookup address information: Name or service not known".to_owned(),
            source: None,
        };
        let hint = |argv: &[&str], host: &str, err: &ClientError| {
            let args = Args::try_parse_from(argv).expect("parse");
            let endpoint = Endpoint::Tcp {
                host: host.to_owned(),
                port: 7022,
            };
            local_command_hint(&args, &endpoint, args.words.is_empty(), err)
        };
        assert_eq!(
            hint(&["rsh-client", "true"], "true", &unresolved),
            " (no host \"true\"; to run it on the local server: rsh-client -c 'true')"
        );
        assert_eq!(hint(&["rsh-client", "true", "x"], "true", &unresolved), "");
        assert_eq!(
            hint(&["rsh-client", "a.example"], "a.example", &unresolved),
            ""
        );
        assert_eq!(
            hint(&["rsh-client", "web"], "web1.example", &unresolved),
            ""
        );
        let refused = ClientError::Connect {
            endpoint: "web:7022".to_owned(),
            reason: "Connection refused (os error 111)".to_owned(),
            source: None,
        };
        assert_eq!(hint(&["rsh-client", "web"], "web", &refused), "");
    }
}
