//! The OTLP envelope the filter sends: one resource, one scope, one span, and the attribute
//! helpers used to fill it.

use std::borrow::Cow;

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use softprobe_otlp::keys;

use crate::proto::{KeyValue, any_value, span, status};
use crate::wire::{
    ANY_VALUE_BOOL, ANY_VALUE_INT, ANY_VALUE_STRING, KEY_VALUE_KEY, KEY_VALUE_VALUE,
    RESOURCE_ATTRIBUTES, RESOURCE_SPANS_RESOURCE, RESOURCE_SPANS_SCOPE_SPANS, SCOPE_SPANS_SPANS,
    SPAN_ATTRIBUTES, SPAN_END, SPAN_KIND, SPAN_NAME, SPAN_PARENT_SPAN_ID, SPAN_SPAN_ID, SPAN_START,
    SPAN_STATUS, SPAN_TRACE_ID, STATUS_CODE, TRACES_DATA_RESOURCE_SPANS, field_len,
    fixed64_field_len, nonempty_field_len, open, put_bytes, put_fixed64_field, put_varint_field,
    varint_field_len,
};

/// `true` when the request body attribute was cut at `max_body_bytes`.
pub const REQUEST_BODY_TRUNCATED: &str = "http.request.body.truncated";
/// `true` when the response body attribute was cut at `max_body_bytes`.
pub const RESPONSE_BODY_TRUNCATED: &str = "http.response.body.truncated";
/// `sp.span.type` of a lookup.
pub const INJECT: &str = "inject";
/// `sp.span.type` of an observed exchange.
pub const EXTRACT: &str = "extract";

/// Span attributes under construction, kept as the span's encoded `attributes` field.
///
/// They are written to protobuf as they are added, borrowing keys and values: a span holds a
/// dozen or more of them, and building a `KeyValue` tree first cost two allocations per
/// attribute plus a second walk to size it, on every request the filter asks about.
#[derive(Debug, Default, Clone)]
pub struct Attributes(Vec<u8>);

impl Attributes {
    /// Room for about `n` attributes, so that adding them rarely reallocates (48 bytes each: a
    /// header's key and value, framed, usually fit).
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n * 48))
    }

    /// Adds a string attribute.
    pub fn string(&mut self, key: &str, value: &str) -> &mut Self {
        put_string_key_value(&mut self.0, SPAN_ATTRIBUTES, &[key], value);
        self
    }

    /// Adds a header as a string attribute keyed `prefix` + `name` in lowercase.
    pub fn header(&mut self, prefix: &str, name: &str, value: &str) -> &mut Self {
        // Hosts hand names over in lowercase already; only other names are copied.
        let name: Cow<'_, str> = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            name.to_ascii_lowercase().into()
        } else {
            name.into()
        };
        put_string_key_value(&mut self.0, SPAN_ATTRIBUTES, &[prefix, &name], value);
        self
    }

    /// Adds an int attribute.
    pub fn int(&mut self, key: &str, value: i64) -> &mut Self {
        // Protobuf writes an int64 as the varint of its two's complement.
        self.varint(key, ANY_VALUE_INT, value as u64)
    }

    /// Adds a bool attribute.
    pub fn bool(&mut self, key: &str, value: bool) -> &mut Self {
        self.varint(key, ANY_VALUE_BOOL, u64::from(value))
    }

    fn varint(&mut self, key: &str, field: u32, value: u64) -> &mut Self {
        let value_len = key_len(field) + encoded_len_varint(value);
        put_key_value(&mut self.0, SPAN_ATTRIBUTES, &[key], value_len);
        encode_key(field, WireType::Varint, &mut self.0);
        encode_varint(value, &mut self.0);
        self
    }
}

/// A span's fields besides its attributes, borrowed from the stream: written straight to the
/// wire, as the attributes are, rather than copied into a prost `Span` first.
#[derive(Debug, Clone, Copy)]
pub struct SpanFields<'a> {
    /// `trace_id`.
    pub trace_id: &'a [u8; 16],
    /// `span_id`.
    pub span_id: &'a [u8; 8],
    /// `parent_span_id`, when the span has a parent.
    pub parent_span_id: Option<&'a [u8; 8]>,
    /// `name`.
    pub name: &'a str,
    /// `kind`.
    pub kind: span::SpanKind,
    /// `start_time_unix_nano`.
    pub start_time_unix_nano: u64,
    /// `end_time_unix_nano`.
    pub end_time_unix_nano: u64,
    /// The status code, when the span has a status.
    pub status: Option<status::StatusCode>,
}

