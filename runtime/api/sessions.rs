//! Handlers of the session routes under `/v1/sessions`.

use super::body::RawBody;
use super::error::{ApiError, store_error};
use crate::capture::{self, CloseError, Closing};
use crate::redis_store::STAT_FIELDS;
use crate::state::AppState;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use softprobe_pipeline::document::Stored;
use softprobe_pipeline::document::parse_json_object;
use softprobe_pipeline::mode::Mode;
use softprobe_pipeline::policy::Policy;
use softprobe_pipeline::session::Session;
use softprobe_pipeline::store::DocumentKind;
use softprobe_pipeline::store::StoreError;
use std::sync::Arc;

/// `POST /v1/sessions` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateRequest {
    mode: Mode,
    #[serde(default)]
    policy: Option<Box<RawValue>>,
}

/// `POST /v1/sessions`: creates a session, revision 0; a `policy` is applied without a bump.
pub(super) async fn create(
    State(state): State<AppState>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    const CONTEXT: &str = "invalid create session request";
    let request: CreateRequest = parse_json_object(&body)
        .map_err(|err| ApiError::invalid_request(format!("{CONTEXT}: {err}")))?;
    let policy = match request.policy {
        Some(raw) => {
            let raw = Bytes::from(raw.get().to_owned());
            let parsed = Policy::parse(&raw).map_err(|err| {
                ApiError::invalid_request(format!("{CONTEXT}: {}", err.within("policy")))
            })?;
            Some(Stored::new(raw, parsed))
        }
        None => None,
    };
    let session = state
        .store
        .create(request.mode, policy)
        .await
        .map_err(|err| store_error(CONTEXT, err))?;
    state.metrics.session_created(request.mode);
    tracing::debug!(
        session_id = session.id(),
        mode = request.mode.as_str(),
        "Session created."
    );
    Ok(Json(
        json!({"sessionId": session.id(), "sessionRevision": 0}),
    ))
}

/// `GET /v1/sessions`: every live session, ordered by id.
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut sessions = state
        .store
        .list()
        .await
        .map_err(|err| store_error("", err))?;
    sessions.sort_by(|a, b| a.id().cmp(b.id()));
    let sessions: Vec<Value> = sessions
        .iter()
        .map(|s| {
            let mut entry = json!({"sessionId": s.id(), "mode": s.mode(), "sessionRevision": s.snapshot().revision});
            // A capture kept because its case could not be written, and why.
            if let Some(error) = s.capture_write_error() {
                entry["captureWriteError"] = json!(error);
            }
            entry
        })
        .collect();
    Ok(Json(json!({ "sessions": sessions })))
}

async fn replace(
    state: &AppState,
    id: &str,
    kind: DocumentKind,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let context = match kind {
        DocumentKind::Case => "invalid load-case request",
        _ => "invalid control payload",
    };
    let (session, revision) = state
        .store
        .replace(id, kind, body)
        .await
        .map_err(|err| store_error(context, err))?;
    tracing::debug!(
        session_id = session.id(),
        revision,
        ?kind,
        "Session document replaced."
    );
    Ok(Json(
        json!({"sessionId": session.id(), "sessionRevision": revision}),
    ))
}

/// `POST /v1/sessions/{id}/load-case`.
pub(super) async fn load_case(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    replace(&state, &id, DocumentKind::Case, body).await
}

/// `POST /v1/sessions/{id}/rules`.
pub(super) async fn rules(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    replace(&state, &id, DocumentKind::Rules, body).await
}

/// `POST /v1/sessions/{id}/policy`.
pub(super) async fn policy(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    replace(&state, &id, DocumentKind::Policy, body).await
}

/// `POST /v1/sessions/{id}/fixtures/auth`.
pub(super) async fn fixtures(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawBody(body): RawBody,
) -> Result<Json<Value>, ApiError> {
    replace(&state, &id, DocumentKind::Fixtures, body).await
}

