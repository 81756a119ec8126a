//! proptest strategies for CBOR values and fluxMsgs.

use bytes::Bytes;
use fluxrig_msg::{
    EntityId, Flags, FluxId, FluxMsg, Hop, Integer, Map, Meta, Simple, TraceContext, Value,
};
use proptest::prelude::*;

/// Any CBOR integer, biased towards the edges of each head size.
pub fn integer() -> impl Strategy<Value = Integer> {
    prop_oneof![
        (0_u64..30).prop_map(Integer::from),
        any::<u8>().prop_map(Integer::from),
        any::<u16>().prop_map(Integer::from),
        any::<u32>().prop_map(Integer::from),
        any::<u64>().prop_map(Integer::from),
        any::<i64>().prop_map(Integer::from),
        (0_u64..=u64::MAX).prop_map(|n| Integer::try_from(-1 - i128::from(n)).unwrap()),
    ]
}

/// Any float, including the special values and ones exact in f16/f32.
pub fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        any::<f64>(),
        any::<f32>().prop_map(f64::from),
        any::<u16>().prop_map(|b| f64::from(f32::from_bits(u32::from(b) << 16))),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(0.0),
        Just(-0.0),
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof!["[a-z]{0,8}", ".{0,12}", "[a-zA-Z0-9_.]{20,40}"]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        integer().prop_map(Value::Integer),
        float().prop_map(Value::Float),
        text().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Bytes(b.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
        Just(Value::Undefined),
        any::<u8>().prop_filter_map("reserved simple", |s| Simple::new(s).map(Value::Simple)),
    ]
}

/// Any CBOR value tree (maps with keys of any type).
pub fn value() -> impl Strategy<Value = Value> + Clone {
    leaf().prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((inner.clone(), inner.clone()), 0..8)
                .prop_map(|e| Value::Map(e.into_iter().collect::<Map>())),
            proptest::collection::vec((text(), inner.clone()), 0..8)
                .prop_map(|e| Value::Map(e.into_iter().collect::<Map>())),
            (any::<u64>(), inner).prop_map(|(t, v)| Value::Tag(t, Box::new(v))),
        ]
    })
}

/// A value tree with text keys only and no tags or simple values: what JSON
/// (and a business payload) can carry.
pub fn json_value() -> impl Strategy<Value = Value> + Clone {
    let leaf = prop_oneof![
        integer().prop_map(Value::Integer),
        float().prop_map(Value::Float),
        text().prop_map(Value::from),
        proptest::collection::vec(any::<u8>(), 0..40).prop_map(|b| Value::Bytes(b.into())),
        any::<bool>().prop_map(Value::Bool),
        Just(Value::Null),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((text(), inner), 0..8)
                .prop_map(|e| Value::Map(e.into_iter().collect::<Map>())),
        ]
    })
}

fn trace() -> impl Strategy<Value = TraceContext> {
    (any::<[u8; 16]>(), any::<[u8; 8]>(), any::<u8>()).prop_map(|(mut t, mut s, flags)| {
        t[0] |= 1; // never all zero
        s[0] |= 1;
        TraceContext {
            trace_id: t,
            span_id: s,
            flags,
        }
    })
}

/// A message; `payload` generates `data` and extension values.
pub fn msg_with(payload: impl Strategy<Value = Value> + Clone) -> impl Strategy<Value = FluxMsg> {
    (
        (
            any::<u64>(),
            proptest::option::of(any::<u64>()),
            proptest::option::of(trace()),
        ),
        (
            proptest::option::of(any::<u64>()),
            proptest::collection::vec((text(), text()), 0..6),
        ),
        (
            payload.clone(),
            any::<u32>(),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..300)),
        ),
        proptest::collection::vec((any::<u64>(), "[a-z]{1,8}", any::<u64>()), 0..5),
        (
            any::<u64>(),
            proptest::collection::vec(("x_[a-z]{1,6}", payload), 0..3),
        ),
    )
        .prop_map(
            |((id, reference, trace), (src, meta), (data, flags, raw), path, (ts, ext))| {
                let mut m = FluxMsg::new(FluxId::from_raw(id), data);
                m.reference = reference.map(FluxId::from_raw);
                m.trace = trace;
                m.src = src.map(EntityId::from_raw);
                m.meta = meta.into_iter().collect::<Meta>();
                m.flags = Flags(flags);
                m.raw = raw.map(Bytes::from);
                m.path = path
                    .into_iter()
                    .map(|(g, port, ts)| Hop {
                        gear: EntityId::from_raw(g),
                        port: port.into(),
                        ts,
                    })
                    .collect();
                m.ts = ts;
                for (k, v) in ext {
                    m.set_extension(&k, v).unwrap();
                }
                m
            },
        )
}

/// Any message, with any CBOR payload.
pub fn msg() -> impl Strategy<Value = FluxMsg> {
    msg_with(value())
}

/// A message whose payload has a JSON form.
pub fn json_msg() -> impl Strategy<Value = FluxMsg> {
    msg_with(json_value())
}