impl Default for SpanFields<'_> {
    /// Zero ids, no name, no times: only the attributes say anything (the runtime's answers).
    fn default() -> Self {
        Self {
            trace_id: &[0; 16],
            span_id: &[0; 8],
            parent_span_id: None,
            name: "",
            kind: span::SpanKind::Unspecified,
            start_time_unix_nano: 0,
            end_time_unix_nano: 0,
            status: None,
        }
    }
}

impl SpanFields<'_> {
    /// Its fields as prost writes them: defaults (empty, zero) left out. Field for field what
    /// [`Self::encode`] writes.
    fn encoded_len(&self) -> usize {
        field_len(SPAN_TRACE_ID, self.trace_id.len())
            + field_len(SPAN_SPAN_ID, self.span_id.len())
            + self
                .parent_span_id
                .map_or(0, |id| field_len(SPAN_PARENT_SPAN_ID, id.len()))
            + nonempty_field_len(SPAN_NAME, self.name.len())
            + varint_field_len(SPAN_KIND, self.kind as u64)
            + fixed64_field_len(SPAN_START, self.start_time_unix_nano)
            + fixed64_field_len(SPAN_END, self.end_time_unix_nano)
            + self
                .status
                .map_or(0, |code| field_len(SPAN_STATUS, status_len(code)))
    }

    fn encode(&self, out: &mut Vec<u8>) {
        put_bytes(out, SPAN_TRACE_ID, self.trace_id);
        put_bytes(out, SPAN_SPAN_ID, self.span_id);
        if let Some(id) = self.parent_span_id {
            put_bytes(out, SPAN_PARENT_SPAN_ID, id);
        }
        if !self.name.is_empty() {
            put_bytes(out, SPAN_NAME, self.name.as_bytes());
        }
        put_varint_field(out, SPAN_KIND, self.kind as u64);
        put_fixed64_field(out, SPAN_START, self.start_time_unix_nano);
        put_fixed64_field(out, SPAN_END, self.end_time_unix_nano);
        if let Some(code) = self.status {
            open(out, SPAN_STATUS, status_len(code));
            put_varint_field(out, STATUS_CODE, code as u64);
        }
    }
}

fn status_len(code: status::StatusCode) -> usize {
    varint_field_len(STATUS_CODE, code as u64)
}

/// `span` with the attributes of every part of `attributes`, in order, wrapped in a
/// `TracesData` whose resource names `service`, protobuf-encoded. (Parts, so that attributes
/// encoded once, a request's, go into two spans without being copied into a third buffer.)
pub fn encode(service: &str, span: &SpanFields<'_>, attributes: &[&Attributes]) -> Vec<u8> {
    let service_len = field_len(ANY_VALUE_STRING, service.len());
    let resource_len = field_len(
        RESOURCE_ATTRIBUTES,
        field_len(KEY_VALUE_KEY, keys::RESOURCE_SERVICE_NAME.len())
            + field_len(KEY_VALUE_VALUE, service_len),
    );
    let span_len = span.encoded_len() + attributes.iter().map(|part| part.0.len()).sum::<usize>();
    let scope_spans_len = field_len(SCOPE_SPANS_SPANS, span_len);
    let resource_spans_len = field_len(RESOURCE_SPANS_RESOURCE, resource_len)
        + field_len(RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
    let mut out = Vec::with_capacity(field_len(TRACES_DATA_RESOURCE_SPANS, resource_spans_len));
    open(&mut out, TRACES_DATA_RESOURCE_SPANS, resource_spans_len);
    open(&mut out, RESOURCE_SPANS_RESOURCE, resource_len);
    put_string_key_value(
        &mut out,
        RESOURCE_ATTRIBUTES,
        &[keys::RESOURCE_SERVICE_NAME],
        service,
    );
    open(&mut out, RESOURCE_SPANS_SCOPE_SPANS, scope_spans_len);
    open(&mut out, SCOPE_SPANS_SPANS, span_len);
    // Protobuf takes a message's fields in any order, and a repeated field's entries wherever
    // they come: the attributes follow the span's other fields.
    span.encode(&mut out);
    for part in attributes {
        out.extend_from_slice(&part.0);
    }
    out
}

/// A string `KeyValue` as field `field` of its message; its key is `key`'s parts joined.
fn put_string_key_value(buf: &mut Vec<u8>, field: u32, key: &[&str], value: &str) {
    put_key_value(buf, field, key, field_len(ANY_VALUE_STRING, value.len()));
    put_bytes(buf, ANY_VALUE_STRING, value.as_bytes());
}

/// Starts a `KeyValue` as field `field` of its message, its key `key`'s parts joined, up to
/// its `AnyValue`'s `value_len` bytes, which the caller writes next.
fn put_key_value(buf: &mut Vec<u8>, field: u32, key: &[&str], value_len: usize) {
    let key_len = key.iter().map(|part| part.len()).sum();
    open(
        buf,
        field,
        field_len(KEY_VALUE_KEY, key_len) + field_len(KEY_VALUE_VALUE, value_len),
    );
    open(buf, KEY_VALUE_KEY, key_len);
    for part in key {
        buf.extend_from_slice(part.as_bytes());
    }
    open(buf, KEY_VALUE_VALUE, value_len);
}

/// A string attribute's value, if `attributes` has one under `key`.
pub fn string_attr<'a>(attributes: &'a [KeyValue], key: &str) -> Option<&'a str> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        }
    })
}

