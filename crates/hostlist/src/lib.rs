//! Hostlists as pdsh and ClusterShell users write them, for rsh's fan-out:
//! [`expand`] turns `web[01-20],db[1,3-5]` into hosts, [`compress`] folds a
//! set of hosts back into that form for headers and summaries.
//!
//! # Syntax
//! - A list is entries separated by commas; a comma inside `[...]` belongs
//!   to the range, not to the list. Spaces around entries are dropped.
//! - An entry is text with bracketed ranges: `web[01-20]`, `db[1,3-5]`,
//!   `n[1-10/2]` (a step). Several ranges give every combination, the
//!   leftmost varying slowest: `rack[1-2]-node[01-08]` is `rack1-node01`,
//!   ..., `rack1-node08`, `rack2-node01`, ...
//! - Zero padding is kept: a bound written with a leading zero (`01`, `007`)
//!   sets the width of every number of its range.
//! - `:PORT` after an entry applies to each of its hosts: `web[1-3]:7022`.
//! - IPv6: a bracket group holding a `:` is an IPv6 address, not a range, and
//!   must be the whole host: `[::1]`, `[fe80::2]:7022`. A bare address
//!   (`::1`) is accepted too, without a port. Ranges inside IPv6 addresses
//!   are not supported.
//! - Anything else in an entry (letters, digits, `.`, `-`, `_`, `@`, ...) is
//!   taken as written, so config aliases and `user@host` pass through.
//!
//! # Order
//! [`expand`] keeps the order written and drops repeats (the first stays).
//! [`compress`] sorts: its output does not depend on the order of its input,
//! and expanding it gives the same set of hosts (as sorted, deduplicated
//! sets; property-tested).
//!
//! # Limits
//! An expansion is counted before anything is generated and refused past
//! [`DEFAULT_MAX_HOSTS`] (or the limit given to [`expand_with_limit`]), so
//! `n[1-999999999]` costs nothing.
#![deny(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::fmt;
use std::net::Ipv6Addr;

/// Most hosts one list may expand to.
pub const DEFAULT_MAX_HOSTS: usize = 100_000;

/// One host of an expanded list.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostEntry {
    /// Host name, alias or address as written (IPv6 without brackets).
    pub name: String,
    /// The `:PORT` written after the entry.
    pub port: Option<u16>,
}

impl fmt::Display for HostEntry {
    /// `name`, `name:port`, `[ipv6]` or `[ipv6]:port`: the form [`expand`]
    /// reads back and rsh's DEST accepts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.name.contains(':') {
            write!(f, "[{}]", self.name)?;
        } else {
            f.write_str(&self.name)?;
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

/// A hostlist that cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    /// The text is not a hostlist.
    #[error("bad hostlist entry {entry:?}: {reason}")]
    Syntax {
        /// The entry (or the whole list, for a bracket left open).
        entry: String,
        /// What is wrong.
        reason: &'static str,
    },
    /// The list names more hosts than allowed.
    #[error("hostlist expands to more than {max} hosts")]
    TooMany {
        /// The limit.
        max: usize,
    },
}

/// Expands a hostlist, at most [`DEFAULT_MAX_HOSTS`] hosts.
///
/// # Errors
/// [`HostlistError::Syntax`] for malformed text (empty entries, unbalanced or
/// nested brackets, a reversed or non-numeric range, a bad port),
/// [`HostlistError::TooMany`] past the limit.
pub fn expand(list: &str) -> Result<Vec<HostEntry>, HostlistError> {
    expand_with_limit(list, DEFAULT_MAX_HOSTS)
}

/// Expands a hostlist into at most `max` hosts (counted before repeats are
/// dropped).
///
/// # Errors
/// As [`expand`].
pub fn expand_with_limit(list: &str, max: usize) -> Result<Vec<HostEntry>, HostlistError> {
    let mut hosts = Vec::new();
    let mut seen = HashSet::new();
    let mut budget = max;
    for entry in split_top_level(list)? {
        let entry = entry.trim();
        let parsed = parse_entry(entry)?;
        let count = parsed.count().filter(|&n| n <= budget as u64);
        let Some(count) = count else {
            return Err(HostlistError::TooMany { max });
        };
        budget -= count as usize;
        parsed.generate(|host| {
            if seen.insert(host.clone()) {
                hosts.push(host);
            }
        });
    }
    Ok(hosts)
}

