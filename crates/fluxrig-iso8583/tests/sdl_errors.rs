//! The SDL loader: strict, every problem reported with `file:line:col`.

#![allow(clippy::unwrap_used)]

use fluxrig_iso8583::sdl::load_str;

fn problems(yaml: &str) -> String {
    load_str("bad.yaml", yaml).unwrap_err().to_string()
}

const HEAD: &str = "sdl: 1\nname: t\nversion: '1'\nmti: ascii\nbitmap: hex\n";

#[test]
fn unknown_keys_are_errors_with_position() {
    let e = problems(&format!(
        "{HEAD}elements:\n  2: {{ name: PAN, type: n, var: LL, max: 19, colour: red }}\n"
    ));
    assert!(e.starts_with("bad.yaml:7:"), "{e}");
    assert!(e.contains("colour"), "{e}");
}

#[test]
fn yaml_syntax_errors_have_position() {
    let e = problems("sdl: 1\nname: [unclosed\n");
    assert!(e.starts_with("bad.yaml:"), "{e}");
    assert!(!e.starts_with("bad.yaml:0:0"), "{e}");
}

#[test]
fn every_semantic_problem_is_reported_with_its_position() {
    let yaml = format!(
        "{HEAD}elements:
  1: {{ name: Bitmap, type: b, fixed: 8 }}
  2: {{ name: PAN, type: n, var: LL, max: 190, alias: card.pan }}
  3: {{ name: PC, type: n, fixed: 6, var: LL }}
  4: {{ name: Amount, type: n, fixed: 12, alias: card.pan }}
  5: {{ name: X, type: ans, fixed: 3, encoding: bcd }}
  6: {{ name: Y, type: an, fixed: 2, alias: de6 }}
  7: {{ name: Z, type: n, fixed: 2, alias: card }}
  8: {{ name: W, type: n, fixed: 2, alias: card.pan_x }}
  999: {{ name: Big, type: n, fixed: 2 }}
messages:
  \"0100\": {{ response: \"0110\", mandatory: [2, 77], forbidden: [2] }}
"
    );
    let e = problems(&yaml);
    let expected = "\
bad.yaml:7:6: element 1 is the secondary bitmap: the codec writes it, do not define it
bad.yaml:8:42: element 2: max must be 1..=99 for a LL prefix in ascii
bad.yaml:8:54: alias `card.pan` of element 2 nests under alias `card` of element 7
bad.yaml:9:34: element 3: give either `fixed` or `var`, not both
bad.yaml:10:49: alias `card.pan` is already used by element 2
bad.yaml:11:48: element 5: encoding `bcd` does not fit type `ans`
bad.yaml:12:44: alias `de6` starts with a reserved key (`mti`, `de<n>`)
bad.yaml:14:43: alias `card.pan_x` of element 8 nests under alias `card` of element 7
bad.yaml:15:8: element key `999` is not a number in 2..=128
bad.yaml:17:23: response `0110` of message 0100 is not listed under messages
bad.yaml:17:46: message 0100: element 77 is not defined
bad.yaml:17:63: message 0100: element 2 is listed twice";
    assert_eq!(e, expected);
}

#[test]
fn hex_and_pad_rules() {
    let e = problems(&format!(
        "{HEAD}elements:\n  52: {{ name: PIN, type: b, fixed: 15, encoding: hex }}\n  3: {{ name: PC, type: n, fixed: 6, pad: {{ side: left, char: '00' }} }}\n"
    ));
    assert_eq!(
        e,
        "bad.yaml:7:36: element 52: a hex-encoded fixed length must be even\n\
         bad.yaml:8:62: element 3: pad char must be one printable ASCII character (a hex digit for BCD)"
    );
}

#[test]
fn bundled_dialects_load() {
    for (name, yaml) in fluxrig_iso8583::bundled::BUNDLED {
        let s = load_str(name, yaml).unwrap();
        assert_eq!(s.name(), *name);
        let request = if name.contains("1993") {
            "1100"
        } else {
            "0100"
        };
        assert!(s.response_mti(request).is_some());
    }
}
