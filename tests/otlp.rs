//! The OTLP receivers over real sockets: inject and traces over HTTP (protobuf, JSON, gzip)
//! and gRPC, capture into a case that loads back, and concurrency of the inject path.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};
use softprobe::proto::v1::inject_service_client::InjectServiceClient;
use support::Runtime;
use support::spans::{attribute, outbound_get, span, traces};

const PROTOBUF: &str = "application/x-protobuf";

struct Harness {
    runtime: Runtime,
    client: Client,
}

impl Harness {
    async fn start(extra: &[&str]) -> Self {
        Self {
            runtime: Runtime::start(extra).await,
            client: Client::new(),
        }
    }

    async fn session(&self, mode: &str) -> String {
        self.runtime.session(mode).await
    }

    async fn post(&self, id: &str, route: &str, body: Value) -> Value {
        let response = self
            .client
            .post(self.runtime.url(&format!("/v1/sessions/{id}/{route}")))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn inject(&self, traces: &TracesData) -> reqwest::Response {
        self.client
            .post(self.runtime.url("/v1/inject"))
            .header("content-type", PROTOBUF)
            .header("accept", PROTOBUF)
            .body(traces.encode_to_vec())
            .send()
            .await
            .unwrap()
    }

    /// `POST /v1/traces` with these spans as OTLP protobuf.
    async fn export(&self, traces: &TracesData) -> reqwest::Response {
        self.client
            .post(self.runtime.url("/v1/traces"))
            .header("content-type", PROTOBUF)
            .body(traces.encode_to_vec())
            .send()
            .await
            .unwrap()
    }

    async fn stats(&self, id: &str) -> Value {
        self.runtime.stats(id).await
    }
}

fn mock_rules() -> Value {
    json!({"version": 1, "rules": [{
        "name": "items", "priority": 100,
        "when": {"direction": "outbound", "method": "GET", "host": "example.com", "pathPrefix": "/items"},
        "then": {"action": "mock", "response": {"status": 200, "headers": {"content-type": "application/json"}, "body": "{\"items\":[]}"}}
    }]})
}

#[tokio::test]
async fn inject_over_http_protobuf_hits_and_misses() {
    let h = Harness::start(&[]).await;
    let id = h.session("replay").await;
    let revision = h.post(&id, "rules", mock_rules()).await["sessionRevision"]
        .as_u64()
        .unwrap();

    let hit = h.inject(&outbound_get(&id, "/items?page=1")).await;
    assert_eq!(hit.status(), StatusCode::OK);
    assert_eq!(hit.headers()["content-type"], PROTOBUF);
    let traces = TracesData::decode(hit.bytes().await.unwrap()).unwrap();
    let first = &traces.resource_spans[0].scope_spans[0].spans[0].attributes[0];
    assert_eq!(
        first.key, "http.response.status_code",
        "the official proxy reads the status first"
    );
    assert_eq!(
        attribute(&traces, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(
        attribute(&traces, "http.response.header.content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        attribute(&traces, "http.response.body").as_deref(),
        Some("{\"items\":[]}")
    );
    assert_eq!(attribute(&traces, "sp.decision").as_deref(), Some("mock"));
    assert_eq!(attribute(&traces, "sp.rule.name").as_deref(), Some("items"));
    assert_eq!(
        attribute(&traces, "sp.session.revision"),
        Some(revision.to_string())
    );

    let miss = h.inject(&outbound_get(&id, "/other")).await;
    assert_eq!(miss.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        miss.json::<Value>().await.unwrap(),
        json!({"error": "no inject match"})
    );
    let unknown = h.inject(&outbound_get("sess_unknown", "/items")).await;
    assert_eq!(
        unknown.status(),
        StatusCode::NOT_FOUND,
        "an unknown session makes the proxy forward"
    );

    let stats = h.stats(&id).await;
    assert_eq!(
        (
            stats["injectedSpans"].as_u64(),
            stats["injectMisses"].as_u64()
        ),
        (Some(1), Some(1))
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn inject_accepts_json_and_gzip_and_answers_json_when_asked() {
    let h = Harness::start(&[]).await;
    let id = h.session("replay").await;
    h.post(
        &id,
        "rules",
        json!([{"when": {"direction": "outbound", "method": "GET", "path": "/fragment"},
        "then": {"action": "mock", "response": {"status": 200, "body": "{\"dep\":\"ok\"}"}}}]),
    )
    .await;
    // The wire example of the reference: OTLP JSON, method only as the `:method` header.
    let body = json!({"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"spans":[{"name":"/fragment","attributes":[
        {"key":"sp.span.type","value":{"stringValue":"inject"}},
        {"key":"sp.session.id","value":{"stringValue": id}},
        {"key":"sp.traffic.direction","value":{"stringValue":"outbound"}},
        {"key":"http.request.header.:method","value":{"stringValue":"GET"}},
        {"key":"url.host","value":{"stringValue":"softprobe-proxy:8084"}},
        {"key":"url.path","value":{"stringValue":"/fragment"}}]}]}]}]});
    let hit = h
        .client
        .post(h.runtime.url("/v1/inject"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(hit.status(), StatusCode::OK);
    assert_eq!(
        hit.headers()["content-type"],
        PROTOBUF,
        "protobuf unless Accept asks for JSON"
    );

    let hit = h
        .client
        .post(h.runtime.url("/v1/inject"))
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(hit.headers()["content-type"], "application/json");
    let json: Value = hit.json().await.unwrap();
    let attrs = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"];
    assert_eq!(
        attrs[0],
        json!({"key": "http.response.status_code", "value": {"intValue": "200"}})
    );

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &outbound_get(&id, "/fragment").encode_to_vec()).unwrap();
    let zipped = h
        .client
        .post(h.runtime.url("/v1/inject"))
        .header("content-type", PROTOBUF)
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(zipped.status(), StatusCode::OK);
    h.runtime.stop().await;
}

