//! A compiled dialect: the tables the codec runs on, and the semantic layer
//! (aliases, sensitivity, message rules) the rest of fluxrig reads.
//!
//! A [`Spec`] is only made by the SDL loader ([`crate::sdl`]), which checks
//! every invariant the codec relies on; its content is read-only.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// Highest data element number (secondary bitmap only; no tertiary bitmap).
pub const MAX_ELEMENT: u8 = 128;

/// Character class of a data element or subfield (ISO 8583 attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CharType {
    /// Numeric digits.
    N,
    /// Alphabetic (checked as printable text).
    A,
    /// Alphanumeric (checked as printable text).
    An,
    /// Alphanumeric and special (printable text).
    Ans,
    /// Numeric and special (printable text).
    Ns,
    /// A `C`/`D` sign followed by digits (amounts with a sign, e.g. DE 28).
    Xn,
    /// Track 2 or 3 data: digits and the separators `=` and `D`.
    Z,
    /// Binary data (shown as hexadecimal text).
    B,
}

impl CharType {
    /// The SDL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            CharType::N => "n",
            CharType::A => "a",
            CharType::An => "an",
            CharType::Ans => "ans",
            CharType::Ns => "ns",
            CharType::Xn => "xn",
            CharType::Z => "z",
            CharType::B => "b",
        }
    }

    /// True for the types whose content is digits (n, z) and may be BCD.
    pub fn is_numeric(self) -> bool {
        matches!(self, CharType::N | CharType::Z)
    }
}

/// How the characters (or bytes) of an item are written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// One ASCII byte per character.
    Ascii,
    /// One EBCDIC (code page 037) byte per character.
    Ebcdic,
    /// Two digits per byte (binary-coded decimal); lengths count digits.
    Bcd,
    /// Raw bytes (type `b` only); lengths count bytes.
    Binary,
    /// Binary data written as ASCII hexadecimal text (type `b` only);
    /// lengths count hex characters.
    Hex,
}

impl Encoding {
    /// The SDL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Ascii => "ascii",
            Encoding::Ebcdic => "ebcdic",
            Encoding::Bcd => "bcd",
            Encoding::Binary => "binary",
            Encoding::Hex => "hex",
        }
    }
}

/// How a variable length is written before the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrefixEncoding {
    /// Decimal digits in ASCII, one byte per digit.
    Ascii,
    /// Decimal digits in EBCDIC, one byte per digit.
    Ebcdic,
    /// Decimal digits in BCD, two per byte (LL: 1 byte, LLL/LLLL: 2 bytes).
    Bcd,
    /// An unsigned big-endian integer (L/LL: 1 byte, LLL/LLLL: 2 bytes).
    Binary,
}

impl PrefixEncoding {
    /// The SDL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PrefixEncoding::Ascii => "ascii",
            PrefixEncoding::Ebcdic => "ebcdic",
            PrefixEncoding::Bcd => "bcd",
            PrefixEncoding::Binary => "binary",
        }
    }

    /// Width in bytes of a prefix of `digits` decimal digits (1..=4).
    pub fn width(self, digits: u8) -> usize {
        match self {
            PrefixEncoding::Ascii | PrefixEncoding::Ebcdic => usize::from(digits),
            PrefixEncoding::Bcd => usize::from(digits).div_ceil(2),
            PrefixEncoding::Binary => {
                if digits <= 2 {
                    1
                } else {
                    2
                }
            }
        }
    }

    /// Largest length a prefix of `digits` digits can carry.
    pub fn capacity(self, digits: u8) -> usize {
        let decimal = 10_usize.pow(u32::from(digits)) - 1;
        match self {
            PrefixEncoding::Binary => {
                if digits <= 2 {
                    255
                } else {
                    65_535
                }
            }
            _ => decimal,
        }
    }
}

