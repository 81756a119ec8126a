//! The layout of a decoded message in a fluxMsg `data` tree, and back.
//!
//! Described for users in `docs/iso8583-data-layout.md`:
//!
//! * `mti`: the MTI, text (`"0100"`);
//! * an element with an alias lives at the alias path (`card.pan` →
//!   `{"card": {"pan": …}}`); an element without one at `de<n>` (`de48`);
//!   every element has exactly one place;
//! * values are text: characters for text and numeric elements (leading
//!   zeros kept), uppercase hex for binary ones (hex-encoded ones as sent);
//! * an element with subfields is a map `{"sf1": …, "sf2": …}` (positional
//!   or bitmapped) or an array of `{"tag", "value"}` maps (BER-TLV), when
//!   its bytes are exactly what that structure encodes back to; otherwise it
//!   stays text, and encode accepts either form.
//!
//! [`to_value`] then [`encode_value`] gives back the decoded bytes (hex
//! bitmaps are written uppercase).

use fluxrig_msg::{Map, Value};

use crate::codec::{Input, Message, MessageBuilder, read_item, write_item};
use crate::error::{EncodeError, EncodeErrorKind as EK, Place};
use crate::hex;
use crate::spec::{CharType, Element, Encoding, Spec, Subfield, Subfields};

/// The key of the MTI in the data tree.
pub const MTI_KEY: &str = "mti";

/// The fluxMsg `meta` key under which the spec hash of a decoded message is kept.
pub const META_SPEC: &str = "iso8583.spec";

/// A decoded message as a fluxMsg `data` tree.
pub fn to_value(msg: &Message<'_>) -> Value {
    let mut root = Map::with_capacity(16);
    root.insert(MTI_KEY, msg.mti());
    for f in msg.fields() {
        let el = f.element();
        let text = f.text();
        // Hex text in lowercase would come back uppercase from a structure.
        let exact =
            el.format.encoding != Encoding::Hex || !text.bytes().any(|c| c.is_ascii_lowercase());
        let v = el
            .subfields
            .as_ref()
            .filter(|_| exact)
            .and_then(|s| structured(el, s, f.to_bytes().as_slice()))
            .unwrap_or_else(|| Value::text(text.as_ref()));
        insert_path(&mut root, el.data_path(), v);
    }
    Value::Map(root)
}

fn insert_path(map: &mut Map, path: &[String], v: Value) {
    match path {
        [] => {}
        [last] => {
            map.insert(last.as_str(), v);
        }
        [first, rest @ ..] => {
            if map.get(first).and_then(Value::as_map).is_none() {
                map.insert(first.as_str(), Value::Map(Map::new()));
            }
            if let Some(Value::Map(m)) = map.get_mut(first) {
                insert_path(m, rest, v);
            }
        }
    }
}

/// The value at `path` in a data tree.
pub fn get_path<'v>(data: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter().try_fold(data, |v, k| v.get(k))
}

/// The value of element `n` in a data tree, at its canonical place.
pub fn get_element<'v>(spec: &Spec, data: &'v Value, n: u8) -> Option<&'v Value> {
    get_path(data, spec.element(n)?.data_path())
}

/// Sets element `n` in a data tree at its canonical place (creating the
/// maps on the way); false when the dialect has no element `n`.
pub fn set_element(spec: &Spec, data: &mut Value, n: u8, v: Value) -> bool {
    let Some(el) = spec.element(n) else {
        return false;
    };
    if data.as_map().is_none() {
        *data = Value::Map(Map::new());
    }
    match data.as_map_mut() {
        Some(m) => {
            insert_path(m, el.data_path(), v);
            true
        }
        None => false,
    }
}

/// Removes element `n` from a data tree; the value it had.
pub fn remove_element(spec: &Spec, data: &mut Value, n: u8) -> Option<Value> {
    let path = spec.element(n)?.data_path();
    let (last, parents) = path.split_last()?;
    let mut map = data.as_map_mut()?;
    for k in parents {
        map = map.get_mut(k)?.as_map_mut()?;
    }
    map.remove(last)
}

