//! `FluxMsg::from_cbor` on arbitrary bytes.
//!
//! Never panics; when the bytes decode, re-encoding is deterministic (a fixed
//! point that decodes to an equal message), `is_deterministic` agrees with
//! it, and the sequence decoder (`decode_prefix`) and the zero-copy decoder
//! (`from_bytes`) agree with `from_cbor`.
#![no_main]

use bytes::Bytes;
use fluxrig_msg::{DecodeError, FluxMsg, Limits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::DEFAULT;
    let full = FluxMsg::from_cbor(data);
    let prefix = FluxMsg::decode_prefix(data, limits);
    match (&full, &prefix) {
        (Ok(m), Ok((p, used))) => {
            assert_eq!(*used, data.len(), "prefix length of a whole message");
            assert_eq!(m, p, "decode_prefix disagrees with from_cbor");
        }
        (Err(DecodeError::TrailingBytes { offset }), Ok((_, used))) => {
            assert_eq!(offset, used, "trailing bytes start where the prefix ends");
        }
        (Err(a), Err(b)) => assert_eq!(a, b, "both decoders fail the same way"),
        (Ok(_), Err(e)) => panic!("from_cbor accepts what decode_prefix refuses: {e}"),
        (Err(e), Ok(_)) => panic!("decode_prefix accepts what from_cbor refuses: {e}"),
    }

    let shared = Bytes::copy_from_slice(data);
    assert_eq!(
        FluxMsg::from_bytes(&shared, limits),
        full,
        "from_bytes disagrees with from_cbor"
    );

    let Ok(msg) = full else {
        assert!(!FluxMsg::is_deterministic(data));
        return;
    };
    let bytes = msg.to_cbor();
    assert_eq!(
        msg.to_cbor(),
        bytes,
        "encoding is not a function of the message"
    );
    let back = FluxMsg::from_cbor(&bytes).expect("the re-encoding decodes");
    assert_eq!(back, msg, "re-encoding decodes to a different message");
    assert_eq!(
        back.to_cbor(),
        bytes,
        "the re-encoding is not a fixed point"
    );
    assert!(FluxMsg::is_deterministic(&bytes));
    assert_eq!(FluxMsg::is_deterministic(data), bytes == data);
});
