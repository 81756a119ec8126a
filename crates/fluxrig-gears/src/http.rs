//! `http_in` and `http_out`: HTTP ingress and egress.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use fluxrig_config::Duration;
use fluxrig_gear::{
    Admission, BoxFuture, BuildContext, BuildError, CheckContext, ConfigIssue, Durable, Gear,
    GearError, GearIo, GearKind, GearStats, IDEMPOTENCY_META, JournalError, Role,
};
use fluxrig_msg::json::{JsonMsg, JsonValue};
use fluxrig_msg::{FluxId, FluxMsg, TraceContext, Value};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::spool::Spool;

fn default_listen() -> String {
    "127.0.0.1:8080".to_owned()
}

fn default_path() -> String {
    "/".to_owned()
}

fn default_max_body() -> usize {
    1 << 20
}

fn default_accept_timeout() -> Duration {
    Duration(StdDuration::from_secs(1))
}

/// Config of the `http_in` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpInConfig {
    /// Address to listen on. Loopback by default; listening on other
    /// interfaces is a deliberate choice (`0.0.0.0:8080`).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// URL path that accepts messages (POST).
    #[serde(default = "default_path")]
    pub path: String,
    /// Largest accepted request body, in bytes (larger: 413).
    #[serde(default = "default_max_body")]
    pub max_body: usize,
    /// How long a request may wait for room in the Rack before it is
    /// answered 503 (back-pressure).
    #[serde(default = "default_accept_timeout")]
    pub accept_timeout: Duration,
}

/// The `http_in` gear type.
#[derive(Debug)]
pub struct HttpIn;

fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    s.parse()
        .map_err(|_| format!("`{s}` is not an address such as 127.0.0.1:8080"))
}

impl GearKind for HttpIn {
    type Config = HttpInConfig;
    const NAME: &'static str = "http_in";
    const ROLE: Role = Role::Source;
    const SUMMARY: &'static str =
        "Accepts messages over HTTP POST and answers once the Rack has taken them";
    const DOCS: &'static str = "A POST body with a JSON content type becomes the message's `data`; any \
        other body goes to `raw` as it came. The reply is `202 Accepted` with `{\"id\": \"<fluxID>\"}` once \
        the message is in the Rack and its ingress record is durable in the Rack's write-ahead log \
        (under the sync policy `always`, concurrent requests share one sync); `400` with the reason for a body that claims JSON but is not, `405` for \
        other methods, `413` for a body above `max_body`, and `503` (with `Retry-After`) when the Rack \
        cannot take the message within `accept_timeout` (back-pressure), at once while a destination downstream \
        is full under `pending.when_full: reject` (counted as `rejected`), or cannot record it. An \
        `Idempotency-Key` header (up to 256 characters) makes retries safe: a request whose key was \
        recorded before (also before a restart) is answered with the first message's id and not \
        emitted again. A `traceparent` header becomes \
        the message's trace context. Meta: `http.method`, `http.path`, `http.content_type`. The listener \
        is bound when the Rack is built, so a port already in use stops the start with a clear error; a \
        live scenario swap that leaves this gear unchanged keeps the listener and its connections open.";
    const EXAMPLE: &'static str =
        "- name: ingress\n  type: http_in\n  config: {listen: 127.0.0.1:8080, path: /orders}";

    fn check(config: &HttpInConfig, _ctx: &CheckContext) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        if let Err(e) = parse_listen(&config.listen) {
            issues.push(ConfigIssue::new("listen", e));
        }
        if !config.path.starts_with('/') {
            issues.push(ConfigIssue::new("path", "must start with `/`"));
        }
        issues
    }

    fn build(config: &HttpInConfig, _ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        let addr = parse_listen(&config.listen).map_err(BuildError)?;
        let listener =
            bind(addr).map_err(|e| BuildError(format!("cannot listen on {addr}: {e}")))?;
        Ok(Box::new(HttpInGear {
            addr,
            listener: Some(listener),
            path: config.path.clone(),
            max_body: config.max_body,
            accept_timeout: config.accept_timeout.get(),
        }))
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let l = std::net::TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    Ok(l)
}

struct HttpInGear {
    addr: SocketAddr,
    /// Bound at build time; taken by the first run (a restart binds again).
    listener: Option<std::net::TcpListener>,
    path: String,
    max_body: usize,
    accept_timeout: StdDuration,
}

