//! The `rsh-client` command line as clap reads it: ssh's options and
//! letters, then rsh's own long options and the fleet's.

use clap::Parser;
use std::path::PathBuf;

/// Run commands on an rsh server, as ssh does.
///
/// `rsh-client DEST COMMAND...` runs one command like `ssh HOST CMD`: the
/// words after DEST are joined with spaces and run by the remote shell;
/// remote stdout to stdout, stderr to stderr, byte for byte; local stdin is
/// forwarded (typed lines too, when it is a terminal; end them with Ctrl-D);
/// Ctrl-C sends SIGINT to the remote command (a third Ctrl-C
/// disconnects, which ends it); the exit code is the remote one (128+N if it
/// died of signal N, 124 if it timed out, 255 if rsh itself failed, with the
/// reason on one line). `-c COMMAND` is the same as one command word.
///
/// Without a command, on a terminal: a terminal session with the remote
/// user's login shell on a pty, as `ssh HOST` (escapes after a newline: `~.`
/// disconnects, `~^Z` suspends, `~?` lists them; see -e). -t asks for a pty
/// for a command too (-tt even when stdin is not a terminal), -T never.
/// Without a command, stdin not a terminal: one remote shell reads stdin as
/// its script, so `cd`, variables and `exit` carry from line to line.
///
/// DEST is [USER@]HOST[:PORT], [USER@][IPV6][:PORT], unix:PATH, or a Host
/// alias of the config file ($RSH_HOME/config, ssh_config syntax: HostName,
/// Port, User, IdentityFile, ConnectTimeout, ServerAliveInterval,
/// ServerAliveCountMax, StrictHostKeyChecking, BatchMode). Without DEST:
/// the local server, unix:$RSH_HOME/rsh.sock.
///
/// ServerAliveInterval (15 s by default, 0: off) and ServerAliveCountMax
/// (3): after that long without a word from the server it is probed, and
/// after that many unanswered probes the client gives up with 255
/// ("Timeout, server HOST not responding.").
///
/// Over TCP the connection is TLS 1.3 with this client's key ($RSH_HOME/id,
/// created on first use; see --fingerprint and -i) and the server's key
/// checked against $RSH_HOME/known_hosts: an unknown host is asked about on a
/// terminal and refused in batch use unless --accept-new (or
/// StrictHostKeyChecking=accept-new); a changed host key is always refused.
///
/// ssh's -x, -a, -C and -2, and -o options that do not apply to rsh
/// (SendEnv, ControlMaster, ControlPath, Compression, ...), are accepted and
/// ignored (noted at -v).
#[derive(Debug, Parser)]
#[command(name = "rsh-client", version)]
pub(crate) struct Args {
    /// Server to connect to: [USER@]HOST[:PORT], [USER@][IPV6][:PORT],
    /// unix:PATH or a config Host alias (TCP port 7022 by default). Default:
    /// unix:$RSH_HOME/rsh.sock.
    #[arg(value_name = "DEST")]
    pub(crate) dest: Option<String>,

    /// Command to run, as ssh: the words are joined with single spaces and
    /// run by the remote shell.
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub(crate) words: Vec<String>,

    /// Run this command and exit with its status (the same as COMMAND).
    #[arg(short = 'c', long = "command", value_name = "COMMAND")]
    pub(crate) command: Option<String>,

    /// Port to connect to (must agree with a port written in DEST).
    #[arg(short = 'p', value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) port: Option<u16>,

    /// User to log in as; the server refuses any user but the one it runs as.
    #[arg(short = 'l', value_name = "USER")]
    pub(crate) login: Option<String>,

    /// This client's key file, instead of $RSH_HOME/id. It must exist (only
    /// $RSH_HOME/id is created on first use; --fingerprint with -i creates it).
    #[arg(short = 'i', value_name = "IDENTITY")]
    pub(crate) identity: Option<PathBuf>,

    /// Config file, instead of $RSH_HOME/config.
    #[arg(short = 'F', value_name = "CONFIG")]
    pub(crate) config: Option<PathBuf>,

    /// A config file option, as `Key=Value` (for example
    /// `-o ConnectTimeout=5`). Repeatable; the first value given wins.
    #[arg(short = 'o', value_name = "KEY=VALUE")]
    pub(crate) options: Vec<String>,

    /// Print the configuration resolved for DEST (as `ssh -G`) and exit.
    #[arg(short = 'G')]
    pub(crate) print_config: bool,

    /// Log what the client does to stderr; -vv and -vvv say more.
    #[arg(short = 'v', action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,

    /// Quiet: no warnings or notes, only errors.
    #[arg(short = 'q')]
    pub(crate) quiet: bool,

    /// Read stdin from /dev/null: the remote command gets end of file at once.
    #[arg(short = 'n')]
    pub(crate) null_stdin: bool,

    /// Connect over IPv4 only.
    #[arg(short = '4', conflicts_with = "ipv6")]
    pub(crate) ipv4: bool,

    /// Connect over IPv6 only.
    #[arg(short = '6')]
    pub(crate) ipv6: bool,

