//! The OTLP codec both sides speak: attribute names, decoding OTLP/HTTP bodies (protobuf or
//! JSON, gzip), reading a hop out of a span, and building the inject hit.

use crate::matcher::Hop;
use crate::rules::{Body, Direction};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
use prost::Message as _;
use std::borrow::Cow;
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
        // Compared in place: this runs for every inject.
        let media = value.split(';').next().unwrap_or("").trim();
        let is = |name: &str| media.eq_ignore_ascii_case(name);
        if is("application/x-protobuf") || is("application/protobuf") {
            Ok(Some(Self::Protobuf))
        } else if is("application/json") {
            Ok(Some(Self::Json))
        } else if media.is_empty() {
            Ok(None)
        } else {
            Err(DecodeError::UnsupportedMediaType(value.to_owned()))
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
    let text = json_text(body)?;
    serde_json::from_str::<TracesData>(text).or_else(|typed_err| {
        let mut value: serde_json::Value = serde_json::from_str(text)
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

/// A JSON body as text. Checked as UTF-8 once, serde_json reads it without checking every
/// string again (its `from_slice` does).
pub(crate) fn json_text(body: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(body)
        .map_err(|err| DecodeError::Malformed(format!("invalid OTLP JSON: {err}")))
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

/// An attribute value as routing and matching read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum AttrRef<'a> {
    /// `stringValue`.
    Str(&'a str),
    /// `boolValue`.
    Bool(bool),
    /// `intValue`.
    Int(i64),
    /// `doubleValue`.
    Double(f64),
    /// Arrays, maps, bytes, or no value.
    Other,
}

impl<'a> AttrRef<'a> {
    fn of(value: Option<&'a AnyValue>) -> Self {
        match value.and_then(|v| v.value.as_ref()) {
            Some(AnyValueKind::StringValue(s)) => Self::Str(s),
            Some(AnyValueKind::BoolValue(b)) => Self::Bool(*b),
            Some(AnyValueKind::IntValue(i)) => Self::Int(*i),
            Some(AnyValueKind::DoubleValue(d)) => Self::Double(*d),
            _ => Self::Other,
        }
    }

    /// A string, when it is not empty.
    pub fn non_empty_str(self) -> Option<&'a str> {
        match self {
            Self::Str(s) if !s.is_empty() => Some(s),
            _ => None,
        }
    }

    /// A string as is, an integer in decimal (a status code may come as either).
    pub fn text(self) -> Option<String> {
        match self {
            Self::Str(s) => Some(s.to_owned()),
            Self::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
}

/// Span or resource attributes: of a decoded message, or read in place from the body. Equal
/// when they hold the same attributes in the same order, however read.
#[derive(Debug, Clone)]
pub enum Attributes<'a> {
    /// Attributes of a decoded span or resource.
    Decoded(&'a [KeyValue]),
    /// Attributes read in place, borrowed from a protobuf ([`crate::wire`]) or JSON
    /// ([`crate::json_view`]) body.
    Wire(Vec<(&'a str, AttrRef<'a>)>),
}

impl<'a> Attributes<'a> {
    /// Every attribute, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, AttrRef<'a>)> + '_ {
        let (decoded, wire) = match self {
            Self::Decoded(kvs) => (Some(kvs.iter()), None),
            Self::Wire(pairs) => (None, Some(pairs.iter().copied())),
        };
        let decoded = decoded
            .into_iter()
            .flatten()
            .map(|kv| (kv.key.as_str(), AttrRef::of(kv.value.as_ref())));
        decoded.chain(wire.into_iter().flatten())
    }

    /// The value of the first attribute with this key.
    pub fn get(&self, key: &str) -> Option<AttrRef<'a>> {
        self.iter().find(|(k, _)| *k == key).map(|(_, value)| value)
    }

    /// The first attribute with this key, when it is a non-empty string.
    pub fn string(&self, key: &str) -> Option<&'a str> {
        self.get(key)?.non_empty_str()
    }
}

impl PartialEq for Attributes<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.iter().eq(other.iter())
    }
}

/// The header name an attribute key records (`http.request.header.<name>`,
/// `http.response.header.<name>`), if it records one.
pub fn header_name(key: &str) -> Option<&str> {
    key.strip_prefix(keys::REQUEST_HEADER_PREFIX)
        .or_else(|| key.strip_prefix(keys::RESPONSE_HEADER_PREFIX))
}

