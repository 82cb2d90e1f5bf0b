//! Property tests: folding and expanding are inverse on sets of hosts.

use std::collections::BTreeSet;

use proptest::prelude::*;
use rsh_hostlist::{compress, expand};

fn expand_set(list: &str) -> BTreeSet<String> {
    expand(list)
        .unwrap_or_else(|e| panic!("{list:?} must expand: {e}"))
        .iter()
        .map(ToString::to_string)
        .collect()
}

/// A host as a fleet would name it: text, a number (padded or not), more
/// text, maybe a port; or a name without digits; or an IPv6 address.
fn host() -> impl Strategy<Value = String> {
    let numbered = (
        prop::sample::select(vec!["web", "db", "n", "rack1-node", "a.b-", ""]),
        0u64..300,
        0usize..4,
        prop::sample::select(vec!["", ".lab", "-x", ".d1"]),
        prop::option::of(prop::sample::select(vec![22u16, 7022])),
    )
        .prop_map(|(prefix, n, pad, suffix, port)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{prefix}{n:0pad$}{suffix}{port}")
        });
    let plain = prop::sample::select(vec![
        "alpha",
        "beta.lab",
        "gw:22",
        "[::1]",
        "[fe80::2]:7022",
    ])
    .prop_map(str::to_owned);
    prop_oneof![4 => numbered, 1 => plain]
}

/// A hostlist expression: entries of text and small bracketed ranges.
fn expression() -> impl Strategy<Value = String> {
    let range = (0u64..120, 0u64..6, 0usize..4, 1u64..3).prop_map(|(lo, len, pad, step)| {
        let hi = lo + len;
        if len == 0 {
            format!("{lo:0pad$}")
        } else if step > 1 {
            format!("{lo:0pad$}-{hi:0pad$}/{step}")
        } else {
            format!("{lo:0pad$}-{hi:0pad$}")
        }
    });
    let group = prop::collection::vec(range, 1..4).prop_map(|r| format!("[{}]", r.join(",")));
    let entry = (
        prop::sample::select(vec!["web", "n", "db-", "x.y"]),
        group.clone(),
        prop::sample::select(vec!["", "-r", ".lab"]),
        prop::option::of(group),
        prop::option::of(prop::sample::select(vec![22u16, 7022])),
    )
        .prop_map(|(a, g1, b, g2, port)| {
            let port = port.map(|p| format!(":{p}")).unwrap_or_default();
            format!("{a}{g1}{b}{}{port}", g2.unwrap_or_default())
        });
    prop::collection::vec(entry, 1..4).prop_map(|e| e.join(","))
}

proptest! {
    /// expand(compress(set)) == set.
    #[test]
    fn expand_of_compress_is_the_set(hosts in prop::collection::btree_set(host(), 0..60)) {
        let folded = compress(&hosts);
        let back = if hosts.is_empty() { BTreeSet::new() } else { expand_set(&folded) };
        prop_assert_eq!(back, hosts, "folded: {}", folded);
    }

    /// compress(expand(x)) expands to the same set as x, and compress does
    /// not depend on the order of its input.
    #[test]
    fn compress_of_expand_expands_back(list in expression()) {
        let hosts: Vec<String> = expand(&list)
            .unwrap_or_else(|e| panic!("{list:?}: {e}"))
            .iter()
            .map(ToString::to_string)
            .collect();
        let folded = compress(&hosts);
        let set: BTreeSet<String> = hosts.iter().cloned().collect();
        prop_assert_eq!(expand_set(&folded), set, "folded: {}", folded);
        let reversed: Vec<&String> = hosts.iter().rev().collect();
        prop_assert_eq!(compress(reversed), folded);
    }

}