/// The length of an item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Length {
    /// Always this many units.
    Fixed(usize),
    /// A length prefix of `digits` decimal digits (L=1 … LLLL=4), then up to
    /// `max` units.
    Var {
        /// Digits of the prefix: 1 (L), 2 (LL), 3 (LLL) or 4 (LLLL).
        digits: u8,
        /// Most units allowed.
        max: usize,
        /// How the prefix is written.
        prefix: PrefixEncoding,
    },
}

impl Length {
    /// Most units the item may hold.
    pub fn max(self) -> usize {
        match self {
            Length::Fixed(n) => n,
            Length::Var { max, .. } => max,
        }
    }
}

/// Which side filler goes on and which character it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Pad {
    /// `true` to pad on the left (numbers), `false` on the right (text).
    pub left: bool,
    /// The filler character (ASCII); for BCD, a hex digit used as the nibble.
    pub char: u8,
}

/// Classification of card and personal data (drives masking and the coat check).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sensitivity {
    /// Primary account number: shown as BIN (first 6) + last 4.
    Pan,
    /// Magnetic stripe track data: always fully masked.
    Track,
    /// PIN block: always fully masked.
    Pin,
    /// Card verification values: always fully masked.
    Cvv,
    /// Other personal data (names, addresses): fully masked.
    Pii,
}

impl Sensitivity {
    /// The SDL spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Sensitivity::Pan => "pan",
            Sensitivity::Track => "track",
            Sensitivity::Pin => "pin",
            Sensitivity::Cvv => "cvv",
            Sensitivity::Pii => "pii",
        }
    }
}

/// The wire format of an element or subfield.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
pub struct Format {
    /// Character class.
    #[serde(rename = "type")]
    pub kind: CharType,
    /// Fixed or variable length.
    pub length: Length,
    /// Data encoding.
    pub encoding: Encoding,
    /// Filler used to pad short fixed values on encode and odd BCD digit
    /// counts; `None` means values must have the exact length.
    pub pad: Option<Pad>,
}

impl Format {
    /// Bytes on the wire for `units` units of data (without the prefix).
    pub fn wire_len(&self, units: usize) -> usize {
        match self.encoding {
            Encoding::Bcd => units.div_ceil(2),
            _ => units,
        }
    }

    /// Length of the text form of `units` units of data.
    pub fn text_len(&self, units: usize) -> usize {
        match self.encoding {
            Encoding::Binary => units * 2,
            _ => units,
        }
    }
}

/// How the content of an element is divided into subfields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "layout")]
pub enum Subfields {
    /// Subfields one after the other, numbered from 1; trailing subfields may
    /// be absent.
    Positional {
        /// Subfields by number.
        fields: BTreeMap<u8, Subfield>,
    },
    /// A bitmap (8 bytes binary, or 16 hex characters) announcing which of
    /// the numbered subfields (1..=64) follow, in order.
    Bitmap {
        /// `true` when the bitmap is 16 hex characters, `false` for 8 bytes.
        hex: bool,
        /// Subfields by number.
        fields: BTreeMap<u8, Subfield>,
    },
    /// BER-TLV items (EMV chip data in DE 55).
    Tlv {
        /// Names and classification of known tags (uppercase hex).
        tags: BTreeMap<String, TlvTag>,
    },
}

/// One subfield of a positional or bitmapped element.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Subfield {
    /// Human name.
    pub name: String,
    /// Wire format within the element's content.
    pub format: Format,
    /// Classification, if the subfield carries card or personal data.
    pub sensitivity: Option<Sensitivity>,
    /// Longer description for documentation.
    pub description: Option<String>,
}

/// A known BER-TLV tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TlvTag {
    /// Human name.
    pub name: String,
    /// Classification, if the tag carries card data.
    pub sensitivity: Option<Sensitivity>,
    /// Longer description for documentation.
    pub description: Option<String>,
}

