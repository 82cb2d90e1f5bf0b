//! Which hosts a fleet run targets: `-H` hostlists, `--hosts-file` lines and
//! `--exclude`, each host then resolved through the config file (aliases,
//! `HostName`, `Port`, `User`, `ConnectTimeout`, `StrictHostKeyChecking`)
//! the way a single DEST is.

use super::{FleetArgs, FleetOptions};
use anyhow::{bail, Context};
use rsh_client::HostKeyPolicy;
use rsh_config::dest::{Dest, Target as DestTarget};
use rsh_config::ssh_config::StrictHostKeyChecking;
use rsh_config::Endpoint;
use rsh_hostlist::HostEntry;
use std::collections::HashSet;
use std::time::Duration;

/// One host of the run, resolved.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The host as the user wrote it (`web01`, `web01:7022`, `ops@db1`): the
    /// prefix of its lines and its name in headers and summaries.
    pub label: String,
    /// Where to connect.
    pub endpoint: Endpoint,
    /// The remote user asked for (`user@` or `User`/`-l`), if any.
    pub user: Option<String>,
    /// Limit for the TCP connect and TLS handshake.
    pub connect_timeout: Duration,
    /// What to do with an unknown host key.
    pub host_keys: HostKeyPolicy,
    /// Say so on stderr when a new host key is recorded (not with -q).
    pub note_added_key: bool,
}

/// Expands `-H`, `--hosts-file` and `--exclude` into resolved hosts, in the
/// order written, each once. Every list and every hosts-file line together
/// may name at most `--max-hosts` hosts (and `--exclude` as many), counted
/// as they are expanded: a run over too many stops there, before it holds
/// them all.
///
/// # Errors
/// A malformed hostlist or host, an unreadable hosts file, too many hosts,
/// or no host left.
pub(crate) async fn targets(
    args: &FleetArgs,
    options: &FleetOptions,
) -> anyhow::Result<Vec<Target>> {
    let max = usize::try_from(args.max_hosts).unwrap_or(usize::MAX);
    let mut budget = HostBudget::new(max);
    let mut entries = Vec::new();
    for list in &args.hosts {
        entries.extend(budget.expand(list).with_context(|| format!("-H {list}"))?);
    }
    for path in &args.hosts_file {
        // tokio::fs: a hosts file on a slow mount must not stop the runtime.
        let text = tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("cannot read hosts file {}", path.display()))?;
        entries.extend(
            parse_hosts_file(&text, &mut budget).with_context(|| path.display().to_string())?,
        );
    }
    let mut excluded = Excluded::default();
    let mut exclude_budget = HostBudget::new(max);
    for list in &args.exclude {
        for entry in exclude_budget
            .expand(list)
            .with_context(|| format!("--exclude {list}"))?
        {
            excluded.add(entry);
        }
    }
    let mut seen = HashSet::new();
    let mut targets = Vec::new();
    for entry in entries {
        if excluded.covers(&entry) || !seen.insert(entry.clone()) {
            continue;
        }
        targets.push(resolve(&entry, options)?);
    }
    if targets.is_empty() {
        bail!("no hosts to run on (every host given was excluded)");
    }
    Ok(targets)
}

/// How many more hosts a run may name: one count over all its lists, so
/// that many lists (or a long hosts file) each under the cap cannot add up
/// to millions of hosts.
#[derive(Debug)]
pub(crate) struct HostBudget {
    max: usize,
    left: usize,
}

impl HostBudget {
    pub(crate) fn new(max: usize) -> HostBudget {
        HostBudget { max, left: max }
    }

    /// Expands `list` within what is left (the count is checked before any
    /// host is generated).
    fn expand(&mut self, list: &str) -> anyhow::Result<Vec<HostEntry>> {
        match rsh_hostlist::expand_with_limit(list, self.left) {
            Ok(entries) => {
                self.left = self.left.saturating_sub(entries.len());
                Ok(entries)
            }
            Err(rsh_hostlist::HostlistError::TooMany { .. }) => bail!(
                "-H and --hosts-file name more than {} hosts in all (the cap of one run; raise it with --max-hosts N)",
                self.max
            ),
            Err(err) => Err(err.into()),
        }
    }
}

