//! Capture-time rules for export: header values that captured spans never keep.

use crate::export::{ExportError, SessionBatches, Spans};
use crate::otlp::{DecodeError, header_name};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValueKind;
use opentelemetry_proto::tonic::trace::v1::TracesData;

/// What a redacted header value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

/// Redaction settings.
#[derive(Debug, Clone)]
pub struct RedactConfig {
    /// Header names (lower-case) whose values are redacted in captured spans, in addition to
    /// the session policy's `redactHeaders`.
    pub redact_headers: Vec<String>,
}

impl Default for RedactConfig {
    fn default() -> Self {
        Self {
            redact_headers: softprobe_otlp::SENSITIVE_HEADERS
                .iter()
                .map(|h| (*h).to_owned())
                .collect(),
        }
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

/// Redacts every batch with the runtime's names and its session policy's.
pub(crate) fn redact(
    config: &RedactConfig,
    batches: &mut SessionBatches,
) -> Result<(), ExportError> {
    for batch in &mut batches.batches {
        let snapshot = batch.session.snapshot_guard();
        let redaction = Redaction {
            names: &config.redact_headers,
            policy: snapshot
                .policy
                .as_ref()
                .map_or(&[][..], |p| &p.parsed.redact_headers[..]),
        };
        redaction.apply(&mut batch.spans)?;
    }
    Ok(())
}
