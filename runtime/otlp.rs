//! OTLP receivers: `POST /v1/inject` and `POST /v1/traces` over HTTP, and over gRPC the
//! standard `TraceService/Export` plus Softprobe's `InjectService/Inject`. Each hands its
//! signal's pipeline the message and maps the outcome to its protocol, in the encoding the
//! client asked for.

use crate::api::RawBody;
use crate::api::error::ApiError;
use crate::blocking;
use crate::metrics::InjectResult;
use crate::proto::raw;
use crate::redis_store::{Appended, STAT_FIELDS};
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
use softprobe_pipeline::export::{ExportError, ExportOutcome};
use softprobe_pipeline::inject::{ForwardReason, InjectError, InjectOutcome};
use softprobe_pipeline::otlp::{DecodeError, Encoding, Received};
use softprobe_pipeline::store::StoreError;
use std::sync::Arc;
use std::time::Instant;

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

/// An OTLP/HTTP request as the pipeline takes it, and the encoding the client wants its
/// answer in. Headers are read in place (axum's `HeaderMap` extractor would clone the map for
/// every inject).
async fn received_http(
    state: &AppState,
    request: Request,
    answer: impl FnOnce(&HeaderMap) -> Encoding,
) -> Result<(Received, Encoding), ApiError> {
    let headers = request.headers();
    let encoding = Encoding::from_content_type(header_text(headers, header::CONTENT_TYPE));
    let content_encoding = header_text(headers, header::CONTENT_ENCODING).map(str::to_owned);
    let answer = answer(headers);
    let RawBody(body) = RawBody::from_request(request, state).await?;
    let received = Received {
        body,
        encoding,
        content_encoding,
    };
    Ok((received, answer))
}

/// Runs `work` (a pipeline) on `received`, on the blocking pool when the body is large.
async fn run<T: Send + 'static>(
    received: Received,
    work: impl FnOnce(Received) -> T + Send + 'static,
) -> T {
    blocking::run(received.body.len(), move || work(received)).await
}

/// Inject over the session store. With Redis, the lookup's session is first brought up to date
/// (one round trip), a `consume: once` rule is claimed there, and the outcome is counted there.
async fn inject(state: &AppState, received: Received) -> Result<InjectOutcome, InjectError> {
    let pipelines = state.pipelines.clone();
    let Some(redis) = state.store.redis() else {
        return run(received, move |received| pipelines.inject(&received)).await;
    };
    // A proxy waits on this answer: a slow store gets a quick 503 and the proxy's failure
    // mode decides, rather than the proxy's own (longer) timeout.
    tokio::time::timeout(INJECT_STORE_BUDGET, inject_shared(state, redis, received))
        .await
        .unwrap_or_else(|_| {
            Err(InjectError::Unavailable(format!(
                "no answer within {} ms",
                INJECT_STORE_BUDGET.as_millis()
            )))
        })
}

/// How long an inject may wait on Redis in all.
const INJECT_STORE_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

async fn inject_shared(
    state: &AppState,
    redis: &crate::redis_store::RedisStore,
    received: Received,
) -> Result<InjectOutcome, InjectError> {
    let pipelines = state.pipelines.clone();
    let unavailable = |err: StoreError| InjectError::Unavailable(err.to_string());
    let id = pipelines.inject_session(&received)?;
    if let Some(id) = &id {
        match state.store.get(id).await {
            Ok(_) | Err(StoreError::UnknownSession) => {}
            Err(err) => return Err(unavailable(err)),
        }
    }
    let received = Arc::new(received);
    loop {
        let (pipelines, shared) = (pipelines.clone(), received.clone());
        let size = shared.body.len();
        let outcome = blocking::run(size, move || pipelines.inject(&shared)).await?;
        let Some(id) = &id else { return Ok(outcome) };
        if let InjectOutcome::Hit(hit) = &outcome
            && let Some((layer, position)) = hit.consumed
            && !redis
                .claim(id, layer, position)
                .await
                .map_err(unavailable)?
        {
            // Used up on another replica; this replica's copy now knows it too: decide again.
            continue;
        }
        if let Some(counter) = shared_counter(&outcome) {
            redis.count(id, counter);
        }
        // Misses this decision recorded in the replica's copy are in Redis before the answer,
        // so a test that reads them next, on any replica, finds them.
        let misses = match state.store.local().peek(id) {
            Some(session) => session.misses.take_unshared(),
            None => Vec::new(),
        };
        if !misses.is_empty() {
            redis.add_misses(id, &misses).await.map_err(unavailable)?;
        }
        return Ok(outcome);
    }
}

