//! The connection to one runtime: base URL, bearer token, and the mapping of answers to
//! [`Error`]s.

use crate::error::{Error, Result};
use crate::report::{Health, RuntimeInfo, SessionSummary};
use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// The URL as given, for messages: trimmed, without trailing slashes.
    display: String,
    token: Option<String>,
    timeout: Duration,
    http: reqwest::Client,
    on_call: Option<Arc<CallObserver>>,
}

/// What [`Softprobe::on_call`] is given.
type CallObserver = dyn Fn(&Call<'_>) + Send + Sync;

/// One finished call to the runtime, as [`Softprobe::on_call`] sees it.
#[derive(Debug)]
#[non_exhaustive]
pub struct Call<'a> {
    /// The HTTP method (`GET`, `POST`).
    pub method: &'a str,
    /// The full URL called.
    pub url: &'a str,
    /// The answer's HTTP status, or the transport error that kept it from arriving.
    pub outcome: std::result::Result<u16, &'a reqwest::Error>,
    /// From sending the request to reading the whole answer.
    pub elapsed: Duration,
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
            display: url.trim().trim_end_matches('/').to_owned(),
            token,
            timeout: DEFAULT_TIMEOUT,
            http: reqwest::Client::new(),
            on_call: None,
        })
    }

    /// Bounds each call to `timeout` (default 30 s); a call past it fails as
    /// [`Error::Unreachable`].
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Calls `observer` after every call to the runtime, answered or not: to log them, or to
    /// count them in a test. Clones of this client share it.
    ///
    /// ```
    /// # fn main() -> softprobe_sdk::Result<()> {
    /// let softprobe = softprobe_sdk::Softprobe::new("http://127.0.0.1:8080", None)?.on_call(|call| {
    ///     eprintln!("{} {} -> {:?} in {:?}", call.method, call.url, call.outcome, call.elapsed);
    /// });
    /// # let _ = softprobe;
    /// # Ok(())
    /// # }
    /// ```
    pub fn on_call(mut self, observer: impl Fn(&Call<'_>) + Send + Sync + 'static) -> Self {
        self.on_call = Some(Arc::new(observer));
        self
    }

    /// The runtime's base URL, as given (without surrounding blanks or trailing slashes).
    pub fn url(&self) -> &str {
        &self.display
    }

    /// Whether the runtime is up (`GET /health`, which needs no token).
    pub async fn health(&self) -> Result<Health> {
        self.call_json(Method::GET, self.endpoint(&["health"]), None, None)
            .await
    }

    /// Which runtime answers and which API it speaks (`GET /v1/meta`). It needs the token, so
    /// it also tells whether the runtime accepts this client's.
    pub async fn meta(&self) -> Result<RuntimeInfo> {
        self.call_json(Method::GET, self.endpoint(&["v1", "meta"]), None, None)
            .await
    }

    /// Every live session, ordered by id (`GET /v1/sessions`).
    pub async fn sessions(&self) -> Result<Vec<SessionSummary>> {
        #[derive(Deserialize)]
        struct Listed {
            sessions: Vec<SessionSummary>,
        }
        let listed: Listed = self
            .call_json(Method::GET, self.endpoint(&["v1", "sessions"]), None, None)
            .await?;
        Ok(listed.sessions)
    }

    /// `METHOD url` with an optional JSON body; the answer's body on success.
    /// `session` names the session the call is about, for [`Error::UnknownSession`].
    pub(crate) async fn call(
        &self,
        method: Method,
        url: Url,
        body: Option<reqwest::Body>,
        session: Option<&str>,
    ) -> Result<(Url, Bytes)> {
        let mut request = self
            .http
            .request(method.clone(), url.clone())
            .timeout(self.timeout);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let started = Instant::now();
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            Ok((status, response.bytes().await?))
        }
        .await;
        if let Some(observer) = &self.on_call {
            observer(&Call {
                method: method.as_str(),
                url: url.as_str(),
                outcome: answer.as_ref().map(|(status, _)| status.as_u16()),
                elapsed: started.elapsed(),
            });
        }
        let (status, bytes) = answer.map_err(|source| Error::Unreachable {
            url: self.url().to_owned(),
            source,
        })?;
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
        url: Url,
        body: Option<reqwest::Body>,
        session: Option<&str>,
    ) -> Result<T> {
        let (url, bytes) = self.call(method, url, body, session).await?;
        serde_json::from_slice(&bytes).map_err(|err| Error::InvalidResponse {
            url: url.to_string(),
            message: err.to_string(),
        })
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment.
    pub(crate) fn endpoint(&self, segments: &[&str]) -> Url {
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
            .field("on_call", &self.on_call.is_some())
            .finish()
    }
}

/// Maps an error answer to an [`Error`]. The message is the envelope's
/// (`{"error":{"code","message"}}`, or `{"error":"message"}` as some runtimes write it);
/// without one, `the runtime answered <status>`.
fn api_error(status: StatusCode, body: &[u8], session: Option<&str>) -> Error {
    let envelope: Option<Value> = serde_json::from_slice(body).ok();
    let error = envelope.as_ref().map(|e| &e["error"]);
    let code = error
        .and_then(|e| e["code"].as_str())
        .unwrap_or_default()
        .to_owned();
    let message = error
        .and_then(|e| e["message"].as_str().or_else(|| e.as_str()))
        .map_or_else(|| format!("the runtime answered {status}"), str::to_owned);
    match (status, code.as_str()) {
        (_, "unknown_session" | "session_not_found") => Error::UnknownSession {
            id: session.unwrap_or_default().to_owned(),
            status: status.as_u16(),
            message,
        },
        (StatusCode::BAD_REQUEST, _) => Error::InvalidRequest { message },
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => Error::Unauthorized {
            status: status.as_u16(),
            message,
        },
        _ => Error::Runtime {
            status: status.as_u16(),
            code,
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
            Error::UnknownSession { id, status: 404, message } if id == "sess_1" && message == "why"
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
            Error::Runtime { status: 502, code, message }
                if code.is_empty() && message == "the runtime answered 502 Bad Gateway"
        ));
        assert!(matches!(
            api_error(StatusCode::CONFLICT, br#"{"error":"taken"}"#, None),
            Error::Runtime { status: 409, message, .. } if message == "taken"
        ));
    }
}
