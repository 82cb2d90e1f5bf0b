//! The greeting, fed anything.
//!
//! Properties: decoding never panics; a greeting that decodes re-encodes to
//! the same magic and version with the reserved bytes zeroed (they are
//! ignored on receipt); whatever the magic, `decode` refuses exactly the
//! greetings that do not start with it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsh_proto::{Hello, HELLO_LEN, MAGIC};

fuzz_target!(|data: &[u8]| {
    let Some(bytes) = data.get(..HELLO_LEN) else {
        return;
    };
    let Ok(bytes) = <[u8; HELLO_LEN]>::try_from(bytes) else {
        return;
    };
    match Hello::decode(&bytes) {
        Ok(hello) => {
            assert_eq!(bytes[..4], MAGIC);
            let again = hello.encode();
            assert_eq!(again[..6], bytes[..6]);
            assert_eq!(again[6..], [0, 0]);
            assert_eq!(Hello::decode(&again).ok(), Some(hello));
            // Must not panic, whichever version it names.
            let _ = hello.check_version();
        }
        Err(err) => {
            assert_ne!(bytes[..4], MAGIC);
            let _ = err.to_string();
        }
    }
});
