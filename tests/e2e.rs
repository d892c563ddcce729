//! End to end, everything real on loopback: the runtime, `softprobe proxy` running the
//! compiled filter for ingress and for egress, a tiny app that calls a dependency through the
//! egress proxy (propagating `traceparent`/`tracestate`), and a dependency that counts what
//! it receives.
//!
//! Needs the filter built first:
//! `cargo build --profile wasm-release -p softprobe-filter --target wasm32-wasip1`
//! (or `SOFTPROBE_FILTER_WASM=path`).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::routing::any;
use serde_json::{Value, json};
use softprobe::proxy::{InProcessRuntime, ProxyConfig, ProxyServer};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::{Runtime, filter_wasm, free_port, session_once_up};

/// Everything the dependency received: (method, path, headers).
type Seen = Arc<Mutex<Vec<(String, String, HeaderMap)>>>;

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The real dependency: answers `{"dep":"real"}` and remembers each request.
async fn dependency(seen: Seen) -> SocketAddr {
    let router =
        Router::new()
            .fallback(any(
                |State(seen): State<Seen>,
                 method: Method,
                 uri: axum::http::Uri,
                 headers: HeaderMap| async move {
                    seen.lock()
                        .unwrap()
                        .push((method.to_string(), uri.path().to_owned(), headers));
                    axum::Json(json!({"dep": "real"}))
                },
            ))
            .with_state(seen);
    serve(router).await
}

/// The app under test: `/checkout` calls `http://<dependency>/dep` through the egress proxy,
/// forwarding trace context, and returns the dependency's status and body.
async fn app(dependency: SocketAddr, egress: SocketAddr) -> SocketAddr {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{egress}")).unwrap())
        .build()
        .unwrap();
    let router = Router::new().route(
        "/checkout",
        any(move |method: Method, headers: HeaderMap, body: String| {
            let client = client.clone();
            async move {
                let mut request = client
                    .request(method, format!("http://{dependency}/dep"))
                    .body(body);
                for name in ["traceparent", "tracestate", "content-type"] {
                    if let Some(value) = headers.get(name) {
                        request = request.header(name, value);
                    }
                }
                match request.send().await {
                    Ok(response) => {
                        let status = StatusCode::from_u16(response.status().as_u16()).unwrap();
                        (status, response.text().await.unwrap_or_default())
                    }
                    Err(err) => (StatusCode::BAD_GATEWAY, format!("app: {err}")),
                }
            }
        }),
    );
    serve(router).await
}

/// The trace exports a relay saw: resource spans in each, and how many it refused.
#[derive(Default)]
struct Exports {
    sizes: Vec<usize>,
    refused: usize,
}

/// Between the proxies and the runtime: passes every call on, holding each trace upload back
/// `delay` first, so uploads are still in flight when the traffic that caused them is done.
/// With `refuse_merged`, an export carrying more than one hop's spans is answered 413 instead.
async fn slow_uploads(
    runtime: SocketAddr,
    delay: Duration,
    refuse_merged: bool,
) -> (SocketAddr, Arc<Mutex<Exports>>) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let exports = Arc::new(Mutex::new(Exports::default()));
    let log = exports.clone();
    let client = reqwest::Client::new();
    let relay = move |method: Method, uri: axum::http::Uri, headers: HeaderMap, body: Bytes| {
        let (client, log) = (client.clone(), log.clone());
        async move {
            if uri.path() == "/v1/traces" {
                let hops = ExportTraceServiceRequest::decode(body.clone())
                    .map_or(0, |export| export.resource_spans.len());
                let refuse = refuse_merged && hops > 1;
                {
                    let mut log = log.lock().unwrap();
                    log.sizes.push(hops);
                    log.refused += usize::from(refuse);
                }
                tokio::time::sleep(delay).await;
                if refuse {
                    let content_type = HeaderValue::from_static("text/plain");
                    return (
                        StatusCode::PAYLOAD_TOO_LARGE,
                        [("content-type", content_type)],
                        Bytes::new(),
                    );
                }
            }
            let mut request = client
                .request(method, format!("http://{runtime}{uri}"))
                .body(body);
            for name in ["content-type", "accept"] {
                if let Some(value) = headers.get(name) {
                    request = request.header(name, value);
                }
            }
            let answer = request.send().await.unwrap();
            let status = answer.status();
            let content_type = answer
                .headers()
                .get("content-type")
                .cloned()
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let body = answer.bytes().await.unwrap();
            (status, [("content-type", content_type)], body)
        }
    };
    (serve(Router::new().fallback(any(relay))).await, exports)
}

