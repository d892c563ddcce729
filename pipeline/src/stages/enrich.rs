//! Session enrichment, shared by both signals: the live session of an inject lookup, and the
//! spans of an export grouped by theirs.

use crate::export::{ExportError, Refused, SessionBatch, SessionBatches, Spans};
use crate::inject::{InjectError, InjectLookup};
use crate::otlp::SpanView;
use crate::session::Session;
use crate::store::SessionStore;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, TracesData};
use std::sync::Arc;

/// The live session an inject lookup names; `None` when it is unknown or closed (the hop is
/// then forwarded, as with no rules).
pub(crate) fn session(
    store: &SessionStore,
    lookup: &InjectLookup<'_>,
) -> Result<Option<Arc<Session>>, InjectError> {
    let id = lookup.session_id.ok_or(InjectError::MissingSession)?;
    Ok(store.get(id).ok())
}

/// Groups an export's spans by session. A protobuf batch whose spans all name the same live
/// session stays as received; any other is decoded and split.
pub(crate) fn group(store: &SessionStore, spans: Spans) -> Result<SessionBatches, ExportError> {
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
