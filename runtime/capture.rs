//! Closing sessions and writing capture sessions out as case files: on a close request, on
//! idle expiry and at shutdown. A capture is never thrown away: a case that cannot be written
//! keeps its session open, and the write is retried.

use crate::case_index::CaseFile;
use crate::redis_store::RedisStore;
use crate::state::AppState;
use softprobe_pipeline::case_file::{CasePaths, WriteError};
use softprobe_pipeline::mode::Mode;
use softprobe_pipeline::session::Session;
use softprobe_pipeline::stages::{CaseWriter, WrittenCase};
use softprobe_pipeline::store::StoreError;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Why a session is being closed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closing {
    /// `POST …/close`, with its `?out=`.
    Request {
        /// The client's chosen path.
        out: Option<String>,
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
    /// The shared store did not answer; the session stays open.
    #[error("{0}")]
    Store(StoreError),
}

/// Closes a session wherever it is kept: in this process (on the blocking pool: the case is
/// written to disk), or in Redis, where a close on any replica seals the capture first.
pub async fn close(
    state: &AppState,
    session: Arc<Session>,
    closing: Closing,
) -> Result<Option<PathBuf>, CloseError> {
    if let Some(redis) = state.store.redis() {
        return close_shared(state, redis, session, closing).await;
    }
    let state = state.clone();
    tokio::task::spawn_blocking(move || close_session(&state, &session, closing))
        .await
        .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()))
}

/// A seal older than this belongs to a closer that died; another close may take it over.
const STALE_SEAL: Duration = Duration::from_secs(60);

/// Closes a session kept in Redis: seals it there (every replica refuses its exports from
/// then on), writes its case here, keeps the case in Redis for any replica to serve, and
/// removes the session. A failed write reopens it.
async fn close_shared(
    state: &AppState,
    redis: &RedisStore,
    session: Arc<Session>,
    closing: Closing,
) -> Result<Option<PathBuf>, CloseError> {
    let id = session.id().to_owned();
    let Some((seal, captured)) = redis
        .seal(&id, STALE_SEAL)
        .await
        .map_err(CloseError::Store)?
    else {
        return Err(CloseError::AlreadyClosed);
    };
    if session.mode() != Mode::Capture {
        redis
            .finish(&id, &seal, None, captured.bytes)
            .await
            .map_err(CloseError::Store)?;
        state.store.local().evict(&id);
        return Ok(None);
    }
    let captured_bytes = captured.bytes;
    let idle = closing == Closing::Idle;
    let writing = state.clone();
    let written = tokio::task::spawn_blocking(move || {
        let now = SystemTime::now();
        let out = match &closing {
            Closing::Request { out } => out.as_deref(),
            Closing::Idle | Closing::Shutdown => None,
        };
        let writer = writing.pipelines.case_writer();
        let destination = writer.destination(&session, out, now)?;
        let written =
            CaseWriter::write_captured(&session, &captured, &destination, now, |p, m| {
                writing.captures.wrote(p, m)
            })?;
        // Read back for Redis, so every replica serves the very bytes written here.
        let bytes = std::fs::read(&written.path).map_err(|source| WriteError::Io {
            path: written.path.clone(),
            source,
        })?;
        Ok::<_, WriteError>((written, bytes))
    })
    .await
    .unwrap_or_else(|err| std::panic::resume_unwind(err.into_panic()));
    match written {
        Ok((written, bytes)) => {
            log_written(&id, &written);
            let file = CaseFile::new(written.path.clone(), &written.metadata);
            state.captures.remember(&id, file);
            redis
                .finish(&id, &seal, Some(&bytes), captured_bytes)
                .await
                .map_err(CloseError::Store)?;
            state.store.local().evict(&id);
            Ok(Some(written.path))
        }
        Err(err) => {
            if let Err(store) = redis.unseal(&id, &seal).await {
                tracing::error!(session_id = id, %store, "Could not reopen the session after a failed write; it is retried once its seal is stale.");
            }
            if !err.is_refused_path() {
                state.metrics.capture_write_failed();
            }
            // Retried at every sweep; listings on every replica say why meanwhile.
            if idle && let Err(store) = redis.set_write_error(&id, &err.to_string()).await {
                tracing::warn!(session_id = id, %store, "Could not record the failed write.");
            }
            Err(CloseError::Write(err))
        }
    }
}

fn log_written(id: &str, written: &WrittenCase) {
    tracing::info!(
        session_id = id,
        path = %written.path.display(),
        spans = written.spans,
        dropped_spans = written.dropped_spans,
        "Capture written."
    );
}

/// Closes a session: the case writer writes its capture's case (refusing exports from then on),
/// then the session is removed. A failed write leaves the session capturing in the store, so
/// nothing is lost and the close can be retried.
pub fn close_session(
    state: &AppState,
    session: &Session,
    closing: Closing,
) -> Result<Option<PathBuf>, CloseError> {
    let guard = session.lock_writes();
    if session.is_closed() {
        return Err(CloseError::AlreadyClosed);
    }
    if closing == Closing::Idle
        && !state.store.local().is_idle(session)
        && session.capture_write_error().is_none()
    {
        return Err(CloseError::InUse);
    }
    let now = SystemTime::now();
    let out = match &closing {
        Closing::Request { out } => out.as_deref(),
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
            log_written(session.id(), &written);
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
    state.store.local().remove(session);
    Ok(path)
}

/// Expires idle sessions, writing capture sessions' cases first; retries failed writes.
/// Run periodically. With Redis, idle means unused on every replica.
pub async fn expire_idle(state: &AppState) {
    let expiring = match state.store.redis() {
        None => state.store.local().expiring(),
        Some(redis) => match idle_shared(state, redis).await {
            Ok(expiring) => expiring,
            Err(err) => {
                tracing::warn!(%err, "Idle sessions not swept: the store is unavailable.");
                return;
            }
        },
    };
    for session in expiring {
        match close(state, session.clone(), Closing::Idle).await {
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

/// The sessions of a shared store unused on every replica for the idle timeout.
async fn idle_shared(
    state: &AppState,
    redis: &RedisStore,
) -> Result<Vec<Arc<Session>>, StoreError> {
    let mut sessions = Vec::new();
    for id in redis
        .idle(state.store.local().limits().idle_timeout)
        .await?
    {
        match state.store.cached(&id).await {
            Ok(session) => sessions.push(session),
            // Its keys expired while no replica ran.
            Err(StoreError::UnknownSession) => redis.forget(&id).await?,
            Err(err) => return Err(err),
        }
    }
    Ok(sessions)
}

/// Writes every open capture session's case (at shutdown). A case that cannot be written where
/// it belongs is spilled to [`spill_dir`], so stopping never loses a capture. Sessions in Redis
/// stay open: they belong to every replica, and their captures are already there.
pub fn flush_all(state: &AppState) {
    if state.store.redis().is_some() {
        return;
    }
    for session in state.store.local().list() {
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
