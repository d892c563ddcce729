//! The records that flow through the pipeline, from receiver to case writer, and its outcomes.

use crate::matcher::Hop;
use crate::otlp::{DecodeError, Encoding, HitResponse};
use crate::session::Session;
use crate::wire::Checked;
use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use std::sync::Arc;

/// Which question a request asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// `POST /v1/inject` or the inject RPC: what should this hop get?
    Inject,
    /// `POST /v1/traces` or `TraceService/Export`: keep these spans.
    Export,
}

/// What a receiver hands the pipeline: one OTLP message, still encoded (an OTLP/HTTP body, or
/// a gRPC request message).
#[derive(Debug)]
pub struct Received {
    /// Inject or export.
    pub signal: Signal,
    /// The message as received.
    pub body: Bytes,
    /// The encoding its `Content-Type` declares (`None`: undeclared, read as either), or why
    /// the type is not one OTLP uses; the receiver stage refuses the latter, as it refuses a
    /// body that does not decode.
    pub encoding: Result<Option<Encoding>, DecodeError>,
    /// `Content-Encoding`, if any.
    pub content_encoding: Option<String>,
    /// Whether the client asked for JSON answers (`Accept` for inject, the request type for
    /// export).
    pub wants_json: bool,
}

impl Received {
    /// A protobuf message with nothing to decompress, answered in protobuf: a gRPC request
    /// (tonic has already taken off the framing and any compression).
    pub fn protobuf(signal: Signal, message: Bytes) -> Self {
        Self {
            signal,
            body: message,
            encoding: Ok(Some(Encoding::Protobuf)),
            content_encoding: None,
            wants_json: false,
        }
    }
}

/// A decoded record. An inject lookup borrows from the request body it was read from.
#[derive(Debug)]
pub enum Record<'a> {
    /// One candidate hop to decide.
    Inject(InjectLookup<'a>),
    /// Spans to keep.
    Export(ExportBatch),
}

/// An inject lookup: the hop and its session id.
#[derive(Debug)]
pub struct InjectLookup<'a> {
    /// The hop.
    pub hop: Hop<'a>,
    /// The session id the span carries, if any.
    pub session_id: Option<&'a str>,
    /// How to encode a hit.
    pub encoding: Encoding,
}

/// Spans to keep.
#[derive(Debug)]
pub struct ExportBatch {
    /// The spans as received.
    pub spans: Spans,
    /// How to encode the answer.
    pub encoding: Encoding,
}

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

/// A record with its session(s) attached.
#[derive(Debug)]
pub enum Enriched<'a> {
    /// An inject lookup for a live session.
    Inject {
        /// The lookup.
        lookup: InjectLookup<'a>,
        /// Its session.
        session: Arc<Session>,
    },
    /// Export spans grouped by live session, plus what could not be attributed.
    Export(SessionBatches),
}

/// Export spans grouped by session.
#[derive(Debug, Default)]
pub struct SessionBatches {
    /// One entry per session, spans in arrival order.
    pub batches: Vec<SessionBatch>,
    /// Spans refused before reaching a session, and why.
    pub refused: Refused,
    /// How to encode the answer.
    pub encoding: Option<Encoding>,
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

/// What the pipeline answers.
#[derive(Debug)]
pub enum Outcome {
    /// The answer to an inject lookup.
    Inject(InjectOutcome),
    /// The answer to an export.
    Export(ExportOutcome),
}

/// The answer to an inject lookup.
#[derive(Debug)]
pub enum InjectOutcome {
    /// The runtime produced a response (mock, error rule, strict miss).
    Hit {
        /// The response.
        hit: HitResponse,
        /// How to encode it.
        encoding: Encoding,
    },
    /// The proxy should forward: `miss`, `passthrough`, `capture_only` or `unknown_session`.
    Forward {
        /// Why.
        reason: &'static str,
    },
}

/// The answer to an export.
#[derive(Debug)]
pub struct ExportOutcome {
    /// Spans accepted.
    pub accepted: u64,
    /// Spans refused, by reason.
    pub refused: Refused,
    /// How to encode the answer.
    pub encoding: Encoding,
}

/// A request the pipeline cannot process.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PipelineError {
    /// The body is not OTLP.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// An inject request without an inject span.
    #[error("no span to decide: send one span with sp.span.type=\"inject\"")]
    NoInjectSpan,
    /// An inject span without a session.
    #[error("missing session id: set sp.session.id (or tracestate x-softprobe-session-id)")]
    MissingSession,
    /// Keeping the spans would exceed the capture budget; nothing was kept, retry later.
    #[error(transparent)]
    OverBudget(#[from] crate::budget::OverBudget),
}
