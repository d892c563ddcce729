//! Capture, then replay with the CLI alone, end to end through two `softprobe proxy` processes
//! running the real filter `.wasm`: an app calls two dependencies (one twice, with different
//! answers); the replay answers it as during capture without reaching them, a call the case
//! lacks is blocked with the closest recorded exchange named, and capture-on-miss records the
//! changed call while replaying the rest. The captured cases then run as suites, with and
//! without JavaScript hooks (these need `node` on the PATH, as in CI).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use support::{Runtime, filter_wasm, free_port};

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// What the real dependencies received.
#[derive(Default)]
struct Received {
    prices: AtomicU64,
    charges: AtomicU64,
    refunds: AtomicU64,
}

/// Two real dependencies on one server: `GET /price` answers 10, then 20, then 30…;
/// `POST /charge` and `POST /refund` echo the amount.
async fn dependencies(received: Arc<Received>) -> SocketAddr {
    let router = Router::new()
        .route(
            "/price",
            get(|State(r): State<Arc<Received>>| async move {
                let n = r.prices.fetch_add(1, Ordering::SeqCst) + 1;
                axum::Json(json!({"price": n * 10}))
            }),
        )
        .route(
            "/charge",
            post(|State(r): State<Arc<Received>>, body: String| async move {
                r.charges.fetch_add(1, Ordering::SeqCst);
                let amount: Value = serde_json::from_str(&body).unwrap_or_default();
                (
                    StatusCode::CREATED,
                    axum::Json(json!({"charged": amount["amount"]})),
                )
            }),
        )
        .route(
            "/refund",
            post(|State(r): State<Arc<Received>>| async move {
                r.refunds.fetch_add(1, Ordering::SeqCst);
                axum::Json(json!({"refunded": true}))
            }),
        )
        .with_state(received);
    serve(router).await
}

/// Switches that change the app's behaviour between a capture and a replay.
#[derive(Default)]
struct Behaviour {
    /// Answer `currency: eur` instead of `usd`.
    euros: AtomicBool,
    /// `/checkout` also calls `/refund`, which no checkout case recorded.
    refund_too: AtomicBool,
    /// Answers served so far: `servedAt`, a field that differs on every answer (noise).
    served: AtomicU64,
}

