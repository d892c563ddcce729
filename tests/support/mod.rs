//! Helpers shared by the black-box tests: an in-process router and a runtime on a real socket.
#![allow(dead_code, unreachable_pub)]

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use serde_json::Value;
use softprobe::redis_store::RedisStore;
use softprobe::state::{AppState, Settings};
use softprobe::store::Store;
use softprobe_pipeline::store::{SessionStore, StoreLimits};
use std::net::SocketAddr;
use tower::ServiceExt as _;

/// The HTTP API as a tower service, driven without sockets.
pub struct App {
    pub state: AppState,
    router: softprobe::serve::HttpService,
}

impl App {
    pub async fn new() -> Self {
        Self::with(StoreLimits::default(), Settings::default()).await
    }

    pub async fn with(limits: StoreLimits, settings: Settings) -> Self {
        let store = match test_store_url().await {
            None => Store::memory(SessionStore::new(limits)),
            Some(url) => {
                let url = url.parse().expect("a store URL");
                let redis = RedisStore::connect(&url, &limits, std::time::Duration::from_secs(60))
                    .await
                    .expect("the test store answers");
                Store::shared(SessionStore::new(limits), redis)
            }
        };
        let state = AppState::new(store, settings);
        let router = softprobe::serve::http_service(state.clone());
        Self { state, router }
    }

    /// Sends a request; returns status, content type and body bytes.
    pub async fn raw(&self, request: Request<Body>) -> (StatusCode, String, Vec<u8>) {
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("router is infallible");
        let status = response.status();
        let content_type = response
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .unwrap_or_default();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        (status, content_type, body)
    }

    /// Sends `method path` with an optional body (and extra headers); returns status and JSON.
    pub async fn call_with(
        &self,
        method: &str,
        path: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut request = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let (status, content_type, bytes) = self
            .raw(request.body(Body::from(body.to_owned())).expect("request"))
            .await;
        assert!(
            content_type.starts_with("application/json"),
            "{method} {path}: content type {content_type:?}"
        );
        let json = serde_json::from_slice(&bytes)
            .unwrap_or_else(|err| panic!("{method} {path}: not JSON ({err})"));
        (status, json)
    }

    pub async fn call(&self, method: &str, path: &str, body: &str) -> (StatusCode, Value) {
        self.call_with(method, path, body, &[]).await
    }

