//! RFC 8949 Appendix A: every example valid under the deterministic rules
//! encodes to exactly the listed bytes and decodes back; the others decode
//! (or are rejected, for indefinite lengths) as the profile says.

#![allow(clippy::unwrap_used)]

use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{DecodeError, Integer, Map, Simple, Value};

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn int(i: i128) -> Value {
    Value::Integer(Integer::try_from(i).unwrap())
}

fn text(s: &str) -> Value {
    Value::text(s)
}

fn bytes(b: &[u8]) -> Value {
    Value::Bytes(b.to_vec().into())
}

fn array(items: Vec<Value>) -> Value {
    Value::Array(items)
}

fn map(entries: Vec<(Value, Value)>) -> Value {
    Value::Map(entries.into_iter().collect::<Map>())
}

fn tag(t: u64, v: Value) -> Value {
    Value::Tag(t, Box::new(v))
}

/// (value, deterministic encoding) for every deterministic example.
fn deterministic_examples() -> Vec<(Value, &'static str)> {
    vec![
        (int(0), "00"),
        (int(1), "01"),
        (int(10), "0a"),
        (int(23), "17"),
        (int(24), "1818"),
        (int(25), "1819"),
        (int(100), "1864"),
        (int(1000), "1903e8"),
        (int(1_000_000), "1a000f4240"),
        (int(1_000_000_000_000), "1b000000e8d4a51000"),
        (int(18_446_744_073_709_551_615), "1bffffffffffffffff"),
        (
            tag(2, bytes(&hex("010000000000000000"))),
            "c249010000000000000000",
        ),
        (int(-18_446_744_073_709_551_616), "3bffffffffffffffff"),
        (
            tag(3, bytes(&hex("010000000000000000"))),
            "c349010000000000000000",
        ),
        (int(-1), "20"),
        (int(-10), "29"),
        (int(-100), "3863"),
        (int(-1000), "3903e7"),
        (Value::Float(0.0), "f90000"),
        (Value::Float(-0.0), "f98000"),
        (Value::Float(1.0), "f93c00"),
        (Value::Float(1.1), "fb3ff199999999999a"),
        (Value::Float(1.5), "f93e00"),
        (Value::Float(65504.0), "f97bff"),
        (Value::Float(100_000.0), "fa47c35000"),
        (Value::Float(3.402_823_466_385_288_6e38), "fa7f7fffff"),
        (Value::Float(1.0e300), "fb7e37e43c8800759c"),
        (Value::Float(5.960_464_477_539_063e-8), "f90001"),
        (Value::Float(0.000_061_035_156_25), "f90400"),
        (Value::Float(-4.0), "f9c400"),
        (Value::Float(-4.1), "fbc010666666666666"),
        (Value::Float(f64::INFINITY), "f97c00"),
        (Value::Float(f64::NAN), "f97e00"),
        (Value::Float(f64::NEG_INFINITY), "f9fc00"),
        (Value::Bool(false), "f4"),
        (Value::Bool(true), "f5"),
        (Value::Null, "f6"),
        (Value::Undefined, "f7"),
        (Value::Simple(Simple::new(16).unwrap()), "f0"),
        (Value::Simple(Simple::new(255).unwrap()), "f8ff"),
        (
            tag(0, text("2013-03-21T20:04:00Z")),
            "c074323031332d30332d32315432303a30343a30305a",
        ),
        (tag(1, int(1_363_896_240)), "c11a514b67b0"),
        (
            tag(1, Value::Float(1_363_896_240.5)),
            "c1fb41d452d9ec200000",
        ),
        (tag(23, bytes(&[1, 2, 3, 4])), "d74401020304"),
        (tag(24, bytes(&hex("6449455446"))), "d818456449455446"),
        (
            tag(32, text("http://www.example.com")),
            "d82076687474703a2f2f7777772e6578616d706c652e636f6d",
        ),
        (bytes(&[]), "40"),
        (bytes(&[1, 2, 3, 4]), "4401020304"),
        (text(""), "60"),
        (text("a"), "6161"),
        (text("IETF"), "6449455446"),
        (text("\"\\"), "62225c"),
        (text("\u{00fc}"), "62c3bc"),
        (text("\u{6c34}"), "63e6b0b4"),
        (text("\u{10151}"), "64f0908591"),
        (array(vec![]), "80"),
        (array(vec![int(1), int(2), int(3)]), "83010203"),
        (
            array(vec![
                int(1),
                array(vec![int(2), int(3)]),
                array(vec![int(4), int(5)]),
            ]),
            "8301820203820405",
        ),
        (
            array((1..=25).map(int).collect()),
            "98190102030405060708090a0b0c0d0e0f101112131415161718181819",
        ),
        (map(vec![]), "a0"),
        (map(vec![(int(1), int(2)), (int(3), int(4))]), "a201020304"),
        (
            map(vec![
                (text("a"), int(1)),
                (text("b"), array(vec![int(2), int(3)])),
            ]),
            "a26161016162820203",
        ),
        (
            array(vec![text("a"), map(vec![(text("b"), text("c"))])]),
            "826161a161626163",
        ),
        (
            map(["a", "b", "c", "d", "e"]
                .into_iter()
                .map(|k| (text(k), text(&k.to_uppercase())))
                .collect()),
            "a56161614161626142616361436164614461656145",
        ),
    ]
}

