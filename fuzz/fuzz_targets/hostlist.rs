//! Hostlist expansion (`rsh-hostlist`), fed any text.
//!
//! Properties: expanding never panics and stays within its limit; the hosts
//! of a list that expands, folded back with `compress`, expand again to the
//! same set of hosts; and compressing that set again gives the same text
//! (the folded form is stable).
#![no_main]

use std::collections::BTreeSet;

use libfuzzer_sys::fuzz_target;

/// Enough hosts to reach every shape of range, few enough to run fast.
const MAX_HOSTS: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(hosts) = rsh_hostlist::expand_with_limit(list, MAX_HOSTS) else {
        return;
    };
    assert!(hosts.len() <= MAX_HOSTS);
    let names: BTreeSet<String> = hosts.iter().map(ToString::to_string).collect();
    assert_eq!(names.len(), hosts.len(), "expand drops repeats");
    let folded = rsh_hostlist::compress(&names);
    let again = rsh_hostlist::expand_with_limit(&folded, MAX_HOSTS)
        .unwrap_or_else(|err| panic!("{list:?} folded to {folded:?}, which fails: {err}"));
    let again: BTreeSet<String> = again.iter().map(ToString::to_string).collect();
    assert_eq!(names, again, "{list:?} folded to {folded:?}");
    assert_eq!(rsh_hostlist::compress(&again), folded);
});
