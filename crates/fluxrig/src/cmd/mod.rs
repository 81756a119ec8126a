//! One module per subcommand group.

pub(crate) mod audit;
pub(crate) mod demo;
pub(crate) mod gears;
pub(crate) mod id;
pub(crate) mod iso8583;
pub(crate) mod keys;
pub(crate) mod msg;
pub(crate) mod reference;
pub(crate) mod run;
pub(crate) mod scenario;
pub(crate) mod spec;
pub(crate) mod tail;
pub(crate) mod top;

/// The data directory when a command is not given one: `$FLUXRIG_DATA`, else `./data`.
pub(crate) fn default_data_dir() -> std::path::PathBuf {
    std::env::var_os("FLUXRIG_DATA").map_or_else(
        || std::path::PathBuf::from("data"),
        std::path::PathBuf::from,
    )
}
