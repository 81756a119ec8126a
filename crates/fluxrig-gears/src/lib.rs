//! fluxrig's built-in gears.
//!
//! [`BUILTIN`] is the one table of built-in gear types: the single source
//! for `fluxrig gears`, scenario validation, the JSON Schemas and the
//! generated reference in `docs/gears/`.

mod coatcheck;
mod discard;
mod files;
mod format;
mod generate;
mod http;
mod iso8583;
mod log;
mod map;
mod route;
mod spool;
mod tls;
mod vrl;

use fluxrig_gear::{GearType, Typed};

pub use coatcheck::{
    CardDataAtRest, Class as CoatCheckClass, CoatCheck, CoatCheckConfig, META_SEALED, META_TTL,
    Mode as CoatCheckMode, WhenFull as CoatCheckWhenFull,
};
pub use discard::{Discard, DiscardConfig};
pub use files::{
    FileIn, FileInConfig, FileMode, FileOut, FileOutConfig, Stdin, StdinConfig, Stdout,
    StdoutConfig,
};
pub use format::{InFormat, OutFormat};
pub use generate::{Generate, GenerateConfig};
pub use http::{BodyKind, HttpIn, HttpInConfig, HttpMethod, HttpOut, HttpOutConfig};
pub use iso8583::codec::{Direction as Iso8583Direction, Iso8583Codec, Iso8583CodecConfig};
pub use iso8583::conductor::{
    Balance, Conductor, ConductorConfig, FieldMatch, Group, MemoryReversals, Reversal,
    ReversalQueue, RouteRule,
};
pub use iso8583::io::{
    IoMode, Iso8583Io, Iso8583IoConfig, Prefix as Iso8583Prefix, Target as Iso8583Target,
};
pub use iso8583::reversal_log::{
    AnsweredRecord, LogRecord as ConductorLogRecord, read_records as read_conductor_log,
};
pub use iso8583::{META_CONN, META_HEADER, META_PEER, META_TARGET};
pub use log::{Level, Log, LogConfig};
pub use map::{MapConfig, MapGearKind};
pub use route::{Route, RouteConfig, Rule};
pub use tls::install_crypto_provider;

/// Every built-in gear type, in the order `fluxrig gears` lists them.
pub static BUILTIN: &[&dyn GearType] = &[
    &Typed::<Generate>::new(),
    &Typed::<MapGearKind>::new(),
    &Typed::<Route>::new(),
    &Typed::<FileIn>::new(),
    &Typed::<FileOut>::new(),
    &Typed::<Stdin>::new(),
    &Typed::<Stdout>::new(),
    &Typed::<Discard>::new(),
    &Typed::<Log>::new(),
    &Typed::<HttpIn>::new(),
    &Typed::<HttpOut>::new(),
    &Typed::<Iso8583Codec>::new(),
    &Typed::<Iso8583Io>::new(),
    &Typed::<Conductor>::new(),
    &Typed::<CoatCheck>::new(),
];

/// The built-in gear type called `name`.
pub fn find(name: &str) -> Option<&'static dyn GearType> {
    BUILTIN.iter().copied().find(|t| t.name() == name)
}

#[cfg(test)]
mod tests {
    use fluxrig_gear::CheckContext;

    /// Every gear's documented example is a valid gear entry.
    #[test]
    fn every_example_is_valid() {
        for t in super::BUILTIN {
            let node = fluxrig_config::parse(t.example()).unwrap();
            let entry = &node.as_seq().unwrap()[0];
            assert_eq!(entry.get("type").and_then(|n| n.as_str()), Some(t.name()));
            let config = entry
                .get("config")
                .cloned()
                .unwrap_or(fluxrig_config::Node {
                    kind: fluxrig_config::NodeKind::Null,
                    pos: entry.pos,
                });
            let dir = tempfile::tempdir().unwrap();
            // file_in's example reads a file: give it one.
            std::fs::create_dir_all(dir.path().join("data")).unwrap();
            std::fs::write(dir.path().join("data/orders.jsonl"), "{}\n").unwrap();
            let ctx = CheckContext {
                base_dir: dir.path().to_path_buf(),
                data_dir: dir.path().to_path_buf(),
            };
            if let Err(p) = t.prepare(&config, &ctx) {
                panic!("example of `{}` is invalid: {p:?}", t.name());
            }
        }
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = super::BUILTIN.iter().map(|t| t.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), super::BUILTIN.len());
    }
}
