//! Round trips, the data layout, masking and the hash, on the bundled dialects.

#![allow(clippy::unwrap_used)]

use fluxrig_iso8583::{MessageBuilder, Spec, bundled, encode_value, mask, to_value};
use fluxrig_msg::Value;

fn spec(name: &str) -> &'static Spec {
    bundled::bundled(name).unwrap().unwrap()
}

/// A typical 0100 with a test PAN.
fn auth(b: &mut MessageBuilder<'_>) {
    b.set_mti("0100")
        .set(2, "4111111111111111")
        .set(3, "000000")
        .set(4, "000000010000")
        .set(7, "1127101530")
        .set(11, "000123")
        .set(12, "101530")
        .set(13, "1127")
        .set(14, "2812")
        .set(18, "5999")
        .set(22, "051")
        .set(25, "00")
        .set(32, "123456")
        .set(35, "4111111111111111=28121011234567890")
        .set(37, "733110000123")
        .set(41, "TERM0001")
        .set(42, "MERCHANT0000001")
        .set(43, "FLUXRIG TEST SHOP        PARIS        FR")
        .set(49, "978")
        .set(52, "0123456789ABCDEF");
}

#[test]
fn pyiso8583_docstring_example_decodes() {
    let s = spec("iso8583-1987-ascii");
    let m = s
        .decode(b"02004010100000000000161234567890123456123456111")
        .unwrap();
    assert_eq!(m.mti(), "0200");
    assert_eq!(m.numbers().collect::<Vec<_>>(), [2, 12, 20]);
    assert_eq!(m.field(12).unwrap().as_str(), Some("123456"));
}

#[test]
fn round_trip_through_builder_and_value_on_every_bundled_dialect() {
    for (name, _) in bundled::BUNDLED {
        let s = spec(name);
        let mut b = MessageBuilder::new();
        auth(&mut b);
        if name.contains("1993") {
            b.set(12, "261127101530");
        }
        let wire = s.encode_to_vec(&b).unwrap();
        let m = s.decode(&wire).unwrap();
        // Pass-through re-encode is byte-identical.
        assert_eq!(s.encode_to_vec(&m.to_builder()).unwrap(), wire, "{name}");
        // So is the data tree.
        let v = to_value(&m);
        assert_eq!(v.get("mti").unwrap().as_str(), Some("0100"));
        assert_eq!(
            v.get("card").unwrap().get("pan").unwrap().as_str(),
            Some("4111111111111111")
        );
        let mut again = Vec::new();
        encode_value(s, &v, &mut again).unwrap();
        assert_eq!(again, wire, "{name}");
    }
}

#[test]
fn data_layout_uses_aliases_and_de_keys() {
    let s = spec("iso8583-1987-ascii");
    let mut b = MessageBuilder::new();
    b.set_mti("0800")
        .set(7, "1127101530")
        .set(11, "000001")
        .set(70, "301")
        .set(48, "hello");
    let v = to_value(&s.decode(&s.encode_to_vec(&b).unwrap()).unwrap());
    assert_eq!(
        v.get("trace").unwrap().get("stan").unwrap().as_str(),
        Some("000001")
    );
    assert_eq!(v.get("de48").unwrap().as_str(), Some("hello"));
    assert_eq!(
        v.get("network").unwrap().get("code").unwrap().as_str(),
        Some("301")
    );
}

#[test]
fn icc_data_is_tlv_when_well_formed_and_exact() {
    let s = spec("iso8583-1987-binary");
    let mut b = MessageBuilder::new();
    b.set_mti("0100")
        .set(55, "9F02060000000100005A084111111111111111");
    let wire = s.encode_to_vec(&b).unwrap();
    let mut v = to_value(&s.decode(&wire).unwrap());
    let icc = v.get("icc").unwrap();
    let Value::Array(items) = icc else {
        panic!("icc is {icc:?}")
    };
    assert_eq!(items.len(), 2);
    assert_eq!(items[0].get("tag").unwrap().as_str(), Some("9F02"));
    let mut again = Vec::new();
    encode_value(s, &v, &mut again).unwrap();
    assert_eq!(again, wire);
    // Masking hides the PAN tag, keeps the amount.
    mask::mask_data(s, &mut v);
    let Value::Array(items) = v.get("icc").unwrap() else {
        panic!()
    };
    assert_eq!(
        items[1].get("value").unwrap().as_str(),
        Some("411111******1111")
    );
    assert_eq!(
        items[0].get("value").unwrap().as_str(),
        Some("000000010000")
    );
    // Not TLV: stays text.
    let mut b = MessageBuilder::new();
    b.set_mti("0100").set(55, "9F0206000000");
    let wire = s.encode_to_vec(&b).unwrap();
    let v = to_value(&s.decode(&wire).unwrap());
    assert_eq!(v.get("icc").unwrap().as_str(), Some("9F0206000000"));
}

