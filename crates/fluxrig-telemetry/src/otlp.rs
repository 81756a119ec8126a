//! OTLP export of a Rack's spans and metrics, over HTTP/protobuf or gRPC.
//!
//! One task owns the export: every second it drains the span queue the
//! gears fill ([`crate::Tracer`]) and sends the spans; every `interval` it
//! reads a [`RackSnapshot`] and sends it as cumulative OTLP metrics. The
//! gears never wait for it: a slow or absent collector only makes the span
//! queue fill up, and the tracer drops and counts what does not fit.
//!
//! Metric names are the Prometheus names in OpenTelemetry form
//! (`fluxrig_gear_messages_in_total` ↔ `fluxrig.gear.messages_in`, unit
//! `{message}`; `fluxrig_wal_fsync_seconds` ↔ `fluxrig.wal.fsync`, unit
//! `s`) with the same attribute keys (`gear`, `wire`, `reason`, `what`),
//! so a collector's Prometheus exporter gives back the `/metrics` names.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, span, status,
};
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::names;
use crate::{HistogramSnapshot, RackSnapshot, SpanQueue, SpanRecord};

/// The wire protocol to the collector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// OTLP/HTTP with protobuf bodies (`POST <endpoint>/v1/traces`, port
    /// 4318 by convention).
    HttpProtobuf,
    /// OTLP/gRPC (port 4317 by convention).
    Grpc,
}

impl std::str::FromStr for Protocol {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "http/protobuf" | "http" => Ok(Protocol::HttpProtobuf),
            "grpc" => Ok(Protocol::Grpc),
            other => Err(format!(
                "unknown OTLP protocol `{other}` (expected `http/protobuf` or `grpc`)"
            )),
        }
    }
}

/// Where and how to export.
#[derive(Debug, Clone)]
pub struct OtlpConfig {
    /// The collector's base URL (`http://127.0.0.1:4318`); the HTTP
    /// protocol appends `/v1/traces` and `/v1/metrics`.
    pub endpoint: String,
    /// HTTP/protobuf or gRPC.
    pub protocol: Protocol,
    /// Extra request headers (gRPC: metadata), e.g. an authorization.
    pub headers: Vec<(String, String)>,
    /// CA certificate (PEM) to verify an `https` collector.
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS; needs `key`.
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS.
    pub key: Option<PathBuf>,
    /// How often metrics are exported.
    pub interval: Duration,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Resource attributes (`service.name`, `service.instance.id`, …).
    pub resource: Vec<(String, String)>,
}

/// Why the exporter cannot start.
#[derive(Debug)]
pub struct OtlpError(String);

impl std::fmt::Display for OtlpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OTLP export: {}", self.0)
    }
}

impl std::error::Error for OtlpError {}

/// What the exporter did, for the exit summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportTotals {
    /// Spans the collector accepted.
    pub spans: u64,
    /// Metric exports the collector accepted.
    pub metric_exports: u64,
    /// Requests that failed (the data in them is lost, and logged).
    pub failures: u64,
}

struct GrpcClients {
    traces: TraceServiceClient<tonic::transport::Channel>,
    metrics: MetricsServiceClient<tonic::transport::Channel>,
    headers: tonic::metadata::MetadataMap,
}

enum Transport {
    Http {
        client: reqwest::Client,
        traces: String,
        metrics: String,
        headers: reqwest::header::HeaderMap,
    },
    Grpc(Box<GrpcClients>),
}

fn read(path: &PathBuf, what: &str) -> Result<Vec<u8>, OtlpError> {
    std::fs::read(path)
        .map_err(|e| OtlpError(format!("cannot read the {what} {}: {e}", path.display())))
}

