//! A session: its identity, its immutable snapshot (documents + compiled rules) and counters.

use crate::budget::Budget;
use crate::case::Case;
use crate::document::Stored;
use crate::fixtures::AuthFixtures;
use crate::matcher::RuleIndex;
use crate::misses::Misses;
use crate::mode::Mode;
use crate::policy::Policy;
use crate::replay::Exchanges;
use crate::rules::Rule;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// One immutable version of a session's configuration. Writers build a new one and swap it in;
/// readers (every inject) load it without locking and see one revision from start to end.
/// Cloning shares every document.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// 0 at create, +1 per load-case, rules, policy or fixtures write.
    pub revision: u64,
    /// The loaded case, if any.
    pub case: Option<Arc<Stored<Case>>>,
    /// The loaded case's recorded exchanges, indexed for replay rules.
    pub exchanges: Option<Arc<Exchanges>>,
    /// The session rules document, if any.
    pub rules: Option<Arc<Stored<Vec<Rule>>>>,
    /// The policy, if any.
    pub policy: Option<Arc<Stored<Policy>>>,
    /// The auth fixtures, if any.
    pub fixtures: Option<Arc<Stored<AuthFixtures>>>,
    /// Case and session rules compiled for the inject path.
    pub index: Arc<RuleIndex>,
    /// The revision each document (case, rules, policy, fixtures, in
    /// [`crate::store::DocumentKind`] order) was written at; `None` while it never was.
    pub written_at: [Option<u64>; 4],
}

/// Per-session counters. They never bump the revision.
#[derive(Debug, Default)]
pub struct Stats {
    /// Inject answers that produced a mocked response.
    pub injected_spans: AtomicU64,
    /// Extract spans accepted into the session.
    pub extracted_spans: AtomicU64,
    /// Outbound hops blocked by the policy.
    pub strict_misses: AtomicU64,
    /// Inject lookups that no rule or policy answered (the proxy forwarded).
    pub inject_misses: AtomicU64,
    /// Error-rule answers.
    pub injected_errors: AtomicU64,
    /// Spans refused because the capture buffer was full.
    pub dropped_spans: AtomicU64,
}

impl Stats {
    /// Adds `n` to a counter.
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// A live session in the store.
#[derive(Debug)]
pub struct Session {
    id: Arc<str>,
    mode: Mode,
    current: ArcSwap<Snapshot>,
    writes: Mutex<()>,
    closed: AtomicBool,
    last_used_ms: AtomicU64,
    /// When a shared store was last told this session is in use.
    reported_ms: AtomicU64,
    /// Counters.
    pub stats: Stats,
    /// The capture buffer (capture sessions only).
    pub capture: Option<crate::capture::CaptureBuffer>,
    /// Why the last attempt to write this capture's case failed; the session is kept and the
    /// write retried until it succeeds.
    write_error: Mutex<Option<String>>,
    /// Hops no rule answered, and why.
    pub misses: Misses,
}

/// Holding this serializes writers of one session (rules, policy, case, close).
pub struct WriteGuard<'a> {
    session: &'a Session,
    _lock: MutexGuard<'a, ()>,
}

impl Session {
    pub(crate) fn new(
        id: Arc<str>,
        mode: Mode,
        snapshot: Snapshot,
        now_ms: u64,
        capture: crate::capture::CaptureLimits,
        capture_budget: &Arc<Budget>,
    ) -> Self {
        Self {
            id,
            mode,
            current: ArcSwap::from_pointee(snapshot),
            writes: Mutex::new(()),
            closed: AtomicBool::new(false),
            last_used_ms: AtomicU64::new(now_ms),
            reported_ms: AtomicU64::new(0),
            stats: Stats::default(),
            capture: (mode == Mode::Capture)
                .then(|| crate::capture::CaptureBuffer::new(capture, capture_budget)),
            write_error: Mutex::new(None),
            misses: Misses::default(),
        }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shared id, for maps and logs.
    pub fn shared_id(&self) -> &Arc<str> {
        &self.id
    }

    /// The session mode, fixed at create.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// A cheap read of the current snapshot for one request (the inject hot path).
    pub fn snapshot_guard(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Whether the session was closed (it may still be referenced by in-flight requests).
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn touch(&self, now_ms: u64) {
        self.last_used_ms.store(now_ms, Ordering::Relaxed);
    }

    /// Whether a shared store should be told again that the session is in use (at most once
    /// per `every_ms`); true for one caller only.
    pub(crate) fn report_due(&self, now_ms: u64, every_ms: u64) -> bool {
        let reported = self.reported_ms.load(Ordering::Relaxed);
        (reported == 0 || now_ms.saturating_sub(reported) >= every_ms)
            && self
                .reported_ms
                .compare_exchange(reported, now_ms.max(1), Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    pub(crate) fn last_used_ms(&self) -> u64 {
        self.last_used_ms.load(Ordering::Relaxed)
    }

    /// Why the last case write failed, while it has not succeeded since.
    pub fn capture_write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Records the outcome of a case write (`None`: it succeeded).
    pub fn set_capture_write_error(&self, error: Option<String>) {
        *self
            .write_error
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = error;
    }

    /// Takes the session's write lock.
    pub fn lock_writes(&self) -> WriteGuard<'_> {
        WriteGuard {
            session: self,
            _lock: self
                .writes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        }
    }
}

impl WriteGuard<'_> {
    /// The snapshot writers build on.
    pub fn current(&self) -> Arc<Snapshot> {
        self.session.current.load_full()
    }

    /// Installs `next` as the session's snapshot.
    pub fn publish(&self, next: Snapshot) {
        self.session.current.store(Arc::new(next));
    }

    /// Marks the session closed; returns false when it already was.
    pub fn mark_closed(&self) -> bool {
        !self.session.closed.swap(true, Ordering::AcqRel)
    }
}