/// A request on its way into the Rack.
struct Incoming {
    msg: FluxMsg,
    accepted: oneshot::Sender<Result<(FluxId, Durable), JournalError>>,
}

/// Longest accepted `Idempotency-Key` header.
const MAX_IDEMPOTENCY_KEY: usize = 256;

#[derive(Clone)]
struct HttpState {
    tx: mpsc::Sender<Incoming>,
    path: Arc<str>,
    accept_timeout: StdDuration,
    admission: Admission,
    stats: Arc<GearStats>,
}

/// A connection to `http_in`, counted in the gear's metrics: open
/// connections, and the bytes it reads and writes on the wire.
struct CountedConn {
    inner: tokio::net::TcpStream,
    stats: Arc<GearStats>,
}

impl Drop for CountedConn {
    fn drop(&mut self) {
        self.stats.connection_closed();
    }
}

impl tokio::io::AsyncRead for CountedConn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        this.stats
            .add_bytes_in((buf.filled().len() - before) as u64);
        r
    }
}

impl tokio::io::AsyncWrite for CountedConn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_write(cx, buf);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.stats.add_bytes_out(*n as u64);
        }
        r
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        let r = std::pin::Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let std::task::Poll::Ready(Ok(n)) = &r {
            this.stats.add_bytes_out(*n as u64);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// `http_in`'s listener: every accepted connection is a [`CountedConn`].
struct CountingListener {
    inner: tokio::net::TcpListener,
    stats: Arc<GearStats>,
}

impl axum::serve::Listener for CountingListener {
    type Io = CountedConn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CountedConn, SocketAddr) {
        // axum's own accept loop for a TcpListener (it retries and backs
        // off on errors such as running out of file descriptors).
        let (inner, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        self.stats.connection_opened();
        let conn = CountedConn {
            inner,
            stats: Arc::clone(&self.stats),
        };
        (conn, addr)
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

fn json_reply(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body.to_string(),
    )
        .into_response()
}

fn is_json(content_type: &str) -> bool {
    let base = content_type.split(';').next().unwrap_or_default().trim();
    base.eq_ignore_ascii_case("application/json") || base.ends_with("+json")
}

async fn accept(
    State(st): State<HttpState>,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method != Method::POST {
        let mut r = json_reply(
            StatusCode::METHOD_NOT_ALLOWED,
            &serde_json::json!({"error": "use POST"}),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let mut msg = FluxMsg::new(FluxId::default(), Value::Null);
    msg.ts = fluxrig_gear::now_ns();
    if is_json(&content_type) {
        let json: serde_json::Value = match serde_json::from_slice(&body) {
            Ok(j) => j,
            Err(e) => {
                let reason = format!("invalid JSON at line {}, column {}", e.line(), e.column());
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": reason}),
                );
            }
        };
        match fluxrig_msg::json::value(&json, "body") {
            Ok(v) => msg.data = v,
            Err(e) => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": e.to_string()}),
                );
            }
        }
    } else {
        msg.raw = Some(body);
    }
    if let Some(tp) = headers.get("traceparent").and_then(|v| v.to_str().ok()) {
        msg.trace = TraceContext::parse(tp).ok();
    }
    if let Some(key) = headers.get("idempotency-key") {
        match key.to_str() {
            Ok(k) if !k.is_empty() && k.len() <= MAX_IDEMPOTENCY_KEY => {
                msg.meta.insert(IDEMPOTENCY_META, k);
            }
            _ => {
                return json_reply(
                    StatusCode::BAD_REQUEST,
                    &serde_json::json!({"error": format!("Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters")}),
                );
            }
        }
    }
    msg.meta.insert("http.method", "POST");
    msg.meta.insert("http.path", &*st.path);
    if !content_type.is_empty() {
        msg.meta.insert("http.content_type", content_type);
    }
    if let Err(gear) = st.admission.check() {
        st.stats.add_rejected();
        tracing::debug!(%gear, "refused: a destination's pending file is full");
        let mut r = json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "a destination is full; retry later"}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let (accepted, done) = oneshot::channel();
    let busy = || {
        let mut r = json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": "the rack is busy; retry"}),
        );
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        r
    };
    match tokio::time::timeout(st.accept_timeout, st.tx.send(Incoming { msg, accepted })).await {
        Ok(Ok(())) => {}
        Ok(Err(_)) | Err(_) => return busy(),
    }
    let not_recorded = |e: &JournalError| {
        json_reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({"error": format!("not recorded: {e}")}),
        )
    };
    let id = match done.await {
        Ok(Ok((id, durable))) => match durable.await {
            Ok(()) => id,
            Err(e) => return not_recorded(&e),
        },
        Ok(Err(e)) => return not_recorded(&e),
        Err(_) => return busy(),
    };
    let mut r = json_reply(
        StatusCode::ACCEPTED,
        &serde_json::json!({"id": id.to_string()}),
    );
    if let Ok(v) = HeaderValue::from_str(&id.to_string()) {
        r.headers_mut().insert("x-fluxrig-id", v);
    }
    r
}

