//! Malformed frames: each gives a specific error naming the item and the
//! byte offset, nothing panics, and no error text carries field content.

#![allow(clippy::unwrap_used)]

use fluxrig_iso8583::{
    DecodeErrorKind as K, EncodeErrorKind as EK, MessageBuilder, Place, Spec, bundled,
};

fn ascii() -> &'static Spec {
    bundled::bundled("iso8583-1987-ascii").unwrap().unwrap()
}

fn binary() -> &'static Spec {
    bundled::bundled("iso8583-1987-binary").unwrap().unwrap()
}

/// (frame, place, offset, kind)
fn corpus() -> Vec<(&'static str, Vec<u8>, Place, usize, K)> {
    vec![
        (
            "empty",
            b"".to_vec(),
            Place::Mti,
            0,
            K::Truncated { need: 4, have: 0 },
        ),
        (
            "mti not digits",
            b"01X0".to_vec(),
            Place::Mti,
            0,
            K::InvalidCharacter { index: 2 },
        ),
        (
            "bitmap cut short",
            b"01007000".to_vec(),
            Place::PrimaryBitmap,
            4,
            K::Truncated { need: 16, have: 4 },
        ),
        (
            "bitmap not hex",
            b"0100G000000000000000".to_vec(),
            Place::PrimaryBitmap,
            4,
            K::InvalidHex { index: 0 },
        ),
        (
            "secondary bitmap missing",
            b"01008000000000000000".to_vec(),
            Place::SecondaryBitmap,
            20,
            K::Truncated { need: 16, have: 0 },
        ),
        (
            "LLVAR prefix not a number",
            b"01004000000000000000x94111".to_vec(),
            Place::Element(2),
            20,
            K::BadLengthPrefix,
        ),
        (
            "LLVAR over its maximum",
            b"0100400000000000000020411111111111111111111".to_vec(),
            Place::Element(2),
            20,
            K::LengthOverMax { len: 20, max: 19 },
        ),
        (
            "LLVAR longer than the frame",
            b"010040000000000000001641111111".to_vec(),
            Place::Element(2),
            22,
            K::Truncated { need: 16, have: 8 },
        ),
        (
            "LLLVAR longer than the frame",
            b"010000000000000100009991234".to_vec(),
            Place::Element(48),
            23,
            K::Truncated { need: 999, have: 4 },
        ),
        (
            "numeric element with a letter",
            b"01002000000000000000A00000".to_vec(),
            Place::Element(3),
            20,
            K::InvalidCharacter { index: 0 },
        ),
        (
            "fixed element truncated",
            b"010030000000000000000000000000".to_vec(),
            Place::Element(4),
            26,
            K::Truncated { need: 12, have: 4 },
        ),
        (
            "control character in text",
            b"010000000000008000000000\x01123".to_vec(),
            Place::Element(41),
            20,
            K::InvalidCharacter { index: 4 },
        ),
        (
            "bytes after the last element",
            b"01002000000000000000000000XYZ".to_vec(),
            Place::Message,
            26,
            K::TrailingBytes { count: 3 },
        ),
        (
            "hex element with a non-hex character",
            b"0100000000000000100000000000000000Z0".to_vec(),
            Place::Element(52),
            20,
            K::InvalidHex { index: 14 },
        ),
        (
            // Found by the decode_iso8583 fuzz target: bit 1 set, secondary
            // bitmap all zeros; re-encoding would drop it.
            "empty secondary bitmap",
            b"0100F2200001234050000000000000000000000000000000000000000000000000000000000000000000000000000000006657281748974205916".to_vec(),
            Place::SecondaryBitmap,
            20,
            K::EmptySecondaryBitmap,
        ),
        (
            "hex LLLVAR of odd length",
            b"01000000000000000200003ABC".to_vec(),
            Place::Element(55),
            23,
            K::OddLength,
        ),
    ]
}

#[test]
fn malformed_frames_give_specific_errors() {
    for (what, frame, place, offset, kind) in corpus() {
        let e = ascii().decode(&frame).expect_err(what);
        assert_eq!(
            (e.place, e.offset, e.kind),
            (place, offset, kind),
            "{what}: {e}"
        );
    }
}

#[test]
fn error_text_names_place_and_offset_never_content() {
    let e = ascii()
        .decode(b"0100400000000000000016411111111111111X")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "element 2 at byte 22: invalid character at position 15"
    );
    let e = ascii()
        .decode(b"0100400000000000000020411111111111111111111")
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "element 2 at byte 20: length 20 is over the maximum of 19"
    );
    for (_, frame, ..) in corpus() {
        let text = ascii().decode(&frame).unwrap_err().to_string();
        assert!(!text.contains("4111"), "{text}");
    }
}

