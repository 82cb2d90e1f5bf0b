//! The man pages' sections that `--help` has no place for: FILES,
//! ENVIRONMENT, EXIT STATUS and EXAMPLES, taken from the README and the
//! code. `` `word` `` is set in bold.

/// One `.SH` section.
pub struct Section {
    pub title: &'static str,
    pub blocks: &'static [Block],
}

/// A paragraph, a tagged paragraph (`.TP`), or a sentence and the command
/// lines it describes.
pub enum Block {
    Para(&'static str),
    Item(&'static str, &'static str),
    Example(&'static str, &'static str),
}

/// The extra sections of the binary called `name`.
pub fn sections(name: &str) -> &'static [Section] {
    match name {
        "rsh-client" => CLIENT,
        "rsh-server" => SERVER,
        _ => &[],
    }
}

const CLIENT: &[Section] = &[
    Section {
        title: "FILES",
        blocks: &[
            Block::Item("`$RSH_HOME`", "The client's directory, ~/.rsh unless RSH_HOME is set; created with mode 0700."),
            Block::Item("`$RSH_HOME/id`", "This client's key, created with mode 0600 on first use; a key file that group or others may read is refused. `--fingerprint` prints it as an authorized_keys line; `-i` names another."),
            Block::Item("`$RSH_HOME/known_hosts`", "The servers' keys, one `HOST:PORT SHA256:...` line each (IPv6 addresses in brackets; `#` comments). A new host is added when you accept it on a terminal or with `--accept-new`; `--forget-host` removes one. A host whose key differs from every line for it is refused."),
            Block::Item("`$RSH_HOME/config`", "Host aliases and settings in ssh_config(5) syntax (Host, Include, HostName, Port, User, IdentityFile, ConnectTimeout, ServerAliveInterval, ServerAliveCountMax, StrictHostKeyChecking, BatchMode; other ssh keywords are accepted and ignored, Match is refused). Refused if group or others can write it. `-F` names another file; `-G` prints what a destination resolves to. ~/.ssh/config is not read."),
            Block::Item("`$RSH_HOME/rsh.sock`", "The local server's Unix socket: the destination when none is given."),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        blocks: &[
            Block::Item("`RSH_HOME`", "The directory of the files above (default ~/.rsh)."),
            Block::Item("`HOME`", "Where ~/.rsh is, and what ~ and %d mean in the config file."),
            Block::Item("`USER`, `LOGNAME`", "The local user: %u in the config file, and %r when no User is set."),
            Block::Item("`TERM`", "Sent to the server for a terminal session (dumb if unset)."),
        ],
    },
    Section {
        title: "EXIT STATUS",
        blocks: &[
            Block::Para("For one destination, as ssh(1): the remote command's exit status; 128+N if it died of signal N; 124 if it ran past `--timeout` and was killed; 141 if the client's own stdout was a closed pipe; 255 if rsh itself failed (cannot connect, host key refused, protocol error, command refused, or options that do not fit together), with the reason on one line of stderr; 2 for a command line that does not parse."),
            Block::Para("With `-H` or `--hosts-file`: 0 when every host ran the command and it exited 0; otherwise the largest of the hosts' statuses, as pdsh -S (128+N for a signal, 124 for a timeout); 255 when any host could not be reached or refused; 130 after Ctrl-C."),
        ],
    },
    Section {
        title: "EXAMPLES",
        blocks: &[
            Block::Example("Run one command on the local server, then open a terminal session there:", "rsh-client -c 'uname -a'\nrsh-client"),
            Block::Example("First contact with a remote server: print this client's key for the server's authorized_keys, then run a command (the host key is asked about once):", "rsh-client --fingerprint\nrsh-client server.example uptime"),
            Block::Example("Use rsh where a tool runs ssh:", "rsync -a -e rsh-client src/ host:dst/\nGIT_SSH_COMMAND=rsh-client git clone host:/path/repo"),
            Block::Example("One command on twenty hosts, identical answers printed once; then one JSON line per host:", "rsh-client -H 'web[01-20]' --gather -c 'cat /etc/os-release'\nrsh-client --hosts-file hosts.txt --json -c 'df -h /' > out.jsonl"),
        ],
    },
    Section {
        title: "SEE ALSO",
        blocks: &[Block::Para("rsh-server(1), ssh(1), ssh_config(5)")],
    },
];

const SERVER: &[Section] = &[
    Section {
        title: "FILES",
        blocks: &[
            Block::Item("`$RSH_HOME`", "The server's directory, ~/.rsh unless RSH_HOME is set; created with mode 0700. It and every directory above it must be owned by the server's user or root and not writable by group or others (sticky directories such as /tmp are fine), as sshd's StrictModes: otherwise the server refuses to start, or, if that changes later, refuses the connection and logs why."),
            Block::Item("`$RSH_HOME/rsh.sock`", "The default endpoint, a Unix socket with mode 0600 that admits only the server's own user (checked by peer credentials)."),
            Block::Item("`$RSH_HOME/host_key`", "The server's key for TLS, created with mode 0600 on first start; `--fingerprint` prints it as known_hosts records it."),
            Block::Item("`$RSH_HOME/authorized_keys`", "The client keys admitted over TCP, one `SHA256:... comment` line each (as `rsh-client --fingerprint` prints them); re-read on every connection; a malformed line is logged and skipped; a missing file admits nobody."),
            Block::Item("`$RSH_HOME/rsh-server.toml`", "The optional config file (or `--config PATH`): every option by its long name, plus log-level; options on the command line win. `--check-config` checks it; SIGHUP re-reads it. Trusted only as authorized_keys is: owned by the server's user or root and not writable by group or others, nor any directory above it; a regular file of at most 1 MiB."),
        ],
    },
    Section {
        title: "ENVIRONMENT",
        blocks: &[
            Block::Item("`RSH_HOME`", "The directory of the files above (default ~/.rsh)."),
            Block::Item("`HOME`", "Where ~/.rsh is."),
            Block::Item("`RUST_LOG`", "Log filter (debug, rsh_server=trace, ...); overrides `-v` and the config file's log-level."),
            Block::Item("`NOTIFY_SOCKET`", "Set by systemd for Type=notify units: the server reports ready, reloading and stopping on it."),
            Block::Item("`JOURNAL_STREAM`", "Set by systemd when stderr is the journal: log lines then carry a syslog priority and no timestamp of their own."),
            Block::Para("Each command gets `RSH_CONNECTION` (the client's and the server's address and port, as sshd's SSH_CONNECTION); a terminal session also gets `RSH_TTY` and the client's `TERM`."),
        ],
    },
    Section {
        title: "EXIT STATUS",
        blocks: &[
            Block::Para("0 after a clean stop (SIGINT, SIGTERM or SIGQUIT), and for `--fingerprint` and a `--check-config` that finds nothing wrong; 1 if the server cannot start (a bad config file or option, unsafe key files or directories, an endpoint it cannot bind) or `--check-config` finds an error, named with its file and line; 2 for a usage error."),
        ],
    },
    Section {
        title: "EXAMPLES",
        blocks: &[
            Block::Example("Serve the local socket, logging to a file (the directory must exist before the shell opens the log):", "mkdir -m 700 -p ~/.rsh\nrsh-server 2>>~/.rsh/server.log &"),
            Block::Example("Serve TCP as well, and admit a client's key:", "rsh-server --listen unix:$HOME/.rsh/rsh.sock --listen 0.0.0.0:7022 &\necho 'SHA256:...  me@laptop' >> ~/.rsh/authorized_keys"),
            Block::Example("Check the config file and print the effective settings; then reload a running server:", "rsh-server --check-config\nsystemctl --user reload rsh-server"),
        ],
    },
    Section {
        title: "SEE ALSO",
        blocks: &[Block::Para("rsh-client(1), sshd(8)")],
    },
];
