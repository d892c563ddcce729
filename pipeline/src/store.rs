//! The session store: a concurrent map of sessions whose snapshots are swapped on write.
//!
//! Reads (every inject) take a shard read lock to clone one `Arc` and then read the session's
//! snapshot without locking. Writes to one session are serialized by its write lock; each
//! builds the next snapshot (parsing and compiling outside any lock) and swaps it in.

use crate::budget::{Budget, Held, OverBudget};
use crate::capture::CaptureLimits;
use crate::case::Case;
use crate::document::DocumentError;
use crate::document::Stored;
use crate::fixtures::AuthFixtures;
use crate::matcher::{Layer, RuleIndex, compile_layer};
use crate::mode::Mode;
use crate::policy::Policy;
use crate::replay::Exchanges;
use crate::rules::parse_rules_document;
use crate::session::{Session, Snapshot};
use bytes::Bytes;
use dashmap::DashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Store limits; each is documented in the README and settable from the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLimits {
    /// Live sessions at most; creating one more is refused.
    pub max_sessions: usize,
    /// A session unused for this long is expired (capture sessions are flushed first).
    pub idle_timeout: Duration,
    /// Per-session capture buffer bounds.
    pub capture: CaptureLimits,
    /// Bytes of all capture buffers together; an export past it is refused, retryably.
    pub max_capture_bytes_total: usize,
    /// Bytes of all sessions' documents (rules, cases, policies, fixtures) together, as
    /// posted; a write past it is refused, retryably.
    pub max_document_bytes_total: usize,
}

