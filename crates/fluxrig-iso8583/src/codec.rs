//! The table-driven codec.
//!
//! [`Spec::decode`] walks the frame once and records, per element, where its
//! data lies: nothing is copied, nothing is allocated. [`Spec::encode`]
//! writes a [`MessageBuilder`] into a caller-owned buffer, which a hot loop
//! reuses. Values are given to the builder in their *text form* (the form
//! [`Field::write_text`] produces: characters for text and numeric
//! elements, uppercase hex for binary ones), or passed through from a
//! decoded message without conversion when the wire formats agree.

use std::borrow::Cow;

use crate::ebcdic;
use crate::error::{DecodeError, DecodeErrorKind as DK, EncodeError, EncodeErrorKind as EK, Place};
use crate::hex;
use crate::spec::{
    BitmapEncoding, CharType, Element, Encoding, Format, Length, MAX_ELEMENT, MtiEncoding,
    PrefixEncoding, Spec,
};

const SLOTS: usize = MAX_ELEMENT as usize + 1;

#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
    units: u32,
}

/// A decoded message: the MTI, the bitmap, and for each present element the
/// location of its data in the frame. Borrows the frame and the spec.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    spec: &'a Spec,
    frame: &'a [u8],
    mti: [u8; 4],
    present: u128,
    spans: [Span; SLOTS],
}

/// One present element of a decoded message.
#[derive(Debug, Clone, Copy)]
pub struct Field<'a> {
    element: &'a Element,
    wire: &'a [u8],
    units: usize,
    offset: usize,
}

#[inline]
fn bit(n: u8) -> u128 {
    1_u128 << (n - 1)
}

impl<'a> Message<'a> {
    /// The message type indicator, four ASCII digits.
    pub fn mti(&self) -> &str {
        // Validated as ASCII digits by the decoder.
        std::str::from_utf8(&self.mti).unwrap_or("????")
    }

    /// The dialect the message was decoded with.
    pub fn spec(&self) -> &'a Spec {
        self.spec
    }

    /// The frame the message was decoded from.
    pub fn frame(&self) -> &'a [u8] {
        self.frame
    }

    /// True when element `n` is present.
    pub fn has(&self, n: u8) -> bool {
        (2..=MAX_ELEMENT).contains(&n) && self.present & bit(n) != 0
    }

    /// Element `n`, when present.
    pub fn field(&self, n: u8) -> Option<Field<'a>> {
        if !self.has(n) {
            return None;
        }
        let s = self.spans[usize::from(n)];
        let element = self.spec.element(n)?;
        let start = s.start as usize;
        Some(Field {
            element,
            wire: &self.frame[start..start + s.len as usize],
            units: s.units as usize,
            offset: start,
        })
    }

    /// Every present element, in number order.
    pub fn fields(&self) -> impl Iterator<Item = Field<'a>> + '_ {
        (2..=MAX_ELEMENT).filter_map(move |n| self.field(n))
    }

    /// The numbers of the present elements, in order.
    pub fn numbers(&self) -> impl Iterator<Item = u8> + '_ {
        (2..=MAX_ELEMENT).filter(move |&n| self.present & bit(n) != 0)
    }

    /// A builder holding this message's MTI and elements, passed through
    /// without conversion: encoding it with the same spec yields the same
    /// bytes (up to the case of hex bitmaps).
    pub fn to_builder(&self) -> MessageBuilder<'a> {
        let mut b = MessageBuilder::new();
        b.mti = self.mti;
        b.present = self.present;
        let mut bits = self.present;
        while bits != 0 {
            let n = bits.trailing_zeros() as usize + 1;
            bits &= bits - 1;
            if let Some(Some(format)) = self.spec.table.get(n) {
                let s = self.spans[n];
                let start = s.start as usize;
                b.values[n] = Input::Wire(Wired {
                    format,
                    bytes: &self.frame[start..start + s.len as usize],
                    units: s.units as usize,
                });
            }
        }
        b
    }
}

