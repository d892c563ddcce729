//! The raw request body, with size and read failures answered in the API's error envelope.

use super::error::ApiError;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use bytes::Bytes;

/// The whole request body, read up to the router's body limit.
pub struct RawBody(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for RawBody {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(req, state)
            .await
            .map(RawBody)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "request body exceeds the runtime's body limit; raise --max-body-bytes \
                     (SOFTPROBE_MAX_BODY_BYTES) or send less",
                    )
                } else {
                    ApiError::invalid_request(format!("cannot read the request body: {rejection}"))
                }
            })
    }
}
