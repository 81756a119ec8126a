//! With the `duckdb` feature, lets this crate's tests and examples find the
//! prebuilt `libduckdb.so` at run time: an rpath to `DUCKDB_LIB_DIR`
//! (docs/adr/0002-duckdb-prebuilt.md). The `fluxrig` binary does the same in
//! its own build script.

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_DUCKDB").is_none() {
        return;
    }
    match std::env::var("DUCKDB_LIB_DIR") {
        Ok(dir) if std::path::Path::new(&dir).join("libduckdb.so").is_file() => {
            println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        }
        _ => panic!(
            "the `duckdb` feature links the prebuilt libduckdb.so: run `make deps-duckdb` and \
             export DUCKDB_LIB_DIR=$HOME/.cache/fluxrig/duckdb-1.5.6 (or build without the feature)"
        ),
    }
}