/// The stats counter an inject outcome adds to, as its index in [`STAT_FIELDS`].
fn shared_counter(outcome: &InjectOutcome) -> Option<usize> {
    let field = match outcome {
        InjectOutcome::Hit(hit) => match hit.decision {
            "error" => "injectedErrors",
            "strict_miss" => "strictMisses",
            _ => "injectedSpans",
        },
        InjectOutcome::Forward(ForwardReason::UnknownSession) => return None,
        InjectOutcome::Forward(_) => "injectMisses",
    };
    STAT_FIELDS.iter().position(|f| *f == field)
}

/// Export over the session store. With Redis, the spans' sessions are brought up to date and
/// each capture batch is acknowledged only once Redis holds it.
async fn export(state: &AppState, received: Received) -> Result<ExportOutcome, ExportError> {
    let pipelines = state.pipelines.clone();
    let Some(redis) = state.store.redis() else {
        return run(received, move |received| pipelines.export(received)).await;
    };
    let unavailable = |err: StoreError| ExportError::Unavailable(err.to_string());
    let receiving = pipelines.clone();
    let spans = run(received, move |received| receiving.receive_export(received)).await?;
    // Spans mark their session used, as an inject does: a capture fed only by exports
    // (a Collector forwarding) must not expire while its spans arrive.
    for id in spans.session_ids()? {
        match state.store.get(&id).await {
            Ok(_) | Err(StoreError::UnknownSession) => {}
            Err(err) => return Err(unavailable(err)),
        }
    }
    let batches = pipelines.batches(spans)?;
    let mut outcome = ExportOutcome {
        accepted: 0,
        refused: batches.refused,
    };
    let mut kept = Vec::with_capacity(batches.batches.len());
    for batch in batches.batches {
        if batch.session.capture.is_none() {
            outcome.accepted += batch.count as u64;
        } else {
            kept.push((batch.session, batch.count, batch.spans.encoded()));
        }
    }
    // The whole export is held against the shared budget first, so a refusal (which
    // exporters retry) never leaves part of it behind as a duplicate.
    let total = kept.iter().map(|(_, _, encoded)| encoded.len()).sum();
    redis.reserve(total).await.map_err(unavailable)??;
    let (mut appended, mut failure) = (0, None);
    for (session, count, encoded) in kept {
        let count = count as u64;
        match redis.append(session.id(), &encoded, count as usize).await {
            Ok(Appended::Kept) => {
                outcome.accepted += count;
                appended += encoded.len();
            }
            Ok(Appended::Full) => outcome.refused.buffer_full += count,
            Ok(Appended::Gone) => outcome.refused.unknown_session += count,
            // The export is answered 503 and retried; sessions appended before this one
            // may then hold its spans twice.
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
    }
    redis.release(total - appended).await.map_err(unavailable)?;
    match failure {
        Some(err) => Err(unavailable(err)),
        None => Ok(outcome),
    }
}

/// The one mapping from decoding failures to the HTTP wire.
fn decode_error(err: &DecodeError) -> ApiError {
    let message = err.to_string();
    match err {
        DecodeError::TooLarge { .. } => {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
        }
        DecodeError::UnsupportedMediaType(_) | DecodeError::UnsupportedContentEncoding(_) => {
            ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                message,
            )
        }
        DecodeError::Malformed(_) => ApiError::invalid_request(message),
    }
}

/// Records an inject outcome in the metrics.
fn count_inject(state: &AppState, outcome: &Result<InjectOutcome, InjectError>, started: Instant) {
    let result = match outcome {
        Ok(InjectOutcome::Hit(_)) => InjectResult::Hit,
        Ok(InjectOutcome::Forward(_)) => InjectResult::Miss,
        Err(_) => InjectResult::Error,
    };
    let latency = (result != InjectResult::Error).then(|| started.elapsed());
    state.metrics.inject(result, latency);
    if let Ok(InjectOutcome::Forward(ForwardReason::UnknownSession)) = outcome {
        state.metrics.refused_spans("unknown_session", 1);
    }
}

/// Inject answers in JSON only when asked to.
fn inject_answer(headers: &HeaderMap) -> Encoding {
    match header_text(headers, header::ACCEPT) {
        Some(accept) if accept.contains("application/json") && !accept.contains("protobuf") => {
            Encoding::Json
        }
        _ => Encoding::Protobuf,
    }
}

