//! The runtime under abuse, over real sockets: auth on both listeners, exporters racing a
//! close, captures whose case cannot be written, connection limits and timeouts, and SIGTERM
//! with a client holding a half-sent request.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::{Value, json};
use softprobe::proto::v1::inject_service_client::InjectServiceClient;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use support::spans::{outbound_get, span, traces};
use support::{Runtime, free_port, session_once_up, wait_for};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A gRPC request with an optional `authorization` value.
fn with_auth<T>(message: T, authorization: Option<&str>) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = authorization {
        request
            .metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn grpc_checks_the_same_token_as_http() {
    let runtime = Runtime::start(&["--api-token", "s3cret"]).await;
    let grpc = format!("http://{}", runtime.grpc_addr);
    let mut inject = InjectServiceClient::connect(grpc.clone()).await.unwrap();
    let mut export = TraceServiceClient::connect(grpc.clone()).await.unwrap();
    let lookup = || outbound_get("sess_any", "/items");
    let batch = || ExportTraceServiceRequest {
        resource_spans: traces("svc", vec![span("extract", "sess_any", &[])]).resource_spans,
    };
    for (authorization, code) in [
        (None, tonic::Code::Unauthenticated),
        (Some("Basic s3cret"), tonic::Code::Unauthenticated),
        (Some("Bearer wrong"), tonic::Code::PermissionDenied),
    ] {
        let refused = inject
            .inject(with_auth(lookup(), authorization))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "inject with {authorization:?}");
        let refused = export
            .export(with_auth(batch(), authorization))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), code, "export with {authorization:?}");
    }
    // The right token reaches the services: an unknown session is a miss, an export of its
    // spans is answered with a partial success.
    let miss = inject
        .inject(with_auth(lookup(), Some("Bearer s3cret")))
        .await
        .unwrap_err();
    assert_eq!(miss.code(), tonic::Code::NotFound);
    let answer = export
        .export(with_auth(batch(), Some("Bearer s3cret")))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.partial_success.unwrap().rejected_spans, 1);
    // Reflection describes the API and serves no data: open, like /openapi.json.
    let services = support::reflection_services(runtime.grpc_addr).await;
    assert!(
        services.iter().any(|s| s == "softprobe.v1.InjectService"),
        "{services:?}"
    );
    // And HTTP says the same on its side.
    let client = reqwest::Client::new();
    let status = client
        .post(runtime.url("/v1/inject"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
    runtime.stop().await;
}

/// Spans acknowledged in an OTLP answer: those sent less those it rejected.
fn acknowledged(sent: u64, answer: &ExportTraceServiceResponse) -> u64 {
    let rejected = answer
        .partial_success
        .as_ref()
        .map_or(0, |p| p.rejected_spans as u64);
    sent - rejected
}

fn case_span_count(case: &Value) -> u64 {
    case["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["resourceSpans"].as_array().unwrap())
        .flat_map(|r| r["scopeSpans"].as_array().unwrap())
        .map(|s| s["spans"].as_array().unwrap().len() as u64)
        .sum()
}

#[tokio::test]
async fn every_span_acknowledged_while_a_session_closes_is_in_its_case() {
    for round in 0..3 {
        let runtime = Runtime::start(&[]).await;
        let id = runtime.session("capture").await;
        let acked = Arc::new(AtomicU64::new(0));
        let mut exporters = Vec::new();
        // HTTP and gRPC exporters send two-span batches as fast as they can.
        for exporter in 0..4 {
            let (acked, id) = (acked.clone(), id.clone());
            let url = runtime.url("/v1/traces");
            let grpc = format!("http://{}", runtime.grpc_addr);
            exporters.push(tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut grpc = TraceServiceClient::connect(grpc).await.unwrap();
                for n in 0..400 {
                    let batch = traces(
                        "svc",
                        vec![span("extract", &id, &[]), span("extract", &id, &[])],
                    );
                    let answer = if (exporter + n) % 2 == 0 {
                        let response = http
                            .post(&url)
                            .header("content-type", "application/x-protobuf")
                            .body(batch.encode_to_vec())
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(response.status(), 200);
                        ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap()
                    } else {
                        let request = ExportTraceServiceRequest {
                            resource_spans: batch.resource_spans,
                        };
                        grpc.export(request).await.unwrap().into_inner()
                    };
                    acked.fetch_add(acknowledged(2, &answer), Ordering::Relaxed);
                }
            }));
        }
        // Close while the exporters are in full flow: after the first acknowledgement (the
        // first exports are slower, more so on a Redis store), then a little later each round.
        while acked.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(10 + 20 * round)).await;
        let closed: Value = reqwest::Client::new()
            .post(runtime.url(&format!("/v1/sessions/{id}/close")))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for exporter in exporters {
            exporter.await.unwrap();
        }
        let path = closed["capturePath"].as_str().expect("capturePath");
        let case: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
        let acked = acked.load(Ordering::Relaxed);
        assert!(
            acked > 0 && acked < 4 * 400 * 2,
            "round {round}: {acked} acknowledged"
        );
        assert_eq!(case_span_count(&case), acked, "round {round}");
        runtime.stop().await;
    }
}