    /// Creates a session and returns its id.
    pub async fn session(&self, mode: &str) -> String {
        let (status, body) = self
            .call("POST", "/v1/sessions", &format!(r#"{{"mode":"{mode}"}}"#))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["sessionId"].as_str().expect("sessionId").to_owned()
    }
}

/// Asserts an error envelope with this status and code; returns the message.
#[track_caller]
pub fn assert_error(response: &(StatusCode, Value), status: StatusCode, code: &str) -> String {
    let (actual, body) = response;
    assert_eq!(*actual, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    let message = body["error"]["message"]
        .as_str()
        .expect("message")
        .to_owned();
    assert!(!message.is_empty());
    message
}

/// The store the tests' runtimes use: in memory, or a Redis database of their own, emptied
/// first, when `SOFTPROBE_TEST_STORE_URL` names a server (`redis://127.0.0.1:6390`; started
/// with enough databases, `--databases 10000`), so every test runs on both stores.
pub async fn test_store_url() -> Option<String> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT_DB: AtomicU32 = AtomicU32::new(1);
    let base = std::env::var("SOFTPROBE_TEST_STORE_URL").ok()?;
    let db = NEXT_DB.fetch_add(1, Ordering::Relaxed) % 9_999 + 1;
    let url = format!("{}/{db}", base.trim_end_matches('/'));
    let client = redis::Client::open(url.as_str()).expect("SOFTPROBE_TEST_STORE_URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("the test store answers");
    let _: () = redis::cmd("FLUSHDB")
        .query_async(&mut connection)
        .await
        .expect("FLUSHDB");
    Some(url)
}

/// A runtime serving on loopback, stopped (and its captures flushed) when dropped or `stop`ped.
pub struct Runtime {
    pub addr: SocketAddr,
    pub grpc_addr: SocketAddr,
    /// Its HTTP stack, for callers in the test's process.
    pub service: softprobe::serve::HttpService,
    /// Default capture directory, so no test writes into the working tree.
    _captures: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Runtime {
    /// Starts `softprobe serve` in-process with these extra flags, on ephemeral ports.
    pub async fn start(extra: &[&str]) -> Self {
        let mut argv = vec![
            "softprobe",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--grpc-listen",
            "127.0.0.1:0",
        ];
        argv.extend_from_slice(extra);
        let store = match extra.contains(&"--store") {
            true => None,
            false => test_store_url().await,
        };
        if let Some(store) = &store {
            argv.extend(["--store", store.as_str()]);
        }
        let captures = tempfile::tempdir().expect("temporary directory");
        let default_dir = captures.path().to_str().expect("UTF-8 path").to_owned();
        if !extra.contains(&"--capture-dir") {
            argv.extend(["--capture-dir", default_dir.as_str()]);
        }
        let softprobe::cli::Command::Serve(args) =
            <softprobe::cli::Cli as clap::Parser>::try_parse_from(argv)
                .expect("arguments")
                .command
        else {
            unreachable!("the arguments name serve")
        };
        let server = softprobe::serve::Server::bind(&args).await.expect("bind");
        let addr = server.http_addr();
        let grpc_addr = server.grpc_addr();
        let service = server.http_service();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            server
                .run(async {
                    let _ = stopped.await;
                })
                .await
                .expect("serve");
        });
        Self {
            addr,
            grpc_addr,
            service,
            _captures: captures,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// `GET path`, answered with JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let response = reqwest::get(self.url(path)).await.expect("GET");
        response.json().await.expect("a JSON answer")
    }

    /// Creates a session of `mode` and returns its id.
    pub async fn session(&self, mode: &str) -> String {
        let response = reqwest::Client::new()
            .post(self.url("/v1/sessions"))
            .body(serde_json::json!({ "mode": mode }).to_string())
            .send()
            .await
            .expect("POST /v1/sessions");
        let created: serde_json::Value = response.json().await.expect("a JSON answer");
        created["sessionId"].as_str().expect("sessionId").to_owned()
    }

    /// The `stats` object of a session's counters.
    pub async fn stats(&self, id: &str) -> serde_json::Value {
        self.get_json(&format!("/v1/sessions/{id}/stats")).await["stats"].clone()
    }

    /// Waits until the session has kept `spans` extracted spans (uploads are asynchronous).
    pub async fn wait_for_spans(&self, session: &str, spans: u64) {
        let stats = || async {
            let kept = self.stats(session).await["extractedSpans"].as_u64();
            (kept >= Some(spans)).then_some(())
        };
        wait_for(stats).await;
    }

    /// Closes a capture session; returns the case file it wrote, as text.
    pub async fn close_capture(&self, id: &str) -> String {
        let closed: serde_json::Value = reqwest::Client::new()
            .post(self.url(&format!("/v1/sessions/{id}/close")))
            .send()
            .await
            .expect("POST close")
            .json()
            .await
            .expect("a JSON answer");
        let path = closed["capturePath"].as_str().expect("capturePath");
        std::fs::read_to_string(path).expect("the written case")
    }

    /// Stops the runtime and waits for its shutdown work (capture flush) to finish.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("runtime task");
        }
    }
}

/// The services gRPC server reflection lists at `address`.
pub async fn reflection_services(address: SocketAddr) -> Vec<String> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{address}"))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let request = ServerReflectionRequest {
        message_request: Some(MessageRequest::ListServices(String::new())),
        ..Default::default()
    };
    let mut answers = ServerReflectionClient::new(channel)
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .expect("reflection")
        .into_inner();
    let answer = answers
        .message()
        .await
        .expect("answer")
        .expect("one answer");
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("{answer:?}")
    };
    list.service.into_iter().map(|s| s.name).collect()
}

