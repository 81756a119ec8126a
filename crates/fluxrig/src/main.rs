//! The `fluxrig` command: parses arguments and hands each subcommand to the
//! library code that does the work.
//!
//! Exit codes: 0 ok, 1 failure, 2 bad usage or invalid input.

mod admin;
mod cmd;
mod exit;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// jemalloc, set up in `.cargo/config.toml`: less CPU than the system
/// allocator in the switch, and it hands memory back to the system once a
/// peak is over (docs/adr/0010-allocator.md).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

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
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Logs go to stderr; `FLUXRIG_LOG` filters them (default `info`).
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FLUXRIG_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        LogFormat::Human => builder.compact().init(),
        LogFormat::Json => builder.json().init(),
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a scenario as a Rack.
    Run(cmd::run::RunArgs),
    /// Validate, graph and hash scenarios.
    #[command(subcommand)]
    Scenario(cmd::scenario::ScenarioCommand),
    /// List the gear types; print a gear's reference or schema.
    Gears {
        #[command(subcommand)]
        command: Option<cmd::gears::GearsCommand>,
    },
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
    /// Query, verify, export and compact the audit archive.
    #[command(subcommand)]
    Audit(cmd::audit::AuditCommand),
    /// List, rotate and retire the coat check vault's keys.
    #[command(subcommand)]
    Keys(cmd::keys::KeysCommand),
    /// Run the payment-switch demo: two issuer simulators, the example
    /// switch, a load run with a live display, then a summary.
    Demo(cmd::demo::DemoArgs),
    /// Live console of a running Rack: rates, latency, errors, lanes, WAL.
    Top(cmd::top::TopArgs),
    /// Print the messages a running Rack's gear emits on a port, masked, as JSON lines.
    Tail(cmd::tail::TailArgs),
    /// Print this command-line reference in Markdown (docs/cli.md).
    #[command(hide = true)]
    CliReference(cmd::reference::ReferenceArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let result = match cli.command {
        Command::Run(a) => cmd::run::run(a),
        Command::Scenario(c) => cmd::scenario::run(c),
        Command::Gears { command } => cmd::gears::run(command),
        Command::Msg(c) => cmd::msg::run(&c),
        Command::Id(c) => cmd::id::run(c),
        Command::Spec(c) => cmd::spec::run(c),
        Command::Iso8583(c) => cmd::iso8583::run(c),
        Command::Audit(c) => cmd::audit::run(c),
        Command::Keys(c) => cmd::keys::run(c),
        Command::Demo(a) => cmd::demo::run(&a),
        Command::Top(a) => cmd::top::run(&a),
        Command::Tail(a) => cmd::tail::run(&a),
        Command::CliReference(a) => cmd::reference::run(&a, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => e.report(),
    }
}
