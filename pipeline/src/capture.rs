//! The capture buffer of a capture session, and the case document written from it on close.

use bytes::Bytes;
use opentelemetry_proto::tonic::trace::v1::TracesData;
use prost::Message as _;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
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
#[derive(Debug)]
pub struct CaptureBuffer {
    limits: CaptureLimits,
    inner: Mutex<Captured>,
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

/// A trace document was refused because the session's buffer is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("capture buffer full ({limit}); {spans} spans dropped")]
pub struct BufferFull {
    /// Which limit was hit.
    pub limit: &'static str,
    /// Spans dropped by this refusal.
    pub spans: usize,
}

impl CaptureBuffer {
    /// An empty buffer with these limits.
    pub fn new(limits: CaptureLimits) -> Self {
        Self {
            limits,
            inner: Mutex::new(Captured::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Captured> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Appends one protobuf-encoded trace document of `spans` spans, or refuses it whole.
    pub fn push(&self, encoded: Bytes, spans: usize) -> Result<(), BufferFull> {
        let bytes = encoded.len();
        let mut captured = self.lock();
        let limit = if captured.spans + spans > self.limits.max_spans {
            Some("max spans per session")
        } else if captured.bytes + bytes > self.limits.max_bytes {
            Some("max bytes per session")
        } else {
            None
        };
        if let Some(limit) = limit {
            captured.dropped_spans += spans as u64;
            return Err(BufferFull { limit, spans });
        }
        captured.encoded.push(encoded);
        captured.spans += spans;
        captured.bytes += bytes;
        Ok(())
    }

    /// A copy of what is buffered (for `GET /v1/captures/{id}` of a live session).
    pub fn contents(&self) -> Captured {
        self.lock().clone()
    }

    /// Spans buffered so far and spans dropped so far.
    pub fn counts(&self) -> (usize, u64) {
        let captured = self.lock();
        (captured.spans, captured.dropped_spans)
    }
}

/// The case document for a capture: `version`, `caseId`, `mode`, `createdAt`, `traces`, plus
/// `incomplete` and `droppedSpans` when the buffer overflowed (the schema is open).
pub fn case_document(case_id: &str, created_at: SystemTime, captured: &Captured) -> Value {
    let mut case = json!({
        "version": "1.0.0",
        "caseId": case_id,
        "mode": "capture",
        "createdAt": humantime::format_rfc3339_seconds(created_at).to_string(),
        "traces": captured.traces().map(|trace| crate::otlp::case_trace_json(&trace)).collect::<Vec<_>>(),
    });
    if captured.dropped_spans > 0 {
        case["incomplete"] = json!(true);
        case["droppedSpans"] = json!(captured.dropped_spans);
    }
    case
}

/// Why a case could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The path template names a storage scheme this runtime does not write to.
    #[error("unsupported scheme {0:?} in the capture path; use a local path or file://")]
    UnsupportedScheme(String),
    /// The file system refused.
    #[error("cannot write {path}: {source}")]
    Io {
        /// The path being written.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Resolves where a capture session's case goes.
///
/// `out` (the close request's `?out=`) wins, then `template` (`SOFTPROBE_CAPTURE_CASE_PATH`),
/// then `<capture_dir>/{sessionId}.case.json`. Templates may use `{sessionId}`, `{ts}`
/// (`20260405T120000Z`) and `{mode}`, and may be `file://` URLs.
pub fn resolve_case_path(
    out: Option<&str>,
    template: Option<&str>,
    capture_dir: &Path,
    session_id: &str,
    now: SystemTime,
) -> Result<PathBuf, WriteError> {
    let raw = match (out.map(str::trim).filter(|o| !o.is_empty()), template) {
        (Some(out), _) => out.to_owned(),
        (None, Some(template)) if !template.trim().is_empty() => template.trim().to_owned(),
        _ => return Ok(capture_dir.join(format!("{session_id}.case.json"))),
    };
    let ts: String = humantime::format_rfc3339_seconds(now)
        .to_string()
        .chars()
        .filter(|c| *c != '-' && *c != ':')
        .collect();
    let expanded = raw
        .replace("{sessionId}", session_id)
        .replace("{ts}", &ts)
        .replace("{mode}", "capture");
    match expanded.split_once("://") {
        None => Ok(PathBuf::from(expanded)),
        Some(("file", rest)) => Ok(PathBuf::from(rest)),
        Some((scheme, _)) => Err(WriteError::UnsupportedScheme(scheme.to_owned())),
    }
}

/// Writes `document` to `path` atomically: a temporary file beside it, then a rename, so a
/// reader never sees half a case.
pub fn write_atomically(path: &Path, document: &Value) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_owned(),
        source,
    };
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io)?;
    let mut bytes = serde_json::to_vec_pretty(document).map_err(|e| io(e.into()))?;
    bytes.push(b'\n');
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{file_name}.{}.tmp", std::process::id()));
    std::fs::write(&temporary, &bytes).map_err(io)?;
    std::fs::rename(&temporary, path).map_err(|err| {
        let _ = std::fs::remove_file(&temporary);
        io(err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn overflow_is_counted_and_marks_the_case() {
        let buffer = CaptureBuffer::new(CaptureLimits {
            max_spans: 2,
            max_bytes: 1000,
        });
        let trace = Bytes::new;
        buffer.push(trace(), 2).unwrap();
        let err = buffer.push(trace(), 1).unwrap_err();
        assert_eq!(err.limit, "max spans per session");
        let captured = buffer.contents();
        assert_eq!((captured.spans, captured.dropped_spans), (2, 1));
        let case = case_document("c", SystemTime::UNIX_EPOCH, &captured);
        assert_eq!(case["incomplete"], json!(true));
        assert_eq!(case["createdAt"], json!("1970-01-01T00:00:00Z"));
    }

    #[test]
    fn paths_follow_out_then_template_then_dir() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_775_390_400);
        let dir = Path::new("caps");
        let p = |out, template| resolve_case_path(out, template, dir, "sess_1", now);
        assert_eq!(p(None, None).unwrap(), Path::new("caps/sess_1.case.json"));
        assert_eq!(
            p(None, Some("{mode}-{sessionId}-{ts}.json")).unwrap(),
            Path::new("capture-sess_1-20260405T120000Z.json")
        );
        assert_eq!(
            p(Some(" x.json "), Some("t.json")).unwrap(),
            Path::new("x.json")
        );
        assert_eq!(
            p(None, Some("file:///d/o.json")).unwrap(),
            Path::new("/d/o.json")
        );
        let err = p(None, Some("s3://b/k")).unwrap_err();
        assert!(
            err.to_string().contains("unsupported scheme \"s3\""),
            "{err}"
        );
    }

    #[test]
    fn writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/case.json");
        write_atomically(&path, &json!({"a":1})).unwrap();
        write_atomically(&path, &json!({"a":2})).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"a":2})
        );
        assert_eq!(
            std::fs::read_dir(path.parent().unwrap()).unwrap().count(),
            1
        );
    }
}