impl<'a> Field<'a> {
    /// This element as builder input, passed through without conversion
    /// when the target element has the same format.
    pub fn input(&self) -> Input<'a> {
        Input::Wire(Wired {
            format: &self.element.format,
            bytes: self.wire,
            units: self.units,
        })
    }

    /// The element's definition.
    pub fn element(&self) -> &'a Element {
        self.element
    }

    /// The element number.
    pub fn number(&self) -> u8 {
        self.element.number
    }

    /// The data bytes as on the wire (without the length prefix).
    pub fn wire(&self) -> &'a [u8] {
        self.wire
    }

    /// Offset of the data in the frame.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// Length in the element's units (characters, digits or bytes).
    pub fn units(&self) -> usize {
        self.units
    }

    /// The text form without copying, when the wire bytes are the text
    /// (ASCII and hex encodings).
    pub fn as_str(&self) -> Option<&'a str> {
        match self.element.format.encoding {
            Encoding::Ascii | Encoding::Hex => std::str::from_utf8(self.wire).ok(),
            _ => None,
        }
    }

    /// The text form: characters for text and numeric elements, uppercase
    /// hex for binary ones (hex-encoded ones as they are on the wire).
    pub fn text(&self) -> Cow<'a, str> {
        if let Some(s) = self.as_str() {
            Cow::Borrowed(s)
        } else {
            let mut s = String::new();
            self.write_text(&mut s);
            Cow::Owned(s)
        }
    }

    /// Appends the text form to `out`.
    pub fn write_text(&self, out: &mut String) {
        let src = TextSrc::from_wire(&self.element.format, self.wire, self.units);
        out.reserve(src.len());
        for i in 0..src.len() {
            out.push(char::from(src.at(i)));
        }
    }

    /// The content as bytes: the raw bytes of binary elements (hex ones
    /// decoded), the characters of the others.
    pub fn to_bytes(&self) -> Vec<u8> {
        match self.element.format.encoding {
            Encoding::Binary => self.wire.to_vec(),
            Encoding::Hex => {
                let mut v = Vec::with_capacity(self.wire.len() / 2);
                let _ = hex::decode_into(self.wire, &mut v);
                v
            }
            _ => self.text().into_owned().into_bytes(),
        }
    }
}

