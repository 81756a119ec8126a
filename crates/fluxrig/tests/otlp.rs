//! OTLP export as a collector sees it: a receiver inside the test (HTTP
//! and gRPC, decoding the protobuf) checks that spans and metrics arrive
//! with the documented names and attributes, that span parent/child links
//! follow each message through the gears, that sampling keeps failures,
//! that an HTTP `traceparent` is continued and handed on, and that no card
//! number appears in anything exported.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fluxrig_test_support::{ChildGuard, free_port};
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{Metric, metric, number_data_point};
use opentelemetry_proto::tonic::trace::v1::{Span, status};
use prost::Message as _;

/// What the collector received, and the raw request bodies (for the scan).
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resource: Vec<KeyValue>,
    /// Every metrics export, in order.
    metrics: Vec<Vec<Metric>>,
    raw: Vec<u8>,
    /// gRPC metadata / HTTP headers seen (`authorization` values).
    auth: Vec<String>,
}

type Shared = Arc<Mutex<Received>>;

fn take_traces(rx: &Shared, req: ExportTraceServiceRequest, raw: Vec<u8>) {
    let mut r = rx.lock().unwrap();
    r.raw.extend(raw);
    for rs in req.resource_spans {
        if let Some(res) = rs.resource {
            r.resource = res.attributes;
        }
        for ss in rs.scope_spans {
            assert_eq!(ss.scope.unwrap().name, "fluxrig");
            r.spans.extend(ss.spans);
        }
    }
}

fn take_metrics(rx: &Shared, req: ExportMetricsServiceRequest, raw: Vec<u8>) {
    let mut r = rx.lock().unwrap();
    r.raw.extend(raw);
    let all = req
        .resource_metrics
        .into_iter()
        .flat_map(|rm| rm.scope_metrics)
        .flat_map(|sm| sm.metrics)
        .collect();
    r.metrics.push(all);
}

/// A runtime of the test's own and a listener on a free loopback port.
fn loopback() -> (
    tokio::runtime::Runtime,
    tokio::net::TcpListener,
    std::net::SocketAddr,
) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    (rt, listener, addr)
}

/// A TLS listener for the HTTP receiver: a handshake that fails (no
/// client certificate) drops that connection.
struct TlsListener {
    tcp: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
}

impl axum::serve::Listener for TlsListener {
    type Io = tokio_rustls::server::TlsStream<tokio::net::TcpStream>;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (s, a) = axum::serve::Listener::accept(&mut self.tcp).await;
            if let Ok(t) = self.acceptor.accept(s).await {
                return (t, a);
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.tcp.local_addr()
    }
}

/// A rustls server presenting `server.pem` and requiring a client
/// certificate signed by `ca.pem` (files in `dir`).
fn mtls_acceptor(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(dir.join("ca.pem")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder(Arc::new(roots))
        .build()
        .unwrap();
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let config = rustls::ServerConfig::builder()
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .unwrap();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

/// An OTLP/HTTP receiver on a free loopback port, on its own runtime.
fn http_collector() -> (String, Shared, tokio::runtime::Runtime) {
    http_collector_with(None)
}

/// An OTLP/HTTP receiver; with `tls`, HTTPS requiring a client certificate
/// (the files of [`mtls_acceptor`]).
fn http_collector_with(tls: Option<&Path>) -> (String, Shared, tokio::runtime::Runtime) {
    use axum::body::Bytes;
    use axum::http::{HeaderMap, StatusCode};
    let (rt, listener, addr) = loopback();
    let rx: Shared = Arc::default();
    let (t, m) = (Arc::clone(&rx), Arc::clone(&rx));
    let app = axum::Router::new()
        .route(
            "/v1/traces",
            axum::routing::post(move |h: HeaderMap, body: Bytes| async move {
                assert_eq!(h["content-type"], "application/x-protobuf");
                if let Some(a) = h.get("authorization") {
                    t.lock().unwrap().auth.push(a.to_str().unwrap().to_owned());
                }
                let req = ExportTraceServiceRequest::decode(body.clone()).unwrap();
                take_traces(&t, req, body.to_vec());
                StatusCode::OK
            }),
        )
        .route(
            "/v1/metrics",
            axum::routing::post(move |body: Bytes| async move {
                let req = ExportMetricsServiceRequest::decode(body.clone()).unwrap();
                take_metrics(&m, req, body.to_vec());
                StatusCode::OK
            }),
        );
    if let Some(d) = tls {
        let listener = TlsListener {
            tcp: listener,
            acceptor: mtls_acceptor(d),
        };
        rt.spawn(async move { axum::serve(listener, app).await });
        return (format!("https://{addr}"), rx, rt);
    }
    rt.spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), rx, rt)
}

