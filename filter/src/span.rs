//! The OTLP envelope the filter sends: one resource, one scope, one span, and the attribute
//! helpers used to fill it.

use prost::Message as _;
use softprobe_otlp::keys;

use crate::proto::{
    AnyValue, KeyValue, Resource, ResourceSpans, ScopeSpans, Span, TracesData, any_value,
};

/// `true` when the request body attribute was cut at `max_body_bytes`.
pub const REQUEST_BODY_TRUNCATED: &str = "http.request.body.truncated";
/// `true` when the response body attribute was cut at `max_body_bytes`.
pub const RESPONSE_BODY_TRUNCATED: &str = "http.response.body.truncated";
/// `sp.span.type` of a lookup.
pub const INJECT: &str = "inject";
/// `sp.span.type` of an observed exchange.
pub const EXTRACT: &str = "extract";

/// Span attributes under construction.
#[derive(Debug, Default)]
pub struct Attributes(Vec<KeyValue>);

impl Attributes {
    /// Room for `n` attributes, so that adding them does not reallocate.
    pub fn with_capacity(n: usize) -> Self {
        Self(Vec::with_capacity(n))
    }

    /// Adds a string attribute.
    pub fn string(&mut self, key: impl Into<String>, value: impl Into<String>) -> &mut Self {
        self.push(key.into(), any_value::Value::StringValue(value.into()))
    }

    /// Adds an int attribute.
    pub fn int(&mut self, key: impl Into<String>, value: i64) -> &mut Self {
        self.push(key.into(), any_value::Value::IntValue(value))
    }

    /// Adds a bool attribute.
    pub fn bool(&mut self, key: impl Into<String>, value: bool) -> &mut Self {
        self.push(key.into(), any_value::Value::BoolValue(value))
    }

    fn push(&mut self, key: String, value: any_value::Value) -> &mut Self {
        self.0.push(KeyValue {
            key,
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        });
        self
    }

    /// The attributes, in insertion order.
    pub fn into_inner(self) -> Vec<KeyValue> {
        self.0
    }
}

/// `span` wrapped in a `TracesData` whose resource names `service`, protobuf-encoded.
pub fn encode(service: &str, span: Span) -> Vec<u8> {
    let mut resource = Attributes::default();
    resource.string(keys::RESOURCE_SERVICE_NAME, service);
    TracesData {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: resource.into_inner(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![span],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
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
