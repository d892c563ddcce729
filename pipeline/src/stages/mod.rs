//! The two pipelines, one per signal, as the OpenTelemetry Collector has one per traces,
//! metrics and logs. Each stage is a plain function in its own file; the pipelines below are
//! the only place they are composed, top to bottom.

mod case_writer;
mod decide;
mod enrich;
mod receive;
mod redact;

pub use case_writer::{CaseWriter, WrittenCase};
pub use receive::ReceiveConfig;
pub use redact::{REDACTED, RedactConfig};

use crate::case_file::CasePaths;
use crate::export::{ExportError, ExportOutcome, SessionBatches, Spans};
use crate::inject::{ForwardReason, InjectError, InjectOutcome};
use crate::otlp::Received;
use crate::store::SessionStore;
use std::sync::Arc;

/// Pipeline settings.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    /// Receiver settings.
    pub receive: ReceiveConfig,
    /// Redaction settings.
    pub redact: RedactConfig,
    /// Where cases are written.
    pub case_paths: CasePaths,
}

/// Both pipelines over one session store; cheap to clone.
#[derive(Debug, Clone)]
pub struct Pipelines {
    store: Arc<SessionStore>,
    receive: Arc<ReceiveConfig>,
    redact: Arc<RedactConfig>,
    case_writer: CaseWriter,
}

impl Pipelines {
    /// The pipelines over `store`.
    pub fn new(store: Arc<SessionStore>, config: PipelineConfig) -> Self {
        Self {
            case_writer: CaseWriter::new(store.capture_budget().clone(), config.case_paths),
            store,
            receive: Arc::new(config.receive),
            redact: Arc::new(config.redact),
        }
    }

    /// Inject, latency-bound: what one hop gets.
    pub fn inject(&self, received: &Received) -> Result<InjectOutcome, InjectError> {
        // receiver: the lookup, read in place from the body (protobuf or JSON, gzip, limits)
        receive::inject(&self.receive, received, |lookup| {
            // session enrichment: the lookup's live session; an unknown one means "forward"
            let Some(session) = enrich::session(&self.store, &lookup)? else {
                return Ok(InjectOutcome::Forward(ForwardReason::UnknownSession));
            };
            // rule matcher: session rules, case rules and policy decide
            Ok(decide::decide(&lookup, &session))
        })
    }

    /// Export, throughput-bound: spans to keep.
    pub fn export(&self, received: Received) -> Result<ExportOutcome, ExportError> {
        // receiver: protobuf checked and kept as received, JSON decoded (gzip, limits)
        let spans = self.receive_export(received)?;
        // session enrichment and redaction
        let batches = self.batches(spans)?;
        // case writer: append to capture buffers within their limits and the budget
        self.case_writer.append(batches)
    }

    /// The session an inject lookup names, read ahead of [`Self::inject`] by a shared store
    /// that must bring the session up to date first.
    pub fn inject_session(&self, received: &Received) -> Result<Option<String>, InjectError> {
        receive::inject(&self.receive, received, |lookup| {
            Ok(lookup.session_id.map(str::to_owned))
        })
    }

    /// Export's receiver alone, for a shared store that appends the batches itself.
    pub fn receive_export(&self, received: Received) -> Result<Spans, ExportError> {
        receive::export(&self.receive, received)
    }

    /// Export between receiver and case writer: spans grouped by their live session (the rest
    /// refused), then redacted.
    pub fn batches(&self, spans: Spans) -> Result<SessionBatches, ExportError> {
        // session enrichment: spans grouped by their live session, the rest refused
        let mut batches = enrich::group(&self.store, spans)?;
        // redaction: header values no capture keeps
        redact::redact(&self.redact, &mut batches)?;
        Ok(batches)
    }

    /// The case writer, which also writes a capture session's case on close.
    pub fn case_writer(&self) -> &CaseWriter {
        &self.case_writer
    }
}
