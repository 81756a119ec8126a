//! The Rack's HTTP endpoints for operators: `/metrics` (Prometheus), and on
//! the admin listener also `/status` (the metrics as JSON, for `fluxrig
//! top`) and `/tail` (masked copies of the messages on a port, for
//! `fluxrig tail`).
//!
//! The admin listener binds to loopback by default (an ephemeral port) and
//! writes its address to `<data>/admin.addr`, so `fluxrig top` and `fluxrig
//! tail` find the Rack that uses the same data directory.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use fluxrig_iso8583::Spec;
use fluxrig_iso8583::store::SpecStore;
use fluxrig_msg::{FluxMsg, Value};
use fluxrig_rack::RackHandle;

/// Name of the file in the data directory that holds the admin address.
pub(crate) const ADDR_FILE: &str = "admin.addr";

/// Copies of tailed messages that may wait for a slow `fluxrig tail`
/// before more are dropped (and counted).
const TAIL_BUFFER: usize = 1024;

/// Largest `count` a tail may ask for at once (0 = until disconnected).
const MAX_TAIL: u64 = 1_000_000;

#[derive(Debug, Clone)]
struct AppState {
    handle: RackHandle,
    masker: Arc<Masker>,
}

/// Serves `/metrics` only (the `--metrics-listen` listener).
pub(crate) fn metrics_router(handle: RackHandle) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .with_state(AppState {
            handle,
            masker: Arc::new(Masker::new(Path::new(""))),
        })
}

/// Serves `/metrics`, `/status` and `/tail` (the admin listener).
pub(crate) fn admin_router(handle: RackHandle, data_dir: &Path) -> Router {
    Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .route("/status", axum::routing::get(status))
        .route("/tail", axum::routing::get(tail))
        .with_state(AppState {
            handle,
            masker: Arc::new(Masker::new(data_dir)),
        })
}

/// Binds `addr` and serves `app` until the process ends; gives back the
/// bound address.
pub(crate) async fn serve(addr: &str, app: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "telemetry endpoint stopped");
        }
    });
    Ok(local)
}

/// Where the admin address of the Rack using `data_dir` is written.
pub(crate) fn addr_file(data_dir: &Path) -> PathBuf {
    data_dir.join(ADDR_FILE)
}

async fn metrics(State(s): State<AppState>) -> Response {
    let body = fluxrig_telemetry::prometheus::render(&s.handle.metrics());
    (
        [(
            header::CONTENT_TYPE,
            fluxrig_telemetry::prometheus::CONTENT_TYPE,
        )],
        body,
    )
        .into_response()
}

