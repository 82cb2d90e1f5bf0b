//! The known_hosts parser, fed anything (bytes, invalid UTF-8 replaced).
//!
//! Properties: parsing never panics; parse → serialize (`host:port
//! fingerprint` per entry) → parse gives the same entries with no warnings;
//! every entry's host matches its own key (`check` is `Known`), and the
//! fingerprints listed for a host are exactly those of its entries.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsh_tls::{HostKeyStatus, KnownHosts};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let known = KnownHosts::parse(&text);
    let mut serialized = String::new();
    for host in known.hosts() {
        serialized.push_str(&format!("{} {}\n", host.host_port, host.fingerprint));
    }
    let again = KnownHosts::parse(&serialized);
    assert!(again.warnings().is_empty(), "{:?}", again.warnings());
    assert_eq!(known.hosts(), again.hosts());
    for host in known.hosts() {
        assert_eq!(
            known.check(&host.host_port, &host.fingerprint),
            HostKeyStatus::Known
        );
        let listed = known.fingerprints(&host.host_port);
        assert!(listed.contains(&host.fingerprint));
        assert!(listed.iter().all(|fp| known
            .hosts()
            .iter()
            .any(|h| h.host_port == host.host_port && h.fingerprint == *fp)));
    }
});
