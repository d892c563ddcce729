//! The one mapping from failures to the JSON control API's wire: `{"error":{"code","message"}}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use softprobe_pipeline::budget::OverBudget;
use softprobe_pipeline::store::StoreError;

/// An error answered with the JSON envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// What went wrong and what to do about it.
    pub message: String,
    /// Seconds a client should wait before retrying (`Retry-After`), for refusals that pass.
    pub retry_after: Option<u32>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// 503 `store_unavailable` with `Retry-After`: the shared session store did not answer.
    pub fn store_unavailable(reason: &str) -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the session store is unavailable ({reason}); retry shortly"),
            )
        }
    }

    /// 503 `over_budget` with `Retry-After`: a memory budget is exhausted for now.
    pub fn over_budget(err: &OverBudget) -> Self {
        Self {
            retry_after: Some(RETRY_AFTER_SECONDS),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "over_budget",
                err.to_string(),
            )
        }
    }

    /// 400 `invalid_request`.
    pub fn invalid_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }

    /// 404 `unknown_session`.
    pub fn unknown_session() -> Self {
        Self::new(StatusCode::NOT_FOUND, "unknown_session", "unknown session")
    }

    /// 500 `internal_error`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
    }
}

/// What `Retry-After` says when a budget is exhausted: requests in flight finish within it.
pub const RETRY_AFTER_SECONDS: u32 = 1;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(axum::http::header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Maps a store failure; `context` prefixes document errors the way the reference words them
/// (`invalid control payload: rules[0].then.action: …`).
pub fn store_error(context: &str, err: StoreError) -> ApiError {
    match err {
        StoreError::UnknownSession => ApiError::unknown_session(),
        StoreError::TooManySessions { .. } => ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_sessions",
            err.to_string(),
        ),
        StoreError::InvalidDocument(document) => {
            ApiError::invalid_request(format!("{context}: {document}"))
        }
        StoreError::OverBudget(over) => ApiError::over_budget(&over),
        StoreError::Unavailable(reason) => ApiError::store_unavailable(&reason),
    }
}
