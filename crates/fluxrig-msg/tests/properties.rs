//! Round-trip and determinism properties of values and messages.

#![allow(clippy::unwrap_used)]

use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{FluxMsg, Map, Value, json};
use fluxrig_test_support::strategies;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn values_round_trip(v in strategies::value()) {
        let bytes = cbor::to_vec(&v);
        let back = cbor::from_slice(&bytes, Limits::DEFAULT).unwrap();
        prop_assert_eq!(&back, &v);
        prop_assert!(cbor::is_deterministic(&bytes, Limits::DEFAULT));
    }

    #[test]
    fn messages_round_trip(m in strategies::msg()) {
        let bytes = m.to_cbor();
        let back = FluxMsg::from_cbor(&bytes).unwrap();
        prop_assert_eq!(&back, &m);
        // encode(decode(b)) == b for deterministic b.
        prop_assert_eq!(back.to_cbor(), bytes.clone());
        prop_assert!(FluxMsg::is_deterministic(&bytes));
        // The zero-copy decoder agrees.
        let shared = bytes::Bytes::from(bytes);
        prop_assert_eq!(FluxMsg::from_bytes(&shared, Limits::DEFAULT).unwrap(), m);
    }

    #[test]
    fn json_form_round_trips(m in strategies::json_msg()) {
        let text = json::to_json_string(&m).unwrap();
        let back = json::from_json_str(&text).unwrap();
        prop_assert_eq!(back.to_cbor(), m.to_cbor(), "{}", text);
    }

    #[test]
    fn insertion_order_never_changes_the_bytes(
        entries in proptest::collection::vec((strategies::value(), strategies::value()), 0..12)
            .prop_flat_map(|e| { let n = e.len(); (Just(e.clone()), Just(e).prop_shuffle(), Just(n)) })
    ) {
        let (a, b, _) = entries;
        let a: Map = a.into_iter().collect();
        let b: Map = b.into_iter().collect();
        // Later duplicates replace earlier ones, so compare only when the
        // shuffled input had the same set of final entries.
        if a == b {
            prop_assert_eq!(cbor::to_vec(&Value::Map(a)), cbor::to_vec(&Value::Map(b)));
        } else {
            let ka: Vec<_> = a.iter().map(|(k, _)| k.clone()).collect();
            let kb: Vec<_> = b.iter().map(|(k, _)| k.clone()).collect();
            prop_assert_eq!(ka, kb, "same keys in the same order whatever the insertion order");
        }
    }

    /// Whatever well-formed bytes decode to, re-encoding it is deterministic
    /// and means the same.
    #[test]
    fn reencoding_any_decodable_bytes_is_stable(
        m in strategies::msg(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
    ) {
        let mut bytes = m.to_cbor();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        if let Ok(d) = FluxMsg::from_cbor(&bytes) {
            let again = d.to_cbor();
            prop_assert!(FluxMsg::is_deterministic(&again));
            prop_assert_eq!(FluxMsg::from_cbor(&again).unwrap(), d);
        }
    }

    /// Text decoding agrees with `std::str::from_utf8` on every string,
    /// whatever mix of ASCII, other UTF-8, invalid bytes and binary items
    /// (which break the decoder's runs of ASCII) surrounds it.
    #[test]
    fn text_validation_matches_std(
        pieces in proptest::collection::vec(
            prop_oneof![
                "[ -~]{0,30}".prop_map(|s| (true, s.into_bytes())),
                ".{0,8}".prop_map(|s| (true, s.into_bytes())),
                proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| (true, b)),
                proptest::collection::vec(any::<u8>(), 0..12).prop_map(|b| (false, b)),
            ],
            0..12,
        )
    ) {
        let mut bytes = vec![0x80 | u8::try_from(pieces.len()).unwrap()];
        let mut expected = Ok(Vec::new());
        for (is_text, b) in &pieces {
            let at = bytes.len();
            bytes.extend(cbor::to_vec(&Value::Bytes(b.clone().into())));
            if *is_text {
                bytes[at] |= 0x20; // byte string head (major 2) to text head (major 3)
            }
            if let Ok(items) = &mut expected {
                match (is_text, std::str::from_utf8(b)) {
                    (true, Ok(s)) => items.push(Value::text(s)),
                    (true, Err(_)) => expected = Err(fluxrig_msg::DecodeError::InvalidUtf8 { offset: at }),
                    (false, _) => items.push(Value::Bytes(b.clone().into())),
                }
            }
        }
        let got = cbor::from_slice(&bytes, Limits::DEFAULT);
        prop_assert_eq!(got, expected.map(Value::Array));
    }

    /// Never a panic, whatever the bytes.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = FluxMsg::from_cbor(&bytes);
        let _ = cbor::from_slice(&bytes, Limits::DEFAULT);
    }
}

#[test]
fn shuffled_insertion_gives_identical_message_bytes() {
    let keys = [
        "amount",
        "currency",
        "pan_token",
        "stan",
        "mti",
        "a",
        "zz",
        "terminal",
    ];
    let mut forward = FluxMsg::new(fluxrig_msg::FluxId::from_raw(7), Value::Null);
    let mut backward = forward.clone();
    let f: Map = keys.iter().map(|k| (*k, 1)).collect();
    let b: Map = keys.iter().rev().map(|k| (*k, 1)).collect();
    forward.data = Value::Map(f);
    backward.data = Value::Map(b);
    for k in keys {
        forward.meta.insert(k, "v");
    }
    for k in keys.iter().rev() {
        backward.meta.insert(*k, "v");
    }
    assert_eq!(forward.to_cbor(), backward.to_cbor());
}
