//! How a fleet run ended, host by host and as a whole: each host's
//! [`Outcome`], the summary on stderr, and the run's exit code (the largest
//! of the hosts' codes, from the table in [`super::super::exit`]).

use super::super::exit::{status_code, EXIT_INTERRUPTED, EXIT_RSH_FAILURE};
use rsh_client::{ClientError, ExitStatus};
use std::time::Duration;

/// Which stream of a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// How one host's run ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The command ran and ended so.
    Exited(ExitStatus),
    /// The host could not be reached, or the connection broke.
    Unreachable(String),
    /// The host refused us (key, authorization, the command), or we refused
    /// its key.
    Refused { reason: String, hint: Hint },
    /// Ctrl-C ended the run before this host was done.
    Interrupted,
}

/// What the summary tells the user to do about a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hint {
    None,
    UnknownHostKey,
    NotAuthorized,
}

/// The summary's classes of hosts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Category {
    Succeeded,
    Failed,
    Unreachable,
    Refused,
    Interrupted,
}

impl Category {
    pub(crate) fn json_name(self) -> &'static str {
        match self {
            Category::Succeeded => "success",
            Category::Failed => "failed",
            Category::Unreachable => "unreachable",
            Category::Refused => "refused",
            Category::Interrupted => "interrupted",
        }
    }
}

impl Outcome {
    pub(crate) fn from_error(err: ClientError) -> Outcome {
        match err {
            ClientError::Connect { .. }
            | ClientError::Greeting { .. }
            | ClientError::Tls { .. }
            | ClientError::ConnectionLost { .. } => Outcome::Unreachable(err.to_string()),
            ClientError::UnknownHost { .. } | ClientError::HostKeyNotAccepted(_) => {
                Outcome::Refused {
                    reason: err.to_string(),
                    hint: Hint::UnknownHostKey,
                }
            }
            ClientError::NotAuthorized { .. } => Outcome::Refused {
                // The message carries our key line; once in the summary is
                // enough, not once per host.
                reason: "not authorized: the server refused this client's key (its log says why)"
                    .to_owned(),
                hint: Hint::NotAuthorized,
            },
            other => Outcome::Refused {
                reason: other.to_string(),
                hint: Hint::None,
            },
        }
    }

    pub(crate) fn category(&self) -> Category {
        match self {
            Outcome::Exited(ExitStatus::Code(0)) => Category::Succeeded,
            Outcome::Exited(ExitStatus::FailedToStart(_)) => Category::Refused,
            Outcome::Exited(_) => Category::Failed,
            Outcome::Unreachable(_) => Category::Unreachable,
            Outcome::Refused { .. } => Category::Refused,
            Outcome::Interrupted => Category::Interrupted,
        }
    }

    /// A few words for the user: `exit 3`, `killed by signal 9`, the error.
    pub(crate) fn describe(&self) -> String {
        match self {
            Outcome::Exited(ExitStatus::Code(code)) => format!("exit {code}"),
            Outcome::Exited(ExitStatus::Signal(number)) => format!("killed by signal {number}"),
            Outcome::Exited(ExitStatus::TimedOut) => "timed out".to_owned(),
            Outcome::Exited(ExitStatus::FailedToStart(reason)) => {
                format!("failed to start: {reason}")
            }
            Outcome::Unreachable(reason) | Outcome::Refused { reason, .. } => reason.clone(),
            Outcome::Interrupted => "interrupted".to_owned(),
        }
    }

    /// This host's part of the exit code (see the module docs).
    fn exit_byte(&self) -> u8 {
        match self {
            // A command that failed to start is 255 too, as for one host.
            Outcome::Exited(status) => status_code(status),
            Outcome::Unreachable(_) | Outcome::Refused { .. } => EXIT_RSH_FAILURE,
            Outcome::Interrupted => EXIT_INTERRUPTED,
        }
    }
}

/// One host's end.
#[derive(Debug, Clone)]
pub(crate) struct HostResult {
    pub outcome: Outcome,
    /// From its turn to start to its end.
    pub duration: Duration,
}

/// The exit code of the run (see the module docs).
pub(crate) fn exit_code(results: &[HostResult], interrupted: bool) -> u8 {
    if interrupted {
        return EXIT_INTERRUPTED;
    }
    let unreachable = results.iter().any(|r| {
        matches!(
            r.outcome.category(),
            Category::Unreachable | Category::Refused
        )
    });
    if unreachable {
        return EXIT_RSH_FAILURE;
    }
    results
        .iter()
        .map(|r| r.outcome.exit_byte())
        .max()
        .unwrap_or(0)
}

