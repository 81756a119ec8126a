//! One module per subcommand group.

pub(crate) mod id;
pub(crate) mod iso8583;
pub(crate) mod msg;
pub(crate) mod spec;
