//! The inject hit: the response a rule (or the policy) answers a hop with, written straight to
//! OTLP protobuf or JSON.

use super::keys;
use crate::rules::Body;

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
    /// For a replay: the recorded case span that answered.
    pub case_span_id: Option<String>,
    /// The `consume: once` rule this hit used up, as (layer, position in its document): a
    /// store shared by several runtimes claims it there too, so it fires once across them.
    pub consumed: Option<(&'static str, usize)>,
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
        if let Some(span_id) = &self.case_span_id {
            f(keys::CASE_SPAN_ID, HitValue::Str(span_id));
        }
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
        400 + 40 * self.headers.len()
            + headers
            + body
            + self.rule.as_ref().map_or(0, String::len)
            + self.case_span_id.as_ref().map_or(0, |id| 40 + id.len())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{AttrRef, Encoding, SpanView, decode_traces};
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    use prost::Message as _;

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
                case_span_id: Some("00f067aa0ba902b7".into()),
                consumed: None,
            },
            HitResponse {
                status: 500,
                headers: vec![],
                body: Body::Binary(vec![0, 159, 146, 150]),
                decision: "strict_miss",
                rule: None,
                layer: "policy",
                revision: 0,
                case_span_id: None,
                consumed: None,
            },
            HitResponse {
                status: 0,
                headers: vec![("".into(), "".into())],
                body: Body::Empty,
                decision: "error",
                rule: Some(String::new()),
                layer: "case",
                revision: u64::MAX,
                case_span_id: None,
                consumed: None,
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
    fn hits_carry_status_first_and_decode_back() {
        let hit = HitResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Body::Binary(vec![0, 255]),
            decision: "mock",
            rule: Some("r".into()),
            layer: "session",
            revision: 7,
            case_span_id: None,
            consumed: None,
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
