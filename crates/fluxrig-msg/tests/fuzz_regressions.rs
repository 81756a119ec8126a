//! Inputs from fuzzing (`fuzz/`, see CONTRIBUTING.md): what the fuzz
//! targets found, and the edge cases among their seeds, each checked with
//! the property its target checks.
//!
//! Bytes are inline as hex so a test never depends on a corpus file.

#![allow(clippy::unwrap_used)]

use fluxrig_msg::cbor::{self, Limits};
use fluxrig_msg::{DecodeError, FluxMsg, json};

fn hex(s: &str) -> Vec<u8> {
    let s: String = s.split_whitespace().collect();
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The `decode_msg` property: decoders agree, re-encoding is a
/// deterministic fixed point, `is_deterministic` tells whether the input
/// already was. Returns the re-encoding.
fn decode_msg_property(input: &[u8]) -> Vec<u8> {
    let msg = FluxMsg::from_cbor(input).unwrap();
    let (prefix, used) = FluxMsg::decode_prefix(input, Limits::DEFAULT).unwrap();
    assert_eq!((&prefix, used), (&msg, input.len()));
    let shared = bytes::Bytes::copy_from_slice(input);
    assert_eq!(FluxMsg::from_bytes(&shared, Limits::DEFAULT).unwrap(), msg);
    let bytes = msg.to_cbor();
    let back = FluxMsg::from_cbor(&bytes).unwrap();
    assert_eq!(back, msg);
    assert_eq!(back.to_cbor(), bytes);
    assert_eq!(FluxMsg::is_deterministic(input), bytes == input);
    bytes
}

/// The `json_msg` property: what parses has a CBOR form that decodes to the
/// same message, and a JSON form that parses back to it.
fn json_msg_property(text: &str) -> FluxMsg {
    let msg = json::from_json_str(text).unwrap();
    let bytes = msg.to_cbor();
    assert_eq!(FluxMsg::from_cbor(&bytes).unwrap(), msg);
    assert!(FluxMsg::is_deterministic(&bytes));
    let shown = json::to_json_string(&msg).unwrap();
    assert_eq!(json::from_json_str(&shown).unwrap(), msg);
    msg
}

// -- findings ---------------------------------------------------------------

/// `n` levels of arrays, maps and tags (in turn) around `null`, as JSON.
fn nested_json(n: usize) -> String {
    (0..n).fold("null".to_owned(), |inner, level| match level % 3 {
        0 => format!("[{inner}]"),
        1 => format!(r#"{{"k": {inner}}}"#),
        _ => format!(r#"{{"$tag": 1, "$value": {inner}}}"#),
    })
}

/// json_msg: the JSON form accepted `data` nested deeper than the CBOR
/// decoder allows, so `fluxrig msg encode` could write CBOR that
/// `fluxrig msg decode` (and every other reader) refuses with `TooDeep`.
/// The JSON form now has the decoder's limit.
#[test]
fn json_nesting_is_limited_as_in_cbor() {
    for n in [62, 63] {
        json_msg_property(&format!(r#"{{"id": "1", "data": {}}}"#, nested_json(n)));
        json_msg_property(&format!(
            r#"{{"id": "1", "ext": {{"x": {}}}}}"#,
            nested_json(n)
        ));
    }
    for n in [64, 65, 100] {
        let err = json::from_json_str(&format!(r#"{{"id": "1", "data": {}}}"#, nested_json(n)))
            .unwrap_err();
        assert!(
            err.to_string().contains("nesting deeper than 64 levels"),
            "{n}: {err}"
        );
    }
    // The bytes the fuzz target produced from 64 nested arrays: refused.
    let mut deep = hex("a2 6269 64 01 6464617461");
    deep.extend([0x81; 64]);
    deep.push(0xf6);
    assert_eq!(
        FluxMsg::from_cbor(&deep).unwrap_err(),
        DecodeError::TooDeep {
            offset: 73,
            limit: 64
        }
    );
}

/// Same shape as the nesting finding, for `path`: more hops than the
/// decoder's limit (256) must not be accepted from JSON either.
#[test]
fn json_hops_are_limited_as_in_cbor() {
    let path = |n: usize| {
        let hops = vec![r#"{"gear": "1", "port": "out", "ts": 2}"#; n].join(",");
        format!(r#"{{"id": "1", "path": [{hops}]}}"#)
    };
    assert_eq!(json_msg_property(&path(256)).path.len(), 256);
    let err = json::from_json_str(&path(257)).unwrap_err();
    assert!(err.to_string().contains("more than 256 hops"), "{err}");
}

// -- seeds: well-formed spellings the deterministic form normalises ---------

#[test]
fn seed_unsorted_envelope_keys_are_normalised() {
    // {"ts": 5, "id": 1}
    let out = decode_msg_property(&hex("a2 6274 73 05 6269 64 01"));
    assert_eq!(out, hex("a2 6269 64 01 6274 73 05"));
}

#[test]
fn seed_long_heads_and_long_floats_are_normalised() {
    // {"id": 1 in a 9-byte head, "data": 1.5 as a double}
    let out = decode_msg_property(&hex(
        "a2 6269 64 1b 0000000000000001 64 64617461 fb 3ff8000000000000",
    ));
    assert_eq!(out, hex("a2 6269 64 01 6464617461 f9 3e00"));
}

#[test]
fn seed_defaults_spelled_out_are_dropped() {
    // {"id": 1, "ts": 0, "flags": 0}
    let out = decode_msg_property(&hex("a3 6269 64 01 6274 73 00 65 666c616773 00"));
    assert_eq!(out, hex("a1 6269 64 01"));
}

#[test]
fn seed_extensions_sort_around_envelope_fields() {
    // {"a": -1, "id": 1, "zzzzzz": {}}: an extension key shorter than every
    // envelope key goes first, a longer one last.
    let input = hex("a3 6161 20 6269 64 01 66 7a7a7a7a7a7a a0");
    assert_eq!(decode_msg_property(&input), input);
}

#[test]
fn seed_empty_strings_and_zero_hop() {
    // {"id": 1, "meta": {"": ""}, "path": [[0, "", 0]]}
    let input = hex("a3 6269 64 01 646d657461 a1 60 60 6470617468 81 83 00 60 00");
    assert_eq!(decode_msg_property(&input), input);
}

#[test]
fn seed_value_edge_cases_round_trip() {
    for (v, hex_bytes) in [
        ("-2^64", "3b ffffffffffffffff"),
        ("2^64-1", "1b ffffffffffffffff"),
        ("NaN", "f9 7e00"),
        ("-0.0", "f9 8000"),
        ("simple(255)", "f8 ff"),
        ("tag 1", "c1 1a 69559680"),
        ("mixed keys", "a5 0a f6 20 f7 42 0102 f5 6161 f4 80 00"),
    ] {
        let bytes = hex(hex_bytes);
        let value = cbor::from_slice(&bytes, Limits::DEFAULT).unwrap();
        assert_eq!(cbor::to_vec(&value), bytes, "{v}");
        assert!(cbor::is_deterministic(&bytes, Limits::DEFAULT), "{v}");
    }
}

#[test]
fn seed_json_specials_round_trip() {
    let msg = json_msg_property(
        r#"{"id": "18446744073709551615", "data": [{"$bytes": "AQI="},
            {"$tag": 1, "$value": -1.5}, {"$simple": 23}, {"$simple": 255},
            {"$float": "NaN"}, {"$int": "-18446744073709551616"}, 1e300, -0.0,
            {"$bytes": 1, "x": 2}, "\u00e9\ud83d\ude00"],
          "ext": {"future": {"a": [1, 2.5]}}}"#,
    );
    assert_eq!(msg.extensions().count(), 1);
}

#[test]
fn errors_are_the_same_from_every_decoder() {
    // Cut inside `path`: from_cbor and decode_prefix report the same.
    for (input, offset) in [
        (hex("a2 6269 64 01 6470617468 81 83 01 60"), 11), // hop of 3 in 2 bytes
        (hex("a2 6269 64 01 6470617468 81 83 01 60 19"), 15), // ts head cut
    ] {
        let full = FluxMsg::from_cbor(&input).unwrap_err();
        let prefix = FluxMsg::decode_prefix(&input, Limits::DEFAULT).unwrap_err();
        assert_eq!(full, prefix);
        assert_eq!(full.offset(), offset, "{full}");
    }
}