async fn proxy(direction: &str, runtime: SocketAddr, upstream: Option<String>) -> SocketAddr {
    let server = bind_proxy(direction, runtime, upstream, None).await;
    let addr = server.local_addr();
    tokio::spawn(async move { server.run(std::future::pending()).await.unwrap() });
    addr
}

async fn bind_proxy(
    direction: &str,
    runtime: SocketAddr,
    upstream: Option<String>,
    workers: Option<NonZeroUsize>,
) -> ProxyServer {
    bind_proxy_with(direction, runtime, upstream, workers, None).await
}

async fn bind_proxy_with(
    direction: &str,
    runtime: SocketAddr,
    upstream: Option<String>,
    workers: Option<NonZeroUsize>,
    in_process: Option<InProcessRuntime>,
) -> ProxyServer {
    let configuration = json!({
        "traffic_direction": direction,
        "sp_backend_url": format!("http://{runtime}"),
        "service_name": "orders",
        "timeout_ms": 2000,
    })
    .to_string();
    ProxyServer::bind(ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        filter: filter_wasm(),
        configuration,
        upstream,
        clusters: Default::default(),
        workers,
        runtime: in_process,
    })
    .await
    .unwrap()
}

/// A case's hops as (direction, path), sorted.
fn case_hops(case: &Value) -> Vec<(String, String)> {
    let mut hops: Vec<(String, String)> = Vec::new();
    for trace in case["traces"].as_array().unwrap() {
        for span in trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap()
        {
            let attribute = |key: &str| {
                span["attributes"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|a| a["key"] == key)
                    .and_then(|a| a["value"]["stringValue"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            };
            hops.push((attribute("sp.traffic.direction"), attribute("url.path")));
        }
    }
    hops.sort();
    hops
}

/// A proxy that stops when `stop` is sent; its task ends once the proxy has drained.
struct Stoppable {
    addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Stoppable {
    async fn start(server: ProxyServer) -> Self {
        let addr = server.local_addr();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            server.run(shutdown).await.unwrap();
        });
        Self { addr, stop, task }
    }

    async fn drain(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap();
    }
}

/// Log lines written through `tracing`, for the fail-open check.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct World {
    runtime: Runtime,
    client: reqwest::Client,
    ingress: SocketAddr,
    seen: Seen,
}

impl World {
    async fn session(&self, mode: &str, rules: Option<Value>, policy: Option<Value>) -> String {
        let id = self.runtime.session(mode).await;
        for (route, document) in [("rules", rules), ("policy", policy)] {
            if let Some(document) = document {
                let answer = self
                    .client
                    .post(self.runtime.url(&format!("/v1/sessions/{id}/{route}")))
                    .body(document.to_string())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(answer.status(), 200);
            }
        }
        id
    }

    async fn checkout(&self, method: Method, session: Option<&str>, body: &str) -> (u16, String) {
        let mut request = self
            .client
            .request(method, format!("http://{}/checkout", self.ingress))
            .body(body.to_owned());
        if let Some(session) = session {
            request = request.header("x-softprobe-session-id", session);
        }
        let response = request.send().await.unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    }

    async fn stats(&self, session: &str) -> Value {
        self.runtime.stats(session).await
    }

