//! Differential tests against pyiso8583, an independent implementation:
//! thousands of random valid messages per bundled dialect, packed by each
//! side and unpacked by the other, byte-identical.
//!
//! The 1987 dialects are checked against pyiso8583's own `default_ascii`
//! and `default` specs; the 1993 dialect (pyiso8583 ships none) against a
//! pyiso8583 spec translated from our element table.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;

use fluxrig_iso8583::{
    BitmapEncoding, CharType, Encoding, Length, MessageBuilder, PrefixEncoding, Spec, bundled,
    encode_value, get_element, to_value,
};
use fluxrig_test_support::python_script;
use serde_json::{Value as Json, json};

const CASES: usize = 3000;

/// SplitMix64: deterministic, good enough to spread test values.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick(&mut self, set: &[u8]) -> char {
        char::from(set[self.below(set.len())])
    }
}

const DIGITS: &[u8] = b"0123456789";
const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789ABCDEFabcdef";
const HEX_UPPER: &[u8] = b"0123456789ABCDEF";

/// A random valid text value for an element.
fn value(rng: &mut Rng, kind: CharType, enc: Encoding, length: Length) -> String {
    let mut units = match length {
        Length::Fixed(n) => n,
        Length::Var { max, .. } => {
            // Favour short values, reach the maximum now and then.
            if rng.below(10) == 0 {
                max
            } else {
                rng.below(max.min(40) + 1)
            }
        }
    };
    if enc == Encoding::Hex && units % 2 == 1 {
        units -= 1;
    }
    let printable: Vec<u8> = (0x20..0x7f).collect();
    match (kind, enc) {
        (CharType::B, Encoding::Binary) => (0..units * 2).map(|_| rng.pick(HEX_UPPER)).collect(),
        (CharType::B, _) => (0..units).map(|_| rng.pick(HEX)).collect(),
        (CharType::N, _) => (0..units).map(|_| rng.pick(DIGITS)).collect(),
        (CharType::Z, _) => (0..units).map(|_| rng.pick(b"0123456789=D")).collect(),
        (CharType::Xn, _) => (0..units)
            .map(|i| {
                if i == 0 {
                    rng.pick(b"CD")
                } else {
                    rng.pick(DIGITS)
                }
            })
            .collect(),
        (CharType::A | CharType::An, _) => (0..units).map(|_| rng.pick(ALNUM)).collect(),
        _ => (0..units).map(|_| rng.pick(&printable)).collect(),
    }
}

/// pyiso8583's spec dict for one of our dialects (ASCII prefixes only).
fn pyiso_spec(spec: &Spec) -> Json {
    let field = |enc: &str, len_type: u8, max: usize, desc: &str| json!({"data_enc": enc, "len_enc": "ascii", "len_type": len_type, "max_len": max, "desc": desc});
    let mut m = serde_json::Map::new();
    m.insert("h".into(), field("ascii", 0, 0, "header"));
    m.insert("t".into(), field("ascii", 0, 4, "mti"));
    let bm = if spec.bitmap_encoding() == BitmapEncoding::Binary {
        field("b", 0, 8, "bitmap")
    } else {
        field("ascii", 0, 16, "bitmap")
    };
    m.insert("p".into(), bm.clone());
    m.insert("1".into(), bm);
    for el in spec.elements() {
        let enc = if el.format.encoding == Encoding::Binary {
            "b"
        } else {
            "ascii"
        };
        let (len_type, max) = match el.format.length {
            Length::Fixed(n) => (0, n),
            Length::Var {
                digits,
                max,
                prefix,
            } => {
                assert_eq!(prefix, PrefixEncoding::Ascii);
                (digits, max)
            }
        };
        m.insert(el.number.to_string(), field(enc, len_type, max, &el.name));
    }
    Json::Object(m)
}

