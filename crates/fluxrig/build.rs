//! With the `duckdb` feature, lets the binary find the prebuilt
//! `libduckdb.so` at run time: an rpath to `DUCKDB_LIB_DIR`, where the build
//! linked it, and to `$ORIGIN`, for a binary shipped with the library beside
//! it (docs/adr/0002-duckdb-prebuilt.md).

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_DUCKDB").is_none() {
        return;
    }
    match std::env::var("DUCKDB_LIB_DIR") {
        Ok(dir) if std::path::Path::new(&dir).join("libduckdb.so").is_file() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
            println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN");
        }
        _ => panic!(
            "fluxrig links the prebuilt libduckdb.so (feature `duckdb`, on by default): run \
             `make deps-duckdb` and export DUCKDB_LIB_DIR=$HOME/.cache/fluxrig/duckdb-1.5.6, \
             or build with --no-default-features"
        ),
    }
}