#[test]
fn masking_covers_pan_track_and_pin() {
    let s = spec("iso8583-1987-ascii");
    let mut b = MessageBuilder::new();
    auth(&mut b);
    let wire = s.encode_to_vec(&b).unwrap();
    let mut v = to_value(&s.decode(&wire).unwrap());
    mask::mask_data(s, &mut v);
    let text = format!("{v:?}");
    assert!(!text.contains("4111111111111111"), "{text}");
    assert!(text.contains("411111******1111"));
    assert!(!text.contains("0123456789ABCDEF"));
    assert!(!text.contains("2812"), "expiry is masked: {text}");
}

#[test]
fn short_fixed_values_are_padded_by_type() {
    let s = spec("iso8583-1987-ascii");
    let mut b = MessageBuilder::new();
    b.set_mti("0200").set(4, "100").set(41, "T1");
    let wire = s.encode_to_vec(&b).unwrap();
    let m = s.decode(&wire).unwrap();
    assert_eq!(m.field(4).unwrap().as_str(), Some("000000000100"));
    assert_eq!(m.field(41).unwrap().as_str(), Some("T1      "));
}

#[test]
fn hash_ignores_formatting_key_order_and_spelled_out_defaults() {
    let a = "sdl: 1\nname: t\nversion: '1'\nmti: ascii\nbitmap: hex\nelements:\n  2: { name: PAN, type: n, var: LL, max: 19 }\n  3: { name: PC, type: n, fixed: 6 }\n";
    let b = "# comment\nversion: \"1\"\nname: t\nsdl: 1\nbitmap: hex\nmti: ascii\nelements:\n  3:\n    fixed: 6\n    type: n\n    name: PC\n    encoding: ascii\n  2: {name: PAN, max: 19, var: LL, prefix: ascii, type: n}\n";
    let c = a.replace("max: 19", "max: 18");
    let ha = fluxrig_iso8583::sdl::load_str("a", a).unwrap().hash();
    let hb = fluxrig_iso8583::sdl::load_str("b", b).unwrap().hash();
    let hc = fluxrig_iso8583::sdl::load_str("c", &c).unwrap().hash();
    assert_eq!(ha, hb);
    assert_ne!(ha, hc);
}

/// A dialect exercising BCD, EBCDIC, binary prefixes and subfields.
const MIXED: &str = r#"
sdl: 1
name: mixed
version: "1"
mti: bcd
bitmap: binary
defaults: { text: ebcdic, numeric: bcd, binary: binary, prefix: bcd }
elements:
  2:  { name: PAN, type: n, var: LL, max: 19, alias: card.pan, sensitivity: pan }
  3:  { name: PC, type: n, fixed: 6 }
  4:  { name: Amount, type: n, fixed: 12, alias: amount.transaction }
  11: { name: STAN, type: n, fixed: 6, alias: trace.stan }
  35: { name: Track 2, type: z, var: LL, max: 37, sensitivity: track }
  41: { name: Terminal, type: ans, fixed: 8, alias: terminal.id }
  43: { name: Name, type: ans, var: LL, max: 40, prefix: binary, sensitivity: pii }
  48:
    name: Additional
    type: ans
    var: LLL
    max: 999
    encoding: ascii
    prefix: ascii
    subfields:
      layout: positional
      fields:
        1: { name: Channel, type: an, fixed: 2 }
        2: { name: Reference, type: ans, var: LL, max: 40 }
  62:
    name: Private bitmapped
    type: b
    var: LLL
    max: 200
    subfields:
      layout: bitmap
      fields:
        1: { name: A, type: n, fixed: 4 }
        3: { name: C, type: ans, var: LL, max: 20, encoding: ascii, prefix: ascii }
"#;

