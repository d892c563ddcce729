//! OTLP protobuf read in place: the spans of an inject lookup, borrowed from the request body.
//!
//! An inject body is read for a handful of attributes and dropped microseconds later.
//! Materializing it as `TracesData` (a `String` per key and value, a `Vec` per level, all freed
//! again) was the largest single cost of an HTTP inject. This reader walks the wire format once
//! and borrows every string from the body. The framing of every field is checked; the fields a
//! lookup reads are checked as prost checks them (wire types, UTF-8); fields it does not read
//! are skipped whole, not parsed.

use crate::otlp::{AttrRef, Attributes, DecodeError, SpanView};

/// The spans of an OTLP `TracesData` (or `ExportTraceServiceRequest`: same wire shape), in
/// order, each with its resource's attributes.
pub fn spans(body: &[u8]) -> Result<Vec<SpanView<'_>>, DecodeError> {
    read_spans(body)
        .map_err(|reason| DecodeError::Malformed(format!("invalid OTLP protobuf: {reason}")))
}

fn read_spans(body: &[u8]) -> Result<Vec<SpanView<'_>>, String> {
    let mut spans = Vec::new();
    // TracesData.resource_spans = 1
    for field in Fields::new(body) {
        let (1, value) = field? else { continue };
        let resource_spans = value.bytes("TracesData.resource_spans")?;
        // ResourceSpans.resource = 1 (its attributes = 1), scope_spans = 2. A repeated
        // singular message merges, so every occurrence adds attributes.
        let mut resource = Vec::new();
        for field in Fields::new(resource_spans) {
            if let (1, value) = field? {
                read_attributes(value.bytes("ResourceSpans.resource")?, &mut resource)?;
            }
        }
        for field in Fields::new(resource_spans) {
            let (2, value) = field? else { continue };
            // ScopeSpans.spans = 2
            for field in Fields::new(value.bytes("ResourceSpans.scope_spans")?) {
                let (2, value) = field? else { continue };
                let mut span = SpanView {
                    attributes: Attributes::Wire(Vec::new()),
                    resource: Attributes::Wire(resource.clone()),
                    trace_state: "",
                };
                read_span(value.bytes("ScopeSpans.spans")?, &mut span)?;
                spans.push(span);
            }
        }
    }
    Ok(spans)
}

/// Span.trace_state = 3, Span.attributes = 9.
fn read_span<'a>(span: &'a [u8], view: &mut SpanView<'a>) -> Result<(), String> {
    let mut attributes = Vec::new();
    for field in Fields::new(span) {
        match field? {
            (3, value) => view.trace_state = value.text("Span.trace_state")?,
            (9, value) => read_key_value(value.bytes("Span.attributes")?, &mut attributes)?,
            _ => {}
        }
    }
    view.attributes = Attributes::Wire(attributes);
    Ok(())
}

/// Resource.attributes = 1.
fn read_attributes<'a>(
    resource: &'a [u8],
    out: &mut Vec<(&'a str, AttrRef<'a>)>,
) -> Result<(), String> {
    for field in Fields::new(resource) {
        if let (1, value) = field? {
            read_key_value(value.bytes("Resource.attributes")?, out)?;
        }
    }
    Ok(())
}

/// KeyValue.key = 1, KeyValue.value = 2 (an AnyValue).
fn read_key_value<'a>(
    key_value: &'a [u8],
    out: &mut Vec<(&'a str, AttrRef<'a>)>,
) -> Result<(), String> {
    let mut key = "";
    let mut value = AttrRef::Other;
    for field in Fields::new(key_value) {
        match field? {
            (1, field) => key = field.text("KeyValue.key")?,
            (2, field) => value = read_any_value(field.bytes("KeyValue.value")?)?,
            _ => {}
        }
    }
    out.push((key, value));
    Ok(())
}

/// AnyValue: string = 1, bool = 2, int = 3, double = 4; arrays, maps and bytes are not read.
fn read_any_value(any_value: &[u8]) -> Result<AttrRef<'_>, String> {
    let mut value = AttrRef::Other;
    for field in Fields::new(any_value) {
        value = match field? {
            (1, field) => AttrRef::Str(field.text("AnyValue.string_value")?),
            (2, Field::Varint(v)) => AttrRef::Bool(v != 0),
            (3, Field::Varint(v)) => AttrRef::Int(v as i64),
            (4, Field::Fixed64(bits)) => AttrRef::Double(f64::from_bits(bits)),
            (number @ 2..=4, _) => return Err(format!("AnyValue field {number}: wrong wire type")),
            _ => AttrRef::Other,
        };
    }
    Ok(value)
}