impl Default for StoreLimits {
    fn default() -> Self {
        Self {
            max_sessions: 10_000,
            idle_timeout: Duration::from_secs(3600),
            capture: CaptureLimits::default(),
            max_capture_bytes_total: 1024 * 1024 * 1024,
            max_document_bytes_total: 256 * 1024 * 1024,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No live session has this id.
    #[error("unknown session")]
    UnknownSession,
    /// The live-session limit is reached.
    #[error("too many live sessions (limit {limit}); close sessions or raise --max-sessions")]
    TooManySessions {
        /// The configured limit.
        limit: usize,
    },
    /// The posted document is invalid.
    #[error("{0}")]
    InvalidDocument(#[from] DocumentError),
    /// Holding the document would exceed the documents' memory budget.
    #[error("{0}")]
    OverBudget(#[from] OverBudget),
    /// The shared store (Redis) did not answer in time or refused; retry later.
    #[error("the session store is unavailable: {0}")]
    Unavailable(String),
}

/// Which document a write replaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocumentKind {
    /// `…/load-case`.
    Case,
    /// `…/rules`.
    Rules,
    /// `…/policy`.
    Policy,
    /// `…/fixtures/auth`.
    Fixtures,
}

impl DocumentKind {
    /// Every kind, in [`Snapshot::written_at`] order.
    pub const ALL: [DocumentKind; 4] = [Self::Case, Self::Rules, Self::Policy, Self::Fixtures];

    /// The kind's name, as a shared store keys it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Case => "case",
            Self::Rules => "rules",
            Self::Policy => "policy",
            Self::Fixtures => "fixtures",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// All live sessions.
#[derive(Debug)]
pub struct SessionStore {
    sessions: DashMap<Arc<str>, Arc<Session>>,
    live: AtomicUsize,
    limits: StoreLimits,
    epoch: Instant,
    capture_budget: Arc<Budget>,
    document_budget: Arc<Budget>,
}

impl SessionStore {
    /// An empty store.
    pub fn new(limits: StoreLimits) -> Self {
        Self {
            sessions: DashMap::new(),
            live: AtomicUsize::new(0),
            limits,
            epoch: Instant::now(),
            capture_budget: Budget::new(
                "capture buffers",
                "--max-capture-bytes-total",
                limits.max_capture_bytes_total,
            ),
            document_budget: Budget::new(
                "session documents",
                "--max-document-bytes-total",
                limits.max_document_bytes_total,
            ),
        }
    }

    /// The budget all capture buffers draw on.
    pub fn capture_budget(&self) -> &Arc<Budget> {
        &self.capture_budget
    }

    /// The budget all sessions' documents draw on.
    pub fn document_budget(&self) -> &Arc<Budget> {
        &self.document_budget
    }

    /// The store's limits.
    pub fn limits(&self) -> &StoreLimits {
        &self.limits
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Creates a session, optionally with a policy (which does not bump the revision).
    pub fn create(
        &self,
        mode: Mode,
        policy: Option<Stored<Policy>>,
    ) -> Result<Arc<Session>, StoreError> {
        let limit = self.limits.max_sessions;
        if self.live.fetch_add(1, Ordering::AcqRel) >= limit {
            self.live.fetch_sub(1, Ordering::AcqRel);
            return Err(StoreError::TooManySessions { limit });
        }
        let mut snapshot = Snapshot::default();
        if let Some(policy) = policy {
            snapshot.policy = Some(Arc::new(policy));
            snapshot.written_at[DocumentKind::Policy.index()] = Some(0);
        }
        // 128 random bits: a collision is practically impossible, so no retry loop.
        let session = Arc::new(Session::new(
            new_session_id().into(),
            mode,
            snapshot,
            self.now_ms(),
            self.limits.capture,
            &self.capture_budget,
        ));
        self.sessions
            .insert(session.shared_id().clone(), session.clone());
        Ok(session)
    }

    /// The live session with this id, marking it used.
    pub fn get(&self, id: &str) -> Result<Arc<Session>, StoreError> {
        let session = self
            .sessions
            .get(id)
            .map(|entry| entry.value().clone())
            .ok_or(StoreError::UnknownSession)?;
        if session.is_closed() {
            return Err(StoreError::UnknownSession);
        }
        session.touch(self.now_ms());
        Ok(session)
    }

    /// All live sessions, in no particular order.
    pub fn list(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .map(|entry| entry.value().clone())
            .collect()
    }

    /// Number of live sessions.
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    /// Whether there are no live sessions.
    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// Replaces one document of a session and bumps its revision by exactly one.
    ///
    /// The session is looked up first (an unknown id is a 404 whatever the body), then the
    /// document is parsed and compiled outside the session's write lock, then swapped in.
    pub fn replace(
        &self,
        id: &str,
        kind: DocumentKind,
        raw: Bytes,
    ) -> Result<(Arc<Session>, u64), StoreError> {
        let session = self.get(id)?;
        let held = self.document_budget.acquire(raw.len())?;
        let update = Update::parse(kind, raw, held)?;
        let guard = session.lock_writes();
        if session.is_closed() {
            return Err(StoreError::UnknownSession);
        }
        let current = guard.current();
        let mut next = update.apply(&current);
        let revision = next.revision;
        next.written_at[kind.index()] = Some(revision);
        guard.publish(next);
        drop(guard);
        Ok((session, revision))
    }

    /// Brings the cached copy of a session kept in a shared store to `revision`: creates it
    /// when absent, applies `documents` (kind, revision written at, bytes: those written since
    /// the cached copy's) and takes the shared store's revision; an older revision than the
    /// cached one changes nothing. The live-session limit is the shared store's to enforce, so
    /// a cached copy never counts against this one.
    pub fn install(
        &self,
        id: &str,
        mode: Mode,
        revision: u64,
        documents: Vec<(DocumentKind, u64, Bytes)>,
    ) -> Result<Arc<Session>, StoreError> {
        let session = self
            .sessions
            .entry(Arc::from(id))
            .or_insert_with(|| {
                let session = Session::new(
                    Arc::from(id),
                    mode,
                    Snapshot::default(),
                    self.now_ms(),
                    self.limits.capture,
                    &self.capture_budget,
                );
                session.misses.share();
                Arc::new(session)
            })
            .value()
            .clone();
        let mut updates = Vec::with_capacity(documents.len());
        for (kind, written_at, raw) in documents {
            let held = self.document_budget.acquire(raw.len())?;
            updates.push((kind, written_at, Update::parse(kind, raw, held)?));
        }
        let guard = session.lock_writes();
        let mut next = Snapshot::clone(&guard.current());
        if revision > next.revision || (revision == 0 && !updates.is_empty()) {
            for (kind, written_at, update) in updates {
                next = update.apply(&next);
                next.written_at[kind.index()] = Some(written_at);
            }
            next.revision = revision;
            guard.publish(next);
        }
        drop(guard);
        session.touch(self.now_ms());
        Ok(session)
    }

    /// Checks a document as a write of it would, without writing it.
    pub fn check(&self, kind: DocumentKind, raw: &Bytes) -> Result<(), StoreError> {
        let held = self.document_budget.acquire(raw.len())?;
        Update::parse(kind, raw.clone(), held)?;
        Ok(())
    }

    /// The live session with this id, without marking it used.
    pub fn peek(&self, id: &str) -> Option<Arc<Session>> {
        let session = self.sessions.get(id).map(|entry| entry.value().clone())?;
        (!session.is_closed()).then_some(session)
    }

    /// Whether a shared store should be told again that `session` is in use: at most once
    /// per `every`, and true for one caller only.
    pub fn report_due(&self, session: &Session, every: Duration) -> bool {
        session.report_due(self.now_ms(), every.as_millis() as u64)
    }

    /// Forgets the cached copy of a session whose shared original is gone.
    pub fn evict(&self, id: &str) {
        self.sessions.remove(id);
    }

    /// Removes a session from the store (after its close work is done).
    pub fn remove(&self, session: &Session) {
        if self.sessions.remove(session.id()).is_some() {
            self.live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether a session has been unused for longer than the idle timeout.
    pub fn is_idle(&self, session: &Session) -> bool {
        let timeout = self.limits.idle_timeout.as_millis() as u64;
        self.now_ms().saturating_sub(session.last_used_ms()) > timeout
    }

    /// The sessions to expire now: idle ones, and capture sessions whose case could not be
    /// written before (retried at every sweep). The caller closes them.
    pub fn expiring(&self) -> Vec<Arc<Session>> {
        self.sessions
            .iter()
            .filter(|entry| {
                let session = entry.value();
                self.is_idle(session) || session.capture_write_error().is_some()
            })
            .map(|entry| entry.value().clone())
            .collect()
    }
}

/// A parsed document ready to be applied to a snapshot.
enum Update {
    Case(
        Arc<Stored<Case>>,
        Option<crate::matcher::CompiledLayer>,
        Arc<Exchanges>,
    ),
    Rules(
        Arc<Stored<Vec<crate::rules::Rule>>>,
        crate::matcher::CompiledLayer,
    ),
    Policy(Arc<Stored<Policy>>),
    Fixtures(Arc<Stored<AuthFixtures>>),
}

impl Update {
    fn parse(kind: DocumentKind, raw: Bytes, held: Held) -> Result<Self, DocumentError> {
        Ok(match kind {
            DocumentKind::Case => {
                let parsed = Case::parse(&raw)?;
                let layer =
                    (!parsed.rules.is_empty()).then(|| compile_layer(Layer::Case, &parsed.rules));
                let exchanges = Arc::new(Exchanges::of(&parsed));
                Self::Case(Arc::new(Stored::held(raw, parsed, held)), layer, exchanges)
            }
            DocumentKind::Rules => {
                let parsed = parse_rules_document(&raw)?;
                let layer = compile_layer(Layer::Session, &parsed);
                Self::Rules(Arc::new(Stored::held(raw, parsed, held)), layer)
            }
            DocumentKind::Policy => {
                let parsed = Policy::parse(&raw)?;
                Self::Policy(Arc::new(Stored::held(raw, parsed, held)))
            }
            DocumentKind::Fixtures => {
                let parsed = AuthFixtures::parse(&raw)?;
                Self::Fixtures(Arc::new(Stored::held(raw, parsed, held)))
            }
        })
    }

    fn apply(self, current: &Snapshot) -> Snapshot {
        let mut next = Snapshot {
            revision: current.revision + 1,
            ..current.clone()
        };
        match self {
            Self::Case(case, layer, exchanges) => {
                next.case = Some(case);
                next.exchanges = Some(exchanges);
                next.index = Arc::new(RuleIndex::build(layer, current.index.session_layer()));
            }
            Self::Rules(rules, layer) => {
                next.rules = Some(rules);
                next.index = Arc::new(RuleIndex::build(current.index.case_layer(), Some(layer)));
            }
            Self::Policy(policy) => next.policy = Some(policy),
            Self::Fixtures(fixtures) => next.fixtures = Some(fixtures),
        }
        next
    }
}

/// `sess_` + 128 random bits, base64url without padding (22 characters).
pub fn new_session_id() -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut bytes = [0u8; 16];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "sess_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SessionStore {
        SessionStore::new(StoreLimits::default())
    }

    #[test]
    fn revisions_count_writes_and_documents_replace() {
        let store = store();
        let session = store.create(Mode::Replay, None).unwrap();
        assert!(session.id().starts_with("sess_") && session.id().len() == 27);
        let id = session.id().to_owned();
        let case = Bytes::from_static(br#"{"version":"1.0.0","caseId":"c","traces":[]}"#);
        assert_eq!(store.replace(&id, DocumentKind::Case, case).unwrap().1, 1);
        let rules =
            Bytes::from_static(br#"{"rules":[{"when":{},"then":{"action":"passthrough"}}]}"#);
        assert_eq!(store.replace(&id, DocumentKind::Rules, rules).unwrap().1, 2);
        let policy = Bytes::from_static(br#"{"externalHttp":"strict"}"#);
        assert_eq!(
            store
                .replace(&id, DocumentKind::Policy, policy.clone())
                .unwrap()
                .1,
            3
        );
        assert_eq!(
            store
                .replace(&id, DocumentKind::Fixtures, Bytes::from_static(b"{}"))
                .unwrap()
                .1,
            4
        );
        let snapshot = session.snapshot();
        assert_eq!(snapshot.policy.as_ref().unwrap().raw, policy);
        assert_eq!(snapshot.index.len(), 1);
    }

    #[test]
    fn invalid_documents_leave_the_session_untouched() {
        let store = store();
        let id = store.create(Mode::Replay, None).unwrap().id().to_owned();
        let bad = Bytes::from_static(br#"{"rules":[{"when":{},"then":{"action":"mokc"}}]}"#);
        assert!(matches!(
            store.replace(&id, DocumentKind::Rules, bad),
            Err(StoreError::InvalidDocument(_))
        ));
        assert_eq!(store.get(&id).unwrap().snapshot().revision, 0);
        assert!(matches!(
            store.replace("sess_nope", DocumentKind::Rules, Bytes::new()),
            Err(StoreError::UnknownSession)
        ));
    }

    #[test]
    fn session_limit_is_enforced_and_freed_on_remove() {
        let store = SessionStore::new(StoreLimits {
            max_sessions: 1,
            ..StoreLimits::default()
        });
        let first = store.create(Mode::Replay, None).unwrap();
        assert!(matches!(
            store.create(Mode::Replay, None),
            Err(StoreError::TooManySessions { limit: 1 })
        ));
        store.remove(&first);
        store.create(Mode::Capture, None).unwrap();
    }

    #[test]
    fn idle_sessions_and_failed_writes_are_expiring() {
        let store = SessionStore::new(StoreLimits {
            idle_timeout: Duration::from_secs(60),
            ..StoreLimits::default()
        });
        let session = store.create(Mode::Capture, None).unwrap();
        assert!(store.expiring().is_empty());
        session.set_capture_write_error(Some("disk full".into()));
        assert_eq!(store.expiring().len(), 1);
        let store = SessionStore::new(StoreLimits {
            idle_timeout: Duration::ZERO,
            ..StoreLimits::default()
        });
        let session = store.create(Mode::Replay, None).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(store.is_idle(&session));
        assert_eq!(store.expiring().len(), 1);
    }

    #[test]
    fn parallel_writes_get_distinct_gap_free_revisions() {
        let store = Arc::new(store());
        let id = store.create(Mode::Replay, None).unwrap().id().to_owned();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (store, id) = (store.clone(), id.clone());
                std::thread::spawn(move || {
                    (0..50)
                        .map(|_| {
                            let policy = Bytes::from_static(br#"{"externalHttp":"allow"}"#);
                            store.replace(&id, DocumentKind::Policy, policy).unwrap().1
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut revisions: Vec<u64> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        revisions.sort_unstable();
        assert_eq!(revisions, (1..=400).collect::<Vec<_>>());
    }
}