#[derive(Clone)]
struct Grpc(Shared);

#[tonic::async_trait]
impl TraceService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if let Some(a) = req.metadata().get("authorization") {
            self.0
                .lock()
                .unwrap()
                .auth
                .push(a.to_str().unwrap().to_owned());
        }
        let req = req.into_inner();
        let raw = req.encode_to_vec();
        take_traces(&self.0, req, raw);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Grpc {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let req = req.into_inner();
        let raw = req.encode_to_vec();
        take_metrics(&self.0, req, raw);
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// An OTLP/gRPC receiver on a free loopback port.
fn grpc_collector() -> (String, Shared, tokio::runtime::Runtime) {
    grpc_collector_with(None)
}

/// An OTLP/gRPC receiver; with `tls`, over TLS with this server identity
/// (`server.pem`, `server.key` in the directory), requiring a client
/// certificate signed by its `ca.pem` (mTLS).
fn grpc_collector_with(tls: Option<&Path>) -> (String, Shared, tokio::runtime::Runtime) {
    let (rt, listener, addr) = loopback();
    let rx: Shared = Arc::default();
    let svc = Grpc(Arc::clone(&rx));
    let mut server = tonic::transport::Server::builder();
    if let Some(d) = tls {
        let read = |f: &str| std::fs::read(d.join(f)).unwrap();
        let config = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(
                read("server.pem"),
                read("server.key"),
            ))
            .client_ca_root(tonic::transport::Certificate::from_pem(read("ca.pem")));
        server = server.tls_config(config).unwrap();
    }
    let scheme = if tls.is_some() { "https" } else { "http" };
    rt.spawn(
        server
            .add_service(TraceServiceServer::new(svc.clone()))
            .add_service(MetricsServiceServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    (format!("{scheme}://{addr}"), rx, rt)
}

/// Runs `fluxrig run` on a scenario until it exits (it runs `--for`).
fn run_to_end(dir: &Path, scenario: &str, extra: &[&str]) {
    std::fs::write(dir.join("s.yaml"), scenario).unwrap();
    let mut child = ChildGuard(
        Command::new(env!("CARGO_BIN_EXE_fluxrig"))
            .current_dir(dir)
            .args(["run", "s.yaml", "--data", "state", "--quiet"])
            .args(extra)
            .env("FLUXRIG_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            assert!(status.success(), "fluxrig run failed: {status}");
            return;
        }
        assert!(Instant::now() < deadline, "fluxrig run did not stop");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// The last exported value of a counter or gauge for one attribute.
fn last_value(rx: &Received, name: &str, key: &str, value: &str) -> Option<i64> {
    last_value_of(rx, name, &[(key, value)])
}

/// The last exported value of a counter or gauge whose point has every
/// one of `attrs`.
fn last_value_of(rx: &Received, name: &str, attrs: &[(&str, &str)]) -> Option<i64> {
    rx.metrics.iter().rev().find_map(|export| {
        let m = export.iter().find(|m| m.name == name)?;
        let points = match m.data.as_ref()? {
            metric::Data::Sum(s) => &s.data_points,
            metric::Data::Gauge(g) => &g.data_points,
            _ => return None,
        };
        points
            .iter()
            .find(|p| attrs.iter().all(|(k, v)| attr(&p.attributes, k) == Some(v)))
            .and_then(|p| match p.value? {
                number_data_point::Value::AsInt(i) => Some(i),
                number_data_point::Value::AsDouble(_) => None,
            })
    })
}

/// Spans grouped by trace id.
fn by_trace(spans: &[Span]) -> HashMap<Vec<u8>, Vec<&Span>> {
    let mut traces: HashMap<Vec<u8>, Vec<&Span>> = HashMap::new();
    for s in spans {
        traces.entry(s.trace_id.clone()).or_default().push(s);
    }
    traces
}

const TEST_PAN: &str = "4111111111111111";

const PIPELINE: &str = "meta: {name: otlp-pipeline, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 300, interval: 1ms}}
  - {name: enrich, type: map, config: {source: '.card = \"4111111111111111\"'}}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: enrich.in}
  - {from: enrich.out, to: sink.in}
";

#[test]
fn spans_and_metrics_reach_an_http_collector_and_follow_each_message() {
    let (endpoint, rx, _rt) = http_collector();
    let dir = tempfile::tempdir().unwrap();
    run_to_end(
        dir.path(),
        PIPELINE,
        &[
            "--for",
            "3s",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-interval",
            "300ms",
            "--otlp-header",
            "authorization=Bearer test-token",
        ],
    );
    let rx = rx.lock().unwrap();
    assert!(rx.auth.iter().all(|a| a == "Bearer test-token") && !rx.auth.is_empty());
    assert_eq!(attr(&rx.resource, "service.name"), Some("fluxrig"));
    assert_eq!(attr(&rx.resource, "fluxrig.rack"), Some("otlp-pipeline"));

    // One trace per message, one span per gear hop, each hop the child of
    // the one before.
    let traces = by_trace(&rx.spans);
    assert_eq!(traces.len(), 300, "one trace per generated message");
    for spans in traces.values() {
        let find = |gear: &str| -> &Span {
            let matching: Vec<_> = spans.iter().filter(|s| s.name == gear).collect();
            assert_eq!(matching.len(), 1, "one {gear} span per trace");
            matching[0]
        };
        let (source, enrich, sink) = (find("source"), find("enrich"), find("sink"));
        assert_eq!(spans.len(), 3);
        assert!(
            source.parent_span_id.is_empty(),
            "the source starts the trace"
        );
        assert_eq!(enrich.parent_span_id, source.span_id);
        assert_eq!(sink.parent_span_id, enrich.span_id);
        assert_eq!(source.trace_id.len(), 16);
        assert_eq!(source.span_id.len(), 8);
        for s in [source, enrich, sink] {
            assert!(s.start_time_unix_nano <= s.end_time_unix_nano);
            assert_eq!(attr(&s.attributes, "fluxrig.gear"), Some(s.name.as_str()));
            let msg_id = attr(&s.attributes, "fluxrig.msg.id").unwrap();
            assert!(msg_id.parse::<u64>().is_ok(), "{msg_id}");
            assert_ne!(
                s.status.as_ref().unwrap().code,
                status::StatusCode::Error as i32
            );
            let keys: Vec<&str> = s.attributes.iter().map(|a| a.key.as_str()).collect();
            for k in &keys {
                assert!(
                    [
                        "fluxrig.gear",
                        "fluxrig.gear.type",
                        "fluxrig.port",
                        "fluxrig.msg.id"
                    ]
                    .contains(k),
                    "undocumented attribute {k}"
                );
            }
        }
        assert_eq!(attr(&enrich.attributes, "fluxrig.gear.type"), Some("map"));
        assert_eq!(attr(&enrich.attributes, "fluxrig.port"), Some("out"));
        assert_eq!(attr(&sink.attributes, "fluxrig.gear.type"), Some("discard"));
        // The message keeps its fluxID through the map.
        assert_eq!(
            attr(&enrich.attributes, "fluxrig.msg.id"),
            attr(&sink.attributes, "fluxrig.msg.id")
        );
        assert!(enrich.start_time_unix_nano >= source.end_time_unix_nano);
    }

    // Metrics: the final export counts exactly the messages processed.
    assert!(rx.metrics.len() >= 2, "periodic exports plus the last one");
    for (name, gear) in [
        ("fluxrig.gear.messages_out", "source"),
        ("fluxrig.gear.messages_in", "enrich"),
        ("fluxrig.gear.messages_out", "enrich"),
        ("fluxrig.gear.messages_in", "sink"),
        ("fluxrig.gear.messages_out", "sink"),
    ] {
        assert_eq!(
            last_value(&rx, name, "gear", gear),
            Some(300),
            "{name}{{gear={gear}}}"
        );
    }
    assert_eq!(
        last_value(&rx, "fluxrig.gear.errors", "gear", "enrich"),
        Some(0)
    );
    assert_eq!(
        last_value(&rx, "fluxrig.telemetry.dropped", "what", "spans"),
        Some(0)
    );
    let last = rx.metrics.last().unwrap();
    let fsync = last.iter().find(|m| m.name == "fluxrig.wal.fsync").unwrap();
    assert_eq!(fsync.unit, "s");
    let Some(metric::Data::Histogram(h)) = &fsync.data else {
        panic!("fluxrig.wal.fsync is not a histogram");
    };
    let p = &h.data_points[0];
    assert!(p.count > 0);
    assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
    assert!(p.explicit_bounds.windows(2).all(|w| w[0] < w[1]));
    let latency = last
        .iter()
        .find(|m| m.name == "fluxrig.gear.latency")
        .unwrap();
    let Some(metric::Data::Histogram(h)) = &latency.data else {
        panic!("fluxrig.gear.latency is not a histogram");
    };
    let enrich = h
        .data_points
        .iter()
        .find(|p| attr(&p.attributes, "gear") == Some("enrich"))
        .unwrap();
    assert_eq!(enrich.count, 300);

    // The card number the map put in every message is in no export.
    assert!(rx.raw.len() > 10_000);
    assert!(
        !rx.raw
            .windows(TEST_PAN.len())
            .any(|w| w == TEST_PAN.as_bytes()),
        "a card number reached the collector"
    );
}

const FAILING: &str = "meta: {name: otlp-failing, version: 1.0.0}
gears:
  - {name: source, type: generate, config: {count: 200, interval: 1ms}}
  - name: check
    type: map
    config: {source: 'if mod(int!(.seq), 10) == 0 { abort }'}
  - {name: sink, type: discard}
wires:
  - {from: source.out, to: check.in}
  - {from: check.out, to: sink.in}
";

#[test]
fn grpc_export_with_sampling_off_still_keeps_every_failure() {
    let (endpoint, rx, _rt) = grpc_collector();
    let dir = tempfile::tempdir().unwrap();
    run_to_end(
        dir.path(),
        FAILING,
        &[
            "--for",
            "3s",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--otlp-interval",
            "300ms",
            "--otlp-header",
            "authorization=Bearer grpc-token",
            "--trace-sample",
            "0",
            "--trace-slow",
            "1h",
        ],
    );
    let rx = rx.lock().unwrap();
    assert!(!rx.auth.is_empty() && rx.auth.iter().all(|a| a == "Bearer grpc-token"));
    // Not sampled: only the 20 failed hops are exported, marked as errors.
    assert_eq!(rx.spans.len(), 20, "exactly the failures");
    for s in &rx.spans {
        assert_eq!(s.name, "check");
        assert_eq!(
            s.status.as_ref().unwrap().code,
            status::StatusCode::Error as i32
        );
        // Its parent is the (unexported) source hop: the link is kept.
        assert_eq!(s.parent_span_id.len(), 8);
    }
    assert_eq!(
        last_value(&rx, "fluxrig.gear.errors", "gear", "check"),
        Some(20)
    );
    assert_eq!(
        last_value(&rx, "fluxrig.gear.messages_in", "gear", "sink"),
        Some(180)
    );
    let port = |p| {
        last_value_of(
            &rx,
            "fluxrig.port.messages_out",
            &[("gear", "check"), ("port", p)],
        )
    };
    assert_eq!(port("out"), Some(180));
}

#[test]
fn http_and_grpc_export_over_mutual_tls() {
    let certs = tempfile::tempdir().unwrap();
    fluxrig_test_support::certificates(certs.path());
    for protocol in ["http/protobuf", "grpc"] {
        let (endpoint, rx, _rt) = if protocol == "grpc" {
            grpc_collector_with(Some(certs.path()))
        } else {
            http_collector_with(Some(certs.path()))
        };
        mtls_export(certs.path(), &endpoint, protocol, &rx);
    }
}

/// Runs the pipeline exporting over mTLS; every trace must arrive.
fn mtls_export(certs: &Path, endpoint: &str, protocol: &str, rx: &Shared) {
    assert!(endpoint.starts_with("https://"));
    let file = |f: &str| certs.join(f).display().to_string();
    let dir = tempfile::tempdir().unwrap();
    run_to_end(
        dir.path(),
        PIPELINE,
        &[
            "--for",
            "2s",
            "--otlp-endpoint",
            endpoint,
            "--otlp-protocol",
            protocol,
            "--otlp-ca",
            &file("ca.pem"),
            "--otlp-cert",
            &file("client.pem"),
            "--otlp-key",
            &file("client.key"),
        ],
    );
    let rx = rx.lock().unwrap();
    assert_eq!(
        by_trace(&rx.spans).len(),
        300,
        "{protocol}: every trace arrived over mTLS"
    );
    assert_eq!(
        last_value(&rx, "fluxrig.gear.messages_in", "gear", "sink"),
        Some(300)
    );
}

#[test]
fn without_a_client_certificate_the_mtls_collector_gets_nothing_and_the_rack_runs_on() {
    let certs = tempfile::tempdir().unwrap();
    fluxrig_test_support::certificates(certs.path());
    let (endpoint, rx, _rt) = grpc_collector_with(Some(certs.path()));
    let dir = tempfile::tempdir().unwrap();
    let ca = certs.path().join("ca.pem").display().to_string();
    run_to_end(
        dir.path(),
        PIPELINE,
        &[
            "--for",
            "2s",
            "--otlp-endpoint",
            &endpoint,
            "--otlp-protocol",
            "grpc",
            "--otlp-ca",
            &ca,
        ],
    );
    let rx = rx.lock().unwrap();
    assert!(rx.spans.is_empty() && rx.metrics.is_empty());
}

/// An HTTP destination that records the `traceparent` of each request.
fn traceparent_sink() -> (u16, Arc<Mutex<Vec<String>>>, tokio::runtime::Runtime) {
    let (rt, listener, addr) = loopback();
    let port = addr.port();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/in",
        axum::routing::post(move |h: axum::http::HeaderMap| async move {
            if let Some(tp) = h.get("traceparent") {
                s.lock().unwrap().push(tp.to_str().unwrap().to_owned());
            }
            axum::http::StatusCode::OK
        }),
    );
    rt.spawn(async move { axum::serve(listener, app).await });
    (port, seen, rt)
}

/// POSTs a JSON body with a `traceparent`; true on a 2xx answer.
fn post_with_traceparent(port: u16, traceparent: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let body = "{\"a\":1}";
    let req = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\ntraceparent: {traceparent}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    if s.write_all(req.as_bytes()).is_err() {
        return false;
    }
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    resp.starts_with("HTTP/1.1 2")
}

#[test]
fn an_http_traceparent_is_continued_and_handed_on_downstream() {
    let (endpoint, rx, _rt) = http_collector();
    let (dest_port, seen, _rt2) = traceparent_sink();
    let in_port = free_port();
    let scenario = format!(
        "meta: {{name: otlp-http, version: 1.0.0}}
gears:
  - {{name: api, type: http_in, config: {{listen: '127.0.0.1:{in_port}'}}}}
  - {{name: forward, type: http_out, config: {{url: 'http://127.0.0.1:{dest_port}/in'}}}}
wires:
  - {{from: api.out, to: forward.in}}
"
    );
    let dir = tempfile::tempdir().unwrap();
    let upstream_trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let upstream_span = "00f067aa0ba902b7";
    let client = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if post_with_traceparent(in_port, &format!("00-{upstream_trace}-{upstream_span}-01"))
                || Instant::now() > deadline
            {
                return Instant::now() <= deadline;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    run_to_end(
        dir.path(),
        &scenario,
        &["--for", "4s", "--otlp-endpoint", &endpoint],
    );
    assert!(client.join().unwrap(), "the request was never accepted");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let parts: Vec<&str> = seen[0].split('-').collect();
    assert_eq!(parts[1], upstream_trace, "the trace continues downstream");
    let rx = rx.lock().unwrap();
    let hex = |b: &[u8]| {
        use std::fmt::Write as _;
        b.iter().fold(String::new(), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
    };
    let api = rx.spans.iter().find(|s| s.name == "api").unwrap();
    let forward = rx.spans.iter().find(|s| s.name == "forward").unwrap();
    assert_eq!(hex(&api.trace_id), upstream_trace);
    assert_eq!(
        hex(&api.parent_span_id),
        upstream_span,
        "child of the caller"
    );
    assert_eq!(forward.parent_span_id, api.span_id);
    assert_eq!(
        parts[2],
        hex(&forward.span_id),
        "the destination's parent is the http_out hop"
    );
    // http_in counts its wire bytes and connections (closed by now).
    let request_len =
        i64::try_from("POST / HTTP/1.1\r\nHost: x\r\n".len() + "{\"a\":1}".len()).unwrap();
    assert!(last_value(&rx, "fluxrig.gear.bytes_in", "gear", "api").unwrap() > request_len);
    assert!(last_value(&rx, "fluxrig.gear.bytes_out", "gear", "api").unwrap() > 0);
    assert_eq!(
        last_value(&rx, "fluxrig.gear.connections", "gear", "api"),
        Some(0)
    );
}