/// One data element of a dialect.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Element {
    /// Element number, 2..=128.
    pub number: u8,
    /// Human name.
    pub name: String,
    /// Wire format.
    pub format: Format,
    /// Dotted alias, e.g. `card.pan`.
    pub alias: Option<String>,
    /// Classification, if the element carries card or personal data.
    pub sensitivity: Option<Sensitivity>,
    /// Subfield layout, if any.
    pub subfields: Option<Subfields>,
    /// Longer description for documentation.
    pub description: Option<String>,
    /// The key of this element in a fluxMsg data tree: the alias segments,
    /// or `["de<n>"]`.
    #[serde(skip)]
    pub(crate) path: Vec<String>,
}

impl Element {
    /// The path of this element in a fluxMsg `data` tree (see
    /// `docs/iso8583-data-layout.md`): the alias split at dots, or `de<n>`.
    pub fn data_path(&self) -> &[String] {
        &self.path
    }

    /// True when this element or any of its subfields is classified.
    pub fn is_sensitive(&self) -> bool {
        self.sensitivity.is_some()
            || match &self.subfields {
                Some(Subfields::Positional { fields } | Subfields::Bitmap { fields, .. }) => {
                    fields.values().any(|f| f.sensitivity.is_some())
                }
                Some(Subfields::Tlv { tags }) => tags.values().any(|t| t.sensitivity.is_some()),
                None => false,
            }
    }
}

/// How the MTI is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MtiEncoding {
    /// Four ASCII digits.
    Ascii,
    /// Four EBCDIC digits.
    Ebcdic,
    /// Two BCD bytes.
    Bcd,
}

/// How bitmaps are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BitmapEncoding {
    /// 8 raw bytes per bitmap.
    Binary,
    /// 16 ASCII hex characters per bitmap (written uppercase, read in either case).
    Hex,
}

/// Usage of an element in a message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Usage {
    /// Must be present.
    Mandatory,
    /// May be present.
    Optional,
    /// Must not be present.
    Forbidden,
}

/// The rules of one message type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MessageRule {
    /// Human name, e.g. "Authorization request".
    pub name: Option<String>,
    /// The MTI of the response, if this is a request.
    pub response: Option<String>,
    /// Element usage; elements not listed are optional.
    pub usage: BTreeMap<u8, Usage>,
    /// Elements a response copies from this request.
    pub echo: Vec<u8>,
}

/// A compiled ISO 8583 dialect, identified by the SHA-256 of its canonical form.
#[derive(Debug, Clone, Serialize)]
pub struct Spec {
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: Option<String>,
    pub(crate) mti: MtiEncoding,
    pub(crate) bitmap: BitmapEncoding,
    pub(crate) elements: Vec<Option<Element>>,
    pub(crate) messages: BTreeMap<String, MessageRule>,
    #[serde(skip)]
    pub(crate) hash: SpecHash,
    #[serde(skip)]
    pub(crate) limits: Limits,
    /// The element formats, dense (the codec's table): `table[n]`.
    #[serde(skip)]
    pub(crate) table: Vec<Option<Format>>,
    /// Element number by alias.
    #[serde(skip)]
    pub(crate) by_alias: std::collections::HashMap<String, u8>,
    /// The elements with a classified value, with their labels: what the
    /// maskers and the coat check visit on every message.
    #[serde(skip)]
    pub(crate) classified: Vec<Classified>,
}

/// An element that is, or has subfields that are, classified; labels made
/// once when the dialect is compiled rather than per message.
#[derive(Debug, Clone)]
pub(crate) struct Classified {
    /// The element's number.
    pub(crate) number: u8,
    /// Its data path joined with `.` (`card.pan`, `de48`).
    pub(crate) label: String,
    /// Subfields by key (`sf3`), with their labels (`de48.sf3`) and classes.
    pub(crate) subfields: Vec<(String, String, Sensitivity)>,
}

