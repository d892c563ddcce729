//! The OpenTelemetry SDK's own OTLP exporters as real clients of both receivers: app spans
//! whose session travels only in the W3C `traceState` land in the capture session.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

mod support;

use opentelemetry::Context;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry_otlp::{Protocol, WithExportConfig as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use serde_json::Value;
use support::Runtime;

/// Emits `spans` spans under a remote parent whose trace state names `session`, then flushes.
fn emit(exporter: opentelemetry_otlp::SpanExporter, session: &str, spans: usize) {
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer("softprobe-test");
    let state = TraceState::from_key_value([("x-softprobe-session-id", session)]).unwrap();
    let parent = SpanContext::new(
        TraceId::from(0x4bf9_2f35_77b3_4da6_a3ce_929d_0e0e_4736_u128),
        SpanId::from(0x00f0_67aa_0ba9_02b7_u64),
        TraceFlags::SAMPLED,
        true,
        state,
    );
    let cx = Context::new().with_remote_span_context(parent);
    for n in 0..spans {
        let _span = tracer.start_with_context(format!("GET /items/{n}"), &cx);
    }
    provider.shutdown().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_exporters_deliver_to_both_receivers() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::start(&["--capture-dir", dir.path().to_str().unwrap()]).await;
    let session = runtime.session("capture").await;
    let http = runtime.url("/v1/traces");
    let grpc = format!("http://{}", runtime.grpc_addr);

    let exporters = [
        opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(grpc)
            .build()
            .unwrap(),
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(http.clone())
            .build()
            .unwrap(),
        opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpJson)
            .with_endpoint(http)
            .build()
            .unwrap(),
    ];
    let session_for_thread = session.clone();
    // The SDK's simple processor blocks; keep it off the runtime's worker threads.
    tokio::task::spawn_blocking(move || {
        for exporter in exporters {
            emit(exporter, &session_for_thread, 3);
        }
    })
    .await
    .unwrap();

    let stats = runtime.stats(&session).await;
    assert_eq!(
        stats["extractedSpans"], 9,
        "3 spans per exporter, sent == received"
    );
    let case: Value = runtime.get_json(&format!("/v1/captures/{session}")).await;
    let names: Vec<&str> = case["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["resourceSpans"].as_array().unwrap())
        .flat_map(|rs| rs["scopeSpans"].as_array().unwrap())
        .flat_map(|ss| ss["spans"].as_array().unwrap())
        .map(|span| span["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 9);
    assert!(
        names.iter().all(|n| n.starts_with("GET /items/")),
        "{names:?}"
    );
    runtime.stop().await;
}
