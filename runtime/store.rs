//! The sessions the handlers see: this process's store alone (the default), or Redis shared by
//! every replica, with this process's store as a cache of compiled sessions.
//!
//! With Redis, a write answers only once Redis holds it, and every use of a session first
//! reads its revision there (one round trip) and brings the cached copy up to it. So a request
//! that starts after a write's answer sees that write, on whichever replica it lands.

use crate::redis_store::RedisStore;
use bytes::Bytes;
use softprobe_pipeline::document::Stored;
use softprobe_pipeline::mode::Mode;
use softprobe_pipeline::policy::Policy;
use softprobe_pipeline::session::Session;
use softprobe_pipeline::store::{DocumentKind, SessionStore, StoreError, new_session_id};
use std::sync::Arc;
use std::time::Duration;

/// A replica tells Redis a session was used at most this often (idle expiry is coarser).
const TOUCH_EVERY: Duration = Duration::from_secs(1);

/// The session store behind both listeners; cheap to clone.
#[derive(Clone)]
pub struct Store {
    local: Arc<SessionStore>,
    shared: Option<RedisStore>,
}

impl Store {
    /// Sessions in this process only.
    pub fn memory(local: SessionStore) -> Self {
        Self {
            local: Arc::new(local),
            shared: None,
        }
    }

    /// Sessions in Redis, cached in `local`.
    pub fn shared(local: SessionStore, redis: RedisStore) -> Self {
        Self {
            local: Arc::new(local),
            shared: Some(redis),
        }
    }

    /// This process's store: every session with the memory store, the cached ones with Redis.
    pub fn local(&self) -> &Arc<SessionStore> {
        &self.local
    }

    /// The Redis store, when sessions are shared.
    pub fn redis(&self) -> Option<&RedisStore> {
        self.shared.as_ref()
    }

    /// Creates a session, optionally with a policy (which does not bump the revision).
    pub async fn create(
        &self,
        mode: Mode,
        policy: Option<Stored<Policy>>,
    ) -> Result<Arc<Session>, StoreError> {
        let Some(redis) = &self.shared else {
            return self.local.create(mode, policy);
        };
        let id = new_session_id();
        let raw = policy.as_ref().map(|p| p.raw.clone());
        redis.create(&id, mode, raw.as_deref()).await?;
        let documents = raw
            .map(|raw| vec![(DocumentKind::Policy, 0, raw)])
            .unwrap_or_default();
        self.local.install(&id, mode, 0, documents)
    }

    /// The live session `id`, up to date with every write answered before this call, marked
    /// used.
    pub async fn get(&self, id: &str) -> Result<Arc<Session>, StoreError> {
        self.load(id, true).await
    }

    /// Like [`Self::get`], without marking the session used (listings, idle sweeps).
    pub async fn cached(&self, id: &str) -> Result<Arc<Session>, StoreError> {
        self.load(id, false).await
    }

    async fn load(&self, id: &str, used: bool) -> Result<Arc<Session>, StoreError> {
        let Some(redis) = &self.shared else {
            return match used {
                true => self.local.get(id),
                false => self.local.peek(id).ok_or(StoreError::UnknownSession),
            };
        };
        let Some(head) = redis.head(id).await? else {
            self.local.evict(id);
            return Err(StoreError::UnknownSession);
        };
        if head.closed {
            return Err(StoreError::UnknownSession);
        }
        let cached = self.local.peek(id);
        if let Some(session) = &cached
            && session.snapshot_guard().revision == head.revision
        {
            if used {
                self.touch(redis, session);
            }
            return Ok(session.clone());
        }
        let written_at = cached.map_or([None; 4], |s| s.snapshot_guard().written_at);
        let Some(fetched) = redis.fetch(id, written_at).await? else {
            self.local.evict(id);
            return Err(StoreError::UnknownSession);
        };
        let head = fetched.head;
        let session = self
            .local
            .install(id, head.mode, head.revision, fetched.documents)?;
        if used {
            self.touch(redis, &session);
        }
        Ok(session)
    }

    /// Tells Redis the session is in use, at most every [`TOUCH_EVERY`] per replica, off the
    /// request path.
    fn touch(&self, redis: &RedisStore, session: &Arc<Session>) {
        if !self.local.report_due(session, TOUCH_EVERY) {
            return;
        }
        let (redis, id) = (redis.clone(), session.id().to_owned());
        tokio::spawn(async move {
            if let Err(err) = redis.touch(&id).await {
                tracing::warn!(session_id = id, %err, "Could not mark the session used.");
            }
        });
    }

    /// Replaces one document of a session; returns the session and its new revision.
    pub async fn replace(
        &self,
        id: &str,
        kind: DocumentKind,
        raw: Bytes,
    ) -> Result<(Arc<Session>, u64), StoreError> {
        let size = raw.len();
        let Some(redis) = &self.shared else {
            let id = id.to_owned();
            return offload(size, &self.local, move |local| {
                local.replace(&id, kind, raw)
            })
            .await;
        };
        self.get(id).await?;
        let checked = raw.clone();
        offload(size, &self.local, move |local| local.check(kind, &checked)).await?;
        let revision = redis
            .replace(id, kind, &raw)
            .await?
            .ok_or(StoreError::UnknownSession)?;
        let session = self.get(id).await?;
        Ok((session, revision))
    }

    /// A session's revision and counters (`[injected, extracted, strict misses, inject
    /// misses, errors, dropped]`).
    pub async fn stats(&self, session: &Session) -> Result<[u64; 6], StoreError> {
        if let Some(redis) = &self.shared {
            return redis
                .stats(session.id())
                .await?
                .ok_or(StoreError::UnknownSession);
        }
        use softprobe_pipeline::session::Stats;
        let s = &session.stats;
        Ok([
            Stats::get(&s.injected_spans),
            Stats::get(&s.extracted_spans),
            Stats::get(&s.strict_misses),
            Stats::get(&s.inject_misses),
            Stats::get(&s.injected_errors),
            Stats::get(&s.dropped_spans),
        ])
    }

    /// Every live session.
    pub async fn list(&self) -> Result<Vec<Arc<Session>>, StoreError> {
        let Some(redis) = &self.shared else {
            return Ok(self.local.list());
        };
        let mut sessions = Vec::new();
        for id in redis.ids().await? {
            match self.cached(&id).await {
                Ok(session) => {
                    session.set_capture_write_error(redis.write_error(&id).await?);
                    sessions.push(session);
                }
                Err(StoreError::UnknownSession) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(sessions)
    }
}

/// Runs a document write or check with the store, on the blocking pool when the document is
/// large (parsing and compiling it takes a while).
async fn offload<T: Send + 'static>(
    size: usize,
    local: &Arc<SessionStore>,
    work: impl FnOnce(&SessionStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    let local = local.clone();
    crate::blocking::run(size, move || work(&local)).await
}
