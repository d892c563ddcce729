//! The capture buffer of a capture session, and the case document written from it on close.

use crate::budget::{Budget, Held};
use crate::case::Case;
use crate::document::Stored;
use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Bounds on what one capture session may hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CaptureLimits {
    /// Spans kept per session; later spans are dropped and counted.
    pub max_spans: usize,
    /// Bytes of spans (protobuf-encoded size) kept per session; later spans are dropped and
    /// counted.
    pub max_bytes: usize,
}

impl Default for CaptureLimits {
    fn default() -> Self {
        Self {
            max_spans: 50_000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// The buffered trace documents of one capture session, in arrival order.
///
/// Closing seals the buffer in the same critical section that takes its contents, so every
/// span is either in the written case or refused in its export's answer, never acknowledged
/// and left behind.
#[derive(Debug)]
pub struct CaptureBuffer {
    limits: CaptureLimits,
    inner: Mutex<Buffer>,
}

#[derive(Debug)]
struct Buffer {
    captured: Captured,
    sealed: bool,
    /// The buffer's bytes, held against the process-wide capture budget until it is dropped.
    held: Held,
}

/// What a capture session recorded.
#[derive(Debug, Default, Clone)]
pub struct Captured {
    /// Trace documents in arrival order, kept as protobuf: about 1 byte per byte of span
    /// instead of 2.5 decoded, and one buffer to free per document. They become OTLP JSON only
    /// when a case is written, off the ingest path.
    pub encoded: Vec<Bytes>,
    /// Spans kept.
    pub spans: usize,
    /// Bytes kept (protobuf-encoded size).
    pub bytes: usize,
    /// Spans refused because a limit was reached; non-zero marks the case incomplete.
    pub dropped_spans: u64,
}

impl Captured {
    /// The trace documents, decoded.
    pub fn traces(&self) -> impl Iterator<Item = TracesData> + '_ {
        self.encoded
            .iter()
            // The buffer only holds what `push` encoded, so this cannot fail; were it ever to,
            // the document is reported and left out rather than written as an empty trace.
            .filter_map(|bytes| match TracesData::decode(bytes.as_ref()) {
                Ok(trace) => Some(trace),
                Err(err) => {
                    tracing::error!(%err, "A buffered capture document does not decode.");
                    None
                }
            })
    }
}

/// Why a trace document was not appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// A limit of the session's buffer was reached; the spans are dropped and counted.
    #[error("capture buffer full ({limit}); {spans} spans dropped")]
    Full {
        /// Which limit was hit.
        limit: &'static str,
        /// Spans dropped by this refusal.
        spans: usize,
    },
    /// The session is closing: its case is being written without these spans.
    #[error("the session is closing")]
    Sealed,
}

impl CaptureBuffer {
    /// An empty buffer with these limits, whose bytes count against `budget`.
    pub fn new(limits: CaptureLimits, budget: &Arc<Budget>) -> Self {
        Self {
            limits,
            inner: Mutex::new(Buffer {
                captured: Captured::default(),
                sealed: false,
                held: budget.empty(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Buffer> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one protobuf-encoded trace document of `spans` spans, or refuses it whole. Its
    /// bytes move from `reserved` (held against the capture budget by the caller, for the whole
    /// export, so that an export is appended whole or refused whole) into the buffer.
    pub fn push(&self, encoded: Bytes, spans: usize, reserved: &mut Held) -> Result<(), PushError> {
        let bytes = encoded.len();
        let mut buffer = self.lock();
        if buffer.sealed {
            return Err(PushError::Sealed);
        }
        let captured = &mut buffer.captured;
        let limit = if captured.spans + spans > self.limits.max_spans {
            Some("max spans per session")
        } else if captured.bytes + bytes > self.limits.max_bytes {
            Some("max bytes per session")
        } else {
            None
        };
        if let Some(limit) = limit {
            captured.dropped_spans += spans as u64;
            return Err(PushError::Full { limit, spans });
        }
        captured.encoded.push(encoded);
        captured.spans += spans;
        captured.bytes += bytes;
        reserved.give(bytes, &mut buffer.held);
        Ok(())
    }

    /// A copy of what is buffered (for `GET /v1/captures/{id}` of a live session).
    pub fn contents(&self) -> Captured {
        self.lock().captured.clone()
    }

    /// Stops intake and returns everything accepted until now: later pushes are refused.
    pub fn seal(&self) -> Captured {
        let mut buffer = self.lock();
        buffer.sealed = true;
        buffer.captured.clone()
    }

    /// Reopens intake after a case could not be written, so the session goes on capturing
    /// and its close can be retried.
    pub fn unseal(&self) {
        self.lock().sealed = false;
    }

    /// Spans buffered so far and spans dropped so far.
    pub fn counts(&self) -> (usize, u64) {
        let buffer = self.lock();
        (buffer.captured.spans, buffer.captured.dropped_spans)
    }
}

/// The case document for a capture: `version`, `caseId`, `mode`, `createdAt`, `traces`, plus
/// `incomplete` and `droppedSpans` when the buffer overflowed (the schema is open). When the
/// session had loaded a case (capture-on-miss: replay what the case has, record the rest), the
/// written case holds that case's traces and rules, then the newly recorded traces.
pub fn case_document(
    case_id: &str,
    created_at: SystemTime,
    captured: &Captured,
    loaded: Option<&Stored<Case>>,
) -> Value {
    let mut traces: Vec<Value> = loaded
        .map(|case| {
            case.parsed
                .traces
                .iter()
                .cloned()
                .map(Value::Object)
                .collect()
        })
        .unwrap_or_default();
    traces.extend(
        captured
            .traces()
            .map(|trace| crate::otlp::case_trace_json(&trace)),
    );
    let mut case = json!({
        "version": "1.0.0",
        "caseId": case_id,
        "mode": "capture",
        "createdAt": humantime::format_rfc3339_seconds(created_at).to_string(),
        "traces": traces,
    });
    // The rules as they were posted (the parsed ones lost their exact form).
    let rules = loaded
        .and_then(|case| serde_json::from_slice::<Value>(&case.raw).ok())
        .and_then(|mut document| document.get_mut("rules").map(Value::take))
        .filter(|rules| rules.as_array().is_some_and(|r| !r.is_empty()));
    if let Some(rules) = rules {
        case["rules"] = rules;
    }
    if captured.dropped_spans > 0 {
        case["incomplete"] = json!(true);
        case["droppedSpans"] = json!(captured.dropped_spans);
    }
    case
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_counted_and_marks_the_case() {
        let budget = Budget::new("captures", "--flag", 1000);
        let buffer = CaptureBuffer::new(
            CaptureLimits {
                max_spans: 2,
                max_bytes: 1000,
            },
            &budget,
        );
        let trace = Bytes::new;
        let mut reserved = budget.empty();
        buffer.push(trace(), 2, &mut reserved).unwrap();
        let err = buffer.push(trace(), 1, &mut reserved).unwrap_err();
        assert_eq!(
            err,
            PushError::Full {
                limit: "max spans per session",
                spans: 1
            }
        );
        let captured = buffer.contents();
        assert_eq!((captured.spans, captured.dropped_spans), (2, 1));
        let case = case_document("c", SystemTime::UNIX_EPOCH, &captured, None);
        assert_eq!(case["incomplete"], json!(true));
        assert_eq!(case["createdAt"], json!("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn a_sealed_buffer_refuses_and_keeps_what_it_had() {
        let budget = Budget::new("captures", "--flag", 1000);
        let buffer = CaptureBuffer::new(CaptureLimits::default(), &budget);
        let mut reserved = budget.acquire(3).unwrap();
        buffer
            .push(Bytes::from_static(b"a"), 1, &mut reserved)
            .unwrap();
        let sealed = buffer.seal();
        assert_eq!(sealed.spans, 1);
        assert_eq!(
            buffer.push(Bytes::from_static(b"b"), 1, &mut reserved),
            Err(PushError::Sealed)
        );
        buffer.unseal();
        buffer
            .push(Bytes::from_static(b"c"), 1, &mut reserved)
            .unwrap();
        assert_eq!(buffer.counts(), (2, 0));
        // The buffer holds its two bytes until it goes; the refused one was given back.
        assert_eq!(reserved.bytes(), 1);
        drop(reserved);
        assert_eq!(budget.used(), 2);
        drop(buffer);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn a_loaded_case_comes_first_with_its_rules() {
        let raw = br#"{"version":"1.0.0","caseId":"old","traces":[{"resourceSpans":[]}],
            "rules":[{"name":"r","when":{},"then":{"action":"replay"}}]}"#;
        let loaded = Stored::new(bytes::Bytes::from_static(raw), Case::parse(raw).unwrap());
        let budget = Budget::new("captures", "--flag", 1 << 20);
        let buffer = CaptureBuffer::new(CaptureLimits::default(), &budget);
        let recorded = TracesData::default().encode_to_vec();
        let mut reserved = budget.acquire(recorded.len()).unwrap();
        buffer.push(recorded.into(), 0, &mut reserved).unwrap();
        let case = case_document(
            "new",
            SystemTime::UNIX_EPOCH,
            &buffer.contents(),
            Some(&loaded),
        );
        assert_eq!(case["caseId"], "new");
        assert_eq!(case["traces"].as_array().unwrap().len(), 2);
        assert_eq!(case["traces"][0], json!({"resourceSpans": []}));
        assert_eq!(case["rules"][0]["name"], "r");
    }
}
