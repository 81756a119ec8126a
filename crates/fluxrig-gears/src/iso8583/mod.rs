//! The payment gears: `iso8583_codec`, `iso8583_io` and `conductor`.
//!
//! They share the meta keys below; a message's trip through a switch is:
//! `iso8583_io` (server) → `iso8583_codec` (decode) → `conductor` →
//! `iso8583_codec` (encode) → `iso8583_io` (client) and back.

pub(crate) mod codec;
pub(crate) mod conductor;
pub(crate) mod io;
pub(crate) mod reversal_log;

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use fluxrig_iso8583::Spec;
use fluxrig_iso8583::store::SpecStore;

/// Meta: the id of the connection a message came in on (the reply goes back
/// on it).
pub const META_CONN: &str = "iso8583.conn";
/// Meta: the header (TPDU, network header) of the frame, uppercase hex.
pub const META_HEADER: &str = "iso8583.header";
/// Meta: the name of the issuer-side target a message goes to or came from.
pub const META_TARGET: &str = "iso8583.target";
/// Meta: the peer address of the connection.
pub const META_PEER: &str = "iso8583.peer";

pub(crate) fn default_spec() -> String {
    "iso8583-1987-ascii".to_owned()
}

/// Dialects loaded by gears in this process, by hash: what the Rack's
/// at-rest protection masks a message's `data` with (meta `iso8583.spec`).
static LOADED: Mutex<Vec<Arc<Spec>>> = Mutex::new(Vec::new());

/// The dialect with hash `hex` (uppercase or lowercase), when a gear loaded
/// it or it is bundled.
pub(crate) fn registered_spec(hex: &str) -> Option<Arc<Spec>> {
    let loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(s) = loaded
        .iter()
        .find(|s| s.hash().to_hex().eq_ignore_ascii_case(hex))
    {
        return Some(Arc::clone(s));
    }
    drop(loaded);
    fluxrig_iso8583::bundled::BUNDLED
        .iter()
        .filter_map(|(n, _)| fluxrig_iso8583::bundled::bundled(n)?.ok())
        .find(|s| s.hash().to_hex().eq_ignore_ascii_case(hex))
        .map(|s| Arc::new(s.clone()))
}

/// Loads a dialect: a bundled name, an SDL file (relative to the scenario),
/// or a name or hash in the spec store under the data dir.
pub(crate) fn load_spec(name: &str, base_dir: &Path, data_dir: &Path) -> Result<Arc<Spec>, String> {
    let spec = find_spec(name, base_dir, data_dir)?;
    let mut loaded = LOADED.lock().unwrap_or_else(PoisonError::into_inner);
    if !loaded.iter().any(|s| s.hash() == spec.hash()) {
        loaded.push(Arc::clone(&spec));
    }
    Ok(spec)
}

fn find_spec(name: &str, base_dir: &Path, data_dir: &Path) -> Result<Arc<Spec>, String> {
    if let Some(r) = fluxrig_iso8583::bundled::bundled(name) {
        return r.map(|s| Arc::new(s.clone())).map_err(|e| e.to_string());
    }
    let path = if Path::new(name).is_absolute() {
        Path::new(name).to_path_buf()
    } else {
        base_dir.join(name)
    };
    if path.exists() {
        return fluxrig_iso8583::sdl::load_file(&path)
            .map(Arc::new)
            .map_err(|e| e.to_string());
    }
    SpecStore::new(data_dir)
        .find(name)
        .map(Arc::new)
        .map_err(|e| {
            format!("`{name}` is not a bundled dialect, not a file, and not in the spec store: {e}")
        })
}
/// Uppercase hex of bytes.
pub(crate) fn hex(b: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789ABCDEF";
    let mut s = String::with_capacity(b.len() * 2);
    for &c in b {
        s.push(char::from(D[usize::from(c >> 4)]));
        s.push(char::from(D[usize::from(c & 15)]));
    }
    s
}

/// Bytes of uppercase or lowercase hex text.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks_exact(2)
        .map(|p| {
            let h = char::from(p[0]).to_digit(16)?;
            let l = char::from(p[1]).to_digit(16)?;
            u8::try_from(h << 4 | l).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_round_trips() {
        assert_eq!(super::hex(&[0x60, 0x00, 0xAB]), "6000AB");
        assert_eq!(super::unhex("6000ab").unwrap(), vec![0x60, 0, 0xAB]);
        assert!(super::unhex("6").is_none());
        assert!(super::unhex("zz").is_none());
    }
}