/// A hosts file: one host (or hostlist) a line; `#` starts a comment;
/// blank lines are skipped. Its hosts count against `budget`.
pub(crate) fn parse_hosts_file(
    text: &str,
    budget: &mut HostBudget,
) -> anyhow::Result<Vec<HostEntry>> {
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line
            .split_once('#')
            .map_or(line, |(before, _)| before)
            .trim();
        if line.is_empty() {
            continue;
        }
        entries.extend(
            budget
                .expand(line)
                .with_context(|| format!("line {}", number + 1))?,
        );
    }
    Ok(entries)
}

/// `--exclude`: an entry with a port excludes that host on that port; one
/// without excludes the host on any port.
#[derive(Debug, Default)]
struct Excluded {
    exact: HashSet<HostEntry>,
    any_port: HashSet<String>,
}

impl Excluded {
    fn add(&mut self, entry: HostEntry) {
        if entry.port.is_none() {
            self.any_port.insert(entry.name.clone());
        }
        self.exact.insert(entry);
    }

    fn covers(&self, entry: &HostEntry) -> bool {
        self.exact.contains(entry) || self.any_port.contains(&entry.name)
    }
}

fn resolve(entry: &HostEntry, options: &FleetOptions) -> anyhow::Result<Target> {
    let label = entry.to_string();
    let dest: Dest = label.parse().with_context(|| format!("host {label}"))?;
    let DestTarget::Host { host, port } = &dest.target else {
        bail!("host {label}: Unix sockets cannot be fleet hosts");
    };
    let resolved = options.config.resolve(host, &options.overrides);
    // The port written with the host is the most specific; then -p and the
    // config file (both in `resolved`), then the default.
    let port = port
        .or(resolved.port)
        .unwrap_or(rsh_config::DEFAULT_TCP_PORT);
    let host_keys = if options.accept_new {
        HostKeyPolicy::AcceptNew
    } else {
        match resolved.strict_host_key_checking {
            Some(StrictHostKeyChecking::AcceptNew) => HostKeyPolicy::AcceptNew,
            // No prompt in a fan-out: many hosts would ask at once. An
            // unknown host is refused and named in the summary instead.
            _ => HostKeyPolicy::Strict,
        }
    };
    Ok(Target {
        endpoint: Endpoint::Tcp {
            host: resolved.hostname.clone(),
            port,
        },
        user: dest.user.clone().or(resolved.user.clone()),
        connect_timeout: resolved.connect_timeout.unwrap_or(options.connect_timeout),
        host_keys,
        note_added_key: !options.quiet,
        label,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(entries: &[HostEntry]) -> Vec<String> {
        entries.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn hosts_file_skips_comments_and_blank_lines() {
        let text = "# the web tier\nweb[1-2]\n\n  db1:7023  # primary\n#db2\n";
        let entries = parse_hosts_file(text, &mut HostBudget::new(100)).expect("valid");
        assert_eq!(names(&entries), ["web1", "web2", "db1:7023"]);
    }

    #[test]
    fn hosts_file_error_names_the_line() {
        let err = parse_hosts_file("web1\nweb[3-1]\n", &mut HostBudget::new(100))
            .expect_err("reversed range");
        assert!(format!("{err:#}").contains("line 2"), "{err:#}");
    }

    #[test]
    fn the_budget_counts_every_line_together() {
        let mut budget = HostBudget::new(5);
        let entries = parse_hosts_file("a[1-2]\nb[1-2]\n", &mut budget).expect("4 of 5");
        assert_eq!(entries.len(), 4);
        let err = parse_hosts_file("c[1-2]\n", &mut budget).expect_err("6 of 5");
        let err = format!("{err:#}");
        assert!(err.contains("more than 5 hosts"), "{err}");
        assert!(err.contains("--max-hosts"), "{err}");
    }

    #[test]
    fn exclude_without_port_covers_every_port() {
        let mut excluded = Excluded::default();
        for entry in rsh_hostlist::expand("web2,db1:7023").expect("valid") {
            excluded.add(entry);
        }
        let covered = |s: &str| {
            let entry = rsh_hostlist::expand(s).expect("valid").remove(0);
            excluded.covers(&entry)
        };
        assert!(covered("web2"));
        assert!(covered("web2:7030"));
        assert!(covered("db1:7023"));
        assert!(!covered("db1:7024"));
        assert!(!covered("db1"));
        assert!(!covered("web1"));
    }
}
