//! The runtime's answer to an inject lookup (hit, miss or failure) and what the filter does
//! about it.

use softprobe_otlp::keys;

use crate::body;
use crate::config::FailureMode;
use crate::wire::{self, Value};

/// gRPC `NOT_FOUND`: the gRPC spelling of a miss.
const GRPC_NOT_FOUND: u32 = 5;

/// What the runtime said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Reply locally with this response (a mock, an error rule, a strict-policy block).
    Hit(LocalReply),
    /// Forward upstream.
    Miss,
    /// The runtime could not answer; the reason is for logs and for the fail-closed reply.
    Failure(String),
}

/// A response the filter sends without calling upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status.
    pub status: u32,
    /// Headers to send, minus pseudo, hop-by-hop and framing headers.
    pub headers: Vec<(String, String)>,
    /// Body bytes (decoded from base64 when the hit says so).
    pub body: Vec<u8>,
    /// `sp.decision` of the hit (`mock`, `error`, `strict_miss`), for logs.
    pub decision: Option<String>,
    /// `sp.rule.name` of the hit, for logs.
    pub rule: Option<String>,
}

/// What the filter does with the held request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request continue upstream.
    Resume,
    /// Answer the client with this response.
    Reply(LocalReply),
}

/// An answer from `POST /v1/inject`: 2xx with a span is a hit, 404 a miss, anything else
/// (including no `:status` at all: timeout, reset, unknown cluster) a failure. Runtime error
/// bodies are never relayed; error rules and strict misses arrive as hits.
pub fn from_http(status: Option<&str>, body: &[u8]) -> Answer {
    let Some(status) = status.and_then(|s| s.trim().parse::<u32>().ok()) else {
        return Answer::Failure(
            "no answer from the runtime (timeout or connection failure)".into(),
        );
    };
    match status {
        404 => Answer::Miss,
        200..=299 => parse_hit(body).map_or_else(Answer::Failure, Answer::Hit),
        _ => Answer::Failure(format!("the runtime answered {status}{}", error_code(body))),
    }
}

/// An answer from `InjectService/Inject`: OK with a span is a hit, `NOT_FOUND` a miss.
pub fn from_grpc(code: u32, body: &[u8]) -> Answer {
    match code {
        0 => parse_hit(body).map_or_else(Answer::Failure, Answer::Hit),
        GRPC_NOT_FOUND => Answer::Miss,
        _ => Answer::Failure(format!("the runtime answered gRPC status {code}")),
    }
}

/// ` (code)` from a runtime error envelope `{"error":{"code":…}}`, for the log line.
fn error_code(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.pointer("/error/code")
                .and_then(|c| c.as_str())
                .map(|c| format!(" ({c})"))
        })
        .unwrap_or_default()
}

