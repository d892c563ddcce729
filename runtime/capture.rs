//! Closing sessions and writing capture sessions out as case files: on a close request, on
//! idle expiry and at shutdown. A capture is never thrown away: a case that cannot be written
//! keeps its session open, and the write is retried.

use crate::case_index::CaseFile;
use crate::state::AppState;
use softprobe_pipeline::case_file::{CasePaths, WriteError};
use softprobe_pipeline::session::Session;
use softprobe_pipeline::stages::CaseWriter;
use std::path::PathBuf;
use std::time::SystemTime;

/// Why a session is being closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closing<'a> {
    /// `POST …/close`, with its `?out=`.
    Request {
        /// The client's chosen path.
        out: Option<&'a str>,
    },
    /// Idle expiry: closes only if the session is still idle once its write lock is held.
    Idle,
    /// Shutdown.
    Shutdown,
}

/// Why a close failed.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// Another close won the race.
    #[error("unknown session")]
    AlreadyClosed,
    /// An idle session was used again before it could be expired.
    #[error("the session is in use again")]
    InUse,
    /// The capture could not be written; the session stays open.
    #[error("write captured case failed: {0}")]
    Write(WriteError),
}

/// Closes a session: the case writer writes its capture's case (refusing exports from then on),
/// then the session is removed. A failed write leaves the session capturing in the store, so
/// nothing is lost and the close can be retried.
pub fn close_session(
    state: &AppState,
    session: &Session,
    closing: Closing<'_>,
) -> Result<Option<PathBuf>, CloseError> {
    let guard = session.lock_writes();
    if session.is_closed() {
        return Err(CloseError::AlreadyClosed);
    }
    if closing == Closing::Idle
        && !state.store.is_idle(session)
        && session.capture_write_error().is_none()
    {
        return Err(CloseError::InUse);
    }
    let now = SystemTime::now();
    let out = match closing {
        Closing::Request { out } => out,
        Closing::Idle | Closing::Shutdown => None,
    };
    let writer = state.pipelines.case_writer();
    let written = writer
        .destination(session, out, now)
        .and_then(|destination| {
            writer.write(session, &destination, now, |path, meta| {
                state.captures.wrote(path, meta)
            })
        });
    let path = match written {
        Ok(None) => None,
        Ok(Some(written)) => {
            tracing::info!(
                session_id = session.id(),
                path = %written.path.display(),
                spans = written.spans,
                dropped_spans = written.dropped_spans,
                "Capture written."
            );
            let file = CaseFile::new(written.path.clone(), &written.metadata);
            state.captures.remember(session.id(), file);
            Some(written.path)
        }
        Err(err) => {
            if !err.is_refused_path() {
                state.metrics.capture_write_failed();
            }
            // A failed close request is answered and may be retried by its client; a failed
            // expiry is retried at every sweep until the case is written.
            if closing == Closing::Idle {
                session.set_capture_write_error(Some(err.to_string()));
            }
            return Err(CloseError::Write(err));
        }
    };
    guard.mark_closed();
    drop(guard);
    state.store.remove(session);
    Ok(path)
}

/// Expires idle sessions, writing capture sessions' cases first; retries failed writes.
/// Run periodically.
pub fn expire_idle(state: &AppState) {
    for session in state.store.expiring() {
        match close_session(state, &session, Closing::Idle) {
            Ok(_) => tracing::info!(
                session_id = session.id(),
                mode = session.mode().as_str(),
                "Idle session expired."
            ),
            Err(CloseError::AlreadyClosed | CloseError::InUse) => {}
            Err(err) => tracing::error!(
                session_id = session.id(),
                %err,
                "Capture of an idle session could not be written; kept and retried at the next sweep."
            ),
        }
    }
}

/// Writes every open capture session's case (at shutdown). A case that cannot be written where
/// it belongs is spilled to [`spill_dir`], so stopping never loses a capture.
pub fn flush_all(state: &AppState) {
    for session in state.store.list() {
        if session.capture.is_none() {
            continue;
        }
        match close_session(state, &session, Closing::Shutdown) {
            Ok(_) | Err(CloseError::AlreadyClosed | CloseError::InUse) => {}
            Err(err) => spill(state.pipelines.case_writer(), &session, &err),
        }
    }
}

/// Where shutdown writes the cases it could not write to their place:
/// `$TMPDIR/softprobe-unwritten-captures/`.
pub fn spill_dir() -> PathBuf {
    std::env::temp_dir().join("softprobe-unwritten-captures")
}

fn spill(writer: &CaseWriter, session: &Session, err: &CloseError) {
    let now = SystemTime::now();
    let spill = CasePaths {
        capture_dir: spill_dir(),
        ..CasePaths::default()
    };
    let written = spill
        .resolve(None, session.id(), now)
        .and_then(|destination| writer.write(session, &destination, now, |_, _| false));
    match written {
        Ok(written) => tracing::error!(
            session_id = session.id(),
            %err,
            spilled_to = ?written.map(|w| w.path),
            "Capture could not be written at shutdown; written to the spill directory instead."
        ),
        Err(spill_err) => tracing::error!(
            session_id = session.id(),
            %err,
            %spill_err,
            "Capture could not be written at shutdown, nor spilled."
        ),
    }
}
