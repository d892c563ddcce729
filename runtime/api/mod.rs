//! The HTTP API on the `--listen` address: the JSON control API, health, metadata, metrics and
//! the OpenAPI document. (The OTLP data-plane routes join it from `otlp`.)

mod body;
pub mod error;
mod sessions;

use crate::routes;
use crate::state::AppState;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, Uri, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use error::ApiError;
use serde_json::json;

pub use body::RawBody;

/// `specVersion` of the control API; the official CLI refuses any other value.
pub const SPEC_VERSION: &str = "http-control-api@v1";
/// `schemaVersion` of the control API.
pub const SCHEMA_VERSION: &str = "1";
/// This runtime's version.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The OpenAPI document served at `/openapi.json`.
pub const OPENAPI_JSON: &str = include_str!("../openapi.json");

/// Every (method, path) the HTTP API serves (see [`routes::ALL`]).
pub use crate::routes::ALL as ROUTES;

/// The HTTP API router. `extra_v1` (the OTLP routes) is merged in. Auth wraps it, in the
/// server's stack.
pub fn router(state: AppState, extra_v1: Router<AppState>) -> Router {
    let control = Router::new()
        .route(routes::META, get(meta))
        .route(routes::SESSIONS, post(sessions::create).get(sessions::list))
        .route(routes::LOAD_CASE, post(sessions::load_case))
        .route(routes::RULES, post(sessions::rules))
        .route(routes::POLICY, post(sessions::policy))
        .route(routes::FIXTURES, post(sessions::fixtures))
        .route(routes::STATS, get(sessions::stats))
        .route(routes::STATE, get(sessions::session_state))
        .route(routes::MISSES, get(sessions::misses))
        .route(routes::CLOSE, post(sessions::close))
        .route(routes::CAPTURE, get(sessions::capture))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_control_request,
        ));
    let open = Router::new()
        .route(routes::HEALTH, get(health))
        .route(routes::READY, get(ready))
        .route(routes::METRICS, get(metrics))
        .route(routes::OPENAPI, get(openapi));
    Router::new()
        .merge(open)
        .merge(control)
        .merge(extra_v1)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Live whatever the store does (readiness is `/ready`); says which store sessions live in.
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "specVersion": SPEC_VERSION,
        "schemaVersion": SCHEMA_VERSION,
        "runtimeVersion": RUNTIME_VERSION,
        "store": store_kind(&state),
    }))
}

fn store_kind(state: &AppState) -> &'static str {
    match state.store.redis() {
        None => "memory",
        Some(_) => "redis",
    }
}

/// Ready while the session store answers: a load balancer routes around a replica that lost
/// its Redis, while `/health` keeps it alive.
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(redis) = state.store.redis() {
        redis
            .ping()
            .await
            .map_err(|err| error::store_error("", err))?;
    }
    Ok(Json(
        json!({"status": "ready", "store": store_kind(&state)}),
    ))
}

async fn meta() -> Json<serde_json::Value> {
    Json(json!({
        "runtimeVersion": RUNTIME_VERSION,
        "specVersion": SPEC_VERSION,
        "schemaVersion": SCHEMA_VERSION,
    }))
}

async fn metrics(State(state): State<AppState>) -> Response {
    let text = state
        .metrics
        .render(state.store.local(), &[&state.inflight]);
    let content_type = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
    ([(header::CONTENT_TYPE, content_type)], text).into_response()
}

async fn openapi() -> Response {
    let content_type = HeaderValue::from_static("application/json");
    ([(header::CONTENT_TYPE, content_type)], OPENAPI_JSON).into_response()
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route for {method} {}; the API is described at GET /openapi.json",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed on {}", uri.path()),
    )
}

async fn count_control_request(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .control_request(&route, response.status().as_u16());
    response
}
