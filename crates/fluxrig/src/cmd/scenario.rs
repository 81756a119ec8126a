//! `fluxrig scenario validate|graph|hash`.

use std::path::{Path, PathBuf};

use clap::{Subcommand, ValueEnum};
use fluxrig_scenario::{GraphFormat, Scenario};

use crate::exit::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum ScenarioCommand {
    /// Check a scenario; print every problem as FILE:LINE:COL: message (exit 2) or a summary (exit 0).
    #[command(after_help = "Example:\n  fluxrig scenario validate examples/quickstart.yaml")]
    Validate {
        /// The scenario file.
        file: PathBuf,
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Print the gear graph as Mermaid or Graphviz dot.
    #[command(
        after_help = "Example:\n  fluxrig scenario graph examples/quickstart.yaml --format dot | dot -Tsvg > graph.svg"
    )]
    Graph {
        /// The scenario file.
        file: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Format::Mermaid)]
        format: Format,
    },
    /// Print the SHA-256 of the scenario's canonical form (formatting and key order do not change it).
    #[command(after_help = "Example:\n  fluxrig scenario hash examples/quickstart.yaml")]
    Hash {
        /// The scenario file.
        file: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Mermaid,
    Dot,
}

/// Loads and validates a scenario; invalid → exit 2 with every problem.
pub(crate) fn load(file: &Path, data_dir: &Path) -> Result<Scenario, Failure> {
    Scenario::load(file, &fluxrig_gears::find, data_dir)
        .map_err(|problems| Failure::invalid(anyhow::anyhow!("{problems}")).plain())
}

pub(crate) fn run(cmd: ScenarioCommand) -> CmdResult {
    let data = crate::cmd::default_data_dir();
    match cmd {
        ScenarioCommand::Validate { file, json } => {
            let s = load(&file, &data)?;
            if json {
                let v = serde_json::json!({
                    "file": file.display().to_string(), "name": s.name, "version": s.version,
                    "gears": s.gears.len(), "wires": s.wires.len(), "hash": s.hash_hex(),
                });
                println!("{v}");
            } else {
                println!(
                    "{}: valid: {} {} ({} gears, {} wires, sha256 {})",
                    file.display(),
                    s.name,
                    s.version,
                    s.gears.len(),
                    s.wires.len(),
                    s.hash_hex()
                );
            }
        }
        ScenarioCommand::Graph { file, format } => {
            let s = load(&file, &data)?;
            let f = match format {
                Format::Mermaid => GraphFormat::Mermaid,
                Format::Dot => GraphFormat::Dot,
            };
            print!("{}", s.graph(f));
        }
        ScenarioCommand::Hash { file } => {
            let s = load(&file, &data)?;
            println!("{}", s.hash_hex());
        }
    }
    Ok(())
}