/// The session a span names, from the first `sp.session.id` attribute of the span and of its
/// resource (each counts when it is a non-empty string) and the span's trace state, in that
/// order of precedence.
pub(crate) fn session_of<'a>(
    span: Option<AttrRef<'a>>,
    resource: Option<AttrRef<'a>>,
    trace_state: &'a str,
) -> Option<&'a str> {
    span.and_then(AttrRef::non_empty_str)
        .or_else(|| resource.and_then(AttrRef::non_empty_str))
        .or_else(|| tracestate_session(trace_state))
}

/// What routing and matching read from one span: its attributes, its resource's, and its W3C
/// trace state.
#[derive(Debug, Clone, PartialEq)]
pub struct SpanView<'a> {
    /// The span's attributes.
    pub attributes: Attributes<'a>,
    /// Its resource's attributes.
    pub resource: Attributes<'a>,
    /// `traceState`.
    pub trace_state: &'a str,
}

impl<'a> SpanView<'a> {
    /// A view of a decoded span.
    pub fn of(span: &'a Span, resource: Option<&'a Resource>) -> Self {
        Self {
            attributes: Attributes::Decoded(&span.attributes),
            resource: Attributes::Decoded(resource.map_or(&[][..], |r| &r.attributes)),
            trace_state: &span.trace_state,
        }
    }

    /// The session: `sp.session.id` on the span, then on the resource, then the
    /// `x-softprobe-session-id=<id>` entry of the trace state.
    pub fn session(&self) -> Option<&'a str> {
        session_of(
            self.attributes.get(keys::SESSION_ID),
            self.resource.get(keys::SESSION_ID),
            self.trace_state,
        )
    }

    /// `sp.span.type` (`inject`, `extract`), when set.
    pub fn span_type(&self) -> Option<&'a str> {
        self.attributes.string(keys::SPAN_TYPE)
    }

    /// The hop the span describes, keeping the span's attributes. Method and path come from
    /// `http.request.method` / `url.path`, else from the `:method` / `:path` header attributes
    /// the official proxy sends; the host from `url.host`, else `:authority` / `host`. The
    /// query string is split off the path.
    pub fn into_hop(self) -> Hop<'a> {
        let attrs = &self.attributes;
        let header = |name: &str| {
            attrs.iter().find_map(|(key, value)| {
                let rest = key.strip_prefix(keys::REQUEST_HEADER_PREFIX)?;
                match value {
                    AttrRef::Str(v) if rest.eq_ignore_ascii_case(name) && !v.is_empty() => Some(v),
                    _ => None,
                }
            })
        };
        let method = attrs
            .string(keys::REQUEST_METHOD)
            .or_else(|| header(":method"))
            .unwrap_or_default();
        let target = attrs
            .string(keys::URL_PATH)
            .or_else(|| header(":path"))
            .unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Hop {
            direction: match attrs.string(keys::DIRECTION) {
                Some("inbound") => Some(Direction::Inbound),
                Some("outbound") => Some(Direction::Outbound),
                _ => None,
            },
            service: attrs
                .string(keys::SERVICE_NAME)
                .or_else(|| self.resource.string(keys::RESOURCE_SERVICE_NAME))
                .unwrap_or_default(),
            host: attrs
                .string(keys::URL_HOST)
                .or_else(|| header(":authority"))
                .or_else(|| header("host"))
                .unwrap_or_default(),
            method: if method.bytes().any(|b| b.is_ascii_lowercase()) {
                Cow::Owned(method.to_ascii_uppercase())
            } else {
                Cow::Borrowed(method)
            },
            path,
            query,
            attributes: self.attributes,
        }
    }
}

/// Views of every span of a decoded document, in order.
pub fn span_views(traces: &TracesData) -> Vec<SpanView<'_>> {
    traces
        .resource_spans
        .iter()
        .flat_map(|rs| {
            rs.scope_spans
                .iter()
                .flat_map(|ss| &ss.spans)
                .map(|span| SpanView::of(span, rs.resource.as_ref()))
        })
        .collect()
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

/// The name of the span a hit answers with.
const HIT_SPAN_NAME: &str = "softprobe.inject";

/// A hit attribute's value: the hit span carries only strings and integers.
#[derive(Clone, Copy)]
enum HitValue<'a> {
    Str(&'a str),
    Int(i64),
}

