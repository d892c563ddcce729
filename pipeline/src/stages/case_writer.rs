//! Case writer: appends accepted spans to their capture session's buffer; the innermost stage.

use crate::budget::Budget;
use crate::capture::PushError;
use crate::record::{Enriched, ExportOutcome, Outcome, PipelineError, Spans};
use crate::session::Stats;
use bytes::Bytes;
use prost::Message as _;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// The case writer service.
#[derive(Debug, Clone)]
pub struct CaseWriter {
    budget: Arc<Budget>,
}

impl CaseWriter {
    /// A case writer whose buffers draw on the process-wide capture `budget`.
    pub fn new(budget: Arc<Budget>) -> Self {
        Self { budget }
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
        let mut kept = Vec::with_capacity(batches.batches.len());
        for batch in batches.batches {
            if batch.session.capture.is_none() {
                // Replay and generate sessions accept spans without keeping them.
                accepted += batch.count as u64;
                continue;
            }
            // Copied, not shared: the request's bytes can be a slice of the server's read buffer,
            // and keeping the slice would keep the whole buffer (8 KiB for a one-span export).
            let encoded = match batch.spans {
                Spans::Wire(body) => Bytes::copy_from_slice(body.as_bytes()),
                Spans::Decoded(traces) => traces.encode_to_vec().into(),
            };
            kept.push((batch.session, encoded, batch.count));
        }
        // The whole export is held against the capture budget before any of it is appended,
        // so a refusal (which exporters retry) never leaves part of it behind as a duplicate.
        let total = kept.iter().map(|(_, encoded, _)| encoded.len()).sum();
        let mut reserved = match self.budget.acquire(total) {
            Ok(reserved) => reserved,
            Err(over) => return ready(Err(PipelineError::OverBudget(over))),
        };
        for (session, encoded, count) in kept {
            let Some(buffer) = &session.capture else {
                continue;
            };
            match buffer.push(encoded, count, &mut reserved) {
                Ok(()) => {
                    accepted += count as u64;
                    Stats::add(&session.stats.extracted_spans, count as u64);
                }
                Err(PushError::Sealed) => {
                    // Closed while this export was on its way: refused, never silently lost.
                    refused.unknown_session += count as u64;
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
