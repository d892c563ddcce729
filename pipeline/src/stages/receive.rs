//! Receiver: turns OTLP/HTTP bodies and gRPC messages into pipeline records, decoding once.

use crate::otlp::{self, Encoding};
use crate::record::{ExportBatch, InjectLookup, Outcome, PipelineError, Received, Record, Signal};
use opentelemetry_proto::tonic::trace::v1::{Span, TracesData};
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

impl<S> Receive<S> {
    fn record(&self, received: Received) -> Result<Record, PipelineError> {
        let (signal, traces, encoding) = match received {
            Received::Decoded { signal, traces } => (signal, traces, Encoding::Protobuf),
            Received::Http {
                signal,
                body,
                content_type,
                content_encoding,
                wants_json,
            } => {
                let declared = Encoding::from_content_type(content_type.as_deref())?;
                let limit = self.config.max_decoded_bytes;
                let inflated = otlp::decompress(&body, content_encoding.as_deref(), limit)?;
                let bytes = inflated.as_deref().unwrap_or(&body);
                let traces = otlp::decode_traces(bytes, declared)?;
                let answer = match signal {
                    Signal::Inject if wants_json => Encoding::Json,
                    Signal::Inject => Encoding::Protobuf,
                    // OTLP/HTTP answers in the request's encoding.
                    Signal::Export => declared.unwrap_or(if wants_json {
                        Encoding::Json
                    } else {
                        Encoding::Protobuf
                    }),
                };
                (signal, traces, answer)
            }
        };
        Ok(match signal {
            Signal::Inject => Record::Inject(inject_lookup(&traces, encoding)?),
            Signal::Export => Record::Export(ExportBatch { traces, encoding }),
        })
    }
}

/// The first span typed `inject` (or, when no span is typed, the first span) becomes the
/// lookup; other spans are ignored, as in the reference runtime.
fn inject_lookup(traces: &TracesData, encoding: Encoding) -> Result<InjectLookup, PipelineError> {
    let spans = || {
        traces.resource_spans.iter().flat_map(|rs| {
            rs.scope_spans
                .iter()
                .flat_map(move |ss| ss.spans.iter().map(move |s| (rs, s)))
        })
    };
    let typed =
        |span: &Span| otlp::string_attribute(&span.attributes, otlp::keys::SPAN_TYPE).is_some();
    let (rs, span) = spans()
        .find(|(_, span)| otlp::is_inject(span))
        .or_else(|| spans().find(|(_, span)| !typed(span)))
        .ok_or(PipelineError::NoInjectSpan)?;
    let resource = rs.resource.as_ref();
    Ok(InjectLookup {
        hop: otlp::hop_of(span, resource),
        session_id: otlp::session_of(span, resource).map(str::to_owned),
        encoding,
    })
}

impl<S> Service<Received> for Receive<S>
where
    S: Service<
            Record,
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
        match self.record(received) {
            Ok(record) => self.inner.call(record),
            Err(err) => ready(Err(err)),
        }
    }
}