#[tokio::test]
async fn bad_otlp_requests_get_clear_errors() {
    let h = Harness::start(&["--max-body-bytes", "4096"]).await;
    let post = |path: &'static str, content_type: &'static str, body: Vec<u8>| {
        h.client
            .post(h.runtime.url(path))
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    for path in ["/v1/inject", "/v1/traces"] {
        let malformed = post(path, "application/json", b"{\"resourceSpans\":5}".to_vec())
            .await
            .unwrap();
        assert_eq!(malformed.status(), StatusCode::BAD_REQUEST);
        let body: Value = malformed.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_request");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("invalid OTLP JSON"),
            "{body}"
        );
        let wrong_type = post(path, "text/plain", b"hello".to_vec()).await.unwrap();
        assert_eq!(wrong_type.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let too_large = post(path, PROTOBUF, vec![0u8; 8192]).await.unwrap();
        assert_eq!(too_large.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
    let no_session = h.inject(&outbound_get("", "/x")).await;
    assert_eq!(no_session.status(), StatusCode::BAD_REQUEST);
    let message = no_session.json::<Value>().await.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("missing session id"), "{message}");
    // The runtime stays healthy.
    assert_eq!(
        h.client
            .get(h.runtime.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn error_rules_and_strict_policy_are_hits_the_proxy_replays() {
    let h = Harness::start(&[]).await;
    let id = h.session("replay").await;
    h.post(&id, "policy", json!({"externalHttp": "strict"}))
        .await;
    h.post(&id, "rules", json!([{"name": "down", "when": {"path": "/down"}, "then": {"action": "error", "error": {"status": 503, "body": "maintenance"}}}])).await;
    let down = TracesData::decode(
        h.inject(&outbound_get(&id, "/down"))
            .await
            .bytes()
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        attribute(&down, "http.response.status_code").as_deref(),
        Some("503")
    );
    assert_eq!(
        attribute(&down, "http.response.body").as_deref(),
        Some("{\"error\":\"maintenance\"}")
    );
    assert_eq!(attribute(&down, "sp.decision").as_deref(), Some("error"));
    let strict = h.inject(&outbound_get(&id, "/unmocked")).await;
    assert_eq!(strict.status(), StatusCode::OK);
    let strict = TracesData::decode(strict.bytes().await.unwrap()).unwrap();
    assert_eq!(
        attribute(&strict, "http.response.status_code").as_deref(),
        Some("500")
    );
    assert_eq!(
        attribute(&strict, "sp.decision").as_deref(),
        Some("strict_miss")
    );
    assert!(
        attribute(&strict, "http.response.body")
            .unwrap()
            .contains("strict policy requires")
    );
    let stats = h.stats(&id).await;
    assert_eq!(
        (
            stats["strictMisses"].as_u64(),
            stats["injectedErrors"].as_u64(),
            stats["injectedSpans"].as_u64()
        ),
        (Some(1), Some(1), Some(0))
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn inject_over_grpc_answers_like_http() {
    let h = Harness::start(&[]).await;
    let id = h.session("replay").await;
    h.post(&id, "rules", mock_rules()).await;
    let grpc = format!("http://{}", h.runtime.grpc_addr);
    let mut client = InjectServiceClient::connect(grpc).await.unwrap();
    let hit = client
        .inject(outbound_get(&id, "/items"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        attribute(&hit, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attribute(&hit, "sp.rule.name").as_deref(), Some("items"));
    let miss = client
        .inject(outbound_get(&id, "/nothing"))
        .await
        .unwrap_err();
    assert_eq!(miss.code(), tonic::Code::NotFound);
    let invalid = client.inject(TracesData::default()).await.unwrap_err();
    assert_eq!(invalid.code(), tonic::Code::InvalidArgument);
    // gzip-compressed requests are read like plain ones.
    let mut gzip_client = client.send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let hit = gzip_client
        .inject(outbound_get(&id, "/items"))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(attribute(&hit, "sp.rule.name").as_deref(), Some("items"));
    h.runtime.stop().await;
}

/// Sends `message` as the request of the unary method at `path`, whatever its bytes: what a
/// broken client sends.
async fn grpc_unchecked(
    address: &str,
    path: &'static str,
    message: &[u8],
) -> Result<bytes::Bytes, tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(address.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = tonic::client::Grpc::new(channel);
    client.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    let request = tonic::Request::new(bytes::Bytes::copy_from_slice(message));
    let response = client
        .unary(request, path, softprobe::proto::RawCodec)
        .await?;
    Ok(response.into_inner())
}

#[tokio::test]
async fn malformed_grpc_messages_are_refused_with_the_reason() {
    let h = Harness::start(&[]).await;
    let grpc = format!("http://{}", h.runtime.grpc_addr);
    // Field 1 (resource_spans) says 127 bytes follow; none do.
    let truncated = [0x0a, 0x7f];
    for path in [
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        "/softprobe.v1.InjectService/Inject",
    ] {
        let refused = grpc_unchecked(&grpc, path, &truncated).await.unwrap_err();
        assert_eq!(refused.code(), tonic::Code::InvalidArgument, "{path}");
        assert!(
            refused.message().starts_with("invalid OTLP protobuf: "),
            "{path}: {}",
            refused.message()
        );
    }
    // A well-formed empty export is accepted and answered with an empty response.
    let answer = grpc_unchecked(
        &grpc,
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        ExportTraceServiceResponse::decode(answer).unwrap(),
        ExportTraceServiceResponse::default()
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn grpc_reflection_lists_both_services() {
    let h = Harness::start(&[]).await;
    let names = support::reflection_services(h.runtime.grpc_addr).await;
    for service in [
        "softprobe.v1.InjectService",
        "opentelemetry.proto.collector.trace.v1.TraceService",
    ] {
        assert!(
            names.iter().any(|n| n == service),
            "{service} missing from {names:?}"
        );
    }
    h.runtime.stop().await;
}

fn extract(
    session: &str,
    direction: &str,
    path: &str,
    status: i64,
) -> opentelemetry_proto::tonic::trace::v1::Span {
    let mut span = span(
        "extract",
        session,
        &[
            ("sp.traffic.direction", direction),
            ("http.request.header.:method", "GET"),
            ("url.host", "api.example.com"),
            ("url.path", path),
            ("http.request.header.authorization", "Bearer secret"),
        ],
    );
    span.attributes
        .push(support::spans::int("http.response.status_code", status));
    span
}

/// The spans of a case whose traces each have one resource and one scope.
fn case_spans(case: &Value) -> Vec<&Value> {
    case["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| {
            t["resourceSpans"][0]["scopeSpans"][0]["spans"]
                .as_array()
                .unwrap()
        })
        .collect()
}

#[tokio::test]
async fn capture_over_http_and_grpc_writes_a_case_that_loads_back() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let id = h.session("capture").await;

    // HTTP protobuf: an inbound and an outbound hop, plus a span of another (unknown) session.
    let mut batch = traces(
        "orders",
        vec![
            extract(&id, "inbound", "/checkout", 200),
            extract(&id, "outbound", "/items", 200),
        ],
    );
    batch.resource_spans[0].scope_spans[0]
        .spans
        .push(extract("sess_gone", "outbound", "/x", 200));
    let response = h.export(&batch).await;
    assert_eq!(response.status(), StatusCode::OK);
    let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
    let partial = answer.partial_success.expect("one span was refused");
    assert_eq!(partial.rejected_spans, 1);
    assert!(
        partial.error_message.contains("unknown or closed session"),
        "{}",
        partial.error_message
    );

    // HTTP JSON: an app span forwarded by a Collector, session only in its traceState.
    let mut app = span("", "", &[("http.route", "/checkout")]);
    app.attributes.clear();
    app.trace_state = format!("vendor=1,x-softprobe-session-id={id}");
    let json = serde_json::to_string(&traces("orders", vec![app])).unwrap();
    let response = h
        .client
        .post(h.runtime.url("/v1/traces"))
        .header("content-type", "application/json")
        .body(json)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({}),
        "nothing refused: no partialSuccess"
    );

    // gRPC Export, gzip-compressed.
    let grpc = format!("http://{}", h.runtime.grpc_addr);
    let mut client = TraceServiceClient::connect(grpc)
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let request = ExportTraceServiceRequest {
        resource_spans: traces("orders", vec![extract(&id, "outbound", "/grpc", 201)])
            .resource_spans,
    };
    let answer = client.export(request).await.unwrap().into_inner();
    assert!(answer.partial_success.is_none());

    let stats = h.stats(&id).await;
    assert_eq!(stats["extractedSpans"], 4);
    let live: Value = h.runtime.get_json(&format!("/v1/captures/{id}")).await;
    assert_eq!(live["traces"].as_array().unwrap().len(), 3);

    let text = h.runtime.close_capture(&id).await;
    let case: Value = serde_json::from_str(&text).unwrap();
    let problems = support::case_schema::violations(&case);
    assert!(
        problems.is_empty(),
        "the case does not follow case.schema.json: {problems:?}"
    );
    assert!(
        text.contains("\"4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b4b\""),
        "ids are hex"
    );
    assert!(!text.contains("Bearer secret"), "authorization is redacted");
    assert_eq!(case_spans(&case).len(), 4);
    let downloaded: Value = h.runtime.get_json(&format!("/v1/captures/{id}")).await;
    assert_eq!(downloaded, case);

    // The written case loads back into a new session.
    let replay = h.session("replay").await;
    let loaded = h
        .client
        .post(h.runtime.url(&format!("/v1/sessions/{replay}/load-case")))
        .body(text)
        .send()
        .await
        .unwrap();
    assert_eq!(loaded.status(), StatusCode::OK);
    h.runtime.stop().await;
}

/// A protobuf batch that is wholly one session's is kept as sent (read in place, never
/// decoded), unless it holds a value to redact: a default sensitive header or one the session
/// policy names.
#[tokio::test]
async fn whole_protobuf_batches_are_kept_as_sent_but_never_with_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let id = h.session("capture").await;
    h.post(&id, "policy", json!({"redactHeaders": ["X-Tenant-Key"]}))
        .await;
    let with_token = traces("orders", vec![extract(&id, "outbound", "/with-token", 200)]);
    let without_token = |path: &str| {
        let mut batch = traces("orders", vec![extract(&id, "outbound", path, 200)]);
        batch.resource_spans[0].scope_spans[0].spans[0]
            .attributes
            .retain(|kv| kv.key != "http.request.header.authorization");
        batch
    };
    let plain = without_token("/plain");
    let mut tenant = without_token("/tenant");
    tenant.resource_spans[0].scope_spans[0].spans[0]
        .attributes
        .push(support::spans::string(
            "http.response.header.x-tenant-key",
            "tenant-secret",
        ));
    for batch in [&with_token, &plain, &tenant] {
        let response = h.export(batch).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
    let text = h.runtime.close_capture(&id).await;
    assert!(!text.contains("Bearer secret"), "authorization is redacted");
    assert!(
        !text.contains("tenant-secret"),
        "the policy's header is redacted"
    );
    assert_eq!(
        text.matches("[REDACTED]").count(),
        2,
        "redacted values are marked"
    );
    let case: Value = serde_json::from_str(&text).unwrap();
    assert!(support::case_schema::violations(&case).is_empty());
    let paths: Vec<String> = case_spans(&case)
        .into_iter()
        .flat_map(|span| span["attributes"].as_array().unwrap())
        .filter(|kv| kv["key"] == "url.path")
        .map(|kv| kv["value"]["stringValue"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(paths, ["/with-token", "/plain", "/tenant"]);
    h.runtime.stop().await;
}

#[tokio::test]
async fn a_full_capture_buffer_refuses_and_marks_the_case_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let h = Harness::start(&[
        "--capture-dir",
        dir.path().to_str().unwrap(),
        "--capture-max-spans",
        "2",
    ])
    .await;
    let id = h.session("capture").await;
    for path in ["/a", "/b", "/c"] {
        let batch = traces("orders", vec![extract(&id, "outbound", path, 200)]);
        let response = h.export(&batch).await;
        let answer = ExportTraceServiceResponse::decode(response.bytes().await.unwrap()).unwrap();
        assert_eq!(answer.partial_success.is_some(), path == "/c", "{path}");
    }
    assert_eq!(h.stats(&id).await["droppedSpans"], 1);
    let case: Value = serde_json::from_str(&h.runtime.close_capture(&id).await).unwrap();
    assert_eq!(
        (case["incomplete"].as_bool(), case["droppedSpans"].as_u64()),
        (Some(true), Some(1))
    );
    h.runtime.stop().await;
}

#[tokio::test]
async fn consume_once_fires_exactly_once_under_parallel_injects() {
    let h = Harness::start(&[]).await;
    let id = h.session("replay").await;
    h.post(&id, "rules", json!([{"name": "once", "consume": "once", "when": {"path": "/token"}, "then": {"action": "mock", "response": {"body": "t"}}}])).await;
    let request = outbound_get(&id, "/token").encode_to_vec();
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let (client, url, body) = (
                h.client.clone(),
                h.runtime.url("/v1/inject"),
                request.clone(),
            );
            tokio::spawn(async move {
                client
                    .post(url)
                    .header("content-type", PROTOBUF)
                    .body(body)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let mut hits = 0;
    for task in tasks {
        if task.await.unwrap() == StatusCode::OK {
            hits += 1;
        }
    }
    assert_eq!(hits, 1);
    h.runtime.stop().await;
}

#[tokio::test]
async fn rule_updates_racing_injects_never_mix_revisions() {
    let h = Harness::start(&[]).await;
    let id = h.session("replay").await;
    let writer = {
        let (client, url) = (
            h.client.clone(),
            h.runtime.url(&format!("/v1/sessions/{id}/rules")),
        );
        tokio::spawn(async move {
            // Write k lands at revision k, so its mock body names the revision it belongs to.
            for revision in 1..=100 {
                let rules = json!([{"name": format!("r{revision}"), "when": {"path": "/race"}, "then": {"action": "mock", "response": {"body": format!("rev-{revision}")}}}]);
                client
                    .post(&url)
                    .body(rules.to_string())
                    .send()
                    .await
                    .unwrap();
            }
        })
    };
    let request = outbound_get(&id, "/race").encode_to_vec();
    let mut checked = 0;
    while !writer.is_finished() || checked == 0 {
        let response = h
            .client
            .post(h.runtime.url("/v1/inject"))
            .header("content-type", PROTOBUF)
            .body(request.clone())
            .send()
            .await
            .unwrap();
        if response.status() != StatusCode::OK {
            continue; // before the first write
        }
        let hit = TracesData::decode(response.bytes().await.unwrap()).unwrap();
        let revision = attribute(&hit, "sp.session.revision").unwrap();
        assert_eq!(
            attribute(&hit, "http.response.body"),
            Some(format!("rev-{revision}"))
        );
        assert_eq!(
            attribute(&hit, "sp.rule.name"),
            Some(format!("r{revision}"))
        );
        checked += 1;
    }
    writer.await.unwrap();
    h.runtime.stop().await;
}
