//! OTLP JSON read for an inject lookup: only the fields a lookup reads, borrowed from the body
//! unless an escape forces a copy.
//!
//! Decoding the whole body into `TracesData` (through opentelemetry-proto's serde, which
//! buffers every attribute value on the way) was most of a JSON inject's CPU, and reading it
//! through serde-derived borrowed structs still cost twice what serde_json needs just to skip
//! the body. So this is a small reader of its own: one pass, two flat lists. As with
//! [`crate::wire::spans`] for protobuf, the fields read are type-checked and everything else
//! only has to be well-formed JSON. It accepts exactly what those serde structs accepted,
//! except bytes that are not UTF-8 inside a string serde_json would skip (JSON is UTF-8
//! throughout); a test keeps them as its model.

use crate::otlp::{AttrRef, Attributes, DecodeError, SpanView, json_text};
use std::borrow::Cow;
use std::ops::Range;

/// The parts of an OTLP JSON `TracesData` (or `ExportTraceServiceRequest`) a lookup reads.
#[derive(Debug)]
pub struct Traces<'a> {
    /// Every attribute read, resources' and spans' alike, in body order.
    attributes: Vec<(Cow<'a, str>, Value<'a>)>,
    spans: Vec<SpanEntry<'a>>,
}

#[derive(Debug)]
struct SpanEntry<'a> {
    /// Its resource's attributes, in [`Traces::attributes`].
    resource: Range<usize>,
    /// Its own.
    attributes: Range<usize>,
    trace_state: Cow<'a, str>,
}

/// An attribute value; arrays, maps and bytes are skipped, not read.
#[derive(Debug)]
enum Value<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    Double(f64),
    Other,
}

/// Reads `body`.
pub fn traces(body: &[u8]) -> Result<Traces<'_>, DecodeError> {
    let mut reader = Reader::new(json_text(body)?);
    let mut traces = Traces {
        // Room for a typical proxied request's attributes, so the list rarely grows.
        attributes: Vec::with_capacity(16),
        spans: Vec::with_capacity(1),
    };
    let mut resource_spans = Once::new("resourceSpans");
    reader.object(|r, field| match field {
        "resourceSpans" => {
            resource_spans.claim(r)?;
            r.unless_null(|r| r.array(|r| traces.resource_spans(r)))
        }
        _ => r.skip_value(),
    })?;
    reader.end()?;
    Ok(traces)
}

