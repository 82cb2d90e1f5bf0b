//! The authorized_keys parser, fed anything (as the server reads it: bytes,
//! invalid UTF-8 replaced).
//!
//! Properties: parsing never panics; every warning names a line that
//! exists; parse → serialize (`fingerprint comment` per key) → parse gives
//! the same keys, in the same order, with no warnings.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsh_tls::AuthorizedKeys;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (keys, warnings) = AuthorizedKeys::parse(&text);
    let lines = text.lines().count();
    for w in &warnings {
        assert!(
            w.line >= 1 && w.line <= lines,
            "warning for line {}",
            w.line
        );
    }
    let mut serialized = String::new();
    for key in keys.keys() {
        serialized.push_str(&key.fingerprint.to_string());
        if !key.comment.is_empty() {
            serialized.push(' ');
            serialized.push_str(&key.comment);
        }
        serialized.push('\n');
    }
    let (again, again_warnings) = AuthorizedKeys::parse(&serialized);
    assert!(again_warnings.is_empty(), "{again_warnings:?}");
    assert_eq!(keys.keys(), again.keys());
    for key in keys.keys() {
        assert!(again.lookup(&key.fingerprint).is_some());
    }
});