async fn status(State(s): State<AppState>) -> Response {
    match serde_json::to_string(&s.handle.metrics()) {
        Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

#[derive(Debug, Default)]
struct TailQuery {
    /// `GEAR.PORT`.
    port: String,
    /// Stop after this many messages (0 or absent: until disconnected).
    count: u64,
}

impl TailQuery {
    /// `port=GEAR.PORT&count=N`, percent-encoded.
    fn parse(query: &str) -> Result<TailQuery, String> {
        let mut q = TailQuery::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            match k {
                "port" => q.port = decode(v),
                "count" => {
                    q.count = v
                        .parse()
                        .map_err(|_| format!("count `{v}` is not a number"))?;
                }
                _ => return Err(format!("unknown parameter `{k}`")),
            }
        }
        Ok(q)
    }
}

/// Percent-decodes a query value (`+` is a space); bad escapes stay as
/// they are.
fn decode(v: &str) -> String {
    let b = v.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if b.len() >= i + 3
                && let Some(x) = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok()) =>
            {
                out.push(x);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn tail(State(s): State<AppState>, uri: axum::http::Uri) -> Response {
    let q = match TailQuery::parse(uri.query().unwrap_or("")) {
        Ok(q) => q,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    };
    let Some((gear, port)) = q.port.rsplit_once('.') else {
        return (
            StatusCode::BAD_REQUEST,
            format!("`{}` is not GEAR.PORT\n", q.port),
        )
            .into_response();
    };
    let rx = match s.handle.tap(gear, port, TAIL_BUFFER) {
        Ok(rx) => rx,
        Err(e) => return (StatusCode::NOT_FOUND, format!("{e}\n")).into_response(),
    };
    let left = if q.count == 0 {
        MAX_TAIL
    } else {
        q.count.min(MAX_TAIL)
    };
    let masker = s.masker;
    let stream = futures_util::stream::unfold((rx, left), move |(mut rx, left)| {
        let masker = Arc::clone(&masker);
        async move {
            if left == 0 {
                return None;
            }
            let msg = rx.recv().await?;
            let mut line = masker.display(&msg).to_string();
            line.push('\n');
            Some((Ok::<_, std::convert::Infallible>(line), (rx, left - 1)))
        }
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

/// Masks messages for display: ISO 8583 data by its dialect's sensitivity
/// classes (PAN as BIN + last 4, the rest fully), `raw` never shown, and
/// any PAN-shaped digit string elsewhere masked too.
#[derive(Debug)]
pub(crate) struct Masker {
    data_dir: PathBuf,
    /// Dialects by hash (`None`: unknown here).
    specs: Mutex<HashMap<String, Option<Arc<Spec>>>>,
}

impl Masker {
    pub(crate) fn new(data_dir: &Path) -> Masker {
        Masker {
            data_dir: data_dir.to_path_buf(),
            specs: Mutex::new(HashMap::new()),
        }
    }

    fn spec(&self, hash: &str) -> Option<Arc<Spec>> {
        let mut specs = self.specs.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(s) = specs.get(hash) {
            return s.clone();
        }
        let found = fluxrig_iso8583::bundled::BUNDLED
            .iter()
            .filter_map(|(n, _)| fluxrig_iso8583::bundled::bundled(n)?.ok())
            .find(|s| s.hash().to_hex() == hash)
            .cloned()
            .or_else(|| {
                let h = fluxrig_iso8583::SpecHash::from_hex(hash)?;
                SpecStore::new(&self.data_dir).load(&h).ok()
            })
            .map(Arc::new);
        specs.insert(hash.to_owned(), found.clone());
        found
    }

    /// The message's JSON form, masked.
    pub(crate) fn display(&self, msg: &FluxMsg) -> serde_json::Value {
        let mut m = msg.clone();
        let raw_len = m.raw.take().map(|r| r.len());
        if let Some(hash) = m.meta.get(fluxrig_iso8583::META_SPEC).map(str::to_owned) {
            match self.spec(&hash) {
                Some(spec) => fluxrig_iso8583::mask::mask_data(&spec, &mut m.data),
                // Unknown dialect: nothing says which fields are card data.
                None => m.data = Value::text("<masked: unknown ISO 8583 dialect>"),
            }
        }
        mask_pans(&mut m.data);
        let mut json =
            serde_json::to_value(fluxrig_msg::json::JsonMsg(&m)).unwrap_or(serde_json::Value::Null);
        if let (Some(n), Some(o)) = (raw_len, json.as_object_mut()) {
            o.insert(
                "raw".to_owned(),
                serde_json::json!({ "masked": true, "bytes": n }),
            );
        }
        for (k, v) in m.meta.iter() {
            if looks_like_pan(v)
                && let Some(meta) = json.get_mut("meta").and_then(|x| x.as_object_mut())
            {
                meta.insert(k.to_owned(), fluxrig_iso8583::mask::mask_pan(v).into());
            }
        }
        json
    }
}

/// Masks every text that looks like a PAN (13–19 digits, Luhn-valid),
/// wherever it is: a safety net under the dialect-driven masking.
fn mask_pans(v: &mut Value) {
    match v {
        Value::Text(t) if looks_like_pan(t) => {
            *v = Value::text(fluxrig_iso8583::mask::mask_pan(t));
        }
        Value::Map(m) => m.values_mut().for_each(mask_pans),
        Value::Array(a) => a.iter_mut().for_each(mask_pans),
        _ => {}
    }
}

/// 13 to 19 ASCII digits passing the Luhn check.
pub(crate) fn looks_like_pan(s: &str) -> bool {
    let b = s.as_bytes();
    if !(13..=19).contains(&b.len()) || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let sum: u32 = b
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| {
            let d = u32::from(c - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 { x - 9 } else { x }
            } else {
                d
            }
        })
        .sum();
    sum.is_multiple_of(10)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pans_are_masked_anywhere_and_raw_is_never_shown() {
        let mut m = FluxMsg::new(fluxrig_msg::FluxId::from_raw(1), fluxrig_msg::Value::Null);
        m.data = fluxrig_msg::json::value(
            &serde_json::json!({"card": {"number": "4111111111111111"}, "amount": "1234567890123"}),
            "data",
        )
        .unwrap();
        m.raw = Some(bytes::Bytes::from_static(b"0100 4111111111111111"));
        m.meta.insert("card", "5500000000000004");
        let j = Masker::new(Path::new("")).display(&m);
        let text = j.to_string();
        assert!(!text.contains("4111111111111111"), "{text}");
        assert!(!text.contains("5500000000000004"), "{text}");
        assert!(text.contains("411111******1111"), "{text}");
        // Not Luhn-valid: left alone.
        assert!(text.contains("1234567890123"), "{text}");
        assert_eq!(j["raw"]["bytes"], 21);
    }
}
