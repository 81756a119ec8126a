//! Helpers shared by fluxrig's tests: where things are, how to start real
//! peers (Python tools in the project's venv, servers on free loopback
//! ports), and proptest strategies for fluxrig's types.
//!
//! Tests talk to real peers; nothing here fakes one.

#![allow(clippy::missing_panics_doc, clippy::unwrap_used)] // test helpers panic by design

pub mod strategies;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (where `Cargo.lock` is).
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|p| p.join("Cargo.lock").exists())
        .unwrap_or_else(|| here.parent().and_then(Path::parent).unwrap_or(here))
        .to_path_buf()
}

/// The Python interpreter of the project's test venv (`.venv`, made by
/// `make test-deps`), or `$FLUXRIG_PYTHON`.
///
/// Panics with the command to run when the venv is missing: a test that
/// needs a real peer fails rather than passes without it.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("FLUXRIG_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = workspace_root().join(".venv/bin/python");
    assert!(
        venv.exists(),
        "the test venv is missing: run `make test-deps` (or `make test`, which does it)"
    );
    venv
}

/// A `Command` running a Python script from `tests/python/` with the venv's interpreter.
pub fn python_script(name: &str) -> Command {
    let mut c = Command::new(python());
    c.arg(workspace_root().join("tests/python").join(name));
    c
}
