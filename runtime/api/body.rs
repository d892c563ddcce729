//! The raw request body, read up to `--max-body-bytes`, with size and read failures answered in
//! the API's error envelope.

use super::error::ApiError;
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
        match axum::body::to_bytes(req.into_body(), limit).await {
            Ok(bytes) => Ok(RawBody(bytes)),
            Err(err) if exceeds_limit(&err) => Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                format!(
                    "request body exceeds the runtime's body limit of {limit} bytes; raise \
                     --max-body-bytes (SOFTPROBE_MAX_BODY_BYTES) or send less"
                ),
            )),
            Err(err) => Err(ApiError::invalid_request(format!(
                "cannot read the request body: {err}"
            ))),
        }
    }
}

fn exceeds_limit(err: &axum::Error) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(error) = cause {
        if error.is::<LengthLimitError>() {
            return true;
        }
        cause = error.source();
    }
    false
}
