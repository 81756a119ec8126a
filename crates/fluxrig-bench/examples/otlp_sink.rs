//! A local OTLP/HTTP receiver for the telemetry overhead benchmark
//! (`scripts/telemetry_overhead.sh`): decodes every export and counts
//! spans and metric exports; prints the totals on SIGTERM or SIGINT.
//!
//! Usage: `otlp_sink 127.0.0.1:4318`

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Bytes;
use axum::http::StatusCode;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;

#[derive(Default)]
struct Counts {
    spans: AtomicU64,
    span_requests: AtomicU64,
    metric_requests: AtomicU64,
    bytes: AtomicU64,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .ok_or("usage: otlp_sink HOST:PORT")?;
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    let counts = Arc::new(Counts::default());
    let (t, m) = (Arc::clone(&counts), Arc::clone(&counts));
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| async move {
                let Ok(req) = ExportTraceServiceRequest::decode(body.clone()) else {
                    return StatusCode::BAD_REQUEST;
                };
                let n: usize = req
                    .resource_spans
                    .iter()
                    .flat_map(|r| &r.scope_spans)
                    .map(|s| s.spans.len())
                    .sum();
                t.spans.fetch_add(n as u64, Ordering::Relaxed);
                t.span_requests.fetch_add(1, Ordering::Relaxed);
                t.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                StatusCode::OK
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: Bytes| async move {
                if ExportMetricsServiceRequest::decode(body.clone()).is_err() {
                    return StatusCode::BAD_REQUEST;
                }
                m.metric_requests.fetch_add(1, Ordering::Relaxed);
                m.bytes.fetch_add(body.len() as u64, Ordering::Relaxed);
                StatusCode::OK
            }),
        );
    let stop = async {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await?;
    println!(
        "spans {} span_requests {} metric_requests {} bytes {}",
        counts.spans.load(Ordering::Relaxed),
        counts.span_requests.load(Ordering::Relaxed),
        counts.metric_requests.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}
