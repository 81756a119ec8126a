//! Errors of decoding CBOR and fluxMsg envelopes.
//!
//! Every error names the byte offset where the problem starts and, for
//! envelope errors, the field. No error ever carries field *values*: messages
//! may hold card data, and errors end up in logs.

/// Why a byte sequence is not an acceptable CBOR item or fluxMsg.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ends in the middle of an item.
    #[error("truncated input: an item is cut off at byte {offset}")]
    Truncated {
        /// Length of the input (where more bytes were expected).
        offset: usize,
    },
    /// The input is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// Size of the input (or of the item when decoding a sequence).
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// Arrays, maps and tags nest deeper than the limit.
    #[error("nesting deeper than {limit} levels at byte {offset}")]
    TooDeep {
        /// Offset of the item that goes too deep.
        offset: usize,
        /// The configured limit.
        limit: u32,
    },
    /// The message's `path` has more hops than the limit.
    #[error("path has more than {limit} hops at byte {offset}")]
    TooManyHops {
        /// Offset of the `path` array.
        offset: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A length or count declares more than the input can hold.
    #[error(
        "length {declared} declared at byte {offset} exceeds the {available} bytes that follow"
    )]
    LengthExceedsInput {
        /// Offset of the head declaring the length.
        offset: usize,
        /// The declared length (bytes, or items for arrays and maps).
        declared: u64,
        /// Bytes actually left in the input.
        available: u64,
    },
    /// A text string is not valid UTF-8.
    #[error("text string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Offset of the text string's head.
        offset: usize,
    },
    /// An indefinite-length item, which the deterministic profile forbids.
    #[error("indefinite-length item at byte {offset} (only definite lengths are accepted)")]
    IndefiniteLength {
        /// Offset of the item's head.
        offset: usize,
    },
    /// A map repeats a key.
    #[error("duplicate map key at byte {offset}")]
    DuplicateKey {
        /// Offset of the second occurrence of the key.
        offset: usize,
    },
    /// Bytes follow the item where the input should end.
    #[error("trailing bytes after the item, starting at byte {offset}")]
    TrailingBytes {
        /// Offset of the first trailing byte.
        offset: usize,
    },
    /// The bytes are not well-formed CBOR.
    #[error("malformed CBOR at byte {offset}: {reason}")]
    Malformed {
        /// Offset of the bad item.
        offset: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Well-formed CBOR that does not fit the fluxMsg schema.
    #[error("field `{field}` at byte {offset}: {reason}")]
    Schema {
        /// Offset of the offending item.
        offset: usize,
        /// The envelope field (e.g. `path[2].port`).
        field: String,
        /// What the schema expects.
        reason: &'static str,
    },
}

impl DecodeError {
    /// The byte offset the error points at.
    pub fn offset(&self) -> usize {
        match self {
            DecodeError::Truncated { offset }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::TooManyHops { offset, .. }
            | DecodeError::LengthExceedsInput { offset, .. }
            | DecodeError::InvalidUtf8 { offset }
            | DecodeError::IndefiniteLength { offset }
            | DecodeError::DuplicateKey { offset }
            | DecodeError::TrailingBytes { offset }
            | DecodeError::Malformed { offset, .. }
            | DecodeError::Schema { offset, .. } => *offset,
            DecodeError::TooLarge { .. } => 0,
        }
    }

    /// The same error with its offset moved by `base` (for items inside a
    /// larger buffer, such as a CBOR sequence).
    #[must_use]
    pub fn shifted(mut self, base: usize) -> DecodeError {
        match &mut self {
            DecodeError::Truncated { offset }
            | DecodeError::TooDeep { offset, .. }
            | DecodeError::TooManyHops { offset, .. }
            | DecodeError::LengthExceedsInput { offset, .. }
            | DecodeError::InvalidUtf8 { offset }
            | DecodeError::IndefiniteLength { offset }
            | DecodeError::DuplicateKey { offset }
            | DecodeError::TrailingBytes { offset }
            | DecodeError::Malformed { offset, .. }
            | DecodeError::Schema { offset, .. } => *offset += base,
            DecodeError::TooLarge { .. } => {}
        }
        self
    }
}