fn run(name: &str, pyiso: &Json, seed: u64) {
    let spec = bundled::bundled(name).unwrap().unwrap();
    let mut rng = Rng(seed);
    let numbers: Vec<u8> = spec
        .elements()
        .map(|e| e.number)
        // pyiso8583 reads element 65 as the tertiary bitmap.
        .filter(|&n| n != 65)
        .collect();
    let mut cases = Vec::with_capacity(CASES);
    let tmp = tempfile::NamedTempFile::new().unwrap();
    let mut file = std::io::BufWriter::new(tmp.reopen().unwrap());
    writeln!(file, "{}", json!({ "spec": pyiso })).unwrap();
    for _ in 0..CASES {
        let mti: String = (0..4).map(|_| rng.pick(DIGITS)).collect();
        let mut fields: BTreeMap<u8, String> = BTreeMap::new();
        // Anything from an empty message to one with most elements; every
        // other message has a secondary bitmap.
        let wanted = rng.below(30) + 1;
        let high = rng.below(2) == 0;
        for _ in 0..wanted {
            let n = numbers[rng.below(numbers.len())];
            if n > 64 && !high {
                continue;
            }
            let el = spec.element(n).unwrap();
            fields.insert(
                n,
                value(
                    &mut rng,
                    el.format.kind,
                    el.format.encoding,
                    el.format.length,
                ),
            );
        }
        let mut b = MessageBuilder::new();
        b.set_mti(&mti);
        for (n, v) in &fields {
            b.set(*n, v);
        }
        let wire = spec.encode_to_vec(&b).unwrap();
        let mut obj = serde_json::Map::new();
        obj.insert("t".into(), Json::String(mti.clone()));
        for (n, v) in &fields {
            obj.insert(n.to_string(), Json::String(v.clone()));
        }
        let hex = wire.iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        writeln!(file, "{}", json!({"fields": obj, "wire": hex})).unwrap();
        cases.push((mti, fields, wire));
    }
    file.flush().unwrap();
    let out = python_script("pyiso8583_check.py")
        .arg(tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{name}: pyiso8583 disagrees:\n{stderr}"
    );
    let lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(lines.len(), CASES, "{name}: {stderr}");
    for (i, (line, (mti, fields, wire))) in lines.iter().zip(&cases).enumerate() {
        let theirs: Json = serde_json::from_str(line).unwrap();
        let theirs = theirs["wire"].as_str().unwrap();
        let theirs: Vec<u8> = (0..theirs.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&theirs[k..k + 2], 16).unwrap())
            .collect();
        assert_eq!(
            &theirs,
            wire,
            "{name} case {}: pyiso8583 packs other bytes",
            i + 1
        );
        let m = spec
            .decode(&theirs)
            .unwrap_or_else(|e| panic!("{name} case {}: {e}", i + 1));
        assert_eq!(m.mti(), mti);
        let ours: BTreeMap<u8, String> = m
            .fields()
            .map(|f| (f.number(), f.text().into_owned()))
            .collect();
        assert_eq!(&ours, fields, "{name} case {}", i + 1);
        // The data tree holds every element at its one place and encodes
        // back to the same bytes.
        let tree = to_value(&m);
        for n in fields.keys() {
            assert!(
                get_element(spec, &tree, *n).is_some(),
                "{name} case {}: element {n} is not in the data tree",
                i + 1
            );
        }
        let mut again = Vec::new();
        encode_value(spec, &tree, &mut again)
            .unwrap_or_else(|e| panic!("{name} case {}: {e}", i + 1));
        assert_eq!(again, theirs, "{name} case {}: the data tree", i + 1);
    }
}

#[test]
fn iso8583_1987_ascii_matches_pyiso8583_default_ascii() {
    run("iso8583-1987-ascii", &json!("default_ascii"), 1);
}

#[test]
fn iso8583_1987_binary_matches_pyiso8583_default() {
    run("iso8583-1987-binary", &json!("default"), 2);
}

#[test]
fn iso8583_1993_ascii_matches_pyiso8583_with_the_same_table() {
    let spec = bundled::bundled("iso8583-1993-ascii").unwrap().unwrap();
    run("iso8583-1993-ascii", &pyiso_spec(spec), 3);
}

#[test]
fn translated_1987_tables_equal_pyiso8583_own_specs() {
    // Guards the translation used for 1993: applied to our 1987 dialects it
    // gives pyiso8583's own specs, field by field (sizes and encodings).
    for (name, theirs) in [
        ("iso8583-1987-ascii", "default_ascii"),
        ("iso8583-1987-binary", "default"),
    ] {
        let out = python_script("pyiso8583_check.py")
            .args(["--dump", theirs])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Json = serde_json::from_slice(&out.stdout).unwrap();
        let ours = pyiso_spec(bundled::bundled(name).unwrap().unwrap());
        let keys = ["data_enc", "len_enc", "len_type", "max_len"];
        for (k, t) in theirs.as_object().unwrap() {
            if k == "h" {
                continue;
            }
            for key in keys {
                assert_eq!(ours[k][key], t[key], "{name}: field {k} {key}");
            }
        }
        assert_eq!(
            ours.as_object().unwrap().len(),
            theirs.as_object().unwrap().len()
        );
    }
}