/// The app: `/checkout` reads two prices and charges their sum; `/refund` calls a refund.
/// Outbound calls go through the egress proxy with the trace context the ingress proxy set.
async fn app(
    dependencies: SocketAddr,
    egress: SocketAddr,
    behaviour: Arc<Behaviour>,
) -> SocketAddr {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{egress}")).unwrap())
        .build()
        .unwrap();
    let base = format!("http://{dependencies}");
    let call = move |request: reqwest::RequestBuilder, headers: &HeaderMap| {
        let mut request = request;
        for name in ["traceparent", "tracestate"] {
            if let Some(value) = headers.get(name) {
                request = request.header(name, value);
            }
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let (checkout_client, checkout_base, checkout_call) = (client.clone(), base.clone(), call);
    let router = Router::new()
        .route(
            "/checkout",
            post(move |headers: HeaderMap| {
                let (client, base, call, behaviour) = (
                    checkout_client.clone(),
                    checkout_base.clone(),
                    checkout_call,
                    behaviour.clone(),
                );
                async move {
                    let mut prices = Vec::new();
                    for _ in 0..2 {
                        let (_, body) = call(client.get(format!("{base}/price")), &headers).await;
                        let price: Value = serde_json::from_str(&body).unwrap_or_default();
                        prices.push(price["price"].as_u64().unwrap_or(0));
                    }
                    let amount = json!({"amount": prices.iter().sum::<u64>()}).to_string();
                    let charge = client
                        .post(format!("{base}/charge"))
                        .header("content-type", "application/json")
                        .body(amount);
                    let (status, body) = call(charge, &headers).await;
                    if behaviour.refund_too.load(Ordering::SeqCst) {
                        call(client.post(format!("{base}/refund")), &headers).await;
                    }
                    let currency = match behaviour.euros.load(Ordering::SeqCst) {
                        true => "eur",
                        false => "usd",
                    };
                    let coupon = headers.get("x-coupon").and_then(|v| v.to_str().ok());
                    axum::Json(json!({
                        "prices": prices,
                        "coupon": coupon,
                        "chargeStatus": status,
                        "charge": body,
                        "currency": currency,
                        "servedAt": behaviour.served.fetch_add(1, Ordering::SeqCst),
                    }))
                }
            }),
        )
        .route(
            "/refund",
            post(move |headers: HeaderMap| {
                let (client, base) = (client.clone(), base.clone());
                async move {
                    let (status, body) =
                        call(client.post(format!("{base}/refund")), &headers).await;
                    axum::Json(json!({"refundStatus": status, "refund": body}))
                }
            }),
        );
    serve(router).await
}

/// `softprobe proxy` as a process of its own.
struct Proxy {
    child: std::process::Child,
    addr: SocketAddr,
}

impl Proxy {
    async fn start(direction: &str, runtime: SocketAddr, upstream: Option<SocketAddr>) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let config = json!({
            "traffic_direction": direction,
            "sp_backend_url": format!("http://{runtime}"),
            "service_name": "orders",
            "timeout_ms": 2000,
        });
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"));
        command
            .args(["proxy", "--listen", &addr.to_string(), "--filter"])
            .arg(filter_wasm())
            .args(["--config", &config.to_string()])
            .stderr(std::process::Stdio::null());
        if let Some(upstream) = upstream {
            command.args(["--upstream", &format!("http://{upstream}")]);
        }
        // Killed and reaped on drop, also when it never starts listening.
        let proxy = Self {
            child: command.spawn().unwrap(),
            addr,
        };
        for _ in 0..500 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return proxy;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("softprobe proxy did not start on {addr}");
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The whole chain on loopback: the runtime, the real dependencies, the app, and both proxies
/// (running while this is held).
struct Chain {
    runtime: Runtime,
    received: Arc<Received>,
    behaviour: Arc<Behaviour>,
    ingress: Proxy,
    egress: Proxy,
}

impl Chain {
    async fn start() -> Self {
        let runtime = Runtime::start(&[]).await;
        let received = Arc::new(Received::default());
        let behaviour = Arc::new(Behaviour::default());
        let deps = dependencies(received.clone()).await;
        let egress = Proxy::start("outbound", runtime.addr, None).await;
        let app = app(deps, egress.addr, behaviour.clone()).await;
        let ingress = Proxy::start("inbound", runtime.addr, Some(app)).await;
        Self {
            runtime,
            received,
            behaviour,
            ingress,
            egress,
        }
    }
}

/// Runs the CLI against the runtime.
async fn softprobe(runtime: &Runtime, args: &[&str]) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"));
    command
        .args(args)
        .env("SOFTPROBE_RUNTIME_URL", runtime.url(""))
        .env_remove("SOFTPROBE_API_TOKEN")
        .env_remove("SOFTPROBE_SESSION_ID");
    tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap()
}

fn envelope(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "not one JSON envelope ({err}): {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

async fn start_session(runtime: &Runtime, args: &[&str]) -> String {
    let mut argv = vec!["session", "start", "--json"];
    argv.extend_from_slice(args);
    let started = envelope(&softprobe(runtime, &argv).await);
    started["sessionId"].as_str().expect("sessionId").to_owned()
}

async fn call(ingress: SocketAddr, route: &str, session: &str) -> Value {
    let response = reqwest::Client::new()
        .post(format!("http://{ingress}{route}"))
        .header("x-softprobe-session-id", session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// The spans of a case, flattened.
fn case_spans(case: &Value) -> Vec<Value> {
    case["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["resourceSpans"].as_array().unwrap())
        .flat_map(|r| r["scopeSpans"].as_array().unwrap())
        .flat_map(|s| s["spans"].as_array().unwrap().clone())
        .collect()
}

/// The answer without `servedAt`, which differs every time.
fn without_noise(mut answer: Value) -> Value {
    answer.as_object_mut().unwrap().remove("servedAt");
    answer
}

fn attribute<'a>(span: &'a Value, key: &str) -> Option<&'a str> {
    span["attributes"]
        .as_array()?
        .iter()
        .find(|a| a["key"] == key)?["value"]["stringValue"]
        .as_str()
}

#[tokio::test]
async fn capture_then_replay_with_the_cli_alone() {
    let dir = tempfile::tempdir().unwrap();
    let Chain {
        runtime,
        received,
        ingress,
        egress: _egress,
        ..
    } = Chain::start().await;

    // Capture: one checkout, two price reads with different answers, one charge.
    let capture = start_session(&runtime, &["--mode", "capture"]).await;
    let captured = call(ingress.addr, "/checkout", &capture).await;
    assert_eq!(captured["prices"], json!([10, 20]));
    assert_eq!(captured["chargeStatus"], 201);
    runtime.wait_for_spans(&capture, 4).await;
    let case_path = dir.path().join("checkout.case.json");
    let closed = softprobe(
        &runtime,
        &[
            "session",
            "close",
            "--session",
            &capture,
            "--out",
            case_path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    let before = (
        received.prices.load(Ordering::SeqCst),
        received.charges.load(Ordering::SeqCst),
    );
    assert_eq!(before, (2, 1));

    // Replay with the CLI alone and a strict policy: the same answers, nothing reaches the
    // dependencies.
    let policy = dir.path().join("strict.json");
    std::fs::write(&policy, r#"{"externalHttp":"strict"}"#).unwrap();
    let args = [
        "--case",
        case_path.to_str().unwrap(),
        "--replay",
        "--policy",
        policy.to_str().unwrap(),
    ];
    let replay = start_session(&runtime, &args).await;
    let replayed = call(ingress.addr, "/checkout", &replay).await;
    assert_eq!(
        without_noise(replayed),
        without_noise(captured.clone()),
        "the app answers as during capture"
    );
    assert_eq!(
        (
            received.prices.load(Ordering::SeqCst),
            received.charges.load(Ordering::SeqCst)
        ),
        before,
        "the real dependencies received nothing"
    );
    let clean = softprobe(&runtime, &["replay", "run", "--session", &replay, "--json"]).await;
    assert_eq!(
        clean.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&clean.stdout)
    );

    // A call the case lacks is blocked, and the answer names the closest recorded exchange.
    let refund = call(ingress.addr, "/refund", &replay).await;
    assert_eq!(refund["refundStatus"], 500);
    let message = refund["refund"].as_str().unwrap();
    assert!(message.contains("closest: recorded exchange"), "{message}");
    assert!(
        message.contains("path: expected /charge, got /refund"),
        "{message}"
    );
    assert_eq!(received.refunds.load(Ordering::SeqCst), 0);
    let misses = envelope(
        &softprobe(
            &runtime,
            &["session", "misses", "--session", &replay, "--json"],
        )
        .await,
    );
    // Inbound hops are forwarded to the app (misses too, but not replayed ones).
    let miss = misses["misses"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["direction"] == "outbound")
        .expect("the blocked refund");
    assert_eq!(
        (miss["decision"].as_str(), miss["path"].as_str()),
        (Some("strict_miss"), Some("/refund"))
    );
    assert_eq!(miss["closest"]["kind"], "case");
    let failed = softprobe(&runtime, &["replay", "run", "--session", &replay]).await;
    assert_eq!(failed.status.code(), Some(20));
    let text = String::from_utf8_lossy(&failed.stdout);
    assert!(
        text.contains("path: expected /charge, got /refund"),
        "{text}"
    );

    // Capture-on-miss: replay what the case has, record what it lacks.
    let args = [
        "--mode",
        "capture",
        "--case",
        case_path.to_str().unwrap(),
        "--replay",
    ];
    let recapture = start_session(&runtime, &args).await;
    let again = call(ingress.addr, "/checkout", &recapture).await;
    assert_eq!(without_noise(again), without_noise(captured));
    let refunded = call(ingress.addr, "/refund", &recapture).await;
    assert_eq!(refunded["refundStatus"], 200);
    assert_eq!(received.refunds.load(Ordering::SeqCst), 1);
    assert_eq!(
        received.prices.load(Ordering::SeqCst),
        2,
        "prices were replayed"
    );
    // The refund's outbound and inbound hops, and the replayed checkout's inbound hop.
    runtime.wait_for_spans(&recapture, 3).await;
    let merged_path = dir.path().join("merged.case.json");
    let closed = softprobe(
        &runtime,
        &[
            "session",
            "close",
            "--session",
            &recapture,
            "--out",
            merged_path.to_str().unwrap(),
        ],
    )
    .await;
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    let merged: Value = serde_json::from_slice(&std::fs::read(&merged_path).unwrap()).unwrap();
    let original: Value = serde_json::from_slice(&std::fs::read(&case_path).unwrap()).unwrap();
    let spans = case_spans(&merged);
    assert!(spans.len() > case_spans(&original).len());
    assert_eq!(
        &spans[..case_spans(&original).len()],
        &case_spans(&original)[..]
    );
    let paths: Vec<_> = spans
        .iter()
        .filter_map(|s| {
            attribute(s, "url.path").or_else(|| attribute(s, "http.request.header.:path"))
        })
        .collect();
    assert!(paths.contains(&"/refund"), "{paths:?}");
    runtime.stop().await;
}

/// Captures one call of `route` into `case_path` through the proxies.
async fn capture(
    runtime: &Runtime,
    ingress: SocketAddr,
    route: &str,
    spans: u64,
    case_path: &Path,
) {
    let session = start_session(runtime, &["--mode", "capture"]).await;
    call(ingress, route, &session).await;
    runtime.wait_for_spans(&session, spans).await;
    let out = case_path.to_str().unwrap();
    let closed = softprobe(
        runtime,
        &["session", "close", "--session", &session, "--out", out],
    )
    .await;
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
}

#[tokio::test]
async fn a_suite_of_captured_cases_gates_on_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let Chain {
        runtime,
        received,
        behaviour,
        ingress,
        egress: _egress,
    } = Chain::start().await;
    std::fs::create_dir(dir.path().join("cases")).unwrap();
    let cases = dir.path().join("cases");
    capture(
        &runtime,
        ingress.addr,
        "/checkout",
        4,
        &cases.join("checkout.case.json"),
    )
    .await;
    capture(
        &runtime,
        ingress.addr,
        "/refund",
        2,
        &cases.join("refund.case.json"),
    )
    .await;
    let calls = || {
        (
            received.prices.load(Ordering::SeqCst),
            received.charges.load(Ordering::SeqCst),
            received.refunds.load(Ordering::SeqCst),
        )
    };
    let after_capture = calls();

    let suite = dir.path().join("suite.yaml");
    let write_suite = |extra: &str| {
        let text = format!(
            "name: orders\ncases:\n  - path: \"cases/*.case.json\"\nnoise: [\"$.servedAt\"]\n{extra}"
        );
        std::fs::write(&suite, text).unwrap();
    };
    write_suite("");
    let app_url = format!("http://{}", ingress.addr);
    let junit = dir.path().join("reports/junit.xml");
    let report = dir.path().join("reports/report.html");
    let run_suite = || {
        let args = [
            "suite",
            "run",
            suite.to_str().unwrap(),
            "--app-url",
            &app_url,
            "--junit",
            junit.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
            "--json",
        ]
        .map(str::to_owned);
        let runtime = &runtime;
        async move {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            softprobe(runtime, &args).await
        }
    };

    // As captured: both cases pass, answered from the cases alone.
    let passed = run_suite().await;
    let envelope_json = envelope(&passed);
    assert_eq!(passed.status.code(), Some(0), "{envelope_json}");
    assert_eq!(
        (
            envelope_json["passed"].as_u64(),
            envelope_json["failed"].as_u64()
        ),
        (Some(2), Some(0))
    );
    assert_eq!(calls(), after_capture, "the dependencies received nothing");
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains("<testsuites") && xml.matches("<testcase").count() == 2,
        "{xml}"
    );
    assert!(!xml.contains("<failure"), "{xml}");

    // The app changes a field: exit 20, a JUnit failure and a readable difference.
    behaviour.euros.store(true, Ordering::SeqCst);
    let failed = run_suite().await;
    assert_eq!(failed.status.code(), Some(20));
    let failed = envelope(&failed);
    let checkout = failed["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("checkout.case.json"))
        .unwrap();
    assert_eq!(checkout["status"], "failed");
    assert_eq!(
        checkout["differences"],
        json!([{"path": "$.currency", "expected": "\"usd\"", "actual": "\"eur\""}])
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(
            "<failure message=\"$.currency: expected &quot;usd&quot;, got &quot;eur&quot;\""
        ),
        "{xml}"
    );
    let html = std::fs::read_to_string(&report).unwrap();
    assert!(
        html.contains("<code>$.currency</code>") && html.contains("1 failed"),
        "{html}"
    );

    // Declaring the field as noise makes it pass again.
    write_suite("assertions:\n  body:\n    ignore: [\"$.currency\"]\n");
    let again = run_suite().await;
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );

    // A call the case lacks fails the case with the explained miss.
    behaviour.refund_too.store(true, Ordering::SeqCst);
    let lacking = run_suite().await;
    assert_eq!(lacking.status.code(), Some(20));
    let lacking = envelope(&lacking);
    let checkout = lacking["cases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["path"].as_str().unwrap().ends_with("checkout.case.json"))
        .unwrap();
    let misses = checkout["misses"].as_array().unwrap();
    assert_eq!(misses.len(), 1, "{checkout}");
    let miss = misses[0].as_str().unwrap();
    assert!(miss.contains("POST") && miss.contains("/refund"), "{miss}");
    assert!(miss.contains("closest recorded exchange"), "{miss}");

    // validate and diff
    let valid = softprobe(&runtime, &["suite", "validate", suite.to_str().unwrap()]).await;
    assert_eq!(
        valid.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&valid.stdout)
    );
    let checkout_glob = cases.join("checkout.case.json");
    let both_glob = cases.join("*.case.json");
    let diff = envelope(
        &softprobe(
            &runtime,
            &[
                "suite",
                "diff",
                "--baseline",
                checkout_glob.to_str().unwrap(),
                "--current",
                both_glob.to_str().unwrap(),
                "--json",
            ],
        )
        .await,
    );
    let added: Vec<&str> = diff["added"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(added.iter().any(|a| a.contains("/refund")), "{diff}");
    assert_eq!(diff["removed"], json!([]));
    runtime.stop().await;
}

/// The hook file of `suite_hooks_transform_mock_and_assert`.
const HOOKS: &str = r#"
export function addCoupon({ request, ctx, env }) {
  console.log(`addCoupon: ${request.method} ${request.path} in ${ctx.sessionId}`);
  return { headers: { 'x-coupon': env.COUPON } };
}

export async function bigCharge({ capturedResponse, capturedSpan, mockName }) {
  await new Promise((resolve) => setTimeout(resolve, 10));
  if (!capturedSpan || mockName !== 'charge') throw new Error('no recorded span');
  const { charged } = JSON.parse(capturedResponse.body);
  return { body: JSON.stringify({ charged: charged * 100 }) };
}

export function checkoutShape({ actual, captured }) {
  const issues = [];
  if (actual.coupon !== 'SPRING') issues.push({ path: '$.coupon', expected: 'SPRING', actual: actual.coupon });
  if (JSON.parse(actual.charge).charged !== 3000) issues.push({ path: '$.charge', actual: actual.charge });
  if (captured.coupon !== null) issues.push({ path: '$.coupon', reason: 'recorded without a coupon' });
  return issues;
}

export function wantsWinter({ actual }) {
  return [{ path: '$.coupon', expected: 'WINTER', actual: actual.coupon, reason: 'the winter sale is on' }];
}
"#;

/// Four cases over one captured checkout: `hooked` has a request hook add a coupon header, a
/// mock hook multiply the recorded charge, and a body hook check both; `winter`'s body hook
/// reports an issue; `unknown` names a hook no file exports; `plain` names none.
const HOOKED_SUITE: &str = r#"
name: hooked
env:
  COUPON: SPRING
noise: ["$.servedAt"]
cases:
  - path: cases/checkout.case.json
    name: hooked
    overrides:
      request:
        transform: promotions.addCoupon
      mocks:
        - name: charge
          match: {direction: outbound, method: POST, path: /charge}
          hook: bigCharge
      assertions:
        body:
          ignore: ["$.coupon", "$.charge"]
          custom: checkoutShape
  - path: cases/checkout.case.json
    name: winter
    overrides:
      assertions:
        body:
          custom: wantsWinter
  - path: cases/checkout.case.json
    name: unknown
    overrides:
      request:
        transform: nope
  - path: cases/checkout.case.json
    name: plain
"#;

#[tokio::test]
async fn suite_hooks_transform_mock_and_assert() {
    let dir = tempfile::tempdir().unwrap();
    let Chain {
        runtime,
        received,
        ingress,
        egress: _egress,
        ..
    } = Chain::start().await;
    std::fs::create_dir(dir.path().join("cases")).unwrap();
    let case = dir.path().join("cases/checkout.case.json");
    capture(&runtime, ingress.addr, "/checkout", 4, &case).await;
    let suite = dir.path().join("suite.yaml");
    std::fs::write(&suite, HOOKED_SUITE).unwrap();
    let hooks = dir.path().join("promotions.mjs");
    std::fs::write(&hooks, HOOKS).unwrap();
    let junit = dir.path().join("junit.xml");
    let no_node = tempfile::tempdir().unwrap();
    let app_url = format!("http://{}", ingress.addr);
    let run = |hooks: Option<&Path>, path: Option<&Path>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"));
        command
            .args(["suite", "run", "--json", "--app-url", &app_url, "--junit"])
            .args([&junit, &suite])
            .env("SOFTPROBE_RUNTIME_URL", runtime.url(""))
            .env_remove("SOFTPROBE_API_TOKEN")
            .env_remove("COUPON");
        if let Some(hooks) = hooks {
            command.arg("--hooks").arg(hooks);
        }
        if let Some(path) = path {
            command.env("PATH", path);
        }
        async move {
            let output = tokio::task::spawn_blocking(move || command.output().unwrap())
                .await
                .unwrap();
            let envelope = envelope(&output);
            let cases: Vec<(String, Value)> = envelope["cases"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["displayName"].as_str().unwrap().to_owned(), c.clone()))
                .collect();
            (output, cases)
        }
    };
    let case_of = |cases: &[(String, Value)], name: &str| {
        cases.iter().find(|(n, _)| n == name).unwrap().1.clone()
    };

    // With node: the hooked case passes (its body hook saw the coupon and the patched charge),
    // winter fails with its hook's issue, unknown fails naming what the file exports.
    let (output, cases) = run(Some(&hooks), None).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(20), "{cases:#?}\n{stderr}");
    let hooked = case_of(&cases, "hooked");
    assert_eq!(hooked["status"], "passed", "{hooked:#}\n{stderr}");
    assert!(
        stderr.contains("sidecar: addCoupon: POST /checkout in "),
        "a hook's console.log is relayed on stderr: {stderr}"
    );
    let winter = case_of(&cases, "winter");
    assert_eq!(
        winter["differences"],
        json!([{
            "path": "$.coupon",
            "expected": "\"WINTER\"",
            "actual": "null",
            "reason": "hook wantsWinter: the winter sale is on",
        }]),
        "{winter:#}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    assert!(
        xml.contains(
            "$.coupon: hook wantsWinter: the winter sale is on (expected &quot;WINTER&quot;, got null)"
        ),
        "{xml}"
    );
    let unknown = case_of(&cases, "unknown");
    assert_eq!(
        unknown["error"],
        "hook \"nope\" is not exported by the --hooks files; they export: addCoupon, bigCharge, \
         checkoutShape, wantsWinter",
    );
    assert_eq!(case_of(&cases, "plain")["status"], "passed");
    assert_eq!(
        received.charges.load(Ordering::SeqCst),
        1,
        "only the capture"
    );

    // Without --hooks, a case naming a hook fails with the reference's message.
    let (output, cases) = run(None, None).await;
    assert_eq!(output.status.code(), Some(20));
    let error = case_of(&cases, "hooked")["error"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        error.starts_with("hook \"promotions.addCoupon\": no --hooks file was passed"),
        "{error}"
    );
    assert_eq!(case_of(&cases, "plain")["status"], "passed");

    // Without node on the PATH, every case naming a hook fails saying node is needed; the
    // others still run.
    let (output, cases) = run(Some(&hooks), Some(no_node.path())).await;
    assert_eq!(output.status.code(), Some(20));
    for name in ["hooked", "winter", "unknown"] {
        let error = case_of(&cases, name)["error"].as_str().unwrap().to_owned();
        assert!(
            error.contains("node is needed to run JavaScript hooks and was not found on PATH"),
            "{name}: {error}"
        );
    }
    assert_eq!(case_of(&cases, "plain")["status"], "passed");
    runtime.stop().await;
}
