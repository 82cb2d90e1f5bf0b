//! The greeting, fed anything.
//!
//! Properties: decoding never panics; `decode` refuses exactly the greetings
//! that do not start with the magic; a greeting that decodes re-encodes to
//! the same bytes, except a highest version below the lowest, which reads
//! (and re-encodes) as the lowest; and negotiation is symmetric: both sides
//! of an exchange with our greeting agree on the version, or both refuse,
//! and an agreed version lies in both ranges.
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
            let lowest = u16::from_be_bytes([bytes[4], bytes[5]]);
            let highest = u16::from_be_bytes([bytes[6], bytes[7]]);
            assert_eq!(
                u16::from_be_bytes([again[6], again[7]]),
                highest.max(lowest)
            );
            assert_eq!(Hello::decode(&again).ok(), Some(hello));

            let ours = Hello::current();
            let from_us = ours.negotiate(hello);
            let from_them = hello.negotiate(ours);
            assert_eq!(from_us.is_ok(), from_them.is_ok());
            if let (Ok(a), Ok(b)) = (&from_us, &from_them) {
                assert_eq!(a, b);
                assert!(*a >= lowest && *a <= highest.max(lowest));
                assert!(*a >= ours.version && *a <= ours.max_version);
            }
        }
        Err(err) => {
            assert_ne!(bytes[..4], MAGIC);
            let _ = err.to_string();
        }
    }
});
