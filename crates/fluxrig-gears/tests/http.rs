//! `http_in` with a real HTTP client; `http_out` against a real HTTP server
//! (Python's http.server).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use fluxrig_gear::Typed;
use fluxrig_gear::testkit::TestKit;
use fluxrig_gears::{HttpIn, HttpOut};
use fluxrig_msg::{FluxId, FluxMsg, TraceContext, Value};
use fluxrig_test_support::{ChildGuard, free_port, python_script};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_in_accepts_json_and_raw_and_refuses_bad_requests() {
    let port = free_port();
    let t = Typed::<HttpIn>::new();
    let config = format!("{{listen: '127.0.0.1:{port}', path: /in, max_body: 1000}}");
    let kit = TestKit::new(&t, &config).cancel_after(Duration::from_millis(1500));
    let client = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        fluxrig_gears::install_crypto_provider();
        let c = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{port}/in");
        let ok = c
            .post(&url)
            .header("content-type", "application/json")
            .header(
                "traceparent",
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            )
            .body(r#"{"amount": 12, "tags": ["a"]}"#)
            .send()
            .await
            .unwrap();
        let status = ok.status().as_u16();
        let id: serde_json::Value = serde_json::from_str(&ok.text().await.unwrap()).unwrap();
        let raw = c
            .post(&url)
            .header("content-type", "text/plain")
            .body("hello")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let bad = c
            .post(&url)
            .header("content-type", "application/json")
            .body("{oops")
            .send()
            .await
            .unwrap();
        let bad_status = bad.status().as_u16();
        let bad_body = bad.text().await.unwrap();
        let get = c.get(&url).send().await.unwrap().status().as_u16();
        let big = c
            .post(&url)
            .body(vec![b'x'; 5000])
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        let missing = c
            .post(format!("http://127.0.0.1:{port}/other"))
            .body("x")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16();
        (status, id, raw, bad_status, bad_body, get, big, missing)
    });
    let run = kit.run().await.unwrap();
    let (status, id, raw, bad_status, bad_body, get, big, missing) = client.await.unwrap();
    assert_eq!(status, 202);
    assert_eq!(raw, 202);
    assert_eq!(bad_status, 400);
    assert!(
        bad_body.contains("invalid JSON at line 1, column 2"),
        "{bad_body}"
    );
    assert_eq!((get, big, missing), (405, 413, 404));
    let out = &run.outputs["out"];
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].id.to_string(), id["id"].as_str().unwrap());
    assert_eq!(out[0].data.get("amount"), Some(&Value::from(12)));
    assert_eq!(out[0].meta.get("http.path"), Some("/in"));
    assert_eq!(
        out[0].trace.unwrap().to_string(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(out[1].raw.as_deref(), Some(&b"hello"[..]));
    assert!(out[1].data.is_null());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_in_port_in_use_is_a_build_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let t = Typed::<HttpIn>::new();
    let err = TestKit::new(&t, &format!("{{listen: '127.0.0.1:{port}'}}"))
        .run()
        .await
        .unwrap_err();
    assert!(
        err.starts_with(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
}

fn msgs(n: u64) -> Vec<FluxMsg> {
    (1..=n)
        .map(|i| {
            let mut m = FluxMsg::new(
                FluxId::from_raw(i),
                Value::Map([("n", Value::from(i))].into_iter().collect()),
            );
            m.trace =
                TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").ok();
            m
        })
        .collect()
}

fn sink(args: &[&str], log: &std::path::Path) -> (ChildGuard, String) {
    let mut cmd = python_script("http_sink.py");
    cmd.arg("--log").arg(log).args(args);
    ChildGuard::spawn_and_wait_for(cmd, "listening ")
}

fn received(log: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_out_delivers_in_order_with_headers_and_retries_5xx() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("got.jsonl");
    let (_server, port) = sink(&["--fail-first", "2"], &log);
    let t = Typed::<HttpOut>::new();
    let config = format!(
        "{{url: 'http://127.0.0.1:{port}/ingest', backoff: 10ms, retries: 3, headers: {{x-tenant: acme}}}}"
    );
    let run = TestKit::new(&t, &config)
        .inputs(msgs(20))
        .run()
        .await
        .unwrap();
    assert_eq!(run.stats.messages_out, 20);
    assert!(run.outputs["error"].is_empty());
    let got = received(&log);
    let ns: Vec<u64> = got
        .iter()
        .map(|r| {
            serde_json::from_str::<serde_json::Value>(r["body"].as_str().unwrap()).unwrap()["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        ns,
        (1..=20).collect::<Vec<_>>(),
        "each message once, in order, after two 503s"
    );
    assert_eq!(got[0]["headers"]["x-tenant"], "acme");
    assert_eq!(got[0]["headers"]["x-fluxrig-id"], "1");
    assert_eq!(
        got[0]["headers"]["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(got[0]["path"], "/ingest");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_out_sends_4xx_and_exhausted_retries_to_error() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("got.jsonl");
    let (_server, port) = sink(&["--reject", "\"n\":3"], &log);
    let t = Typed::<HttpOut>::new();
    let run = TestKit::new(
        &t,
        &format!("{{url: 'http://127.0.0.1:{port}/', backoff: 10ms}}"),
    )
    .inputs(msgs(4))
    .run()
    .await
    .unwrap();
    let err = &run.outputs["error"];
    assert_eq!(err.len(), 1);
    assert!(
        err[0]
            .meta
            .get("error.reason")
            .unwrap()
            .starts_with("HTTP 400 Bad Request"),
        "{:?}",
        err[0].meta
    );
    assert_eq!(received(&log).len(), 3);

    // Nobody listening: retried, then failed.
    let closed = free_port();
    let run = TestKit::new(
        &t,
        &format!("{{url: 'http://127.0.0.1:{closed}/', backoff: 5ms, retries: 2}}"),
    )
    .inputs(msgs(1))
    .run()
    .await
    .unwrap();
    let reason = run.outputs["error"][0]
        .meta
        .get("error.reason")
        .unwrap()
        .to_owned();
    assert!(reason.contains("(after 3 attempts)"), "{reason}");
}

#[tokio::test]
async fn http_out_config_is_checked() {
    let t = Typed::<HttpOut>::new();
    let err = TestKit::new(&t, "{url: 'ftp://x/', headers: {'bad header': v}}")
        .run()
        .await
        .unwrap_err();
    assert!(
        err.contains("url: scheme `ftp` is not http or https"),
        "{err}"
    );
    assert!(
        err.contains("headers.bad header: not a valid HTTP header"),
        "{err}"
    );
}
