//! `cbor::from_slice` on arbitrary bytes.
//!
//! Never panics; when the bytes decode, re-encoding is deterministic (a fixed
//! point that decodes to an equal value) and `is_deterministic` agrees.
#![no_main]

use fluxrig_msg::cbor::{self, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::DEFAULT;
    let Ok(value) = cbor::from_slice(data, limits) else {
        assert!(!cbor::is_deterministic(data, limits));
        return;
    };
    let bytes = cbor::to_vec(&value);
    assert!(bytes.len() <= data.len(), "re-encoding grew the item");
    let back = cbor::from_slice(&bytes, limits).expect("the re-encoding decodes");
    assert_eq!(back, value, "re-encoding decodes to a different value");
    assert_eq!(
        cbor::to_vec(&back),
        bytes,
        "the re-encoding is not a fixed point"
    );
    assert!(cbor::is_deterministic(&bytes, limits));
    assert_eq!(cbor::is_deterministic(data, limits), bytes == data);
});
