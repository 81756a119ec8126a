//! `json::from_json_str` on arbitrary UTF-8.
//!
//! Never panics; when the text parses as a message, its CBOR round-trips
//! (decodes to an equal message, deterministically), and its JSON form
//! parses back to the same message.
#![no_main]

use fluxrig_msg::{FluxMsg, json};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(msg) = json::from_json_str(text) else {
        return;
    };
    let bytes = msg.to_cbor();
    let back = FluxMsg::from_cbor(&bytes).expect("the CBOR of a JSON message decodes");
    assert_eq!(back, msg, "CBOR round trip changed the message");
    assert!(FluxMsg::is_deterministic(&bytes));

    let shown = json::to_json_string(&msg).expect("a message from JSON has a JSON form");
    let again = json::from_json_str(&shown).expect("our own JSON form parses");
    assert_eq!(again, msg, "JSON round trip changed the message");
});
