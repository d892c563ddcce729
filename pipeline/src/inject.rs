//! The inject signal: a lookup read from one inject span, and what the pipeline answers.

use crate::hop::Hop;
use crate::otlp::{DecodeError, HitResponse};

/// An inject lookup: the hop and its session id, borrowed from the request body.
#[derive(Debug)]
pub struct InjectLookup<'a> {
    /// The hop.
    pub hop: Hop<'a>,
    /// The session id the span carries, if any.
    pub session_id: Option<&'a str>,
}

/// The answer to an inject lookup.
#[derive(Debug)]
pub enum InjectOutcome {
    /// The runtime produced a response (mock, error rule, strict miss).
    Hit(HitResponse),
    /// The proxy should forward upstream.
    Forward(ForwardReason),
}

/// Why a hop is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardReason {
    /// No rule matched and the policy allows the hop.
    Miss,
    /// A `passthrough` rule matched.
    Passthrough,
    /// A `capture_only` rule matched.
    CaptureOnly,
    /// The span names a session that is unknown or closed.
    UnknownSession,
}

impl ForwardReason {
    /// The wire spelling (gRPC `NOT_FOUND` messages, logs).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Miss => "miss",
            Self::Passthrough => "passthrough",
            Self::CaptureOnly => "capture_only",
            Self::UnknownSession => "unknown_session",
        }
    }
}

/// An inject request the pipeline cannot answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InjectError {
    /// The body is not OTLP.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// No span to decide.
    #[error("no span to decide: send one span with sp.span.type=\"inject\"")]
    NoInjectSpan,
    /// The span names no session.
    #[error("missing session id: set sp.session.id (or tracestate x-softprobe-session-id)")]
    MissingSession,
    /// The shared session store did not answer; the proxy's failure mode decides the hop.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}
