//! Errors of a subcommand, each with its exit code.

use std::io::Write as _;
use std::process::ExitCode;

/// A failed subcommand: what to print and which exit code to end with.
#[derive(Debug)]
pub(crate) struct Failure {
    code: u8,
    error: anyhow::Error,
    /// Print the message as it is (already formatted lines such as
    /// `FILE:LINE:COL: message`), without the `error: ` prefix.
    plain: bool,
}

impl Failure {
    /// Invalid input or usage: exit code 2.
    pub(crate) fn invalid(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: 2,
            error: error.into(),
            plain: false,
        }
    }

    /// Print the message without the `error: ` prefix.
    pub(crate) fn plain(mut self) -> Failure {
        self.plain = true;
        self
    }

    /// Prints the error chain to stderr and yields the exit code.
    pub(crate) fn report(&self) -> ExitCode {
        let mut err = std::io::stderr().lock();
        if self.plain {
            let _ = writeln!(err, "{:#}", self.error);
        } else {
            let _ = writeln!(err, "error: {:#}", self.error);
        }
        ExitCode::from(self.code)
    }
}

/// Anything else (I/O, internal) is a failure: exit code 1.
impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Failure {
        Failure {
            code: 1,
            error: e.into(),
            plain: false,
        }
    }
}

pub(crate) type CmdResult = Result<(), Failure>;
