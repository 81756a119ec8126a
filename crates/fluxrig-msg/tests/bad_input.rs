//! The bad-input corpus: each case gives its specific error; none panics.

#![allow(clippy::unwrap_used)]

use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{DecodeError, EntityId, FluxId, FluxMsg, Hop, Map, Value};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn sample() -> FluxMsg {
    let mut m = FluxMsg::new(
        FluxId::from_raw(123_456_789),
        Value::Map(
            [("amount", Value::from(1250)), ("stan", "000123".into())]
                .into_iter()
                .collect(),
        ),
    );
    m.meta.insert("conn", "42");
    m.raw = Some(vec![0x30; 40].into());
    m.path.push(Hop {
        gear: EntityId::from_raw(5),
        port: "out".into(),
        ts: 99,
    });
    m.ts = 1_767_225_600_000_000_000;
    m
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = sample().to_cbor();
    for cut in 0..bytes.len() {
        let err = FluxMsg::from_cbor(&bytes[..cut]).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated { .. } | DecodeError::LengthExceedsInput { .. }
            ),
            "cut at {cut}: {err}"
        );
    }
}

#[test]
fn declared_lengths_beyond_the_input_are_refused_before_allocating() {
    // A byte string, a text string, an array and a map that claim 2^64-1.
    for (bytes, declared) in [
        ("5b ffffffffffffffff 00", u64::MAX),
        ("7b ffffffffffffffff 61", u64::MAX),
        ("9b ffffffffffffffff 00", u64::MAX),
        ("bb 7fffffffffffffff 00 00", i64::MAX as u64),
        ("5a 00010000 00", 65536),
    ] {
        let err = cbor::from_slice(&hex(bytes), Limits::DEFAULT).unwrap_err();
        match err {
            DecodeError::LengthExceedsInput {
                offset: 0,
                declared: d,
                ..
            } => assert_eq!(d, declared),
            other => panic!("{bytes}: {other}"),
        }
    }
}

#[test]
fn deep_nesting_is_refused() {
    let mut bytes = vec![0x81; 100];
    bytes.push(0x00);
    let err = cbor::from_slice(&bytes, Limits::DEFAULT).unwrap_err();
    assert_eq!(
        err,
        DecodeError::TooDeep {
            offset: 64,
            limit: 64
        }
    );
    // Within the limit it decodes.
    let mut ok = vec![0x81; 60];
    ok.push(0x00);
    assert!(cbor::from_slice(&ok, Limits::DEFAULT).is_ok());
}

#[test]
fn invalid_utf8_is_refused() {
    let err = cbor::from_slice(&hex("82 01 62 c328"), Limits::DEFAULT).unwrap_err();
    assert_eq!(err, DecodeError::InvalidUtf8 { offset: 2 });
}

#[test]
fn indefinite_lengths_are_refused() {
    for (bytes, offset) in [
        ("5f 41 00 ff", 0),
        ("7f 61 61 ff", 0),
        ("82 00 9f ff", 2),
        ("bf ff", 0),
    ] {
        let err = cbor::from_slice(&hex(bytes), Limits::DEFAULT).unwrap_err();
        assert_eq!(err, DecodeError::IndefiniteLength { offset }, "{bytes}");
    }
}

#[test]
fn duplicate_keys_are_refused() {
    let err = cbor::from_slice(&hex("a3 6161 01 6162 02 6161 03"), Limits::DEFAULT).unwrap_err();
    assert_eq!(err, DecodeError::DuplicateKey { offset: 7 });
    // Also when the duplicate's encoding differs but means the same key.
    let err = cbor::from_slice(&hex("a2 01 00 1801 00"), Limits::DEFAULT).unwrap_err();
    assert_eq!(err, DecodeError::DuplicateKey { offset: 3 });
    // In the envelope, in meta and among extensions.
    let err = FluxMsg::from_cbor(&hex("a2 6269 64 01 6269 64 02")).unwrap_err();
    assert_eq!(err, DecodeError::DuplicateKey { offset: 5 });
    let err =
        FluxMsg::from_cbor(&hex("a2 6269 64 01 646d657461 a2 6161 6178 6161 6179")).unwrap_err();
    assert_eq!(err, DecodeError::DuplicateKey { offset: 15 });
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = sample().to_cbor();
    let len = bytes.len();
    bytes.push(0x00);
    assert_eq!(
        FluxMsg::from_cbor(&bytes).unwrap_err(),
        DecodeError::TrailingBytes { offset: len }
    );
}

