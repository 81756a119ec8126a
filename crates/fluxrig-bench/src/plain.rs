//! The baseline for the deterministic encoder: the same message written with
//! `minicbor::Encoder` directly, without the deterministic profile.
//!
//! What the baseline does **not** do, compared to `FluxMsg::encode`:
//!
//! * no float shortening: every float is written as a 9-byte double
//!   (`Encoder::f64`), and NaN is not canonicalised;
//! * no ordering work: envelope keys are written in one fixed order (the
//!   struct's, which we chose to be the deterministic order so the outputs
//!   can be compared byte for byte), extension fields after them, and maps
//!   in the order their entries are stored;
//! * no check or merge of extension keys against envelope keys.
//!
//! What it does the same: shortest integer and length heads (minicbor always
//! writes those), definite lengths, omitting fields at their default. It is
//! what a plain `minicbor` encoder of an equivalent struct with
//! `skip_serializing_if`-style defaults would write.
//!
//! On a message without floats and without extensions (such as
//! [`crate::typical_payment_msg`]) the two encoders produce the same bytes,
//! which a test checks: the comparison is on identical output.

use std::convert::Infallible;

use fluxrig_msg::{FluxMsg, Value};
use minicbor::Encoder;
use minicbor::data::{Int, Tag};

type Result = std::result::Result<(), minicbor::encode::Error<Infallible>>;

/// Appends the plain (non-deterministic) encoding of `msg` to `out`.
pub fn encode_msg(msg: &FluxMsg, out: &mut Vec<u8>) {
    let r = write_msg(&mut Encoder::new(out), msg);
    debug_assert!(r.is_ok(), "writing into a Vec cannot fail");
}

/// Appends the plain encoding of one value to `out`.
pub fn encode_value(v: &Value, out: &mut Vec<u8>) {
    let r = write_value(&mut Encoder::new(out), v);
    debug_assert!(r.is_ok(), "writing into a Vec cannot fail");
}

fn write_msg(e: &mut Encoder<&mut Vec<u8>>, m: &FluxMsg) -> Result {
    let fields = 1
        + usize::from(m.ts != 0)
        + usize::from(m.raw.is_some())
        + usize::from(m.reference.is_some())
        + usize::from(m.src.is_some())
        + usize::from(!m.data.is_null())
        + usize::from(!m.meta.is_empty())
        + usize::from(!m.path.is_empty())
        + usize::from(m.flags.0 != 0)
        + usize::from(m.trace.is_some());
    e.map((fields + m.extensions().len()) as u64)?;
    e.str("id")?.u64(m.id.get())?;
    if m.ts != 0 {
        e.str("ts")?.u64(m.ts)?;
    }
    if let Some(raw) = &m.raw {
        e.str("raw")?.bytes(raw)?;
    }
    if let Some(r) = m.reference {
        e.str("ref")?.u64(r.get())?;
    }
    if let Some(s) = m.src {
        e.str("src")?.u64(s.get())?;
    }
    if !m.data.is_null() {
        e.str("data")?;
        write_value(e, &m.data)?;
    }
    if !m.meta.is_empty() {
        e.str("meta")?.map(m.meta.len() as u64)?;
        for (k, v) in m.meta.iter() {
            e.str(k)?.str(v)?;
        }
    }
    if !m.path.is_empty() {
        e.str("path")?.array(m.path.len() as u64)?;
        for hop in &m.path {
            e.array(3)?
                .u64(hop.gear.get())?
                .str(&hop.port)?
                .u64(hop.ts)?;
        }
    }
    if m.flags.0 != 0 {
        e.str("flags")?.u32(m.flags.0)?;
    }
    if let Some(t) = m.trace {
        let mut b = [0; 25];
        b[..16].copy_from_slice(&t.trace_id);
        b[16..24].copy_from_slice(&t.span_id);
        b[24] = t.flags;
        e.str("trace")?.bytes(&b)?;
    }
    for (k, v) in m.extensions() {
        e.str(k)?;
        write_value(e, v)?;
    }
    Ok(())
}

fn write_value(e: &mut Encoder<&mut Vec<u8>>, v: &Value) -> Result {
    match v {
        Value::Integer(i) => match u64::try_from(i.get()) {
            Ok(u) => e.u64(u).map(drop),
            Err(_) => match Int::try_from(i.get()) {
                Ok(n) => e.int(n).map(drop),
                Err(_) => Ok(()), // out of CBOR range: impossible for an `Integer`
            },
        },
        Value::Bytes(b) => e.bytes(b).map(drop),
        Value::Text(s) => e.str(s).map(drop),
        Value::Array(a) => {
            e.array(a.len() as u64)?;
            a.iter().try_for_each(|x| write_value(e, x))
        }
        Value::Map(m) => {
            e.map(m.len() as u64)?;
            m.iter().try_for_each(|(k, v)| {
                write_value(e, k)?;
                write_value(e, v)
            })
        }
        Value::Tag(t, x) => {
            e.tag(Tag::new(*t))?;
            write_value(e, x)
        }
        Value::Bool(b) => e.bool(*b).map(drop),
        Value::Null => e.null().map(drop),
        Value::Undefined => e.undefined().map(drop),
        Value::Simple(s) => e.simple(s.get()).map(drop),
        Value::Float(x) => e.f64(*x).map(drop),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::typical_payment_msg;

    #[test]
    fn baseline_writes_the_same_bytes_on_the_typical_message() {
        let m = typical_payment_msg();
        let mut plain = Vec::new();
        encode_msg(&m, &mut plain);
        assert_eq!(plain, m.to_cbor());
    }

    #[test]
    fn baseline_differs_where_the_profile_does_work() {
        // A float: the baseline writes 9 bytes where 1.5 needs a half float.
        let mut plain = Vec::new();
        encode_value(&Value::Float(1.5), &mut plain);
        assert_eq!(plain, [0xfb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            fluxrig_msg::cbor::to_vec(&Value::Float(1.5)),
            [0xf9, 0x3e, 0x00]
        );
    }
}