impl HttpInGear {
    async fn serve(&mut self, io: &mut GearIo) -> Result<(), GearError> {
        let std_listener = match self.listener.take() {
            Some(l) => l,
            None => bind(self.addr)
                .map_err(|e| GearError::io(format!("listening on {}", self.addr), e))?,
        };
        let listener = tokio::net::TcpListener::from_std(std_listener)
            .map_err(|e| GearError::io(format!("listening on {}", self.addr), e))?;
        let (tx, mut rx) = mpsc::channel::<Incoming>(256);
        let state = HttpState {
            tx,
            path: Arc::from(self.path.as_str()),
            accept_timeout: self.accept_timeout,
            admission: io.ctx().admission.clone(),
            stats: Arc::clone(&io.ctx().stats),
        };
        let app = Router::new()
            .route(&self.path, axum::routing::any(accept))
            .layer(axum::extract::DefaultBodyLimit::max(self.max_body))
            .with_state(state);
        let cancel = io.ctx().cancel.clone();
        let listener = CountingListener {
            inner: listener,
            stats: Arc::clone(&io.ctx().stats),
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(cancel.cancelled_owned())
                .await
        });
        // Requests keep flowing until the server has shut down and dropped
        // its senders: every accepted request gets its answer.
        while let Some(Incoming { mut msg, accepted }) = rx.recv().await {
            msg.id = io.new_id();
            msg.src = Some(io.ctx().entity);
            // Recorded and handed on at once; the request waits for the
            // record to be durable on its own task, so concurrent requests
            // share one sync (group commit).
            let _ = accepted.send(io.ingest(msg).await);
        }
        match server.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(GearError::io(format!("serving {}", self.addr), e)),
            Err(e) => Err(GearError::Other(format!("HTTP server task: {e}"))),
        }
    }
}

impl Gear for HttpInGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(self.serve(io))
    }
}

/// HTTP method of `http_out`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// POST (default).
    #[default]
    Post,
    /// PUT.
    Put,
    /// PATCH.
    Patch,
}

/// What `http_out` sends as the request body.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BodyKind {
    /// The message's `data` as JSON (default).
    #[default]
    Data,
    /// The whole fluxMsg JSON form.
    Envelope,
    /// The message's `raw` bytes as they are.
    Raw,
}

fn default_timeout() -> Duration {
    Duration(StdDuration::from_secs(10))
}

fn default_retries() -> u32 {
    5
}

fn default_backoff() -> Duration {
    Duration(StdDuration::from_millis(100))
}

fn default_max_backoff() -> Duration {
    Duration(StdDuration::from_secs(10))
}

/// Config of the `http_out` gear.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpOutConfig {
    /// Where to send each message (`http://` or `https://`).
    pub url: String,
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Time limit of one attempt.
    #[serde(default = "default_timeout")]
    pub timeout: Duration,
    /// Attempts after the first one, for connection errors, timeouts, 5xx and 429.
    #[serde(default = "default_retries")]
    pub retries: u32,
    /// Wait before the first retry; it doubles at each retry.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// Longest wait between retries.
    #[serde(default = "default_max_backoff")]
    pub max_backoff: Duration,
    /// Extra request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// What the body carries.
    #[serde(default)]
    pub body: BodyKind,
    /// Keep messages pending on disk while the destination is down, instead
    /// of failing them after `retries`.
    #[serde(default)]
    pub pending: Option<PendingConfig>,
}

fn default_pending_bytes() -> u64 {
    64 << 20
}