impl<'a> Traces<'a> {
    /// The spans in order, each with its resource's attributes, as [`crate::wire::spans`]
    /// reads them from protobuf.
    pub fn spans(&'a self) -> Vec<SpanView<'a>> {
        let attributes = |range: &Range<usize>| {
            Attributes::Wire(
                self.attributes[range.clone()]
                    .iter()
                    .map(|(key, value)| (key.as_ref(), value.as_ref()))
                    .collect(),
            )
        };
        self.spans
            .iter()
            .map(|span| SpanView {
                attributes: attributes(&span.attributes),
                resource: attributes(&span.resource),
                trace_state: &span.trace_state,
            })
            .collect()
    }

    /// `ResourceSpans`: `resource.attributes` and `scopeSpans[].spans[]`, in either order.
    fn resource_spans(&mut self, r: &mut Reader<'a>) -> Result<(), DecodeError> {
        let first_span = self.spans.len();
        let mut resource = 0..0;
        let mut resource_field = Once::new("resource");
        let mut scope_spans = Once::new("scopeSpans");
        r.object(|r, field| match field {
            "resource" => {
                resource_field.claim(r)?;
                r.unless_null(|r| {
                    let mut attributes = Once::new("attributes");
                    r.object(|r, field| match field {
                        "attributes" => {
                            attributes.claim(r)?;
                            resource = self.key_values(r)?;
                            Ok(())
                        }
                        _ => r.skip_value(),
                    })
                })
            }
            "scopeSpans" => {
                scope_spans.claim(r)?;
                r.unless_null(|r| {
                    r.array(|r| {
                        let mut spans = Once::new("spans");
                        r.object(|r, field| match field {
                            "spans" => {
                                spans.claim(r)?;
                                r.unless_null(|r| r.array(|r| self.span(r)))
                            }
                            _ => r.skip_value(),
                        })
                    })
                })
            }
            _ => r.skip_value(),
        })?;
        for span in &mut self.spans[first_span..] {
            span.resource = resource.clone();
        }
        Ok(())
    }

    /// `Span`: `traceState` and `attributes`.
    fn span(&mut self, r: &mut Reader<'a>) -> Result<(), DecodeError> {
        let (mut trace_state, mut attributes) = (None, None);
        let mut trace_state_field = Once::new("traceState");
        let mut attributes_field = Once::new("attributes");
        r.object(|r, field| match field {
            "traceState" => {
                trace_state_field.claim(r)?;
                trace_state = r.nullable(Reader::string)?;
                Ok(())
            }
            "attributes" => {
                attributes_field.claim(r)?;
                attributes = Some(self.key_values(r)?);
                Ok(())
            }
            _ => r.skip_value(),
        })?;
        self.spans.push(SpanEntry {
            resource: 0..0,
            attributes: attributes.unwrap_or_default(),
            trace_state: trace_state.unwrap_or_default(),
        });
        Ok(())
    }

    /// An attribute list (or `null`), appended to [`Self::attributes`]; returns where it went.
    fn key_values(&mut self, r: &mut Reader<'a>) -> Result<Range<usize>, DecodeError> {
        let start = self.attributes.len();
        r.unless_null(|r| {
            r.array(|r| {
                let entry = key_value(r)?;
                self.attributes.push(entry);
                Ok(())
            })
        })?;
        Ok(start..self.attributes.len())
    }
}

impl Value<'_> {
    fn as_ref(&self) -> AttrRef<'_> {
        match self {
            Self::Str(s) => AttrRef::Str(s),
            Self::Bool(b) => AttrRef::Bool(*b),
            Self::Int(i) => AttrRef::Int(*i),
            Self::Double(d) => AttrRef::Double(*d),
            Self::Other => AttrRef::Other,
        }
    }
}

/// `KeyValue`: `key` (required) and `value`.
fn key_value<'a>(r: &mut Reader<'a>) -> Result<(Cow<'a, str>, Value<'a>), DecodeError> {
    let (mut key, mut value) = (None, None);
    let (mut key_field, mut value_field) = (Once::new("key"), Once::new("value"));
    r.object(|r, field| match field {
        "key" => {
            key_field.claim(r)?;
            key = Some(r.string()?);
            Ok(())
        }
        "value" => {
            value_field.claim(r)?;
            value = r.nullable(any_value)?;
            Ok(())
        }
        _ => r.skip_value(),
    })?;
    let key = key.ok_or_else(|| r.error("missing field `key`"))?;
    let value = match value {
        Some(AnyValue::Text(text)) => Value::Str(text),
        Some(AnyValue::Bool(b)) => Value::Bool(b),
        Some(AnyValue::Int(raw)) => {
            Value::Int(number(r, &key, "intValue", raw, "a 64-bit integer")?)
        }
        Some(AnyValue::Double(raw)) => {
            Value::Double(number(r, &key, "doubleValue", raw, "a number")?)
        }
        Some(AnyValue::Other) | None => Value::Other,
    };
    Ok((key, value))
}