impl Transport {
    fn new(cfg: &OtlpConfig) -> Result<Transport, OtlpError> {
        // rustls with `ring` (no C build); fails only when a provider is
        // already installed, which is fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let base = cfg.endpoint.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(OtlpError(format!(
                "endpoint `{base}` must start with http:// or https://"
            )));
        }
        let identity = match (&cfg.cert, &cfg.key) {
            (Some(c), Some(k)) => Some((read(c, "client certificate")?, read(k, "client key")?)),
            (None, None) => None,
            _ => {
                return Err(OtlpError(
                    "mutual TLS needs both a client certificate and a key".to_owned(),
                ));
            }
        };
        let ca = cfg
            .ca
            .as_ref()
            .map(|p| read(p, "CA certificate"))
            .transpose()?;
        match cfg.protocol {
            Protocol::HttpProtobuf => {
                let mut headers = reqwest::header::HeaderMap::new();
                for (k, v) in &cfg.headers {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| OtlpError(format!("header name `{k}` is not valid")))?;
                    // The value may be a secret: never echo it.
                    let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                        OtlpError(format!("the value of header `{k}` is not valid"))
                    })?;
                    headers.insert(name, value);
                }
                let mut b = reqwest::Client::builder().timeout(cfg.timeout);
                if let Some(ca) = &ca {
                    let cert = reqwest::Certificate::from_pem(ca)
                        .map_err(|e| OtlpError(format!("CA certificate: {e}")))?;
                    b = b.add_root_certificate(cert);
                }
                if let Some((cert, key)) = &identity {
                    let mut pem = cert.clone();
                    pem.push(b'\n');
                    pem.extend_from_slice(key);
                    let id = reqwest::Identity::from_pem(&pem)
                        .map_err(|e| OtlpError(format!("client certificate or key: {e}")))?;
                    b = b.identity(id);
                }
                let client = b
                    .build()
                    .map_err(|e| OtlpError(format!("HTTP client: {e}")))?;
                Ok(Transport::Http {
                    client,
                    traces: format!("{base}/v1/traces"),
                    metrics: format!("{base}/v1/metrics"),
                    headers,
                })
            }
            Protocol::Grpc => {
                let mut headers = tonic::metadata::MetadataMap::new();
                for (k, v) in &cfg.headers {
                    let name =
                        tonic::metadata::MetadataKey::from_bytes(k.to_ascii_lowercase().as_bytes())
                            .map_err(|_| OtlpError(format!("header name `{k}` is not valid")))?;
                    let value = v.parse().map_err(|_| {
                        OtlpError(format!("the value of header `{k}` is not valid"))
                    })?;
                    headers.insert(name, value);
                }
                let mut ep = tonic::transport::Endpoint::from_shared(base.to_owned())
                    .map_err(|e| OtlpError(format!("endpoint `{base}`: {e}")))?
                    .timeout(cfg.timeout)
                    .connect_timeout(cfg.timeout);
                if base.starts_with("https://") || ca.is_some() || identity.is_some() {
                    let mut tls = tonic::transport::ClientTlsConfig::new();
                    if let Some(ca) = &ca {
                        tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(ca));
                    }
                    if let Some((cert, key)) = &identity {
                        tls = tls.identity(tonic::transport::Identity::from_pem(cert, key));
                    }
                    ep = ep
                        .tls_config(tls)
                        .map_err(|e| OtlpError(format!("TLS: {e}")))?;
                }
                let channel = ep.connect_lazy();
                Ok(Transport::Grpc(Box::new(GrpcClients {
                    traces: TraceServiceClient::new(channel.clone()),
                    metrics: MetricsServiceClient::new(channel),
                    headers,
                })))
            }
        }
    }

    async fn send_http(
        client: &reqwest::Client,
        url: &str,
        headers: &reqwest::header::HeaderMap,
        body: Vec<u8>,
    ) -> Result<(), String> {
        let resp = client
            .post(url)
            .headers(headers.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/x-protobuf")
            .body(body)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        if resp.status().is_success() {
            Ok(())
        } else {
            Err(format!("POST {url}: HTTP {}", resp.status()))
        }
    }

    fn grpc_request<T>(headers: &tonic::metadata::MetadataMap, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        for kv in headers.iter() {
            if let tonic::metadata::KeyAndValueRef::Ascii(k, v) = kv {
                req.metadata_mut().insert(k.clone(), v.clone());
            }
        }
        req
    }

    async fn traces(&mut self, req: ExportTraceServiceRequest) -> Result<(), String> {
        match self {
            Transport::Http {
                client,
                traces,
                headers,
                ..
            } => Self::send_http(client, traces, headers, req.encode_to_vec()).await,
            Transport::Grpc(g) => g
                .traces
                .export(Self::grpc_request(&g.headers, req))
                .await
                .map(|_| ())
                .map_err(|e| format!("gRPC traces export: {}", e.message())),
        }
    }

    async fn metrics(&mut self, req: ExportMetricsServiceRequest) -> Result<(), String> {
        match self {
            Transport::Http {
                client,
                metrics,
                headers,
                ..
            } => Self::send_http(client, metrics, headers, req.encode_to_vec()).await,
            Transport::Grpc(g) => g
                .metrics
                .export(Self::grpc_request(&g.headers, req))
                .await
                .map(|_| ())
                .map_err(|e| format!("gRPC metrics export: {}", e.message())),
        }
    }
}

