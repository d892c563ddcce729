//! The raw request body, read up to `--max-body-bytes`, with size and read failures answered in
//! the API's error envelope.

use super::error::ApiError;
use crate::inflight::BodyOverBudget;
use crate::state::AppState;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;
use http_body_util::LengthLimitError;

/// The whole request body, at most `--max-body-bytes` long.
pub struct RawBody(pub Bytes);

impl FromRequest<AppState> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.settings.max_body_bytes;
        let err = match axum::body::to_bytes(req.into_body(), limit).await {
            Ok(bytes) => return Ok(RawBody(bytes)),
            Err(err) => err,
        };
        if let Some(over) = cause::<BodyOverBudget>(&err) {
            return Err(ApiError::over_budget(&over.over));
        }
        match err {
            err if cause::<LengthLimitError>(&err).is_some() => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "request body exceeds the runtime's body limit of {limit} bytes; raise \
                     --max-body-bytes (SOFTPROBE_MAX_BODY_BYTES) or send less"
                ),
            )),
            err => Err(ApiError::invalid_request(format!(
                "cannot read the request body: {err}"
            ))),
        }
    }
}

/// The first error of type `T` in `err`'s chain of causes.
fn cause<T: std::error::Error + 'static>(err: &axum::Error) -> Option<&T> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = cause {
        if let Some(found) = error.downcast_ref::<T>() {
            return Some(found);
        }
        cause = error.source();
    }
    None
}
