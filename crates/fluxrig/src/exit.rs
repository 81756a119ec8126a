//! Errors of a subcommand, each with its exit code.

use std::io::Write as _;
use std::process::ExitCode;

/// A failed subcommand: what to print and which exit code to end with.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    error: anyhow::Error,
}

impl Failure {
    /// Invalid input or usage: exit code 2.
    pub(crate) fn invalid(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
        }
    }

    /// Prints the error chain to stderr and yields the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "error: {:#}", self.error);
        ExitCode::from(self.code)
    }
}

/// Anything else (I/O, internal) is a failure: exit code 1.
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: 1,
            error: e.into(),
        }
    }
}

pub(crate) type CmdResult = Result<(), Failure>;
