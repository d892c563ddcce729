//! The control-API client the commands share: base URL, bearer token, error mapping.

use super::{CliError, exit};
use crate::cli::ClientArgs;
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

/// A client of one runtime's control API.
#[derive(Debug, Clone)]
pub struct RuntimeClient {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
}

impl RuntimeClient {
    /// A client for `--runtime-url` with `--api-token`; `timeout` bounds each call.
    pub fn new(args: &ClientArgs, timeout: Duration) -> Result<Self, CliError> {
        let base = args.runtime_url.trim().trim_end_matches('/').to_owned();
        if base.starts_with("https://") {
            return Err(CliError::new(
                exit::USAGE,
                "unsupported_url",
                format!("{base}: this build talks plain http only"),
                "reach the runtime over http (e.g. through a local port-forward)",
            ));
        }
        if !base.starts_with("http://") {
            return Err(CliError::new(
                exit::USAGE,
                "invalid_url",
                format!("--runtime-url {base:?} is not an http:// URL"),
                "pass e.g. --runtime-url http://127.0.0.1:8080",
            ));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|err| CliError::new(exit::GENERIC, "client_error", err.to_string(), ""))?;
        let token = args
            .api_token
            .as_deref()
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned);
        Ok(Self { base, token, http })
    }

    /// The runtime's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        }
    }

    /// Sends a request and returns the status and body, mapping transport failures to exit 3.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Vec<u8>), CliError> {
        let mut request = self.request(method, path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|err| self.unreachable(err))?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|err| self.unreachable(err))?;
        Ok((status, bytes.to_vec()))
    }

    fn unreachable(&self, err: reqwest::Error) -> CliError {
        let why = if err.is_timeout() {
            "timed out".to_owned()
        } else {
            error_chain(&err)
        };
        CliError::new(
            exit::UNREACHABLE,
            "runtime_unreachable",
            format!("cannot reach the runtime at {}: {why}", self.base),
            "start it with `softprobe serve`, or point --runtime-url / SOFTPROBE_RUNTIME_URL at it",
        )
    }

    /// `GET path` → JSON, with API errors mapped to exit codes.
    pub async fn get(&self, path: &str) -> Result<Value, CliError> {
        let (status, body) = self.send(reqwest::Method::GET, path, None).await?;
        self.json(status, &body)
    }

    /// `POST path` with an optional JSON body → JSON, with API errors mapped to exit codes.
    pub async fn post(&self, path: &str, body: Option<Vec<u8>>) -> Result<Value, CliError> {
        let (status, bytes) = self.send(reqwest::Method::POST, path, body).await?;
        self.json(status, &bytes)
    }

    fn json(&self, status: StatusCode, body: &[u8]) -> Result<Value, CliError> {
        let value: Option<Value> = serde_json::from_slice(body).ok();
        if status == StatusCode::OK {
            return value.ok_or_else(|| {
                CliError::new(
                    exit::GENERIC,
                    "invalid_response",
                    format!(
                        "the runtime at {} answered 200 without a JSON body",
                        self.base
                    ),
                    "check that --runtime-url points at a Softprobe runtime",
                )
            });
        }
        Err(api_error(status, value.as_ref()))
    }
}

/// Maps a runtime error answer to the CLI's exit codes.
pub(crate) fn api_error(status: StatusCode, body: Option<&Value>) -> CliError {
    let code = body
        .and_then(|b| b["error"]["code"].as_str())
        .unwrap_or_default();
    let message = body
        .and_then(|b| {
            b["error"]["message"]
                .as_str()
                .or_else(|| b["error"].as_str())
        })
        .map(str::to_owned)
        .unwrap_or_else(|| format!("the runtime answered {status}"));
    match (status, code) {
        (StatusCode::NOT_FOUND, "unknown_session") => CliError::new(
            exit::UNKNOWN_SESSION,
            "unknown_session",
            message,
            "the session was closed, expired or never existed: start one with `softprobe session start`",
        ),
        (StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN, _) => CliError::new(
            exit::GENERIC,
            "auth_required",
            message,
            "set SOFTPROBE_API_TOKEN (or --api-token) to the runtime's token",
        ),
        (StatusCode::BAD_REQUEST, _) => CliError::new(
            exit::VALIDATION,
            "invalid_request",
            message,
            "fix the document; `softprobe validate` shows where",
        ),
        _ => CliError::new(
            exit::GENERIC,
            "runtime_error",
            format!("{message} ({status})"),
            "see the runtime's log",
        ),
    }
}

/// An error with its sources, for messages that say why (connection refused, …).
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(inner) = source {
        let inner_text = inner.to_string();
        if !text.contains(&inner_text) {
            text.push_str(": ");
            text.push_str(&inner_text);
        }
        source = inner.source();
    }
    text
}