/// A session's counters as `…/stats` and `…/state` show them.
async fn stats_json(state: &AppState, session: &Session) -> Result<Value, ApiError> {
    let counts = state
        .store
        .stats(session)
        .await
        .map_err(|err| store_error("", err))?;
    let fields = STAT_FIELDS.iter().zip(counts);
    Ok(Value::Object(
        fields
            .map(|(name, n)| ((*name).to_owned(), json!(n)))
            .collect(),
    ))
}

/// `GET /v1/sessions/{id}/stats`.
pub(super) async fn stats(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let session = state
        .store
        .get(&id)
        .await
        .map_err(|err| store_error("", err))?;
    Ok(Json(json!({
        "sessionId": session.id(),
        "sessionRevision": session.snapshot().revision,
        "mode": session.mode(),
        "stats": stats_json(&state, &session).await?,
    })))
}

/// A stored document echoed as the JSON value it was posted as.
fn as_posted(raw: &Bytes) -> Option<Box<RawValue>> {
    // Stored documents parsed as JSON when posted, so they are valid UTF-8 JSON.
    let text = std::str::from_utf8(raw).ok()?;
    RawValue::from_string(text.trim().to_owned()).ok()
}

/// The `…/state` answer. Documents are embedded exactly as posted (key order and all).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StateView<'a> {
    session_id: &'a str,
    session_revision: u64,
    mode: Mode,
    case_summary: Value,
    stats: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    policy: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<Box<RawValue>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    fixtures: Option<Box<RawValue>>,
}

/// `GET /v1/sessions/{id}/state`: the session's documents as stored, plus summary and stats.
pub(super) async fn session_state(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let session = state
        .store
        .get(&id)
        .await
        .map_err(|err| store_error("", err))?;
    let snapshot = session.snapshot();
    let case_summary = match &snapshot.case {
        Some(case) => {
            json!({"caseId": case.parsed.case_id, "traceCount": case.parsed.traces.len()})
        }
        None => json!({"traceCount": 0}),
    };
    let view = StateView {
        session_id: session.id(),
        session_revision: snapshot.revision,
        mode: session.mode(),
        case_summary,
        stats: stats_json(&state, &session).await?,
        policy: snapshot.policy.as_ref().and_then(|d| as_posted(&d.raw)),
        rules: snapshot.rules.as_ref().and_then(|d| as_posted(&d.raw)),
        fixtures: snapshot.fixtures.as_ref().and_then(|d| as_posted(&d.raw)),
    };
    Ok(Json(view).into_response())
}

/// `GET /v1/sessions/{id}/misses`: the hops no rule answered, oldest first, each with the
/// closest candidate and what it did not match; `dropped` counts older ones no longer kept.
pub(super) async fn misses(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let session = state
        .store
        .get(&id)
        .await
        .map_err(|err| store_error("", err))?;
    let (misses, dropped) = match state.store.redis() {
        None => {
            let (misses, dropped) = session.misses.snapshot();
            (json!(misses), dropped)
        }
        Some(redis) => {
            let (misses, dropped) = redis
                .misses(&id)
                .await
                .map_err(|err| store_error("", err))?;
            (json!(misses), dropped)
        }
    };
    Ok(Json(json!({
        "sessionId": session.id(),
        "misses": misses,
        "dropped": dropped,
    })))
}

/// `?out=` of a close request.
#[derive(Deserialize)]
pub(super) struct CloseQuery {
    #[serde(default)]
    out: Option<String>,
}

