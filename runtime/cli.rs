//! Command-line definitions of the `softprobe` binary.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Softprobe: capture and replay HTTP traffic for integration tests.
#[derive(Debug, Parser)]
#[command(name = "softprobe", version, about, propagate_version = true)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the runtime: control API, OTLP receivers and session store.
    Serve(ServeArgs),
}

/// `softprobe serve` flags. Each can also come from the environment.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// HTTP address: control API, `/v1/inject`, `/v1/traces`, health, metrics.
    #[arg(long, env = "SOFTPROBE_LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// gRPC address: OTLP `TraceService/Export` and Softprobe's inject RPC.
    #[arg(
        long,
        env = "SOFTPROBE_GRPC_LISTEN_ADDR",
        default_value = "127.0.0.1:4317"
    )]
    pub grpc_listen: SocketAddr,
    /// Directory for capture cases when neither `?out=` nor SOFTPROBE_CAPTURE_CASE_PATH is set.
    #[arg(long, env = "SOFTPROBE_CAPTURE_DIR", default_value = "captures")]
    pub capture_dir: PathBuf,
    /// Capture case path template: `{sessionId}`, `{ts}`, `{mode}`; a path or `file://` URL.
    #[arg(long, env = "SOFTPROBE_CAPTURE_CASE_PATH")]
    pub capture_case_path: Option<String>,
    /// Bearer token required on `/v1/*` (health and metrics stay open). Unset: no auth.
    #[arg(long, env = "SOFTPROBE_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// Largest request body accepted, in bytes; larger bodies get 413.
    #[arg(long, env = "SOFTPROBE_MAX_BODY_BYTES", default_value_t = 32 * 1024 * 1024)]
    pub max_body_bytes: usize,
    /// Live sessions at most; creating one more gets 429.
    #[arg(long, env = "SOFTPROBE_MAX_SESSIONS", default_value_t = 10_000)]
    pub max_sessions: usize,
    /// A session unused for this long is closed (a capture session's case is written first).
    #[arg(long, env = "SOFTPROBE_SESSION_IDLE_TIMEOUT", default_value = "1h", value_parser = humantime::parse_duration)]
    pub session_idle_timeout: Duration,
    /// Spans a capture session keeps; more are dropped, counted and mark the case incomplete.
    #[arg(long, env = "SOFTPROBE_CAPTURE_MAX_SPANS", default_value_t = 50_000)]
    pub capture_max_spans: usize,
    /// Bytes of span JSON a capture session keeps; more are dropped and counted likewise.
    #[arg(long, env = "SOFTPROBE_CAPTURE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub capture_max_bytes: usize,
}

/// The tracing filter: `RUST_LOG` when set, else `SOFTPROBE_LOG_LEVEL` (`debug`, `info`,
/// `warn`/`warning`, `error`; case-insensitive; anything else means `info`).
pub fn log_filter(rust_log: Option<&str>, softprobe_level: Option<&str>) -> String {
    if let Some(filter) = rust_log.map(str::trim).filter(|f| !f.is_empty()) {
        return filter.to_owned();
    }
    let level = softprobe_level.unwrap_or("").trim().to_ascii_lowercase();
    match level.as_str() {
        "debug" | "trace" | "error" => level,
        "warn" | "warning" => "warn".to_owned(),
        _ => "info".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_levels() {
        assert_eq!(log_filter(None, Some(" DEBUG ")), "debug");
        assert_eq!(log_filter(None, Some("warning")), "warn");
        assert_eq!(log_filter(None, Some("loud")), "info");
        assert_eq!(log_filter(None, None), "info");
        assert_eq!(
            log_filter(Some("softprobe=trace"), Some("error")),
            "softprobe=trace"
        );
    }
}