/// Spans per export request.
const SPAN_BATCH: usize = 2_048;

/// Starts the export task. `snapshot` is called every `interval` (and
/// once more at the end) for the metrics; spans come from `spans`. The
/// task ends, after a last export, when `cancel` fires.
pub fn spawn<F>(
    cfg: &OtlpConfig,
    snapshot: F,
    spans: SpanQueue,
    cancel: CancellationToken,
) -> Result<tokio::task::JoinHandle<ExportTotals>, OtlpError>
where
    F: Fn() -> RackSnapshot + Send + 'static,
{
    let mut transport = Transport::new(cfg)?;
    let resource = resource(&cfg.resource);
    let interval = cfg.interval.max(Duration::from_millis(100));
    let endpoint = cfg.endpoint.clone();
    Ok(tokio::spawn(async move {
        let start_ns = now_ns();
        let mut totals = ExportTotals::default();
        let mut warned: Option<tokio::time::Instant> = None;
        let mut span_tick = tokio::time::interval(Duration::from_secs(1));
        let mut metric_tick = tokio::time::interval(interval);
        metric_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        span_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch = Vec::with_capacity(SPAN_BATCH);
        loop {
            let last = tokio::select! {
                () = cancel.cancelled() => true,
                _ = span_tick.tick() => false,
                _ = metric_tick.tick() => {
                    let req = metrics_request(&snapshot(), &resource, start_ns, now_ns());
                    let r = transport.metrics(req).await;
                    note(&mut totals, &mut warned, &endpoint, r.map(|()| {
                        (0, 1)
                    }));
                    continue;
                }
            };
            // Spans: everything queued now, in batches.
            loop {
                batch.clear();
                let open = spans.drain(&mut batch, SPAN_BATCH);
                if !batch.is_empty() {
                    let n = batch.len() as u64;
                    let r = transport.traces(traces_request(&batch, &resource)).await;
                    note(&mut totals, &mut warned, &endpoint, r.map(|()| (n, 0)));
                }
                if batch.len() < SPAN_BATCH || !open {
                    break;
                }
            }
            if last {
                let req = metrics_request(&snapshot(), &resource, start_ns, now_ns());
                let r = transport.metrics(req).await;
                note(&mut totals, &mut warned, &endpoint, r.map(|()| (0, 1)));
                return totals;
            }
        }
    }))
}

