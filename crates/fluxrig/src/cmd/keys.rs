//! `fluxrig keys list|rotate|retire`: the coat check vault's keyring.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use fluxrig_vault::keys::Keyring;
use serde_json::json;

use crate::exit::{CmdResult, Failure};

#[derive(Debug, Args)]
pub(crate) struct DataArg {
    /// The Rack's data directory (the vault is `<data>/vault/`); default
    /// `$FLUXRIG_DATA`, else `./data`.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

impl DataArg {
    fn vault_dir(&self) -> PathBuf {
        self.data
            .clone()
            .unwrap_or_else(super::default_data_dir)
            .join("vault")
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// List the vault's keys: id, created, active or retired. Never a key.
    #[command(after_help = "Example:\n  fluxrig keys list --data data/demo/rack --json")]
    List {
        #[command(flatten)]
        data: DataArg,
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Start a new key: new entries are encrypted under it, older entries
    /// stay readable under their key until they expire. A running Rack picks
    /// it up within a second.
    #[command(after_help = "Example:\n  fluxrig keys rotate --data data/demo/rack")]
    Rotate {
        #[command(flatten)]
        data: DataArg,
    },
    /// Retire a key: its salt is deleted, so every entry (and every sealed
    /// raw frame in the write-ahead log and archive) encrypted under it is
    /// unreadable for good (crypto-shredding). The active key cannot be
    /// retired; rotate first.
    #[command(after_help = "Example:\n  fluxrig keys retire 1 --data data/demo/rack")]
    Retire {
        /// The key id (see `fluxrig keys list`).
        id: u32,
        #[command(flatten)]
        data: DataArg,
    },
}

pub(crate) fn run(cmd: KeysCommand) -> CmdResult {
    match cmd {
        KeysCommand::List { data, json } => {
            let ring = Keyring::load(&data.vault_dir())
                .map_err(Failure::invalid)?
                .ok_or_else(|| {
                    Failure::invalid(anyhow::anyhow!(
                        "no vault keyring in {}",
                        data.vault_dir().display()
                    ))
                })?;
            if json {
                let keys: Vec<_> = ring
                    .keys
                    .iter()
                    .map(|k| {
                        json!({"id": k.id, "created_ns": k.created_ns, "active": k.id == ring.active,
                               "retired_ns": k.retired_ns})
                    })
                    .collect();
                println!("{}", json!({"active": ring.active, "keys": keys}));
            } else {
                for k in &ring.keys {
                    let state = if k.id == ring.active {
                        "active"
                    } else if k.is_retired() {
                        "retired"
                    } else {
                        "readable"
                    };
                    let created =
                        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(k.created_ns);
                    println!(
                        "{:>4}  {}  {state}",
                        k.id,
                        humantime::format_rfc3339_seconds(created)
                    );
                }
            }
            Ok(())
        }
        KeysCommand::Rotate { data } => {
            let dir = data.vault_dir();
            let mut ring = Keyring::load_or_create(&dir).map_err(Failure::invalid)?;
            let id = ring
                .rotate()
                .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
            ring.save(&dir)
                .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
            println!("key {id} is active");
            Ok(())
        }
        KeysCommand::Retire { id, data } => {
            let dir = data.vault_dir();
            let mut ring = Keyring::load(&dir)
                .map_err(Failure::invalid)?
                .ok_or_else(|| {
                    Failure::invalid(anyhow::anyhow!("no vault keyring in {}", dir.display()))
                })?;
            ring.retire(id).map_err(Failure::invalid)?;
            ring.save(&dir)
                .map_err(|e| Failure::from(anyhow::Error::new(e)))?;
            println!("key {id} retired: what was encrypted under it is unreadable");
            Ok(())
        }
    }
}
