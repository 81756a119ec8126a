//! `fluxrig msg encode|decode|check`.

use std::io::{self, BufWriter, Read, Write};

use anyhow::Context as _;
use clap::Subcommand;
use fluxrig_msg::{FluxMsg, Limits, json};

use crate::exit::{CmdResult, Failure};

#[derive(Debug, Subcommand)]
pub(crate) enum MsgCommand {
    /// Read one fluxMsg as JSON on stdin, write its deterministic CBOR on stdout.
    #[command(
        after_help = "Example:\n  echo '{\"id\":\"1\",\"data\":{\"amount\":1250}}' | fluxrig msg encode > m.cbor"
    )]
    Encode {
        /// Read JSON lines and write a CBOR sequence (RFC 8742), one message per line.
        #[arg(long)]
        lines: bool,
    },
    /// Read one fluxMsg as CBOR on stdin, write its JSON form on stdout.
    #[command(after_help = "Example:\n  fluxrig msg decode --pretty < m.cbor")]
    Decode {
        /// Read a CBOR sequence (RFC 8742) and write JSON lines.
        #[arg(long)]
        lines: bool,
        /// Indent the JSON (single messages only).
        #[arg(long, conflicts_with = "lines")]
        pretty: bool,
    },
    /// Tell whether the CBOR message on stdin is in deterministic form (exit 0) or not (exit 1).
    #[command(after_help = "Example:\n  fluxrig msg check < m.cbor && echo deterministic")]
    Check,
}

pub(crate) fn run(cmd: &MsgCommand) -> CmdResult {
    match *cmd {
        MsgCommand::Encode { lines } => encode(lines),
        MsgCommand::Decode { lines, pretty } => decode(lines, pretty),
        MsgCommand::Check => check(),
    }
}

fn read_stdin() -> Result<Vec<u8>, Failure> {
    let mut buf = Vec::new();
    io::stdin()
        .lock()
        .read_to_end(&mut buf)
        .context("reading stdin")?;
    Ok(buf)
}

fn encode(lines: bool) -> CmdResult {
    let input = read_stdin()?;
    let text = std::str::from_utf8(&input).map_err(|e| {
        Failure::invalid(anyhow::anyhow!(
            "stdin is not UTF-8 (byte {})",
            e.valid_up_to()
        ))
    })?;
    let mut out = Vec::with_capacity(input.len());
    if lines {
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let msg = json::from_json_str(line)
                .map_err(|e| Failure::invalid(anyhow::anyhow!("line {}: {e}", n + 1)))?;
            msg.encode(&mut out);
        }
    } else {
        let msg = json::from_json_str(text).map_err(Failure::invalid)?;
        msg.encode(&mut out);
    }
    let mut stdout = io::stdout().lock();
    stdout.write_all(&out).context("writing stdout")?;
    stdout.flush().context("writing stdout")?;
    Ok(())
}

fn decode(lines: bool, pretty: bool) -> CmdResult {
    let input = read_stdin()?;
    let mut out = BufWriter::new(io::stdout().lock());
    if lines {
        let mut at = 0;
        let mut n = 0;
        while at < input.len() {
            n += 1;
            let (msg, used) =
                FluxMsg::decode_prefix(&input[at..], Limits::DEFAULT).map_err(|e| {
                    let e = e.shifted(at);
                    Failure::invalid(anyhow::anyhow!("message {n}: {e}"))
                })?;
            let text = json::to_json_string(&msg)
                .map_err(|e| Failure::invalid(anyhow::anyhow!("message {n}: {e}")))?;
            writeln!(out, "{text}").context("writing stdout")?;
            at += used;
        }
    } else {
        let msg = FluxMsg::from_cbor(&input).map_err(Failure::invalid)?;
        let view = json::JsonMsg(&msg);
        let text = if pretty {
            serde_json::to_string_pretty(&view)
        } else {
            serde_json::to_string(&view)
        }
        .map_err(|e| Failure::invalid(anyhow::anyhow!("field `data`: {e}")))?;
        writeln!(out, "{text}").context("writing stdout")?;
    }
    out.flush().context("writing stdout")?;
    Ok(())
}

fn check() -> CmdResult {
    let input = read_stdin()?;
    let msg = FluxMsg::from_cbor(&input).map_err(Failure::invalid)?;
    let canonical = msg.to_cbor();
    if canonical == input {
        println!("deterministic");
        return Ok(());
    }
    let first_diff = canonical
        .iter()
        .zip(&input)
        .position(|(a, b)| a != b)
        .unwrap_or(canonical.len().min(input.len()));
    Err(anyhow::anyhow!(
        "not deterministic: the canonical encoding ({} bytes) first differs at byte {first_diff}",
        canonical.len()
    )
    .into())
}
