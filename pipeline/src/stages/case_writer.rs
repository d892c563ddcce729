//! Case writer: appends accepted spans to their capture session's buffer; the innermost stage.

use crate::capture::PushError;
use crate::record::{Enriched, ExportOutcome, Outcome, PipelineError, Spans};
use crate::session::Stats;
use bytes::Bytes;
use prost::Message as _;
use std::future::{Ready, ready};
use std::task::{Context, Poll};
use tower::Service;

/// Case writer settings (the buffer bounds are per session, set in the store limits).
#[derive(Debug, Clone, Default)]
pub struct CaseWriterConfig {}

/// The case writer service.
#[derive(Debug, Clone)]
pub struct CaseWriter {
    _config: CaseWriterConfig,
}

impl CaseWriter {
    /// A case writer with these settings.
    pub fn new(config: CaseWriterConfig) -> Self {
        Self { _config: config }
    }
}

impl<'a> Service<Enriched<'a>> for CaseWriter {
    type Response = Outcome;
    type Error = PipelineError;
    type Future = Ready<Result<Outcome, PipelineError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, enriched: Enriched<'a>) -> Self::Future {
        let Enriched::Export(batches) = enriched else {
            // Inject lookups are answered by the rule matcher and never reach the writer.
            return ready(Err(PipelineError::NoInjectSpan));
        };
        let mut refused = batches.refused;
        let mut accepted = 0;
        for batch in batches.batches {
            let session = &batch.session;
            let Some(buffer) = &session.capture else {
                // Replay and generate sessions accept spans without keeping them.
                accepted += batch.count as u64;
                continue;
            };
            // Copied, not shared: the request's bytes can be a slice of the server's read buffer,
            // and keeping the slice would keep the whole buffer (8 KiB for a one-span export).
            let encoded = match batch.spans {
                Spans::Wire(body) => Bytes::copy_from_slice(body.as_bytes()),
                Spans::Decoded(traces) => traces.encode_to_vec().into(),
            };
            match buffer.push(encoded, batch.count) {
                Ok(()) => {
                    accepted += batch.count as u64;
                    Stats::add(&session.stats.extracted_spans, batch.count as u64);
                }
                Err(PushError::Sealed) => {
                    // Closed while this export was on its way: refused, never silently lost.
                    refused.unknown_session += batch.count as u64;
                }
                Err(PushError::Full { limit, spans }) => {
                    refused.buffer_full += spans as u64;
                    Stats::add(&session.stats.dropped_spans, spans as u64);
                    tracing::warn!(
                        session_id = session.id(),
                        limit,
                        spans,
                        "Capture buffer full; spans dropped."
                    );
                }
            }
        }
        ready(Ok(Outcome::Export(ExportOutcome {
            accepted,
            refused,
            encoding: batches.encoding.unwrap_or(crate::otlp::Encoding::Protobuf),
        })))
    }
}
