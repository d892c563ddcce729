//! The request a case replays: the inbound request it recorded, with the suite's inline fields
//! over it.

use super::check::Answer;
use super::document::RequestSpec;
use serde_json::Value;
use softprobe_pipeline::hop::Hop;
use softprobe_pipeline::otlp::{self, AttrRef, Encoding, SpanView, keys};

/// A request to send and, when recorded, its response.
#[derive(Debug, Clone)]
pub(super) struct Recorded {
    pub(super) method: String,
    pub(super) url: Option<String>,
    /// The recorded host, shown to `request` hooks.
    pub(super) host: Option<String>,
    /// Path with query.
    pub(super) path: String,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Vec<u8>,
    pub(super) response: Option<Answer>,
}

/// Headers a recorded request does not replay: per-connection ones and pseudo-headers.
const NOT_REPLAYED: [&str; 7] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "x-softprobe-session-id",
    "traceparent",
];

/// The request to send: the recorded inbound one (`source: case.ingress`, or a request without
/// method and path), with the inline fields over it; `None` when there is none to send.
pub(super) fn ingress(
    spec: Option<&RequestSpec>,
    document: &Value,
) -> Result<Option<Recorded>, String> {
    let Some(spec) = spec else {
        // No request section: replay the recorded inbound request when there is one.
        return Ok(recorded_ingress(document));
    };
    let from_case = spec.source.as_deref() == Some("case.ingress")
        || (spec.method.is_none() && spec.path.is_none());
    let mut request = match (from_case, recorded_ingress(document)) {
        (true, Some(recorded)) => recorded,
        (true, None) if spec.source.is_some() => {
            return Err(
                "request.source is case.ingress but the case records no inbound request".to_owned(),
            );
        }
        (_, _) => Recorded {
            method: "GET".to_owned(),
            url: None,
            host: None,
            path: "/".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            response: None,
        },
    };
    if let Some(method) = &spec.method {
        request.method = method.to_ascii_uppercase();
    }
    if let Some(path) = &spec.path {
        request.path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
    }
    if let Some(url) = &spec.url {
        request.url = Some(url.clone());
    }
    for (name, value) in &spec.headers {
        request
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        request.headers.push((name.clone(), value.clone()));
    }
    if let Some(body) = &spec.body {
        request.body = body.clone().into_bytes();
    }
    Ok(Some(request))
}

/// The first recorded inbound span with a response, as a request to send again.
fn recorded_ingress(document: &Value) -> Option<Recorded> {
    for trace in document["traces"].as_array()? {
        let json = serde_json::to_vec(trace).ok()?;
        let Ok(traces) = otlp::decode_traces(&json, Some(Encoding::Json)) else {
            continue;
        };
        for rs in &traces.resource_spans {
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let view = SpanView::of(span, rs.resource.as_ref());
                if view.attributes.string(keys::DIRECTION) != Some("inbound") {
                    continue;
                }
                return Some(recorded_request(view));
            }
        }
    }
    None
}

fn recorded_request(view: SpanView<'_>) -> Recorded {
    let attributes = view.attributes.clone();
    let headers = |prefix: &str| -> Vec<(String, String)> {
        attributes
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(prefix)?;
                (!name.starts_with(':'))
                    .then(|| (name.to_ascii_lowercase(), value.text().unwrap_or_default()))
            })
            .collect()
    };
    let request_headers: Vec<(String, String)> = headers(keys::REQUEST_HEADER_PREFIX)
        .into_iter()
        .filter(|(name, _)| !NOT_REPLAYED.contains(&name.as_str()) && name != "tracestate")
        .collect();
    let response = match attributes.get(keys::RESPONSE_STATUS) {
        Some(AttrRef::Int(code)) => u16::try_from(code).ok(),
        Some(AttrRef::Str(code)) => code.trim().parse().ok(),
        _ => None,
    }
    .map(|status| Answer {
        status,
        headers: headers(keys::RESPONSE_HEADER_PREFIX),
        body: text_body(
            &attributes,
            keys::RESPONSE_BODY,
            keys::RESPONSE_BODY_ENCODING,
        ),
    });
    let hop = Hop::from_span(view);
    let path = match hop.query {
        "" => hop.path.to_owned(),
        query => format!("{}?{query}", hop.path),
    };
    Recorded {
        method: if hop.method.is_empty() {
            "GET".to_owned()
        } else {
            hop.method.to_string()
        },
        url: None,
        host: (!hop.host.is_empty()).then(|| hop.host.to_owned()),
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path
        },
        headers: request_headers,
        body: hop
            .body()
            .map(|b| b.into_owned().into_bytes())
            .unwrap_or_default(),
        response,
    }
}

fn text_body(attributes: &otlp::Attributes<'_>, key: &str, encoding: &str) -> String {
    let Some(body) = attributes.string(key) else {
        return String::new();
    };
    if attributes.string(encoding) == Some("base64") {
        use base64::Engine as _;
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body) {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    body.to_owned()
}