#[test]
fn bcd_ebcdic_binary_prefixes_and_subfields_round_trip() {
    let mixed = fluxrig_iso8583::sdl::load_str("mixed", MIXED).unwrap();
    let mut b = MessageBuilder::new();
    b.set_mti("0200")
        .set(2, "411111111111111") // odd digit count: a filler nibble
        .set(3, "000000")
        .set(4, "12500") // padded to 12 digits
        .set(11, "4711")
        .set(35, "4111111111111111=2812101")
        .set(41, "TERM01")
        .set(43, "Jane Doe, Paris")
        .set(48, "WB12REF-00000001")
        .set(62, "A000000000000000123430324142");
    let wire = mixed.encode_to_vec(&b).unwrap();
    // MTI in BCD, binary bitmap, PAN: BCD prefix 0x15 then 8 bytes (left filler).
    assert_eq!(&wire[..2], b"\x02\x00");
    assert_eq!(&wire[10..11], b"\x15");
    assert_eq!(&wire[11..19], b"\x04\x11\x11\x11\x11\x11\x11\x11");
    let msg = mixed.decode(&wire).unwrap();
    assert_eq!(msg.field(2).unwrap().text(), "411111111111111");
    assert_eq!(msg.field(4).unwrap().text(), "000000012500");
    assert_eq!(msg.field(35).unwrap().text(), "4111111111111111=2812101");
    assert_eq!(msg.field(41).unwrap().text(), "TERM01  ");
    assert_eq!(msg.field(41).unwrap().wire()[0], 0xe3, "EBCDIC T");
    assert_eq!(mixed.encode_to_vec(&msg.to_builder()).unwrap(), wire);
    let mut v = to_value(&msg);
    let de48 = v.get("de48").unwrap();
    assert_eq!(de48.get("sf1").unwrap().as_str(), Some("WB"));
    assert_eq!(de48.get("sf2").unwrap().as_str(), Some("REF-00000001"));
    let de62 = v.get("de62").unwrap();
    assert_eq!(de62.get("sf1").unwrap().as_str(), Some("1234"));
    assert_eq!(de62.get("sf3").unwrap().as_str(), Some("AB"));
    let mut again = Vec::new();
    encode_value(&mixed, &v, &mut again).unwrap();
    assert_eq!(again, wire);
    mask::mask_data(&mixed, &mut v);
    let shown = format!("{v:?}");
    assert!(
        !shown.contains("Jane") && !shown.contains("4111111111111111"),
        "{shown}"
    );
    // Converting between dialects: the ASCII dialect re-encodes BCD/EBCDIC wire data.
    let ascii = spec("iso8583-1987-ascii");
    let mut t = msg.to_builder();
    t.remove(43).remove(62).remove(35);
    let out = ascii.encode_to_vec(&t).unwrap();
    let back = ascii.decode(&out).unwrap();
    assert_eq!(back.field(2).unwrap().as_str(), Some("411111111111111"));
    assert_eq!(back.field(41).unwrap().as_str(), Some("TERM01  "));
}

/// `to_value` builds the whole tree at once; `set_element` inserts one
/// element at a time: the same tree either way.
#[test]
fn to_value_builds_the_tree_set_element_builds() {
    for (name, _) in bundled::BUNDLED {
        let s = spec(name);
        let mut b = MessageBuilder::new();
        b.set_mti("0200")
            .set(2, "4111111111111111")
            .set(3, "000000")
            .set(4, "000000012500")
            .set(11, "004711")
            .set(37, "123456789012")
            .set(41, "TERM0001")
            .set(49, "978")
            .set(70, "301");
        let wire = s.encode_to_vec(&b).unwrap();
        let m = s.decode(&wire).unwrap();
        let mut root = fluxrig_msg::Map::new();
        root.insert("mti", "0200");
        let mut expected = Value::Map(root);
        for f in m.fields() {
            assert!(
                fluxrig_iso8583::set_element(s, &mut expected, f.number(), Value::text(f.text())),
                "{name}: element {}",
                f.number()
            );
        }
        assert_eq!(to_value(&m), expected, "{name}");
    }
}

/// An alias written as one key at the top (`"card.pan"`) finds its element
/// too, beside the nested form.
#[test]
fn encode_value_takes_an_alias_written_as_one_key() {
    use fluxrig_msg::Map;
    let s = spec("iso8583-1987-ascii");
    let mut root = Map::new();
    root.insert("mti", "0100");
    root.insert("card.pan", "4111111111111111");
    let mut trace = Map::new();
    trace.insert("stan", "000042");
    root.insert("trace", Value::Map(trace));
    let mut out = Vec::new();
    encode_value(s, &Value::Map(root), &mut out).unwrap();
    let m = s.decode(&out).unwrap();
    assert_eq!(m.numbers().collect::<Vec<_>>(), [2, 11]);
    assert_eq!(m.field(11).unwrap().as_str(), Some("000042"));
}

