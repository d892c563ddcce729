//! OTLP protobuf read in place: bodies checked as prost decodes them, and the spans of a
//! lookup borrowed from the body.
//!
//! An inject body is read for a handful of attributes and dropped microseconds later, and an
//! export batch that a capture keeps as received only needs its sessions and header names read.
//! Materializing either as `TracesData` (a `String` per key and value, a `Vec` per level, all
//! freed again) was the largest single cost of both paths. [`check`] walks a body once and
//! accepts exactly what prost's decoding of `TracesData` accepts, without allocating, before a
//! capture keeps it; [`spans`] borrows every string a lookup reads from the body.

use super::{AttrRef, Attributes, DecodeError, SpanView, header_name, keys, session_of};
use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use softprobe_otlp::wire::{Field, Fields, RECURSION_LIMIT, nested_too_deeply, utf8};

/// The spans of an OTLP `TracesData` (or `ExportTraceServiceRequest`: same wire shape), in
/// order, each with its resource's attributes. For an inject lookup, which is answered and
/// dropped, the fields read are checked as prost checks them and the others only framed: a
/// full [`check`] first cost a tenth more CPU per inject in the bench.
pub fn spans(body: &[u8]) -> Result<Vec<SpanView<'_>>, DecodeError> {
    read_spans(body).map_err(malformed)
}

fn malformed(reason: String) -> DecodeError {
    DecodeError::Malformed(format!("invalid OTLP protobuf: {reason}"))
}

/// An OTLP protobuf export body that [`check`] accepted, kept as received, with what the
/// pipeline routes it by.
#[derive(Debug, Clone)]
pub struct Checked {
    body: Bytes,
    routing: Routing,
}

/// What session enrichment and redaction read from an export batch, gathered once when it is
/// checked, so neither has to decode it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routing {
    /// How many spans.
    pub spans: usize,
    /// The session every span names, when there are spans and they all name the same one.
    pub session: Option<String>,
    /// The distinct names of the header attributes (`http.request.header.<name>`,
    /// `http.response.header.<name>`) that hold a string, in order of appearance.
    pub header_names: Vec<String>,
}

impl Checked {
    /// Checks `body` and reads its routing.
    pub fn new(body: Bytes) -> Result<Self, DecodeError> {
        check(&body)?;
        let routing = route(&body).map_err(malformed)?;
        Ok(Self { body, routing })
    }

    /// What the batch is routed by.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }

    /// The body decoded.
    pub fn decode(&self) -> Result<TracesData, DecodeError> {
        TracesData::decode(self.body.as_ref()).map_err(|err| malformed(err.to_string()))
    }

    /// The body as received.
    pub fn as_bytes(&self) -> &[u8] {
        &self.body
    }
}

/// Reads the routing of a checked body: byte comparisons on attribute keys, no copies but the
/// session id and the header names.
fn route(body: &[u8]) -> Result<Routing, String> {
    let mut routing = Routing::default();
    // The first span's session, and whether every later span names the same.
    let mut first: Option<Option<&str>> = None;
    let mut uniform = true;
    each_span(
        body,
        |resource_session: &mut Option<AttrRef<'_>>, key_value| {
            if resource_session.is_none() && kv_key(key_value)? == keys::SESSION_ID.as_bytes() {
                *resource_session = Some(attr_ref(kv_value(key_value)?)?);
            }
            Ok(())
        },
        |resource_session, span| {
            let session = route_span(span, *resource_session, &mut routing.header_names)?;
            routing.spans += 1;
            match first {
                None => first = Some(session),
                Some(first) => uniform &= first == session,
            }
            Ok(())
        },
    )?;
    routing.session = first.flatten().filter(|_| uniform).map(str::to_owned);
    Ok(routing)
}