impl Classified {
    /// The classified places of a dialect's elements.
    pub(crate) fn of(elements: &[Option<Element>]) -> Vec<Classified> {
        elements
            .iter()
            .flatten()
            .filter(|e| e.is_sensitive())
            .map(|e| {
                let label = e.path.join(".");
                let subfields = match &e.subfields {
                    Some(Subfields::Positional { fields } | Subfields::Bitmap { fields, .. }) => {
                        fields
                            .iter()
                            .filter_map(|(n, sf)| {
                                let key = format!("sf{n}");
                                let l = format!("{label}.{key}");
                                sf.sensitivity.map(|s| (key, l, s))
                            })
                            .collect()
                    }
                    _ => Vec::new(),
                };
                Classified {
                    number: e.number,
                    label,
                    subfields,
                }
            })
            .collect()
    }
}

/// Size limits of the codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted by decode and produced by encode, in bytes.
    pub max_message: usize,
}

impl Limits {
    /// 64 KiB, the most a 2-byte length prefix can frame.
    pub const DEFAULT: Limits = Limits {
        max_message: 65_535,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}

/// SHA-256 of a spec's canonical form.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SpecHash(pub [u8; 32]);

impl SpecHash {
    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        crate::hex::encode_lower(&self.0)
    }

    /// Parses 64 hex characters.
    pub fn from_hex(s: &str) -> Option<SpecHash> {
        let b = s.as_bytes();
        if b.len() != 64 {
            return None;
        }
        let mut out = [0_u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            out[i] = (crate::hex::nibble(pair[0])? << 4) | crate::hex::nibble(pair[1])?;
        }
        Some(SpecHash(out))
    }
}

impl fmt::Display for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for SpecHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpecHash({})", self.to_hex())
    }
}

impl Spec {
    /// The dialect's name, e.g. `iso8583-1987-ascii`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The dialect's version string.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The dialect's description.
    pub fn description(&self) -> Option<&str> {
        self.description.as_deref()
    }

    /// How the MTI is written.
    pub fn mti_encoding(&self) -> MtiEncoding {
        self.mti
    }

    /// How bitmaps are written.
    pub fn bitmap_encoding(&self) -> BitmapEncoding {
        self.bitmap
    }

    /// SHA-256 of the canonical form: the identity of this dialect. Decoded
    /// messages carry it (fluxMsg `meta` key `iso8583.spec`).
    pub fn hash(&self) -> SpecHash {
        self.hash
    }

    /// The codec's size limits.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Sets the codec's size limits.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The definition of element `n`, if the dialect has one.
    pub fn element(&self, n: u8) -> Option<&Element> {
        self.elements.get(usize::from(n)).and_then(Option::as_ref)
    }

    /// Every defined element, in number order.
    pub fn elements(&self) -> impl Iterator<Item = &Element> {
        self.elements.iter().flatten()
    }

    /// The element with this alias (e.g. `card.pan`).
    pub fn element_by_alias(&self, alias: &str) -> Option<&Element> {
        self.elements().find(|e| e.alias.as_deref() == Some(alias))
    }

    /// The rules of a message type, if the dialect lists it.
    pub fn message(&self, mti: &str) -> Option<&MessageRule> {
        self.messages.get(mti)
    }

    /// Every listed message type.
    pub fn messages(&self) -> impl Iterator<Item = (&str, &MessageRule)> {
        self.messages.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The MTI of the response to `mti`, when the dialect pairs them.
    pub fn response_mti(&self, mti: &str) -> Option<&str> {
        self.messages.get(mti).and_then(|m| m.response.as_deref())
    }

    /// The canonical form that is hashed: deterministic CBOR (RFC 8949
    /// §4.2.1, via `fluxrig_msg::cbor`) of the compiled dialect with every
    /// default made explicit. Formatting, comments, key order and spelled-out
    /// defaults of the YAML do not change it.
    pub fn canonical_cbor(&self) -> Vec<u8> {
        let json = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        let value = fluxrig_msg::json::value(&json, "spec").unwrap_or(fluxrig_msg::Value::Null);
        fluxrig_msg::cbor::to_vec(&value)
    }

    pub(crate) fn compute_hash(&mut self) {
        let digest = Sha256::digest(self.canonical_cbor());
        let mut h = [0_u8; 32];
        h.copy_from_slice(&digest);
        self.hash = SpecHash(h);
    }
}
