//! Bearer-token auth, one check for both listeners: a `tower_http` request validator that the
//! HTTP stack and the gRPC stack each wrap around every route, answering in their own protocol.

use crate::api::error::ApiError;
use axum::http::{HeaderMap, Request, Response, StatusCode, header};
use axum::response::IntoResponse as _;
use std::marker::PhantomData;
use std::sync::Arc;
use tower_http::validate_request::{ValidateRequest, ValidateRequestHeaderLayer};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    /// No `Authorization: Bearer …` (HTTP 401, gRPC `UNAUTHENTICATED`).
    Missing,
    /// A token that is not the configured one (HTTP 403, gRPC `PERMISSION_DENIED`).
    Wrong,
}

/// The configured token, compared in constant time.
#[derive(Debug, Clone)]
pub struct Token(Arc<str>);

impl Token {
    /// The token from `--api-token`; blank means auth is off.
    pub fn from_setting(setting: Option<&str>) -> Option<Self> {
        setting
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(|t| Self(t.into()))
    }

    /// Checks the `authorization` header (HTTP) or metadata (gRPC, the same header).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), AuthFailure> {
        use subtle::ConstantTimeEq as _;
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.trim().strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(AuthFailure::Missing)?;
        // Constant-time in the content: only the length can be learnt from timing.
        match bool::from(presented.as_bytes().ct_eq(self.0.as_bytes())) {
            true => Ok(()),
            false => Err(AuthFailure::Wrong),
        }
    }
}

/// How one protocol scopes and refuses auth.
pub trait Protocol: Send + Sync + 'static {
    /// The response body type of the protocol's stack.
    type Body: Send;
    /// Whether this path needs the token.
    fn guarded(path: &str) -> bool;
    /// The protocol's answer to a refused request.
    fn refuse(failure: AuthFailure) -> Response<Self::Body>;
}

/// The HTTP listener: everything under `/v1/` (the control API and OTLP/HTTP); health,
/// metrics and the OpenAPI document stay open. Refusals use the API's error envelope.
#[derive(Debug)]
pub struct Http;

impl Protocol for Http {
    type Body = axum::body::Body;

    fn guarded(path: &str) -> bool {
        path.starts_with(crate::routes::GUARDED_PREFIX)
    }

    fn refuse(failure: AuthFailure) -> Response<Self::Body> {
        match failure {
            AuthFailure::Missing => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_bearer_token",
                "missing bearer token: send Authorization: Bearer <SOFTPROBE_API_TOKEN>",
            ),
            AuthFailure::Wrong => ApiError::new(
                StatusCode::FORBIDDEN,
                "invalid_bearer_token",
                "invalid bearer token: send the token the runtime was started with (--api-token)",
            ),
        }
        .into_response()
    }
}

/// The gRPC listener: every service but server reflection, which stays open as the OpenAPI
/// document does (it describes the API, it serves no data). Refusals are gRPC statuses.
#[derive(Debug)]
pub struct Grpc;

/// The path prefix of gRPC server reflection (v1 and v1alpha).
const REFLECTION_PREFIX: &str = "/grpc.reflection.";

impl Protocol for Grpc {
    type Body = tonic::body::Body;

    fn guarded(path: &str) -> bool {
        !path.starts_with(REFLECTION_PREFIX)
    }

    fn refuse(failure: AuthFailure) -> Response<Self::Body> {
        match failure {
            AuthFailure::Missing => tonic::Status::unauthenticated(
                "missing bearer token: send metadata authorization: Bearer <SOFTPROBE_API_TOKEN>",
            ),
            AuthFailure::Wrong => tonic::Status::permission_denied(
                "invalid bearer token: send the token the runtime was started with (--api-token)",
            ),
        }
        .into_http()
    }
}

/// The validator `tower_http` runs before every request of one listener.
pub struct RequireToken<P> {
    token: Token,
    protocol: PhantomData<fn() -> P>,
}

impl<P> Clone for RequireToken<P> {
    fn clone(&self) -> Self {
        Self {
            token: self.token.clone(),
            protocol: PhantomData,
        }
    }
}

impl<P: Protocol, B> ValidateRequest<B> for RequireToken<P> {
    type ResponseBody = P::Body;

    fn validate(&mut self, request: &mut Request<B>) -> Result<(), Response<P::Body>> {
        if !P::guarded(request.uri().path()) {
            return Ok(());
        }
        self.token.check(request.headers()).map_err(P::refuse)
    }
}

/// The auth layer of one listener, or `None` when no token is configured (an open runtime
/// pays nothing for it).
pub fn layer<P: Protocol>(
    token: Option<&Token>,
) -> Option<ValidateRequestHeaderLayer<RequireToken<P>>> {
    token.map(|token| {
        ValidateRequestHeaderLayer::custom(RequireToken {
            token: token.clone(),
            protocol: PhantomData,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: Option<&str>) -> HeaderMap {
        let mut headers = HeaderMap::new();
        if let Some(value) = value {
            headers.insert(header::AUTHORIZATION, value.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn tokens_are_checked_exactly() {
        let token = Token::from_setting(Some(" s3cret ")).expect("token");
        assert_eq!(token.check(&headers(Some("Bearer s3cret"))), Ok(()));
        assert_eq!(token.check(&headers(Some(" Bearer  s3cret "))), Ok(()));
        assert_eq!(token.check(&headers(None)), Err(AuthFailure::Missing));
        assert_eq!(
            token.check(&headers(Some("Basic s3cret"))),
            Err(AuthFailure::Missing)
        );
        assert_eq!(
            token.check(&headers(Some("Bearer "))),
            Err(AuthFailure::Missing)
        );
        for wrong in ["Bearer s3cre", "Bearer s3cret2", "Bearer S3CRET"] {
            assert_eq!(token.check(&headers(Some(wrong))), Err(AuthFailure::Wrong));
        }
        assert!(Token::from_setting(Some("  ")).is_none());
    }

    #[test]
    fn scopes_per_protocol() {
        assert!(Http::guarded("/v1/inject") && !Http::guarded("/health"));
        assert!(Grpc::guarded("/softprobe.v1.InjectService/Inject"));
        assert!(!Grpc::guarded(
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"
        ));
    }
}
