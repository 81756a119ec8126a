//! TLS for the HTTP client: rustls with the `ring` provider (no C build).

use std::sync::Once;

/// Installs rustls's `ring` crypto provider for the process (once).
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only when another provider is already installed: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}
