//! Rule matcher for inject: decides a lookup from its session's snapshot (rules, case rules,
//! policy) and counts the outcome in the session's stats.

use crate::inject::{ForwardReason, InjectLookup, InjectOutcome};
use crate::matcher::{self, Decision, STRICT_MISS_MESSAGE};
use crate::misses::Miss;
use crate::otlp::HitResponse;
use crate::rules::Body;
use crate::session::{Session, Stats};

/// Decides one lookup against the session's current snapshot, counts the outcome, and records
/// a miss with its closest candidate.
pub(crate) fn decide(lookup: &InjectLookup<'_>, session: &Session) -> InjectOutcome {
    // One snapshot for the whole decision: a concurrent rules write is seen entirely or not.
    let snapshot = session.snapshot_guard();
    let policy = snapshot.policy.as_ref().map(|p| &p.parsed);
    let exchanges = snapshot.exchanges.as_deref();
    let hop = &lookup.hop;
    let decision = matcher::decide(&snapshot.index, policy, exchanges, hop);
    let stats = &session.stats;
    let json_error = |message: &str| {
        (
            vec![("content-type".to_owned(), "application/json".to_owned())],
            Body::Text(serde_json::json!({ "error": message }).to_string()),
        )
    };
    let mut case_span_id = None;
    let (status, (headers, body), counter) = match &decision {
        Decision::Mock(_, response) => (
            response.status,
            (response.headers.clone(), response.body.clone()),
            &stats.injected_spans,
        ),
        Decision::Replay(_, exchange) => {
            case_span_id = Some(exchange.span_id.clone());
            let response = &exchange.response;
            (
                response.status,
                (response.headers.clone(), response.body.clone()),
                &stats.injected_spans,
            )
        }
        Decision::Error(_, error) => (
            error.status,
            json_error(&error.body),
            &stats.injected_errors,
        ),
        Decision::StrictMiss => {
            // The block names the closest candidate and its first mismatch.
            let closest = matcher::closest(&snapshot.index, exchanges, hop, 0);
            let message = match &closest {
                Some(closest) => format!("{STRICT_MISS_MESSAGE}; closest: {}", closest.summary()),
                None => STRICT_MISS_MESSAGE.to_owned(),
            };
            session.misses.record(Miss::of(hop, "strict_miss", closest));
            (500, json_error(&message), &stats.strict_misses)
        }
        Decision::Passthrough(_) | Decision::CaptureOnly(_) | Decision::Miss => {
            Stats::add(&stats.inject_misses, 1);
            return InjectOutcome::Forward(match decision {
                Decision::Passthrough(_) => ForwardReason::Passthrough,
                Decision::CaptureOnly(_) => ForwardReason::CaptureOnly,
                _ => {
                    let closest = matcher::closest(&snapshot.index, exchanges, hop, i64::MIN);
                    tracing::debug!(
                        session_id = session.id(),
                        method = %hop.method,
                        host = hop.host,
                        path = hop.path,
                        closest = closest.as_ref().map(|c| c.summary()),
                        "Inject missed; forwarded."
                    );
                    session.misses.record(Miss::of(hop, "forward", closest));
                    ForwardReason::Miss
                }
            });
        }
    };
    Stats::add(counter, 1);
    tracing::debug!(
        session_id = session.id(),
        decision = decision.name(),
        rule = decision.rule().map(|r| r.label.as_str()),
        "Inject decided."
    );
    InjectOutcome::Hit(HitResponse {
        status,
        headers,
        body,
        decision: decision.name(),
        rule: decision.rule().map(|r| r.label.clone()),
        layer: decision.rule().map_or("policy", |r| r.layer.as_str()),
        revision: snapshot.revision,
        case_span_id,
        consumed: decision.rule().and_then(|rule| rule.consumed_key()),
    })
}