fn syntax(entry: &str, reason: &'static str) -> HostlistError {
    HostlistError::Syntax {
        entry: entry.to_owned(),
        reason,
    }
}

/// Splits at commas outside brackets; checks that brackets balance and do
/// not nest.
fn split_top_level(list: &str) -> Result<Vec<&str>, HostlistError> {
    let mut entries = Vec::new();
    let mut open = false;
    let mut start = 0;
    for (i, c) in list.char_indices() {
        match c {
            '[' if open => return Err(syntax(list, "nested '['")),
            '[' => open = true,
            ']' if !open => return Err(syntax(list, "']' without '['")),
            ']' => open = false,
            ',' if !open => {
                entries.push(&list[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    if open {
        return Err(syntax(list, "'[' without ']'"));
    }
    entries.push(&list[start..]);
    Ok(entries)
}

/// One range inside brackets: `lo`, `lo-hi` or `lo-hi/step`, printed with
/// `pad` digits at least.
#[derive(Debug, Clone, Copy)]
struct Range {
    lo: u64,
    hi: u64,
    step: u64,
    pad: usize,
}

impl Range {
    fn len(&self) -> u64 {
        (self.hi - self.lo) / self.step + 1
    }
}

#[derive(Debug)]
enum Segment {
    Text(String),
    Ranges(Vec<Range>),
}

/// A parsed entry: its segments and port.
#[derive(Debug)]
struct Entry {
    segments: Vec<Segment>,
    port: Option<u16>,
}

impl Entry {
    /// How many hosts it names; `None` past `u64`.
    fn count(&self) -> Option<u64> {
        self.segments.iter().try_fold(1u64, |acc, seg| match seg {
            Segment::Text(_) => Some(acc),
            Segment::Ranges(ranges) => ranges
                .iter()
                .try_fold(0u64, |sum, r| sum.checked_add(r.len()))
                .and_then(|n| acc.checked_mul(n)),
        })
    }

    /// Calls `emit` for every host, leftmost range varying slowest.
    fn generate(&self, mut emit: impl FnMut(HostEntry)) {
        // An odometer over the range groups: one position per group.
        let groups: Vec<Vec<(u64, usize)>> = self
            .segments
            .iter()
            .filter_map(|seg| match seg {
                Segment::Ranges(ranges) => Some(
                    ranges
                        .iter()
                        .flat_map(|r| (0..r.len()).map(move |i| (r.lo + i * r.step, r.pad)))
                        .collect(),
                ),
                Segment::Text(_) => None,
            })
            .collect();
        let mut positions = vec![0usize; groups.len()];
        loop {
            let mut name = String::new();
            let mut group = 0;
            for seg in &self.segments {
                match seg {
                    Segment::Text(text) => name.push_str(text),
                    Segment::Ranges(_) => {
                        let (n, pad) = groups[group][positions[group]];
                        name.push_str(&format!("{n:0pad$}"));
                        group += 1;
                    }
                }
            }
            emit(HostEntry {
                name,
                port: self.port,
            });
            // Advance the rightmost group that has room; reset those after it.
            let Some(g) = (0..groups.len())
                .rev()
                .find(|&g| positions[g] + 1 < groups[g].len())
            else {
                return;
            };
            positions[g] += 1;
            positions[g + 1..].iter_mut().for_each(|p| *p = 0);
        }
    }
}

fn parse_port(entry: &str, port: &str) -> Result<u16, HostlistError> {
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(entry, "port is not a number"));
    }
    match port.parse::<u16>() {
        Ok(p) if p != 0 => Ok(p),
        _ => Err(syntax(entry, "port is not a number 1-65535")),
    }
}

fn parse_entry(entry: &str) -> Result<Entry, HostlistError> {
    if entry.is_empty() {
        return Err(syntax(entry, "empty entry (two commas, or one at an end)"));
    }
    if entry.contains(char::is_whitespace) {
        return Err(syntax(entry, "space inside an entry"));
    }
    let literal = |name: &str, port| Entry {
        segments: vec![Segment::Text(name.to_owned())],
        port,
    };
    // IPv6: `[addr]` or `[addr]:port`, or a bare address.
    if let Some(inner) = entry.strip_prefix('[') {
        if let Some((addr, after)) = inner.split_once(']').filter(|(a, _)| a.contains(':')) {
            if addr.parse::<Ipv6Addr>().is_err() {
                return Err(syntax(entry, "not an IPv6 address inside [...]"));
            }
            let port = match after {
                "" => None,
                _ => Some(parse_port(
                    entry,
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| syntax(entry, "an IPv6 address must be the whole host"))?,
                )?),
            };
            return Ok(literal(addr, port));
        }
    }
    if entry.parse::<Ipv6Addr>().is_ok() {
        return Ok(literal(entry, None));
    }
    // The port: after the last ':' outside brackets (none are left inside,
    // IPv6 having been handled).
    let (name, port) = match entry.rsplit_once(':') {
        Some((name, port)) => (name, Some(parse_port(entry, port)?)),
        None => (entry, None),
    };
    if name.is_empty() {
        return Err(syntax(entry, "empty host name"));
    }
    if name.contains(':') {
        return Err(syntax(entry, "':' in a host name (IPv6 goes in [...])"));
    }
    let mut segments = Vec::new();
    let mut rest = name;
    while !rest.is_empty() {
        match rest.find('[') {
            Some(0) => {
                // split_top_level checked that brackets balance.
                let close = rest
                    .find(']')
                    .ok_or_else(|| syntax(entry, "'[' without ']'"))?;
                segments.push(Segment::Ranges(parse_ranges(entry, &rest[1..close])?));
                rest = &rest[close + 1..];
            }
            Some(open) => {
                segments.push(Segment::Text(rest[..open].to_owned()));
                rest = &rest[open..];
            }
            None => {
                segments.push(Segment::Text(rest.to_owned()));
                rest = "";
            }
        }
    }
    Ok(Entry { segments, port })
}

/// `1,3-5,07-09,1-9/2` inside brackets.
fn parse_ranges(entry: &str, inner: &str) -> Result<Vec<Range>, HostlistError> {
    if inner.is_empty() {
        return Err(syntax(entry, "empty []"));
    }
    inner
        .split(',')
        .map(|part| {
            let (bounds, step) = match part.split_once('/') {
                Some((bounds, step)) => (bounds, number(entry, step)?),
                None => (part, 1),
            };
            if step == 0 {
                return Err(syntax(entry, "a step of 0"));
            }
            let (lo, hi) = bounds.split_once('-').unwrap_or((bounds, bounds));
            let pad = [lo, hi]
                .iter()
                .filter(|b| b.len() > 1 && b.starts_with('0'))
                .map(|b| b.len())
                .max()
                .unwrap_or(0);
            let (lo, hi) = (number(entry, lo)?, number(entry, hi)?);
            if lo > hi {
                return Err(syntax(entry, "a range that goes down"));
            }
            Ok(Range { lo, hi, step, pad })
        })
        .collect()
}

/// Digits only (no sign, no spaces), at most 18 of them so sums stay in u64.
fn number(entry: &str, s: &str) -> Result<u64, HostlistError> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(syntax(entry, "a range bound that is not a number"));
    }
    s.parse()
        .map_err(|_| syntax(entry, "a range bound that is not a number"))
}

