//! Writing capture sessions out as case files: on close, on idle expiry and at shutdown.

use crate::state::AppState;
use softprobe_pipeline::capture::{WriteError, case_document, resolve_case_path, write_atomically};
use softprobe_pipeline::session::Session;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

/// How many written captures `GET /v1/captures/{id}` remembers (oldest forgotten first).
pub const REMEMBERED_CAPTURES: usize = 10_000;

/// Where recent capture sessions' cases were written.
#[derive(Debug, Default)]
pub struct CaptureIndex {
    written: Mutex<(HashMap<String, PathBuf>, VecDeque<String>)>,
}

impl CaptureIndex {
    fn remember(&self, session_id: &str, path: PathBuf) {
        let mut guard = self.written.lock().unwrap_or_else(|p| p.into_inner());
        let (paths, order) = &mut *guard;
        if paths.insert(session_id.to_owned(), path).is_none() {
            order.push_back(session_id.to_owned());
        }
        while order.len() > REMEMBERED_CAPTURES {
            if let Some(oldest) = order.pop_front() {
                paths.remove(&oldest);
            }
        }
    }

    /// The path a closed capture session's case was written to.
    pub fn path_of(&self, session_id: &str) -> Option<PathBuf> {
        let guard = self.written.lock().unwrap_or_else(|p| p.into_inner());
        guard.0.get(session_id).cloned()
    }
}

/// Writes the case of a capture session (blocking file I/O) and remembers where.
pub fn write_capture(
    state: &AppState,
    session: &Session,
    out: Option<&str>,
) -> Result<PathBuf, WriteError> {
    let now = SystemTime::now();
    let settings = &state.settings;
    let path = resolve_case_path(
        out,
        settings.capture_case_path.as_deref(),
        &settings.capture_dir,
        session.id(),
        now,
    )?;
    let captured = session
        .capture
        .as_ref()
        .map(|c| c.contents())
        .unwrap_or_default();
    write_atomically(&path, &case_document(session.id(), now, &captured))?;
    tracing::info!(
        session_id = session.id(),
        path = %path.display(),
        spans = captured.spans,
        dropped_spans = captured.dropped_spans,
        "Capture written."
    );
    state.captures.remember(session.id(), path.clone());
    Ok(path)
}

/// Closes a session: writes its capture (capture mode), then removes it. A failed write leaves
/// the session open so nothing is lost and the close can be retried.
pub fn close_session(
    state: &AppState,
    session: &Session,
    out: Option<&str>,
) -> Result<Option<PathBuf>, CloseError> {
    let guard = session.lock_writes();
    if session.is_closed() {
        return Err(CloseError::AlreadyClosed);
    }
    let path = match &session.capture {
        Some(_) => Some(write_capture(state, session, out).map_err(CloseError::Write)?),
        None => None,
    };
    guard.mark_closed();
    drop(guard);
    state.store.remove(session);
    Ok(path)
}

/// Why a close failed.
#[derive(Debug, thiserror::Error)]
pub enum CloseError {
    /// Another close won the race.
    #[error("unknown session")]
    AlreadyClosed,
    /// The capture could not be written; the session stays open.
    #[error("write captured case failed: {0}")]
    Write(WriteError),
}

/// Expires idle sessions, flushing capture sessions first. Run periodically.
pub fn expire_idle(state: &AppState) {
    for session in state.store.take_idle() {
        tracing::info!(
            session_id = session.id(),
            mode = session.mode().as_str(),
            "Idle session expired."
        );
        if session.capture.is_some()
            && let Err(err) = write_capture(state, &session, None)
        {
            tracing::error!(session_id = session.id(), %err, "Capture of an expired session could not be written.");
        }
    }
}

/// Writes every open capture session's case (at shutdown).
pub fn flush_all(state: &AppState) {
    for session in state.store.list() {
        if session.capture.is_some() {
            match close_session(state, &session, None) {
                Ok(_) | Err(CloseError::AlreadyClosed) => {}
                Err(err) => {
                    tracing::error!(session_id = session.id(), %err, "Capture could not be flushed at shutdown.")
                }
            }
        }
    }
}