    fn upstream_hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_replay_strict_and_fail_open_through_both_proxies() {
    let logs = Logs::default();
    let writer = logs.clone();
    let _ = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_env_filter("softprobe=info")
        .try_init();

    let runtime = Runtime::start(&[]).await;
    let seen = Seen::default();
    let dependency = dependency(seen.clone()).await;
    let egress = proxy("outbound", runtime.addr, None).await;
    let app = app(dependency, egress).await;
    let ingress = proxy("inbound", runtime.addr, Some(format!("http://{app}"))).await;
    let world = World {
        runtime,
        client: reqwest::Client::new(),
        ingress,
        seen,
    };

    // 6. Untagged traffic passes untouched.
    assert_eq!(
        world.checkout(Method::GET, None, "").await,
        (200, r#"{"dep":"real"}"#.to_owned())
    );
    assert_eq!(world.upstream_hits(), 1);

    // 1. Capture: the case holds the inbound and the outbound hop.
    let capture = world.session("capture", None, None).await;
    assert_eq!(world.checkout(Method::GET, Some(&capture), "").await.0, 200);
    world.runtime.wait_for_spans(&capture, 2).await;
    let case: Value = serde_json::from_str(&world.runtime.close_capture(&capture).await).unwrap();
    assert_eq!(
        case_hops(&case),
        [
            ("inbound".to_owned(), "/checkout".to_owned()),
            ("outbound".to_owned(), "/dep".to_owned())
        ],
        "{case}"
    );

    // 2. Replay with a mock rule: the app gets the mock, the dependency sees nothing.
    let before = world.upstream_hits();
    let mock = json!([{"name": "dep", "when": {"direction": "outbound", "method": "GET", "path": "/dep"},
        "then": {"action": "mock", "response": {"status": 200, "headers": {"content-type": "application/json"}, "body": {"dep": "mocked"}}}}]);
    let replay = world.session("replay", Some(mock), None).await;
    assert_eq!(
        world.checkout(Method::GET, Some(&replay), "").await,
        (200, r#"{"dep":"mocked"}"#.to_owned())
    );
    assert_eq!(world.upstream_hits(), before);
    assert_eq!(world.stats(&replay).await["injectedSpans"], 1);

    // 3. A POST with a body is mocked without reaching the dependency.
    let post_mock = json!([{"when": {"direction": "outbound", "method": "POST", "path": "/dep", "bodyJsonPath": "$.sku == \"A-1\""},
        "then": {"action": "mock", "response": {"status": 201, "body": "charged"}}}]);
    let posting = world.session("replay", Some(post_mock), None).await;
    assert_eq!(
        world
            .checkout(Method::POST, Some(&posting), r#"{"sku":"A-1"}"#)
            .await,
        (201, "charged".to_owned())
    );
    assert_eq!(
        world.upstream_hits(),
        before,
        "the mocked POST never reached the dependency"
    );

    // 4. Strict policy: the unmocked outbound call is blocked; inbound still reaches the app.
    let strict = world
        .session("replay", None, Some(json!({"externalHttp": "strict"})))
        .await;
    let (status, body) = world.checkout(Method::GET, Some(&strict), "").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("strict policy"), "{body}");
    assert_eq!(world.stats(&strict).await["strictMisses"], 1);
    assert_eq!(world.upstream_hits(), before);

    // The dependency never saw the session header.
    for (_, path, headers) in world.seen.lock().unwrap().iter() {
        assert!(
            headers.get("x-softprobe-session-id").is_none(),
            "{path} received the session header"
        );
    }

    // 5. Runtime down: traffic still flows (fail open) and the proxy says why.
    let World {
        runtime,
        client,
        ingress,
        seen,
    } = world;
    runtime.stop().await;
    let world = World {
        runtime: Runtime::start(&[]).await,
        client,
        ingress,
        seen,
    };
    assert_eq!(
        world.checkout(Method::GET, Some("sess_gone"), "").await,
        (200, r#"{"dep":"real"}"#.to_owned())
    );
    assert_eq!(world.upstream_hits(), before + 1);
    let logged = String::from_utf8_lossy(&logs.0.lock().unwrap()).into_owned();
    assert!(
        logged.contains("inject")
            && (logged.contains("fail")
                || logged.contains("unavailable")
                || logged.contains("forward")),
        "the proxy logs why it forwarded:\n{logged}"
    );
    world.runtime.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_in_the_proxys_process_answers_the_filter_without_a_socket() {
    let runtime = Runtime::start(&[]).await;
    // Nothing listens here: only the runtime in the process can answer the filter's calls.
    let unbound: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let in_process = InProcessRuntime::new(unbound, runtime.service.clone());
    let seen = Seen::default();
    let app = dependency(seen.clone()).await;
    let server = bind_proxy_with(
        "inbound",
        unbound,
        Some(format!("http://{app}")),
        None,
        Some(in_process),
    )
    .await;
    let ingress = server.local_addr();
    tokio::spawn(async move { server.run(std::future::pending()).await.unwrap() });
    let world = World {
        runtime,
        client: reqwest::Client::new(),
        ingress,
        seen,
    };

    let rules = json!([{
        "when": {"direction": "inbound", "path": "/checkout"},
        "then": {"action": "mock", "response": {"status": 202, "body": "mocked"}},
    }]);
    let replay = world.session("replay", Some(rules), None).await;
    assert_eq!(
        world.checkout(Method::GET, Some(&replay), "").await,
        (202, "mocked".to_owned())
    );
    assert_eq!(
        world.upstream_hits(),
        0,
        "a mocked hop never reaches the app"
    );

    let capture = world.session("capture", None, None).await;
    assert_eq!(
        world.checkout(Method::POST, Some(&capture), "{}").await.0,
        200
    );
    assert_eq!(world.upstream_hits(), 1);
    // The capture hop's upload went in-process.
    world.runtime.wait_for_spans(&capture, 1).await;
    assert_eq!(world.stats(&capture).await["extractedSpans"], 1);
}

/// Envoy hands a filter header values as bytes, obs-text (bytes above 0x7F) included, and so
/// does the proxy. A Latin-1 value crosses both ways unchanged, is recorded as text (U+FFFD for
/// what is not UTF-8), and the filter goes on serving; untagged traffic carries it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_values_that_are_not_utf8_cross_unchanged_and_are_recorded() {
    let runtime = Runtime::start(&[]).await;
    let seen = Seen::default();
    let recorder = seen.clone();
    let upstream = serve(Router::new().fallback(any(
        move |method: Method, uri: axum::http::Uri, headers: HeaderMap| {
            let seen = recorder.clone();
            async move {
                seen.lock()
                    .unwrap()
                    .push((method.to_string(), uri.path().to_owned(), headers));
                (
                    [("x-reply", HeaderValue::from_bytes(b"na\xefve").unwrap())],
                    "ok",
                )
            }
        },
    )))
    .await;
    let ingress = proxy("inbound", runtime.addr, Some(format!("http://{upstream}"))).await;
    let client = reqwest::Client::new();
    let latin1 = HeaderValue::from_bytes(b"caf\xe9").unwrap();
    let capture = runtime.session("capture").await;

    for session in [Some(capture.as_str()), None, Some(capture.as_str())] {
        let mut request = client
            .get(format!("http://{ingress}/menu"))
            .header("x-dish", latin1.clone());
        if let Some(session) = session {
            request = request.header("x-softprobe-session-id", session);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200, "session {session:?}");
        assert_eq!(response.headers()["x-reply"].as_bytes(), b"na\xefve");
        assert_eq!(response.text().await.unwrap(), "ok");
    }
    let seen: Vec<_> = seen.lock().unwrap().drain(..).collect();
    assert_eq!(seen.len(), 3);
    for (_, _, headers) in &seen {
        assert_eq!(headers["x-dish"].as_bytes(), b"caf\xe9");
    }

    runtime.wait_for_spans(&capture, 2).await;
    let case: Value = serde_json::from_str(&runtime.close_capture(&capture).await).unwrap();
    let mut recorded = Vec::new();
    for trace in case["traces"].as_array().unwrap() {
        for span in trace["resourceSpans"][0]["scopeSpans"][0]["spans"]
            .as_array()
            .unwrap()
        {
            for attribute in span["attributes"].as_array().unwrap() {
                let key = attribute["key"].as_str().unwrap();
                if key == "http.request.header.x-dish" || key == "http.response.header.x-reply" {
                    let value = attribute["value"]["stringValue"].as_str().unwrap();
                    recorded.push((key.to_owned(), value.to_owned()));
                }
            }
        }
    }
    recorded.sort();
    let request = (
        "http.request.header.x-dish".to_owned(),
        "caf\u{fffd}".to_owned(),
    );
    let response = (
        "http.response.header.x-reply".to_owned(),
        "na\u{fffd}ve".to_owned(),
    );
    assert_eq!(
        recorded,
        [request.clone(), request, response.clone(), response]
    );
}

/// `softprobe proxy --serve-runtime`: one process, the runtime set up from the environment. On
/// SIGTERM the proxy finishes first, so its last trace upload lands before the runtime writes
/// the open capture. Run at debug, it shows the filter's debug lines too: the filter logs from
/// the level the host reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_serves_the_proxy_and_the_runtime_and_stops_in_order() {
    let captures = tempfile::tempdir().unwrap();
    let app = dependency(Seen::default()).await;
    let runtime = format!("127.0.0.1:{}", free_port());
    let proxy = format!("127.0.0.1:{}", free_port());
    let config = json!({
        "traffic_direction": "inbound",
        "sp_backend_url": format!("http://{runtime}"),
        "service_name": "orders",
    });
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"))
        .args(["proxy", "--serve-runtime", "--listen", &proxy])
        .args(["--upstream", &format!("http://{app}")])
        .args(["--config", &config.to_string()])
        .arg("--filter")
        .arg(filter_wasm())
        .env("SOFTPROBE_LISTEN_ADDR", &runtime)
        .env(
            "SOFTPROBE_GRPC_LISTEN_ADDR",
            format!("127.0.0.1:{}", free_port()),
        )
        .env("SOFTPROBE_CAPTURE_DIR", captures.path())
        .env("RUST_LOG", "info,softprobe::filter=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = session_once_up(&format!("http://{runtime}"), "capture").await;
    let client = reqwest::Client::new();
    let hop = client
        .get(format!("http://{proxy}/checkout"))
        .header("x-softprobe-session-id", &id)
        .send()
        .await
        .unwrap();
    assert_eq!(hop.status(), 200);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exited = tokio::task::spawn_blocking(move || child.wait_with_output());
    let exited = tokio::time::timeout(Duration::from_secs(20), exited)
        .await
        .expect("the process stops within its shutdown deadline")
        .unwrap()
        .unwrap();
    assert!(exited.status.success());
    let logged = String::from_utf8_lossy(&exited.stderr);
    assert!(
        logged.contains(&format!("session={id}: exchange uploaded")),
        "the filter's debug line:\n{logged}"
    );
    let case = std::fs::read(captures.path().join(format!("{id}.case.json"))).unwrap();
    let case: Value = serde_json::from_slice(&case).unwrap();
    assert_eq!(
        case_hops(&case),
        [("inbound".to_owned(), "/checkout".to_owned())],
        "{case}"
    );
}

#[tokio::test]
async fn the_proxy_refuses_a_missing_wasm_an_invalid_module_and_a_bad_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let bind = |filter: PathBuf, configuration: &str| {
        ProxyServer::bind(ProxyConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            filter,
            configuration: configuration.to_owned(),
            upstream: None,
            clusters: Default::default(),
            workers: None,
            runtime: None,
        })
    };
    let good = r#"{"traffic_direction":"outbound","sp_backend_url":"http://127.0.0.1:9"}"#;
    let missing = bind(dir.path().join("nope.wasm"), good)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(missing.starts_with("cannot read the filter"), "{missing}");
    let not_wasm = dir.path().join("bad.wasm");
    std::fs::write(&not_wasm, b"\0asm garbage").unwrap();
    let invalid = bind(not_wasm, good).await.err().unwrap().to_string();
    assert!(
        invalid.contains("not a valid WebAssembly module"),
        "{invalid}"
    );
    let refused = bind(filter_wasm(), r#"{"sp_backend_url":"http://127.0.0.1:9"}"#)
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        refused.starts_with("the filter refused its configuration: "),
        "{refused}"
    );
    assert!(
        refused.contains("traffic_direction"),
        "the filter's own reason: {refused}"
    );
}

/// Capture under load, through both proxies with two workers each, with every trace upload
/// held back on its way to the runtime: each hop's upload is answered before its stream's
/// context goes, and a proxy stops only after that, so once both have drained the runtime
/// holds exactly one span per hop. Uploads queued behind an export in flight leave together
/// (`runtime/proxy/uploads.rs`), so there are fewer exports than hops. Bounded in requests
/// (and, against hangs, in time); it measures nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_under_load_uploads_one_span_per_hop() {
    let exports = capture_under_load(300, false).await;
    let hops: usize = exports.sizes.iter().sum();
    assert_eq!(hops, 600, "every hop's span reached the relay once");
    assert!(
        exports.sizes.len() < hops / 2,
        "queued uploads share exports: {} exports for {hops} hops",
        exports.sizes.len()
    );
}

/// As above, with every export of more than one hop refused 413 for its size: the proxies
/// send each of its uploads again alone, and no span is lost or doubled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_export_refused_as_a_whole_is_sent_again_upload_by_upload() {
    let exports = capture_under_load(100, true).await;
    assert!(
        exports.refused > 0,
        "some uploads were merged, then refused"
    );
    let delivered = exports.sizes.iter().filter(|hops| **hops == 1).count();
    assert_eq!(delivered, 200, "each hop's span went alone once");
}

