//! The OTLP codec both sides speak: attribute names, decoding OTLP/HTTP bodies (protobuf or
//! JSON, gzip), reading a hop out of a span, and building the inject hit.

use crate::matcher::Hop;
use crate::rules::{Body, Direction, TagValue};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use prost::Message as _;
use std::io::Read as _;

pub use softprobe_otlp::{keys, tracestate_session};

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP JSON: hex ids, 64-bit integers as strings or numbers).
    Json,
}

impl Encoding {
    /// The encoding named by a `Content-Type`; `Ok(None)` when absent (then the body is
    /// sniffed, as the reference runtime does), `Err` for any other media type.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Option<Self>, DecodeError> {
        let Some(value) = content_type else {
            return Ok(None);
        };
        let media = value
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match media.as_str() {
            "application/x-protobuf" | "application/protobuf" => Ok(Some(Self::Protobuf)),
            "application/json" => Ok(Some(Self::Json)),
            "" => Ok(None),
            _ => Err(DecodeError::UnsupportedMediaType(value.to_owned())),
        }
    }

    /// The `Content-Type` to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Why an OTLP body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Neither the declared nor a sniffed encoding parses.
    #[error("{0}")]
    Malformed(String),
    /// The media type is not OTLP.
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The body, or what it decompresses to, exceeds the limit.
    #[error("the body exceeds {limit} bytes (after decompression)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `Content-Encoding` other than gzip or identity.
    #[error("unsupported content encoding {0:?}: send gzip or identity")]
    UnsupportedContentEncoding(String),
}

/// Undoes `Content-Encoding: gzip` (bounded by `limit`); passes identity bodies through.
pub fn decompress(
    body: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Option<Vec<u8>>, DecodeError> {
    match content_encoding
        .map(|e| e.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("") | Some("identity") => Ok(None),
        Some("gzip") | Some("x-gzip") => {
            let mut out = Vec::new();
            let mut reader = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
            reader
                .read_to_end(&mut out)
                .map_err(|err| DecodeError::Malformed(format!("invalid gzip body: {err}")))?;
            if out.len() > limit {
                return Err(DecodeError::TooLarge { limit });
            }
            Ok(Some(out))
        }
        Some(other) => Err(DecodeError::UnsupportedContentEncoding(other.to_owned())),
    }
}

/// Decodes an OTLP traces body (`TracesData` and `ExportTraceServiceRequest` share one wire
/// form). Without a declared encoding, protobuf is tried first, then JSON.
pub fn decode_traces(body: &[u8], encoding: Option<Encoding>) -> Result<TracesData, DecodeError> {
    match encoding {
        Some(Encoding::Protobuf) => decode_protobuf(body),
        Some(Encoding::Json) => decode_json(body),
        None => decode_protobuf(body).or_else(|protobuf| {
            decode_json(body).map_err(|json| {
                DecodeError::Malformed(format!(
                    "neither OTLP protobuf ({protobuf}) nor OTLP JSON ({json})"
                ))
            })
        }),
    }
}

fn decode_protobuf(body: &[u8]) -> Result<TracesData, DecodeError> {
    TracesData::decode(body)
        .map_err(|err| DecodeError::Malformed(format!("invalid OTLP protobuf: {err}")))
}

/// OTLP JSON. The typed parse handles the standard form; a second pass accepts what other
/// encoders write too (base64 ids from Go's protojson, span kinds as enum names).
fn decode_json(body: &[u8]) -> Result<TracesData, DecodeError> {
    serde_json::from_slice::<TracesData>(body).or_else(|typed_err| {
        let mut value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|err| DecodeError::Malformed(format!("invalid JSON: {err}")))?;
        if !normalize_json(&mut value) {
            return Err(DecodeError::Malformed(format!(
                "invalid OTLP JSON: {typed_err}"
            )));
        }
        serde_json::from_value(value)
            .map_err(|err| DecodeError::Malformed(format!("invalid OTLP JSON: {err}")))
    })
}

/// Rewrites base64 ids to hex and enum-name kinds to numbers; returns whether it changed
/// anything (so an unrelated error is reported as it was).
fn normalize_json(value: &mut serde_json::Value) -> bool {
    use base64::Engine as _;
    use serde_json::Value;
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &*field) {
                    ("traceId" | "spanId" | "parentSpanId", Value::String(id)) if !is_hex(id) => {
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(id) {
                            *field = Value::String(hex::encode(bytes));
                            changed = true;
                        }
                    }
                    ("kind", Value::String(name)) => {
                        let kind = match name.as_str() {
                            "SPAN_KIND_INTERNAL" => 1,
                            "SPAN_KIND_SERVER" => 2,
                            "SPAN_KIND_CLIENT" => 3,
                            "SPAN_KIND_PRODUCER" => 4,
                            "SPAN_KIND_CONSUMER" => 5,
                            _ => 0,
                        };
                        *field = Value::from(kind);
                        changed = true;
                    }
                    ("code", Value::String(name)) if name.starts_with("STATUS_CODE_") => {
                        let code = match name.as_str() {
                            "STATUS_CODE_OK" => 1,
                            "STATUS_CODE_ERROR" => 2,
                            _ => 0,
                        };
                        *field = Value::from(code);
                        changed = true;
                    }
                    _ => changed |= normalize_json(field),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= normalize_json(item);
            }
        }
        _ => {}
    }
    changed
}

