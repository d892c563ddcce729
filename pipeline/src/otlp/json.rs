//! OTLP JSON read for an inject lookup: serde structs of only the fields a lookup reads,
//! borrowing strings from the body unless an escape forces a copy; everything else is skipped.
//! (The proxy sends protobuf; JSON lookups come from people and scripts, so this favours plain
//! serde over speed.)

use super::{AttrRef, Attributes, DecodeError, SpanView, json_text};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The parts of an OTLP JSON `TracesData` (or `ExportTraceServiceRequest`) a lookup reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Traces<'a> {
    #[serde(default, borrow)]
    resource_spans: Option<Vec<ResourceSpans<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResourceSpans<'a> {
    #[serde(default, borrow)]
    resource: Option<Resource<'a>>,
    #[serde(default, borrow)]
    scope_spans: Option<Vec<ScopeSpans<'a>>>,
}

#[derive(Debug, Deserialize)]
struct Resource<'a> {
    #[serde(default, borrow)]
    attributes: Option<Vec<KeyValue<'a>>>,
}

#[derive(Debug, Deserialize)]
struct ScopeSpans<'a> {
    #[serde(default, borrow)]
    spans: Option<Vec<Span<'a>>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Span<'a> {
    #[serde(default, borrow)]
    trace_state: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    attributes: Option<Vec<KeyValue<'a>>>,
}

#[derive(Debug, Deserialize)]
struct KeyValue<'a> {
    #[serde(borrow)]
    key: Cow<'a, str>,
    #[serde(default, borrow)]
    value: Option<AnyValue<'a>>,
}

/// An attribute value. 64-bit integers come as strings or numbers in OTLP JSON, so both
/// numeric kinds are read raw and parsed.
#[derive(Debug, Deserialize)]
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

/// Reads `body`.
pub fn traces(body: &[u8]) -> Result<Traces<'_>, DecodeError> {
    serde_json::from_str(json_text(body)?)
        .map_err(|err| DecodeError::Malformed(format!("invalid OTLP JSON: {err}")))
}

impl<'a> Traces<'a> {
    /// The spans in order, each with its resource's attributes, as [`super::wire::spans`]
    /// reads them from protobuf.
    pub fn spans(&'a self) -> Result<Vec<SpanView<'a>>, DecodeError> {
        let mut views = Vec::new();
        for rs in self.resource_spans.iter().flatten() {
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
        Ok(views)
    }
}

fn attributes<'a>(kvs: &'a [KeyValue<'a>]) -> Result<Attributes<'a>, DecodeError> {
    let mut pairs = Vec::with_capacity(kvs.len());
    for kv in kvs {
        let value = match &kv.value {
            None => AttrRef::Other,
            Some(value) => value.read(&kv.key)?,
        };
        pairs.push((kv.key.as_ref(), value));
    }
    Ok(Attributes::Wire(pairs))
}

impl AnyValue<'_> {
    fn read(&self, key: &str) -> Result<AttrRef<'_>, DecodeError> {
        Ok(if let Some(text) = &self.string_value {
            AttrRef::Str(text)
        } else if let Some(flag) = self.bool_value {
            AttrRef::Bool(flag)
        } else if let Some(raw) = self.int_value {
            AttrRef::Int(number("intValue", key, raw)?)
        } else if let Some(raw) = self.double_value {
            AttrRef::Double(number("doubleValue", key, raw)?)
        } else {
            AttrRef::Other
        })
    }
}

/// A number written as a JSON number or string; the error quotes at most 64 characters.
fn number<T: std::str::FromStr>(kind: &str, key: &str, raw: &RawValue) -> Result<T, DecodeError> {
    let text = raw.get();
    let unquoted = text.strip_prefix('"').and_then(|t| t.strip_suffix('"'));
    unquoted.unwrap_or(text).parse().map_err(|_| {
        let shown: String = text.chars().take(64).collect();
        DecodeError::Malformed(format!(
            "invalid OTLP JSON: {kind} of {key:?} is not a number: {shown}"
        ))
    })
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
        let read = parsed.spans().unwrap();
        let decoded = decode_traces(BODY.as_bytes(), Some(Encoding::Json)).unwrap();
        assert_eq!(read, span_views(&decoded));
        assert_eq!(read.len(), 3);
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
        assert!(empty.spans().unwrap().is_empty());
        assert!(traces(b"{}").unwrap().spans().unwrap().is_empty());
    }

    /// What is not JSON, and a field read with the wrong type, are refused with a reason.
    #[test]
    fn bad_bodies_say_why() {
        let read = |body: &[u8]| traces(body).and_then(|t| t.spans().map(|_| ()));
        for (body, reason) in [
            (&b"{not json"[..], "invalid OTLP JSON: key must be a string"),
            (b"{\"resourceSpans\":\"\xff\"}", "invalid OTLP JSON: invalid utf-8"),
            (br#"{"resourceSpans":{}}"#, "invalid type: map, expected a sequence"),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"a","value":{"stringValue":5}}]}]}]}]}"#,
                "invalid type: integer `5`, expected a string",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"value":{}}]}]}]}]}"#,
                "missing field `key`",
            ),
            (
                br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"attributes":[{"key":"n","value":{"intValue":"3x"}}]}]}]}]}"#,
                "intValue of \"n\" is not a number: \"3x\"",
            ),
            (
                br#"{"resourceSpans":null,"resourceSpans":[]}"#,
                "duplicate field `resourceSpans`",
            ),
            (br#"{"resourceSpans":[]} x"#, "trailing characters"),
        ] {
            let err = read(body).unwrap_err().to_string();
            assert!(err.contains(reason), "{err}");
        }
    }
}
