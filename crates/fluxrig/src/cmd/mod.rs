//! One module per subcommand group.

pub(crate) mod id;
pub(crate) mod msg;