/// The logical content of an element with subfields: raw bytes for binary
/// elements, the characters for text ones.
fn structured(el: &Element, s: &Subfields, content: &[u8]) -> Option<Value> {
    let v = match s {
        Subfields::Positional { fields } => {
            let mut m = Map::new();
            let mut pos = 0;
            for (&n, sf) in fields {
                if pos == content.len() {
                    break;
                }
                let (start, len, units, next) =
                    read_item(&sf.format, content, pos, Place::Subfield(el.number, n), 0).ok()?;
                m.insert(
                    format!("sf{n}"),
                    sub_text(sf, &content[start..start + len], units),
                );
                pos = next;
            }
            (pos == content.len()).then_some(Value::Map(m))?
        }
        Subfields::Bitmap {
            hex: is_hex,
            fields,
        } => {
            let (bits, mut pos) = if *is_hex {
                let t = content.get(..16)?;
                let mut v = 0_u64;
                for &c in t {
                    v = v << 4 | u64::from(hex::nibble(c)?);
                }
                (v, 16)
            } else {
                let mut b = [0_u8; 8];
                b.copy_from_slice(content.get(..8)?);
                (u64::from_be_bytes(b), 8)
            };
            let mut m = Map::new();
            for n in 1..=64_u8 {
                if bits >> (64 - u32::from(n)) & 1 == 0 {
                    continue;
                }
                let sf = fields.get(&n)?;
                let (start, len, units, next) =
                    read_item(&sf.format, content, pos, Place::Subfield(el.number, n), 0).ok()?;
                m.insert(
                    format!("sf{n}"),
                    sub_text(sf, &content[start..start + len], units),
                );
                pos = next;
            }
            (pos == content.len()).then_some(Value::Map(m))?
        }
        Subfields::Tlv { .. } => Value::Array(parse_tlv(content)?),
    };
    // Only a structure that encodes back to the very same bytes is used.
    let mut again = Vec::with_capacity(content.len());
    (encode_subfields(el, s, &v, &mut again).is_ok() && again == content).then_some(v)
}

fn sub_text(sf: &Subfield, wire: &[u8], units: usize) -> Value {
    let src = crate::codec::TextSrc::from_wire(&sf.format, wire, units);
    let s: String = (0..src.len()).map(|i| char::from(src.at(i))).collect();
    Value::text(s)
}

/// BER-TLV items as `{"tag": "9F02", "value": "000000001000"}` maps, or
/// `None` when the bytes are not a sequence of well-formed items.
fn parse_tlv(b: &[u8]) -> Option<Vec<Value>> {
    let mut items = Vec::new();
    let mut p = 0;
    while p < b.len() {
        let t0 = p;
        let first = *b.get(p)?;
        p += 1;
        if first & 0x1f == 0x1f {
            loop {
                let c = *b.get(p)?;
                p += 1;
                if c & 0x80 == 0 {
                    break;
                }
                if p - t0 >= 4 {
                    return None;
                }
            }
        }
        let tag = &b[t0..p];
        let l0 = *b.get(p)?;
        p += 1;
        let len = match l0 {
            0..=0x7f => usize::from(l0),
            0x81 => {
                let l = usize::from(*b.get(p)?);
                p += 1;
                l
            }
            0x82 => {
                let l = usize::from(*b.get(p)?) << 8 | usize::from(*b.get(p + 1)?);
                p += 2;
                l
            }
            _ => return None,
        };
        let value = b.get(p..p + len)?;
        p += len;
        let mut m = Map::with_capacity(2);
        m.insert("tag", hex::encode_upper(tag));
        m.insert("value", hex::encode_upper(value));
        items.push(Value::Map(m));
    }
    Some(items)
}

fn shape(place: Place, what: &'static str) -> EncodeError {
    EncodeError::new(place, EK::WrongShape(what))
}

fn text_of(v: &Value, place: Place) -> Result<&str, EncodeError> {
    v.as_str().ok_or_else(|| shape(place, "text"))
}

/// Writes the logical content of an element from its structured form.
fn encode_subfields(
    el: &Element,
    s: &Subfields,
    v: &Value,
    out: &mut Vec<u8>,
) -> Result<(), EncodeError> {
    let place = Place::Element(el.number);
    match s {
        Subfields::Positional { fields } => {
            let m = v
                .as_map()
                .ok_or_else(|| shape(place, "a map of subfields"))?;
            let mut ended = false;
            let mut used = 0;
            for (&n, sf) in fields {
                let sp = Place::Subfield(el.number, n);
                match m.get(&format!("sf{n}")) {
                    Some(x) if !ended => {
                        write_item(&sf.format, Input::Text(text_of(x, sp)?), out, sp)?;
                        used += 1;
                    }
                    Some(_) => return Err(shape(sp, "no gap before this positional subfield")),
                    None => ended = true,
                }
            }
            if used != m.len() {
                return Err(shape(place, "only defined subfields (sf<n>)"));
            }
        }
        Subfields::Bitmap {
            hex: is_hex,
            fields,
        } => {
            let m = v
                .as_map()
                .ok_or_else(|| shape(place, "a map of subfields"))?;
            let mut bits = 0_u64;
            let mut used = 0;
            for &n in fields.keys() {
                if m.get(&format!("sf{n}")).is_some() {
                    bits |= 1 << (64 - u32::from(n));
                    used += 1;
                }
            }
            if used != m.len() {
                return Err(shape(place, "only defined subfields (sf<n>)"));
            }
            if *is_hex {
                for i in (0..16).rev() {
                    out.push(hex::digit_upper(
                        u8::try_from(bits >> (4 * i) & 0xf).unwrap_or(0),
                    ));
                }
            } else {
                out.extend_from_slice(&bits.to_be_bytes());
            }
            for (&n, sf) in fields {
                if let Some(x) = m.get(&format!("sf{n}")) {
                    let sp = Place::Subfield(el.number, n);
                    write_item(&sf.format, Input::Text(text_of(x, sp)?), out, sp)?;
                }
            }
        }
        Subfields::Tlv { .. } => {
            let Value::Array(items) = v else {
                return Err(shape(place, "an array of {tag, value} maps"));
            };
            for (i, item) in items.iter().enumerate() {
                let sp = Place::Subfield(el.number, u8::try_from(i + 1).unwrap_or(u8::MAX));
                let tag = item.get("tag").and_then(Value::as_str);
                let value = item.get("value").and_then(Value::as_str);
                let (Some(tag), Some(value)) = (tag, value) else {
                    return Err(shape(sp, "a map with text `tag` and `value`"));
                };
                let start = out.len();
                hex::decode_into(tag.as_bytes(), out).map_err(|_| shape(sp, "a hex tag"))?;
                if out.len() == start {
                    return Err(shape(sp, "a hex tag"));
                }
                let mut vb = Vec::with_capacity(value.len() / 2);
                hex::decode_into(value.as_bytes(), &mut vb)
                    .map_err(|_| shape(sp, "a hex value"))?;
                match vb.len() {
                    0..=0x7f => out.push(u8::try_from(vb.len()).unwrap_or(0)),
                    0x80..=0xff => {
                        out.extend_from_slice(&[0x81, u8::try_from(vb.len()).unwrap_or(0)]);
                    }
                    0x100..=0xffff => {
                        out.push(0x82);
                        out.extend_from_slice(&u16::try_from(vb.len()).unwrap_or(0).to_be_bytes());
                    }
                    _ => return Err(shape(sp, "a value under 64 KiB")),
                }
                out.extend_from_slice(&vb);
            }
        }
    }
    Ok(())
}