fn is_hex(text: &str) -> bool {
    text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The first attribute with this key.
pub fn attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a AnyValueKind> {
    attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

/// The first non-empty string attribute with this key.
pub fn string_attribute<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    match attribute(attributes, key) {
        Some(AnyValueKind::StringValue(s)) if !s.is_empty() => Some(s),
        _ => None,
    }
}

/// The session of a span: `sp.session.id` on the span, then on the resource, then the
/// `x-softprobe-session-id=<id>` entry of the span's W3C `traceState`.
pub fn session_of<'a>(span: &'a Span, resource: Option<&'a Resource>) -> Option<&'a str> {
    string_attribute(&span.attributes, keys::SESSION_ID)
        .or_else(|| resource.and_then(|r| string_attribute(&r.attributes, keys::SESSION_ID)))
        .or_else(|| tracestate_session(&span.trace_state))
}

/// Whether the span is an inject lookup.
pub fn is_inject(span: &Span) -> bool {
    string_attribute(&span.attributes, keys::SPAN_TYPE) == Some("inject")
}

/// Whether the span is an observed exchange uploaded by a proxy.
pub fn is_extract(span: &Span) -> bool {
    string_attribute(&span.attributes, keys::SPAN_TYPE) == Some("extract")
}

fn tag_of(value: &AnyValueKind) -> Option<TagValue> {
    Some(match value {
        AnyValueKind::StringValue(s) => TagValue::String(s.clone()),
        AnyValueKind::BoolValue(b) => TagValue::Bool(*b),
        AnyValueKind::IntValue(i) => TagValue::Number((*i).into()),
        AnyValueKind::DoubleValue(d) => TagValue::Number(serde_json::Number::from_f64(*d)?),
        _ => return None,
    })
}

/// The hop a span describes. Method and path come from `http.request.method` / `url.path`,
/// else from the `:method` / `:path` header attributes the official proxy sends; the host from
/// `url.host`, else `:authority` / `host`. The query string is split off the path.
pub fn hop_of(span: &Span, resource: Option<&Resource>) -> Hop {
    let attrs = &span.attributes;
    let header = |name: &str| {
        attrs.iter().find_map(|kv| {
            let rest = kv.key.strip_prefix(keys::REQUEST_HEADER_PREFIX)?;
            match kv.value.as_ref()?.value.as_ref()? {
                AnyValueKind::StringValue(v)
                    if rest.eq_ignore_ascii_case(name) && !v.is_empty() =>
                {
                    Some(v.as_str())
                }
                _ => None,
            }
        })
    };
    let mut hop = Hop {
        direction: match string_attribute(attrs, keys::DIRECTION) {
            Some("inbound") => Some(Direction::Inbound),
            Some("outbound") => Some(Direction::Outbound),
            _ => None,
        },
        service: string_attribute(attrs, keys::SERVICE_NAME)
            .or_else(|| {
                resource.and_then(|r| string_attribute(&r.attributes, keys::RESOURCE_SERVICE_NAME))
            })
            .unwrap_or_default()
            .to_owned(),
        host: string_attribute(attrs, keys::URL_HOST)
            .or_else(|| header(":authority"))
            .or_else(|| header("host"))
            .unwrap_or_default()
            .to_owned(),
        method: string_attribute(attrs, keys::REQUEST_METHOD)
            .or_else(|| header(":method"))
            .unwrap_or_default()
            .to_ascii_uppercase(),
        ..Hop::default()
    };
    let path = string_attribute(attrs, keys::URL_PATH)
        .or_else(|| header(":path"))
        .unwrap_or_default();
    hop.set_path_and_query(path);
    for kv in attrs {
        let Some(value) = kv.value.as_ref().and_then(|v| v.value.as_ref()) else {
            continue;
        };
        if let Some(name) = kv.key.strip_prefix(keys::REQUEST_HEADER_PREFIX) {
            if let AnyValueKind::StringValue(v) = value {
                hop.headers.push((name.to_ascii_lowercase(), v.clone()));
            }
        } else if kv.key == keys::REQUEST_BODY {
            if let AnyValueKind::StringValue(body) = value {
                // A body the proxy sent as base64 (no textual content type) still matches
                // `bodyJsonPath` when its bytes are UTF-8.
                let base64 = string_attribute(attrs, keys::REQUEST_BODY_ENCODING) == Some("base64");
                hop.body = if base64 {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD
                        .decode(body)
                        .ok()
                        .and_then(|bytes| String::from_utf8(bytes).ok())
                } else {
                    Some(body.clone())
                };
            }
        } else if let Some(tag) = tag_of(value) {
            hop.tags.push((kv.key.clone(), tag));
        }
    }
    hop
}

/// What an inject hit answers with.
#[derive(Debug, Clone, PartialEq)]
pub struct HitResponse {
    /// HTTP status for the proxy's local reply.
    pub status: u16,
    /// Response headers.
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Body,
    /// `mock`, `error` or `strict_miss`.
    pub decision: &'static str,
    /// The deciding rule's label (absent for the policy).
    pub rule: Option<String>,
    /// The deciding rule's layer.
    pub layer: &'static str,
    /// The session revision the decision was made at.
    pub revision: u64,
}

fn kv(key: &str, value: AnyValueKind) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}