/// Walks the spans of a body in order. For each `ResourceSpans`, `resource_attribute` first
/// folds every attribute of its resource (a repeated singular message merges, so every
/// occurrence adds attributes) into a fresh `R`; then `span` gets that `R` and each span's bytes.
fn each_span<'a, R: Default>(
    body: &'a [u8],
    mut resource_attribute: impl FnMut(&mut R, &'a [u8]) -> Result<(), String>,
    mut span: impl FnMut(&R, &'a [u8]) -> Result<(), String>,
) -> Result<(), String> {
    // TracesData.resource_spans = 1; ResourceSpans.resource = 1, scope_spans = 2;
    // Resource.attributes = 1; ScopeSpans.spans = 2.
    for field in Fields::new(body) {
        let (1, value) = field? else { continue };
        let resource_spans = value.bytes("TracesData.resource_spans")?;
        let mut resource = R::default();
        for field in Fields::new(resource_spans) {
            let (1, value) = field? else { continue };
            for field in Fields::new(value.bytes("ResourceSpans.resource")?) {
                let (1, value) = field? else { continue };
                resource_attribute(&mut resource, value.bytes("Resource.attributes")?)?;
            }
        }
        for field in Fields::new(resource_spans) {
            let (2, value) = field? else { continue };
            for field in Fields::new(value.bytes("ResourceSpans.scope_spans")?) {
                let (2, value) = field? else { continue };
                span(&resource, value.bytes("ScopeSpans.spans")?)?;
            }
        }
    }
    Ok(())
}

/// One span's session (as [`SpanView::session`] reads it); adds header names not seen yet.
fn route_span<'a>(
    span: &'a [u8],
    resource_session: Option<AttrRef<'a>>,
    header_names: &mut Vec<String>,
) -> Result<Option<&'a str>, String> {
    let (mut own_session, mut trace_state) = (None, "");
    for field in Fields::new(span) {
        match field? {
            (3, value) => trace_state = value.text("Span.trace_state")?,
            (9, value) => {
                // Values are only read for the few keys that matter.
                let key_value = value.bytes("Span.attributes")?;
                let key = kv_key(key_value)?;
                if key == keys::SESSION_ID.as_bytes() {
                    if own_session.is_none() {
                        own_session = Some(attr_ref(kv_value(key_value)?)?);
                    }
                } else if let Some(name) = header_name(utf8(key, "KeyValue.key")?)
                    && !header_names.iter().any(|known| known == name)
                    && matches!(kv_value(key_value)?, Some((1, _)))
                {
                    header_names.push(name.to_owned());
                }
            }
            _ => {}
        }
    }
    Ok(session_of(own_session, resource_session, trace_state))
}

fn read_spans(body: &[u8]) -> Result<Vec<SpanView<'_>>, String> {
    let mut spans = Vec::new();
    each_span(body, read_key_value, |resource: &Vec<_>, span| {
        spans.push(read_span(span, resource)?);
        Ok(())
    })?;
    Ok(spans)
}

/// Span.trace_state = 3, Span.attributes = 9.
fn read_span<'a>(
    span: &'a [u8],
    resource: &[(&'a str, AttrRef<'a>)],
) -> Result<SpanView<'a>, String> {
    // Room for a typical proxied request's attributes, so the list rarely grows.
    let (mut attributes, mut trace_state) = (Vec::with_capacity(16), "");
    for field in Fields::new(span) {
        match field? {
            (3, value) => trace_state = value.text("Span.trace_state")?,
            (9, value) => read_key_value(&mut attributes, value.bytes("Span.attributes")?)?,
            _ => {}
        }
    }
    Ok(SpanView {
        attributes: Attributes::Wire(attributes),
        resource: Attributes::Wire(resource.to_vec()),
        trace_state,
    })
}

/// KeyValue.key = 1, KeyValue.value = 2 (an AnyValue): [`kv_key`] and [`kv_value`] in one
/// walk of the pair, as every attribute of an inject span is read.
fn read_key_value<'a>(
    out: &mut Vec<(&'a str, AttrRef<'a>)>,
    key_value: &'a [u8],
) -> Result<(), String> {
    if let Some((key, text)) = short_string_attribute(key_value) {
        out.push((
            utf8(key, "KeyValue.key")?,
            AttrRef::Str(utf8(text, "AnyValue.string_value")?),
        ));
        return Ok(());
    }
    walk_key_value(out, key_value)
}

