//! Errors of the codec. They name the place (MTI, bitmap, element,
//! subfield) and the byte offset, and never carry field content: an ISO 8583
//! message holds card data, and error text ends up in logs.

use std::fmt;

/// Where in a message something went wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Place {
    /// The message type indicator.
    Mti,
    /// The primary bitmap.
    PrimaryBitmap,
    /// The secondary bitmap.
    SecondaryBitmap,
    /// A data element, by number (2..=128).
    Element(u8),
    /// A subfield of a data element: element number, subfield number (for
    /// BER-TLV subfields, the index of the TLV item, from 1).
    Subfield(u8, u8),
    /// The whole message (size limits, bytes after the last element).
    Message,
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Place::Mti => f.write_str("mti"),
            Place::PrimaryBitmap => f.write_str("primary bitmap"),
            Place::SecondaryBitmap => f.write_str("secondary bitmap"),
            Place::Element(n) => write!(f, "element {n}"),
            Place::Subfield(n, s) => write!(f, "element {n}.{s}"),
            Place::Message => f.write_str("message"),
        }
    }
}

/// What is wrong with a message being decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The message is larger than the codec accepts.
    TooLarge {
        /// Size of the input.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The input ends before the item does.
    Truncated {
        /// Bytes the item needs.
        need: usize,
        /// Bytes left in the input.
        have: usize,
    },
    /// A length prefix that is not a number in its encoding.
    BadLengthPrefix,
    /// A length prefix above the element's maximum.
    LengthOverMax {
        /// The announced length.
        len: usize,
        /// The element's maximum.
        max: usize,
    },
    /// A character outside the element's character set (position from 0
    /// within the item; the character itself is not reported).
    InvalidCharacter {
        /// Position of the first bad character.
        index: usize,
    },
    /// A BCD nibble that is not a decimal digit (or allowed filler).
    InvalidBcd {
        /// Position of the bad byte within the item.
        index: usize,
    },
    /// A hexadecimal item with a character that is not a hex digit.
    InvalidHex {
        /// Position of the bad character within the item.
        index: usize,
    },
    /// The bitmap announces an element the dialect does not define.
    UndefinedElement,
    /// Bytes left after the last element the bitmap announces.
    TrailingBytes {
        /// How many.
        count: usize,
    },
    /// A hex-encoded item of odd length.
    OddLength,
    /// A secondary bitmap that announces no element: the message would
    /// have two encodings, so it is refused.
    EmptySecondaryBitmap,
}

impl fmt::Display for DecodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            DecodeErrorKind::TooLarge { size, max } => {
                write!(f, "message of {size} bytes is over the limit of {max}")
            }
            DecodeErrorKind::Truncated { need, have } => {
                write!(f, "truncated: needs {need} bytes, {have} left")
            }
            DecodeErrorKind::BadLengthPrefix => f.write_str("length prefix is not a number"),
            DecodeErrorKind::LengthOverMax { len, max } => {
                write!(f, "length {len} is over the maximum of {max}")
            }
            DecodeErrorKind::InvalidCharacter { index } => {
                write!(f, "invalid character at position {index}")
            }
            DecodeErrorKind::InvalidBcd { index } => {
                write!(f, "invalid BCD digit in byte {index}")
            }
            DecodeErrorKind::InvalidHex { index } => {
                write!(f, "invalid hex digit at position {index}")
            }
            DecodeErrorKind::UndefinedElement => {
                f.write_str("present in the bitmap but not defined by the dialect")
            }
            DecodeErrorKind::TrailingBytes { count } => {
                write!(f, "{count} bytes after the last element")
            }
            DecodeErrorKind::OddLength => f.write_str("hex data of odd length"),
            DecodeErrorKind::EmptySecondaryBitmap => {
                f.write_str("announces no element (bit 1 set without elements 65-128)")
            }
        }
    }
}

/// A message that cannot be decoded: where, at which byte offset of the
/// input, and why. Never contains field content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{place} at byte {offset}: {kind}")]
pub struct DecodeError {
    /// The item being decoded.
    pub place: Place,
    /// Offset in the input where that item (or its length prefix) starts.
    pub offset: usize,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn new(place: Place, offset: usize, kind: DecodeErrorKind) -> DecodeError {
        DecodeError {
            place,
            offset,
            kind,
        }
    }
}

/// What is wrong with a message being encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeErrorKind {
    /// The MTI is not four decimal digits.
    BadMti,
    /// The message sets an element the dialect does not define.
    UndefinedElement,
    /// A fixed-length value of the wrong length that cannot be padded.
    WrongLength {
        /// Length of the value, in the element's units.
        len: usize,
        /// The fixed length.
        expected: usize,
    },
    /// A value longer than the element allows.
    TooLong {
        /// Length of the value, in the element's units.
        len: usize,
        /// The maximum.
        max: usize,
    },
    /// A character outside the element's character set (position from 0).
    InvalidCharacter {
        /// Position of the first bad character.
        index: usize,
    },
    /// A binary element given as text that is not hexadecimal.
    InvalidHex {
        /// Position of the bad character.
        index: usize,
    },
    /// A binary element given as hex text of odd length.
    OddLength,
    /// A value of the wrong shape in a fluxMsg data tree.
    WrongShape(&'static str),
    /// The encoded message would be larger than the codec allows.
    TooLarge {
        /// The limit.
        max: usize,
    },
}

impl fmt::Display for EncodeErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EncodeErrorKind::BadMti => f.write_str("must be four decimal digits"),
            EncodeErrorKind::UndefinedElement => f.write_str("not defined by the dialect"),
            EncodeErrorKind::WrongLength { len, expected } => {
                write!(f, "length {len}, the element is fixed at {expected}")
            }
            EncodeErrorKind::TooLong { len, max } => {
                write!(f, "length {len} is over the maximum of {max}")
            }
            EncodeErrorKind::InvalidCharacter { index } => {
                write!(f, "invalid character at position {index}")
            }
            EncodeErrorKind::InvalidHex { index } => {
                write!(f, "invalid hex digit at position {index}")
            }
            EncodeErrorKind::OddLength => f.write_str("hex data of odd length"),
            EncodeErrorKind::WrongShape(expected) => write!(f, "expected {expected}"),
            EncodeErrorKind::TooLarge { max } => {
                write!(f, "encoded message would be over the limit of {max} bytes")
            }
        }
    }
}

/// A message that cannot be encoded. Never contains field content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{place}: {kind}")]
pub struct EncodeError {
    /// The item being encoded.
    pub place: Place,
    /// What is wrong.
    pub kind: EncodeErrorKind,
}

impl EncodeError {
    pub(crate) fn new(place: Place, kind: EncodeErrorKind) -> EncodeError {
        EncodeError { place, kind }
    }
}