/// A host split around the last run of digits of its name, for folding.
struct Split {
    prefix: String,
    digits: String,
    /// What follows the digits in the name, then `:port` if any.
    suffix: String,
}

/// Folds hosts into the shortest usual hostlist: hosts that differ only in
/// the last number of their name (with the same text around it, the same
/// port and a consistent zero padding) become one bracketed range:
/// `web01,web02,web03,web07,db1` gives `db1,web[01-03,07]`.
///
/// Input strings are hosts as [`HostEntry`] displays them (`name`,
/// `name:port`, `[ipv6]:port`). Repeats are dropped, the result is sorted.
/// A string that cannot be a host in a hostlist (one holding `[`, `]`, `,`
/// or whitespace) is copied as it is, and will not expand back.
pub fn compress<I, S>(hosts: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    // (prefix, suffix, pad) -> numbers; pad 0 means "no leading zeros".
    let mut groups: BTreeMap<(String, String, usize), BTreeSet<u64>> = BTreeMap::new();
    let mut literals: BTreeSet<String> = BTreeSet::new();
    for host in hosts {
        match split_host(host.as_ref()) {
            Ok(Split {
                prefix,
                digits,
                suffix,
            }) => {
                let pad = if digits.len() > 1 && digits.starts_with('0') {
                    digits.len()
                } else {
                    0
                };
                // split_host took at most 18 digits, so this parses.
                let n = digits.parse().unwrap_or_default();
                groups.entry((prefix, suffix, pad)).or_default().insert(n);
            }
            Err(literal) => {
                literals.insert(literal);
            }
        }
    }
    // A number without leading zeros as wide as a padded group of the same
    // pattern joins it: web09,web10 fold to web[09-10], not web09,web10.
    let unpadded: Vec<(String, String)> = groups
        .keys()
        .filter(|(_, _, pad)| *pad == 0)
        .map(|(p, s, _)| (p.clone(), s.clone()))
        .collect();
    for (prefix, suffix) in unpadded {
        let key = (prefix, suffix, 0);
        let Some(numbers) = groups.remove(&key) else {
            continue;
        };
        let (prefix, suffix, _) = key;
        let mut left = BTreeSet::new();
        for n in numbers {
            let width = n.to_string().len();
            match groups.get_mut(&(prefix.clone(), suffix.clone(), width)) {
                Some(padded) if width > 1 => {
                    padded.insert(n);
                }
                _ => {
                    left.insert(n);
                }
            }
        }
        if !left.is_empty() {
            groups.insert((prefix, suffix, 0), left);
        }
    }
    let mut parts: Vec<(String, String)> = literals.into_iter().map(|l| (l.clone(), l)).collect();
    for ((prefix, suffix, pad), numbers) in groups {
        let body = fold(&numbers, pad);
        let text = if numbers.len() == 1 {
            format!("{prefix}{body}{suffix}")
        } else {
            format!("{prefix}[{body}]{suffix}")
        };
        parts.push((format!("{prefix}\u{0}{suffix}\u{0}{pad:020}"), text));
    }
    parts.sort();
    parts
        .into_iter()
        .map(|(_, text)| text)
        .collect::<Vec<_>>()
        .join(",")
}

