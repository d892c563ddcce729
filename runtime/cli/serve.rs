//! `softprobe serve` flags and the log filter they set.

use clap::Args;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Bearer token required on `/v1/*` and every gRPC method (health, metrics, the OpenAPI
    /// document and gRPC reflection stay open). Unset: no auth.
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
    /// Span bytes (protobuf-encoded size) a capture session keeps; more are dropped likewise.
    #[arg(long, env = "SOFTPROBE_CAPTURE_MAX_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub capture_max_bytes: usize,
    /// Bytes of all capture buffers together; exports past it get 503 / UNAVAILABLE (retried).
    #[arg(long, env = "SOFTPROBE_MAX_CAPTURE_BYTES_TOTAL", default_value_t = 1024 * 1024 * 1024)]
    pub max_capture_bytes_total: usize,
    /// Bytes of all sessions' documents (rules, cases, policies, fixtures) as posted; writes
    /// past it get 503 with Retry-After.
    #[arg(long, env = "SOFTPROBE_MAX_DOCUMENT_BYTES_TOTAL", default_value_t = 256 * 1024 * 1024)]
    pub max_document_bytes_total: usize,
    /// Bytes of request bodies being received or processed at once, on both listeners;
    /// requests past it get 503 with Retry-After (gRPC UNAVAILABLE).
    #[arg(long, env = "SOFTPROBE_MAX_INFLIGHT_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub max_inflight_bytes: usize,
    /// Let a close request's `?out=` write anywhere the process may, not only inside
    /// --capture-dir (for a local, single-user runtime).
    #[arg(long, env = "SOFTPROBE_CAPTURE_OUT_ANYWHERE", value_parser = clap::builder::BoolishValueParser::new(), num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub capture_out_anywhere: bool,
    /// Open connections across both listeners; more are closed at once.
    #[arg(long, env = "SOFTPROBE_MAX_CONNECTIONS", default_value_t = 1000)]
    pub max_connections: usize,
    /// Time an HTTP/1.1 client has to send a request's headers, and to start its next request
    /// on a kept-alive connection (HTTP/2 and gRPC connections are bounded by the idle timeout).
    #[arg(long, env = "SOFTPROBE_HEADER_READ_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub header_read_timeout: Duration,
    /// A connection that moves no byte for this long is closed.
    #[arg(long, env = "SOFTPROBE_IDLE_CONNECTION_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_connection_timeout: Duration,
    /// On SIGTERM/SIGINT: open captures are written first, then in-flight requests get the rest
    /// of this time, then the process exits.
    #[arg(long, env = "SOFTPROBE_SHUTDOWN_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub shutdown_timeout: Duration,
    /// Worker threads serving connections, each with its own event loop; a connection's
    /// requests stay on one (default: one per CPU).
    #[arg(long, env = "SOFTPROBE_WORKERS")]
    pub workers: Option<NonZeroUsize>,
    /// Where sessions and captures live: `memory` (this process), or Redis shared by every
    /// runtime pointed at it: `redis://[:password@]host:port[/db]`, `rediss://…` (TLS), or
    /// `redis+cluster://host:port[,host:port…]`. A password may also come from
    /// SOFTPROBE_STORE_PASSWORD.
    #[arg(long, env = "SOFTPROBE_STORE_URL", default_value = "memory")]
    pub store: crate::redis_store::StoreUrl,
    /// With --store: how long a closed capture's case stays in Redis, fetchable from any
    /// replica (`GET /v1/captures/{id}`).
    #[arg(long, env = "SOFTPROBE_STORE_CASE_TTL", default_value = "1h", value_parser = humantime::parse_duration)]
    pub store_case_ttl: Duration,
}

impl ServeArgs {
    /// The settings from their environment variables alone, defaults for the rest: the
    /// runtime `softprobe proxy --serve-runtime` runs, whose command line is the proxy's.
    pub fn from_env() -> Result<Self, clap::Error> {
        #[derive(clap::Parser)]
        struct FromEnv {
            #[command(flatten)]
            serve: ServeArgs,
        }
        <FromEnv as clap::Parser>::try_parse_from(["softprobe"]).map(|parsed| parsed.serve)
    }
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
