//! With the `duckdb` feature, lets the binary find the prebuilt
//! `libduckdb.so` at run time (docs/adr/0002-duckdb-prebuilt.md): an rpath
//! to the directory it was linked from — `DUCKDB_LIB_DIR`, else where
//! `make deps-duckdb` puts it (fluxrig-audit's build script adds that search
//! path) — and to `$ORIGIN`, for a binary shipped with the library beside it.

/// Where `make deps-duckdb` installs the library, under `$HOME`; bump with
/// `DUCKDB_VERSION` in the Makefile.
const DEFAULT_DIR: &str = ".cache/fluxrig/duckdb-1.5.6";

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_DUCKDB").is_none() {
        return;
    }
    let dir = std::env::var("DUCKDB_LIB_DIR").ok().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/{DEFAULT_DIR}"))
    });
    match dir {
        Some(dir) if std::path::Path::new(&dir).join("libduckdb.so").is_file() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
        }
        _ => panic!(
            "fluxrig links the prebuilt libduckdb.so (feature `duckdb`, on by default): run \
             `make deps-duckdb` (or set DUCKDB_LIB_DIR to a directory holding libduckdb.so \
             1.5.6), or build with --no-default-features"
        ),
    }
}