/// `POST /v1/sessions/{id}/close`: writes a capture session's case, then forgets the session.
/// The body is ignored (clients send nothing, or `{}`).
pub(super) async fn close(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<CloseQuery>,
) -> Result<Json<Value>, ApiError> {
    let session: Arc<Session> = state
        .store
        .get(&id)
        .await
        .map_err(|err| store_error("", err))?;
    let closing = Closing::Request { out: query.out };
    match capture::close(&state, session, closing).await {
        Ok(path) => {
            tracing::debug!(session_id = id, "Session closed.");
            let mut body = json!({"sessionId": id, "closed": true});
            if let Some(path) = path {
                body["capturePath"] = json!(path.display().to_string());
            }
            Ok(Json(body))
        }
        Err(CloseError::AlreadyClosed | CloseError::InUse) => Err(ApiError::unknown_session()),
        Err(CloseError::Write(err)) if err.is_refused_path() => Err(ApiError::invalid_request(
            format!("{err}; the session stays open"),
        )),
        Err(err @ CloseError::Write(_)) => Err(ApiError::internal(format!(
            "{err}; the session stays open: fix the path or permissions and close again"
        ))),
        Err(CloseError::Store(err)) => Err(store_error("", err)),
    }
}

/// `GET /v1/captures/{id}`: the case of a capture session: as written, once closed; as
/// buffered so far, while it is open. A written case is streamed from its file, and only if
/// the file is still the one this runtime wrote.
pub(super) async fn capture(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let not_found = || {
        ApiError::new(
            axum::http::StatusCode::NOT_FOUND,
            "unknown_session",
            format!(
                "no capture for {id}: not a capture session, or closed too long ago to be remembered"
            ),
        )
    };
    let live = match state.store.cached(&id).await {
        Ok(session) => Some(session),
        Err(StoreError::UnknownSession) => None,
        Err(err) => return Err(store_error("", err)),
    };
    if let Some(session) = live {
        let captured = match (state.store.redis(), &session.capture) {
            (_, None) => return Err(not_found()),
            (None, Some(buffer)) => buffer.contents(),
            (Some(redis), Some(_)) => redis
                .peek(&id)
                .await
                .map_err(|err| store_error("", err))?
                .ok_or_else(not_found)?,
        };
        // The case is rendered in memory from the buffer, at about this many times its size:
        // held against the in-flight budget, rendered off the async workers.
        const RENDER_FACTOR: usize = 4;
        let held = state
            .inflight
            .acquire(captured.bytes.saturating_mul(RENDER_FACTOR))
            .map_err(|over| ApiError::over_budget(&over))?;
        let rendered = tokio::task::spawn_blocking(move || {
            let loaded = session.snapshot().case.clone();
            let case = softprobe_pipeline::capture::case_document(
                session.id(),
                std::time::SystemTime::now(),
                &captured,
                loaded.as_deref(),
            );
            serde_json::to_vec(&case)
        })
        .await
        .map_err(|err| ApiError::internal(format!("rendering the capture failed: {err}")))?
        .map_err(|err| ApiError::internal(format!("rendering the capture failed: {err}")))?;
        drop(held);
        return Ok(json_response(rendered.into()));
    }
    let Some(written) = state.captures.case_of(&id) else {
        // Written by another replica: Redis keeps it for --store-case-ttl.
        let redis = state.store.redis().ok_or_else(not_found)?;
        let case = redis
            .written_case(&id)
            .await
            .map_err(|err| store_error("", err))?
            .ok_or_else(not_found)?;
        return Ok(json_response(case.into()));
    };
    let unreadable = |err: std::io::Error| {
        ApiError::internal(format!(
            "cannot read the capture at {}: {err}",
            written.path.display()
        ))
    };
    let file = tokio::fs::File::open(&written.path)
        .await
        .map_err(unreadable)?;
    let meta = file.metadata().await.map_err(unreadable)?;
    if !written.is(&meta) {
        return Err(ApiError::new(
            axum::http::StatusCode::GONE,
            "capture_changed",
            format!(
                "the capture of {id} at {} was replaced or changed after the runtime wrote it",
                written.path.display()
            ),
        ));
    }
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    Ok(json_response(body))
}

fn json_response(body: axum::body::Body) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}