#[test]
fn deterministic_examples_encode_exactly_and_decode_back() {
    for (value, expected) in deterministic_examples() {
        let expected = hex(expected);
        assert_eq!(cbor::to_vec(&value), expected, "encoding {value:?}");
        let decoded = cbor::from_slice(&expected, Limits::DEFAULT).unwrap();
        assert_eq!(decoded, value, "decoding {expected:02x?}");
        assert!(cbor::is_deterministic(&expected, Limits::DEFAULT));
    }
}

#[test]
fn map_entries_inserted_in_reverse_give_the_same_bytes() {
    let forward: Map = ["a", "b", "c", "d", "e"]
        .into_iter()
        .map(|k| (k, 1))
        .collect();
    let reverse: Map = ["e", "d", "c", "b", "a"]
        .into_iter()
        .map(|k| (k, 1))
        .collect();
    assert_eq!(
        cbor::to_vec(&Value::Map(forward)),
        cbor::to_vec(&Value::Map(reverse))
    );
}

/// Examples whose bytes are well-formed but not the preferred serialisation:
/// they decode to the same value as the preferred form, and re-encode to it.
#[test]
fn non_preferred_floats_decode_and_normalise() {
    for (bytes, preferred) in [
        ("fa7f800000", "f97c00"),
        ("fa7fc00000", "f97e00"),
        ("faff800000", "f9fc00"),
        ("fb7ff0000000000000", "f97c00"),
        ("fb7ff8000000000000", "f97e00"),
        ("fbfff0000000000000", "f9fc00"),
    ] {
        let bytes = hex(bytes);
        let v = cbor::from_slice(&bytes, Limits::DEFAULT).unwrap();
        assert_eq!(cbor::to_vec(&v), hex(preferred));
        assert!(!cbor::is_deterministic(&bytes, Limits::DEFAULT));
    }
}

#[test]
fn non_shortest_integers_and_unsorted_maps_normalise() {
    for (bytes, preferred) in [
        ("1800", "00"),
        ("190017", "17"),
        ("1b0000000000000001", "01"),
        ("5800", "40"),
        ("a2616201616100", "a2616100616201"),
        ("a261610019000100", "a20100616100"),
    ] {
        let bytes = hex(bytes);
        let v = cbor::from_slice(&bytes, Limits::DEFAULT).unwrap();
        assert_eq!(cbor::to_vec(&v), hex(preferred), "{bytes:02x?}");
        assert!(!cbor::is_deterministic(&bytes, Limits::DEFAULT));
    }
}

#[test]
fn indefinite_length_examples_are_rejected() {
    for (bytes, offset) in [
        ("5f42010243030405ff", 0),
        ("7f657374726561646d696e67ff", 0),
        ("9fff", 0),
        ("9f018202039f0405ffff", 0),
        ("9f01820203820405ff", 0),
        ("83018202039f0405ff", 5),
        ("83019f0203ff820405", 2),
        ("826161bf61626163ff", 3),
        ("bf61610161629f0203ffff", 0),
        ("bf6346756ef563416d7421ff", 0),
    ] {
        let err = cbor::from_slice(&hex(bytes), Limits::DEFAULT).unwrap_err();
        assert_eq!(err, DecodeError::IndefiniteLength { offset }, "{bytes}");
    }
}