/// What an `AnyValue` holds, numbers still as written.
enum AnyValue<'a> {
    Text(Cow<'a, str>),
    Bool(bool),
    Int(&'a str),
    Double(&'a str),
    Other,
}

/// `AnyValue`: the first of `stringValue`, `boolValue`, `intValue`, `doubleValue` present.
fn any_value<'a>(r: &mut Reader<'a>) -> Result<AnyValue<'a>, DecodeError> {
    let (mut text, mut boolean, mut int, mut double) = (None, None, None, None);
    let mut fields = [
        Once::new("stringValue"),
        Once::new("boolValue"),
        Once::new("intValue"),
        Once::new("doubleValue"),
    ];
    r.object(|r, field| match field {
        "stringValue" => {
            fields[0].claim(r)?;
            text = r.nullable(Reader::string)?;
            Ok(())
        }
        "boolValue" => {
            fields[1].claim(r)?;
            boolean = r.nullable(Reader::boolean)?;
            Ok(())
        }
        // 64-bit integers come as a number or, as OTLP JSON writes them, a string holding one;
        // doubles as a number or a string (`"NaN"`, `"Infinity"`).
        "intValue" => {
            fields[2].claim(r)?;
            int = r.nullable(Reader::raw_value)?;
            Ok(())
        }
        "doubleValue" => {
            fields[3].claim(r)?;
            double = r.nullable(Reader::raw_value)?;
            Ok(())
        }
        _ => r.skip_value(),
    })?;
    Ok(match (text, boolean, int, double) {
        (Some(text), ..) => AnyValue::Text(text),
        (None, Some(b), ..) => AnyValue::Bool(b),
        (None, None, Some(raw), _) => AnyValue::Int(raw),
        (None, None, None, Some(raw)) => AnyValue::Double(raw),
        (None, None, None, None) => AnyValue::Other,
    })
}

/// A number written as a JSON number or a string holding one (`42`, `"42"`, `"NaN"`).
fn number<T: std::str::FromStr>(
    r: &Reader<'_>,
    key: &str,
    field: &str,
    raw: &str,
    expected: &str,
) -> Result<T, DecodeError> {
    raw.trim_matches('"').parse().map_err(|_| {
        // The value as written, up to 64 characters: enough to see, never the whole body.
        let shown = raw
            .char_indices()
            .nth(64)
            .map_or(raw, |(end, _)| &raw[..end]);
        let more = if shown.len() < raw.len() { "…" } else { "" };
        r.error(format_args!(
            "{field} of {key:?} is not {expected}: {shown}{more}"
        ))
    })
}

/// A known field, seen at most once per object (serde refuses a repeated one too).
struct Once {
    name: &'static str,
    seen: bool,
}

impl Once {
    fn new(name: &'static str) -> Self {
        Self { name, seen: false }
    }

    fn claim(&mut self, r: &Reader<'_>) -> Result<(), DecodeError> {
        if std::mem::replace(&mut self.seen, true) {
            return Err(r.error(format_args!("duplicate field `{}`", self.name)));
        }
        Ok(())
    }
}

/// A cursor over JSON text (RFC 8259, as serde_json reads it: strings with their escapes and
/// paired surrogates, numbers, literals, containers).
struct Reader<'a> {
    text: &'a str,
    pos: usize,
    /// The containers open while skipping a value (`true`: an object), kept between skips
    /// so that its allocation is reused.
    skipping: Vec<bool>,
}

impl<'a> Reader<'a> {
    fn new(text: &'a str) -> Self {
        Self {
            text,
            pos: 0,
            skipping: Vec::new(),
        }
    }

