//! OTLP receivers: `POST /v1/inject` and `POST /v1/traces` over HTTP, and over gRPC the
//! standard `TraceService/Export` plus Softprobe's `InjectService/Inject`. Each hands the
//! pipeline one record and maps its outcome to its protocol.

use crate::api::RawBody;
use crate::api::error::ApiError;
use crate::metrics::InjectResult;
use crate::proto::raw;
use crate::routes;
use crate::state::AppState;
use axum::Router;
use axum::extract::{FromRequest as _, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use softprobe_pipeline::otlp::{DecodeError, Encoding};
use softprobe_pipeline::record::{
    ExportOutcome, InjectOutcome, Outcome, PipelineError, Received, Signal,
};
use std::time::Instant;
use tower::ServiceExt as _;

/// The miss body, as the reference runtime words it.
const NO_INJECT_MATCH: &str = r#"{"error":"no inject match"}"#;

/// The OTLP/HTTP routes, merged into the HTTP API.
pub fn http_routes() -> Router<AppState> {
    Router::new()
        .route(routes::INJECT, post(inject_http))
        .route(routes::TRACES, post(traces_http))
}

fn header_text(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// An OTLP/HTTP request as the pipeline takes it. Headers are read in place (axum's
/// `HeaderMap` extractor would clone the map for every inject).
async fn received_http(
    state: &AppState,
    signal: Signal,
    request: Request,
) -> Result<Received, ApiError> {
    let headers = request.headers();
    let encoding = Encoding::from_content_type(header_text(headers, header::CONTENT_TYPE));
    let content_encoding = header_text(headers, header::CONTENT_ENCODING).map(str::to_owned);
    // Inject answers in JSON only when asked to; an export answers in its own encoding.
    let wants_json = signal == Signal::Inject
        && header_text(headers, header::ACCEPT).is_some_and(|accept| {
            accept.contains("application/json") && !accept.contains("protobuf")
        });
    let RawBody(body) = RawBody::from_request(request, state).await?;
    Ok(Received {
        signal,
        body,
        encoding,
        content_encoding,
        wants_json,
    })
}

/// Runs the pipeline. Bodies past [`crate::api::OFFLOAD_BYTES`] are read on the blocking pool,
/// so health checks and small injects keep their async workers while a large one parses.
async fn run(state: &AppState, received: Received) -> Result<Outcome, PipelineError> {
    let pipeline = state.pipeline.clone();
    if received.body.len() <= crate::api::OFFLOAD_BYTES {
        return pipeline.oneshot(received).await;
    }
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(pipeline.oneshot(received)))
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}

/// The one mapping from pipeline failures to the HTTP wire.
fn pipeline_error(err: PipelineError) -> ApiError {
    let message = err.to_string();
    match err {
        PipelineError::OverBudget(over) => ApiError::over_budget(&over),
        PipelineError::Decode(DecodeError::TooLarge { .. }) => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        PipelineError::Decode(
            DecodeError::UnsupportedMediaType(_) | DecodeError::UnsupportedContentEncoding(_),
        ) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            message,
        ),
        _ => ApiError::invalid_request(message),
    }
}

/// Records an inject outcome in the metrics.
fn count_inject(state: &AppState, outcome: &Result<Outcome, PipelineError>, started: Instant) {
    let result = match outcome {
        Ok(Outcome::Inject(InjectOutcome::Hit { .. })) => InjectResult::Hit,
        Ok(_) => InjectResult::Miss,
        Err(_) => InjectResult::Error,
    };
    let latency = (result != InjectResult::Error).then(|| started.elapsed());
    state.metrics.inject(result, latency);
    if let Ok(Outcome::Inject(InjectOutcome::Forward {
        reason: "unknown_session",
    })) = outcome
    {
        state.metrics.refused_spans("unknown_session", 1);
    }
}

/// `POST /v1/inject`: 200 with the hit, or 404 (forward upstream).
pub async fn inject_http(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let received = match received_http(&state, Signal::Inject, request).await {
        Ok(received) => received,
        Err(err) => return err.into_response(),
    };
    let outcome = run(&state, received).await;
    count_inject(&state, &outcome, started);
    match outcome {
        Ok(Outcome::Inject(InjectOutcome::Hit { hit, encoding })) => {
            let body = match encoding {
                Encoding::Protobuf => hit.encode_protobuf(),
                Encoding::Json => hit.encode_json(),
            };
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(encoding.content_type()),
                )],
                body,
            )
                .into_response()
        }
        // Any 404 tells the proxy to forward; the body says why for people reading logs.
        Ok(_) => (
            StatusCode::NOT_FOUND,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            NO_INJECT_MATCH,
        )
            .into_response(),
        Err(err) => pipeline_error(err).into_response(),
    }
}

