//! The control-API client the commands share: base URL, bearer token, error mapping.

use super::{CliError, exit};
use crate::cli::ClientArgs;
use reqwest::StatusCode;
use serde_json::Value;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// `--verbose`: every runtime call is logged to stderr. Set once, before the command runs,
/// so the commands need not thread the flag through to each client they build.
static LOG_CALLS: AtomicBool = AtomicBool::new(false);

/// Turns the per-call log on or off (`--verbose`).
pub(crate) fn log_calls(on: bool) {
    LOG_CALLS.store(on, Ordering::Relaxed);
}

/// Logs one finished call to stderr when `--verbose` is on: method, URL, status (or the
/// transport error) and time taken.
pub(crate) fn log_call(method: &str, url: &str, outcome: &str, started: Instant) {
    if LOG_CALLS.load(Ordering::Relaxed) {
        let elapsed = started.elapsed().as_secs_f64() * 1000.0;
        super::write_out(
            &mut std::io::stderr(),
            format!("{method} {url} → {outcome} ({elapsed:.1} ms)\n").as_bytes(),
        );
    }
}

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
        let valid = reqwest::Url::parse(&base)
            .is_ok_and(|url| matches!(url.scheme(), "http" | "https") && url.has_host());
        if !valid {
            return Err(CliError::new(
                exit::USAGE,
                "invalid_url",
                format!("--runtime-url {base:?} is not an http:// or https:// URL"),
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
        let url = format!("{}{path}", self.base);
        let mut request = self.request(method.clone(), path);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let started = Instant::now();
        let answer = async {
            let response = request.send().await?;
            let status = response.status();
            Ok::<_, reqwest::Error>((status, response.bytes().await?))
        }
        .await;
        match answer {
            Ok((status, bytes)) => {
                log_call(method.as_str(), &url, &status.to_string(), started);
                Ok((status, bytes.to_vec()))
            }
            Err(err) => {
                let outcome = format!("error: {}", error_chain(&err));
                log_call(method.as_str(), &url, &outcome, started);
                Err(self.unreachable(err))
            }
        }
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
