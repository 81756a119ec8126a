//! `fluxrig audit query|verify|export|compact`: the audit archive of a data
//! directory (`wal/` and `archive/`, see docs/audit.md).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use fluxrig_audit::{AuditError, CompactOptions, ExportOptions, Residency};
use serde_json::json;

use crate::exit::{CmdResult, Failure};

/// The data directory.
#[derive(Debug, Clone, Args)]
pub(crate) struct DataArg {
    /// Data directory, holding `wal/` and `archive/` [default: $FLUXRIG_DATA, else ./data].
    #[arg(long = "data", value_name = "DIR")]
    dir: Option<PathBuf>,
}

impl DataArg {
    fn path(&self) -> PathBuf {
        self.dir.clone().unwrap_or_else(super::default_data_dir)
    }
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuditCommand {
    /// Run SQL (DuckDB) over the archive and the WAL tail not yet archived:
    /// the table `messages` has one row per message event.
    #[command(after_help = "Examples:\n  fluxrig audit query --data ./data \
        \"SELECT gear, direction, count(*) FROM messages GROUP BY ALL\"\n  \
        fluxrig audit query --json \"SELECT flux_id, ts, mti, response_code FROM messages \
        WHERE mti = '0110' AND response_code <> '00'\"\n\n\
        Columns: flux_id ts rack gear port direction protocol mti response_code amount currency \
        uns_path value ref meta data wal_segment wal_lsn kind reason (docs/audit.md).\n\
        Bad SQL exits with code 2 and DuckDB's message.")]
    Query {
        #[command(flatten)]
        data: DataArg,
        /// The SQL statement.
        sql: String,
        /// Print a JSON array of objects.
        #[arg(long, conflicts_with = "csv")]
        json: bool,
        /// Print CSV (RFC 4180) with a header line.
        #[arg(long)]
        csv: bool,
    },
    /// Check the WAL (CRCs, hash chain, seals) and the archive (each file's
    /// SHA-256, contiguous LSN ranges, chain heads): exit 0 when sound,
    /// else 1 naming the first bad segment or file and the byte offset.
    #[command(after_help = "Example:\n  fluxrig audit verify --data ./data")]
    Verify {
        #[command(flatten)]
        data: DataArg,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Write the rows of a time range (archive and WAL tail) to a new
    /// directory: `messages.parquet` and a manifest.
    #[command(
        after_help = "Example:\n  fluxrig audit export --data ./data --out ./export-2026-01 \
        --since 2026-01-01T00:00:00Z --until 2026-02-01T00:00:00Z --local-only card --local-only meta.conn\n\n\
        --since is inclusive, --until exclusive; both RFC 3339. Rows without a time are \
        exported only when neither is given."
    )]
    Export {
        #[command(flatten)]
        data: DataArg,
        /// The output directory (created; must be empty).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Rows with `ts` at or after this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        since: Option<SystemTime>,
        /// Rows with `ts` before this time (RFC 3339).
        #[arg(long, value_name = "TIME", value_parser = parse_time)]
        until: Option<SystemTime>,
        /// A data path (`card.pan`) or `meta.KEY` that must not leave the Rack (repeatable).
        #[arg(long = "local-only", value_name = "PATH")]
        local_only: Vec<String>,
        /// Export metadata only: no `data`, promoted fields or `raw`.
        #[arg(long)]
        metadata_only: bool,
        /// A residency policy file (JSON: {"local_only": [...], "metadata_only": bool}),
        /// merged with the flags above.
        #[arg(long, value_name = "FILE")]
        residency: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Compact the WAL's closed segments into the archive now (safe beside a
    /// running Rack: it only reads the WAL; one compactor at a time).
    #[command(after_help = "Example:\n  fluxrig audit compact --data ./data --rack edge-1")]
    Compact {
        #[command(flatten)]
        data: DataArg,
        /// The Rack's name for the `rack` column (kept from the manifest when omitted).
        #[arg(long)]
        rack: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(cmd: AuditCommand) -> CmdResult {
    match cmd {
        AuditCommand::Query {
            data,
            sql,
            json,
            csv,
        } => query(&data, &sql, json, csv),
        AuditCommand::Verify { data, json } => verify(&data, json),
        AuditCommand::Export {
            data,
            out,
            since,
            until,
            local_only,
            metadata_only,
            residency,
            json,
        } => {
            let mut policy = match residency {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .with_context(|| format!("cannot read {}", path.display()))
                        .map_err(Failure::invalid)?;
                    serde_json::from_str::<Residency>(&text)
                        .with_context(|| format!("{} is not a residency policy", path.display()))
                        .map_err(Failure::invalid)?
                }
                None => Residency::default(),
            };
            policy.local_only.extend(local_only);
            policy.metadata_only |= metadata_only;
            let mut options = ExportOptions::default().residency(policy);
            options.since = since;
            options.until = until;
            export(&data, &out, &options, json)
        }
        AuditCommand::Compact { data, rack, json } => compact(&data, rack, json),
    }
}

fn fail(e: AuditError) -> Failure {
    if e.is_invalid_input() {
        Failure::invalid(e)
    } else {
        Failure::from(e)
    }
}

#[cfg(feature = "duckdb")]
fn query(data: &DataArg, sql: &str, json: bool, csv: bool) -> CmdResult {
    let out = fluxrig_audit::query(&data.path(), sql).map_err(fail)?;
    let text = if json {
        out.to_json()
    } else if csv {
        out.to_csv()
    } else {
        out.to_table()
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(())
}

#[cfg(not(feature = "duckdb"))]
fn query(_data: &DataArg, _sql: &str, _json: bool, _csv: bool) -> CmdResult {
    Err(Failure::from(anyhow::anyhow!(
        "this fluxrig was built without DuckDB (cargo feature `duckdb`): `audit query` is unavailable"
    )))
}

fn verify(data: &DataArg, json: bool) -> CmdResult {
    let dir = data.path();
    let report = match fluxrig_audit::verify(&dir) {
        Ok(r) => r,
        Err(e) => {
            if json {
                let v = json!({"ok": false, "error": e.to_string()});
                writeln!(std::io::stdout().lock(), "{v}")?;
            }
            return Err(fail(e));
        }
    };
    for f in &report.unlisted {
        tracing::warn!(file = %f.display(), "archive file not listed in the manifest (left by an interrupted compaction?)");
    }
    let mut out = std::io::stdout().lock();
    let hex = fluxrig_msg::hex;
    if json {
        let wal = report.wal.as_ref().map(|w| {
            json!({
                "segments": w.segments,
                "records": w.records,
                "first_lsn": w.first_lsn.0,
                "next_lsn": w.next_lsn.0,
                "chain_head": hex(&w.chain_head),
                "clean_close": w.clean_close,
            })
        });
        let v = json!({
            "ok": true,
            "wal": wal,
            "archive": {"files": report.files, "rows": report.rows, "archived_through": report.archived_through},
            "unlisted": report.unlisted.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
    } else {
        match &report.wal {
            Some(w) if w.records > 0 => writeln!(
                out,
                "wal: ok — {} segments, {} records (LSN {}..{}), chain head {}",
                w.segments,
                w.records,
                w.first_lsn,
                w.next_lsn.0 - 1,
                hex(&w.chain_head)
            )?,
            Some(w) => writeln!(out, "wal: ok — {} segments, no records", w.segments)?,
            None => writeln!(out, "wal: none")?,
        }
        match report.archived_through {
            Some(l) => writeln!(
                out,
                "archive: ok — {} files, {} rows, through LSN {l}",
                report.files, report.rows
            )?,
            None => writeln!(out, "archive: empty")?,
        }
    }
    Ok(())
}

fn export(
    data: &DataArg,
    out_dir: &std::path::Path,
    options: &ExportOptions,
    json: bool,
) -> CmdResult {
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} rows ({per_sec}, eta {eta})")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = fluxrig_audit::export(&data.path(), out_dir, options, &mut |p| {
        bar.set_length(p.total);
        bar.set_position(p.scanned);
    })
    .map_err(fail);
    bar.finish_and_clear();
    let report = report?;
    let mut out = std::io::stdout().lock();
    let path = out_dir.join(fluxrig_audit::EXPORT_FILE);
    if json {
        let v = json!({
            "file": path.display().to_string(),
            "rows": report.rows,
            "scanned": report.scanned,
            "sha256": report.manifest.files.first().map(|f| f.sha256.clone()),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "exported {} of {} rows to {}",
            report.rows,
            report.scanned,
            path.display()
        )?;
    }
    Ok(())
}

fn compact(data: &DataArg, rack: Option<String>, json: bool) -> CmdResult {
    let dir = data.path();
    if !fluxrig_audit::wal_dir(&dir).is_dir() {
        return Err(Failure::invalid(anyhow::anyhow!(
            "{} has no wal/ directory",
            dir.display()
        )));
    }
    let mut options = CompactOptions::default();
    options.rack = rack;
    let report = fluxrig_audit::compact_now(
        &fluxrig_audit::wal_dir(&dir),
        &fluxrig_audit::archive_dir(&dir),
        &options,
    )
    .map_err(fail)?;
    let mut out = std::io::stdout().lock();
    if json {
        let v = json!({
            "files": report.files.iter().map(|f| f.file.clone()).collect::<Vec<_>>(),
            "records": report.records,
            "rows": report.rows,
            "archived_through": report.archived_through.map(|l| l.0),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(
            out,
            "archived {} records ({} rows) in {} files; archive through LSN {}",
            report.records,
            report.rows,
            report.files.len(),
            report
                .archived_through
                .map_or_else(|| "-".into(), |l| l.to_string())
        )?;
    }
    Ok(())
}

/// RFC 3339 (`2026-01-01T00:00:00Z`, `2026-01-01T01:00:00.5+01:00`).
fn parse_time(s: &str) -> Result<SystemTime, String> {
    let bad = || format!("`{s}` is not an RFC 3339 time (e.g. 2026-01-01T00:00:00Z)");
    let (base, offset_secs) = if let Some(b) = s.strip_suffix(['Z', 'z']) {
        (b, 0i64)
    } else if s.len() > 6 && matches!(s.as_bytes()[s.len() - 6], b'+' | b'-') {
        let (b, off) = s.split_at(s.len() - 6);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let hh: i64 = off.get(1..3).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        let mm: i64 = off.get(4..6).and_then(|x| x.parse().ok()).ok_or_else(bad)?;
        if off.as_bytes()[3] != b':' || hh > 23 || mm > 59 {
            return Err(bad());
        }
        (b, sign * (hh * 3600 + mm * 60))
    } else {
        return Err(bad());
    };
    if !base.contains('T') && !base.contains('t') {
        return Err(bad());
    }
    let local = humantime::parse_rfc3339_weak(base).map_err(|_| bad())?;
    let shift = Duration::from_secs(offset_secs.unsigned_abs());
    // Local time minus its offset is UTC.
    if offset_secs >= 0 {
        local.checked_sub(shift)
    } else {
        local.checked_add(shift)
    }
    .ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn rfc3339_times() {
        let t0 = UNIX_EPOCH + Duration::from_hours(490_896);
        assert_eq!(parse_time("2026-01-01T00:00:00Z"), Ok(t0));
        assert_eq!(parse_time("2026-01-01T01:00:00+01:00"), Ok(t0));
        assert_eq!(parse_time("2025-12-31T22:30:00-01:30"), Ok(t0));
        assert_eq!(
            parse_time("2026-01-01T00:00:00.25Z"),
            Ok(t0 + Duration::from_millis(250))
        );
        for bad in [
            "2026-01-01",
            "yesterday",
            "2026-01-01T00:00:00",
            "2026-01-01T00:00:00+1:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
        }
    }
}