/// The text of an item, read lazily from its wire form.
#[derive(Clone, Copy)]
pub(crate) enum TextSrc<'a> {
    /// Wire bytes are the text (ASCII, hex) or given text.
    Plain(&'a [u8]),
    /// EBCDIC wire bytes.
    Ebcdic(&'a [u8]),
    /// BCD digits; `skip` is 1 when a pad nibble leads.
    Bcd {
        bytes: &'a [u8],
        units: usize,
        skip: usize,
    },
    /// Raw bytes shown as uppercase hex.
    Binary(&'a [u8]),
}

impl<'a> TextSrc<'a> {
    pub(crate) fn from_wire(f: &Format, bytes: &'a [u8], units: usize) -> TextSrc<'a> {
        match f.encoding {
            Encoding::Ascii | Encoding::Hex => TextSrc::Plain(bytes),
            Encoding::Ebcdic => TextSrc::Ebcdic(bytes),
            Encoding::Binary => TextSrc::Binary(bytes),
            Encoding::Bcd => TextSrc::Bcd {
                bytes,
                units,
                skip: usize::from(units % 2 == 1 && f.pad.is_some_and(|p| p.left)),
            },
        }
    }

    #[inline]
    pub(crate) fn len(&self) -> usize {
        match *self {
            TextSrc::Plain(b) | TextSrc::Ebcdic(b) => b.len(),
            TextSrc::Bcd { units, .. } => units,
            TextSrc::Binary(b) => b.len() * 2,
        }
    }

    #[inline]
    pub(crate) fn at(&self, i: usize) -> u8 {
        match *self {
            TextSrc::Plain(b) => b[i],
            TextSrc::Ebcdic(b) => ebcdic::to_ascii(b[i]).unwrap_or(b'?'),
            TextSrc::Bcd { bytes, skip, .. } => {
                let k = i + skip;
                let byte = bytes[k / 2];
                let n = if k.is_multiple_of(2) {
                    byte >> 4
                } else {
                    byte & 0x0f
                };
                if n == 0x0d { b'=' } else { hex::digit_upper(n) }
            }
            TextSrc::Binary(b) => {
                let byte = b[i / 2];
                hex::digit_upper(if i.is_multiple_of(2) {
                    byte >> 4
                } else {
                    byte & 0x0f
                })
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Decoding.

#[inline]
fn need(buf: &[u8], pos: usize, n: usize, place: Place, base: usize) -> Result<(), DecodeError> {
    let have = buf.len().saturating_sub(pos);
    if have < n {
        return Err(DecodeError::new(
            place,
            base + pos,
            DK::Truncated { need: n, have },
        ));
    }
    Ok(())
}

/// Is `c` (an ASCII character at `index` of the text) allowed for `kind`?
#[inline]
fn char_ok(kind: CharType, c: u8, index: usize) -> bool {
    match kind {
        CharType::N => c.is_ascii_digit(),
        CharType::Z => c.is_ascii_digit() || c == b'=' || c == b'D',
        CharType::Xn => {
            if index == 0 {
                c == b'C' || c == b'D'
            } else {
                c.is_ascii_digit()
            }
        }
        CharType::B => hex::nibble(c).is_some(),
        _ => (0x20..0x7f).contains(&c),
    }
}

/// Reads one item (element or subfield) at `pos` of `buf`. Returns the data
/// start, the wire length, the units and the position after the item.
pub(crate) fn read_item(
    f: &Format,
    buf: &[u8],
    pos: usize,
    place: Place,
    base: usize,
) -> Result<(usize, usize, usize, usize), DecodeError> {
    let mut p = pos;
    let units = match f.length {
        Length::Fixed(n) => n,
        Length::Var {
            digits,
            max,
            prefix,
        } => {
            let w = prefix.width(digits);
            need(buf, p, w, place, base)?;
            let len = read_prefix(prefix, &buf[p..p + w])
                .ok_or_else(|| DecodeError::new(place, base + p, DK::BadLengthPrefix))?;
            if len > max {
                return Err(DecodeError::new(
                    place,
                    base + p,
                    DK::LengthOverMax { len, max },
                ));
            }
            p += w;
            len
        }
    };
    let wire_len = f.wire_len(units);
    need(buf, p, wire_len, place, base)?;
    let data = &buf[p..p + wire_len];
    validate_wire(f, data, units).map_err(|k| DecodeError::new(place, base + p, k))?;
    Ok((p, wire_len, units, p + wire_len))
}

fn read_prefix(prefix: PrefixEncoding, b: &[u8]) -> Option<usize> {
    match prefix {
        PrefixEncoding::Ascii => b.iter().try_fold(0_usize, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + usize::from(c - b'0'))
        }),
        PrefixEncoding::Ebcdic => b.iter().try_fold(0_usize, |acc, &c| {
            (0xf0..=0xf9)
                .contains(&c)
                .then(|| acc * 10 + usize::from(c - 0xf0))
        }),
        PrefixEncoding::Bcd => b.iter().try_fold(0_usize, |acc, &c| {
            let (hi, lo) = (c >> 4, c & 0x0f);
            (hi <= 9 && lo <= 9).then(|| acc * 100 + usize::from(hi) * 10 + usize::from(lo))
        }),
        PrefixEncoding::Binary => Some(b.iter().fold(0_usize, |acc, &c| acc << 8 | usize::from(c))),
    }
}

/// The first character of ASCII text not allowed for `kind`, one loop per kind.
#[inline]
fn first_bad_ascii(kind: CharType, data: &[u8]) -> Option<usize> {
    // A branch-free pass over the whole item (it vectorises), then the
    // position only when something is wrong.
    match kind {
        CharType::N => {
            let bad = data
                .iter()
                .fold(false, |acc, &c| acc | (c.wrapping_sub(b'0') > 9));
            if bad {
                data.iter().position(|c| !c.is_ascii_digit())
            } else {
                None
            }
        }
        CharType::A | CharType::An | CharType::Ans | CharType::Ns => {
            let bad = data
                .iter()
                .fold(false, |acc, &c| acc | (c.wrapping_sub(0x20) > 0x5e));
            if bad {
                data.iter().position(|&c| !(0x20..0x7f).contains(&c))
            } else {
                None
            }
        }
        CharType::B => data.iter().position(|&c| hex::nibble(c).is_none()),
        CharType::Z | CharType::Xn => data
            .iter()
            .enumerate()
            .position(|(i, &c)| !char_ok(kind, c, i)),
    }
}

fn validate_wire(f: &Format, data: &[u8], units: usize) -> Result<(), DK> {
    match f.encoding {
        Encoding::Ascii => {
            if let Some(index) = first_bad_ascii(f.kind, data) {
                return Err(DK::InvalidCharacter { index });
            }
        }
        Encoding::Ebcdic => {
            for (i, &e) in data.iter().enumerate() {
                match ebcdic::to_ascii(e) {
                    Some(c) if char_ok(f.kind, c, i) => {}
                    _ => return Err(DK::InvalidCharacter { index: i }),
                }
            }
        }
        Encoding::Hex => {
            if !units.is_multiple_of(2) {
                return Err(DK::OddLength);
            }
            if let Some(i) = data.iter().position(|&c| hex::nibble(c).is_none()) {
                return Err(DK::InvalidHex { index: i });
            }
        }
        Encoding::Binary => {}
        Encoding::Bcd => {
            let skip = usize::from(units % 2 == 1 && f.pad.is_some_and(|p| p.left));
            for k in 0..units {
                let j = k + skip;
                let byte = data[j / 2];
                let n = if j.is_multiple_of(2) {
                    byte >> 4
                } else {
                    byte & 0x0f
                };
                let ok = n <= 9 || (f.kind == CharType::Z && n == 0x0d);
                if !ok {
                    return Err(DK::InvalidBcd { index: j / 2 });
                }
            }
        }
    }
    Ok(())
}

fn read_mti(enc: MtiEncoding, frame: &[u8]) -> Result<([u8; 4], usize), DecodeError> {
    let w = if enc == MtiEncoding::Bcd { 2 } else { 4 };
    need(frame, 0, w, Place::Mti, 0)?;
    let mut mti = [0_u8; 4];
    for (i, m) in mti.iter_mut().enumerate() {
        *m = match enc {
            MtiEncoding::Ascii => frame[i],
            MtiEncoding::Ebcdic => ebcdic::to_ascii(frame[i]).unwrap_or(0),
            MtiEncoding::Bcd => {
                let b = frame[i / 2];
                let n = if i.is_multiple_of(2) {
                    b >> 4
                } else {
                    b & 0x0f
                };
                if n <= 9 { b'0' + n } else { 0 }
            }
        };
        if !m.is_ascii_digit() {
            let index = if enc == MtiEncoding::Bcd { i / 2 } else { i };
            return Err(DecodeError::new(
                Place::Mti,
                0,
                DK::InvalidCharacter { index },
            ));
        }
    }
    Ok((mti, w))
}

fn read_bitmap(
    enc: BitmapEncoding,
    buf: &[u8],
    pos: usize,
    place: Place,
    base: usize,
) -> Result<(u64, usize), DecodeError> {
    match enc {
        BitmapEncoding::Binary => {
            need(buf, pos, 8, place, base)?;
            let mut b = [0_u8; 8];
            b.copy_from_slice(&buf[pos..pos + 8]);
            Ok((u64::from_be_bytes(b), pos + 8))
        }
        BitmapEncoding::Hex => {
            need(buf, pos, 16, place, base)?;
            let mut v = 0_u64;
            for (i, &c) in buf[pos..pos + 16].iter().enumerate() {
                let n = hex::nibble(c).ok_or_else(|| {
                    DecodeError::new(place, base + pos, DK::InvalidHex { index: i })
                })?;
                v = v << 4 | u64::from(n);
            }
            Ok((v, pos + 16))
        }
    }
}

impl Spec {
    /// Decodes one message (MTI, bitmaps, elements; no framing or header).
    ///
    /// Fails on the first problem, naming the item and the byte offset;
    /// every element the bitmap announces must be defined, and no byte may
    /// follow the last element.
    pub fn decode<'a>(&'a self, frame: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        if frame.len() > self.limits.max_message {
            return Err(DecodeError::new(
                Place::Message,
                0,
                DK::TooLarge {
                    size: frame.len(),
                    max: self.limits.max_message,
                },
            ));
        }
        let (mti, mut pos) = read_mti(self.mti, frame)?;
        let (primary, p) = read_bitmap(self.bitmap, frame, pos, Place::PrimaryBitmap, 0)?;
        pos = p;
        let mut present = u128::from(primary) << 64;
        if primary >> 63 == 1 {
            let (secondary, p) = read_bitmap(self.bitmap, frame, pos, Place::SecondaryBitmap, 0)?;
            if secondary == 0 {
                return Err(DecodeError::new(
                    Place::SecondaryBitmap,
                    pos,
                    DK::EmptySecondaryBitmap,
                ));
            }
            pos = p;
            present |= u128::from(secondary);
        }
        // `present` holds bit n-1 for element n, counted from the top: turn
        // it around so that element n is bit n-1 from the bottom.
        let present = present.reverse_bits() & !1;
        let mut msg = Message {
            spec: self,
            frame,
            mti,
            present,
            spans: [Span::default(); SLOTS],
        };
        let mut bits = present;
        while bits != 0 {
            let n = u8::try_from(bits.trailing_zeros() + 1).unwrap_or(MAX_ELEMENT);
            bits &= bits - 1;
            let place = Place::Element(n);
            let Some(Some(format)) = self.table.get(usize::from(n)) else {
                return Err(DecodeError::new(place, pos, DK::UndefinedElement));
            };
            let (start, len, units, next) = read_item(format, frame, pos, place, 0)?;
            // Frames are at most `max_message` bytes, far below u32::MAX.
            msg.spans[usize::from(n)] = Span {
                start: u32::try_from(start).unwrap_or(u32::MAX),
                len: u32::try_from(len).unwrap_or(u32::MAX),
                units: u32::try_from(units).unwrap_or(u32::MAX),
            };
            pos = next;
        }
        if pos != frame.len() {
            return Err(DecodeError::new(
                Place::Message,
                pos,
                DK::TrailingBytes {
                    count: frame.len() - pos,
                },
            ));
        }
        Ok(msg)
    }
}

// ---------------------------------------------------------------------------
// Encoding.

/// The value of one element given to a [`MessageBuilder`].
#[derive(Debug, Clone, Copy, Default)]
pub enum Input<'a> {
    /// Not set.
    #[default]
    None,
    /// The text form (ASCII): characters, digits, or hex for binary elements.
    Text(&'a str),
    /// The wire bytes of a decoded element ([`Field::input`],
    /// [`Message::to_builder`]): copied as they are when the target element
    /// has the same format, converted otherwise.
    Wire(Wired<'a>),
}

/// Wire bytes of a decoded element, as the decoder checked them. Only the
/// decoder makes these, so the encoder can trust them.
#[derive(Debug, Clone, Copy)]
pub struct Wired<'a> {
    format: &'a Format,
    bytes: &'a [u8],
    units: usize,
}

/// A message to encode: an MTI and element values. Cheap to build (no
/// allocation); borrows the values.
#[derive(Debug, Clone)]
pub struct MessageBuilder<'a> {
    mti: [u8; 4],
    present: u128,
    values: [Input<'a>; SLOTS],
}

impl Default for MessageBuilder<'_> {
    fn default() -> Self {
        MessageBuilder::new()
    }
}

impl<'a> MessageBuilder<'a> {
    /// An empty message with MTI `0000`.
    pub fn new() -> MessageBuilder<'a> {
        MessageBuilder {
            mti: *b"0000",
            present: 0,
            values: [Input::None; SLOTS],
        }
    }

    /// Sets the MTI (checked on encode: four digits).
    pub fn set_mti(&mut self, mti: &str) -> &mut Self {
        let b = mti.as_bytes();
        self.mti = if b.len() == 4 {
            [b[0], b[1], b[2], b[3]]
        } else {
            *b"????"
        };
        self
    }

    /// The MTI as set.
    pub fn mti(&self) -> &str {
        std::str::from_utf8(&self.mti).unwrap_or("????")
    }

    /// Sets element `n` from its text form. Numbers outside 2..=128 are
    /// ignored (element 1 is the secondary bitmap, written by the codec).
    pub fn set(&mut self, n: u8, text: &'a str) -> &mut Self {
        self.set_input(n, Input::Text(text))
    }

    /// Sets element `n` from any input.
    pub fn set_input(&mut self, n: u8, input: Input<'a>) -> &mut Self {
        if (2..=MAX_ELEMENT).contains(&n) {
            self.values[usize::from(n)] = input;
            if matches!(input, Input::None) {
                self.present &= !bit(n);
            } else {
                self.present |= bit(n);
            }
        }
        self
    }

    /// Removes element `n`.
    pub fn remove(&mut self, n: u8) -> &mut Self {
        self.set_input(n, Input::None)
    }

    /// The value of element `n`.
    pub fn get(&self, n: u8) -> Input<'a> {
        if (2..=MAX_ELEMENT).contains(&n) {
            self.values[usize::from(n)]
        } else {
            Input::None
        }
    }

    /// True when element `n` is set.
    pub fn has(&self, n: u8) -> bool {
        (2..=MAX_ELEMENT).contains(&n) && self.present & bit(n) != 0
    }
}

fn write_prefix(prefix: PrefixEncoding, digits: u8, len: usize, out: &mut Vec<u8>) {
    match prefix {
        PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => {
            let base = if prefix == PrefixEncoding::Ascii {
                b'0'
            } else {
                0xf0
            };
            // Lengths are at most 9999 (checked against the prefix capacity).
            let digit = |div: usize| base + u8::try_from(len / div % 10).unwrap_or(0);
            match digits {
                1 => out.push(digit(1)),
                2 => out.extend([digit(10), digit(1)]),
                3 => out.extend([digit(100), digit(10), digit(1)]),
                _ => out.extend([digit(1000), digit(100), digit(10), digit(1)]),
            }
        }
        PrefixEncoding::Bcd => {
            let w = prefix.width(digits);
            let mut v = len;
            let mut d = [0_u8; 2];
            for slot in d[..w].iter_mut().rev() {
                let lo = u8::try_from(v % 10).unwrap_or(0);
                v /= 10;
                let hi = u8::try_from(v % 10).unwrap_or(0);
                v /= 10;
                *slot = hi << 4 | lo;
            }
            out.extend_from_slice(&d[..w]);
        }
        PrefixEncoding::Binary => {
            if prefix.width(digits) == 1 {
                out.push(u8::try_from(len).unwrap_or(u8::MAX));
            } else {
                out.extend_from_slice(&u16::try_from(len).unwrap_or(u16::MAX).to_be_bytes());
            }
        }
    }
}

/// Writes one item (element or subfield) from its input.
pub(crate) fn write_item(
    f: &Format,
    input: Input<'_>,
    out: &mut Vec<u8>,
    place: Place,
) -> Result<(), EncodeError> {
    let err = |k| EncodeError::new(place, k);
    let src = match input {
        Input::None => return Ok(()),
        Input::Text(t) => TextSrc::Plain(t.as_bytes()),
        Input::Wire(Wired {
            format,
            bytes,
            units,
        }) => {
            // The decoder checked these bytes against `format`, which keeps
            // the conversions below in bounds.
            if format.kind == f.kind && format.encoding == f.encoding && format.pad == f.pad {
                // Same wire form: copy, after the length rules of the target.
                match f.length {
                    Length::Fixed(n) if n == units => {}
                    Length::Var {
                        digits,
                        max,
                        prefix,
                    } if units <= max => write_prefix(prefix, digits, units, out),
                    _ => {
                        return write_item_text(
                            f,
                            TextSrc::from_wire(format, bytes, units),
                            out,
                            place,
                        );
                    }
                }
                out.extend_from_slice(bytes);
                return Ok(());
            }
            TextSrc::from_wire(format, bytes, units)
        }
    };
    write_item_text(f, src, out, place).map_err(|e| err(e.kind))
}

fn write_item_text(
    f: &Format,
    src: TextSrc<'_>,
    out: &mut Vec<u8>,
    place: Place,
) -> Result<(), EncodeError> {
    let err = |k| EncodeError::new(place, k);
    let text_len = src.len();
    // Check the characters first.
    let hexy = matches!(f.encoding, Encoding::Binary | Encoding::Hex);
    if let TextSrc::Plain(t) = src {
        if let Some(i) = first_bad_ascii(f.kind, t) {
            return Err(err(if hexy {
                EK::InvalidHex { index: i }
            } else {
                EK::InvalidCharacter { index: i }
            }));
        }
    } else {
        for i in 0..text_len {
            if !char_ok(f.kind, src.at(i), i) {
                return Err(err(EK::InvalidCharacter { index: i }));
            }
        }
    }
    if f.encoding == Encoding::Binary && !text_len.is_multiple_of(2) {
        return Err(err(EK::OddLength));
    }
    let units = if f.encoding == Encoding::Binary {
        text_len / 2
    } else {
        text_len
    };
    if f.encoding == Encoding::Hex && units % 2 != 0 {
        return Err(err(EK::OddLength));
    }
    // Length rules; short fixed values are padded when the format has a pad.
    let (total, pad) = match f.length {
        Length::Fixed(n) => {
            if units == n {
                (n, 0)
            } else if units < n && f.pad.is_some() {
                (n, n - units)
            } else {
                return Err(err(EK::WrongLength {
                    len: units,
                    expected: n,
                }));
            }
        }
        Length::Var {
            digits,
            max,
            prefix,
        } => {
            if units > max {
                return Err(err(EK::TooLong { len: units, max }));
            }
            write_prefix(prefix, digits, units, out);
            (units, 0)
        }
    };
    let (pad_left, pad_char) = f.pad.map_or((false, b' '), |p| (p.left, p.char));
    match f.encoding {
        Encoding::Ascii | Encoding::Hex => {
            if pad > 0 && pad_left {
                out.resize(out.len() + pad, pad_char);
            }
            match src {
                TextSrc::Plain(t) => out.extend_from_slice(t),
                _ => out.extend((0..text_len).map(|i| src.at(i))),
            }
            if pad > 0 && !pad_left {
                out.resize(out.len() + pad, pad_char);
            }
        }
        Encoding::Ebcdic => {
            let p = ebcdic::from_ascii(pad_char).unwrap_or(0x40);
            if pad > 0 && pad_left {
                out.resize(out.len() + pad, p);
            }
            out.extend((0..text_len).map(|i| ebcdic::from_ascii(src.at(i)).unwrap_or(0x40)));
            if pad > 0 && !pad_left {
                out.resize(out.len() + pad, p);
            }
        }
        Encoding::Binary => {
            out.reserve(units);
            for i in 0..units {
                let hi = hex::nibble(src.at(2 * i)).unwrap_or(0);
                let lo = hex::nibble(src.at(2 * i + 1)).unwrap_or(0);
                out.push(hi << 4 | lo);
            }
        }
        Encoding::Bcd => {
            // Digits to write: `pad` fillers, the text, and one filler nibble
            // when the count is odd.
            let pad_nibble = hex::nibble(pad_char).unwrap_or(0);
            let odd = total % 2 == 1;
            let lead = if pad_left { pad } else { 0 } + usize::from(odd && pad_left);
            let nibbles = total + usize::from(odd);
            let nib = |k: usize| -> u8 {
                if k < lead || k >= lead + text_len {
                    pad_nibble
                } else {
                    match src.at(k - lead) {
                        b'=' | b'D' => 0x0d,
                        c => c.wrapping_sub(b'0') & 0x0f,
                    }
                }
            };
            out.reserve(nibbles / 2);
            for k in (0..nibbles).step_by(2) {
                out.push(nib(k) << 4 | nib(k + 1));
            }
        }
    }
    Ok(())
}

fn write_bitmap(enc: BitmapEncoding, bits: u64, out: &mut Vec<u8>) {
    match enc {
        BitmapEncoding::Binary => out.extend_from_slice(&bits.to_be_bytes()),
        BitmapEncoding::Hex => {
            for i in (0..16).rev() {
                out.push(hex::digit_upper(
                    u8::try_from(bits >> (4 * i) & 0xf).unwrap_or(0),
                ));
            }
        }
    }
}

impl Spec {
    /// Encodes a message, appending it to `out` (the caller clears and
    /// reuses the buffer). On error `out` may hold a partial message.
    pub fn encode(&self, msg: &MessageBuilder<'_>, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        if !msg.mti.iter().all(u8::is_ascii_digit) {
            return Err(EncodeError::new(Place::Mti, EK::BadMti));
        }
        match self.mti {
            MtiEncoding::Ascii => out.extend_from_slice(&msg.mti),
            MtiEncoding::Ebcdic => out.extend(msg.mti.iter().map(|&c| c - b'0' + 0xf0)),
            MtiEncoding::Bcd => {
                let d = msg.mti.map(|c| c - b'0');
                out.push(d[0] << 4 | d[1]);
                out.push(d[2] << 4 | d[3]);
            }
        }
        // Element n is bit n-1; the wire bitmap has element 1 in the top bit.
        let mut present = msg.present & !1;
        if present >> 64 != 0 {
            present |= 1;
        }
        let wire = present.reverse_bits();
        write_bitmap(self.bitmap, u64::try_from(wire >> 64).unwrap_or(0), out);
        if present & 1 != 0 {
            write_bitmap(
                self.bitmap,
                u64::try_from(wire & u128::from(u64::MAX)).unwrap_or(0),
                out,
            );
        }
        let mut bits = present & !1;
        while bits != 0 {
            let n = u8::try_from(bits.trailing_zeros() + 1).unwrap_or(MAX_ELEMENT);
            bits &= bits - 1;
            let place = Place::Element(n);
            let Some(Some(format)) = self.table.get(usize::from(n)) else {
                return Err(EncodeError::new(place, EK::UndefinedElement));
            };
            write_item(format, msg.values[usize::from(n)], out, place)?;
        }
        if out.len() - start > self.limits.max_message {
            return Err(EncodeError::new(
                Place::Message,
                EK::TooLarge {
                    max: self.limits.max_message,
                },
            ));
        }
        Ok(())
    }

    /// Encodes into a new buffer.
    pub fn encode_to_vec(&self, msg: &MessageBuilder<'_>) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(256);
        self.encode(msg, &mut out)?;
        Ok(out)
    }
}

/// An element used against its message type's rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UsageViolation {
    /// The element.
    pub element: u8,
    /// What the rule says about it (`Mandatory`: missing; `Forbidden`: present).
    pub rule: crate::spec::Usage,
}

impl Spec {
    /// The elements a decoded message uses against the rules of its MTI
    /// (mandatory ones missing, forbidden ones present); empty when the
    /// dialect lists no rules for that MTI.
    pub fn check_usage(&self, msg: &Message<'_>) -> Vec<UsageViolation> {
        let Some(rule) = self.message(msg.mti()) else {
            return Vec::new();
        };
        rule.usage
            .iter()
            .filter(|&(&n, &u)| match u {
                crate::spec::Usage::Mandatory => !msg.has(n),
                crate::spec::Usage::Forbidden => msg.has(n),
                crate::spec::Usage::Optional => false,
            })
            .map(|(&element, &rule)| UsageViolation { element, rule })
            .collect()
    }
}