/// Drives `checkouts` captured checkouts through both proxies and checks the case holds one
/// span per hop; returns what the relay saw.
async fn capture_under_load(checkouts: usize, refuse_merged: bool) -> Exports {
    // Long enough for uploads to queue; short where each refused one goes again alone.
    let delay = Duration::from_millis(if refuse_merged { 50 } else { 300 });
    const IN_FLIGHT: usize = 16;
    let workers = NonZeroUsize::new(2);
    let runtime = Runtime::start(&[]).await;
    let (backend, exports) = slow_uploads(runtime.addr, delay, refuse_merged).await;
    let seen = Seen::default();
    let dependency = dependency(seen.clone()).await;
    let egress = Stoppable::start(bind_proxy("outbound", backend, None, workers).await).await;
    let app = app(dependency, egress.addr).await;
    let ingress = Stoppable::start(
        bind_proxy("inbound", backend, Some(format!("http://{app}")), workers).await,
    )
    .await;
    let capture = runtime.session("capture").await;

    let client = reqwest::Client::new();
    let url = format!("http://{}/checkout", ingress.addr);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let senders: Vec<_> = (0..IN_FLIGHT)
        .map(|_| {
            let (client, url, capture, next) =
                (client.clone(), url.clone(), capture.clone(), next.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < checkouts {
                    let response = client
                        .get(&url)
                        .header("x-softprobe-session-id", &capture)
                        .send()
                        .await
                        .unwrap();
                    statuses.push(response.status().as_u16());
                }
                statuses
            })
        })
        .collect();
    let load = async {
        let mut statuses = Vec::new();
        for sender in senders {
            statuses.extend(sender.await.unwrap());
        }
        // Both proxies drain: their runs return once every upload has been answered.
        ingress.drain().await;
        egress.drain().await;
        statuses
    };
    let statuses = tokio::time::timeout(Duration::from_secs(120), load)
        .await
        .expect("the load and the drain finish");
    assert_eq!(statuses.len(), checkouts);
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(seen.lock().unwrap().len(), checkouts);

    let stats = runtime.stats(&capture).await;
    assert_eq!(
        stats["extractedSpans"].as_u64(),
        Some(2 * checkouts as u64),
        "one span per hop, inbound and outbound: {stats}"
    );
    let case: Value = serde_json::from_str(&runtime.close_capture(&capture).await).unwrap();
    let mut directions = std::collections::BTreeMap::<String, usize>::new();
    for trace in case["traces"].as_array().unwrap() {
        for resource in trace["resourceSpans"].as_array().unwrap() {
            for scope in resource["scopeSpans"].as_array().unwrap() {
                for span in scope["spans"].as_array().unwrap() {
                    let direction = span["attributes"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .find(|a| a["key"] == "sp.traffic.direction")
                        .and_then(|a| a["value"]["stringValue"].as_str())
                        .unwrap_or_default();
                    *directions.entry(direction.to_owned()).or_default() += 1;
                }
            }
        }
    }
    assert_eq!(
        directions,
        [
            ("inbound".to_owned(), checkouts),
            ("outbound".to_owned(), checkouts)
        ]
        .into(),
    );
    runtime.stop().await;
    std::mem::take(&mut *exports.lock().unwrap())
}
