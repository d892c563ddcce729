//! Receiver: turns OTLP/HTTP bodies and gRPC messages into pipeline records, reading each once
//! (a protobuf export batch is checked and routed in place, not decoded: see `wire::Checked`).

use crate::json_view;
use crate::otlp::{self, Encoding, SpanView};
use crate::record::{
    ExportBatch, InjectLookup, Outcome, PipelineError, Received, Record, Signal, Spans,
};
use crate::wire::{self, Checked};
use bytes::Bytes;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tower::{Layer, Service};

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

/// Adds the receiver in front of a record service.
#[derive(Debug, Clone)]
pub struct ReceiveLayer {
    config: ReceiveConfig,
}

impl ReceiveLayer {
    /// A receiver with these settings.
    pub fn new(config: ReceiveConfig) -> Self {
        Self { config }
    }
}

impl<S> Layer<S> for ReceiveLayer {
    type Service = Receive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Receive {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The receiver service.
#[derive(Debug, Clone)]
pub struct Receive<S> {
    inner: S,
    config: ReceiveConfig,
}

/// Reads the request into a record and hands it to `next`. An inject lookup borrows from the
/// body, which lives until the (synchronous) answer is back.
fn receive(
    config: &ReceiveConfig,
    received: Received,
    next: impl FnOnce(Record<'_>) -> Result<Outcome, PipelineError>,
) -> Result<Outcome, PipelineError> {
    let Received {
        signal,
        body,
        encoding,
        content_encoding,
        wants_json,
    } = received;
    let declared = encoding?;
    let limit = config.max_decoded_bytes;
    let inflated = otlp::decompress(&body, content_encoding.as_deref(), limit)?;
    let bytes = inflated.as_deref().unwrap_or(&body);
    match signal {
        Signal::Inject => {
            let answer = if wants_json {
                Encoding::Json
            } else {
                Encoding::Protobuf
            };
            // Read in place, declared protobuf or JSON alike; a body without a declared
            // type that does not read as protobuf is decoded as either.
            let (json, decoded);
            let spans = match declared {
                Some(Encoding::Json) => {
                    json = json_view::traces(bytes)?;
                    json.spans()
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
            let lookup = inject_lookup(spans, answer)?;
            next(Record::Inject(lookup))
        }
        // OTLP/HTTP answers in the request's encoding.
        Signal::Export => {
            let batch = ExportBatch {
                spans: if declared == Some(Encoding::Protobuf) {
                    Spans::Wire(Checked::new(
                        inflated.map_or_else(|| body.clone(), Bytes::from),
                    )?)
                } else {
                    Spans::Decoded(otlp::decode_traces(bytes, declared)?)
                },
                encoding: declared.unwrap_or(if wants_json {
                    Encoding::Json
                } else {
                    Encoding::Protobuf
                }),
            };
            next(Record::Export(batch))
        }
    }
}

/// The first span typed `inject` (or, when no span is typed, the first span) becomes the
/// lookup; other spans are ignored, as in the reference runtime.
fn inject_lookup(
    mut spans: Vec<SpanView<'_>>,
    encoding: Encoding,
) -> Result<InjectLookup<'_>, PipelineError> {
    let index = spans
        .iter()
        .position(|span| span.span_type() == Some("inject"))
        .or_else(|| spans.iter().position(|span| span.span_type().is_none()))
        .ok_or(PipelineError::NoInjectSpan)?;
    let span = spans.swap_remove(index);
    Ok(InjectLookup {
        session_id: span.session(),
        hop: span.into_hop(),
        encoding,
    })
}

impl<S> Service<Received> for Receive<S>
where
    S: for<'a> Service<
            Record<'a>,
            Response = Outcome,
            Error = PipelineError,
            Future = Ready<Result<Outcome, PipelineError>>,
        >,
{
    type Response = Outcome;
    type Error = PipelineError;
    type Future = Ready<Result<Outcome, PipelineError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, received: Received) -> Self::Future {
        let inner = &mut self.inner;
        ready(receive(&self.config, received, |record| {
            inner.call(record).into_inner()
        }))
    }
}
