//! The `fluxrig` command: parses arguments and hands each subcommand to the
//! library code that does the work.
//!
//! Exit codes: 0 ok, 1 failure, 2 bad usage or invalid input.

mod cmd;
mod exit;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// fluxrig moves mission-critical data between systems that were never meant
/// to talk: payments (ISO 8583), industrial devices (Modbus, MQTT) and
/// everything else, with every message durable and auditable.
#[derive(Debug, Parser)]
#[command(
    name = "fluxrig",
    version,
    propagate_version = true,
    max_term_width = 100
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encode, decode and check fluxMsg envelopes.
    #[command(subcommand)]
    Msg(cmd::msg::MsgCommand),
    /// Make and read fluxIDs and fluxEntityIDs.
    #[command(subcommand)]
    Id(cmd::id::IdCommand),
    /// Validate, hash, store and document ISO 8583 dialects (SDL files).
    #[command(subcommand)]
    Spec(cmd::spec::SpecCommand),
    /// Decode ISO 8583 messages, simulate an issuer, generate load.
    #[command(subcommand)]
    Iso8583(cmd::iso8583::Iso8583Command),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Msg(c) => cmd::msg::run(&c),
        Command::Id(c) => cmd::id::run(c),
        Command::Spec(c) => cmd::spec::run(c),
        Command::Iso8583(c) => cmd::iso8583::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
