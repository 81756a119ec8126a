//! ISO 8583 decode on arbitrary bytes, with every bundled dialect.
//!
//! Never panics; whatever decodes re-encodes (pass-through and through the
//! fluxMsg data tree) to the same bytes, up to the case of hex bitmaps, and
//! decodes again to the same elements; masking and framing never panic.
#![no_main]

use fluxrig_iso8583::framing::{Framing, LengthPrefix};
use fluxrig_iso8583::{BitmapEncoding, bundled, encode_value, mask, to_value};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for (name, _) in bundled::BUNDLED {
        let spec = bundled::bundled(name).expect("bundled").expect("loads");
        let Ok(msg) = spec.decode(data) else {
            continue;
        };
        let again = spec
            .encode_to_vec(&msg.to_builder())
            .expect("a decoded message re-encodes");
        // The same bytes, except that hex bitmaps are written uppercase.
        let mut expected = data.to_vec();
        if spec.bitmap_encoding() == BitmapEncoding::Hex {
            let bitmaps = if msg.numbers().any(|n| n > 64) {
                32
            } else {
                16
            };
            expected[4..4 + bitmaps].make_ascii_uppercase();
        }
        assert_eq!(again, expected, "{name}: re-encoding changes the bytes");
        let back = spec.decode(&again).expect("the re-encoding decodes");
        assert!(
            back.fields()
                .zip(msg.fields())
                .all(|(a, b)| a.wire() == b.wire())
        );
        let mut value = to_value(&msg);
        let mut via_value = Vec::new();
        encode_value(spec, &value, &mut via_value).expect("the data tree encodes");
        assert_eq!(
            via_value, again,
            "{name}: the data tree is not an exact reverse"
        );
        mask::mask_data(spec, &mut value);
    }
    for prefix in [
        LengthPrefix::Binary2Be,
        LengthPrefix::Binary2Le,
        LengthPrefix::Ascii4,
    ] {
        let framing = Framing {
            prefix,
            header_len: 5,
            max_frame: 4096,
        };
        let mut rest = data;
        while let Ok(Some((frame, used))) = framing.cut(rest) {
            assert_eq!(
                frame.header.len() + frame.message.len() + prefix.width(),
                used
            );
            rest = &rest[used..];
        }
    }
});
