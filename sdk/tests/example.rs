//! The README's example, run for real: the runtime and two `softprobe proxy` instances (the
//! compiled filter for ingress and egress) in-process, around a tiny app whose `/checkout`
//! calls a dependency through the egress proxy. Capture one checkout, replay it with the SDK,
//! and check the dependency was called once.
//!
//! Needs the filter built first:
//! `cargo build --profile wasm-release -p softprobe-filter --target wasm32-wasip1`
//! (or `SOFTPROBE_FILTER_WASM=path`).

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use axum::Router;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use softprobe::proxy::{ProxyConfig, ProxyServer};
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use support::Runtime;

// README:begin
use softprobe_sdk::{CasePredicate, Mode, Policy, ReplayRule, SESSION_HEADER, Softprobe};
use std::time::Duration;

/// Captures one `POST /checkout` through the ingress proxy, then replays it with the app's
/// outbound calls answered from the capture. Returns both answers.
async fn capture_then_replay(
    softprobe: &Softprobe,
    ingress: &str,
) -> Result<(String, String), Box<dyn std::error::Error>> {
    let http = reqwest::Client::new();
    let checkout = |session: &str| {
        http.post(format!("{ingress}/checkout"))
            .header(SESSION_HEADER, session)
            .body(r#"{"sku":"A-1","qty":2}"#)
            .send()
    };

    // Capture: the real dependency answers, and both proxies upload what they saw.
    let capture = softprobe.start_session(Mode::Capture).await?;
    let captured = checkout(capture.id()).await?.text().await?;
    while capture.stats().await?.counters.extracted_spans < 2 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    capture.close().await?;
    let case = capture.capture().await?; // keep it: std::fs::write(path, case.as_bytes())
    let dependency = case.find(&CasePredicate::outbound().method("POST").path("/dep"))?;
    assert_eq!(dependency.response.status, 200);

    // Replay: the same request; outbound calls are answered from the case, others blocked.
    let mut session = softprobe.start_session(Mode::Replay).await?;
    session.load_case(&case).await?;
    let from_case = ReplayRule::new(CasePredicate::outbound());
    session.replay(from_case).await?;
    session.set_policy(&Policy::strict()).await?;
    let replayed = checkout(session.id()).await?.text().await?;
    assert_eq!(session.stats().await?.counters.injected_spans, 1);
    let misses = session.misses().await?.misses;
    assert!(
        misses.iter().all(|m| m.decision != "strict_miss"),
        "{misses:?}"
    );
    session.close().await?;
    Ok((captured, replayed))
}
// README:end

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_example_captures_then_replays_without_the_dependency() {
    let runtime = Runtime::start(&[]).await;
    let calls = Arc::new(AtomicUsize::new(0));
    let dependency = dependency(calls.clone()).await;
    let egress = proxy("outbound", runtime.addr, None).await;
    let app = app(dependency, egress).await;
    let ingress = proxy("inbound", runtime.addr, Some(format!("http://{app}"))).await;

    let softprobe = Softprobe::new(&runtime.url(), None).unwrap();
    let ingress = format!("http://{ingress}");
    let run = capture_then_replay(&softprobe, &ingress);
    let (captured, replayed) = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the example finishes")
        .unwrap();
    assert_eq!(captured, r#"{"charged":2}"#);
    assert_eq!(replayed, captured);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "only the capture reached the dependency"
    );
}

#[test]
fn the_readme_shows_the_example_that_runs() {
    let source = include_str!("example.rs");
    let begin = source.find("// README:begin\n").unwrap() + "// README:begin\n".len();
    let end = source.find("// README:end").unwrap();
    let example = &source[begin..end];
    assert!(
        include_str!("../README.md").contains(example),
        "sdk/README.md must show tests/example.rs's example verbatim:\n{example}"
    );
}

/// The filter module the proxies run.
fn filter_wasm() -> PathBuf {
    const BUILT: &str = "wasm32-wasip1/wasm-release/softprobe_filter.wasm";
    let path = match (
        std::env::var_os("SOFTPROBE_FILTER_WASM"),
        std::env::var_os("CARGO_TARGET_DIR"),
    ) {
        (Some(path), _) => PathBuf::from(path),
        (None, Some(target)) => PathBuf::from(target).join(BUILT),
        (None, None) => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target")
            .join(BUILT),
    };
    assert!(
        path.exists(),
        "{} is missing: build it with `cargo build --profile wasm-release -p softprobe-filter --target wasm32-wasip1` (or set SOFTPROBE_FILTER_WASM)",
        path.display()
    );
    path
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

/// The real dependency: `POST /dep` charges the order's quantity, and counts its calls.
async fn dependency(calls: Arc<AtomicUsize>) -> SocketAddr {
    let router = Router::new().route(
        "/dep",
        post(move |order: axum::Json<serde_json::Value>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { axum::Json(serde_json::json!({ "charged": order["qty"] })) }
        }),
    );
    serve(router).await
}

/// The app under test: `/checkout` posts its body to `http://<dependency>/dep` through the
/// egress proxy, forwarding trace context (which carries the session), and returns the answer.
async fn app(dependency: SocketAddr, egress: SocketAddr) -> SocketAddr {
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::http(format!("http://{egress}")).unwrap())
        .build()
        .unwrap();
    let router = Router::new().route(
        "/checkout",
        post(move |headers: HeaderMap, body: String| {
            let client = client.clone();
            async move {
                let mut request = client
                    .post(format!("http://{dependency}/dep"))
                    .header("content-type", "application/json")
                    .body(body);
                for name in ["traceparent", "tracestate"] {
                    if let Some(value) = headers.get(name) {
                        request = request.header(name, value);
                    }
                }
                match request.send().await {
                    Ok(answer) => (
                        StatusCode::from_u16(answer.status().as_u16()).unwrap(),
                        answer.text().await.unwrap_or_default(),
                    ),
                    Err(err) => (StatusCode::BAD_GATEWAY, format!("app: {err}")),
                }
            }
        }),
    );
    serve(router).await
}

/// `softprobe proxy` for one direction, one worker, serving until the test ends.
async fn proxy(direction: &str, runtime: SocketAddr, upstream: Option<String>) -> SocketAddr {
    let configuration = serde_json::json!({
        "traffic_direction": direction,
        "sp_backend_url": format!("http://{runtime}"),
        "service_name": "orders",
        "timeout_ms": 2000,
    })
    .to_string();
    let server = ProxyServer::bind(ProxyConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        filter: filter_wasm(),
        configuration,
        upstream,
        clusters: Default::default(),
        workers: Some(NonZeroUsize::MIN),
        runtime: None,
    })
    .await
    .unwrap();
    let addr = server.local_addr();
    tokio::spawn(async move { server.run(std::future::pending()).await.unwrap() });
    addr
}
