//! The commands' runtime client is the SDK's [`Softprobe`]: built here from `--runtime-url` and
//! `--api-token`, logging each call under `--verbose`, its errors mapped to exit codes.

use super::{CliError, exit};
use crate::cli::ClientArgs;
use reqwest::StatusCode;
use softprobe_sdk::{Call, Error, Softprobe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// `--verbose`: every runtime call is logged to stderr. Set once, before the command runs,
/// so the commands need not thread the flag through to each client they build.
static LOG_CALLS: AtomicBool = AtomicBool::new(false);

/// Turns the per-call log on or off (`--verbose`).
pub(crate) fn log_calls(on: bool) {
    LOG_CALLS.store(on, Ordering::Relaxed);
}

/// Logs one finished call to stderr when `--verbose` is on: method, URL, status (or the
/// transport error) and time taken.
pub(crate) fn log_call(method: &str, url: &str, outcome: &str, elapsed: Duration) {
    if LOG_CALLS.load(Ordering::Relaxed) {
        let elapsed = elapsed.as_secs_f64() * 1000.0;
        super::write_out(
            &mut std::io::stderr(),
            format!("{method} {url} → {outcome} ({elapsed:.1} ms)\n").as_bytes(),
        );
    }
}

/// A client for `--runtime-url` with `--api-token`; `timeout` bounds each call.
pub(crate) fn connect(args: &ClientArgs, timeout: Duration) -> Result<Softprobe, CliError> {
    let client = Softprobe::new(&args.runtime_url, args.api_token.as_deref())?;
    Ok(client.with_timeout(timeout).on_call(|call: &Call<'_>| {
        let outcome = match call.outcome {
            Ok(status) => status_text(status),
            Err(err) => format!("error: {}", error_chain(err)),
        };
        log_call(call.method, call.url, &outcome, call.elapsed);
    }))
}

/// `200 OK`: a status as the runtime's answers are described.
pub(crate) fn status_text(status: u16) -> String {
    StatusCode::from_u16(status).map_or_else(|_| status.to_string(), |s| s.to_string())
}

/// The one mapping from the client's failures to the CLI's exit codes and hints.
impl From<Error> for CliError {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidUrl { url, .. } => CliError::new(
                exit::USAGE,
                "invalid_url",
                format!(
                    "--runtime-url {:?} is not an http:// or https:// URL",
                    url.trim().trim_end_matches('/')
                ),
                "pass e.g. --runtime-url http://127.0.0.1:8080",
            ),
            Error::Unreachable { url, source } => {
                let why = if source.is_timeout() {
                    "timed out".to_owned()
                } else {
                    error_chain(&source)
                };
                CliError::new(
                    exit::UNREACHABLE,
                    "runtime_unreachable",
                    format!("cannot reach the runtime at {url}: {why}"),
                    "start it with `softprobe serve`, or point --runtime-url / SOFTPROBE_RUNTIME_URL at it",
                )
            }
            Error::UnknownSession { message, .. } => CliError::new(
                exit::UNKNOWN_SESSION,
                "unknown_session",
                message,
                "the session was closed, expired or never existed: start one with `softprobe session start`",
            ),
            Error::Unauthorized { message, .. } => CliError::new(
                exit::GENERIC,
                "auth_required",
                message,
                "set SOFTPROBE_API_TOKEN (or --api-token) to the runtime's token",
            ),
            Error::InvalidRequest { message } => CliError::new(
                exit::VALIDATION,
                "invalid_request",
                message,
                "fix the document; `softprobe validate` shows where",
            ),
            Error::Runtime {
                status, message, ..
            } => CliError::new(
                exit::GENERIC,
                "runtime_error",
                format!("{message} ({})", status_text(status)),
                "see the runtime's log",
            ),
            Error::InvalidResponse { url, .. } => CliError::new(
                exit::GENERIC,
                "invalid_response",
                format!("the runtime at {url} answered 200 without a JSON body"),
                "check that --runtime-url points at a Softprobe runtime",
            ),
            // Case lookups and files: the commands send documents as given, so these are the
            // suite's, which words them itself.
            other => CliError::new(exit::GENERIC, "client_error", other.to_string(), ""),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sdk_errors_map_to_the_exit_code_table() {
        let cases = [
            (
                Error::InvalidUrl {
                    url: " ftp://host/ ".into(),
                    message: String::new(),
                },
                exit::USAGE,
                "invalid_url",
                r#"--runtime-url "ftp://host" is not an http:// or https:// URL"#,
            ),
            (
                Error::UnknownSession {
                    id: "sess_1".into(),
                    status: 404,
                    message: "unknown session".into(),
                },
                exit::UNKNOWN_SESSION,
                "unknown_session",
                "unknown session",
            ),
            (
                Error::InvalidRequest {
                    message: "rules[0]: bad".into(),
                },
                exit::VALIDATION,
                "invalid_request",
                "rules[0]: bad",
            ),
            (
                Error::Unauthorized {
                    status: 401,
                    message: "missing bearer token".into(),
                },
                exit::GENERIC,
                "auth_required",
                "missing bearer token",
            ),
            (
                Error::Runtime {
                    status: 503,
                    code: "over_budget".into(),
                    message: "full".into(),
                },
                exit::GENERIC,
                "runtime_error",
                "full (503 Service Unavailable)",
            ),
        ];
        for (err, exit, code, message) in cases {
            let mapped = CliError::from(err);
            assert_eq!(
                (mapped.exit, mapped.code, mapped.message.as_str()),
                (exit, code, message)
            );
        }
    }
}