/// `1,2,3,5` with pad 2 gives `01-03,05`.
fn fold(numbers: &BTreeSet<u64>, pad: usize) -> String {
    let mut out = String::new();
    let mut iter = numbers.iter().copied().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(&format!("{start:0pad$}"));
        if end > start {
            out.push_str(&format!("-{end:0pad$}"));
        }
    }
    out
}

/// Splits a host string for folding, or gives the text to copy literally.
fn split_host(host: &str) -> Result<Split, String> {
    if host.is_empty() || host.contains(|c: char| "[],".contains(c) || c.is_whitespace()) {
        return Err(host.to_owned());
    }
    if host.parse::<Ipv6Addr>().is_ok() {
        return Err(format!("[{host}]"));
    }
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port))
            if !name.is_empty()
                && !name.contains(':')
                && !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            (name, &host[name.len()..])
        }
        _ => (host, ""),
    };
    let Some(end) = name.rfind(|c: char| c.is_ascii_digit()).map(|i| i + 1) else {
        return Err(host.to_owned());
    };
    // (By length, not by the index of the last non-digit plus one: that
    // character may take more than one byte.)
    let start = name[..end]
        .trim_end_matches(|c: char| c.is_ascii_digit())
        .len();
    if end - start > 18 {
        return Err(host.to_owned());
    }
    Ok(Split {
        prefix: name[..start].to_owned(),
        digits: name[start..end].to_owned(),
        suffix: format!("{}{port}", &name[end..]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        expand(list)
            .unwrap_or_else(|e| panic!("{list:?}: {e}"))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn folds_a_number_after_a_multibyte_character() {
        // Found by the hostlist fuzz target: this panicked on a char boundary.
        let folded = compress(["\u{1f}\u{552}0", "\u{552}1", "\u{552}2"]);
        assert_eq!(folded, "\u{1f}\u{552}0,\u{552}[1-2]");
        assert_eq!(names(&folded), ["\u{1f}\u{552}0", "\u{552}1", "\u{552}2"]);
    }

    #[test]
    fn expands_the_usual_forms() {
        assert_eq!(names("web[01-03]"), ["web01", "web02", "web03"]);
        assert_eq!(names("db[1,3-5]"), ["db1", "db3", "db4", "db5"]);
        assert_eq!(
            names("rack[1-2]-node[01-02]"),
            [
                "rack1-node01",
                "rack1-node02",
                "rack2-node01",
                "rack2-node02"
            ]
        );
        assert_eq!(names("a, b,c[1-2].lab"), ["a", "b", "c1.lab", "c2.lab"]);
        assert_eq!(names("n[1-9/4]"), ["n1", "n5", "n9"]);
        assert_eq!(names("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(names("n[098-101]"), ["n098", "n099", "n100", "n101"]);
        assert_eq!(names("[1-3]"), ["1", "2", "3"]);
        assert_eq!(names("10.0.0.[1-2]"), ["10.0.0.1", "10.0.0.2"]);
        assert_eq!(names("alice@web[1-2]"), ["alice@web1", "alice@web2"]);
    }

    #[test]
    fn ports_and_ipv6() {
        assert_eq!(names("web[1-2]:7022"), ["web1:7022", "web2:7022"]);
        let hosts = expand("[::1]:7022,::2,[fe80::3]").expect("ok");
        assert_eq!(
            hosts,
            [
                HostEntry {
                    name: "::1".into(),
                    port: Some(7022)
                },
                HostEntry {
                    name: "::2".into(),
                    port: None
                },
                HostEntry {
                    name: "fe80::3".into(),
                    port: None
                },
            ]
        );
        assert_eq!(names("[::1]:22,::2"), ["[::1]:22", "[::2]"]);
    }

    #[test]
    fn keeps_order_and_drops_repeats() {
        assert_eq!(names("b,a,b,a[1-2],a1"), ["b", "a", "a1", "a2"]);
        assert_eq!(names("h:1,h:2,h:1"), ["h:1", "h:2"]);
    }

    #[test]
    fn refuses_malformed() {
        for bad in [
            "",
            "a,,b",
            "a,",
            "web[",
            "web]",
            "web[1-2",
            "web[[1]]",
            "web[]",
            "web[3-1]",
            "web[a-b]",
            "web[1-]",
            "web[-1]",
            "web[+1]",
            "web[1-5/0]",
            "web:http",
            "web:0",
            "web:70000",
            ":22",
            "a:b:22",
            "[::1]x",
            "[nope:1]",
            "x[::1]",
            "a b",
            "n[1234567890123456789]",
        ] {
            assert!(expand(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn limit_is_checked_before_generating() {
        assert_eq!(
            expand("n[1-999999999]"),
            Err(HostlistError::TooMany {
                max: DEFAULT_MAX_HOSTS
            })
        );
        // Overflowing u64 in the product is refused, not wrapped.
        assert!(expand("a[0-999999999999999999]b[0-999999999999999999]").is_err());
        assert_eq!(expand_with_limit("n[1-10]", 10).map(|h| h.len()), Ok(10));
        assert_eq!(
            expand_with_limit("n[1-10],m[1-1]", 10),
            Err(HostlistError::TooMany { max: 10 })
        );
    }

    #[test]
    fn compresses_the_usual_forms() {
        assert_eq!(
            compress(["web01", "web02", "web03", "web07", "db1"]),
            "db1,web[01-03,07]"
        );
        assert_eq!(compress(["n3", "n1", "n2", "n2"]), "n[1-3]");
        assert_eq!(compress(["web09", "web10", "web11"]), "web[09-11]");
        assert_eq!(compress(["n9", "n10"]), "n[9-10]");
        assert_eq!(compress(["n1", "n01"]), "n1,n01");
        assert_eq!(
            compress(["rack1-node01", "rack1-node02", "rack2-node01"]),
            "rack1-node[01-02],rack2-node01"
        );
        assert_eq!(
            compress(["web1:7022", "web2:7022", "web3:22", "web4"]),
            "web4,web3:22,web[1-2]:7022"
        );
        assert_eq!(
            compress(["a1.lab", "a2.lab", "a3.dev"]),
            "a3.dev,a[1-2].lab"
        );
        assert_eq!(
            compress(["::1", "[::2]:22", "local"]),
            "[::1],[::2]:22,local"
        );
        assert_eq!(compress(Vec::<String>::new()), "");
    }

    #[test]
    fn compress_of_expand_round_trips_examples() {
        for list in [
            "web[01-20]",
            "db[1,3-5]",
            "rack[1-2]-node[01-08]",
            "a,b[1-3]:22,[::1]:7,n[0-200]",
        ] {
            let hosts = names(list);
            let folded = compress(&hosts);
            let mut again = names(&folded);
            let mut hosts = hosts;
            hosts.sort();
            again.sort();
            assert_eq!(again, hosts, "{list} -> {folded}");
        }
        assert_eq!(compress(names("web[01-20]")), "web[01-20]");
    }
}