/// The pending buffer of `http_out`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PendingConfig {
    /// Largest size of the pending file in bytes (default 64 MiB).
    #[serde(default = "default_pending_bytes")]
    pub max_bytes: u64,
    /// What happens when the pending file is full (it counts as full until
    /// it has drained).
    #[serde(default)]
    pub when_full: PendingFull,
}

/// What `http_out` does when its pending file is full.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PendingFull {
    /// Stop taking input (default): back-pressure reaches the sources,
    /// and `http_in` answers 503 once a request has waited its
    /// `accept_timeout`.
    #[default]
    Block,
    /// Stop taking input and make the sources upstream refuse new messages
    /// at once: `http_in` answers 503 with `Retry-After` without waiting,
    /// counted as `rejected`. Messages already accepted wait in their
    /// lanes; none is dropped.
    Reject,
}

/// The `http_out` gear type.
#[derive(Debug)]
pub struct HttpOut;

impl GearKind for HttpOut {
    type Config = HttpOutConfig;
    const NAME: &'static str = "http_out";
    const ROLE: Role = Role::Sink;
    const SUMMARY: &'static str =
        "Sends each message as an HTTP request, retrying with exponential backoff";
    const DOCS: &'static str = "Messages are sent one at a time, in order. A 2xx answer delivers the message. \
        Connection errors, timeouts, 5xx and 429 are retried (`retries` more attempts, waiting `backoff`, \
        doubling up to `max_backoff`); other 4xx answers, and failures after the last retry, send the \
        message to `error` with the reason. The message's trace context goes out as a `traceparent` header \
        and its fluxID as `x-fluxrig-id`. With `pending`, the gear takes messages from its input while a request \
        is in flight into a pending file on disk (`<data>/pending/<gear>.spool`, bounded by `pending.max_bytes`), \
        so a destination that is down does not hold up the other wires of the sources; connection errors, \
        timeouts, 5xx and 429 are then retried without limit (backoff up to `max_backoff`) and messages are \
        delivered in order once the destination returns. The pending file is an overflow buffer: the messages \
        in it are also in the Rack's write-ahead log, not yet completed, and are replayed after a restart.         When the file is full, `pending.when_full` decides: `block` (default) stops taking input, so         back-pressure reaches the sources; `reject` also makes every source upstream that can refuse         (`http_in`) answer new requests 503 with `Retry-After` at once, counted as `rejected`, until the file         has drained. Either way no accepted message is dropped.";
    const EXAMPLE: &'static str = "- name: egress\n  type: http_out\n  config: {url: 'http://127.0.0.1:9000/ingest', timeout: 2s, retries: 3}";

    fn check(config: &HttpOutConfig, _ctx: &CheckContext) -> Vec<ConfigIssue> {
        let mut issues = Vec::new();
        match reqwest::Url::parse(&config.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => {}
            Ok(u) => issues.push(ConfigIssue::new(
                "url",
                format!("scheme `{}` is not http or https", u.scheme()),
            )),
            Err(e) => issues.push(ConfigIssue::new("url", format!("not a URL: {e}"))),
        }
        for (k, v) in &config.headers {
            if header::HeaderName::from_bytes(k.as_bytes()).is_err()
                || HeaderValue::from_str(v).is_err()
            {
                issues.push(ConfigIssue::new(
                    format!("headers.{k}"),
                    "not a valid HTTP header",
                ));
            }
        }
        issues
    }

    fn build(config: &HttpOutConfig, ctx: &BuildContext) -> Result<Box<dyn Gear>, BuildError> {
        crate::tls::install_crypto_provider();
        let spool = match &config.pending {
            None => None,
            Some(p) => {
                let path = ctx
                    .data_dir
                    .join("pending")
                    .join(format!("{}.spool", ctx.gear));
                Some(Spool::create(&path, p.max_bytes).map_err(|e| {
                    BuildError(format!(
                        "cannot create the pending file {}: {e}",
                        path.display()
                    ))
                })?)
            }
        };
        let client = reqwest::Client::builder()
            .timeout(config.timeout.get())
            .build()
            .map_err(|e| BuildError(format!("HTTP client: {e}")))?;
        let mut headers = HeaderMap::new();
        for (k, v) in &config.headers {
            let name = header::HeaderName::from_bytes(k.as_bytes())
                .map_err(|e| BuildError(format!("header {k}: {e}")))?;
            headers.insert(
                name,
                HeaderValue::from_str(v).map_err(|e| BuildError(format!("header {k}: {e}")))?,
            );
        }
        let method = match config.method {
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
        };
        Ok(Box::new(HttpOutGear {
            target: Arc::new(Target {
                client,
                url: config.url.clone(),
                method,
                headers,
            }),
            spool,
            when_full: config
                .pending
                .as_ref()
                .map_or(PendingFull::Block, |p| p.when_full),
            body: config.body,
            retries: config.retries,
            backoff: config.backoff.get(),
            max_backoff: config.max_backoff.get(),
        }))
    }
}

