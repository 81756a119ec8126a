//! With the `duckdb` feature, finds the prebuilt `libduckdb.so`
//! (docs/adr/0002-duckdb-prebuilt.md): in `DUCKDB_LIB_DIR` when set (the
//! Makefile sets it), else where `make deps-duckdb` puts it, so a plain
//! `cargo build` works too. Adds an rpath to it so this crate's tests and
//! examples find it at run time; the `fluxrig` binary does the same in its
//! own build script.

/// Where `make deps-duckdb` installs the library, under `$HOME`; bump with
/// `DUCKDB_VERSION` in the Makefile.
const DEFAULT_DIR: &str = ".cache/fluxrig/duckdb-1.5.6";

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_DUCKDB").is_none() {
        return;
    }
    let from_env = std::env::var("DUCKDB_LIB_DIR").ok();
    let dir = from_env.clone().or_else(|| {
        std::env::var("HOME")
            .ok()
            .map(|h| format!("{h}/{DEFAULT_DIR}"))
    });
    match dir {
        Some(dir) if std::path::Path::new(&dir).join("libduckdb.so").is_file() => {
            if from_env.is_none() {
                // libduckdb-sys only adds the search path when the variable is set.
                println!("cargo:rustc-link-search=native={dir}");
            }
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        _ => panic!(
            "the `duckdb` feature links the prebuilt libduckdb.so: run `make deps-duckdb` \
             (or set DUCKDB_LIB_DIR to a directory holding libduckdb.so 1.5.6, or build \
             without the feature)"
        ),
    }
}