/// The filter `.wasm` the end-to-end tests load: `SOFTPROBE_FILTER_WASM`, else the
/// wasm-release build under `CARGO_TARGET_DIR` or `./target`.
pub fn filter_wasm() -> std::path::PathBuf {
    use std::path::PathBuf;
    const BUILT: &str = "wasm32-wasip1/wasm-release/softprobe_filter.wasm";
    let path = match (
        std::env::var_os("SOFTPROBE_FILTER_WASM"),
        std::env::var_os("CARGO_TARGET_DIR"),
    ) {
        (Some(path), _) => PathBuf::from(path),
        (None, Some(target)) => PathBuf::from(target).join(BUILT),
        (None, None) => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("target")
            .join(BUILT),
    };
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --profile wasm-release -p softprobe-filter --target wasm32-wasip1` (or set SOFTPROBE_FILTER_WASM)",
        path.display()
    );
    path
}

/// A loopback port free a moment ago, for a process that binds it itself.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("address")
        .port()
}

/// OTLP spans for tests: an inject lookup or an extract upload with the given attributes.
pub mod spans {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};

    pub fn string(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(AnyValueKind::StringValue(value.to_owned())),
            }),
            ..KeyValue::default()
        }
    }

    pub fn int(key: &str, value: i64) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue {
                value: Some(AnyValueKind::IntValue(value)),
            }),
            ..KeyValue::default()
        }
    }

    /// A span of `span_type` for `session` with `attributes` (string pairs) after the type.
    pub fn span(span_type: &str, session: &str, attributes: &[(&str, &str)]) -> Span {
        let mut attrs = vec![string("sp.span.type", span_type)];
        if !session.is_empty() {
            attrs.push(string("sp.session.id", session));
        }
        attrs.extend(attributes.iter().map(|(k, v)| string(k, v)));
        Span {
            trace_id: vec![0x4b; 16],
            span_id: vec![0x07; 8],
            name: "test".into(),
            kind: 3,
            attributes: attrs,
            ..Span::default()
        }
    }

    /// `spans` under one resource whose `service.name` is `service`.
    pub fn traces(service: &str, spans: Vec<Span>) -> TracesData {
        TracesData {
            resource_spans: vec![ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![string("service.name", service)],
                    ..Resource::default()
                }),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

    /// The outbound `GET api.example.com/items` lookup the proxy would send.
    pub fn outbound_get(session: &str, path: &str) -> TracesData {
        traces(
            "orders",
            vec![span(
                "inject",
                session,
                &[
                    ("sp.traffic.direction", "outbound"),
                    ("http.request.header.:method", "GET"),
                    ("url.host", "api.example.com"),
                    ("url.path", path),
                ],
            )],
        )
    }

    /// The attribute `key` of the first span, as a string or an int rendered as a string.
    pub fn attribute(traces: &TracesData, key: &str) -> Option<String> {
        use softprobe_pipeline::otlp::span_views;
        span_views(traces).first()?.attributes.get(key)?.text()
    }
}

/// The requirements of the reference `case.schema.json` and `case-trace.schema.json`, checked
/// field by field (draft 2020-12 semantics of `required`, `type` and `minItems`).
pub mod case_schema {
    use serde_json::Value;

    pub fn violations(case: &Value) -> Vec<String> {
        let mut out = Vec::new();
        let mut need = |ok: bool, what: String| {
            if !ok {
                out.push(what);
            }
        };
        need(
            case["version"].is_string(),
            "version must be a string".into(),
        );
        need(case["caseId"].is_string(), "caseId must be a string".into());
        if let Some(mode) = case.get("mode") {
            need(
                ["capture", "replay", "generate"].iter().any(|m| mode == m),
                format!("mode {mode} not in the enum"),
            );
        }
        if let Some(created) = case.get("createdAt") {
            need(created.is_string(), "createdAt must be a string".into());
        }
        let Some(traces) = case["traces"].as_array() else {
            need(false, "traces must be an array".into());
            return out;
        };
        for (t, trace) in traces.iter().enumerate() {
            let resource_spans = trace["resourceSpans"].as_array();
            need(
                resource_spans.is_some_and(|r| !r.is_empty()),
                format!("traces[{t}].resourceSpans needs at least one item"),
            );
            for (r, rs) in resource_spans.into_iter().flatten().enumerate() {
                if let Some(resource) = rs.get("resource") {
                    need(
                        resource.get("attributes").is_none_or(Value::is_array),
                        format!(
                            "traces[{t}].resourceSpans[{r}].resource.attributes must be an array"
                        ),
                    );
                }
                let scope_spans = rs["scopeSpans"].as_array();
                need(
                    scope_spans.is_some_and(|s| !s.is_empty()),
                    format!("traces[{t}].resourceSpans[{r}].scopeSpans needs at least one item"),
                );
                for (s, ss) in scope_spans.into_iter().flatten().enumerate() {
                    let spans = ss["spans"].as_array();
                    need(
                        spans.is_some_and(|s| !s.is_empty()),
                        format!("traces[{t}]…scopeSpans[{s}].spans needs at least one item"),
                    );
                    for (n, span) in spans.into_iter().flatten().enumerate() {
                        let at =
                            format!("traces[{t}].resourceSpans[{r}].scopeSpans[{s}].spans[{n}]");
                        need(
                            span["traceId"].is_string(),
                            format!("{at}.traceId must be a string"),
                        );
                        need(
                            span["spanId"].is_string(),
                            format!("{at}.spanId must be a string"),
                        );
                        let attributes = span["attributes"].as_array();
                        need(
                            attributes.is_some(),
                            format!("{at}.attributes must be an array"),
                        );
                        for (a, kv) in attributes.into_iter().flatten().enumerate() {
                            need(
                                kv["key"].is_string() && kv["value"].is_object(),
                                format!(
                                    "{at}.attributes[{a}] needs a string key and an object value"
                                ),
                            );
                        }
                        if let Some(kind) = span.get("kind") {
                            need(
                                kind.is_i64() || kind.is_string(),
                                format!("{at}.kind must be an integer or a string"),
                            );
                        }
                        for time in ["startTimeUnixNano", "endTimeUnixNano"] {
                            need(
                                span.get(time).is_none_or(Value::is_string),
                                format!("{at}.{time} must be a string"),
                            );
                        }
                        need(
                            span.get("status").is_none_or(Value::is_object),
                            format!("{at}.status must be an object"),
                        );
                    }
                }
            }
        }
        out
    }

    #[test]
    fn the_checker_rejects_a_broken_case() {
        let broken = serde_json::json!({"version": 1, "traces": [{"resourceSpans": [{"scopeSpans": [{"spans": [{"spanId": 3, "attributes": [{"key": "k"}], "startTimeUnixNano": 5}]}]}]}]});
        assert_eq!(violations(&broken).len(), 6, "{:?}", violations(&broken));
    }
}

/// Polls `probe` every 20 ms until it yields a value; fails the test after 10 s.
pub async fn wait_for<T, F, Fut>(probe: F) -> T
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    for _ in 0..500 {
        if let Some(found) = probe().await {
            return found;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("the condition did not come true within 10 s");
}

/// Creates a session of `mode` on the runtime at `base` (`http://host:port`) as soon as it
/// listens (a process still starting); its id.
pub async fn session_once_up(base: &str, mode: &str) -> String {
    let client = reqwest::Client::new();
    let created: serde_json::Value = wait_for(|| async {
        let response = client
            .post(format!("{base}/v1/sessions"))
            .body(serde_json::json!({ "mode": mode }).to_string())
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    })
    .await;
    created["sessionId"]
        .as_str()
        .expect("a session id")
        .to_owned()
}
