//! The OTLP vocabulary Softprobe's runtime and its proxy filter share: span attribute names,
//! the W3C trace-context helpers that carry a session across hops, and the protobuf reader
//! ([`wire`]) both read spans with. One place, so both sides speak the same codec.

#![no_std]
extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

pub mod wire;

/// Span and resource attribute keys of the Softprobe OTLP vocabulary.
pub mod keys {
    /// The session a span belongs to.
    pub const SESSION_ID: &str = "sp.session.id";
    /// `inject` (a lookup) or `extract` (an observed exchange).
    pub const SPAN_TYPE: &str = "sp.span.type";
    /// `inbound` or `outbound`.
    pub const DIRECTION: &str = "sp.traffic.direction";
    /// The service the proxy fronts.
    pub const SERVICE_NAME: &str = "sp.service.name";
    /// The resource's service name (OpenTelemetry semantic convention).
    pub const RESOURCE_SERVICE_NAME: &str = "service.name";
    /// Request host, port included when present.
    pub const URL_HOST: &str = "url.host";
    /// Request path, which the official proxy sends with the query string.
    pub const URL_PATH: &str = "url.path";
    /// Request method (the official proxy sends only the `:method` header attribute).
    pub const REQUEST_METHOD: &str = "http.request.method";
    /// Prefix of request header attributes (`http.request.header.content-type`).
    pub const REQUEST_HEADER_PREFIX: &str = "http.request.header.";
    /// Request body (text, or base64 with the encoding attribute).
    pub const REQUEST_BODY: &str = "http.request.body";
    /// `base64` when the request body attribute is base64.
    pub const REQUEST_BODY_ENCODING: &str = "http.request.body.encoding";
    /// Response status (int).
    pub const RESPONSE_STATUS: &str = "http.response.status_code";
    /// Prefix of response header attributes.
    pub const RESPONSE_HEADER_PREFIX: &str = "http.response.header.";
    /// Response body (text, or base64 with the encoding attribute).
    pub const RESPONSE_BODY: &str = "http.response.body";
    /// `base64` when the response body attribute is base64.
    pub const RESPONSE_BODY_ENCODING: &str = "http.response.body.encoding";
    /// Which decision produced an inject answer (`mock`, `error`, `strict_miss`).
    pub const DECISION: &str = "sp.decision";
    /// The label of the rule that decided.
    pub const RULE_NAME: &str = "sp.rule.name";
    /// The layer of the rule that decided (`session`, `case`, `policy`).
    pub const RULE_LAYER: &str = "sp.rule.layer";
    /// The session revision the decision was made at (int).
    pub const SESSION_REVISION: &str = "sp.session.revision";
    /// On a replay hit: the id (hex) of the recorded case span that answered.
    pub const CASE_SPAN_ID: &str = "sp.case.span_id";
    /// The `tracestate` entry key that carries the session id.
    pub const TRACESTATE_SESSION: &str = "x-softprobe-session-id";
}

/// Headers whose values never reach a span or a case: the filter drops them, the runtime
/// redacts them in exported spans, `softprobe scrub` redacts them in case files.
pub const SENSITIVE_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
    "api-key",
    "x-auth-token",
    "x-public-key",
];

/// The session id in a W3C `tracestate` value, if it has a Softprobe entry.
pub fn tracestate_session(tracestate: &str) -> Option<&str> {
    tracestate.split(',').find_map(|entry| {
        let (key, value) = entry.trim().split_once('=')?;
        (key.trim() == keys::TRACESTATE_SESSION && !value.trim().is_empty()).then(|| value.trim())
    })
}

/// A `tracestate` value carrying `session_id`: the Softprobe entry first (W3C: the most
/// recently updated entry leads), any stale Softprobe entry dropped, third-party entries kept
/// in order, at most 32 entries in all (the W3C limit; the oldest are dropped).
pub fn tracestate_with_session(existing: &str, session_id: &str) -> String {
    let mut entries: Vec<&str> = existing
        .split(',')
        .map(str::trim)
        .filter(|entry| !entry.is_empty())
        .filter(|entry| {
            entry
                .split_once('=')
                .is_none_or(|(key, _)| key.trim() != keys::TRACESTATE_SESSION)
        })
        .collect();
    entries.truncate(31);
    let mut out = String::with_capacity(existing.len() + session_id.len() + 24);
    out.push_str(keys::TRACESTATE_SESSION);
    out.push('=');
    out.push_str(session_id);
    for entry in entries {
        out.push(',');
        out.push_str(entry);
    }
    out
}

/// Whether `session_id` can travel in a `tracestate` value: W3C values are printable ASCII
/// without `,` and `=`, at most 256 characters.
pub fn valid_session_id(session_id: &str) -> bool {
    !session_id.is_empty()
        && session_id.len() <= 256
        && session_id
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=' && b != b' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_session_entry() {
        assert_eq!(
            tracestate_session("vendor=x, x-softprobe-session-id=sess_1 ,b=2"),
            Some("sess_1")
        );
        assert_eq!(tracestate_session("x-softprobe-session-id="), None);
        assert_eq!(tracestate_session(""), None);
    }

    #[test]
    fn writes_the_session_entry_first_and_replaces_a_stale_one() {
        assert_eq!(
            tracestate_with_session("", "sess_a"),
            "x-softprobe-session-id=sess_a"
        );
        assert_eq!(
            tracestate_with_session(
                "rojo=00f067aa0ba902b7, x-softprobe-session-id=old,congo=t61rcWkgMzE",
                "sess_b"
            ),
            "x-softprobe-session-id=sess_b,rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
        );
        let many: Vec<String> = (0..40).map(|i| alloc::format!("k{i}=v")).collect();
        let joined = many.join(",");
        assert_eq!(tracestate_with_session(&joined, "s").split(',').count(), 32);
    }

    #[test]
    fn session_ids_must_fit_tracestate() {
        assert!(valid_session_id("sess_AbC-_9"));
        assert!(!valid_session_id("a,b"));
        assert!(!valid_session_id("a=b"));
        assert!(!valid_session_id(""));
    }
}
