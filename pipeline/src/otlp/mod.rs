//! The OTLP codec: content types, decompression and decoding of OTLP/HTTP bodies, with the
//! readers and writers of each shape in its own file (span views, the protobuf and JSON
//! readers, the inject hit, case JSON).

mod case_json;
mod hit;
pub mod json;
mod span;
pub mod wire;

pub use case_json::case_trace_json;
pub use hit::HitResponse;
pub(crate) use span::session_of;
pub use span::{AttrRef, Attributes, SpanView, header_name, span_count, span_views};

use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use std::io::Read as _;

pub use softprobe_otlp::{keys, tracestate_session};

/// One OTLP message as received, still encoded: an OTLP/HTTP body, or a gRPC request message.
/// Both signals' receivers start from it; how to answer is the handler's business.
#[derive(Debug)]
pub struct Received {
    /// The message as received.
    pub body: Bytes,
    /// The encoding its `Content-Type` declares (`None`: undeclared, read as either), or why
    /// the type is not one OTLP uses; the receiver refuses the latter, as it refuses a body
    /// that does not decode.
    pub encoding: Result<Option<Encoding>, DecodeError>,
    /// `Content-Encoding`, if any.
    pub content_encoding: Option<String>,
}

impl Received {
    /// A protobuf message with nothing to decompress: a gRPC request (tonic has already taken
    /// off the framing and any compression).
    pub fn protobuf(message: Bytes) -> Self {
        Self {
            body: message,
            encoding: Ok(Some(Encoding::Protobuf)),
            content_encoding: None,
        }
    }
}

/// How an OTLP/HTTP body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `application/x-protobuf`.
    Protobuf,
    /// `application/json` (OTLP JSON: hex ids, 64-bit integers as strings or numbers).
    Json,
}

impl Encoding {
    /// The encoding named by a `Content-Type`; `Ok(None)` when absent (then the body is
    /// sniffed, as the reference runtime does), `Err` for any other media type.
    pub fn from_content_type(content_type: Option<&str>) -> Result<Option<Self>, DecodeError> {
        let Some(value) = content_type else {
            return Ok(None);
        };
        // Compared in place: this runs for every inject.
        let media = value.split(';').next().unwrap_or("").trim();
        let is = |name: &str| media.eq_ignore_ascii_case(name);
        if is("application/x-protobuf") || is("application/protobuf") {
            Ok(Some(Self::Protobuf))
        } else if is("application/json") {
            Ok(Some(Self::Json))
        } else if media.is_empty() {
            Ok(None)
        } else {
            Err(DecodeError::UnsupportedMediaType(value.to_owned()))
        }
    }

    /// The `Content-Type` to answer with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Protobuf => "application/x-protobuf",
            Self::Json => "application/json",
        }
    }
}

/// Why an OTLP body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Neither the declared nor a sniffed encoding parses.
    #[error("{0}")]
    Malformed(String),
    /// The media type is not OTLP.
    #[error("unsupported content type {0:?}: send application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    /// The body, or what it decompresses to, exceeds the limit.
    #[error(
        "the body exceeds {limit} bytes (after decompression): send fewer spans per request or \
         raise --max-body-bytes"
    )]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A `Content-Encoding` other than gzip or identity.
    #[error("unsupported content encoding {0:?}: send gzip or identity")]
    UnsupportedContentEncoding(String),
}

/// Undoes `Content-Encoding: gzip` (bounded by `limit`); passes identity bodies through.
pub fn decompress(
    body: &[u8],
    content_encoding: Option<&str>,
    limit: usize,
) -> Result<Option<Vec<u8>>, DecodeError> {
    // Compared in place: no lowercased copy per request.
    let coding = content_encoding.map_or("", str::trim);
    let is = |name: &str| coding.eq_ignore_ascii_case(name);
    if coding.is_empty() || is("identity") {
        return Ok(None);
    }
    if !(is("gzip") || is("x-gzip")) {
        return Err(DecodeError::UnsupportedContentEncoding(coding.to_owned()));
    }
    let mut out = Vec::new();
    let mut reader = flate2::read::GzDecoder::new(body).take(limit as u64 + 1);
    reader
        .read_to_end(&mut out)
        .map_err(|err| DecodeError::Malformed(format!("invalid gzip body: {err}")))?;
    if out.len() > limit {
        return Err(DecodeError::TooLarge { limit });
    }
    Ok(Some(out))
}

/// Decodes an OTLP traces body (`TracesData` and `ExportTraceServiceRequest` share one wire
/// form). Without a declared encoding, protobuf is tried first, then JSON.
pub fn decode_traces(body: &[u8], encoding: Option<Encoding>) -> Result<TracesData, DecodeError> {
    match encoding {
        Some(Encoding::Protobuf) => decode_protobuf(body),
        Some(Encoding::Json) => decode_json(body),
        None => decode_protobuf(body).or_else(|protobuf| {
            decode_json(body).map_err(|json| {
                DecodeError::Malformed(format!(
                    "neither OTLP protobuf ({protobuf}) nor OTLP JSON ({json})"
                ))
            })
        }),
    }
}

