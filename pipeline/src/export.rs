//! The export signal: spans to keep, grouped by session on their way to capture buffers, and
//! what the pipeline answers.

use crate::budget::OverBudget;
use crate::otlp::DecodeError;
use crate::otlp::wire::Checked;
use crate::session::Session;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use std::sync::Arc;

/// Exported spans on their way to a capture.
#[derive(Debug)]
pub enum Spans {
    /// An OTLP protobuf body, checked but not decoded. A batch whose spans all go to one
    /// session and need no redaction stays this way, and its capture keeps these bytes:
    /// decoding and encoding it again would cost more than the rest of the export.
    Wire(Checked),
    /// Decoded spans.
    Decoded(TracesData),
}

impl Spans {
    /// The spans as one OTLP protobuf document, as a capture keeps them. A received body is
    /// copied, not shared: it can be a slice of the server's read buffer, and keeping the
    /// slice would keep the whole buffer (8 KiB for a one-span export).
    pub fn encoded(self) -> bytes::Bytes {
        match self {
            Spans::Wire(body) => bytes::Bytes::copy_from_slice(body.as_bytes()),
            Spans::Decoded(traces) => prost::Message::encode_to_vec(&traces).into(),
        }
    }

    /// The distinct sessions these spans name, in order of first appearance.
    pub fn session_ids(&self) -> Result<Vec<String>, ExportError> {
        let decoded;
        let traces = match self {
            Spans::Wire(body) => match &body.routing().session {
                Some(id) => return Ok(vec![id.clone()]),
                None => {
                    decoded = body.decode()?;
                    &decoded
                }
            },
            Spans::Decoded(traces) => traces,
        };
        let mut ids: Vec<String> = Vec::new();
        for resource_spans in &traces.resource_spans {
            for scope_spans in &resource_spans.scope_spans {
                for span in &scope_spans.spans {
                    let view = crate::otlp::SpanView::of(span, resource_spans.resource.as_ref());
                    if let Some(id) = view.session()
                        && !ids.iter().any(|known| known == id)
                    {
                        ids.push(id.to_owned());
                    }
                }
            }
        }
        Ok(ids)
    }
}

/// Export spans grouped by session.
#[derive(Debug, Default)]
pub struct SessionBatches {
    /// One entry per session, spans in arrival order.
    pub batches: Vec<SessionBatch>,
    /// Spans refused before reaching a session, and why.
    pub refused: Refused,
}

/// The spans of one batch that belong to one session.
#[derive(Debug)]
pub struct SessionBatch {
    /// The session.
    pub session: Arc<Session>,
    /// Its spans, with their resources and scopes.
    pub spans: Spans,
    /// How many spans.
    pub count: usize,
}

/// Spans refused, by reason.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Spans with no session at all.
    pub no_session: u64,
    /// Spans naming a session that is unknown or closed.
    pub unknown_session: u64,
    /// Spans dropped because their capture buffer was full.
    pub buffer_full: u64,
}

impl Refused {
    /// All refused spans.
    pub fn total(&self) -> u64 {
        self.no_session + self.unknown_session + self.buffer_full
    }

    /// The OTLP `partial_success.error_message` for these refusals (empty when none).
    pub fn message(&self) -> String {
        let mut parts = Vec::new();
        if self.no_session > 0 {
            parts.push(format!(
                "{} spans carry no session (sp.session.id or tracestate x-softprobe-session-id)",
                self.no_session
            ));
        }
        if self.unknown_session > 0 {
            parts.push(format!(
                "{} spans name an unknown or closed session",
                self.unknown_session
            ));
        }
        if self.buffer_full > 0 {
            parts.push(format!(
                "{} spans dropped: the session's capture buffer is full (--capture-max-spans / --capture-max-bytes)",
                self.buffer_full
            ));
        }
        parts.join("; ")
    }
}

/// The answer to an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportOutcome {
    /// Spans accepted.
    pub accepted: u64,
    /// Spans refused, by reason.
    pub refused: Refused,
}

/// An export the pipeline cannot take.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExportError {
    /// The body is not OTLP.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// Keeping the spans would exceed a memory budget; nothing was kept, retry later.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
    /// The shared session store did not answer; nothing was kept, retry later.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}