#[test]
fn oversized_messages_are_refused() {
    let mut m = sample();
    m.raw = Some(vec![0; 5 << 20].into());
    let bytes = m.to_cbor();
    assert!(
        matches!(FluxMsg::from_cbor(&bytes), Err(DecodeError::TooLarge { limit, .. }) if limit == 4 << 20)
    );
    let small = Limits {
        max_size: 64,
        ..Limits::DEFAULT
    };
    assert!(matches!(
        FluxMsg::from_cbor_with(&sample().to_cbor(), small),
        Err(DecodeError::TooLarge { .. })
    ));
    // In a sequence, too: the prefix decoder never looks past the limit.
    assert!(matches!(
        FluxMsg::decode_prefix(&bytes, Limits::DEFAULT),
        Err(DecodeError::TooLarge { .. })
    ));
}

#[test]
fn too_many_hops_are_refused() {
    let mut m = sample();
    m.path = (0..300)
        .map(|i| Hop {
            gear: EntityId::from_raw(i),
            port: "out".into(),
            ts: i,
        })
        .collect();
    let err = FluxMsg::from_cbor(&m.to_cbor()).unwrap_err();
    assert!(
        matches!(err, DecodeError::TooManyHops { limit: 256, .. }),
        "{err}"
    );
}

#[test]
fn malformed_items_are_refused() {
    for (bytes, reason) in [
        ("1c", "reserved additional information"),
        ("5e", "reserved additional information"),
        ("fc", "reserved additional information"),
        ("1f", "reserved additional information"),
        ("f8 10", "two-byte simple value below 32"),
        ("f8 17", "two-byte simple value below 32"),
        ("ff", "unexpected break"),
    ] {
        match cbor::from_slice(&hex(bytes), Limits::DEFAULT).unwrap_err() {
            DecodeError::Malformed {
                offset: 0,
                reason: r,
            } => assert_eq!(r, reason, "{bytes}"),
            other => panic!("{bytes}: {other}"),
        }
    }
}

#[test]
fn schema_errors_name_the_field() {
    let cases = [
        ("01", "<envelope>"),
        ("a1 01 01", "<envelope>"),
        ("a0", "id"),
        ("a1 6269 64 20", "id"),
        ("a1 6269 64 6131", "id"),
        ("a2 6269 64 01 646d657461 a1 6161 01", "meta.a"),
        ("a2 6269 64 01 6470617468 81 82 01 01", "path[0]"),
        ("a2 6269 64 01 6470617468 81 83 01 01 01", "path[0].port"),
        ("a2 6269 64 01 657472616365 43 010203", "trace"),
        ("a2 6269 64 01 65666c616773 1b 0000000100000000", "flags"),
        ("a2 6269 64 01 63726177 6161", "raw"),
    ];
    for (bytes, field) in cases {
        match FluxMsg::from_cbor(&hex(bytes)).unwrap_err() {
            DecodeError::Schema { field: f, .. } => assert_eq!(f, field, "{bytes}"),
            other => panic!("{bytes}: {other}"),
        }
    }
}

#[test]
fn errors_never_echo_field_values() {
    // A PAN-like value inside a message that fails later must not appear in the error.
    let mut m = FluxMsg::new(
        FluxId::from_raw(1),
        Value::Map(Map::from_iter([("pan", "4111111111111111")])),
    );
    m.meta.insert("k", "4111111111111111");
    let mut bytes = m.to_cbor();
    bytes.push(0xff);
    for cut in 0..bytes.len() {
        if let Err(e) = FluxMsg::from_cbor(&bytes[..cut]) {
            assert!(!e.to_string().contains("4111"), "{e}");
        }
    }
}