/// Counts an export's outcome; logs failures, at most once a minute.
fn note(
    totals: &mut ExportTotals,
    warned: &mut Option<tokio::time::Instant>,
    endpoint: &str,
    r: Result<(u64, u64), String>,
) {
    match r {
        Ok((spans, metrics)) => {
            totals.spans += spans;
            totals.metric_exports += metrics;
        }
        Err(e) => {
            totals.failures += 1;
            let now = tokio::time::Instant::now();
            if warned.is_none_or(|w| now.duration_since(w) >= Duration::from_mins(1)) {
                *warned = Some(now);
                tracing::warn!(
                    endpoint,
                    failures = totals.failures,
                    "OTLP export failed (the data of a failed request is dropped; further failures are logged once a minute): {e}"
                );
            }
        }
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn kv_str(key: &str, value: &str) -> KeyValue {
    kv(key, any_value::Value::StringValue(value.to_owned()))
}

fn resource(attrs: &[(String, String)]) -> Resource {
    Resource {
        attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
        ..Default::default()
    }
}

fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: "fluxrig".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..Default::default()
    }
}

/// The OTLP form of span records (attributes: `fluxrig.gear`,
/// `fluxrig.gear.type`, `fluxrig.port`, `fluxrig.msg.id`; never a value
/// from a message).
pub fn traces_request(records: &[SpanRecord], resource: &Resource) -> ExportTraceServiceRequest {
    let spans = records
        .iter()
        .map(|r| {
            let mut attributes = vec![
                kv_str(names::ATTR_GEAR, &r.gear),
                kv_str(names::ATTR_GEAR_TYPE, r.gear_type),
                kv_str(names::ATTR_MSG_ID, &r.msg_id.to_string()),
            ];
            if !r.port.is_empty() {
                attributes.push(kv_str(names::ATTR_PORT, &r.port));
            }
            Span {
                trace_id: r.trace_id.to_vec(),
                span_id: r.span_id.to_vec(),
                parent_span_id: if r.parent_span_id == [0; 8] {
                    Vec::new()
                } else {
                    r.parent_span_id.to_vec()
                },
                name: r.gear.to_string(),
                kind: span::SpanKind::Internal as i32,
                start_time_unix_nano: r.start_ns,
                end_time_unix_nano: r.end_ns,
                attributes,
                status: Some(Status {
                    code: if r.error {
                        status::StatusCode::Error as i32
                    } else {
                        status::StatusCode::Unset as i32
                    },
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![ScopeSpans {
                scope: Some(scope()),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// The OpenTelemetry name of a Prometheus metric name.
pub fn otel_name(prometheus: &str) -> String {
    let base = prometheus
        .strip_suffix("_total")
        .or_else(|| prometheus.strip_suffix("_seconds"))
        .unwrap_or(prometheus);
    // `fluxrig_<area>_<rest>` → `fluxrig.<area>.<rest>`.
    let mut parts = base.splitn(3, '_');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(c)) => format!("{a}.{b}.{c}"),
        _ => base.to_owned(),
    }
}

struct Metrics {
    out: Vec<Metric>,
    start: u64,
    now: u64,
}

impl Metrics {
    fn point(&self, attrs: &[(&str, &str)], value: number_data_point::Value) -> NumberDataPoint {
        NumberDataPoint {
            attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            value: Some(value),
            ..Default::default()
        }
    }

    fn push(&mut self, prom: &str, unit: &str, data: metric::Data) {
        self.out.push(Metric {
            name: otel_name(prom),
            unit: unit.to_owned(),
            data: Some(data),
            ..Default::default()
        });
    }

    fn counter(&mut self, prom: &str, unit: &str, points: Vec<NumberDataPoint>) {
        self.push(
            prom,
            unit,
            metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            }),
        );
    }

    fn gauge(&mut self, prom: &str, unit: &str, points: Vec<NumberDataPoint>) {
        self.push(
            prom,
            unit,
            metric::Data::Gauge(Gauge {
                data_points: points,
            }),
        );
    }

    fn histogram(
        &mut self,
        attrs: &[(&str, &str)],
        h: &HistogramSnapshot,
        div: f64,
    ) -> HistogramDataPoint {
        #[allow(clippy::cast_precision_loss)]
        let scale = |v: u64| v as f64 / div;
        HistogramDataPoint {
            attributes: attrs.iter().map(|(k, v)| kv_str(k, v)).collect(),
            start_time_unix_nano: self.start,
            time_unix_nano: self.now,
            count: h.count,
            sum: Some(scale(h.sum)),
            bucket_counts: h.counts.clone(),
            explicit_bounds: h.bounds.iter().map(|b| scale(*b)).collect(),
            ..Default::default()
        }
    }

    fn histograms(&mut self, prom: &str, unit: &str, points: Vec<HistogramDataPoint>) {
        self.push(
            prom,
            unit,
            metric::Data::Histogram(Histogram {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
            }),
        );
    }
}

fn int(v: u64) -> number_data_point::Value {
    number_data_point::Value::AsInt(i64::try_from(v).unwrap_or(i64::MAX))
}

/// The OTLP form of a snapshot: cumulative sums since `start_ns`, gauges,
/// and histograms with the collector's own bucket bounds (in seconds for
/// durations).
pub fn metrics_request(
    s: &RackSnapshot,
    resource: &Resource,
    start_ns: u64,
    now_ns: u64,
) -> ExportMetricsServiceRequest {
    use names::{
        GEAR_BYTES_IN, GEAR_BYTES_OUT, GEAR_CONNECTIONS, GEAR_DEAD_LETTERS, GEAR_ERRORS,
        GEAR_LATENCY, GEAR_MESSAGES_IN, GEAR_MESSAGES_OUT, GEAR_PENDING_BYTES, GEAR_REJECTED,
        GEAR_RESTARTS, RACK_UPTIME, TELEMETRY_DROPPED, WAL_BATCH_RECORDS, WAL_BYTES, WAL_FSYNC,
        WAL_RECORDS, WIRE_CAPACITY, WIRE_DEPTH, WIRE_DROPPED,
    };
    type Field = fn(&crate::GearMetrics) -> u64;
    type WireField = fn(&crate::WireMetrics) -> u64;
    let mut m = Metrics {
        out: Vec::new(),
        start: start_ns,
        now: now_ns,
    };
    let gear_counters: [(&str, &str, Field); 7] = [
        (GEAR_MESSAGES_IN, "{message}", |g| g.messages_in),
        (GEAR_MESSAGES_OUT, "{message}", |g| g.messages_out),
        (GEAR_BYTES_IN, "By", |g| g.bytes_in),
        (GEAR_BYTES_OUT, "By", |g| g.bytes_out),
        (GEAR_ERRORS, "{message}", |g| g.errors),
        (GEAR_RESTARTS, "{restart}", |g| g.restarts),
        (GEAR_REJECTED, "{message}", |g| g.rejected),
    ];
    for (name, unit, f) in gear_counters {
        let points = s
            .gears
            .iter()
            .map(|g| m.point(&[("gear", &g.name)], int(f(g))))
            .collect();
        m.counter(name, unit, points);
    }
    let dead = s
        .gears
        .iter()
        .flat_map(|g| {
            g.dead_letters
                .iter()
                .map(|(r, n)| m.point(&[("gear", &g.name), ("reason", r.as_str())], int(*n)))
        })
        .collect();
    m.counter(GEAR_DEAD_LETTERS, "{message}", dead);
    let connections = s
        .gears
        .iter()
        .map(|g| {
            m.point(
                &[("gear", &g.name)],
                number_data_point::Value::AsInt(g.connections),
            )
        })
        .collect();
    m.gauge(GEAR_CONNECTIONS, "{connection}", connections);
    let pending = s
        .gears
        .iter()
        .map(|g| m.point(&[("gear", &g.name)], int(g.pending_bytes)))
        .collect();
    m.gauge(GEAR_PENDING_BYTES, "By", pending);
    let latency = s
        .gears
        .iter()
        .map(|g| m.histogram(&[("gear", &g.name)], &g.latency, 1e9))
        .collect();
    m.histograms(GEAR_LATENCY, "s", latency);

    let ports = s
        .ports
        .iter()
        .map(|p| m.point(&[("gear", &p.gear), ("port", &p.port)], int(p.messages_out)))
        .collect();
    m.counter(names::PORT_MESSAGES_OUT, "{message}", ports);

    let wire_gauges: [(&str, WireField); 2] =
        [(WIRE_DEPTH, |w| w.depth), (WIRE_CAPACITY, |w| w.capacity)];
    for (name, f) in wire_gauges {
        let points = s
            .wires
            .iter()
            .map(|w| m.point(&[("wire", &w.wire)], int(f(w))))
            .collect();
        m.gauge(name, "{message}", points);
    }
    let dropped = s
        .wires
        .iter()
        .map(|w| m.point(&[("wire", &w.wire)], int(w.dropped)))
        .collect();
    m.counter(WIRE_DROPPED, "{message}", dropped);

    let records = vec![m.point(&[], int(s.wal.records))];
    m.counter(WAL_RECORDS, "{record}", records);
    let bytes = vec![m.point(&[], int(s.wal.bytes))];
    m.counter(WAL_BYTES, "By", bytes);
    let fsync = vec![m.histogram(&[], &s.wal.fsync, 1e9)];
    m.histograms(WAL_FSYNC, "s", fsync);
    let batch = vec![m.histogram(&[], &s.wal.batch_records, 1.0)];
    m.histograms(WAL_BATCH_RECORDS, "{record}", batch);

    let dropped = s
        .telemetry_dropped
        .iter()
        .map(|(what, n)| m.point(&[("what", what)], int(*n)))
        .collect();
    m.counter(TELEMETRY_DROPPED, "{item}", dropped);
    let uptime = vec![m.point(&[], number_data_point::Value::AsDouble(s.uptime_seconds))];
    m.gauge(RACK_UPTIME, "s", uptime);

    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource.clone()),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(scope()),
                metrics: m.out,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{GearMetrics, Histogram};

    #[test]
    fn names_map_to_their_opentelemetry_form() {
        assert_eq!(
            otel_name(names::GEAR_MESSAGES_IN),
            "fluxrig.gear.messages_in"
        );
        assert_eq!(otel_name(names::WAL_FSYNC), "fluxrig.wal.fsync");
        assert_eq!(
            otel_name(names::WAL_BATCH_RECORDS),
            "fluxrig.wal.batch_records"
        );
        assert_eq!(otel_name(names::RACK_UPTIME), "fluxrig.rack.uptime");
        assert_eq!(
            otel_name(names::TELEMETRY_DROPPED),
            "fluxrig.telemetry.dropped"
        );
    }

    #[test]
    fn a_snapshot_becomes_cumulative_sums_and_histograms_in_seconds() {
        let h = Histogram::latency();
        h.record(1_500);
        h.record(3_000_000);
        let s = RackSnapshot {
            rack: "r".into(),
            gears: vec![GearMetrics {
                name: "map1".into(),
                gear_type: "map".into(),
                messages_in: 42,
                latency: h.snapshot(),
                ..Default::default()
            }],
            ..Default::default()
        };
        let req = metrics_request(&s, &resource(&[]), 10, 20);
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        let find = |n: &str| metrics.iter().find(|m| m.name == n).unwrap();
        let Some(metric::Data::Sum(sum)) = &find("fluxrig.gear.messages_in").data else {
            panic!("messages_in is not a sum");
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.data_points[0].value, Some(int(42)));
        assert_eq!(sum.data_points[0].start_time_unix_nano, 10);
        assert_eq!(sum.data_points[0].attributes[0].key, "gear");
        let Some(metric::Data::Histogram(hist)) = &find("fluxrig.gear.latency").data else {
            panic!("latency is not a histogram");
        };
        let p = &hist.data_points[0];
        assert_eq!(p.count, 2);
        assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), 2);
        assert!(
            (p.explicit_bounds[0] - 1e-6).abs() < 1e-12,
            "bounds in seconds"
        );
    }
}