fn count_export(state: &AppState, outcome: &ExportOutcome) {
    state.metrics.extract_spans(outcome.accepted);
    let refused = outcome.refused;
    for (reason, spans) in [
        ("no_session", refused.no_session),
        ("unknown_session", refused.unknown_session),
        ("buffer_full", refused.buffer_full),
    ] {
        if spans > 0 {
            state.metrics.refused_spans(reason, spans);
        }
    }
}

/// The OTLP export answer: `partial_success` only when something was refused.
fn export_response(outcome: &ExportOutcome) -> ExportTraceServiceResponse {
    let refused = outcome.refused.total();
    ExportTraceServiceResponse {
        partial_success: (refused > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: refused as i64,
            error_message: outcome.refused.message(),
        }),
    }
}

/// `POST /v1/traces`: keeps the spans of live sessions; OTLP partial success for the rest.
pub async fn traces_http(State(state): State<AppState>, request: Request) -> Response {
    let received = match received_http(&state, Signal::Export, request).await {
        Ok(received) => received,
        Err(err) => return err.into_response(),
    };
    match run(&state, received).await {
        Ok(Outcome::Export(outcome)) => {
            count_export(&state, &outcome);
            let response = export_response(&outcome);
            let body = match (outcome.encoding, &response.partial_success) {
                (Encoding::Protobuf, _) => response.encode_to_vec(),
                // Omit the field rather than write `"partialSuccess": null`.
                (Encoding::Json, None) => b"{}".to_vec(),
                (Encoding::Json, Some(_)) => serde_json::to_vec(&response).unwrap_or_default(),
            };
            let content_type = HeaderValue::from_static(outcome.encoding.content_type());
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Ok(Outcome::Inject(_)) => {
            ApiError::internal("an export produced an inject answer").into_response()
        }
        Err(err) => pipeline_error(err).into_response(),
    }
}

/// The one mapping from pipeline failures to gRPC statuses.
fn grpc_status(err: PipelineError) -> tonic::Status {
    match err {
        // Retryable: OTLP exporters retry UNAVAILABLE with backoff.
        PipelineError::OverBudget(_) => tonic::Status::unavailable(err.to_string()),
        PipelineError::Decode(DecodeError::TooLarge { .. }) => {
            tonic::Status::resource_exhausted(err.to_string())
        }
        _ => tonic::Status::invalid_argument(err.to_string()),
    }
}

/// gRPC services over the same pipeline and store as HTTP.
#[derive(Clone)]
pub struct GrpcServices {
    state: AppState,
}

impl GrpcServices {
    /// Services over this state.
    pub fn new(state: AppState) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl raw::trace_service_server::TraceService for GrpcServices {
    /// `ExportTraceServiceRequest` bytes in, `ExportTraceServiceResponse` bytes out.
    async fn export(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, tonic::Status> {
        let received = Received::protobuf(Signal::Export, request.into_inner());
        match run(&self.state, received).await.map_err(grpc_status)? {
            Outcome::Export(outcome) => {
                count_export(&self.state, &outcome);
                let response = export_response(&outcome).encode_to_vec();
                Ok(tonic::Response::new(response.into()))
            }
            Outcome::Inject(_) => Err(tonic::Status::internal(
                "an export produced an inject answer",
            )),
        }
    }
}

#[tonic::async_trait]
impl raw::inject_service_server::InjectService for GrpcServices {
    /// `TracesData` bytes in and, for a hit, out.
    async fn inject(
        &self,
        request: tonic::Request<Bytes>,
    ) -> Result<tonic::Response<Bytes>, tonic::Status> {
        let started = Instant::now();
        let received = Received::protobuf(Signal::Inject, request.into_inner());
        let outcome = run(&self.state, received).await;
        count_inject(&self.state, &outcome, started);
        match outcome.map_err(grpc_status)? {
            Outcome::Inject(InjectOutcome::Hit { hit, .. }) => {
                Ok(tonic::Response::new(hit.encode_protobuf().into()))
            }
            Outcome::Inject(InjectOutcome::Forward { reason }) => Err(tonic::Status::not_found(
                format!("no inject match ({reason}): forward upstream"),
            )),
            Outcome::Export(_) => Err(tonic::Status::internal(
                "an inject produced an export answer",
            )),
        }
    }
}