#[tokio::test]
async fn an_idle_capture_that_cannot_be_written_is_kept_and_retried() {
    let root = tempfile::tempdir().unwrap();
    // A file where the capture directory's parent should be: every write fails until it goes.
    let blocker = root.path().join("blocked");
    std::fs::write(&blocker, "a file, not a directory").unwrap();
    let capture_dir = blocker.join("captures");
    let runtime = Runtime::start(&[
        "--capture-dir",
        capture_dir.to_str().unwrap(),
        "--session-idle-timeout",
        "100ms",
    ])
    .await;
    let id = runtime.session("capture").await;
    let batch = traces("svc", vec![span("extract", &id, &[])]);
    reqwest::Client::new()
        .post(runtime.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(batch.encode_to_vec())
        .send()
        .await
        .unwrap();
    // The sweep tries, fails, and keeps the session with the reason.
    let listed = wait_for(|| async {
        let list = runtime.get_json("/v1/sessions").await;
        let entry = list["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["sessionId"] == id.as_str())
            .cloned();
        entry.filter(|e| e.get("captureWriteError").is_some())
    })
    .await;
    assert!(
        listed["captureWriteError"]
            .as_str()
            .unwrap()
            .contains("cannot write"),
        "{listed}"
    );
    let metrics = reqwest::get(runtime.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l == "softprobe_captures_pending_write 1"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("softprobe_capture_write_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    // Once the directory can be made, the next sweep writes the case with its span.
    std::fs::remove_file(&blocker).unwrap();
    let case_path = capture_dir.join(format!("{id}.case.json"));
    let case = wait_for(|| async {
        let text = std::fs::read(&case_path).ok()?;
        serde_json::from_slice::<Value>(&text).ok()
    })
    .await;
    assert_eq!(case_span_count(&case), 1);
    let list = runtime.get_json("/v1/sessions").await;
    assert_eq!(list["sessions"], json!([]));
    runtime.stop().await;
}

/// Whether the server closed this connection (a read sees EOF or a reset).
async fn closed_by_server(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(within, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn connections_are_limited_and_silent_ones_are_closed() {
    let runtime = Runtime::start(&[
        "--max-connections",
        "4",
        "--header-read-timeout",
        "300ms",
        "--idle-connection-timeout",
        "300ms",
    ])
    .await;
    let mut idle = Vec::new();
    for _ in 0..4 {
        idle.push(tokio::net::TcpStream::connect(runtime.addr).await.unwrap());
    }
    // Give the accept loop time to take all four before the fifth arrives.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut over = tokio::net::TcpStream::connect(runtime.addr).await.unwrap();
    assert!(closed_by_server(&mut over, Duration::from_secs(2)).await);
    // Silent connections are closed by the header read timeout, freeing the budget.
    for stream in &mut idle {
        assert!(closed_by_server(stream, Duration::from_secs(5)).await);
    }
    let health = wait_for(|| async { reqwest::get(runtime.url("/health")).await.ok() }).await;
    assert_eq!(health.status(), 200);
    let metrics = reqwest::get(runtime.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("softprobe_refused_connections_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    runtime.stop().await;
}

#[tokio::test]
async fn a_trickling_body_keeps_its_connection_and_a_stalled_one_is_dropped() {
    let runtime = Runtime::start(&["--idle-connection-timeout", "300ms"]).await;
    let mut stream = tokio::net::TcpStream::connect(runtime.addr).await.unwrap();
    stream
        .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n")
        .await
        .unwrap();
    // One byte every 100 ms for four idle timeouts: each one counts as activity.
    for _ in 0..12 {
        stream.write_all(b" ").await.unwrap();
        assert!(
            !closed_by_server(&mut stream, Duration::from_millis(100)).await,
            "a connection that moves bytes is not idle"
        );
    }
    // Silent mid-body: asked to close at 300 ms, dropped at twice that.
    assert!(closed_by_server(&mut stream, Duration::from_secs(3)).await);
    runtime.stop().await;
}

/// Runs `softprobe serve` as a process of its own, so SIGTERM is real.
struct Process {
    child: std::process::Child,
    addr: String,
}

impl Process {
    fn start(capture_dir: &std::path::Path, extra: &[&str]) -> Self {
        let port = free_port();
        let grpc_port = free_port();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_softprobe"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--grpc-listen", &format!("127.0.0.1:{grpc_port}")])
            .arg("--capture-dir")
            .arg(capture_dir)
            .args(extra)
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        }
    }

    fn terminate(&self) {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn sigterm_writes_captures_and_exits_despite_a_half_sent_request() {
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &["--shutdown-timeout", "1s"]);
    let base = format!("http://{}", process.addr);
    let id = session_once_up(&base, "capture").await;
    let client = reqwest::Client::new();
    let batch = traces("svc", vec![span("extract", &id, &[])]);
    let answer = client
        .post(format!("{base}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(batch.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    // A client that sends headers and a tenth of its body, then stops.
    let mut stalled = tokio::net::TcpStream::connect(&process.addr).await.unwrap();
    stalled
        .write_all(
            b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"resourceSpans\":",
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    process.terminate();
    // Exits on its own (a hang would leave the test to time out here).
    let status = tokio::task::spawn_blocking(move || {
        let mut process = process;
        let status = process.child.wait();
        (process, status)
    });
    let (_process, status) = tokio::time::timeout(Duration::from_secs(20), status)
        .await
        .expect("the runtime exits within its shutdown deadline")
        .unwrap();
    assert!(status.unwrap().success());
    let case: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(format!("{id}.case.json"))).unwrap())
            .unwrap();
    assert_eq!(case_span_count(&case), 1);
}

#[tokio::test]
async fn a_request_in_flight_at_sigterm_is_answered_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let process = Process::start(dir.path(), &["--shutdown-timeout", "10s"]);
    session_once_up(&format!("http://{}", process.addr), "replay").await;
    let body = br#"{"mode":"replay"}"#;
    let mut client = tokio::net::TcpStream::connect(&process.addr).await.unwrap();
    let head = format!(
        "POST /v1/sessions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );
    client.write_all(head.as_bytes()).await.unwrap();
    client.write_all(&body[..5]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    process.terminate();
    // The rest of the body arrives after shutdown began, within its deadline.
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(&body[5..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
        .await
        .expect("answered within the deadline")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let status = tokio::task::spawn_blocking(move || {
        let mut process = process;
        process.child.wait()
    });
    assert!(status.await.unwrap().unwrap().success());
}

#[tokio::test]
async fn request_bodies_in_flight_are_bounded_on_both_listeners() {
    let runtime = Runtime::start(&["--max-inflight-bytes", "100000"]).await;
    let id = runtime.session("replay").await;
    // A client holding 80 KB of a body in flight.
    let mut holder = tokio::net::TcpStream::connect(runtime.addr).await.unwrap();
    holder
        .write_all(b"POST /v1/traces HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: 200000\r\n\r\n")
        .await
        .unwrap();
    holder.write_all(&[b' '; 80_000]).await.unwrap();
    let metrics_say = |line: &'static str| {
        let url = runtime.url("/metrics");
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.lines().any(|l| l == line).then_some(())
        }
    };
    wait_for(|| {
        metrics_say("softprobe_budget_used_bytes{budget=\"request bodies in flight\"} 80000")
    })
    .await;
    // 50 KB more does not fit: 503 with Retry-After over HTTP, UNAVAILABLE over gRPC.
    let big = traces(
        "svc",
        vec![span("extract", &id, &[("pad", &"x".repeat(50_000))])],
    );
    let refused = reqwest::Client::new()
        .post(runtime.url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(big.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert_eq!(refused.headers()["retry-after"], "1");
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "over_budget", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-inflight-bytes"),
        "{body}"
    );
    let mut grpc = TraceServiceClient::connect(format!("http://{}", runtime.grpc_addr))
        .await
        .unwrap();
    let request = ExportTraceServiceRequest {
        resource_spans: big.resource_spans.clone(),
    };
    let status = grpc.export(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    // Small requests still pass, and once the holder goes the large one does too.
    let health = reqwest::get(runtime.url("/health")).await.unwrap();
    assert_eq!(health.status(), 200);
    drop(holder);
    wait_for(|| metrics_say("softprobe_budget_used_bytes{budget=\"request bodies in flight\"} 0"))
        .await;
    let request = ExportTraceServiceRequest {
        resource_spans: big.resource_spans,
    };
    grpc.export(request).await.unwrap();
    runtime.stop().await;
}

#[tokio::test]
async fn capture_buffers_and_documents_share_process_wide_budgets() {
    let runtime = Runtime::start(&[
        "--max-capture-bytes-total",
        "3000",
        "--max-document-bytes-total",
        "10000",
    ])
    .await;
    let client = reqwest::Client::new();
    let first = runtime.session("capture").await;
    let second = runtime.session("capture").await;
    let export = |id: &str| {
        let batch = traces(
            "svc",
            vec![span("extract", id, &[("pad", &"x".repeat(1000))])],
        );
        client
            .post(runtime.url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(batch.encode_to_vec())
            .send()
    };
    // Two sessions fill the capture budget between them; the next export is refused whole.
    assert_eq!(export(&first).await.unwrap().status(), 200);
    assert_eq!(export(&second).await.unwrap().status(), 200);
    let refused = export(&first).await.unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    // Closing a session gives its bytes back.
    let case: Value = serde_json::from_str(&runtime.close_capture(&second).await).unwrap();
    assert_eq!(case_span_count(&case), 1);
    assert_eq!(export(&first).await.unwrap().status(), 200);
    let case: Value = serde_json::from_str(&runtime.close_capture(&first).await).unwrap();
    assert_eq!(
        case_span_count(&case),
        2,
        "the refused export left nothing behind"
    );

    // Documents: 8 KB fits, 8 KB more does not until the first session goes.
    let rules = |name: &str| {
        json!([{"name": name, "when": {"path": "/x"}, "then": {"action": "mock", "response": {"body": "y".repeat(8000)}}}])
            .to_string()
    };
    let a = runtime.session("replay").await;
    let b = runtime.session("replay").await;
    let post = |id: &str, body: String| {
        client
            .post(runtime.url(&format!("/v1/sessions/{id}/rules")))
            .body(body)
            .send()
    };
    assert_eq!(post(&a, rules("a")).await.unwrap().status(), 200);
    let refused = post(&b, rules("b")).await.unwrap();
    assert_eq!(refused.status(), 503);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--max-document-bytes-total"),
        "{body}"
    );
    client
        .post(runtime.url(&format!("/v1/sessions/{a}/close")))
        .send()
        .await
        .unwrap();
    assert_eq!(post(&b, rules("b")).await.unwrap().status(), 200);
    runtime.stop().await;
}