impl HitResponse {
    /// Calls `f` with each attribute of the hit span, in order: `http.response.status_code`
    /// (int), `http.response.header.<name>`…, `http.response.body` (with
    /// `http.response.body.encoding = base64` for binary bodies), then the decision, rule,
    /// layer and revision.
    fn each_attribute(&self, mut f: impl FnMut(&str, HitValue<'_>)) {
        use base64::Engine as _;
        f(keys::RESPONSE_STATUS, HitValue::Int(self.status.into()));
        let mut key = String::from(keys::RESPONSE_HEADER_PREFIX);
        for (name, value) in &self.headers {
            key.truncate(keys::RESPONSE_HEADER_PREFIX.len());
            key.push_str(name);
            f(&key, HitValue::Str(value));
        }
        match &self.body {
            Body::Empty => {}
            Body::Text(text) => f(keys::RESPONSE_BODY, HitValue::Str(text)),
            Body::Binary(bytes) => {
                let encoded = base64::engine::general_purpose::STANDARD.encode(bytes);
                f(keys::RESPONSE_BODY, HitValue::Str(&encoded));
                f(keys::RESPONSE_BODY_ENCODING, HitValue::Str("base64"));
            }
        }
        f(keys::DECISION, HitValue::Str(self.decision));
        if let Some(rule) = &self.rule {
            f(keys::RULE_NAME, HitValue::Str(rule));
        }
        f(keys::RULE_LAYER, HitValue::Str(self.layer));
        f(keys::SESSION_REVISION, HitValue::Int(self.revision as i64));
    }

    /// Room for the encoded hit: its texts plus framing for every attribute, so that neither
    /// encoder grows its buffer for a typical answer (a JSON body's escapes may still).
    fn size_hint(&self) -> usize {
        let body = match &self.body {
            Body::Empty => 0,
            Body::Text(text) => text.len(),
            Body::Binary(bytes) => bytes.len() * 4 / 3 + 4,
        };
        let headers: usize = self
            .headers
            .iter()
            .map(|(name, value)| keys::RESPONSE_HEADER_PREFIX.len() + name.len() + value.len())
            .sum();
        // Span and attribute framing and the fixed keys come to under 400 bytes of JSON.
        400 + 40 * self.headers.len() + headers + body + self.rule.as_ref().map_or(0, String::len)
    }

    /// The hit as an OTLP protobuf `TracesData`: one span named `softprobe.inject` carrying the
    /// response (see [`Self::each_attribute`]), written straight from the response rather than
    /// built as a message, encoded and dropped.
    pub fn encode_protobuf(&self) -> Vec<u8> {
        use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};
        fn len_field(tag: u32, len: usize, out: &mut Vec<u8>) {
            encode_key(tag, WireType::LengthDelimited, out);
            encode_varint(len as u64, out);
        }
        fn len_field_size(len: usize) -> usize {
            1 + encoded_len_varint(len as u64) + len
        }
        let mut span = Vec::with_capacity(self.size_hint());
        // Span.name = 5, Span.attributes = 9; KeyValue.key = 1, KeyValue.value = 2;
        // AnyValue.string_value = 1, AnyValue.int_value = 3.
        len_field(5, HIT_SPAN_NAME.len(), &mut span);
        span.extend_from_slice(HIT_SPAN_NAME.as_bytes());
        self.each_attribute(|key, value| {
            let any_value = match value {
                HitValue::Str(s) => len_field_size(s.len()),
                HitValue::Int(i) => 1 + encoded_len_varint(i as u64),
            };
            len_field(
                9,
                len_field_size(key.len()) + len_field_size(any_value),
                &mut span,
            );
            len_field(1, key.len(), &mut span);
            span.extend_from_slice(key.as_bytes());
            len_field(2, any_value, &mut span);
            match value {
                HitValue::Str(s) => {
                    len_field(1, s.len(), &mut span);
                    span.extend_from_slice(s.as_bytes());
                }
                HitValue::Int(i) => {
                    encode_key(3, WireType::Varint, &mut span);
                    encode_varint(i as u64, &mut span);
                }
            }
        });
        // TracesData.resource_spans = 1, ResourceSpans.scope_spans = 2, ScopeSpans.spans = 2.
        let scope_spans = len_field_size(span.len());
        let resource_spans = len_field_size(scope_spans);
        let mut out = Vec::with_capacity(len_field_size(resource_spans));
        len_field(1, resource_spans, &mut out);
        len_field(2, scope_spans, &mut out);
        len_field(2, span.len(), &mut out);
        out.extend_from_slice(&span);
        out
    }

