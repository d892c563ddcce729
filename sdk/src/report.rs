//! What the runtime reports: about a session (counters, stored documents, explained misses),
//! about its sessions, and about itself (health, versions).

use crate::case::Direction;
use crate::documents::Mode;
use serde::Deserialize;
use serde_json::Value;

/// A session's counters (`GET …/stats`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Stats {
    /// The session's revision: 0 at creation, one more per document written.
    pub session_revision: u64,
    /// The session's mode.
    pub mode: Mode,
    /// The counters.
    #[serde(rename = "stats")]
    pub counters: Counters,
}

/// The counters of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct Counters {
    /// Hops answered (mock, replay, error rule, or policy block).
    pub injected_spans: u64,
    /// Spans received from proxies and exporters.
    pub extracted_spans: u64,
    /// Outbound hops the strict policy blocked.
    pub strict_misses: u64,
    /// Hops no rule answered (forwarded or blocked).
    pub inject_misses: u64,
    /// Hops answered by an `error` rule.
    pub injected_errors: u64,
    /// Spans a full capture buffer refused.
    pub dropped_spans: u64,
}

/// A session's stored documents and counters (`GET …/state`). Documents are as posted.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SessionState {
    /// The session's revision.
    pub session_revision: u64,
    /// The session's mode.
    pub mode: Mode,
    /// The loaded case, if any.
    pub case_summary: CaseSummary,
    /// The counters.
    pub stats: Counters,
    /// The policy document.
    #[serde(default)]
    pub policy: Option<Value>,
    /// The rules document (`{"version":1,"rules":[…]}` when this crate wrote it).
    #[serde(default)]
    pub rules: Option<Value>,
    /// The auth-fixtures document.
    #[serde(default)]
    pub fixtures: Option<Value>,
}

/// Which case a session holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct CaseSummary {
    /// The case's `caseId`; `None` when no case is loaded.
    pub case_id: Option<String>,
    /// How many traces it has.
    pub trace_count: u64,
}

/// The recent hops no rule answered (`GET …/misses`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Misses {
    /// The last 100, oldest first.
    pub misses: Vec<Miss>,
    /// How many older ones are no longer kept.
    pub dropped: u64,
}

/// One hop no rule answered, with the candidate that came closest.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Miss {
    /// When, RFC 3339 with milliseconds.
    pub at: String,
    /// The hop's direction, when the proxy said.
    #[serde(default)]
    pub direction: Option<Direction>,
    /// The method.
    pub method: String,
    /// The host.
    pub host: String,
    /// The path, with its query.
    pub path: String,
    /// `forward` (the proxy called the real upstream) or `strict_miss` (the policy blocked it).
    pub decision: String,
    /// The rule or recorded exchange that came closest, and what it did not match.
    #[serde(default)]
    pub closest: Option<Closest>,
}

/// The candidate closest to answering a missed hop.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
#[non_exhaustive]
pub enum Closest {
    /// A rule, by its label.
    Rule {
        /// The rule's label.
        #[serde(default)]
        name: String,
        /// The predicates it failed.
        mismatches: Vec<Mismatch>,
    },
    /// A recorded exchange of the loaded case, by span id.
    #[serde(rename_all = "camelCase")]
    Case {
        /// The recorded span's id.
        span_id: String,
        /// The predicates it failed.
        mismatches: Vec<Mismatch>,
    },
}

/// One predicate a candidate failed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Mismatch {
    /// The field: `path`, `method`, `headers.x-tenant`, …
    pub field: String,
    /// What the candidate wanted.
    pub expected: String,
    /// What the hop had.
    pub actual: String,
}

/// Whether the runtime is up (`GET /health`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[non_exhaustive]
pub struct Health {
    /// `ok` when the runtime serves requests.
    #[serde(default)]
    pub status: String,
}

impl Health {
    /// Whether the runtime said `ok`.
    pub fn is_ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Which runtime answers and which control API it speaks (`GET /v1/meta`). Each field is
/// `None` when the runtime does not say.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
#[non_exhaustive]
pub struct RuntimeInfo {
    /// The runtime's version, such as `0.1.0`.
    pub runtime_version: Option<String>,
    /// The control API's version, `http-control-api@v1`.
    pub spec_version: Option<String>,
    /// The version of its documents' schema, `1`.
    pub schema_version: Option<String>,
}

/// One live session, as [`Softprobe::sessions`](crate::Softprobe::sessions) lists it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct SessionSummary {
    /// The session id.
    pub session_id: String,
    /// What it is for.
    pub mode: Mode,
    /// Its revision.
    pub session_revision: u64,
    /// For a capture session whose case could not be written at close: why. The session is
    /// kept so the capture is not lost.
    #[serde(default)]
    pub capture_write_error: Option<String>,
}