    /// Ask for a terminal (pty) for the command; -tt even when stdin is not a
    /// terminal.
    #[arg(short = 't', action = clap::ArgAction::Count)]
    pub(crate) tty: u8,

    /// Never ask for a terminal (pty); wins over -t.
    #[arg(short = 'T')]
    pub(crate) no_tty: bool,

    /// Escape character for terminal sessions (default `~`), `^X` for a
    /// control character, or `none`.
    #[arg(short = 'e', value_name = "CHAR", value_parser = parse_escape)]
    pub(crate) escape: Option<EscapeChar>,

    /// ssh's no-ops: X11 and agent forwarding off, compression, protocol 2.
    #[arg(short = 'x', hide = true)]
    _no_x11: bool,
    #[arg(short = 'a', hide = true)]
    _no_agent: bool,
    #[arg(short = 'C', hide = true)]
    _compress: bool,
    #[arg(short = '2', hide = true)]
    _protocol2: bool,

    /// Print this client's key as an authorized_keys line
    /// (`SHA256:... user@host`), creating the key if needed (-i's file too),
    /// and exit.
    #[arg(long)]
    pub(crate) fingerprint: bool,

    /// Trust and record the key of a host not yet in known_hosts. A key that
    /// differs from a recorded one is still refused.
    #[arg(long)]
    pub(crate) accept_new: bool,

    /// Remove HOST[:PORT]'s key from known_hosts (as `ssh-keygen -R`) and exit.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) forget_host: Option<String>,

    /// Run remote commands in this directory.
    #[arg(long = "cwd", value_name = "DIR")]
    pub(crate) cwd: Option<String>,

    /// Set an environment variable for remote commands. Repeatable.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub(crate) env: Vec<(String, String)>,

    /// Kill a remote command (its whole process group) after this many seconds.
    #[arg(long = "timeout", value_name = "SECS")]
    pub(crate) timeout: Option<f64>,

    #[command(flatten)]
    pub(crate) fleet: super::fleet::FleetArgs,
}

/// The argument of `-e`: a character, or none.
#[derive(Debug, Clone, Copy)]
pub(crate) struct EscapeChar(pub(crate) Option<u8>);

fn parse_escape(arg: &str) -> Result<EscapeChar, String> {
    rsh_client::escape::parse_escape_char(arg).map(EscapeChar)
}

fn parse_env(arg: &str) -> Result<(String, String), String> {
    match arg.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err("expected KEY=VALUE".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, Parser};

    fn parse(args: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("rsh-client").chain(args.iter().copied()))
            .unwrap_or_else(|err| panic!("{args:?}: {err}"))
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn options_before_and_after_dest_then_the_command_verbatim() {
        // pdsh's ssh mode.
        let args = parse(&["-2", "-a", "-x", "-lroot", "web1", "uptime", "-p"]);
        assert_eq!(args.login.as_deref(), Some("root"));
        assert_eq!(args.dest.as_deref(), Some("web1"));
        assert_eq!(args.words, ["uptime", "-p"]);
        // As ssh, options may follow DEST until the command starts.
        let args = parse(&["web1", "-p", "2222", "-v", "ls", "-l", "--", "-x"]);
        assert_eq!(args.port, Some(2222));
        assert_eq!(args.verbose, 1);
        assert_eq!(args.words, ["ls", "-l", "--", "-x"]);
        // Ansible's shape.
        let args = parse(&["-o", "BatchMode=yes", "-n", "--", "web1", "echo hi"]);
        assert!(args.null_stdin);
        assert_eq!(args.words, ["echo hi"]);
        // git's probe.
        let args = parse(&["-G", "-o", "SendEnv=GIT_PROTOCOL", "web1"]);
        assert!(args.print_config);
        assert_eq!(args.options, ["SendEnv=GIT_PROTOCOL"]);
        // The one-shot flag with no DEST, as before.
        let args = parse(&["-c", "uname -a"]);
        assert_eq!(args.dest, None);
        assert_eq!(args.command.as_deref(), Some("uname -a"));
    }

    #[test]
    fn ssh_letters_mean_what_they_mean_to_ssh() {
        let args = parse(&["-tt", "-e", "^]", "-C", "web1"]);
        assert_eq!(args.tty, 2);
        assert_eq!(args.escape.map(|e| e.0), Some(Some(0x1d)));
        assert_eq!(args.cwd, None, "-C is compression (ignored), not --cwd");
        let args = parse(&["-e", "none", "-T", "web1"]);
        assert_eq!(args.escape.map(|e| e.0), Some(None));
        assert!(args.no_tty);
        let args = parse(&["--timeout", "2", "--cwd", "/tmp", "--env", "A=b", "web1"]);
        assert_eq!(args.timeout, Some(2.0));
        assert_eq!(args.env, [("A".to_owned(), "b".to_owned())]);
        assert!(Args::try_parse_from(["rsh-client", "-e", "ab", "web1"]).is_err());
        assert!(Args::try_parse_from(["rsh-client", "-p", "0", "web1"]).is_err());
    }
}
