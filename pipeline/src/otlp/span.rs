//! What routing and matching read from a span: its attributes (decoded or read in place),
//! its resource's and its trace state, behind one view whatever the body's encoding.

use super::keys;
use super::tracestate_session;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};

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
    /// Attributes read in place, borrowed from a protobuf ([`super::wire`]) or JSON
    /// ([`super::json`]) body.
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

/// Number of spans in a trace document.
pub fn span_count(traces: &TracesData) -> usize {
    traces
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}