/// The summary printed on stderr at the end: counts, and each class of
/// hosts as a compressed hostlist.
pub(crate) fn summary(labels: &[String], results: &[HostResult]) -> String {
    use std::fmt::Write;
    let of = |wanted: Category| -> Vec<&str> {
        results
            .iter()
            .zip(labels)
            .filter(|(r, _)| r.outcome.category() == wanted)
            .map(|(_, label)| label.as_str())
            .collect()
    };
    let classes = [
        (Category::Succeeded, "succeeded"),
        (Category::Failed, "failed (non-zero status)"),
        (Category::Unreachable, "unreachable"),
        (Category::Refused, "refused"),
        (Category::Interrupted, "interrupted"),
    ];
    let mut text = String::new();
    let mut counts = Vec::new();
    let mut lists = String::new();
    for (category, name) in classes {
        let hosts = of(category);
        if hosts.is_empty() && category != Category::Succeeded {
            continue;
        }
        counts.push(format!("{} {name}", hosts.len()));
        if !hosts.is_empty() {
            let _ = writeln!(
                lists,
                "rsh-client:   {name}: {}",
                rsh_hostlist::compress(&hosts)
            );
        }
    }
    let _ = writeln!(
        text,
        "rsh-client: {} host{}: {}",
        results.len(),
        if results.len() == 1 { "" } else { "s" },
        counts.join(", ")
    );
    text.push_str(&lists);
    let hinted = |wanted: Hint| -> Vec<&str> {
        results
            .iter()
            .zip(labels)
            .filter(|(r, _)| matches!(r.outcome, Outcome::Refused { hint, .. } if hint == wanted))
            .map(|(_, label)| label.as_str())
            .collect()
    };
    let unknown = hinted(Hint::UnknownHostKey);
    if !unknown.is_empty() {
        let _ = writeln!(
            text,
            "rsh-client: host keys not in known_hosts: {}; compare each with `rsh-server --fingerprint` on that host, then rerun with --accept-new to record them",
            rsh_hostlist::compress(&unknown)
        );
    }
    let unauthorized = hinted(Hint::NotAuthorized);
    if !unauthorized.is_empty() {
        let _ = writeln!(
            text,
            "rsh-client: these servers refused this client's key (their logs say why): {}; if the key is not in their authorized_keys yet, add the line `rsh-client --fingerprint` prints there",
            rsh_hostlist::compress(&unauthorized)
        );
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> HostResult {
        HostResult {
            outcome,
            duration: Duration::ZERO,
        }
    }

    #[test]
    fn exit_code_is_the_largest_status_or_255() {
        let code =
            |o: Vec<Outcome>| exit_code(&o.into_iter().map(result).collect::<Vec<_>>(), false);
        let exited = |c| Outcome::Exited(ExitStatus::Code(c));
        assert_eq!(code(vec![exited(0), exited(0)]), 0);
        assert_eq!(code(vec![exited(3), exited(0), exited(7)]), 7);
        assert_eq!(
            code(vec![exited(1), Outcome::Exited(ExitStatus::Signal(9))]),
            137
        );
        assert_eq!(
            code(vec![exited(0), Outcome::Exited(ExitStatus::TimedOut)]),
            124
        );
        assert_eq!(
            code(vec![exited(7), Outcome::Unreachable("down".to_owned())]),
            255
        );
    }

    #[test]
    fn summary_names_each_class_as_a_hostlist() {
        let labels: Vec<String> = (1..=5).map(|n| format!("n{n}")).collect();
        let results: Vec<HostResult> = [
            Outcome::Exited(ExitStatus::Code(0)),
            Outcome::Exited(ExitStatus::Code(0)),
            Outcome::Exited(ExitStatus::Code(2)),
            Outcome::Unreachable("down".to_owned()),
            Outcome::from_error(ClientError::UnknownHost {
                host_port: "n5:7022".to_owned(),
                fingerprint: "SHA256:x".to_owned(),
            }),
        ]
        .into_iter()
        .map(result)
        .collect();
        let text = summary(&labels, &results);
        assert!(
            text.contains(
                "5 hosts: 2 succeeded, 1 failed (non-zero status), 1 unreachable, 1 refused"
            ),
            "{text}"
        );
        assert!(text.contains("succeeded: n[1-2]\n"), "{text}");
        assert!(text.contains("unreachable: n4\n"), "{text}");
        assert!(text.contains("host keys not in known_hosts: n5;"), "{text}");
    }

    #[test]
    fn one_host_is_one_host() {
        let labels = vec!["n1".to_owned()];
        let results = vec![result(Outcome::Exited(ExitStatus::Code(0)))];
        let text = summary(&labels, &results);
        assert!(text.contains("rsh-client: 1 host: 1 succeeded"), "{text}");
    }
}