/// Encodes a fluxMsg `data` tree (the layout [`to_value`] makes) with
/// `spec`, appending to `out`.
///
/// Keys the layout does not know are ignored, except `de<n>` keys, which
/// must name an element of the dialect that has no alias.
pub fn encode_value(spec: &Spec, data: &Value, out: &mut Vec<u8>) -> Result<(), EncodeError> {
    let root = data
        .as_map()
        .ok_or_else(|| shape(Place::Message, "a map"))?;
    // One walk over the tree finds every element at its place.
    let mut found: [Option<&Value>; 129] = [None; 129];
    let mut mti = None;
    for (k, v) in root {
        let Some(k) = k.as_str() else { continue };
        if k == MTI_KEY {
            mti = v.as_str();
        } else if let Some(n) = k.strip_prefix("de")
            && !n.is_empty()
            && n.bytes().all(|c| c.is_ascii_digit())
        {
            let n = n.parse::<u8>().unwrap_or(0);
            match spec.element(n) {
                Some(el) if el.alias.is_none() => found[usize::from(n)] = Some(v),
                Some(_) => return Err(shape(Place::Element(n), "the element under its alias")),
                None => return Err(EncodeError::new(Place::Element(n), EK::UndefinedElement)),
            }
        } else {
            let mut path = String::with_capacity(32);
            path.push_str(k);
            find_aliased(spec, v, &mut path, &mut found);
        }
    }
    let mti = mti.ok_or_else(|| shape(Place::Mti, "text"))?;
    // Elements whose text must be built first (structured subfields).
    let mut owned: Vec<(u8, String)> = Vec::new();
    for (n, v) in found.iter().enumerate() {
        let Some(v) = v else { continue };
        if matches!(v, Value::Text(_)) {
            continue;
        }
        let Some(el) = spec.element(u8::try_from(n).unwrap_or(0)) else {
            continue;
        };
        let Some(s) = &el.subfields else {
            return Err(shape(Place::Element(el.number), "text"));
        };
        let mut content = Vec::new();
        encode_subfields(el, s, v, &mut content)?;
        let text = if el.format.kind == CharType::B {
            hex::encode_upper(&content)
        } else {
            String::from_utf8(content)
                .map_err(|_| shape(Place::Element(el.number), "text subfields"))?
        };
        owned.push((el.number, text));
    }
    let mut b = MessageBuilder::new();
    b.set_mti(mti);
    for (n, v) in found.iter().enumerate() {
        let (Some(v), Ok(n)) = (v, u8::try_from(n)) else {
            continue;
        };
        if let Some((_, t)) = owned.iter().find(|(m, _)| *m == n) {
            b.set(n, t);
        } else {
            b.set(n, text_of(v, Place::Element(n))?);
        }
    }
    spec.encode(&b, out)
}

/// Records the element whose alias is `path` (or, for a map that is not
/// an element, the elements under it); keys that are no alias are ignored.
fn find_aliased<'v>(
    spec: &Spec,
    v: &'v Value,
    path: &mut String,
    found: &mut [Option<&'v Value>; 129],
) {
    if let Some(&n) = spec.by_alias.get(path.as_str()) {
        found[usize::from(n)] = Some(v);
        return;
    }
    if let Value::Map(m) = v {
        let len = path.len();
        for (k, x) in m {
            if let Some(k) = k.as_str() {
                path.push('.');
                path.push_str(k);
                find_aliased(spec, x, path, found);
                path.truncate(len);
            }
        }
    }
}
