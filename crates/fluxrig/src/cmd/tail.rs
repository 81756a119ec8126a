//! `fluxrig tail GEAR.PORT`: live messages on a port of a running Rack, as
//! JSON lines, card data masked.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use clap::Args;

use crate::exit::{CmdResult, Failure};

/// Arguments of `fluxrig tail`.
#[derive(Debug, Args)]
#[command(
    after_help = "Prints each message the gear emits on the port as one JSON line, with card data\nmasked (PANs as BIN + last 4, other sensitive fields fully, raw bytes never shown).\nIt reaches the Rack through its admin endpoint (see `fluxrig run --admin-listen`).\n\nExamples:\n  fluxrig tail enrich.out --count 10\n  fluxrig tail --data /var/lib/fluxrig switch.out | jq .data.mti"
)]
pub(crate) struct TailArgs {
    /// The output port: GEAR.PORT (e.g. `enrich.out`).
    port: String,
    /// Stop after this many messages.
    #[arg(long, short = 'n', value_name = "N")]
    count: Option<u64>,
    #[command(flatten)]
    rack: RackArgs,
}

/// How to reach a running Rack.
#[derive(Debug, Args)]
pub(crate) struct RackArgs {
    /// The running Rack's data directory (its admin address is in
    /// DIR/admin.addr).
    #[arg(long, value_name = "DIR", env = "FLUXRIG_DATA", default_value = "data")]
    data: PathBuf,
    /// The Rack's admin address (HOST:PORT), instead of reading it from the
    /// data directory.
    #[arg(long, value_name = "ADDR")]
    admin: Option<String>,
}

impl RackArgs {
    /// The base URL of the Rack's admin endpoint.
    pub(crate) fn url(&self) -> Result<String, Failure> {
        let addr = match &self.admin {
            Some(a) => a.clone(),
            None => read_addr(&self.data)?,
        };
        Ok(format!("http://{addr}"))
    }
}

fn read_addr(data: &Path) -> Result<String, Failure> {
    let file = crate::admin::addr_file(data);
    match std::fs::read_to_string(&file) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(anyhow::anyhow!(
            "no running Rack uses {}: {} does not exist (start one with `fluxrig run --data {}`, or give --admin ADDR)",
            data.display(),
            file.display(),
            data.display()
        )
        .into()),
        Err(e) => Err(anyhow::Error::new(e)
            .context(format!("reading {}", file.display()))
            .into()),
    }
}

/// An HTTP client for the admin endpoint.
pub(crate) fn client() -> anyhow::Result<reqwest::Client> {
    fluxrig_gears::install_crypto_provider();
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .context("building the HTTP client")
}

pub(crate) fn run(args: &TailArgs) -> CmdResult {
    if args.port.rsplit_once('.').is_none() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "`{}` is not GEAR.PORT (e.g. enrich.out)",
            args.port
        )));
    }
    let url = args.rack.url()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let mut resp = client()?
            .get(format!(
                "{url}/tail?port={}&count={}",
                encode(&args.port),
                args.count.unwrap_or(0)
            ))
            .send()
            .await
            .with_context(|| format!("cannot reach the Rack at {url}"))?;
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp.text().await.unwrap_or_default();
            let e = anyhow::anyhow!("{}", body.trim());
            return Err(if status.is_client_error() {
                Failure::invalid(e)
            } else {
                Failure::from(e.context(format!("the Rack answered {status}")))
            });
        }
        let mut out = std::io::stdout().lock();
        while let Some(chunk) = resp.chunk().await.context("reading from the Rack")? {
            if out.write_all(&chunk).and_then(|()| out.flush()).is_err() {
                // stdout closed (e.g. `| head`): done.
                return Ok(());
            }
        }
        Ok(())
    })
}

/// Percent-encodes a query value (names are mostly plain already).
fn encode(v: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}
