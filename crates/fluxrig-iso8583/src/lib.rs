//! ISO 8583 for fluxrig.
//!
//! * [`sdl`]: dialects as YAML data (wire layer and semantic layer), loaded
//!   strictly with `file:line:col` problems;
//! * [`Spec`]: a compiled dialect, identified by the SHA-256 of its
//!   canonical form ([`SpecHash`]);
//! * the codec: [`Spec::decode`] borrows the frame and copies nothing,
//!   [`Spec::encode`] writes a [`MessageBuilder`] into a reused buffer;
//!   errors name the element and byte offset and never carry values;
//! * [`to_value`] / [`encode_value`]: the fluxMsg `data` layout
//!   (`docs/iso8583-data-layout.md`);
//! * [`mask`]: PAN as BIN + last 4, everything else classified fully masked;
//! * [`store`]: the content-addressed spec store; [`bundled`]: the dialects
//!   shipped in the binary; [`framing`] (and `net` with the `net` feature):
//!   length prefixes and TPDU headers.
//!
//! ```
//! use fluxrig_iso8583::{bundled, MessageBuilder};
//!
//! let spec = bundled::bundled("iso8583-1987-ascii").unwrap().unwrap();
//! let mut b = MessageBuilder::new();
//! b.set_mti("0800").set(11, "000001").set(70, "301");
//! let mut out = Vec::new();
//! spec.encode(&b, &mut out).unwrap();
//! let msg = spec.decode(&out).unwrap();
//! assert_eq!(msg.mti(), "0800");
//! assert_eq!(msg.field(70).unwrap().as_str(), Some("301"));
//! ```

#![warn(missing_docs)]

pub mod bundled;
mod codec;
mod data;
pub mod doc;
mod ebcdic;
mod error;
pub mod framing;
mod hex;
pub mod mask;
#[cfg(feature = "net")]
pub mod net;
pub mod sdl;
mod spec;
pub mod store;

pub use codec::{Field, Input, Message, MessageBuilder, UsageViolation, Wired};
pub use data::{
    META_SPEC, MTI_KEY, encode_value, get_element, get_path, remove_element, set_element, to_value,
};
pub use error::{DecodeError, DecodeErrorKind, EncodeError, EncodeErrorKind, Place};
pub use spec::{
    BitmapEncoding, CharType, Element, Encoding, Format, Length, Limits, MAX_ELEMENT, MessageRule,
    MtiEncoding, Pad, PrefixEncoding, Sensitivity, Spec, SpecHash, Subfield, Subfields, TlvTag,
    Usage,
};
