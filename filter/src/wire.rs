//! OTLP protobuf written and read in place: the field numbers of the messages the filter
//! sends and reads, the framing it writes them with, and a reader that borrows what it reads.
//!
//! The filter sends one span per request it asks about and reads one answer back; building
//! and freeing prost's message trees for them was the largest share of its CPU per request
//! (the runtime reads its side in place for the same reason). prost still encodes a span's
//! plain fields and supplies the varint and key primitives.

use prost::encoding::{
    DecodeContext, WireType, decode_key, decode_varint, encode_key, encode_varint,
    encoded_len_varint, key_len, skip_field,
};

pub(crate) const TRACES_DATA_RESOURCE_SPANS: u32 = 1;
pub(crate) const RESOURCE_SPANS_RESOURCE: u32 = 1;
pub(crate) const RESOURCE_SPANS_SCOPE_SPANS: u32 = 2;
pub(crate) const RESOURCE_ATTRIBUTES: u32 = 1;
pub(crate) const SCOPE_SPANS_SPANS: u32 = 2;
pub(crate) const SPAN_ATTRIBUTES: u32 = 9;
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
/// (framing, UTF-8).
pub(crate) fn first_span_attributes(
    traces: &[u8],
) -> Result<Option<Vec<(&str, Value<'_>)>>, String> {
    let Some(span) = first_span(traces)? else {
        return Ok(None);
    };
    let mut attributes = Vec::new();
    for key_value in messages(span, SPAN_ATTRIBUTES) {
        attributes.push(key_value_of(key_value?)?);
    }
    Ok(Some(attributes))
}

fn first_span(traces: &[u8]) -> Result<Option<&[u8]>, String> {
    for resource_spans in messages(traces, TRACES_DATA_RESOURCE_SPANS) {
        for scope_spans in messages(resource_spans?, RESOURCE_SPANS_SCOPE_SPANS) {
            if let Some(span) = messages(scope_spans?, SCOPE_SPANS_SPANS).next() {
                return span.map(Some);
            }
        }
    }
    Ok(None)
}

/// A `KeyValue`. A field that repeats overrides the earlier one, and repeated `value`
/// messages merge, as in protobuf.
fn key_value_of(key_value: &[u8]) -> Result<(&str, Value<'_>), String> {
    let (mut key, mut value) = ("", Value::Other);
    for field in Fields(key_value) {
        match field? {
            (KEY_VALUE_KEY, Field::Bytes(bytes)) => key = utf8(bytes)?,
            (KEY_VALUE_VALUE, Field::Bytes(any_value)) => {
                for field in Fields(any_value) {
                    value = match field? {
                        (ANY_VALUE_STRING, Field::Bytes(bytes)) => Value::String(utf8(bytes)?),
                        // An int64 is the varint of its two's complement.
                        (ANY_VALUE_INT, Field::Varint(int)) => Value::Int(int as i64),
                        _ => Value::Other,
                    };
                }
            }
            _ => {}
        }
    }
    Ok((key, value))
}

fn utf8(bytes: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(bytes).map_err(|_| "a string is not valid UTF-8".to_owned())
}

/// The length-delimited fields `tag` of `message`, in order.
fn messages(message: &[u8], tag: u32) -> impl Iterator<Item = Result<&[u8], String>> {
    Fields(message).filter_map(move |field| match field {
        Ok((found, Field::Bytes(bytes))) if found == tag => Some(Ok(bytes)),
        Ok(_) => None,
        Err(err) => Some(Err(err)),
    })
}

enum Field<'a> {
    Varint(u64),
    Bytes(&'a [u8]),
    Skipped,
}

/// A message's fields, in order; stops at the first malformed one.
struct Fields<'a>(&'a [u8]);

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        let field = self.read();
        if field.is_err() {
            self.0 = &[];
        }
        Some(field)
    }
}

impl<'a> Fields<'a> {
    fn read(&mut self) -> Result<(u32, Field<'a>), String> {
        let buf = &mut self.0;
        let (tag, wire_type) = decode_key(buf).map_err(|err| err.to_string())?;
        let field = match wire_type {
            WireType::Varint => Field::Varint(decode_varint(buf).map_err(|err| err.to_string())?),
            WireType::LengthDelimited => {
                let len = decode_varint(buf).map_err(|err| err.to_string())?;
                let len = usize::try_from(len)
                    .ok()
                    .filter(|len| *len <= buf.len())
                    .ok_or("a length runs past the end")?;
                let (bytes, rest) = buf.split_at(len);
                *buf = rest;
                Field::Bytes(bytes)
            }
            other => {
                skip_field(other, tag, buf, DecodeContext::default())
                    .map_err(|err| err.to_string())?;
                Field::Skipped
            }
        };
        Ok((tag, field))
    }
}