/// Where `http_out` sends, shared with its in-flight request.
struct Target {
    client: reqwest::Client,
    url: String,
    method: Method,
    headers: HeaderMap,
}

struct HttpOutGear {
    target: Arc<Target>,
    spool: Option<Spool>,
    when_full: PendingFull,
    body: BodyKind,
    retries: u32,
    backoff: StdDuration,
    max_backoff: StdDuration,
}

/// How one attempt ended.
enum Attempt {
    Delivered,
    Retry(String),
    Fail(String),
}

impl HttpOutGear {
    fn body(&self, msg: &FluxMsg) -> Result<(Vec<u8>, &'static str), String> {
        match self.body {
            BodyKind::Data => {
                serde_json::to_vec(&JsonValue(&msg.data)).map(|b| (b, "application/json"))
            }
            BodyKind::Envelope => {
                serde_json::to_vec(&JsonMsg(msg)).map(|b| (b, "application/json"))
            }
            BodyKind::Raw => Ok((
                msg.raw.as_deref().unwrap_or_default().to_vec(),
                "application/octet-stream",
            )),
        }
        .map_err(|e| format!("no JSON form: {e}"))
    }
}

impl Target {
    async fn attempt(&self, msg: &FluxMsg, body: &[u8], content_type: &'static str) -> Attempt {
        let mut req = self
            .client
            .request(self.method.clone(), &self.url)
            .headers(self.headers.clone())
            .header(header::CONTENT_TYPE, content_type)
            .header("x-fluxrig-id", msg.id.to_string())
            .body(body.to_vec());
        if let Some(t) = msg.trace {
            req = req.header("traceparent", t.to_string());
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Attempt::Delivered,
            Ok(r)
                if r.status().is_server_error() || r.status() == StatusCode::TOO_MANY_REQUESTS =>
            {
                Attempt::Retry(format!("HTTP {}", r.status()))
            }
            Ok(r) => Attempt::Fail(format!("HTTP {} from {}", r.status(), self.url)),
            Err(e) if e.is_timeout() => Attempt::Retry("timed out".to_owned()),
            Err(e) => Attempt::Retry(format!("request failed: {}", error_chain(&e))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// How a message sent with a pending buffer ended.
enum Sent {
    Delivered,
    Failed(String),
    /// The Rack is stopping: the message stays uncompleted (replayed later).
    Stopped,
}

/// Sends one message until it is delivered, refused (4xx) or the gear is
/// cancelled: a destination that is down is waited for.
async fn send_until_done(
    target: Arc<Target>,
    msg: FluxMsg,
    body: Vec<u8>,
    content_type: &'static str,
    backoff: StdDuration,
    max_backoff: StdDuration,
    cancel: tokio_util::sync::CancellationToken,
) -> Sent {
    let mut wait = backoff;
    let mut down_since: Option<std::time::Instant> = None;
    loop {
        match target.attempt(&msg, &body, content_type).await {
            Attempt::Delivered => {
                if let Some(t) = down_since {
                    tracing::info!(url = %target.url, down = ?t.elapsed(), "destination is back");
                }
                return Sent::Delivered;
            }
            Attempt::Fail(reason) => return Sent::Failed(reason),
            Attempt::Retry(reason) => {
                if down_since.is_none() {
                    down_since = Some(std::time::Instant::now());
                    tracing::warn!(url = %target.url, %reason, "destination is down; messages stay pending");
                }
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    () = cancel.cancelled() => return Sent::Stopped,
                }
                wait = (wait * 2).min(max_backoff);
            }
        }
    }
}

impl HttpOutGear {
    /// The loop with a pending buffer: one request in flight while the
    /// input keeps flowing into the spool, until it is full.
    async fn run_pending(&mut self, io: &mut GearIo) -> Result<(), GearError> {
        let Some(mut spool) = self.spool.take() else {
            return Ok(());
        };
        let result = self.pending_loop(io, &mut spool).await;
        // Kept for a restart of the gear after an error.
        self.spool = Some(spool);
        result
    }

    /// Tells the sources upstream (policy `reject`) whether the pending
    /// file is full, logging each change.
    fn signal_full(&self, io: &GearIo, full: bool) {
        let gate = &io.ctx().gate;
        match (self.when_full, full) {
            (PendingFull::Block, _) => {}
            (PendingFull::Reject, true) => {
                if gate.close() {
                    tracing::warn!(url = %self.target.url, refused_so_far = gate.refused(),
                        "pending file is full: sources upstream refuse new messages until it drains");
                }
            }
            (PendingFull::Reject, false) => {
                if gate.open() {
                    tracing::info!(url = %self.target.url, refused_so_far = gate.refused(),
                        "pending file drained: sources upstream accept messages again");
                }
            }
        }
    }

    async fn pending_loop(&self, io: &mut GearIo, spool: &mut Spool) -> Result<(), GearError> {
        let mut inflight: Option<(FluxMsg, BoxFuture<'static, Sent>)> = None;
        let mut closed = false;
        let file = format!("pending file {}", spool.path().display());
        let what = || file.clone();
        loop {
            if inflight.is_none() {
                match spool.pop().map_err(|e| GearError::io(what(), e))? {
                    Some(msg) => match self.body(&msg) {
                        Ok((body, content_type)) => {
                            let fut = send_until_done(
                                Arc::clone(&self.target),
                                msg.clone(),
                                body,
                                content_type,
                                self.backoff,
                                self.max_backoff,
                                io.ctx().cancel.clone(),
                            );
                            inflight = Some((msg, Box::pin(fut)));
                        }
                        Err(e) => {
                            io.fail(msg, e).await;
                            continue;
                        }
                    },
                    None if closed => return Ok(()),
                    None => {}
                }
            }
            let full = spool.is_full();
            self.signal_full(io, full);
            io.ctx().stats.set_pending_bytes(spool.bytes());
            tokio::select! {
                m = io.recv(), if !closed && !full => match m {
                    Some(m) => spool.push(&m).map_err(|e| GearError::io(what(), e))?,
                    None => closed = true,
                },
                sent = async {
                    match inflight.as_mut() {
                        Some((_, f)) => f.await,
                        None => std::future::pending().await,
                    }
                }, if inflight.is_some() => {
                    let Some((msg, _)) = inflight.take() else { continue };
                    match sent {
                        Sent::Delivered => io.delivered(1).await?,
                        Sent::Failed(reason) => io.fail(msg, reason).await,
                        Sent::Stopped => return Ok(()),
                    }
                }
            }
        }
    }
}

impl Gear for HttpOutGear {
    fn run<'a>(&'a mut self, io: &'a mut GearIo) -> BoxFuture<'a, Result<(), GearError>> {
        Box::pin(async move {
            if self.spool.is_some() {
                return self.run_pending(io).await;
            }
            while let Some(msg) = io.recv().await {
                let (body, content_type) = match self.body(&msg) {
                    Ok(b) => b,
                    Err(e) => {
                        io.fail(msg, e).await;
                        continue;
                    }
                };
                let mut wait = self.backoff;
                let mut attempt = 0;
                let outcome = loop {
                    match self.target.attempt(&msg, &body, content_type).await {
                        Attempt::Delivered => break Ok(()),
                        Attempt::Fail(reason) => break Err(reason),
                        Attempt::Retry(reason) if attempt >= self.retries => {
                            break Err(format!("{reason} (after {} attempts)", attempt + 1));
                        }
                        Attempt::Retry(reason) => {
                            tracing::debug!(url = %self.target.url, %reason, attempt, "retrying");
                            attempt += 1;
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = io.cancelled() => break Err(format!("{reason} (stopped while retrying)")),
                            }
                            wait = (wait * 2).min(self.max_backoff);
                        }
                    }
                };
                match outcome {
                    Ok(()) => io.delivered(1).await?,
                    Err(reason) => io.fail(msg, reason).await,
                }
            }
            Ok(())
        })
    }
}
