//! The Rack's dead-letter log: one JSON line per message that failed with
//! no `error` port to go to.
//!
//! `<data dir>/dead-letters.jsonl`, each line
//! `{"ts": <unix ns>, "gear": "<name>", "reason": "<why>", "msg": <fluxMsg JSON form>}`
//! (`"msg_cbor": "<base64>"` instead of `msg` when the message has no JSON
//! form). Queryable with any JSON-lines tool, and by `fluxrig audit query`
//! once the audit archive lands.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use fluxrig_gear::{DeadLetter, DeadLetters};
use fluxrig_msg::json::JsonMsg;

/// The dead-letter log of a Rack.
#[derive(Debug)]
pub struct DeadLetterLog {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
    written: AtomicU64,
    lost: AtomicU64,
}

impl DeadLetterLog {
    /// Opens (creates) `dir/dead-letters.jsonl` for appending.
    pub fn open(dir: &Path) -> std::io::Result<DeadLetterLog> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("dead-letters.jsonl");
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(DeadLetterLog {
            path,
            file: Mutex::new(BufWriter::new(file)),
            written: AtomicU64::new(0),
            lost: AtomicU64::new(0),
        })
    }

    /// The log's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Letters written so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Letters that could not be written (reported at ERROR each time).
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl DeadLetters for DeadLetterLog {
    fn record(&self, letter: DeadLetter) {
        let ts = fluxrig_gear::now_ns();
        let mut line = match serde_json::to_value(JsonMsg(&letter.msg)) {
            Ok(msg) => serde_json::json!({"ts": ts, "gear": &*letter.gear, "reason": letter.reason, "msg": msg}),
            Err(_) => serde_json::json!({
                "ts": ts, "gear": &*letter.gear, "reason": letter.reason,
                "msg_cbor": base64::engine::general_purpose::STANDARD.encode(letter.msg.to_cbor()),
            }),
        }
        .to_string();
        line.push('\n');
        let mut f = self
            .file
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
            Ok(()) => {
                self.written.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(gear = %letter.gear, id = %letter.msg.id, reason = %letter.reason, "dead letter");
            }
            Err(e) => {
                self.lost.fetch_add(1, Ordering::Relaxed);
                tracing::error!(gear = %letter.gear, id = %letter.msg.id, error = %e, path = %self.path.display(), "cannot write a dead letter");
            }
        }
    }
}
