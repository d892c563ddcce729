//! The connection to one runtime: base URL, bearer token, and the mapping of answers to
//! [`Error`]s.

use crate::error::{Error, Result};
use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::fmt;
use std::time::Duration;

/// Where [`Softprobe::connect`] finds the runtime when the environment does not say.
pub const DEFAULT_RUNTIME_URL: &str = "http://127.0.0.1:8080";
/// The variable holding the runtime's base URL.
pub const RUNTIME_URL_ENV: &str = "SOFTPROBE_RUNTIME_URL";
/// The variable holding the runtime's bearer token.
pub const API_TOKEN_ENV: &str = "SOFTPROBE_API_TOKEN";
/// The header that ties a request to the app under test to a session.
pub const SESSION_HEADER: &str = "x-softprobe-session-id";
/// How long one call may take unless [`Softprobe::with_timeout`] says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A client of one Softprobe runtime's control API. Cloning is cheap and shares connections.
#[derive(Clone)]
pub struct Softprobe {
    base: Url,
    token: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
}

impl Softprobe {
    /// A client for `SOFTPROBE_RUNTIME_URL` (default `http://127.0.0.1:8080`), sending
    /// `SOFTPROBE_API_TOKEN` as its bearer token when set and not blank.
    pub fn connect() -> Result<Self> {
        let url = std::env::var(RUNTIME_URL_ENV).ok();
        let token = std::env::var(API_TOKEN_ENV).ok();
        Self::new(
            url.as_deref()
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .unwrap_or(DEFAULT_RUNTIME_URL),
            token.as_deref(),
        )
    }

    /// A client for the runtime at `url` (`http://host:port`, optionally with a path prefix),
    /// with an optional bearer token (a blank one means none).
    ///
    /// `https://` URLs need a TLS feature of `reqwest` enabled in your build (for example
    /// `rustls-tls`); this crate enables none.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self> {
        let invalid = |message: &str| Error::InvalidUrl {
            url: url.to_owned(),
            message: message.to_owned(),
        };
        let base = Url::parse(url.trim()).map_err(|err| invalid(&err.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(invalid("expected an http:// or https:// URL"));
        }
        if base.cannot_be_a_base() || base.host().is_none() {
            return Err(invalid("expected an http://host:port URL"));
        }
        let token = token
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Self {
            base,
            token,
            timeout: DEFAULT_TIMEOUT,
            http: reqwest::Client::new(),
        })
    }

    /// Bounds each call to `timeout` (default 30 s); a call past it fails as
    /// [`Error::Unreachable`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The runtime's base URL.
    pub fn url(&self) -> &str {
        self.base.as_str().trim_end_matches('/')
    }

    /// `METHOD base/segments…` with an optional JSON body; the answer's body on success.
    /// `session` names the session the call is about, for [`Error::UnknownSession`].
    pub(crate) async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<reqwest::Body>,
        session: Option<&str>,
    ) -> Result<(Url, Bytes)> {
        let url = self.endpoint(segments);
        let mut request = self.http.request(method, url.clone()).timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let unreachable = |source| Error::Unreachable {
            url: self.url().to_owned(),
            source,
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(unreachable)?;
        if status.is_success() {
            Ok((url, bytes))
        } else {
            Err(api_error(status, &bytes, session))
        }
    }

    /// [`call`](Self::call), with the answer read as JSON.
    pub(crate) async fn call_json<T: DeserializeOwned>(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<reqwest::Body>,
        session: Option<&str>,
    ) -> Result<T> {
        let (url, bytes) = self.call(method, segments, body, session).await?;
        serde_json::from_slice(&bytes).map_err(|err| Error::InvalidResponse {
            url: url.to_string(),
            message: err.to_string(),
        })
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    fn endpoint(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }
}

impl fmt::Debug for Softprobe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Softprobe")
            .field("url", &self.url())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Maps an error answer (`{"error":{"code","message"}}`) to an [`Error`].
fn api_error(status: StatusCode, body: &[u8], session: Option<&str>) -> Error {
    #[derive(Deserialize)]
    struct Envelope {
        error: Detail,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Detail {
        code: String,
        message: String,
    }
    let detail = serde_json::from_slice::<Envelope>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| Detail {
            message: String::from_utf8_lossy(body).chars().take(512).collect(),
            ..Detail::default()
        });
    let message = if detail.message.is_empty() {
        format!("the runtime answered {status}")
    } else {
        detail.message
    };
    match (status, detail.code.as_str()) {
        (_, "unknown_session" | "session_not_found") => Error::UnknownSession {
            id: session.unwrap_or_default().to_owned(),
            message,
        },
        (StatusCode::BAD_REQUEST, _) => Error::InvalidRequest { message },
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Error::Unauthorized {
            status: status.as_u16(),
            message,
        },
        _ => Error::Runtime {
            status: status.as_u16(),
            code: detail.code,
            message,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_the_url_and_trims_the_token() {
        let client = Softprobe::new(" http://127.0.0.1:9/prefix/ ", Some("  ")).unwrap();
        assert_eq!(client.url(), "http://127.0.0.1:9/prefix");
        assert_eq!(client.token, None);
        assert_eq!(
            client.endpoint(&["v1", "sessions", "a/b c"]).as_str(),
            "http://127.0.0.1:9/prefix/v1/sessions/a%2Fb%20c"
        );
        let root = Softprobe::new("http://localhost:8080", Some(" s3cr3t ")).unwrap();
        assert_eq!(root.token.as_deref(), Some("s3cr3t"));
        assert_eq!(
            root.endpoint(&["v1", "meta"]).as_str(),
            "http://localhost:8080/v1/meta"
        );
        assert!(!format!("{root:?}").contains("s3cr3t"));
        for bad in ["localhost:8080", "ftp://host", "mailto:a@b", ""] {
            assert!(
                matches!(Softprobe::new(bad, None), Err(Error::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn maps_the_error_envelope() {
        let envelope = |code: &str| format!(r#"{{"error":{{"code":"{code}","message":"why"}}}}"#);
        assert!(matches!(
            api_error(StatusCode::NOT_FOUND, envelope("unknown_session").as_bytes(), Some("sess_1")),
            Error::UnknownSession { id, message } if id == "sess_1" && message == "why"
        ));
        assert!(matches!(
            api_error(StatusCode::BAD_REQUEST, envelope("invalid_request").as_bytes(), None),
            Error::InvalidRequest { message } if message == "why"
        ));
        assert!(matches!(
            api_error(
                StatusCode::FORBIDDEN,
                envelope("invalid_bearer_token").as_bytes(),
                None
            ),
            Error::Unauthorized { status: 403, .. }
        ));
        assert!(matches!(
            api_error(StatusCode::SERVICE_UNAVAILABLE, envelope("over_budget").as_bytes(), None),
            Error::Runtime { status: 503, code, .. } if code == "over_budget"
        ));
        assert!(matches!(
            api_error(StatusCode::BAD_GATEWAY, b"upstream down", None),
            Error::Runtime { status: 502, code, message } if code.is_empty() && message == "upstream down"
        ));
    }
}
