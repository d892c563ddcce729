//! Receiver: reads an OTLP message once into the signal's record, within the size limit: an
//! inject lookup borrowed from the body, or an export batch (protobuf checked and kept as
//! received, see [`Checked`]; JSON decoded).

use crate::export::{ExportError, Spans};
use crate::hop::Hop;
use crate::inject::{InjectError, InjectLookup};
use crate::otlp::wire::{self, Checked};
use crate::otlp::{self, DecodeError, Encoding, Received, SpanView, json};
use bytes::Bytes;

/// Receiver settings.
#[derive(Debug, Clone)]
pub struct ReceiveConfig {
    /// Largest body accepted after decompression, in bytes.
    pub max_decoded_bytes: usize,
}

impl Default for ReceiveConfig {
    fn default() -> Self {
        Self {
            max_decoded_bytes: 32 * 1024 * 1024,
        }
    }
}

/// The body after `Content-Encoding`, and its declared encoding.
fn open(
    config: &ReceiveConfig,
    received: &Received,
) -> Result<(Option<Vec<u8>>, Option<Encoding>), DecodeError> {
    let declared = received.encoding.clone()?;
    let limit = config.max_decoded_bytes;
    let inflated = otlp::decompress(&received.body, received.content_encoding.as_deref(), limit)?;
    Ok((inflated, declared))
}

/// Reads the inject lookup and hands it to `next`: the lookup borrows from the body, which
/// lives until `next` has answered.
pub(crate) fn inject<T>(
    config: &ReceiveConfig,
    received: &Received,
    next: impl FnOnce(InjectLookup<'_>) -> Result<T, InjectError>,
) -> Result<T, InjectError> {
    let (inflated, declared) = open(config, received)?;
    let bytes = inflated.as_deref().unwrap_or(&received.body);
    // Read in place, declared protobuf or JSON alike; a body without a declared type that
    // does not read as protobuf is decoded as either.
    let (json, decoded);
    let spans = match declared {
        Some(Encoding::Json) => {
            json = json::traces(bytes)?;
            json.spans()?
        }
        Some(Encoding::Protobuf) => wire::spans(bytes)?,
        None => match wire::spans(bytes) {
            Ok(spans) => spans,
            Err(_) => {
                decoded = otlp::decode_traces(bytes, None)?;
                otlp::span_views(&decoded)
            }
        },
    };
    next(lookup(spans)?)
}

/// The first span typed `inject` (or, when no span is typed, the first span) becomes the
/// lookup; other spans are ignored, as in the reference runtime.
fn lookup(mut spans: Vec<SpanView<'_>>) -> Result<InjectLookup<'_>, InjectError> {
    let index = spans
        .iter()
        .position(|span| span.span_type() == Some("inject"))
        .or_else(|| spans.iter().position(|span| span.span_type().is_none()))
        .ok_or(InjectError::NoInjectSpan)?;
    let span = spans.swap_remove(index);
    Ok(InjectLookup {
        session_id: span.session(),
        hop: Hop::from_span(span),
    })
}

/// Reads an export's spans.
pub(crate) fn export(config: &ReceiveConfig, received: Received) -> Result<Spans, ExportError> {
    let (inflated, declared) = open(config, &received)?;
    Ok(if declared == Some(Encoding::Protobuf) {
        Spans::Wire(Checked::new(inflated.map_or(received.body, Bytes::from))?)
    } else {
        let bytes = inflated.as_deref().unwrap_or(&received.body);
        Spans::Decoded(otlp::decode_traces(bytes, declared)?)
    })
}
