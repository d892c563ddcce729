//! OTLP protobuf written and read in place: the field numbers of the messages the filter
//! sends and reads, the framing it writes them with, and the answer's attributes read with
//! the runtime's reader (`softprobe_otlp::wire`), borrowed from the answer.
//!
//! The filter sends one span per request it asks about and reads one answer back; building
//! and freeing prost's message trees for them was the largest share of its CPU per request.
//! prost still encodes a span's plain fields and supplies the varint and key primitives.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};
use softprobe_otlp::wire::{Field, Fields};

pub(crate) const TRACES_DATA_RESOURCE_SPANS: u32 = 1;
pub(crate) const RESOURCE_SPANS_RESOURCE: u32 = 1;
pub(crate) const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
pub(crate) const RESOURCE_ATTRIBUTES: u32 = 1;
pub(crate) const SCOPE_SPANS_SPANS: u32 = 2;
pub(crate) const SPAN_TRACE_ID: u32 = 1;
pub(crate) const SPAN_SPAN_ID: u32 = 2;
pub(crate) const SPAN_PARENT_SPAN_ID: u32 = 4;
pub(crate) const SPAN_NAME: u32 = 5;
pub(crate) const SPAN_KIND: u32 = 6;
pub(crate) const SPAN_START: u32 = 7;
pub(crate) const SPAN_END: u32 = 8;
pub(crate) const SPAN_ATTRIBUTES: u32 = 9;
pub(crate) const SPAN_STATUS: u32 = 15;
pub(crate) const STATUS_CODE: u32 = 3;
pub(crate) const KEY_VALUE_KEY: u32 = 1;
pub(crate) const KEY_VALUE_VALUE: u32 = 2;
pub(crate) const ANY_VALUE_STRING: u32 = 1;
pub(crate) const ANY_VALUE_BOOL: u32 = 2;
pub(crate) const ANY_VALUE_INT: u32 = 3;

/// The length-delimited field `tag` holding `len` bytes, in bytes.
pub(crate) fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Starts the length-delimited field `tag`; its `len` bytes follow.
pub(crate) fn open(buf: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// The length-delimited field `tag` holding `bytes`.
pub(crate) fn put_bytes(buf: &mut Vec<u8>, tag: u32, bytes: &[u8]) {
    open(buf, tag, bytes.len());
    buf.extend_from_slice(bytes);
}

// Scalar fields as prost writes them outside a `oneof`: a default (zero, empty) is left out.

/// The length-delimited field `tag` of `len` bytes, in bytes; 0 when `len` is 0.
pub(crate) fn nonempty_field_len(tag: u32, len: usize) -> usize {
    if len == 0 { 0 } else { field_len(tag, len) }
}

/// The varint field `tag` holding `value`, in bytes; 0 when `value` is 0.
pub(crate) fn varint_field_len(tag: u32, value: u64) -> usize {
    if value == 0 {
        0
    } else {
        key_len(tag) + encoded_len_varint(value)
    }
}

/// The varint field `tag` holding `value`, unless `value` is 0.
pub(crate) fn put_varint_field(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, buf);
        encode_varint(value, buf);
    }
}

/// The fixed64 field `tag` holding `value`, in bytes; 0 when `value` is 0.
pub(crate) fn fixed64_field_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + 8 }
}

/// The fixed64 field `tag` holding `value`, unless `value` is 0.
pub(crate) fn put_fixed64_field(buf: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::SixtyFourBit, buf);
        buf.extend_from_slice(&value.to_le_bytes());
    }
}

/// An attribute's value, borrowed from the message it was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Value<'a> {
    String(&'a str),
    Int(i64),
    /// Any other kind, or none.
    Other,
}

/// The attributes (key, value) of the first span in an OTLP `TracesData`, in order, borrowed
/// from it; `None` when it holds no span. Only the messages on the way to them are read; the
/// other fields are framed and skipped, and what is read is checked as prost would check it
/// (framing, wire types, UTF-8).
pub(crate) fn first_span_attributes(
    traces: &[u8],
) -> Result<Option<Vec<(&str, Value<'_>)>>, String> {
    let Some(span) = first_span(traces)? else {
        return Ok(None);
    };
    let mut attributes = Vec::new();
    for key_value in messages(span, SPAN_ATTRIBUTES, "Span.attributes") {
        attributes.push(key_value_of(key_value?)?);
    }
    Ok(Some(attributes))
}

fn first_span(traces: &[u8]) -> Result<Option<&[u8]>, String> {
    let resource_spans = messages(
        traces,
        TRACES_DATA_RESOURCE_SPANS,
        "TracesData.resource_spans",
    );
    for resource_spans in resource_spans {
        let scope_spans = messages(
            resource_spans?,
            RESOURCE_SPANS_SCOPE_SPANS,
            "ResourceSpans.scope_spans",
        );
        for scope_spans in scope_spans {
            if let Some(span) = messages(scope_spans?, SCOPE_SPANS_SPANS, "ScopeSpans.spans").next()
            {
                return span.map(Some);
            }
        }
    }
    Ok(None)
}

/// A `KeyValue`. A field that repeats overrides the earlier one, and repeated `value`
/// messages merge, as in protobuf: the last field of the value's `oneof` (1 to 8) wins.
fn key_value_of(key_value: &[u8]) -> Result<(&str, Value<'_>), String> {
    let (mut key, mut value) = ("", Value::Other);
    for field in Fields::new(key_value) {
        match field? {
            (KEY_VALUE_KEY, field) => key = field.text("KeyValue.key")?,
            (KEY_VALUE_VALUE, field) => {
                for field in Fields::new(field.bytes("KeyValue.value")?) {
                    value = match field? {
                        (ANY_VALUE_STRING, field) => {
                            Value::String(field.text("AnyValue.string_value")?)
                        }
                        // An int64 is the varint of its two's complement.
                        (ANY_VALUE_INT, Field::Varint(int)) => Value::Int(int as i64),
                        (ANY_VALUE_INT, _) => {
                            return Err("AnyValue.int_value: wrong wire type".into());
                        }
                        (1..=8, _) => Value::Other,
                        _ => continue,
                    };
                }
            }
            _ => {}
        }
    }
    Ok((key, value))
}

/// The length-delimited fields `tag` of `message`, in order (`what` names them in a refusal).
fn messages<'a>(
    message: &'a [u8],
    tag: u32,
    what: &'static str,
) -> impl Iterator<Item = Result<&'a [u8], String>> {
    Fields::new(message).filter_map(move |field| match field {
        Ok((found, field)) if found == tag => Some(field.bytes(what)),
        Ok(_) => None,
        Err(err) => Some(Err(err)),
    })
}