#[test]
fn undefined_element_and_size_limit() {
    // Element 1 set (secondary bitmap), then element 65 is defined; but a
    // dialect without element 77 refuses it.
    let y = "sdl: 1\nname: t\nversion: '1'\nmti: ascii\nbitmap: hex\nelements:\n  3: { name: PC, type: n, fixed: 6 }\n";
    let mut s = fluxrig_iso8583::sdl::load_str("t", y).unwrap();
    let e = s.decode(b"01001000000000000000").unwrap_err();
    assert_eq!(
        (e.place, e.offset, e.kind),
        (Place::Element(4), 20, K::UndefinedElement)
    );
    s.set_limits(fluxrig_iso8583::Limits { max_message: 10 });
    let e = s.decode(b"0100200000000000000000000").unwrap_err();
    assert_eq!(e.kind, K::TooLarge { size: 25, max: 10 });
}

#[test]
fn binary_dialect_truncation_points_never_panic() {
    let mut b = MessageBuilder::new();
    b.set_mti("0100")
        .set(2, "4111111111111111")
        .set(4, "000000001000")
        .set(52, "0011223344556677")
        .set(55, "9F020600000000100082025C00")
        .set(70, "301")
        .set(128, "0102030405060708");
    let wire = binary().encode_to_vec(&b).unwrap();
    binary().decode(&wire).unwrap();
    for cut in 0..wire.len() {
        let e = binary().decode(&wire[..cut]).unwrap_err();
        assert!(matches!(e.kind, K::Truncated { .. }), "cut {cut}: {e}");
        assert!(e.offset <= cut, "cut {cut}: {e}");
    }
    // Every single-byte corruption decodes or fails cleanly.
    for i in 0..wire.len() {
        for x in [0x00, 0x30, 0x39, 0x7f, 0xff] {
            let mut w = wire.clone();
            w[i] = x;
            let _ = binary().decode(&w);
        }
    }
}

#[test]
fn encode_errors_name_the_element_without_its_value() {
    let s = ascii();
    let cases: Vec<(u8, &str, EK)> = vec![
        (2, "41111111111111111111", EK::TooLong { len: 20, max: 19 }),
        (3, "12345X", EK::InvalidCharacter { index: 5 }),
        (
            4,
            "0000000000001",
            EK::WrongLength {
                len: 13,
                expected: 12,
            },
        ),
        (
            52,
            "0011",
            EK::WrongLength {
                len: 4,
                expected: 16,
            },
        ),
        (55, "ABC", EK::OddLength),
        (37, "héllo", EK::InvalidCharacter { index: 1 }),
    ];
    for (n, v, kind) in cases {
        let mut b = MessageBuilder::new();
        b.set_mti("0100").set(n, v);
        let e = s.encode_to_vec(&b).unwrap_err();
        assert_eq!((e.place, e.kind), (Place::Element(n), kind));
        assert!(!e.to_string().contains(v));
    }
    let mut b = MessageBuilder::new();
    b.set_mti("01A0");
    assert_eq!(s.encode_to_vec(&b).unwrap_err().kind, EK::BadMti);
    // Element 65 is defined in the 1987 dialects (as an opaque 8-byte item),
    // element 1 can never be set.
    let mut b = MessageBuilder::new();
    b.set_mti("0100").set(1, "x");
    assert!(!b.has(1));
}

/// Found by the decode_iso8583 fuzz target: ICC data (DE 55) sent as
/// lowercase hex in the ASCII dialect stays text, so that encoding the data
/// tree gives the very same bytes.
#[test]
fn lowercase_hex_tlv_stays_text_for_an_exact_reverse() {
    let s = ascii();
    let frame = b"01000000000000000200018"
        .iter()
        .chain(b"9f0206000000deadbe")
        .copied()
        .collect::<Vec<u8>>();
    let m = s.decode(&frame).unwrap();
    let v = fluxrig_iso8583::to_value(&m);
    assert_eq!(v.get("icc").unwrap().as_str(), Some("9f0206000000deadbe"));
    let mut out = Vec::new();
    fluxrig_iso8583::encode_value(s, &v, &mut out).unwrap();
    assert_eq!(out, frame);
}

mod random {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes decode or fail cleanly, in every bundled dialect.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            for (name, _) in fluxrig_iso8583::bundled::BUNDLED {
                let s = fluxrig_iso8583::bundled::bundled(name).unwrap().unwrap();
                if let Ok(m) = s.decode(&bytes) {
                    // Whatever decodes re-encodes to the same bytes, hex
                    // bitmap case aside.
                    let again = s.encode_to_vec(&m.to_builder()).unwrap();
                    prop_assert_eq!(again.len(), bytes.len());
                    let v = fluxrig_iso8583::to_value(&m);
                    let mut out = Vec::new();
                    fluxrig_iso8583::encode_value(s, &v, &mut out).unwrap();
                    prop_assert_eq!(out, again);
                }
            }
        }

        /// Valid-looking prefixes with random tails.
        #[test]
        fn prefixed_random_tails_never_panic(tail in proptest::collection::vec(any::<u8>(), 0..200)) {
            let s = fluxrig_iso8583::bundled::bundled("iso8583-1987-ascii").unwrap().unwrap();
            let mut frame = b"0100F23C000000000000".to_vec();
            frame.extend_from_slice(&tail);
            let _ = s.decode(&frame);
        }
    }
}
