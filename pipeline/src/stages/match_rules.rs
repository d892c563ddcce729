//! Rule matcher: decides inject lookups from the session snapshot; redacts exported spans.

use crate::matcher::{Decision, STRICT_MISS_MESSAGE, decide};
use crate::otlp::{DecodeError, HitResponse, header_name};
use crate::record::{Enriched, InjectLookup, InjectOutcome, Outcome, PipelineError, Spans};
use crate::rules::Body;
use crate::session::{Session, Stats};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// What a redacted header value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Rule matcher settings.
#[derive(Debug, Clone)]
pub struct MatchRulesConfig {
    /// Header names (lower-case) whose values are redacted in captured spans, in addition to
    /// the session policy's `redactHeaders`.
    pub redact_headers: Vec<String>,
}

impl Default for MatchRulesConfig {
    fn default() -> Self {
        Self {
            redact_headers: softprobe_otlp::SENSITIVE_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
    }
}

/// Adds the rule matcher in front of the case writer.
#[derive(Debug, Clone)]
pub struct MatchRulesLayer {
    config: Arc<MatchRulesConfig>,
}

impl MatchRulesLayer {
    /// A matcher with these settings.
    pub fn new(config: MatchRulesConfig) -> Self {
        Self {
            config: Arc::new(config),
        }
    }
}

impl<S> Layer<S> for MatchRulesLayer {
    type Service = MatchRules<S>;

    fn layer(&self, inner: S) -> Self::Service {
        MatchRules {
            inner,
            config: self.config.clone(),
        }
    }
}

/// The rule matcher service. Cloned per request, so its settings are shared, not copied.
#[derive(Debug, Clone)]
pub struct MatchRules<S> {
    inner: S,
    config: Arc<MatchRulesConfig>,
}

/// Decides one lookup against the session's current snapshot and counts the outcome.
fn answer_inject(lookup: &InjectLookup<'_>, session: &Session) -> InjectOutcome {
    // One snapshot for the whole decision: a concurrent rules write is seen entirely or not.
    let snapshot = session.snapshot_guard();
    let policy = snapshot.policy.as_ref().map(|p| &p.parsed);
    let decision = decide(&snapshot.index, policy, &lookup.hop);
    let stats = &session.stats;
    let json_error = |message: &str| {
        (
            vec![("content-type".to_owned(), "application/json".to_owned())],
            Body::Text(serde_json::json!({ "error": message }).to_string()),
        )
    };
    let (status, (headers, body), counter) = match &decision {
        Decision::Mock(_, response) => (
            response.status,
            (response.headers.clone(), response.body.clone()),
            &stats.injected_spans,
        ),
        Decision::Error(_, error) => (
            error.status,
            json_error(&error.body),
            &stats.injected_errors,
        ),
        Decision::StrictMiss => (500, json_error(STRICT_MISS_MESSAGE), &stats.strict_misses),
        Decision::Passthrough(_) | Decision::CaptureOnly(_) | Decision::Miss => {
            Stats::add(&stats.inject_misses, 1);
            return InjectOutcome::Forward {
                reason: decision.name(),
            };
        }
    };
    Stats::add(counter, 1);
    tracing::debug!(
        session_id = session.id(),
        decision = decision.name(),
        rule = decision.rule().map(|r| r.label.as_str()),
        "Inject decided."
    );
    InjectOutcome::Hit {
        hit: HitResponse {
            status,
            headers,
            body,
            decision: decision.name(),
            rule: decision.rule().map(|r| r.label.clone()),
            layer: decision.rule().map_or("policy", |r| r.layer.as_str()),
            revision: snapshot.revision,
        },
        encoding: lookup.encoding,
    }
}

/// The header names whose values one session's captured spans never keep: the runtime's
/// (`--redact-header` and the defaults) and the session policy's `redactHeaders`.
struct Redaction<'a> {
    names: &'a [String],
    policy: &'a [String],
}

impl Redaction<'_> {
    /// Whether values of header `name` are redacted.
    fn covers(&self, name: &str) -> bool {
        self.names
            .iter()
            .chain(self.policy)
            .any(|n| n.eq_ignore_ascii_case(name))
    }

    /// Redacts `spans`. A protobuf body is decoded only when it has a header to redact.
    fn apply(&self, spans: &mut Spans) -> Result<(), DecodeError> {
        match spans {
            Spans::Decoded(traces) => self.redact(traces),
            Spans::Wire(body) => {
                if body.routing().header_names.iter().any(|n| self.covers(n)) {
                    let mut traces = body.decode()?;
                    self.redact(&mut traces);
                    *spans = Spans::Decoded(traces);
                }
            }
        }
        Ok(())
    }

    fn redact(&self, traces: &mut TracesData) {
        let attributes = traces
            .resource_spans
            .iter_mut()
            .flat_map(|rs| rs.scope_spans.iter_mut())
            .flat_map(|ss| ss.spans.iter_mut())
            .flat_map(|span| span.attributes.iter_mut());
        for kv in attributes {
            if header_name(&kv.key).is_some_and(|name| self.covers(name))
                && let Some(AnyValueKind::StringValue(value)) =
                    kv.value.as_mut().and_then(|v| v.value.as_mut())
            {
                REDACTED.clone_into(value);
            }
        }
    }
}

impl<'a, S> Service<Enriched<'a>> for MatchRules<S>
where
    S: Service<
            Enriched<'a>,
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

    fn call(&mut self, enriched: Enriched<'a>) -> Self::Future {
        match enriched {
            Enriched::Inject { lookup, session } => {
                ready(Ok(Outcome::Inject(answer_inject(&lookup, &session))))
            }
            Enriched::Export(mut batches) => {
                for batch in &mut batches.batches {
                    let snapshot = batch.session.snapshot_guard();
                    let redaction = Redaction {
                        names: &self.config.redact_headers,
                        policy: snapshot
                            .policy
                            .as_ref()
                            .map_or(&[][..], |p| &p.parsed.redact_headers[..]),
                    };
                    if let Err(err) = redaction.apply(&mut batch.spans) {
                        return ready(Err(err.into()));
                    }
                }
                self.inner.call(Enriched::Export(batches))
            }
        }
    }
}