/// The `TracesData` of a hit: one span whose attributes are, in order,
/// `http.response.status_code` (int), `http.response.header.<name>`…, `http.response.body`
/// (with `http.response.body.encoding = base64` for binary bodies), then the decision, rule
/// and revision.
pub fn hit_traces(hit: &HitResponse) -> TracesData {
    use base64::Engine as _;
    let mut attributes = Vec::with_capacity(hit.headers.len() + 6);
    attributes.push(kv(
        keys::RESPONSE_STATUS,
        AnyValueKind::IntValue(hit.status.into()),
    ));
    for (name, value) in &hit.headers {
        attributes.push(kv(
            &format!("{}{name}", keys::RESPONSE_HEADER_PREFIX),
            AnyValueKind::StringValue(value.clone()),
        ));
    }
    match &hit.body {
        Body::Empty => {}
        Body::Text(text) => attributes.push(kv(
            keys::RESPONSE_BODY,
            AnyValueKind::StringValue(text.clone()),
        )),
        Body::Binary(bytes) => {
            let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
            attributes.push(kv(keys::RESPONSE_BODY, AnyValueKind::StringValue(encoded)));
            attributes.push(kv(
                keys::RESPONSE_BODY_ENCODING,
                AnyValueKind::StringValue("base64".into()),
            ));
        }
    }
    attributes.push(kv(
        keys::DECISION,
        AnyValueKind::StringValue(hit.decision.into()),
    ));
    if let Some(rule) = &hit.rule {
        attributes.push(kv(keys::RULE_NAME, AnyValueKind::StringValue(rule.clone())));
    }
    attributes.push(kv(
        keys::RULE_LAYER,
        AnyValueKind::StringValue(hit.layer.into()),
    ));
    attributes.push(kv(
        keys::SESSION_REVISION,
        AnyValueKind::IntValue(hit.revision as i64),
    ));
    TracesData {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    name: "softprobe.inject".into(),
                    attributes,
                    ..Span::default()
                }],
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Encodes traces in the given encoding.
pub fn encode_traces(traces: &TracesData, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Protobuf => traces.encode_to_vec(),
        // Serializing generated types to JSON cannot fail (no maps with non-string keys).
        Encoding::Json => serde_json::to_vec(traces).unwrap_or_default(),
    }
}

/// A trace document as OTLP JSON the way case files carry it: camelCase, hex ids, and no
/// `null`s or empty defaults (`case-trace.schema.json` wants `status`, when present, to be an
/// object).
pub fn case_trace_json(traces: &TracesData) -> serde_json::Value {
    fn tidy(value: &mut serde_json::Value) {
        use serde_json::Value;
        match value {
            Value::Object(map) => {
                map.retain(|key, field| match (key.as_str(), &*field) {
                    (_, Value::Null) => false,
                    ("schemaUrl" | "traceState", Value::String(s)) => !s.is_empty(),
                    ("events" | "links", Value::Array(items)) => !items.is_empty(),
                    (
                        "droppedAttributesCount"
                        | "droppedEventsCount"
                        | "droppedLinksCount"
                        | "flags",
                        v,
                    ) => v.as_u64() != Some(0),
                    _ => true,
                });
                map.values_mut().for_each(tidy);
            }
            Value::Array(items) => items.iter_mut().for_each(tidy),
            _ => {}
        }
    }
    let mut value = serde_json::to_value(traces).unwrap_or_default();
    tidy(&mut value);
    value
}

