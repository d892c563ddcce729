//! Deterministic request bodies: one-span inject lookups, 100-span export batches of realistic
//! HTTP exchanges, and rule documents with distinct exact paths.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use serde_json::{Value, json};
use softprobe_pipeline::otlp::span_views;

/// Host every rule and lookup names.
pub(crate) const HOST: &str = "api.example.com";
/// Status the mocked response carries, distinct from 200 so a hit is recognisable.
pub(crate) const MOCK_STATUS: i64 = 201;
/// Path of recorded exchange `i` of a replay case.
pub(crate) fn replay_path(i: usize) -> String {
    format!("/v1/recorded/{i}")
}

/// A case of `n` recorded outbound exchanges (`GET` [`replay_path`]`(i)`, answered
/// [`MOCK_STATUS`] with a small JSON body), and the rule that replays it.
pub(crate) fn replay_case(n: usize) -> (Value, Value) {
    let kv = |key: &str, value: Value| json!({"key": key, "value": value});
    let spans: Vec<Value> = (0..n)
        .map(|i| {
            json!({"spanId": format!("{:016x}", i + 1), "name": "GET", "attributes": [
                kv("sp.traffic.direction", json!({"stringValue": "outbound"})),
                kv("url.host", json!({"stringValue": HOST})),
                kv("url.path", json!({"stringValue": replay_path(i)})),
                kv("http.request.method", json!({"stringValue": "GET"})),
                kv("http.response.status_code", json!({"intValue": MOCK_STATUS})),
                kv("http.response.header.content-type", json!({"stringValue": "application/json"})),
                kv("http.response.body", json!({"stringValue": format!("{{\"item\":{i}}}")})),
            ]})
        })
        .collect();
    let case = json!({"version": "1.0.0", "caseId": format!("replay-{n}"),
        "traces": [{"resourceSpans": [{"scopeSpans": [{"spans": spans}]}]}]});
    let rules = json!({"version": 1, "rules": [
        {"name": "replay", "when": {"direction": "outbound"}, "then": {"action": "replay"}}]});
    (case, rules)
}

/// Path of rule `i` (exact match).
pub(crate) fn rule_path(i: usize) -> String {
    format!("/v1/items/{i}")
}

fn kv(key: &str, value: AnyValueKind) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

fn string(key: &str, value: &str) -> KeyValue {
    kv(key, AnyValueKind::StringValue(value.to_owned()))
}

/// Request headers a proxied call typically carries.
fn request_headers(seq: usize) -> Vec<KeyValue> {
    [
        ("user-agent", "checkout/2.14.1 (okhttp/4.12.0)".to_owned()),
        ("accept", "application/json".to_owned()),
        ("accept-encoding", "gzip, deflate, br".to_owned()),
        (
            "x-request-id",
            format!("7c1f0a2e-4b8d-4e3a-9f1c-{seq:012x}"),
        ),
        (
            "traceparent",
            format!("00-4bf92f3577b34da6a3ce929d0e0e{seq:04x}-00f067aa0ba902b7-01"),
        ),
    ]
    .into_iter()
    .map(|(name, value)| string(&format!("http.request.header.{name}"), &value))
    .collect()
}

fn traces(service: &str, spans: Vec<Span>) -> TracesData {
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

/// The one-span lookup the proxy sends before an outbound `GET {HOST}{path}`.
pub(crate) fn inject(session: &str, path: &str) -> TracesData {
    let mut attributes = vec![
        string("sp.span.type", "inject"),
        string("sp.session.id", session),
        string("sp.traffic.direction", "outbound"),
        string("http.request.method", "GET"),
        string("url.host", HOST),
        string("url.path", path),
    ];
    attributes.extend(request_headers(0));
    let span = Span {
        trace_id: vec![0x4b; 16],
        span_id: vec![0x07; 8],
        name: "inject".into(),
        kind: 3,
        attributes,
        ..Span::default()
    };
    traces("checkout", vec![span])
}

/// `spans` observed exchanges of about 1 KiB each (headers and a JSON body), for a capture
/// session.
pub(crate) fn export(session: &str, spans: usize) -> ExportTraceServiceRequest {
    let body = json!({"id": 4711, "sku": "SKU-00042", "quantity": 2, "currency": "EUR",
        "price": {"amount": 1999, "scale": 2}, "customer": {"id": "c-20931", "tier": "gold"},
        "shipping": {"method": "express", "country": "DE", "zip": "10115"},
        "notes": "leave at the front desk, ring twice"})
    .to_string();
    let spans = (0..spans)
        .map(|seq| {
            let mut attributes = vec![
                string("sp.span.type", "extract"),
                string("sp.session.id", session),
                string("sp.traffic.direction", "outbound"),
                string("http.request.method", "POST"),
                string("url.host", HOST),
                string("url.path", &format!("/v1/orders/{seq}")),
                kv("http.response.status_code", AnyValueKind::IntValue(200)),
                string("http.response.header.content-type", "application/json"),
                string("http.response.header.cache-control", "no-store"),
                string("http.request.body", &body),
                string("http.response.body", &body),
            ];
            attributes.extend(request_headers(seq));
            Span {
                trace_id: (0..16).map(|b| (seq as u8).wrapping_add(b)).collect(),
                span_id: (0..8)
                    .map(|b| (seq as u8).wrapping_mul(3).wrapping_add(b))
                    .collect(),
                name: "POST /v1/orders".into(),
                kind: 3,
                start_time_unix_nano: 1_700_000_000_000_000_000 + seq as u64 * 1_000,
                end_time_unix_nano: 1_700_000_000_000_500_000 + seq as u64 * 1_000,
                attributes,
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: traces("checkout", spans).resource_spans,
    }
}

/// A rules document of `n` mock rules with distinct exact paths `rule_path(0..n)`, all of the
/// same priority, so a lookup of `rule_path(n - 1)` has to get past every other rule.
pub(crate) fn rules(n: usize) -> Value {
    let rules: Vec<Value> = (0..n)
        .map(|i| {
            json!({
                "name": format!("item-{i}"),
                "priority": 100,
                "when": {"direction": "outbound", "method": "GET", "host": HOST, "path": rule_path(i)},
                "then": {"action": "mock", "response": {
                    "status": MOCK_STATUS,
                    "headers": {"content-type": "application/json"},
                    "body": "{\"items\":[]}"
                }}
            })
        })
        .collect();
    json!({"version": 1, "rules": rules})
}

/// One rule mocking the proxy scenarios' inbound `GET /health` with [`MOCK_STATUS`].
pub(crate) fn health_mock() -> Value {
    json!({"version": 1, "rules": [{
        "name": "health",
        "when": {"direction": "inbound", "method": "GET", "path": "/health"},
        "then": {"action": "mock", "response": {"status": MOCK_STATUS, "body": "mocked"}}
    }]})
}

/// The attribute `key` of the first span as text (strings and ints).
pub(crate) fn attribute(traces: &TracesData, key: &str) -> Option<String> {
    span_views(traces).first()?.attributes.get(key)?.text()
}
