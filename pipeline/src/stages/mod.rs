//! The collector-style pipeline: receiver → session enrichment → rule matcher → case writer.

mod case_writer;
mod enrich;
mod match_rules;
mod receive;

pub use case_writer::CaseWriter;
pub use enrich::{EnrichSession, EnrichSessionLayer};
pub use match_rules::{MatchRules, MatchRulesConfig, MatchRulesLayer, REDACTED};
pub use receive::{Receive, ReceiveConfig, ReceiveLayer};

use crate::record::{Outcome, PipelineError, Received};
use crate::store::SessionStore;
use std::sync::Arc;
use tower::ServiceBuilder;
use tower::util::BoxCloneSyncService;

/// The assembled pipeline, as one cloneable service.
pub type Pipeline = BoxCloneSyncService<Received, Outcome, PipelineError>;

/// Pipeline settings.
#[derive(Debug, Clone, Default)]
pub struct PipelineConfig {
    /// Receiver settings.
    pub receive: ReceiveConfig,
    /// Rule matcher settings.
    pub match_rules: MatchRulesConfig,
}

/// Builds the pipeline over a session store. This is the only place the stages are composed.
pub fn pipeline(store: Arc<SessionStore>, config: PipelineConfig) -> Pipeline {
    let capture_budget = store.capture_budget().clone();
    let service = ServiceBuilder::new()
        // receiver: decode OTLP once (protobuf/JSON, gzip, limits) into an inject or export record
        .layer(ReceiveLayer::new(config.receive))
        // session enrichment: find each span's session (attribute, resource, tracestate)
        .layer(EnrichSessionLayer::new(store))
        // rule matcher: decide inject lookups; apply capture-time rules (redaction) to exports
        .layer(MatchRulesLayer::new(config.match_rules))
        // case writer: append accepted spans to capture buffers, count what is refused
        .service(CaseWriter::new(capture_budget));
    BoxCloneSyncService::new(service)
}