fn decode_protobuf(body: &[u8]) -> Result<TracesData, DecodeError> {
    TracesData::decode(body)
        .map_err(|err| DecodeError::Malformed(format!("invalid OTLP protobuf: {err}")))
}

/// OTLP JSON. The typed parse handles the standard form; a second pass accepts what other
/// encoders write too (base64 ids from Go's protojson, span kinds as enum names).
fn decode_json(body: &[u8]) -> Result<TracesData, DecodeError> {
    let text = json_text(body)?;
    serde_json::from_str::<TracesData>(text).or_else(|typed_err| {
        // `{}` is an empty export as OTLP JSON may write it (defaults are left out), but
        // opentelemetry-proto's `TracesData`, unlike its `ExportTraceServiceRequest`, has no
        // serde default for `resourceSpans`.
        if text.trim_start().starts_with('{')
            && let Ok(request) = serde_json::from_str::<ExportTraceServiceRequest>(text)
        {
            return Ok(TracesData {
                resource_spans: request.resource_spans,
            });
        }
        let mut value: serde_json::Value = serde_json::from_str(text)
            .map_err(|err| DecodeError::Malformed(format!("invalid JSON: {err}")))?;
        if !normalize_json(&mut value) {
            return Err(DecodeError::Malformed(format!(
                "invalid OTLP JSON: {typed_err}"
            )));
        }
        serde_json::from_value(value)
            .map_err(|err| DecodeError::Malformed(format!("invalid OTLP JSON: {err}")))
    })
}

/// A JSON body as text. Checked as UTF-8 once, serde_json reads it without checking every
/// string again (its `from_slice` does).
pub(crate) fn json_text(body: &[u8]) -> Result<&str, DecodeError> {
    std::str::from_utf8(body)
        .map_err(|err| DecodeError::Malformed(format!("invalid OTLP JSON: {err}")))
}

/// Rewrites base64 ids to hex and enum-name kinds to numbers; returns whether it changed
/// anything (so an unrelated error is reported as it was).
fn normalize_json(value: &mut serde_json::Value) -> bool {
    use base64::Engine as _;
    use serde_json::Value;
    let mut changed = false;
    match value {
        Value::Object(map) => {
            for (key, field) in map.iter_mut() {
                match (key.as_str(), &*field) {
                    ("traceId" | "spanId" | "parentSpanId", Value::String(id)) if !is_hex(id) => {
                        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(id) {
                            *field = Value::String(hex::encode(bytes));
                            changed = true;
                        }
                    }
                    ("kind", Value::String(name)) => {
                        let kind = match name.as_str() {
                            "SPAN_KIND_INTERNAL" => 1,
                            "SPAN_KIND_SERVER" => 2,
                            "SPAN_KIND_CLIENT" => 3,
                            "SPAN_KIND_PRODUCER" => 4,
                            "SPAN_KIND_CONSUMER" => 5,
                            _ => 0,
                        };
                        *field = Value::from(kind);
                        changed = true;
                    }
                    ("code", Value::String(name)) if name.starts_with("STATUS_CODE_") => {
                        let code = match name.as_str() {
                            "STATUS_CODE_OK" => 1,
                            "STATUS_CODE_ERROR" => 2,
                            _ => 0,
                        };
                        *field = Value::from(code);
                        changed = true;
                    }
                    _ => changed |= normalize_json(field),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                changed |= normalize_json(item);
            }
        }
        _ => {}
    }
    changed
}

fn is_hex(text: &str) -> bool {
    text.len().is_multiple_of(2) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_go_protojson_ids_and_enum_names() {
        let go = r#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"BRWBvzy1XBM=","kind":"SPAN_KIND_SERVER","status":{"code":"STATUS_CODE_OK"}}]}]}]}"#;
        let traces = decode_traces(go.as_bytes(), Some(Encoding::Json)).unwrap();
        let span = &traces.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(
            hex::encode(&span.trace_id),
            "5b8efff798038103d269b633813fc60c"
        );
        assert_eq!(span.kind, 2);
    }

    #[test]
    fn an_empty_json_document_is_an_empty_export() {
        let empty = decode_traces(b"{}", Some(Encoding::Json)).unwrap();
        assert!(empty.resource_spans.is_empty());
    }

    #[test]
    fn bad_bodies_say_why() {
        let err = decode_traces(b"{not json", None).unwrap_err();
        assert!(
            err.to_string().starts_with("neither OTLP protobuf"),
            "{err}"
        );
        assert!(matches!(
            Encoding::from_content_type(Some("text/plain")),
            Err(DecodeError::UnsupportedMediaType(_))
        ));
        assert_eq!(
            Encoding::from_content_type(Some("application/json; charset=utf-8")),
            Ok(Some(Encoding::Json))
        );
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, &[b'x'; 100]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            decompress(&gz, Some("gzip"), 99),
            Err(DecodeError::TooLarge { limit: 99 })
        );
        assert_eq!(
            decompress(&gz, Some("gzip"), 100).unwrap().unwrap().len(),
            100
        );
        assert!(decompress(&gz, Some("br"), 100).is_err());
    }
}