/// Reads a hit: the first span's `http.response.status_code` (200 when absent),
/// `http.response.header.*` and `http.response.body` (+ `.encoding`). A status-only hit (a
/// 204 mock) is a hit too.
pub fn parse_hit(bytes: &[u8]) -> Result<LocalReply, String> {
    let attrs = wire::first_span_attributes(bytes)
        .map_err(|err| format!("undecodable inject answer: {err}"))?
        .ok_or("inject answer without a span")?;
    // The first attribute with a key counts, as a lookup by key finds it.
    let get = |key: &str| {
        attrs
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, value)| *value)
    };
    let string = |key: &str| match get(key) {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    let status = match get(keys::RESPONSE_STATUS) {
        Some(Value::Int(code)) => Some(code),
        // A string of digits is accepted too.
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let status = match status {
        None => 200,
        Some(code) => u32::try_from(code)
            .ok()
            .filter(|code| (100..=599).contains(code))
            .ok_or_else(|| format!("inject answer has an invalid status {code}"))?,
    };
    let headers = attrs
        .iter()
        .filter_map(|(key, value)| {
            let name = key
                .strip_prefix(keys::RESPONSE_HEADER_PREFIX)?
                .to_ascii_lowercase();
            let Value::String(value) = value else {
                return None;
            };
            (!is_unsendable(&name)).then(|| (name, (*value).to_owned()))
        })
        .collect();
    let body = match string(keys::RESPONSE_BODY) {
        None => Vec::new(),
        Some(value) => body::decode(value, string(keys::RESPONSE_BODY_ENCODING))?,
    };
    Ok(LocalReply {
        status,
        headers,
        body,
        decision: string(keys::DECISION).map(str::to_owned),
        rule: string(keys::RULE_NAME).map(str::to_owned),
    })
}

/// Headers a local reply must not carry: pseudo-headers, hop-by-hop headers, and framing
/// that Envoy computes itself (a captured `content-length` would lie about a re-encoded body).
pub fn is_unsendable(name: &str) -> bool {
    name.is_empty()
        || name.starts_with(':')
        || matches!(
            name,
            "content-length"
                | "transfer-encoding"
                | "connection"
                | "keep-alive"
                | "proxy-connection"
                | "upgrade"
                | "te"
                | "trailer"
        )
}

/// The verdict for `answer` under `mode`: hits reply, misses resume, failures resume when
/// failing open and reply 502 with a JSON error when failing closed.
pub fn verdict(answer: Answer, mode: FailureMode) -> Verdict {
    match (answer, mode) {
        (Answer::Hit(reply), _) => Verdict::Reply(reply),
        (Answer::Miss, _) | (Answer::Failure(_), FailureMode::Open) => Verdict::Resume,
        (Answer::Failure(reason), FailureMode::Closed) => Verdict::Reply(unavailable(&reason)),
    }
}

/// The fail-closed reply.
pub fn unavailable(reason: &str) -> LocalReply {
    let body = serde_json::json!({
        "error": {"code": "softprobe_runtime_unavailable", "message": format!("softprobe runtime unavailable: {reason}")}
    });
    LocalReply {
        status: 502,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.to_string().into_bytes(),
        decision: None,
        rule: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span::{Attributes, SpanFields, encode};

    fn hit(build: impl FnOnce(&mut Attributes)) -> Vec<u8> {
        let mut attrs = Attributes::default();
        build(&mut attrs);
        encode("runtime", &SpanFields::default(), &[&attrs])
    }

    #[test]
    fn reads_a_mock() {
        let bytes = hit(|a| {
            a.int(keys::RESPONSE_STATUS, 201)
                .string("http.response.header.Content-Type", "application/json")
                .string("http.response.header.content-length", "999")
                .string("http.response.header.:status", "201")
                .string("http.response.header.transfer-encoding", "chunked")
                .string("http.response.header.connection", "close")
                .string(keys::RESPONSE_BODY, "{\"id\":\"ch_1\"}")
                .string(keys::DECISION, "mock")
                .string(keys::RULE_NAME, "charge-ok");
        });
        let Answer::Hit(reply) = from_http(Some("200"), &bytes) else {
            panic!("not a hit")
        };
        assert_eq!(reply.status, 201);
        assert_eq!(
            reply.headers,
            vec![("content-type".to_owned(), "application/json".to_owned())]
        );
        assert_eq!(reply.body, b"{\"id\":\"ch_1\"}");
        assert_eq!(reply.decision.as_deref(), Some("mock"));
        assert_eq!(reply.rule.as_deref(), Some("charge-ok"));
    }

    #[test]
    fn reads_a_binary_body_only_when_marked() {
        let bytes = hit(|a| {
            a.string(keys::RESPONSE_BODY, "/wAB")
                .string(keys::RESPONSE_BODY_ENCODING, "base64");
        });
        let reply = parse_hit(&bytes).unwrap();
        assert_eq!(
            (reply.status, reply.body),
            (200, vec![0xff, 0, 1]),
            "a hit without a status is a 200"
        );
        let long_text = "A".repeat(200);
        let reply = parse_hit(&hit(|a| {
            a.string(keys::RESPONSE_BODY, &long_text);
        }))
        .unwrap();
        assert_eq!(
            reply.body,
            long_text.as_bytes(),
            "no length heuristic: unmarked bodies are text"
        );
        let bad = hit(|a| {
            a.string(keys::RESPONSE_BODY, "%%")
                .string(keys::RESPONSE_BODY_ENCODING, "base64");
        });
        assert!(matches!(from_http(Some("200"), &bad), Answer::Failure(_)));
    }

    #[test]
    fn a_status_only_hit_is_a_hit() {
        let Answer::Hit(reply) = from_http(
            Some("200"),
            &hit(|a| {
                a.int(keys::RESPONSE_STATUS, 204);
            }),
        ) else {
            panic!("a 204 mock must reply locally")
        };
        assert_eq!(
            (reply.status, reply.headers.len(), reply.body.len()),
            (204, 0, 0)
        );
    }

    #[test]
    fn classifies_statuses() {
        assert_eq!(from_http(Some("404"), b"{\"error\":{}}"), Answer::Miss);
        let Answer::Failure(reason) =
            from_http(Some("401"), br#"{"error":{"code":"missing_bearer_token"}}"#)
        else {
            panic!()
        };
        assert_eq!(reason, "the runtime answered 401 (missing_bearer_token)");
        for status in [
            Some("500"),
            Some("503"),
            Some("413"),
            Some("302"),
            None,
            Some("garbage"),
        ] {
            assert!(
                matches!(from_http(status, b""), Answer::Failure(_)),
                "{status:?}"
            );
        }
        assert!(
            matches!(from_http(Some("200"), b""), Answer::Failure(_)),
            "a hit needs a span"
        );
        assert!(matches!(
            from_http(Some("200"), b"\xff\xff"),
            Answer::Failure(_)
        ));
        assert!(matches!(
            from_http(
                Some("200"),
                &hit(|a| {
                    a.int(keys::RESPONSE_STATUS, 99);
                })
            ),
            Answer::Failure(_)
        ));
        assert_eq!(from_grpc(5, b""), Answer::Miss);
        assert!(matches!(from_grpc(0, &hit(|_| {})), Answer::Hit(_)));
        assert!(matches!(from_grpc(14, b""), Answer::Failure(_)));
    }

    #[test]
    fn fails_open_or_closed() {
        assert_eq!(verdict(Answer::Miss, FailureMode::Closed), Verdict::Resume);
        assert_eq!(
            verdict(Answer::Failure("x".into()), FailureMode::Open),
            Verdict::Resume
        );
        let Verdict::Reply(reply) = verdict(
            Answer::Failure("the runtime answered 503".into()),
            FailureMode::Closed,
        ) else {
            panic!()
        };
        assert_eq!(reply.status, 502);
        let json: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(json["error"]["code"], "softprobe_runtime_unavailable");
        assert!(json["error"]["message"].as_str().unwrap().contains("503"));
        let mock = parse_hit(&hit(|_| {})).unwrap();
        assert_eq!(
            verdict(Answer::Hit(mock.clone()), FailureMode::Open),
            Verdict::Reply(mock)
        );
    }
}