/// Number of spans in a trace document.
pub fn span_count(traces: &TracesData) -> usize {
    traces
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INJECT_JSON: &str = r#"{"resourceSpans":[{"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
      "scopeSpans":[{"spans":[{"traceId":"5b8efff798038103d269b633813fc60c","spanId":"051581bf3cb55c13","name":"/fragment","kind":3,
       "attributes":[
        {"key":"sp.span.type","value":{"stringValue":"inject"}},
        {"key":"sp.session.id","value":{"stringValue":"sess_abc"}},
        {"key":"sp.traffic.direction","value":{"stringValue":"outbound"}},
        {"key":"http.request.header.:method","value":{"stringValue":"get"}},
        {"key":"http.request.header.:path","value":{"stringValue":"/ignored"}},
        {"key":"http.request.header.X-Trace","value":{"stringValue":"1"}},
        {"key":"url.host","value":{"stringValue":"softprobe-proxy:8084"}},
        {"key":"url.path","value":{"stringValue":"/fragment?x=1"}},
        {"key":"http.request.body","value":{"stringValue":"{\"a\":1}"}},
        {"key":"retries","value":{"intValue":"3"}}]}]}]}]}"#;

    #[test]
    fn reads_the_hop_the_official_proxy_describes() {
        let traces = decode_traces(INJECT_JSON.as_bytes(), Some(Encoding::Json)).unwrap();
        let rs = &traces.resource_spans[0];
        let span = &rs.scope_spans[0].spans[0];
        assert!(is_inject(span));
        assert_eq!(session_of(span, rs.resource.as_ref()), Some("sess_abc"));
        let hop = hop_of(span, rs.resource.as_ref());
        assert_eq!(hop.direction, Some(Direction::Outbound));
        assert_eq!(hop.service, "checkout");
        assert_eq!(hop.method, "GET");
        assert_eq!(
            (hop.path.as_str(), hop.query.as_str()),
            ("/fragment", "x=1")
        );
        assert_eq!(hop.host, "softprobe-proxy:8084");
        assert!(hop.headers.contains(&("x-trace".into(), "1".into())));
        assert_eq!(hop.body.as_deref(), Some("{\"a\":1}"));
        assert!(
            hop.tags
                .contains(&("retries".into(), TagValue::Number(3.into())))
        );
        // The same span as protobuf decodes identically, with or without a declared type.
        let bytes = traces.encode_to_vec();
        assert_eq!(decode_traces(&bytes, None).unwrap(), traces);
        assert_eq!(decode_traces(INJECT_JSON.as_bytes(), None).unwrap(), traces);
    }

    #[test]
    fn accepts_go_protojson_ids_and_enum_names() {
        let go = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"BRWBvzy1XBM=","kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_OK"}}]}]}]}"#;
        let traces = decode_traces(go.as_bytes(), Some(Encoding::Json)).unwrap();
        let span = &traces.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(span.kind, 2);
    }

    #[test]
    fn bad_bodies_say_why() {
        let err = decode_traces(b"{not json", None).unwrap_err();
        assert!(
            err.to_string().starts_with("neither OTLP protobuf"),
            "{err}"
        );
        assert!(matches!(
            Encoding::from_content_type(Some("text/plain")),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Some(Encoding::Json))
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[b'x'; 100]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(&gz, Some("gzip"), 99),
            Err(DecodeError::TooLarge { limit: 99 })
        );
        assert_eq!(
            decompress(&gz, Some("gzip"), 100).unwrap().unwrap().len(),
            100
        );
        assert!(decompress(&gz, Some("br"), 100).is_err());
    }

    #[test]
    fn hits_carry_status_first_and_decode_back() {
        let hit = HitResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Binary(vec![0, 255]),
            decision: "mock",
            rule: Some("r".into()),
            layer: "session",
            revision: 7,
        };
        let traces = hit_traces(&hit);
        let back = decode_traces(
            &encode_traces(&traces, Encoding::Json),
            Some(Encoding::Json),
        )
        .unwrap();
        let attrs = &back.resource_spans[0].scope_spans[0].spans[0].attributes;
        assert_eq!(attrs[0].key, keys::RESPONSE_STATUS);
        assert_eq!(
            attribute(attrs, keys::RESPONSE_STATUS),
            Some(&AnyValueKind::IntValue(201))
        );
        assert_eq!(string_attribute(attrs, keys::RESPONSE_BODY), Some("AP8="));
        assert_eq!(
            string_attribute(attrs, keys::RESPONSE_BODY_ENCODING),
            Some("base64")
        );
        assert_eq!(
            attribute(attrs, keys::SESSION_REVISION),
            Some(&AnyValueKind::IntValue(7))
        );
    }
}