/// [`read_key_value`] for any layout.
fn walk_key_value<'a>(
    out: &mut Vec<(&'a str, AttrRef<'a>)>,
    key_value: &'a [u8],
) -> Result<(), String> {
    let (mut key, mut value) = (&[][..], None);
    for field in Fields::new(key_value) {
        match field? {
            (1, field) => key = field.bytes("KeyValue.key")?,
            (2, field) => {
                for field in Fields::new(field.bytes("KeyValue.value")?) {
                    let (number, field) = field?;
                    if (1..=8).contains(&number) {
                        value = Some((number, field));
                    }
                }
            }
            _ => {}
        }
    }
    out.push((utf8(key, "KeyValue.key")?, attr_ref(value)?));
    Ok(())
}

/// The key and text of a string attribute laid out as every SDK writes one: the key (field 1),
/// then a value (field 2) holding only its string (field 1), each shorter than 128 bytes, and
/// nothing else. [`walk_key_value`] reads the same pair from these bytes; this reads it
/// without the walk, for the dozen such attributes of every inject span.
fn short_string_attribute(key_value: &[u8]) -> Option<(&[u8], &[u8])> {
    let [0x0a, key_len @ 0..0x80, rest @ ..] = key_value else {
        return None;
    };
    let (key, value) = rest.split_at_checked(usize::from(*key_len))?;
    let [
        0x12,
        value_len @ 0..0x80,
        0x0a,
        text_len @ 0..0x80,
        text @ ..,
    ] = value
    else {
        return None;
    };
    (usize::from(*value_len) == usize::from(*text_len) + 2 && text.len() == usize::from(*text_len))
        .then_some((key, text))
}

/// A key-value pair's key as stored (the last `key` field, as prost keeps it).
fn kv_key(key_value: &[u8]) -> Result<&[u8], String> {
    let mut key = &[][..];
    for field in Fields::new(key_value) {
        if let (1, field) = field? {
            key = field.bytes("KeyValue.key")?;
        }
    }
    Ok(key)
}

/// A key-value pair's value as stored: the last field of the value's `oneof`. (Prost merges
/// repeated `value` fields into one `AnyValue`, whose last `oneof` field wins.)
fn kv_value(key_value: &[u8]) -> Result<Option<(u32, Field<'_>)>, String> {
    let mut value = None;
    for field in Fields::new(key_value) {
        let (2, field) = field? else { continue };
        for field in Fields::new(field.bytes("KeyValue.value")?) {
            let (number, field) = field?;
            if (1..=8).contains(&number) {
                value = Some((number, field));
            }
        }
    }
    Ok(value)
}

