//! The hot path allocates nothing: decoding a typical 0100 and encoding it
//! again into a reused buffer makes zero heap allocations (the target is at
//! most 2). Counted by a global allocator wrapper, on this thread only.

#![allow(unsafe_code)] // the counting allocator below; nothing else
#![allow(clippy::unwrap_used)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use fluxrig_iso8583::{MessageBuilder, bundled};

struct Counting;

thread_local! {
    // Const-initialised: reading it never allocates.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        COUNT.with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; counting touches only const thread-locals.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through `alloc` or `realloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn counted(f: impl FnOnce()) -> u64 {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    COUNT.with(Cell::get)
}

#[test]
fn decode_and_encode_of_a_typical_0100_allocate_nothing() {
    for name in ["iso8583-1987-ascii", "iso8583-1987-binary"] {
        let spec = bundled::bundled(name).unwrap().unwrap();
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
            .set(22, "051")
            .set(25, "00")
            .set(32, "12345678")
            .set(35, "4111111111111111=28122011234500000")
            .set(37, "733110004711")
            .set(41, "TERM0001")
            .set(42, "MERCHANT0000001")
            .set(43, "FLUXRIG TEST SHOP        PARIS        FR")
            .set(49, "978")
            .set(52, "0123456789ABCDEF")
            .set(55, "9F02060000000125009F03060000000000009F1A020250")
            .set(70, "301");
        let wire = spec.encode_to_vec(&b).unwrap();
        let mut out = Vec::with_capacity(1024);
        let n = counted(|| {
            for _ in 0..1000 {
                out.clear();
                let m = spec.decode(&wire).unwrap();
                spec.encode(&m.to_builder(), &mut out).unwrap();
                // Reading text of ASCII elements borrows the frame.
                assert!(m.field(41).unwrap().as_str().is_some() || name.contains("binary"));
            }
        });
        assert_eq!(out, wire);
        assert_eq!(n, 0, "{name}: {n} allocations in 1000 decode+encode");
    }
}
