//! Case writer, the innermost stage of export: appends accepted spans to their capture
//! session's buffer, counts what it refuses, and on close writes the session's case file.

use crate::budget::Budget;
use crate::capture::{Captured, PushError, case_document};
use crate::case_file::{CasePaths, Destination, WriteError, write_case};
use crate::export::{ExportError, ExportOutcome, SessionBatches};
use crate::session::{Session, Stats};
use std::fs::Metadata;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

/// The case writer.
#[derive(Debug, Clone)]
pub struct CaseWriter {
    budget: Arc<Budget>,
    paths: Arc<CasePaths>,
}

/// A case file as written.
#[derive(Debug)]
pub struct WrittenCase {
    /// Where.
    pub path: PathBuf,
    /// The file's metadata right after the write.
    pub metadata: Metadata,
    /// Spans in it.
    pub spans: usize,
    /// Spans the session's buffer had refused (the case is marked incomplete).
    pub dropped_spans: u64,
}

impl CaseWriter {
    /// A case writer whose buffers draw on the process-wide capture `budget` and whose cases
    /// go where `paths` say.
    pub fn new(budget: Arc<Budget>, paths: CasePaths) -> Self {
        Self {
            budget,
            paths: Arc::new(paths),
        }
    }

    /// Appends each batch to its session's capture buffer; replay and generate sessions accept
    /// spans without keeping them.
    pub(crate) fn append(&self, batches: SessionBatches) -> Result<ExportOutcome, ExportError> {
        let mut refused = batches.refused;
        let mut accepted = 0;
        let mut kept = Vec::with_capacity(batches.batches.len());
        for batch in batches.batches {
            if batch.session.capture.is_none() {
                accepted += batch.count as u64;
                continue;
            }
            let encoded = batch.spans.encoded();
            kept.push((batch.session, encoded, batch.count));
        }
        // The whole export is held against the capture budget before any of it is appended,
        // so a refusal (which exporters retry) never leaves part of it behind as a duplicate.
        let total = kept.iter().map(|(_, encoded, _)| encoded.len()).sum();
        let mut reserved = self.budget.acquire(total)?;
        for (session, encoded, count) in kept {
            let Some(buffer) = &session.capture else {
                continue;
            };
            match buffer.push(encoded, count, &mut reserved) {
                Ok(()) => {
                    accepted += count as u64;
                    Stats::add(&session.stats.extracted_spans, count as u64);
                }
                Err(PushError::Sealed) => {
                    // Closed while this export was on its way: refused, never silently lost.
                    refused.unknown_session += count as u64;
                }
                Err(PushError::Full { limit, spans }) => {
                    refused.buffer_full += spans as u64;
                    Stats::add(&session.stats.dropped_spans, spans as u64);
                    tracing::warn!(
                        session_id = session.id(),
                        limit,
                        spans,
                        "Capture buffer full; spans dropped."
                    );
                }
            }
        }
        Ok(ExportOutcome { accepted, refused })
    }

    /// Where a capture session's case goes: the close request's `out`, else the configured
    /// template or directory.
    pub fn destination(
        &self,
        session: &Session,
        out: Option<&str>,
        now: SystemTime,
    ) -> Result<Destination, WriteError> {
        self.paths.resolve(out, session.id(), now)
    }

    /// Writes a capture session's case to `destination`: seals its buffer first (exports from
    /// then on are refused), and on failure reopens it so the session goes on capturing and the
    /// write can be retried. `ours` says whether an existing file there is one this runtime
    /// wrote. `None` for a session without a capture.
    pub fn write(
        &self,
        session: &Session,
        destination: &Destination,
        now: SystemTime,
        ours: impl Fn(&Path, &Metadata) -> bool,
    ) -> Result<Option<WrittenCase>, WriteError> {
        let Some(buffer) = &session.capture else {
            return Ok(None);
        };
        let captured = buffer.seal();
        let written = Self::write_captured(session, &captured, destination, now, ours);
        if written.is_err() {
            buffer.unseal();
        }
        written.map(Some)
    }

    /// Writes the case of `captured`, a capture of `session` taken elsewhere (a shared store
    /// seals and takes it).
    pub fn write_captured(
        session: &Session,
        captured: &Captured,
        destination: &Destination,
        now: SystemTime,
        ours: impl Fn(&Path, &Metadata) -> bool,
    ) -> Result<WrittenCase, WriteError> {
        let loaded = session.snapshot().case.clone();
        let document = case_document(session.id(), now, captured, loaded.as_deref());
        let metadata = write_case(destination, &document, ours)?;
        Ok(WrittenCase {
            path: destination.path.clone(),
            metadata,
            spans: captured.spans,
            dropped_spans: captured.dropped_spans,
        })
    }
}
