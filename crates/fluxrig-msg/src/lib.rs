//! The fluxMsg envelope, its deterministic CBOR and JSON forms, and the
//! fluxID / fluxEntityID identity scheme.
//!
//! This crate has no async runtime and no I/O beyond the id generator's
//! optional state file: it is the shared vocabulary of every other crate.
//!
//! ```
//! use fluxrig_msg::{FluxMsg, FluxId, Map, Value};
//!
//! let data: Map = [("amount", Value::from(1250)), ("currency", Value::from("EUR"))]
//!     .into_iter()
//!     .collect();
//! let msg = FluxMsg::new(FluxId::from_raw(42), Value::Map(data));
//! let bytes = msg.to_cbor();
//! assert!(FluxMsg::is_deterministic(&bytes));
//! assert_eq!(FluxMsg::from_cbor(&bytes).unwrap(), msg);
//! ```

pub mod cbor;
mod error;
pub mod id;
pub mod json;
mod msg;
mod value;

pub use cbor::Limits;
pub use error::DecodeError;
pub use id::{EntityId, EntityType, FluxId, IdGenerator};
pub use msg::{Flags, FluxMsg, Hop, Meta, ReservedField, TraceContext, TraceParseError};
pub use value::{Integer, IntegerOutOfRange, Map, Simple, Value, hex};
