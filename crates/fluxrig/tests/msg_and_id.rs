//! `fluxrig msg` and `fluxrig id` as a user runs them.

#![allow(clippy::unwrap_used)]

use assert_cmd::Command;
use predicates::prelude::*;

fn fluxrig() -> Command {
    Command::cargo_bin("fluxrig").unwrap()
}

const MSG: &str = r#"{"id":"42","ref":"41","src":"144115188075855873","trace":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","meta":{"conn":"7","route":"a"},"data":{"amount":1250,"rate":1.5,"pan":{"$bytes":"AQI="},"items":[1,"x",null,true]},"flags":4,"raw":"MDEwMA==","path":[{"gear":"2","port":"out","ts":5}],"ts":1767225600000000000}"#;

#[test]
fn encode_then_decode_gives_the_json_back() {
    let cbor = fluxrig()
        .args(["msg", "encode"])
        .write_stdin(MSG)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = fluxrig()
        .args(["msg", "decode"])
        .write_stdin(cbor.clone())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let want: serde_json::Value = serde_json::from_str(MSG).unwrap();
    assert_eq!(got, want);
    fluxrig()
        .args(["msg", "check"])
        .write_stdin(cbor)
        .assert()
        .success()
        .stdout("deterministic\n");
}

#[test]
fn key_order_in_json_does_not_change_the_bytes() {
    let a = r#"{"id":"1","data":{"b":1,"a":2,"cc":{"y":1,"x":2}},"meta":{"z":"1","a":"2"}}"#;
    let b = r#"{"meta":{"a":"2","z":"1"},"data":{"cc":{"x":2,"y":1},"a":2,"b":1},"id":"1"}"#;
    let ea = fluxrig()
        .args(["msg", "encode"])
        .write_stdin(a)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let eb = fluxrig()
        .args(["msg", "encode"])
        .write_stdin(b)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    assert_eq!(ea, eb);
}

#[test]
fn lines_mode_is_a_cbor_sequence() {
    let input = "{\"id\":\"1\",\"data\":1}\n\n{\"id\":\"2\",\"data\":\"two\"}\n{\"id\":\"3\"}\n";
    let seq = fluxrig()
        .args(["msg", "encode", "--lines"])
        .write_stdin(input)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    // Three items back to back: a1 62 6964 01 ... decode them one by one.
    let out = fluxrig()
        .args(["msg", "decode", "--lines"])
        .write_stdin(seq)
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert_eq!(
        text,
        "{\"id\":\"1\",\"data\":1}\n{\"id\":\"2\",\"data\":\"two\"}\n{\"id\":\"3\"}\n"
    );
}

#[test]
fn invalid_json_exits_2_naming_the_field() {
    for (input, needle) in [
        (r#"{"id":"1","tss":5}"#, "field `tss`: unknown field"),
        (r#"{"id":1}"#, "field `id`"),
        (r#"{"data":1}"#, "field `id`: required field is missing"),
        (r#"{"id":"1","meta":{"a":1}}"#, "field `meta.a`"),
        (r#"{"id":"1","raw":"!!"}"#, "field `raw`: invalid base64"),
        (r#"{"id":"1","flags":4294967296}"#, "field `flags`"),
        (r#"{"id":"1","trace":"00-00"}"#, "field `trace`"),
        (
            r#"{"id":"1","path":[{"gear":"1","port":"o"}]}"#,
            "field `path[0].ts`",
        ),
        (r#"{"id":"1","data":{"x":{"$bytes":5}}}"#, "field `data.x`"),
        (r#"{"id":"1""#, "invalid JSON at line 1"),
    ] {
        fluxrig()
            .args(["msg", "encode"])
            .write_stdin(input)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(needle));
    }
}

#[test]
fn invalid_line_names_its_line() {
    fluxrig()
        .args(["msg", "encode", "--lines"])
        .write_stdin("{\"id\":\"1\"}\n{\"id\":\"x\"}\n")
        .assert()
        .code(2)
        .stderr(predicate::str::contains("line 2: field `id`"));
}

#[test]
fn bad_cbor_exits_2_with_offset() {
    fluxrig()
        .args(["msg", "decode"])
        .write_stdin(vec![0xa1, 0x62, b'i', b'd'])
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "truncated input: an item is cut off at byte 4",
        ));
    // The second message of a sequence is cut short: its offset is in the whole input.
    let mut seq = vec![0xa1, 0x62, b'i', b'd', 0x01];
    seq.extend_from_slice(&[0xa1, 0x62, b'i', b'd', 0x5f]);
    fluxrig()
        .args(["msg", "decode", "--lines"])
        .write_stdin(seq)
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "message 2: indefinite-length item at byte 9",
        ));
}

#[test]
fn check_reports_non_deterministic_bytes() {
    // {"id": 1} with the id in a needlessly long head.
    fluxrig()
        .args(["msg", "check"])
        .write_stdin(vec![0xa1, 0x62, b'i', b'd', 0x18, 0x01])
        .assert()
        .code(1)
        .stderr(predicate::str::contains("not deterministic"));
}

#[test]
fn id_new_prints_ascending_ids_for_the_machine() {
    let out = fluxrig()
        .args(["id", "new", "--machine", "9", "--count", "1000"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let ids: Vec<u64> = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ids.len(), 1000);
    assert!(ids.windows(2).all(|w| w[0] < w[1]));
    assert!(ids.iter().all(|id| id & 0xffff == 9));
}

#[test]
fn id_new_with_state_continues_across_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("ids.state");
    let run = || -> Vec<u64> {
        let out = fluxrig()
            .args(["id", "new", "--count", "500", "--state"])
            .arg(&state)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect()
    };
    let first = run();
    let second = run();
    assert!(second[0] > *first.last().unwrap());
}

#[test]
fn id_decode_shows_time_sequence_and_machine() {
    // tick 1000 (2 s after the epoch), sequence 5, machine 300
    let id: u64 = (1000 << 24) | (5 << 16) | 0x12c; // machine 300
    let out = fluxrig()
        .args(["id", "decode", "--json", &id.to_string()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        got,
        serde_json::json!({
            "id": id.to_string(),
            "machine": 300,
            "sequence": 5,
            "time": "2026-01-01T00:00:02.000Z",
        })
    );
    fluxrig()
        .args(["id", "decode", &id.to_string()])
        .assert()
        .success()
        .stdout(format!(
            "id        {id}\ntime      2026-01-01T00:00:02.000Z\nsequence  5\nmachine   300\n"
        ));
}

#[test]
fn id_decode_entity() {
    let id: u64 = (2 << 56) | (513 << 40) | 0x63; // sequence 99
    let out = fluxrig()
        .args(["id", "decode", "--entity", "--json", &id.to_string()])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let got: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(
        got,
        serde_json::json!({"id": id.to_string(), "machine": 513, "sequence": 99, "type": "gear"})
    );
    fluxrig()
        .args(["id", "decode", "--entity", "99"])
        .assert()
        .code(2);
    fluxrig()
        .args(["id", "decode", "not-a-number"])
        .assert()
        .code(2);
    fluxrig()
        .args(["id", "decode", &u64::MAX.to_string()])
        .assert()
        .code(2);
}

#[test]
fn every_command_has_help_with_an_example() {
    for args in [
        vec!["msg", "encode", "--help"],
        vec!["msg", "decode", "--help"],
        vec!["msg", "check", "--help"],
        vec!["id", "new", "--help"],
        vec!["id", "decode", "--help"],
    ] {
        fluxrig()
            .args(&args)
            .assert()
            .success()
            .stdout(predicate::str::contains("Example"));
    }
}
