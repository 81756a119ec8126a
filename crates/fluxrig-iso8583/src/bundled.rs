//! The dialects shipped inside fluxrig (the files in `specs/`).

use std::sync::OnceLock;

use crate::sdl::{LoadError, load_str};
use crate::spec::Spec;

/// Names and YAML text of the bundled dialects.
pub const BUNDLED: &[(&str, &str)] = &[
    (
        "iso8583-1987-ascii",
        include_str!("../../../specs/iso8583-1987-ascii.yaml"),
    ),
    (
        "iso8583-1987-binary",
        include_str!("../../../specs/iso8583-1987-binary.yaml"),
    ),
    (
        "iso8583-1993-ascii",
        include_str!("../../../specs/iso8583-1993-ascii.yaml"),
    ),
];

/// The YAML of a bundled dialect.
pub fn bundled_yaml(name: &str) -> Option<&'static str> {
    BUNDLED.iter().find(|(n, _)| *n == name).map(|(_, y)| *y)
}

/// A bundled dialect, compiled once per process.
pub fn bundled(name: &str) -> Option<Result<&'static Spec, LoadError>> {
    static CACHE: [OnceLock<Result<Spec, LoadError>>; 3] =
        [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    let i = BUNDLED.iter().position(|(n, _)| *n == name)?;
    let (n, y) = BUNDLED[i];
    let r = CACHE[i].get_or_init(|| load_str(&format!("specs/{n}.yaml"), y));
    Some(r.as_ref().map_err(Clone::clone))
}
