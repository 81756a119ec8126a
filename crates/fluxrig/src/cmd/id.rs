//! `fluxrig id new|decode`.

use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Subcommand;
use fluxrig_msg::{EntityId, FluxId, IdGenerator};
use serde_json::json;

use crate::exit::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum IdCommand {
    /// Print new fluxIDs, one decimal per line, ascending.
    #[command(after_help = "Example:\n  fluxrig id new --machine 7 --count 3")]
    New {
        /// Machine id of the generator (0 = unassigned; 1-99 are reserved for Mixers).
        #[arg(long, default_value_t = 0)]
        machine: u16,
        /// How many ids to print.
        #[arg(long, default_value_t = 1)]
        count: u64,
        /// Persist the high-water mark here, so later runs continue above it.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
    },
    /// Show what a fluxID (or, with --entity, a fluxEntityID) is made of.
    #[command(
        after_help = "Examples:\n  fluxrig id decode 1427247692705959881\n  fluxrig id decode --json 1427247692705959881\n  fluxrig id decode --entity 144115188075855873"
    )]
    Decode {
        /// The id, in decimal.
        id: u64,
        /// Read the id as a fluxEntityID: type, machine, sequence.
        #[arg(long)]
        entity: bool,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: IdCommand) -> CmdResult {
    match cmd {
        IdCommand::New {
            machine,
            count,
            state,
        } => new(machine, count, state.as_deref()),
        IdCommand::Decode {
            id,
            entity: false,
            json,
        } => decode(FluxId::from_raw(id), json),
        IdCommand::Decode {
            id,
            entity: true,
            json,
        } => decode_entity(EntityId::from_raw(id), json),
    }
}

fn new(machine: u16, count: u64, state: Option<&Path>) -> CmdResult {
    let g = match state {
        Some(path) => IdGenerator::with_state_file(machine, path).map_err(Failure::invalid)?,
        None => IdGenerator::new(machine),
    };
    let mut out = BufWriter::new(std::io::stdout().lock());
    for _ in 0..count {
        let id = g.next()?;
        writeln!(out, "{id}").context("writing stdout")?;
    }
    out.flush().context("writing stdout")?;
    Ok(())
}

fn decode(id: FluxId, json: bool) -> CmdResult {
    if !id.is_well_formed() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "{id} is not a fluxID: bit 63 is set"
        )));
    }
    let time = humantime::format_rfc3339_millis(id.time()).to_string();
    if json {
        let v = json!({"id": id.to_string(), "time": time, "sequence": id.sequence(), "machine": id.machine()});
        println!("{v}");
    } else {
        println!(
            "id        {id}\ntime      {time}\nsequence  {}\nmachine   {}",
            id.sequence(),
            id.machine()
        );
    }
    Ok(())
}

fn decode_entity(id: EntityId, json: bool) -> CmdResult {
    let Some(kind) = id.kind() else {
        return Err(Failure::invalid(anyhow::anyhow!(
            "{id} is not a fluxEntityID: unknown type code {}",
            id.type_code()
        )));
    };
    if json {
        let v = json!({"id": id.to_string(), "type": kind.name(), "machine": id.machine(), "sequence": id.sequence()});
        println!("{v}");
    } else {
        println!(
            "id        {id}\ntype      {}\nmachine   {}\nsequence  {}",
            kind.name(),
            id.machine(),
            id.sequence()
        );
    }
    Ok(())
}
