//! Tokens that stand in for parked values.
//!
//! - **Opaque** (default): `ct_` and 32 hex characters from 16 random bytes.
//!   They say nothing about the value and never look like a card number.
//! - **Format-preserving** (PANs of 13 to 19 digits): the same length, the
//!   first six digits (BIN) and the last four kept, the digits between
//!   derived from `HMAC-SHA256(token key, PAN ‖ attempt)`, and one of them
//!   set so that the whole number passes the Luhn check. The same PAN gives
//!   the same token under one key, another token under another key.
//!
//! Collisions: two PANs with the same BIN and last four can map to the same
//! token (the digits between are few). The vault detects it (the entry it
//! would replace has another value's fingerprint) and takes the next
//! attempt number, as it does when a token would equal the PAN itself;
//! after [`MAX_ATTEMPTS`] the park fails rather than risk a wrong restore.

use hmac::{Hmac, KeyInit, Mac as _};
use sha2::Sha256;

use crate::keys::Secret;

/// Attempts at a free format-preserving token before the park fails.
pub const MAX_ATTEMPTS: u32 = 64;

/// Prefix of opaque tokens.
pub const OPAQUE_PREFIX: &str = "ct_";

/// True when `s` has the form of an opaque token.
pub fn is_opaque(s: &str) -> bool {
    s.len() == OPAQUE_PREFIX.len() + 32
        && s.starts_with(OPAQUE_PREFIX)
        && s[OPAQUE_PREFIX.len()..]
            .bytes()
            .all(|b| b.is_ascii_hexdigit())
}

/// A new opaque token.
pub(crate) fn opaque(random: &[u8; 16]) -> String {
    format!("{OPAQUE_PREFIX}{}", crate::keys::hex(random))
}

/// True when `s` can get a format-preserving token: 13 to 19 ASCII digits.
pub fn fits_format_preserving(s: &str) -> bool {
    (13..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

/// True when the digits pass the Luhn check.
pub fn luhn_valid(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit()) && luhn_sum(digits.as_bytes(), 0).is_multiple_of(10)
}

/// Luhn sum of `digits`, positions counted from the right starting at
/// `offset` (0 = the check digit itself).
fn luhn_sum(digits: &[u8], offset: usize) -> u32 {
    digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &c)| luhn_digit(u32::from(c - b'0'), i + offset))
        .sum()
}

fn luhn_digit(d: u32, pos_from_right: usize) -> u32 {
    if pos_from_right % 2 == 1 {
        let x = d * 2;
        if x > 9 { x - 9 } else { x }
    } else {
        d
    }
}

/// The format-preserving token of `pan` (13..=19 digits, checked by the
/// caller) for `attempt`.
/// HMAC-SHA256 under `key`. A key shorter than the hash's 64-byte block is
/// zero-padded to it (RFC 2104, §2), so this is exactly HMAC with the
/// 32-byte key, built without a fallible constructor.
fn keyed(key: &Secret) -> Hmac<Sha256> {
    let mut block = [0_u8; 64];
    block[..32].copy_from_slice(&key.0);
    <Hmac<Sha256> as KeyInit>::new(&block.into())
}

pub(crate) fn format_preserving(key: &Secret, pan: &str, attempt: u32) -> String {
    let b = pan.as_bytes();
    let n = b.len();
    let mut mac = keyed(key);
    mac.update(b);
    mac.update(&attempt.to_be_bytes());
    let tag = mac.finalize().into_bytes();
    let mut out = b.to_vec();
    // Middle digits [6, n-4); the last of them is the Luhn fixer.
    let fix = n - 5;
    for (k, i) in (6..fix).enumerate() {
        let r = u16::from_be_bytes([tag[2 * k % 32], tag[(2 * k + 1) % 32]]);
        out[i] = b'0' + u8::try_from(r % 10).unwrap_or(0);
    }
    out[fix] = b'0';
    let pos = n - 1 - fix;
    let rest = luhn_sum(&out, 0);
    // The fixer's contribution must bring the sum to a multiple of 10; the
    // Luhn weight is a bijection on 0..=9, so exactly one digit does.
    for d in 0..10_u8 {
        if (rest + luhn_digit(u32::from(d), pos)).is_multiple_of(10) {
            out[fix] = b'0' + d;
            break;
        }
    }
    String::from_utf8(out).unwrap_or_default()
}

/// Keyed fingerprint of a value (to recognise it without decrypting).
pub(crate) fn fingerprint(key: &Secret, value: &[u8]) -> [u8; 32] {
    let mut mac = keyed(key);
    mac.update(value);
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {

    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keyed_is_hmac_with_the_32_byte_key() {
        let key = Secret([7; 32]);
        let mut a = keyed(&key);
        let mut b = <Hmac<Sha256>>::new_from_slice(&key.0).unwrap();
        a.update(b"4111111111111111");
        b.update(b"4111111111111111");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }

    #[test]
    fn luhn_known_values() {
        assert!(luhn_valid("4111111111111111"));
        assert!(luhn_valid("5555555555554444"));
        assert!(!luhn_valid("4111111111111112"));
    }

    #[test]
    fn opaque_shape() {
        let t = opaque(&[0xAB; 16]);
        assert!(is_opaque(&t));
        assert!(!is_opaque("4111111111111111"));
    }
}
