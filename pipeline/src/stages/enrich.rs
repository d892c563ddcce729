//! Session enrichment: attaches each record's live session, and groups export spans by it.

use crate::otlp::SpanView;
use crate::record::{
    Enriched, InjectOutcome, Outcome, PipelineError, Record, Refused, SessionBatch, SessionBatches,
    Spans,
};
use crate::session::Session;
use crate::store::SessionStore;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Adds session enrichment in front of an enriched-record service.
#[derive(Debug, Clone)]
pub struct EnrichSessionLayer {
    store: Arc<SessionStore>,
}

impl EnrichSessionLayer {
    /// Enrichment from this store.
    pub fn new(store: Arc<SessionStore>) -> Self {
        Self { store }
    }
}

impl<S> Layer<S> for EnrichSessionLayer {
    type Service = EnrichSession<S>;

    fn layer(&self, inner: S) -> Self::Service {
        EnrichSession {
            inner,
            store: self.store.clone(),
        }
    }
}

/// The session enrichment service.
#[derive(Debug, Clone)]
pub struct EnrichSession<S> {
    inner: S,
    store: Arc<SessionStore>,
}

impl<'a, S> Service<Record<'a>> for EnrichSession<S>
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

    fn call(&mut self, record: Record<'a>) -> Self::Future {
        match record {
            Record::Inject(lookup) => {
                let Some(id) = lookup.session_id else {
                    return ready(Err(PipelineError::MissingSession));
                };
                match self.store.get(id) {
                    Ok(session) => self.inner.call(Enriched::Inject { lookup, session }),
                    // An unknown or closed session behaves like "no rules": the proxy forwards.
                    Err(_) => ready(Ok(Outcome::Inject(InjectOutcome::Forward {
                        reason: "unknown_session",
                    }))),
                }
            }
            Record::Export(batch) => match group(&self.store, batch.spans) {
                Ok(mut batches) => {
                    batches.encoding = Some(batch.encoding);
                    self.inner.call(Enriched::Export(batches))
                }
                Err(err) => ready(Err(err)),
            },
        }
    }
}

/// Groups an export's spans by session. A protobuf batch whose spans all name the same live
/// session stays as received; any other is decoded and split.
fn group(store: &SessionStore, spans: Spans) -> Result<SessionBatches, PipelineError> {
    let traces = match spans {
        Spans::Decoded(traces) => traces,
        Spans::Wire(body) => {
            let routing = body.routing();
            if let Some(session) = routing.session.as_deref().and_then(|id| store.get(id).ok()) {
                let count = routing.spans;
                return Ok(SessionBatches {
                    batches: vec![SessionBatch {
                        session,
                        spans: Spans::Wire(body),
                        count,
                    }],
                    ..SessionBatches::default()
                });
            }
            body.decode()?
        }
    };
    Ok(group_by_session(store, traces))
}

/// Splits `traces` by the session of each span, keeping resources and scopes, in arrival order.
/// Spans without a live session are counted as refused.
pub(crate) fn group_by_session(store: &SessionStore, traces: TracesData) -> SessionBatches {
    let mut refused = Refused::default();
    let mut groups: Vec<Group> = Vec::new();
    let mut sessions: Vec<(String, Option<Arc<Session>>)> = Vec::new();
    let mut lookup = |id: &str| -> Option<Arc<Session>> {
        if let Some((_, session)) = sessions.iter().find(|(known, _)| known == id) {
            return session.clone();
        }
        let session = store.get(id).ok();
        sessions.push((id.to_owned(), session.clone()));
        session
    };
    for resource_spans in traces.resource_spans {
        let ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        } = resource_spans;
        for scope_spans in scope_spans {
            let ScopeSpans {
                scope,
                spans,
                schema_url: scope_schema,
            } = scope_spans;
            let origin = Origin {
                resource: &resource,
                schema_url: &schema_url,
                scope: &scope,
                scope_schema: &scope_schema,
            };
            for span in spans {
                let Some(id) = SpanView::of(&span, resource.as_ref())
                    .session()
                    .map(str::to_owned)
                else {
                    refused.no_session += 1;
                    continue;
                };
                let Some(session) = lookup(&id) else {
                    refused.unknown_session += 1;
                    continue;
                };
                let group = group_for(&mut groups, &session);
                append_span(&mut group.traces, &origin, span);
                group.count += 1;
            }
        }
    }
    SessionBatches {
        batches: groups
            .into_iter()
            .map(|group| SessionBatch {
                session: group.session,
                spans: Spans::Decoded(group.traces),
                count: group.count,
            })
            .collect(),
        refused,
        encoding: None,
    }
}

/// One session's spans while a batch is split.
struct Group {
    session: Arc<Session>,
    traces: TracesData,
    count: usize,
}

fn group_for<'a>(groups: &'a mut Vec<Group>, session: &Arc<Session>) -> &'a mut Group {
    let index = match groups.iter().position(|g| Arc::ptr_eq(&g.session, session)) {
        Some(index) => index,
        None => {
            groups.push(Group {
                session: session.clone(),
                traces: TracesData::default(),
                count: 0,
            });
            groups.len() - 1
        }
    };
    &mut groups[index]
}

/// Where a span came from in its batch.
struct Origin<'a> {
    resource: &'a Option<Resource>,
    schema_url: &'a str,
    scope: &'a Option<InstrumentationScope>,
    scope_schema: &'a str,
}

/// Appends `span` under the same resource and scope it arrived with, reusing the batch's last
/// resource/scope entry when it is the same one.
fn append_span(traces: &mut TracesData, origin: &Origin<'_>, span: Span) {
    let same_resource = traces
        .resource_spans
        .last()
        .is_some_and(|rs| rs.resource == *origin.resource && rs.schema_url == origin.schema_url);
    if !same_resource {
        traces.resource_spans.push(ResourceSpans {
            resource: origin.resource.clone(),
            scope_spans: Vec::new(),
            schema_url: origin.schema_url.to_owned(),
        });
    }
    let Some(rs) = traces.resource_spans.last_mut() else {
        return;
    };
    let same_scope = rs
        .scope_spans
        .last()
        .is_some_and(|ss| ss.scope == *origin.scope && ss.schema_url == origin.scope_schema);
    if !same_scope {
        rs.scope_spans.push(ScopeSpans {
            scope: origin.scope.clone(),
            spans: Vec::new(),
            schema_url: origin.scope_schema.to_owned(),
        });
    }
    if let Some(ss) = rs.scope_spans.last_mut() {
        ss.spans.push(span);
    }
}