    fn error(&self, what: impl std::fmt::Display) -> DecodeError {
        DecodeError::Malformed(format!("invalid OTLP JSON: {what} at byte {}", self.pos))
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while let Some(&b) = self.bytes().get(self.pos) {
            if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                return Some(b);
            }
            self.pos += 1;
        }
        None
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), DecodeError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(format_args!("expected {what}")))
        }
    }

    /// Only whitespace may follow the document.
    fn end(&mut self) -> Result<(), DecodeError> {
        match self.peek() {
            None => Ok(()),
            Some(_) => Err(self.error("trailing characters")),
        }
    }

    /// `null` (consumed: `None`), or what `read` reads.
    fn nullable<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.peek() == Some(b'n') {
            self.literal("null")?;
            Ok(None)
        } else {
            read(self).map(Some)
        }
    }

    /// `null` (consumed), or what `read` reads.
    fn unless_null(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.nullable(read).map(|_| ())
    }

    fn literal(&mut self, word: &str) -> Result<(), DecodeError> {
        if self.bytes()[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(())
        } else {
            Err(self.error(format_args!("expected `{word}`")))
        }
    }

    fn boolean(&mut self) -> Result<bool, DecodeError> {
        match self.peek() {
            Some(b't') => self.literal("true").map(|()| true),
            Some(b'f') => self.literal("false").map(|()| false),
            _ => Err(self.error("expected a boolean")),
        }
    }

    /// An object: `member` gets each key with the cursor on its value, and must read it.
    fn object(
        &mut self,
        mut member: impl FnMut(&mut Self, &str) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.expect(b'{', "an object")?;
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a key"));
            }
            let key = self.string()?;
            self.expect(b':', "`:`")?;
            member(self, &key)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `}`")),
            }
        }
    }

    /// An array: `item` reads each element.
    fn array(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        self.expect(b'[', "an array")?;
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(self.error("expected `,` or `]`")),
            }
        }
    }

    /// A string, borrowed unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        self.expect(b'"', "a string")?;
        let mut owned: Option<String> = None;
        loop {
            let run = self.pos;
            self.pos = self.plain_run();
            let Some(&b) = self.bytes().get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            let text = &self.text[run..self.pos];
            match b {
                b'"' => {
                    self.pos += 1;
                    return Ok(match owned {
                        None => Cow::Borrowed(text),
                        Some(mut owned) => {
                            owned.push_str(text);
                            Cow::Owned(owned)
                        }
                    });
                }
                b'\\' => {
                    let owned = owned.get_or_insert_with(String::new);
                    owned.push_str(text);
                    self.pos += 1;
                    owned.push(self.escape()?);
                }
                _ => return Err(self.error("control character in a string")),
            }
        }
    }

    /// Where the run of string bytes from the cursor ends: at a quote, a backslash, a control
    /// character or the end of the text. Every byte of every string passes here, so it looks
    /// at eight at a time (the lowest byte flagged in a word is always a true match).
    fn plain_run(&self) -> usize {
        const ONES: u64 = u64::from_le_bytes([0x01; 8]);
        const HIGH_BITS: u64 = u64::from_le_bytes([0x80; 8]);
        let below = |word: u64, limit: u8| word.wrapping_sub(ONES * u64::from(limit)) & !word;
        let bytes = self.bytes();
        let mut end = self.pos;
        while let Some(chunk) = bytes.get(end..end + 8) {
            let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
                break;
            };
            let word = u64::from_le_bytes(chunk);
            let special = (below(word ^ (ONES * u64::from(b'"')), 1)
                | below(word ^ (ONES * u64::from(b'\\')), 1)
                | below(word, 0x20))
                & HIGH_BITS;
            if special != 0 {
                return end + (special.trailing_zeros() / 8) as usize;
            }
            end += 8;
        }
        while end < bytes.len() && !matches!(bytes[end], b'"' | b'\\' | 0x00..=0x1f) {
            end += 1;
        }
        end
    }

    /// The character an escape stands for, the cursor after its `\` (a pair of `\u` escapes
    /// for one beyond the BMP).
    fn escape(&mut self) -> Result<char, DecodeError> {
        let Some(&b) = self.bytes().get(self.pos) else {
            return Err(self.error("unterminated string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = self.hex4()?;
                let code = match unit {
                    0xd800..=0xdbff => {
                        if !self.bytes()[self.pos..].starts_with(b"\\u") {
                            return Err(self.error("unpaired surrogate in a \\u escape"));
                        }
                        self.pos += 2;
                        let low = self.hex4()?;
                        if !(0xdc00..=0xdfff).contains(&low) {
                            return Err(self.error("unpaired surrogate in a \\u escape"));
                        }
                        0x1_0000 + ((u32::from(unit) - 0xd800) << 10) + (u32::from(low) - 0xdc00)
                    }
                    0xdc00..=0xdfff => {
                        return Err(self.error("unpaired surrogate in a \\u escape"));
                    }
                    _ => u32::from(unit),
                };
                // Surrogates are paired or refused above, so every code left is a character.
                char::from_u32(code).ok_or_else(|| self.error("invalid \\u escape"))?
            }
            _ => return Err(self.error("invalid escape")),
        })
    }

    /// The four hex digits of a `\u` escape.
    fn hex4(&mut self) -> Result<u16, DecodeError> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| self.error("invalid \\u escape"))?;
        self.pos += 4;
        u16::from_str_radix(digits, 16).map_err(|_| self.error("invalid \\u escape"))
    }

    /// A value of any kind, as written.
    fn raw_value(&mut self) -> Result<&'a str, DecodeError> {
        self.peek(); // past leading whitespace, so the value starts where it is written
        let start = self.pos;
        self.skip_value()?;
        Ok(&self.text[start..self.pos])
    }

    /// Checks and passes over one value of any kind. Open containers are kept on a stack
    /// rather than by recursion, so that any depth is read, as serde_json skips (its
    /// recursion limit does not apply to skipped values).
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        let mut open = std::mem::take(&mut self.skipping);
        open.clear();
        let result = self.skip_in(&mut open);
        self.skipping = open;
        result
    }

    fn skip_in(&mut self, open: &mut Vec<bool>) -> Result<(), DecodeError> {
        loop {
            // A value; a container that is not empty is opened and its first entry read next.
            match self.peek() {
                Some(b'{') => {
                    self.pos += 1;
                    if self.peek() == Some(b'}') {
                        self.pos += 1;
                    } else {
                        open.push(true);
                        self.skip_key()?;
                        continue;
                    }
                }
                Some(b'[') => {
                    self.pos += 1;
                    if self.peek() == Some(b']') {
                        self.pos += 1;
                    } else {
                        open.push(false);
                        continue;
                    }
                }
                Some(b'"') => self.skip_string()?,
                Some(b'-' | b'0'..=b'9') => self.skip_number()?,
                Some(b't') => self.literal("true")?,
                Some(b'f') => self.literal("false")?,
                Some(b'n') => self.literal("null")?,
                _ => return Err(self.error("expected a value")),
            }
            // After a value: close what ends here, or go on to the next entry.
            loop {
                let Some(&in_object) = open.last() else {
                    return Ok(());
                };
                match self.peek() {
                    Some(b',') => {
                        self.pos += 1;
                        if in_object {
                            self.skip_key()?;
                        }
                        break;
                    }
                    Some(b'}') if in_object => {
                        self.pos += 1;
                        open.pop();
                    }
                    Some(b']') if !in_object => {
                        self.pos += 1;
                        open.pop();
                    }
                    _ => return Err(self.error("expected `,` or the end of a container")),
                }
            }
        }
    }

    /// An object key and its `:`.
    fn skip_key(&mut self) -> Result<(), DecodeError> {
        if self.peek() != Some(b'"') {
            return Err(self.error("expected a key"));
        }
        self.skip_string()?;
        self.expect(b':', "`:`")
    }

    /// A string that is not kept: escapes are checked for form only, as serde_json checks a
    /// string it skips (no pairing of surrogates).
    fn skip_string(&mut self) -> Result<(), DecodeError> {
        self.pos += 1; // the opening quote
        loop {
            self.pos = self.plain_run();
            let Some(&b) = self.bytes().get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match b {
                b'"' => return Ok(()),
                b'\\' => match self.bytes().get(self.pos) {
                    Some(b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => self.pos += 1,
                    Some(b'u') => {
                        self.pos += 1;
                        self.hex4()?;
                    }
                    _ => return Err(self.error("invalid escape")),
                },
                _ => return Err(self.error("control character in a string")),
            }
        }
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn skip_number(&mut self) -> Result<(), DecodeError> {
        let bytes = self.bytes();
        let digits = |pos: &mut usize| {
            let start = *pos;
            while bytes.get(*pos).is_some_and(u8::is_ascii_digit) {
                *pos += 1;
            }
            *pos > start
        };
        let mut pos = self.pos;
        if bytes.get(pos) == Some(&b'-') {
            pos += 1;
        }
        let integer = match bytes.get(pos) {
            Some(b'0') => {
                pos += 1;
                !bytes.get(pos).is_some_and(u8::is_ascii_digit)
            }
            Some(b'1'..=b'9') => digits(&mut pos),
            _ => false,
        };
        let fraction = bytes.get(pos) != Some(&b'.') || {
            pos += 1;
            digits(&mut pos)
        };
        let exponent = !matches!(bytes.get(pos), Some(b'e' | b'E')) || {
            pos += 1;
            if matches!(bytes.get(pos), Some(b'+' | b'-')) {
                pos += 1;
            }
            digits(&mut pos)
        };
        self.pos = pos;
        if integer && fraction && exponent {
            Ok(())
        } else {
            Err(self.error("invalid number"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::{Encoding, decode_traces, span_views};

    const BODY: &str = r#"{"resourceSpans":[
      {"resource":{"attributes":[{"key":"service.name","value":{"stringValue":"checkout"}}]},
       "schemaUrl":"https://opentelemetry.io/schemas/1.26.0",
       "scopeSpans":[{"scope":{"name":"proxy"},"spans":[
        {"traceId":"5b8efff798038103d269b633813fc60c","spanId":"051581bf3cb55c13","name":"/f","kind":3,
         "traceState":"x-softprobe-session-id=sess_abc",
         "status":{"code":1},
         "events":[{"name":"e","attributes":[{"key":"k","value":{"stringValue":"v"}}]}],
         "attributes":[
          {"key":"sp.span.type","value":{"stringValue":"inject"}},
          {"key":"url.path","value":{"stringValue":"/f?q=\"1\"&u=\u00fc"}},
          {"key":"k\u00e9y","value":{"stringValue":""}},
          {"key":"retries","value":{"intValue":"3"}},
          {"key":"port","value":{"intValue":8080}},
          {"key":"negative","value":{"intValue":"-9223372036854775808"}},
          {"key":"ratio","value":{"doubleValue":0.25}},
          {"key":"cached","value":{"boolValue":true}},
          {"key":"list","value":{"arrayValue":{"values":[{"stringValue":"a"}]}}},
          {"key":"map","value":{"kvlistValue":{"values":[]}}},
          {"key":"raw","value":{"bytesValue":"AP8="}},
          {"key":"unset","value":{}}]}]}]},
      {"scopeSpans":[{"spans":[{"attributes":[]},{}]}]}]}"#;

    /// Every span reads as the fully decoded body reads.
    #[test]
    fn reads_what_the_full_decoding_reads() {
        let parsed = traces(BODY.as_bytes()).unwrap();
        let read = parsed.spans();
        let decoded = decode_traces(BODY.as_bytes(), Some(Encoding::Json)).unwrap();
        let decoded = span_views(&decoded);
        assert_eq!(read.len(), 3);
        assert_eq!(read, decoded);
        let first: Vec<_> = read[0].attributes.iter().collect();
        assert_eq!(first[1], ("url.path", AttrRef::Str("/f?q=\"1\"&u=ü")));
        assert_eq!(first[2], ("kéy", AttrRef::Str("")));
        assert_eq!(first[3], ("retries", AttrRef::Int(3)));
        assert_eq!(first[4], ("port", AttrRef::Int(8080)));
        assert_eq!(first[5], ("negative", AttrRef::Int(i64::MIN)));
        assert_eq!(first[6], ("ratio", AttrRef::Double(0.25)));
        assert_eq!(first[7], ("cached", AttrRef::Bool(true)));
        assert!(first[8..].iter().all(|(_, v)| *v == AttrRef::Other));
        assert_eq!(read[0].session(), Some("sess_abc"));
        // Absent and null levels read as empty.
        let empty = traces(br#"{"resourceSpans":null}"#).unwrap();
        assert!(empty.spans().is_empty());
        assert!(traces(b"{}").unwrap().spans().is_empty());
    }

    /// What is not JSON, and a field read with the wrong type, are refused with a reason.
    #[test]
    fn bad_bodies_say_why() {
        for (body, reason) in [
            (&b"{not json"[..], "invalid OTLP JSON: expected a key at byte 1"),
            (b"{\"resourceSpans\":\"\xff\"}", "invalid OTLP JSON: invalid utf-8"),
            (br#"{"resourceSpans":{}}"#, "expected an array at byte 17"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"stringValue":5}}]}]}]}]}"#,
                "expected a string",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"value":{}}]}]}]}]}"#,
                "missing field `key`",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"n","value":{"intValue":"3x"}}]}]}]}]}"#,
                "intValue of \"n\" is not a 64-bit integer: \"3x\"",
            ),
            (
                br#"{"resourceSpans":null,"resourceSpans":[]}"#,
                "duplicate field `resourceSpans`",
            ),
            (br#"{"resourceSpans":[]} x"#, "trailing characters"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"n","value":{"doubleValue":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1]}}]}]}]}]}"#,
                "doubleValue of \"n\" is not a number: [1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1… at byte",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"\ud800"}]}]}]}]}"#,
                "unpaired surrogate in a \\u escape",
            ),
        ] {
            let err = traces(body).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
    }

    /// The word-at-a-time scan stops at the first quote, backslash or control character
    /// wherever it falls in a word, and not at bytes that only resemble them.
    #[test]
    fn string_runs_end_at_the_first_special_byte() {
        let specials = [b'"', b'\\'].into_iter().chain(0x00..=0x1f);
        for filler in ["a", "\u{e9}", "\u{1f600}", "!#[]]", "\u{7f}"] {
            let plain = filler.repeat(24);
            for special in specials.clone() {
                for at in 0..plain.len() {
                    if !plain.is_char_boundary(at) {
                        continue;
                    }
                    let mut text = plain.as_bytes().to_vec();
                    text.insert(at, special);
                    text.push(special);
                    let text = String::from_utf8(text).unwrap();
                    assert_eq!(Reader::new(&text).plain_run(), at, "{text:?}");
                }
            }
            assert_eq!(Reader::new(&plain).plain_run(), plain.len());
        }
    }

    /// The serde-derived reader this one replaced, kept as its model.
    mod model {
        use crate::otlp::{AttrRef, Attributes, SpanView};
        use serde::Deserialize;
        use serde_json::value::RawValue;
        use std::borrow::Cow;

        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        pub(super) struct Traces<'a> {
            #[serde(default, borrow)]
            resource_spans: Option<Vec<ResourceSpans<'a>>>,
        }

        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct ResourceSpans<'a> {
            #[serde(default, borrow)]
            resource: Option<Resource<'a>>,
            #[serde(default, borrow)]
            scope_spans: Option<Vec<ScopeSpans<'a>>>,
        }

        #[derive(Deserialize)]
        struct Resource<'a> {
            #[serde(default, borrow)]
            attributes: Option<Vec<KeyValue<'a>>>,
        }

        #[derive(Deserialize)]
        struct ScopeSpans<'a> {
            #[serde(default, borrow)]
            spans: Option<Vec<Span<'a>>>,
        }

        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Span<'a> {
            #[serde(default, borrow)]
            trace_state: Option<Cow<'a, str>>,
            #[serde(default, borrow)]
            attributes: Option<Vec<KeyValue<'a>>>,
        }

        #[derive(Deserialize)]
        struct KeyValue<'a> {
            #[serde(borrow)]
            key: Cow<'a, str>,
            #[serde(default, borrow)]
            value: Option<AnyValue<'a>>,
        }

        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct AnyValue<'a> {
            #[serde(default, borrow)]
            string_value: Option<Cow<'a, str>>,
            #[serde(default)]
            bool_value: Option<bool>,
            #[serde(default, borrow)]
            int_value: Option<&'a RawValue>,
            #[serde(default, borrow)]
            double_value: Option<&'a RawValue>,
        }

        fn attributes<'a>(kvs: &'a [KeyValue<'a>]) -> Option<Attributes<'a>> {
            let mut pairs = Vec::new();
            for kv in kvs {
                let value = match &kv.value {
                    None => AttrRef::Other,
                    Some(v) => {
                        if let Some(s) = &v.string_value {
                            AttrRef::Str(s)
                        } else if let Some(b) = v.bool_value {
                            AttrRef::Bool(b)
                        } else if let Some(raw) = v.int_value {
                            AttrRef::Int(raw.get().trim_matches('"').parse().ok()?)
                        } else if let Some(raw) = v.double_value {
                            AttrRef::Double(raw.get().trim_matches('"').parse().ok()?)
                        } else {
                            AttrRef::Other
                        }
                    }
                };
                pairs.push((kv.key.as_ref(), value));
            }
            Some(Attributes::Wire(pairs))
        }

        /// The spans, or `None` where the model refuses the body.
        pub(super) fn spans<'a>(traces: &'a Traces<'a>) -> Option<Vec<SpanView<'a>>> {
            let mut views = Vec::new();
            for rs in traces.resource_spans.iter().flatten() {
                let resource = rs.resource.as_ref().and_then(|r| r.attributes.as_deref());
                let resource = attributes(resource.unwrap_or_default())?;
                let spans = rs.scope_spans.iter().flatten();
                for span in spans.flat_map(|ss| ss.spans.iter().flatten()) {
                    views.push(SpanView {
                        attributes: attributes(span.attributes.as_deref().unwrap_or_default())?,
                        resource: resource.clone(),
                        trace_state: span.trace_state.as_deref().unwrap_or_default(),
                    });
                }
            }
            Some(views)
        }
    }

    /// Whether the reader accepts `body`; panics unless the model decides the same and reads
    /// the same spans.
    fn agrees_with_the_model(body: &[u8]) -> bool {
        // JSON is UTF-8 (RFC 8259): a body that is not is refused whole, though serde_json
        // would pass over bad bytes inside a string it skips.
        let modeled = std::str::from_utf8(body).ok();
        let modeled = modeled.and_then(|text| serde_json::from_str::<model::Traces<'_>>(text).ok());
        let modeled = modeled.as_ref().and_then(model::spans);
        let read = traces(body);
        assert_eq!(
            read.as_ref().ok().map(Traces::spans),
            modeled,
            "{} ({:?})",
            String::from_utf8_lossy(body),
            read.as_ref().err()
        );
        read.is_ok()
    }

    /// Valid bodies, thousands of random corruptions of each (made of JSON's own characters,
    /// so that many stay JSON), and skipped values nested far past serde_json's recursion
    /// limit: the reader accepts exactly what the model accepts and reads the same spans.
    #[test]
    fn accepts_exactly_what_the_serde_model_accepts() {
        let reencoded = decode_traces(BODY.as_bytes(), Some(Encoding::Json)).unwrap();
        let reencoded = serde_json::to_vec(&reencoded).unwrap();
        let escapes = br#" {"resourceSpans":[{"scopeSpans":[{"spans":[{"traceState":"a\u0041\n",
            "attributes":[{"key":"k\"\\\/\b\f\r\t","value":{"stringValue":"\ud83d\ude00\u00fc"}},
            {"key":"x","value":{"intValue":-0,"doubleValue":1e-3,"zz":[1.5E+2,"\ud800",{"q":null}]}}]}]}]}],
            "extra":[true,false,null,-0.5e7]} "#;
        let alphabet = br#"{}[]":,.-+0123456789eEnulltruefalse\/ubfnrtABC "#;
        for valid in [BODY.as_bytes(), &reencoded, escapes] {
            assert!(agrees_with_the_model(valid));
            crate::corrupt::check_corruptions(valid, 20_000, alphabet, agrees_with_the_model);
        }
        for depth in [1, 127, 128, 129, 100_000] {
            let deep = format!(
                r#"{{"resourceSpans":[],"skipped":{}1{}}}"#,
                "[{\"a\":".repeat(depth),
                "}]".repeat(depth)
            );
            assert!(agrees_with_the_model(deep.as_bytes()), "{depth}");
            let unclosed = &deep.as_bytes()[..deep.len() - 2];
            assert!(!agrees_with_the_model(unclosed), "{depth}");
        }
    }
}
