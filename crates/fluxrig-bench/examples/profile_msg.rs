//! Runs one benchmarked operation in a loop, for profilers that count
//! instructions (noise-free on a shared machine):
//!
//! ```sh
//! cargo build --profile bench -p fluxrig-bench --example profile_msg
//! valgrind --tool=callgrind target/release/examples/profile_msg decode 10000
//! ```
//!
//! Instructions per operation = (count at N − count at M) / (N − M), which
//! cancels the start-up cost.
//!
//! `id` runs the generator on a fixed clock: rustix's vDSO lookup (behind
//! `SystemClock`) crashes under valgrind (bytecodealliance/rustix#1559), and
//! the clock read is measured by the `id/clock/system` bench anyway.

use std::hint::black_box;

use bytes::Bytes;
use fluxrig_bench::{payment_fields, plain, typical_payment_msg};
use fluxrig_msg::id::{Clock, EPOCH_UNIX_MS};
use fluxrig_msg::{FluxMsg, IdGenerator, Limits, Map, Value};

struct FixedClock;

impl Clock for FixedClock {
    fn now_unix_ms(&self) -> u64 {
        EPOCH_UNIX_MS + 86_400_000
    }
}

#[allow(clippy::print_stderr)] // the usage line
fn main() {
    let mut args = std::env::args().skip(1);
    let op = args.next().unwrap_or_default();
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let msg = typical_payment_msg();
    let bytes = msg.to_cbor();
    let shared = Bytes::from(bytes.clone());
    let mut buf = Vec::with_capacity(1024);
    let generator = IdGenerator::with_clock(1, FixedClock);
    let fields = payment_fields();
    for _ in 0..n {
        match op.as_str() {
            "encode" => {
                buf.clear();
                black_box(&msg).encode(&mut buf);
            }
            "plain" => {
                buf.clear();
                plain::encode_msg(black_box(&msg), &mut buf);
            }
            "decode" => drop(black_box(FluxMsg::from_cbor(black_box(&bytes)))),
            "from_bytes" => drop(black_box(FluxMsg::from_bytes(
                black_box(&shared),
                Limits::DEFAULT,
            ))),
            "id" => drop(black_box(generator.next())),
            "build_sorted" => {
                let mut m = Map::with_capacity(fields.len());
                for (k, v) in fields.iter().cloned() {
                    m.insert(k, v);
                }
                drop(black_box(m));
            }
            "build_vec" => {
                let mut e = Vec::with_capacity(fields.len());
                for (k, v) in fields.iter().cloned() {
                    e.push((Value::text(k), v));
                }
                drop(black_box(e));
            }
            _ => {
                eprintln!(
                    "usage: profile_msg encode|plain|decode|from_bytes|id|build_sorted|build_vec [N]"
                );
                std::process::exit(2);
            }
        }
    }
    black_box(buf.len());
}