/// One field's payload.
#[derive(Debug, Clone, Copy)]
enum Field<'a> {
    Varint(u64),
    Fixed64(u64),
    Fixed32,
    Bytes(&'a [u8]),
}

impl<'a> Field<'a> {
    fn bytes(self, what: &str) -> Result<&'a [u8], String> {
        match self {
            Field::Bytes(bytes) => Ok(bytes),
            _ => Err(format!(
                "{what}: wrong wire type, expected length-delimited"
            )),
        }
    }

    fn text(self, what: &str) -> Result<&'a str, String> {
        std::str::from_utf8(self.bytes(what)?).map_err(|_| format!("{what}: invalid UTF-8"))
    }
}

/// The fields of one message, in wire order; stops at the first framing error.
struct Fields<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Fields<'a> {
    fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    fn varint(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            value |= u64::from(byte & 0x7f) << shift;
            if byte < 0x80 {
                return Ok(value);
            }
        }
        Err("varint longer than 10 bytes".into())
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(len)
            .filter(|end| *end <= self.buf.len())
            .ok_or_else(|| format!("field of {len} bytes overruns its message"))?;
        let bytes = &self.buf[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn field(&mut self) -> Result<(u32, Field<'a>), String> {
        let key = self.varint()?;
        let number = u32::try_from(key >> 3).map_err(|_| "field number out of range")?;
        if number == 0 {
            return Err("field number 0".into());
        }
        let field = match key & 7 {
            0 => Field::Varint(self.varint()?),
            1 => Field::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().map_err(|_| "fixed64")?,
            )),
            2 => {
                let len = usize::try_from(self.varint()?).map_err(|_| "length out of range")?;
                Field::Bytes(self.take(len)?)
            }
            5 => {
                self.take(4)?;
                Field::Fixed32
            }
            other => return Err(format!("wire type {other} (groups are not OTLP)")),
        };
        Ok((number, field))
    }
}

impl<'a> Iterator for Fields<'a> {
    type Item = Result<(u32, Field<'a>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.pos >= self.buf.len() {
            return None;
        }
        let field = self.field();
        if field.is_err() {
            self.pos = self.buf.len();
        }
        Some(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::AttrRef;
    use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, ArrayValue, KeyValue};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
    use prost::Message as _;

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
        for (read, decoded) in read.iter().zip(&decoded) {
            assert_eq!(
                read.attributes.iter().collect::<Vec<_>>(),
                decoded.attributes.iter().collect::<Vec<_>>()
            );
            assert_eq!(
                read.resource.iter().collect::<Vec<_>>(),
                decoded.resource.iter().collect::<Vec<_>>()
            );
            assert_eq!(read.trace_state, decoded.trace_state);
        }
        let first: Vec<_> = read[0].attributes.iter().collect();
        assert_eq!(first[1], ("retries", AttrRef::Int(-3)));
        assert_eq!(first[2], ("ratio", AttrRef::Double(0.25)));
        assert_eq!(first[3], ("cached", AttrRef::Bool(true)));
        assert_eq!(first[5], ("list", AttrRef::Other));
        assert_eq!(read[1].resource.iter().count(), 0);
        assert_eq!(spans(&[]).unwrap().len(), 0);
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
            (&b"{\"resourceSpans\":[]}"[..], "wire type 3"),
            (&[0x0a, 0x05, 0x01][..], "overruns"),
            (&[0x08, 0x80][..], "truncated varint"),
            (&[0x0a, 0x02, 0x12, 0x00, 0xff][..], "truncated varint"),
            (&[0x00, 0x00][..], "field number 0"),
            (
                &[0x08, 0x01][..],
                "TracesData.resource_spans: wrong wire type",
            ),
        ] {
            let err = spans(body).unwrap_err().to_string();
            assert!(err.contains(reason), "{body:?}: {err}");
        }
        // A key that is not UTF-8.
        let mut bad = sample();
        bad.resource_spans[0].scope_spans[0].spans[0].attributes[0].key = "ÿ".into();
        let mut bytes = bad.encode_to_vec();
        let at = bytes.windows(2).position(|w| w == "ÿ".as_bytes()).unwrap();
        bytes[at] = 0xff;
        let err = spans(&bytes).unwrap_err().to_string();
        assert!(err.contains("KeyValue.key: invalid UTF-8"), "{err}");
    }
}