/// `POST /v1/inject`: 200 with the hit, or 404 (forward upstream).
pub async fn inject_http(State(state): State<AppState>, request: Request) -> Response {
    let started = Instant::now();
    let (received, answer) = match received_http(&state, request, inject_answer).await {
        Ok(received) => received,
        Err(err) => return err.into_response(),
    };
    let outcome = inject(&state, received).await;
    count_inject(&state, &outcome, started);
    match outcome {
        Ok(InjectOutcome::Hit(hit)) => {
            let body = match answer {
                Encoding::Protobuf => hit.encode_protobuf(),
                Encoding::Json => hit.encode_json(),
            };
            (
                StatusCode::OK,
                [(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static(answer.content_type()),
                )],
                body,
            )
                .into_response()
        }
        // Any 404 tells the proxy to forward; the body says why for people reading logs.
        Ok(InjectOutcome::Forward(_)) => (
            StatusCode::NOT_FOUND,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            NO_INJECT_MATCH,
        )
            .into_response(),
        Err(InjectError::Decode(err)) => decode_error(&err).into_response(),
        // The proxy's failure mode decides the hop.
        Err(InjectError::Unavailable(reason)) => {
            ApiError::store_unavailable(&reason).into_response()
        }
        Err(err) => ApiError::invalid_request(err.to_string()).into_response(),
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

/// An export answers in its request's encoding (protobuf when it declared none).
fn export_answer(headers: &HeaderMap) -> Encoding {
    match Encoding::from_content_type(header_text(headers, header::CONTENT_TYPE)) {
        Ok(Some(Encoding::Json)) => Encoding::Json,
        _ => Encoding::Protobuf,
    }
}

/// `POST /v1/traces`: keeps the spans of live sessions; OTLP partial success for the rest.
pub async fn traces_http(State(state): State<AppState>, request: Request) -> Response {
    let (received, answer) = match received_http(&state, request, export_answer).await {
        Ok(received) => received,
        Err(err) => return err.into_response(),
    };
    match export(&state, received).await {
        Ok(outcome) => {
            count_export(&state, &outcome);
            let response = export_response(&outcome);
            let body = match (answer, &response.partial_success) {
                (Encoding::Protobuf, _) => response.encode_to_vec(),
                // Omit the field rather than write `"partialSuccess": null`.
                (Encoding::Json, None) => b"{}".to_vec(),
                (Encoding::Json, Some(_)) => serde_json::to_vec(&response).unwrap_or_default(),
            };
            let content_type = HeaderValue::from_static(answer.content_type());
            (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body).into_response()
        }
        Err(ExportError::OverBudget(over)) => ApiError::over_budget(&over).into_response(),
        Err(ExportError::Unavailable(reason)) => {
            ApiError::store_unavailable(&reason).into_response()
        }
        Err(ExportError::Decode(err)) => decode_error(&err).into_response(),
    }
}

/// The one mapping from decoding failures to gRPC statuses.
fn decode_status(err: &DecodeError) -> tonic::Status {
    match err {
        DecodeError::TooLarge { .. } => tonic::Status::resource_exhausted(err.to_string()),
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
        let received = Received::protobuf(request.into_inner());
        match export(&self.state, received).await {
            Ok(outcome) => {
                count_export(&self.state, &outcome);
                let response = export_response(&outcome).encode_to_vec();
                Ok(tonic::Response::new(response.into()))
            }
            // Retryable: OTLP exporters retry UNAVAILABLE with backoff.
            Err(ExportError::OverBudget(over)) => Err(tonic::Status::unavailable(over.to_string())),
            Err(err @ ExportError::Unavailable(_)) => {
                Err(tonic::Status::unavailable(err.to_string()))
            }
            Err(ExportError::Decode(err)) => Err(decode_status(&err)),
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
        let received = Received::protobuf(request.into_inner());
        let outcome = inject(&self.state, received).await;
        count_inject(&self.state, &outcome, started);
        match outcome {
            Ok(InjectOutcome::Hit(hit)) => Ok(tonic::Response::new(hit.encode_protobuf().into())),
            Ok(InjectOutcome::Forward(reason)) => Err(tonic::Status::not_found(format!(
                "no inject match ({}): forward upstream",
                reason.as_str()
            ))),
            Err(InjectError::Decode(err)) => Err(decode_status(&err)),
            Err(err @ InjectError::Unavailable(_)) => {
                Err(tonic::Status::unavailable(err.to_string()))
            }
            Err(err) => Err(tonic::Status::invalid_argument(err.to_string())),
        }
    }
}
