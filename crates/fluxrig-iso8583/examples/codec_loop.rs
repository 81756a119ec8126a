//! Decode + encode a typical 0100 in a loop, for profiling (`perf stat`,
//! `perf record`): `cargo run --release -p fluxrig-iso8583 --example
//! codec_loop -- [DIALECT] [N] [value|switch]`. Prints messages per second
//! of wall time. With `value`, goes through the fluxMsg data tree
//! (`to_value`, `encode_value`) as the codec gear does; `switch` does the
//! same with the 13-element 0100 that `fluxrig iso8583 load` sends.

use std::hint::black_box;
use std::time::Instant;

use fluxrig_iso8583::{MessageBuilder, bundled, encode_value, to_value};

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "iso8583-1987-ascii".into());
    let n: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(5_000_000);
    let mode = args.next();
    let via_value = matches!(mode.as_deref(), Some("value" | "switch"));
    let spec = bundled::bundled(&name)
        .expect("bundled dialect")
        .expect("loads");
    let mut b = MessageBuilder::new();
    b.set_mti("0100")
        .set(2, "4111111111111111")
        .set(3, "000000")
        .set(4, "000000012500")
        .set(7, "1127101530")
        .set(11, "004711")
        .set(12, "101530")
        .set(13, "1127")
        .set(14, "2812")
        .set(18, "5411")
        .set(19, "250")
        .set(22, "051")
        .set(23, "001")
        .set(25, "00")
        .set(32, "12345678")
        .set(35, "4111111111111111=28122011234500000")
        .set(37, "733110004711")
        .set(41, "TERM0001")
        .set(42, "MERCHANT0000001")
        .set(43, "FLUXRIG TEST SHOP        PARIS        FR")
        .set(48, "0021A1B2C3POS-TEST-DATA")
        .set(49, "978")
        .set(52, "0123456789ABCDEF")
        .set(55, "9F02060000000125009F03060000000000009F1A020250")
        .set(60, "FLUXRIG-BENCH")
        .set(62, "CUSTOM-PRIVATE-DATA-0001");
    if mode.as_deref() == Some("switch") {
        // Only the elements `fluxrig iso8583 load` sends.
        for n in [14, 18, 19, 23, 32, 35, 43, 48, 52, 55, 60, 62] {
            b.remove(n);
        }
    }
    let wire = spec.encode_to_vec(&b).expect("encodes");
    let mut out = Vec::with_capacity(1024);
    let start = Instant::now();
    for _ in 0..n {
        out.clear();
        let m = spec.decode(black_box(&wire)).expect("decodes");
        if via_value {
            encode_value(spec, &to_value(&m), &mut out).expect("encodes");
        } else {
            spec.encode(&m.to_builder(), &mut out).expect("encodes");
        }
        black_box(out.len());
    }
    let secs = start.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = n as f64 / secs;
    println!(
        "{name}: {n} decode+encode of {} bytes in {secs:.3} s: {rate:.0}/s",
        wire.len()
    );
}
