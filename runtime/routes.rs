//! Every HTTP route path, written once: the router, the route list the OpenAPI document is
//! checked against, auth's scope and the OTLP fast path all read them from here.

/// Liveness and versions; never needs auth.
pub const HEALTH: &str = "/health";
/// Readiness: whether the session store answers; never needs auth.
pub const READY: &str = "/ready";
/// Prometheus metrics; never needs auth.
pub const METRICS: &str = "/metrics";
/// The OpenAPI document; never needs auth.
pub const OPENAPI: &str = "/openapi.json";
/// Everything under this prefix needs the bearer token when one is configured.
pub const GUARDED_PREFIX: &str = "/v1/";
/// Runtime metadata.
pub const META: &str = "/v1/meta";
/// Create and list sessions.
pub const SESSIONS: &str = "/v1/sessions";
/// Load a case into a session.
pub const LOAD_CASE: &str = "/v1/sessions/{sessionId}/load-case";
/// Replace a session's rules.
pub const RULES: &str = "/v1/sessions/{sessionId}/rules";
/// Replace a session's policy.
pub const POLICY: &str = "/v1/sessions/{sessionId}/policy";
/// Replace a session's auth fixtures.
pub const FIXTURES: &str = "/v1/sessions/{sessionId}/fixtures/auth";
/// A session's counters.
pub const STATS: &str = "/v1/sessions/{sessionId}/stats";
/// A session's documents and counters.
pub const STATE: &str = "/v1/sessions/{sessionId}/state";
/// A session's recent misses and why.
pub const MISSES: &str = "/v1/sessions/{sessionId}/misses";
/// Close a session.
pub const CLOSE: &str = "/v1/sessions/{sessionId}/close";
/// A capture session's case.
pub const CAPTURE: &str = "/v1/captures/{sessionId}";
/// OTLP: what one hop gets (the proxy asks).
pub const INJECT: &str = "/v1/inject";
/// OTLP/HTTP traces.
pub const TRACES: &str = "/v1/traces";

/// Every (method, path) the HTTP API serves; the OpenAPI document must list exactly these.
pub const ALL: &[(&str, &str)] = &[
    ("GET", HEALTH),
    ("GET", READY),
    ("GET", METRICS),
    ("GET", OPENAPI),
    ("GET", META),
    ("POST", SESSIONS),
    ("GET", SESSIONS),
    ("POST", LOAD_CASE),
    ("POST", RULES),
    ("POST", POLICY),
    ("POST", FIXTURES),
    ("GET", STATS),
    ("GET", STATE),
    ("GET", MISSES),
    ("POST", CLOSE),
    ("GET", CAPTURE),
    ("POST", INJECT),
    ("POST", TRACES),
];
