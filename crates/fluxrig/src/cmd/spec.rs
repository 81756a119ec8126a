//! `fluxrig spec import|ls|hash|validate|doc`: ISO 8583 dialects (SDL files)
//! and the content-addressed spec store.

use std::io::{self, Write as _};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use fluxrig_iso8583::sdl::{self, LoadError};
use fluxrig_iso8583::store::SpecStore;
use fluxrig_iso8583::{Spec, bundled, doc};
use serde_json::json;

use crate::exit::{CmdResult, Failure};

/// Where fluxrig keeps its data.
#[derive(Debug, Clone, Args)]
pub(crate) struct DataDir {
    /// Data directory [default: $FLUXRIG_DATA, else ./data].
    #[arg(long = "data", value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}

impl DataDir {
    pub(crate) fn path(&self) -> PathBuf {
        self.dir
            .clone()
            .or_else(|| std::env::var_os("FLUXRIG_DATA").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("./data"))
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum SpecCommand {
    /// Validate a dialect and store it under its hash in the data directory.
    #[command(
        after_help = "Example:\n  fluxrig spec import specs/iso8583-1987-ascii.yaml --data ./data"
    )]
    Import {
        /// The SDL file.
        file: PathBuf,
        #[command(flatten)]
        data: DataDir,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the stored dialects (each re-verified against its hash).
    #[command(after_help = "Example:\n  fluxrig spec ls --json")]
    Ls {
        #[command(flatten)]
        data: DataDir,
        /// Print a JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Print the SHA-256 of a dialect's canonical form (formatting and key
    /// order do not change it).
    #[command(after_help = "Example:\n  fluxrig spec hash specs/iso8583-1987-ascii.yaml")]
    Hash {
        /// The SDL file, or the name of a bundled dialect.
        file: String,
        /// Print a JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check a dialect; on problems print `FILE:LINE:COL: message` lines and exit 2.
    #[command(after_help = "Example:\n  fluxrig spec validate my-dialect.yaml")]
    Validate {
        /// The SDL file, or the name of a bundled dialect.
        file: String,
    },
    /// Render a dialect as Markdown or HTML.
    #[command(
        after_help = "Example:\n  fluxrig spec doc iso8583-1987-ascii --format html > 1987.html"
    )]
    Doc {
        /// The SDL file, or the name of a bundled dialect.
        file: String,
        /// Output format.
        #[arg(long, value_enum, default_value_t = DocFormat::Markdown)]
        format: DocFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum DocFormat {
    Markdown,
    Html,
}

pub(crate) fn run(cmd: SpecCommand) -> CmdResult {
    match cmd {
        SpecCommand::Import { file, data, json } => import(&file, &data, json),
        SpecCommand::Ls { data, json } => ls(&data, json),
        SpecCommand::Hash { file, json } => hash(&file, json),
        SpecCommand::Validate { file } => validate(&file),
        SpecCommand::Doc { file, format } => render(&file, format),
    }
}

/// The YAML of a file, or of a bundled dialect with that name.
fn source(arg: &str) -> Result<(String, String), Failure> {
    let path = Path::new(arg);
    if path.exists() {
        let text = std::fs::read(path).with_context(|| format!("reading {arg}"))?;
        let text = String::from_utf8(text).map_err(|e| {
            Failure::invalid(anyhow::anyhow!(
                "{arg}: not UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            ))
        })?;
        return Ok((arg.to_owned(), text));
    }
    if let Some(y) = bundled::bundled_yaml(arg) {
        return Ok((format!("{arg} (bundled)"), y.to_owned()));
    }
    Err(Failure::invalid(anyhow::anyhow!(
        "{arg}: no such file, and not a bundled dialect ({})",
        bundled::BUNDLED
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", ")
    )))
}

/// Prints every problem as its own `FILE:LINE:COL: message` line on stderr.
fn report(e: &LoadError) -> Failure {
    let mut err = io::stderr().lock();
    for line in e.to_string().lines() {
        let _ = writeln!(err, "{line}");
    }
    let n = e.problems.len();
    Failure::invalid(anyhow::anyhow!(
        "{}: {n} problem{}",
        e.file,
        if n == 1 { "" } else { "s" }
    ))
}

fn load(arg: &str) -> Result<Spec, Failure> {
    let (label, yaml) = source(arg)?;
    sdl::load_str(&label, &yaml).map_err(|e| report(&e))
}

fn import(file: &Path, data: &DataDir, as_json: bool) -> CmdResult {
    let label = file.display().to_string();
    let (_, yaml) = source(&label)?;
    let store = SpecStore::new(&data.path());
    let stored = store.import(&label, &yaml).map_err(|e| match e {
        fluxrig_iso8583::store::StoreError::Invalid(le) => report(&le),
        other => Failure::from(other),
    })?;
    if as_json {
        println!(
            "{}",
            json!({"hash": stored.hash.to_hex(), "name": stored.name, "version": stored.version, "path": stored.path})
        );
    } else {
        println!(
            "{}  {} {}  {}",
            stored.hash,
            stored.name,
            stored.version,
            stored.path.display()
        );
    }
    Ok(())
}

fn ls(data: &DataDir, as_json: bool) -> CmdResult {
    let store = SpecStore::new(&data.path());
    let all = store.list()?;
    if as_json {
        let items: Vec<_> = all
            .iter()
            .map(|s| json!({"hash": s.hash.to_hex(), "name": s.name, "version": s.version, "path": s.path}))
            .collect();
        println!("{}", serde_json::Value::Array(items));
    } else {
        for s in &all {
            println!("{}  {} {}", s.hash, s.name, s.version);
        }
    }
    Ok(())
}

fn hash(file: &str, as_json: bool) -> CmdResult {
    let spec = load(file)?;
    if as_json {
        println!(
            "{}",
            json!({"hash": spec.hash().to_hex(), "name": spec.name(), "version": spec.version(), "file": file})
        );
    } else {
        println!("{}  {file}", spec.hash());
    }
    Ok(())
}

fn validate(file: &str) -> CmdResult {
    let spec = load(file)?;
    println!(
        "{file}: ok ({} {}, {} elements, sha256 {})",
        spec.name(),
        spec.version(),
        spec.elements().count(),
        spec.hash()
    );
    Ok(())
}

fn render(file: &str, format: DocFormat) -> CmdResult {
    let spec = load(file)?;
    let text = match format {
        DocFormat::Markdown => doc::to_markdown(&spec),
        DocFormat::Html => doc::to_html(&spec),
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes()).context("writing stdout")?;
    Ok(())
}

/// Resolves `--spec`: a bundled name, an SDL file, or a name or hash in the store.
pub(crate) fn resolve(arg: &str, data: &DataDir) -> Result<Spec, Failure> {
    if let Some(r) = bundled::bundled(arg) {
        return r.cloned().map_err(|e| report(&e));
    }
    let path = Path::new(arg);
    if path.exists() {
        return sdl::load_file(path).map_err(|e| report(&e));
    }
    SpecStore::new(&data.path()).find(arg).map_err(|e| {
        Failure::invalid(anyhow::anyhow!(
            "--spec {arg}: not a bundled dialect, not a file, and not in the store: {e}"
        ))
    })
}