/// AnyValue: string = 1, bool = 2, int = 3, double = 4; arrays, maps and bytes are not read.
fn attr_ref(value: Option<(u32, Field<'_>)>) -> Result<AttrRef<'_>, String> {
    Ok(match value {
        Some((1, field)) => AttrRef::Str(field.text("AnyValue.string_value")?),
        Some((2, Field::Varint(v))) => AttrRef::Bool(v != 0),
        Some((3, Field::Varint(v))) => AttrRef::Int(v as i64),
        Some((4, Field::Fixed64(bits))) => AttrRef::Double(f64::from_bits(bits)),
        Some((number @ 2..=4, _)) => {
            return Err(format!("AnyValue field {number}: wrong wire type"));
        }
        _ => AttrRef::Other,
    })
}

/// Checks that `body` decodes as OTLP `TracesData` (or `ExportTraceServiceRequest`), refusing
/// exactly what prost's decoding refuses: broken framing, a known field of the wrong wire
/// type, a string that is not UTF-8, nesting deeper than prost's limit. Nothing is allocated.
pub fn check(body: &[u8]) -> Result<(), DecodeError> {
    check_message(Message::TracesData, body, RECURSION_LIMIT).map_err(malformed)
}

/// `budget` is prost's recursion count: entering a message spends one, and a message's fields
/// (or an unknown field's skipped group) may only be read while some is left.
fn check_message(message: Message, body: &[u8], budget: u32) -> Result<(), String> {
    for field in Fields::new(body) {
        let (number, field) = field?;
        let Some((name, kind)) = message.field(number) else {
            let depth = match field {
                Field::Group { depth } => depth,
                _ => 0,
            };
            if budget <= depth {
                return Err(nested_too_deeply());
            }
            continue;
        };
        match (kind, field) {
            (Kind::Varint, Field::Varint(_))
            | (Kind::Fixed64, Field::Fixed64(_))
            | (Kind::Fixed32, Field::Fixed32)
            | (Kind::Bytes, Field::Bytes(_)) => {}
            // Nearly every string on the wire is ASCII, which `is_ascii` confirms a word at
            // a time where `from_utf8` pays a set-up per string.
            (Kind::Text, Field::Bytes(bytes)) => {
                if !bytes.is_ascii() {
                    std::str::from_utf8(bytes)
                        .map_err(|_| format!("{message:?}.{name}: invalid UTF-8"))?;
                }
            }
            (Kind::Message(inner), Field::Bytes(bytes)) => {
                if budget == 0 {
                    return Err(nested_too_deeply());
                }
                check_message(inner, bytes, budget - 1)?;
            }
            _ => return Err(format!("{message:?}.{name}: wrong wire type")),
        }
    }
    Ok(())
}

/// The messages of the OTLP trace schema (opentelemetry-proto's `trace`, `common`, `resource`).
#[derive(Debug, Clone, Copy)]
enum Message {
    TracesData,
    ResourceSpans,
    Resource,
    EntityRef,
    ScopeSpans,
    InstrumentationScope,
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// What a known field holds, as far as decoding can fail on it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// int32/int64/uint32/bool/enum.
    Varint,
    /// fixed64/double.
    Fixed64,
    Fixed32,
    Bytes,
    /// A string: UTF-8.
    Text,
    Message(Message),
}

impl Message {
    /// The name and kind of field `number`, or `None` for a field prost skips.
    fn field(self, number: u32) -> Option<(&'static str, Kind)> {
        use Kind::{Bytes, Fixed32, Fixed64, Message as Msg, Text, Varint};
        use Message as M;
        Some(match (self, number) {
            (M::TracesData, 1) => ("resource_spans", Msg(M::ResourceSpans)),
            (M::ResourceSpans, 1) => ("resource", Msg(M::Resource)),
            (M::ResourceSpans, 2) => ("scope_spans", Msg(M::ScopeSpans)),
            (M::ResourceSpans | M::ScopeSpans, 3) => ("schema_url", Text),
            (M::Resource, 1) => ("attributes", Msg(M::KeyValue)),
            (M::Resource, 2) => ("dropped_attributes_count", Varint),
            (M::Resource, 3) => ("entity_refs", Msg(M::EntityRef)),
            (M::EntityRef, 1) => ("schema_url", Text),
            (M::EntityRef, 2) => ("type", Text),
            (M::EntityRef, 3) => ("id_keys", Text),
            (M::EntityRef, 4) => ("description_keys", Text),
            (M::ScopeSpans, 1) => ("scope", Msg(M::InstrumentationScope)),
            (M::ScopeSpans, 2) => ("spans", Msg(M::Span)),
            (M::InstrumentationScope, 1) => ("name", Text),
            (M::InstrumentationScope, 2) => ("version", Text),
            (M::InstrumentationScope, 3) => ("attributes", Msg(M::KeyValue)),
            (M::InstrumentationScope, 4) => ("dropped_attributes_count", Varint),
            (M::Span, 1) => ("trace_id", Bytes),
            (M::Span, 2) => ("span_id", Bytes),
            (M::Span, 3) => ("trace_state", Text),
            (M::Span, 4) => ("parent_span_id", Bytes),
            (M::Span, 5) => ("name", Text),
            (M::Span, 6) => ("kind", Varint),
            (M::Span, 7) => ("start_time_unix_nano", Fixed64),
            (M::Span, 8) => ("end_time_unix_nano", Fixed64),
            (M::Span, 9) => ("attributes", Msg(M::KeyValue)),
            (M::Span, 10) => ("dropped_attributes_count", Varint),
            (M::Span, 11) => ("events", Msg(M::Event)),
            (M::Span, 12) => ("dropped_events_count", Varint),
            (M::Span, 13) => ("links", Msg(M::Link)),
            (M::Span, 14) => ("dropped_links_count", Varint),
            (M::Span, 15) => ("status", Msg(M::Status)),
            (M::Span, 16) => ("flags", Fixed32),
            (M::Event, 1) => ("time_unix_nano", Fixed64),
            (M::Event, 2) => ("name", Text),
            (M::Event, 3) => ("attributes", Msg(M::KeyValue)),
            (M::Event, 4) => ("dropped_attributes_count", Varint),
            (M::Link, 1) => ("trace_id", Bytes),
            (M::Link, 2) => ("span_id", Bytes),
            (M::Link, 3) => ("trace_state", Text),
            (M::Link, 4) => ("attributes", Msg(M::KeyValue)),
            (M::Link, 5) => ("dropped_attributes_count", Varint),
            (M::Link, 6) => ("flags", Fixed32),
            (M::Status, 2) => ("message", Text),
            (M::Status, 3) => ("code", Varint),
            (M::KeyValue, 1) => ("key", Text),
            (M::KeyValue, 2) => ("value", Msg(M::AnyValue)),
            (M::KeyValue, 3) => ("key_strindex", Varint),
            (M::AnyValue, 1) => ("string_value", Text),
            (M::AnyValue, 2) => ("bool_value", Varint),
            (M::AnyValue, 3) => ("int_value", Varint),
            (M::AnyValue, 4) => ("double_value", Fixed64),
            (M::AnyValue, 5) => ("array_value", Msg(M::ArrayValue)),
            (M::AnyValue, 6) => ("kvlist_value", Msg(M::KeyValueList)),
            (M::AnyValue, 7) => ("bytes_value", Bytes),
            (M::AnyValue, 8) => ("string_value_strindex", Varint),
            (M::ArrayValue, 1) => ("values", Msg(M::AnyValue)),
            (M::KeyValueList, 1) => ("values", Msg(M::KeyValue)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::AttrRef;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn kv(key: &str, value: AnyValueKind) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..KeyValue::default()
        }
    }

    fn sample() -> TracesData {
        let span = |name: &str, attributes| Span {
            trace_id: vec![7; 16],
            span_id: vec![9; 8],
            trace_state: "x-softprobe-session-id=s1,vendor=x".into(),
            name: name.into(),
            kind: 3,
            start_time_unix_nano: 1_700_000_000_000_000_000,
            attributes,
            ..Span::default()
        };
        TracesData {
            resource_spans: vec![
                ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![kv(
                            "service.name",
                            AnyValueKind::StringValue("shop".into()),
                        )],
                        ..Resource::default()
                    }),
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span(
                            "a",
                            vec![
                                kv("sp.span.type", AnyValueKind::StringValue("inject".into())),
                                kv("retries", AnyValueKind::IntValue(-3)),
                                kv("ratio", AnyValueKind::DoubleValue(0.25)),
                                kv("cached", AnyValueKind::BoolValue(true)),
                                kv("empty", AnyValueKind::StringValue(String::new())),
                                kv(
                                    "list",
                                    AnyValueKind::ArrayValue(ArrayValue { values: vec![] }),
                                ),
                                kv("ünïcode", AnyValueKind::StringValue("wört".into())),
                            ],
                        )],
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                },
                ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span("b", vec![]), span("c", vec![])],
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                },
            ],
        }
    }

    /// Every span reads in place exactly as the decoded message reads.
    #[test]
    fn reads_what_prost_decodes() {
        let traces = sample();
        let bytes = traces.encode_to_vec();
        let read = spans(&bytes).unwrap();
        let decoded = crate::otlp::span_views(&traces);
        assert_eq!(read.len(), 3);
        assert_eq!(read, decoded);
        let first: Vec<_> = read[0].attributes.iter().collect();
        assert_eq!(first[1], ("retries", AttrRef::Int(-3)));
        assert_eq!(first[2], ("ratio", AttrRef::Double(0.25)));
        assert_eq!(first[3], ("cached", AttrRef::Bool(true)));
        assert_eq!(first[5], ("list", AttrRef::Other));
        assert_eq!(read[1].resource.iter().count(), 0);
        assert_eq!(spans(&[]).unwrap().len(), 0);
    }

    /// The short-string path reads what the walk reads: on the layout it takes, at its length
    /// edges, on invalid UTF-8, and on thousands of corruptions of a typical attribute.
    #[test]
    fn short_string_attributes_read_as_the_walk_reads_them() {
        let agrees = |key_value: &[u8]| {
            let (mut read, mut walked) = (Vec::new(), Vec::new());
            let read_result = read_key_value(&mut read, key_value);
            let walk_result = walk_key_value(&mut walked, key_value);
            assert_eq!(
                (&read_result, &read),
                (&walk_result, &walked),
                "{key_value:02x?}"
            );
            walk_result.is_ok()
        };
        let string =
            |key: &str, text: &str| kv(key, AnyValueKind::StringValue(text.into())).encode_to_vec();
        let typical = string("url.path", "/v1/items/0");
        assert!(short_string_attribute(&typical).is_some());
        assert!(agrees(&typical));
        let long = "x".repeat(130);
        for (key, text) in [
            ("k", ""),
            ("", "v"),
            ("k", "é"),
            ("k", &long[..125]),
            ("k", &long[..126]),
            ("k", &long),
            (&long, "v"),
        ] {
            assert!(agrees(&string(key, text)), "{key} = {text}");
        }
        // 126 bytes of text make the value 128 bytes long: a two-byte length, the walk's.
        assert!(short_string_attribute(&string("k", &long[..125])).is_some());
        assert!(short_string_attribute(&string("k", &long[..126])).is_none());
        assert!(!agrees(&[0x0a, 1, 0xff, 0x12, 3, 0x0a, 1, b'v']));
        assert!(!agrees(&[0x0a, 1, b'k', 0x12, 3, 0x0a, 1, 0xff]));
        // A second value field, a value holding a string and an int, the value before the key.
        assert!(agrees(&[
            0x0a, 1, b'k', 0x12, 3, 0x0a, 1, b'v', 0x12, 2, 0x18, 7
        ]));
        assert!(agrees(&[0x0a, 1, b'k', 0x12, 5, 0x0a, 1, b'v', 0x18, 7]));
        assert!(agrees(&[0x12, 3, 0x0a, 1, b'v', 0x0a, 1, b'k']));
        crate::corrupt::check_corruptions(&typical, 20_000, &[], agrees);
    }

    /// A batch using every message of the trace schema.
    fn every_message() -> TracesData {
        let mut traces = sample();
        let list = |values| AnyValueKind::ArrayValue(ArrayValue { values });
        let any = |value| AnyValue { value: Some(value) };
        let rs = &mut traces.resource_spans[1];
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
        rs.resource = Some(Resource {
            attributes: vec![kv("sp.session.id", AnyValueKind::StringValue("s2".into()))],
            dropped_attributes_count: 2,
            entity_refs: vec![EntityRef {
                schema_url: "s".into(),
                r#type: "service".into(),
                id_keys: vec!["service.name".into()],
                description_keys: vec!["d".into()],
            }],
        });
        let ss = &mut rs.scope_spans[0];
        ss.scope = Some(InstrumentationScope {
            name: "softprobe".into(),
            version: "1".into(),
            attributes: vec![kv("k", AnyValueKind::BytesValue(vec![0, 255]))],
            dropped_attributes_count: 1,
        });
        let span = &mut ss.spans[0];
        span.parent_span_id = vec![1; 8];
        span.flags = 0x301;
        span.end_time_unix_nano = u64::MAX;
        span.dropped_attributes_count = 3;
        span.attributes = vec![
            kv(
                "nested",
                list(vec![
                    any(AnyValueKind::KvlistValue(KeyValueList {
                        values: vec![kv("deep", AnyValueKind::StringValue("é".into()))],
                    })),
                    any(list(vec![any(AnyValueKind::IntValue(i64::MIN))])),
                ]),
            ),
            KeyValue {
                key_strindex: 4,
                value: Some(any(AnyValueKind::StringValueStrindex(-1))),
                ..KeyValue::default()
            },
            kv("sp.session.id", AnyValueKind::StringValue("s1".into())),
            kv(
                "http.request.header.authorization",
                AnyValueKind::StringValue("Bearer x".into()),
            ),
            kv("http.request.header.accept", AnyValueKind::IntValue(3)),
            kv(
                "http.response.header.set-cookie",
                AnyValueKind::StringValue("a=b".into()),
            ),
            kv(
                "http.request.header.authorization",
                AnyValueKind::StringValue("Bearer y".into()),
            ),
        ];
        span.events = vec![Event {
            time_unix_nano: 5,
            name: "retry".into(),
            attributes: vec![kv("n", AnyValueKind::DoubleValue(-0.0))],
            dropped_attributes_count: 1,
        }];
        span.links = vec![Link {
            trace_id: vec![3; 16],
            span_id: vec![4; 8],
            trace_state: "a=b".into(),
            attributes: vec![kv("l", AnyValueKind::BoolValue(false))],
            dropped_attributes_count: 6,
            flags: 1,
        }];
        span.status = Some(Status {
            message: "boom".into(),
            code: 2,
        });
        traces
    }

    /// The routing of a decoded batch, read through its span views.
    fn routing_of(traces: &TracesData) -> Routing {
        let views = crate::otlp::span_views(traces);
        let sessions: Vec<_> = views.iter().map(SpanView::session).collect();
        let mut header_names: Vec<String> = Vec::new();
        for (key, value) in views.iter().flat_map(|view| view.attributes.iter()) {
            if let (Some(name), AttrRef::Str(_)) = (header_name(key), value)
                && !header_names.iter().any(|known| known == name)
            {
                header_names.push(name.to_owned());
            }
        }
        Routing {
            spans: views.len(),
            session: sessions
                .first()
                .copied()
                .flatten()
                .filter(|first| sessions.iter().all(|s| *s == Some(*first)))
                .map(str::to_owned),
            header_names,
        }
    }

    /// Asserts that `check` and prost's decoding agree on `body`, and that `spans` reads
    /// whatever `check` accepts; returns whether it decodes.
    fn agrees_with_prost(body: &[u8]) -> bool {
        let ours = check(body);
        let prost = TracesData::decode(body);
        assert_eq!(
            ours.is_ok(),
            prost.is_ok(),
            "{body:02x?}\ncheck: {ours:?}\nprost: {prost:?}"
        );
        if let Ok(traces) = prost {
            let checked = Checked::new(Bytes::copy_from_slice(body)).unwrap();
            assert_eq!(checked.routing(), &routing_of(&traces));
        }
        ours.is_ok()
    }

    /// `check` accepts exactly what prost decodes: valid bodies, thousands of random
    /// corruptions of one, and bodies built at prost's edges.
    #[test]
    fn check_accepts_what_prost_decodes() {
        let valid = every_message().encode_to_vec();
        assert!(agrees_with_prost(&valid));
        assert!(agrees_with_prost(&sample().encode_to_vec()));
        let routing = |traces: TracesData| {
            Checked::new(traces.encode_to_vec().into())
                .unwrap()
                .routing()
                .clone()
        };
        assert_eq!(
            routing(sample()),
            Routing {
                spans: 3,
                session: Some("s1".into()),
                header_names: vec![],
            }
        );
        // Span "b" names s1 itself; "c" takes its resource's s2.
        assert_eq!(
            routing(every_message()),
            Routing {
                spans: 3,
                session: None,
                header_names: vec!["authorization".into(), "set-cookie".into()],
            }
        );
        assert!(agrees_with_prost(&[]));

        // Random corruptions.
        crate::corrupt::check_corruptions(&valid, 20_000, &[], agrees_with_prost);

        // Nesting around prost's recursion limit: arrays in arrays in a span attribute.
        let nested = |depth: usize| {
            let mut value = AnyValue::default();
            for _ in 0..depth {
                value = AnyValue {
                    value: Some(AnyValueKind::ArrayValue(ArrayValue {
                        values: vec![value],
                    })),
                };
            }
            let mut traces = sample();
            traces.resource_spans[0].scope_spans[0].spans[0].attributes = vec![KeyValue {
                key: "deep".into(),
                value: Some(value),
                ..KeyValue::default()
            }];
            traces.encode_to_vec()
        };
        let decodes: Vec<bool> = (40..55)
            .map(|depth| agrees_with_prost(&nested(depth)))
            .collect();
        assert!(decodes.contains(&true) && decodes.contains(&false));

        // Unknown fields: groups nested around the limit, varints at 64 bits, keys past u32.
        let group = |depth: u32| {
            let mut body = valid.clone();
            body.extend((0..depth).flat_map(|_| [0xa3, 0x06])); // start group 100
            body.extend((0..depth).flat_map(|_| [0xa4, 0x06])); // end group 100
            body
        };
        for depth in [1, 2, 99, 100, 101, 150] {
            agrees_with_prost(&group(depth));
        }
        assert!(!agrees_with_prost(&group(101)));
        for body in [
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ][..],
            &[
                0x10, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02,
            ][..],
            &[0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00][..],
            &[0xf8, 0xff, 0xff, 0xff, 0x1f, 0x00][..],
            &[0xa3, 0x06, 0xac, 0x06][..],
            &[0xa4, 0x06][..],
            &[0x16][..],
        ] {
            agrees_with_prost(body);
        }
    }

    /// Every cut of a valid body and a few corruptions are refused with a reason, never a panic.
    #[test]
    fn malformed_bodies_are_refused() {
        let bytes = sample().encode_to_vec();
        for cut in 1..bytes.len() {
            // A cut may land on a field boundary at the top level, which is a valid (shorter)
            // message; anything else must be an error, and nothing may panic.
            if let Err(err) = spans(&bytes[..cut]) {
                assert!(
                    err.to_string().starts_with("invalid OTLP protobuf: "),
                    "{err}"
                );
            }
        }
        for (body, reason) in [
            (&b"{\"resourceSpans\":[]}"[..], "overruns"),
            (&[0x0a, 0x05, 0x01][..], "overruns"),
            (&[0x08, 0x80][..], "truncated varint"),
            (&[0x0a, 0x02, 0x12, 0x00, 0xff][..], "truncated varint"),
            (&[0x00, 0x00][..], "field number 0"),
            (
                &[0x08, 0x01][..],
                "TracesData.resource_spans: wrong wire type",
            ),
        ] {
            for err in [spans(body).unwrap_err(), check(body).unwrap_err()] {
                let err = err.to_string();
                assert!(err.contains(reason), "{body:?}: {err}");
            }
        }
        // A key that is not UTF-8.
        let mut bad = sample();
        bad.resource_spans[0].scope_spans[0].spans[0].attributes[0].key = "ÿ".into();
        let mut bytes = bad.encode_to_vec();
        let at = bytes.windows(2).position(|w| w == "ÿ".as_bytes()).unwrap();
        bytes[at] = 0xff;
        for err in [spans(&bytes).unwrap_err(), check(&bytes).unwrap_err()] {
            let err = err.to_string();
            assert!(err.contains("KeyValue.key: invalid UTF-8"), "{err}");
        }
    }
}
