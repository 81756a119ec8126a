//! Hexadecimal helpers (no allocation on the hot path).

const UPPER: &[u8; 16] = b"0123456789ABCDEF";
const LOWER: &[u8; 16] = b"0123456789abcdef";

/// The value of one hex digit (either case).
#[inline]
pub(crate) fn nibble(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The uppercase hex digit of a nibble (0..=15).
#[inline]
pub(crate) fn digit_upper(n: u8) -> u8 {
    UPPER[usize::from(n & 0x0f)]
}

/// Appends the uppercase hex of `bytes` to `out`.
pub(crate) fn push_upper(bytes: &[u8], out: &mut String) {
    out.reserve(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(UPPER[usize::from(b >> 4)]));
        out.push(char::from(UPPER[usize::from(b & 0x0f)]));
    }
}

/// Lowercase hex of `bytes`.
pub(crate) fn encode_lower(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(LOWER[usize::from(b >> 4)]));
        s.push(char::from(LOWER[usize::from(b & 0x0f)]));
    }
    s
}

/// Uppercase hex of `bytes`.
pub(crate) fn encode_upper(bytes: &[u8]) -> String {
    let mut s = String::new();
    push_upper(bytes, &mut s);
    s
}

/// Decodes hex text (either case) into `out`; on failure, the index of the
/// first bad character (or `Err(None)` for odd length).
pub(crate) fn decode_into(text: &[u8], out: &mut Vec<u8>) -> Result<(), Option<usize>> {
    if !text.len().is_multiple_of(2) {
        return Err(None);
    }
    out.reserve(text.len() / 2);
    for (i, pair) in text.chunks_exact(2).enumerate() {
        let hi = nibble(pair[0]).ok_or(Some(2 * i))?;
        let lo = nibble(pair[1]).ok_or(Some(2 * i + 1))?;
        out.push((hi << 4) | lo);
    }
    Ok(())
}