#[test]
fn encode_value_finds_elements_at_their_one_place() {
    use fluxrig_iso8583::{EncodeErrorKind, Place};
    use fluxrig_msg::Map;
    let s = spec("iso8583-1987-ascii");
    let mut card = Map::new();
    card.insert("pan", "4111111111111111");
    let mut root = Map::new();
    root.insert("mti", "0100");
    root.insert("card", Value::Map(card));
    root.insert("de48", "hello");
    root.insert("route", "issuer-a"); // unknown keys are ignored
    let mut out = Vec::new();
    encode_value(s, &Value::Map(root.clone()), &mut out).unwrap();
    let m = s.decode(&out).unwrap();
    assert_eq!(m.numbers().collect::<Vec<_>>(), [2, 48]);
    // An aliased element under de<n>, an undefined element: errors.
    let mut bad = root.clone();
    bad.insert("de2", "4111111111111111");
    let e = encode_value(s, &Value::Map(bad), &mut Vec::new()).unwrap_err();
    assert_eq!(e.place, Place::Element(2));
    let mut bad = root.clone();
    bad.insert("de129", "x");
    assert_eq!(
        encode_value(s, &Value::Map(bad), &mut Vec::new())
            .unwrap_err()
            .kind,
        EncodeErrorKind::UndefinedElement
    );
    // A number where text belongs.
    let mut bad = root;
    bad.insert("de48", 7);
    let e = encode_value(s, &Value::Map(bad), &mut Vec::new()).unwrap_err();
    assert_eq!(
        (e.place, e.kind),
        (Place::Element(48), EncodeErrorKind::WrongShape("text"))
    );
}

#[test]
fn usage_rules_of_the_message_type() {
    use fluxrig_iso8583::{Usage, UsageViolation};
    let s = spec("iso8583-1987-ascii");
    let mut b = MessageBuilder::new();
    b.set_mti("0100")
        .set(3, "000000")
        .set(4, "000000000100")
        .set(39, "00");
    let wire = s.encode_to_vec(&b).unwrap();
    let msg = s.decode(&wire).unwrap();
    assert_eq!(
        s.check_usage(&msg),
        [
            UsageViolation {
                element: 7,
                rule: Usage::Mandatory
            },
            UsageViolation {
                element: 11,
                rule: Usage::Mandatory
            },
            UsageViolation {
                element: 39,
                rule: Usage::Forbidden
            },
            UsageViolation {
                element: 41,
                rule: Usage::Mandatory
            },
            UsageViolation {
                element: 49,
                rule: Usage::Mandatory
            },
        ]
    );
    assert_eq!(s.response_mti("0420"), Some("0430"));
    assert_eq!(s.message("0800").unwrap().echo, [7, 11, 70]);
}

#[test]
fn classified_places_are_visited_with_their_labels() {
    let sdl = MIXED.replace(
        "2: { name: Reference, type: ans, var: LL, max: 40 }",
        "2: { name: Reference, type: ans, var: LL, max: 40, sensitivity: pii }",
    );
    let mixed = fluxrig_iso8583::sdl::load_str("mixed", &sdl).unwrap();
    let mut b = MessageBuilder::new();
    b.set_mti("0200")
        .set(2, "411111111111111")
        .set(35, "4111111111111111=2812101")
        .set(41, "TERM01")
        .set(48, "WB12REF-00000001");
    let wire = mixed.encode_to_vec(&b).unwrap();
    let mut v = to_value(&mixed.decode(&wire).unwrap());
    let mut seen = Vec::new();
    mask::visit_classified(&mixed, &mut v, &mut |label, s, _| {
        seen.push(format!("{label}:{}", s.as_str()));
    });
    // DE 43 is classified but absent; DE 48's sf1 is not classified.
    assert_eq!(seen, ["card.pan:pan", "de35:track", "de48.sf2:pii"]);
    mask::mask_data(&mixed, &mut v);
    let de48 = v.get("de48").unwrap();
    assert_eq!(de48.get("sf1").unwrap().as_str(), Some("WB"));
    assert_eq!(de48.get("sf2").unwrap().as_str(), Some("************"));
}