    /// The same hit as OTLP JSON, written directly: default fields left out (as OTLP JSON
    /// allows) and 64-bit integers as strings.
    pub fn encode_json(&self) -> Vec<u8> {
        // Writing into a Vec cannot fail.
        fn string(out: &mut Vec<u8>, s: &str) {
            let _ = serde_json::to_writer(&mut *out, s);
        }
        let mut out = Vec::with_capacity(self.size_hint());
        out.extend_from_slice(br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"name":"#);
        string(&mut out, HIT_SPAN_NAME);
        out.extend_from_slice(br#","attributes":["#);
        let mut first = true;
        self.each_attribute(|key, value| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
            out.extend_from_slice(br#"{"key":"#);
            string(&mut out, key);
            match value {
                HitValue::Str(s) => {
                    out.extend_from_slice(br#","value":{"stringValue":"#);
                    string(&mut out, s);
                }
                HitValue::Int(i) => {
                    out.extend_from_slice(br#","value":{"intValue":""#);
                    let _ = serde_json::to_writer(&mut out, &i);
                    out.push(b'"');
                }
            }
            out.extend_from_slice(b"}}");
        });
        out.extend_from_slice(b"]}]}]}]}");
        out
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

    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    /// The hit as a message, built the plain way: what the direct encoders must produce.
    fn hit_traces(hit: &HitResponse) -> TracesData {
        let mut attributes = Vec::with_capacity(hit.headers.len() + 6);
        hit.each_attribute(|key, value| {
            let value = match value {
                HitValue::Str(s) => AnyValueKind::StringValue(s.to_owned()),
                HitValue::Int(i) => AnyValueKind::IntValue(i),
            };
            attributes.push(kv(key, value));
        });
        TracesData {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        name: HIT_SPAN_NAME.into(),
                        attributes,
                        ..Span::default()
                    }],
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        }
    }

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
        let view = SpanView::of(span, rs.resource.as_ref());
        assert_eq!(view.span_type(), Some("inject"));
        assert_eq!(view.session(), Some("sess_abc"));
        let hop = view.into_hop();
        assert_eq!(hop.direction, Some(Direction::Outbound));
        assert_eq!(hop.service, "checkout");
        assert_eq!(hop.method, "GET");
        assert_eq!((hop.path, hop.query), ("/fragment", "x=1"));
        assert_eq!(hop.host, "softprobe-proxy:8084");
        assert!(hop.headers().any(|header| header == ("X-Trace", "1")));
        assert_eq!(hop.body().as_deref(), Some("{\"a\":1}"));
        assert_eq!(hop.attributes.get("retries"), Some(AttrRef::Int(3)));
        // The same span as protobuf decodes identically, with or without a declared type.
        let bytes = traces.encode_to_vec();
        assert_eq!(decode_traces(&bytes, None).unwrap(), traces);
        assert_eq!(decode_traces(INJECT_JSON.as_bytes(), None).unwrap(), traces);
    }

    /// The hit written directly is byte for byte the hit message prost encodes, and its JSON
    /// decodes to that message.
    #[test]
    fn hit_protobuf_is_the_hit_message() {
        let long = "x".repeat(300);
        let hits = [
            HitResponse {
                status: 201,
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    ("x-long".into(), long.clone()),
                    ("x-escapes".into(), "tab\t \"quoted\" \\ \u{1} ü".into()),
                ],
                body: Body::Text(format!("{{\"a\":\"{long}\"}}")),
                decision: "mock",
                rule: Some("orders".into()),
                layer: "session",
                revision: 300,
            },
            HitResponse {
                status: 500,
                headers: vec![],
                body: Body::Binary(vec![0, 159, 146, 150]),
                decision: "strict_miss",
                rule: None,
                layer: "policy",
                revision: 0,
            },
            HitResponse {
                status: 0,
                headers: vec![("".into(), "".into())],
                body: Body::Empty,
                decision: "error",
                rule: Some(String::new()),
                layer: "case",
                revision: u64::MAX,
            },
        ];
        for hit in &hits {
            assert_eq!(
                hit.encode_protobuf(),
                hit_traces(hit).encode_to_vec(),
                "{hit:?}"
            );
            let json = hit.encode_json();
            assert_eq!(
                decode_traces(&json, Some(Encoding::Json)),
                Ok(hit_traces(hit)),
                "{}",
                String::from_utf8_lossy(&json)
            );
        }
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
        let back = decode_traces(&hit.encode_json(), Some(Encoding::Json)).unwrap();
        let span = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes[0].key, keys::RESPONSE_STATUS);
        let attrs = SpanView::of(span, None).attributes;
        assert_eq!(attrs.get(keys::RESPONSE_STATUS), Some(AttrRef::Int(201)));
        assert_eq!(attrs.string(keys::RESPONSE_BODY), Some("AP8="));
        assert_eq!(attrs.string(keys::RESPONSE_BODY_ENCODING), Some("base64"));
        assert_eq!(attrs.get(keys::SESSION_REVISION), Some(AttrRef::Int(7)));
    }
}