/// An int attribute's value (a string of digits is accepted too).
pub fn int_attr(attributes: &[KeyValue], key: &str) -> Option<i64> {
    attributes.iter().find(|kv| kv.key == key).and_then(|kv| {
        match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::IntValue(i) => Some(*i),
            any_value::Value::StringValue(s) => s.trim().parse().ok(),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{AnyValue, Resource, ResourceSpans, ScopeSpans, Span, Status, TracesData};
    use proptest::prelude::*;
    use prost::Message as _;

    #[derive(Debug, Clone)]
    enum Value {
        String(String),
        /// A header value; its key is the name.
        Header(String),
        Int(i64),
        Bool(bool),
    }

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            // Long enough that lengths take more than one varint byte.
            ".{0,300}".prop_map(Value::String),
            ".{0,20}".prop_map(Value::Header),
            any::<i64>().prop_map(Value::Int),
            any::<bool>().prop_map(Value::Bool),
        ]
    }

    proptest! {
        /// What `encode` writes decodes to the `TracesData` prost would have built from the
        /// same parts.
        #[test]
        fn encodes_what_prost_decodes(
            service in ".{0,40}",
            name in ".{0,200}",
            parent in proptest::option::of(any::<[u8; 8]>()),
            kind in 0..6i32,
            start in any::<u64>(),
            end in any::<u64>(),
            status in proptest::option::of(0..3i32),
            attributes in proptest::collection::vec(("[a-zA-Z._-]{0,40}|.{0,10}", value()), 0..20),
        ) {
            let fields = SpanFields {
                trace_id: &[7; 16],
                span_id: &[9; 8],
                parent_span_id: parent.as_ref(),
                name: &name,
                kind: span::SpanKind::try_from(kind).unwrap(),
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                status: status.map(|code| status::StatusCode::try_from(code).unwrap()),
            };
            let span = Span {
                trace_id: vec![7; 16],
                span_id: vec![9; 8],
                parent_span_id: parent.map(|id| id.to_vec()).unwrap_or_default(),
                name: name.clone(),
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                status: status.map(|code| Status { code, ..Default::default() }),
                ..Default::default()
            };
            let mut written = Attributes::default();
            let mut expected = Vec::new();
            for (key, value) in &attributes {
                let mut key = key.clone();
                let any = match value {
                    Value::String(s) => {
                        written.string(&key, s);
                        any_value::Value::StringValue(s.clone())
                    }
                    Value::Header(s) => {
                        written.header("http.request.header.", &key, s);
                        key = format!("http.request.header.{}", key.to_ascii_lowercase());
                        any_value::Value::StringValue(s.clone())
                    }
                    Value::Int(i) => {
                        written.int(&key, *i);
                        any_value::Value::IntValue(*i)
                    }
                    Value::Bool(b) => {
                        written.bool(&key, *b);
                        any_value::Value::BoolValue(*b)
                    }
                };
                expected.push(KeyValue {
                    key,
                    value: Some(AnyValue { value: Some(any) }),
                    ..Default::default()
                });
            }
            let bytes = encode(&service, &fields, &[&written]);
            let service_name = KeyValue {
                key: keys::RESOURCE_SERVICE_NAME.to_owned(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(service.clone())),
                }),
                ..Default::default()
            };
            let want = TracesData {
                resource_spans: vec![ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![service_name],
                        ..Default::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span { attributes: expected, ..span }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            prop_assert_eq!(TracesData::decode(bytes.as_slice()).unwrap(), want);
        }
    }
}
