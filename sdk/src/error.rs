//! What can go wrong talking to the runtime or looking into a case.

use std::path::PathBuf;

/// The result of every fallible call in this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure of a client call or of a case lookup.
///
/// Runtime answers are mapped from their `{"error":{"code","message"}}` envelope:
/// `unknown_session` to [`Error::UnknownSession`], 400 to [`Error::InvalidRequest`], 401 and
/// 403 to [`Error::Unauthorized`], anything else to [`Error::Runtime`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The runtime could not be reached (refused, reset, timed out, bad address).
    #[error(
        "cannot reach the Softprobe runtime at {url}: {source}; is `softprobe serve` running \
         there? Check the URL given to Softprobe::new or SOFTPROBE_RUNTIME_URL"
    )]
    Unreachable {
        /// The runtime's base URL.
        url: String,
        /// The transport error.
        #[source]
        source: reqwest::Error,
    },
    /// No live session has this id: never created, closed, or expired. For a capture download,
    /// also a session that is not a capture session or was closed too long ago.
    #[error(
        "unknown session {id}: {message}; it was closed, expired or never created: start a \
         new one with start_session"
    )]
    UnknownSession {
        /// The session id the call named.
        id: String,
        /// The HTTP status it came with (404 from this runtime).
        status: u16,
        /// The runtime's explanation.
        message: String,
    },
    /// The runtime refused a document or request as invalid (400); the message names the place.
    #[error("invalid request: {message}")]
    InvalidRequest {
        /// The runtime's explanation, such as `rules[0].then.action: unknown action "mokc"`.
        message: String,
    },
    /// The runtime wants a bearer token (401) or refused the one sent (403).
    #[error(
        "unauthorized ({status}): {message}; pass the runtime's --api-token to \
         Softprobe::new, or set SOFTPROBE_API_TOKEN for Softprobe::connect"
    )]
    Unauthorized {
        /// 401 (no token) or 403 (wrong token).
        status: u16,
        /// The runtime's explanation.
        message: String,
    },
    /// Any other error answer.
    #[error("the runtime answered {status} {code}: {message}")]
    Runtime {
        /// The HTTP status.
        status: u16,
        /// The envelope's `code` (`over_budget`, `internal_error`, …), empty without one.
        code: String,
        /// The envelope's `message`, or the body's text.
        message: String,
    },
    /// A successful answer this client cannot read (not JSON, or missing fields).
    #[error("unexpected answer from {url}: {message}")]
    InvalidResponse {
        /// The URL that answered.
        url: String,
        /// What is wrong with the answer.
        message: String,
    },
    /// The runtime URL is not an `http://` or `https://` URL.
    #[error("invalid runtime URL {url:?}: {message}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// Why it is refused.
        message: String,
    },
    /// A case file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A case is not JSON; nothing was sent.
    #[error("invalid case{}: {source}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    InvalidCase {
        /// The file it came from, when it came from one.
        path: Option<PathBuf>,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// `find_in_case` before a case was loaded into the session.
    #[error("find_in_case: no case loaded; call load_case or load_case_from_file first")]
    CaseNotLoaded,
    /// `find_in_case` found no span matching the predicate.
    #[error(
        "find_in_case: no span in the loaded case matches {predicate}. Check the predicate \
         against the case's inject and extract spans."
    )]
    NotFound {
        /// The predicate, as `{ direction: "outbound", path: "/v1/charges" }`.
        predicate: String,
    },
    /// `find_in_case` found more than one span matching the predicate.
    #[error(
        "find_in_case: {} spans match {predicate}. Disambiguate the predicate — candidate span \
         ids: {}.", span_ids.len(), span_ids.join(", ")
    )]
    Ambiguous {
        /// The predicate.
        predicate: String,
        /// The matching spans' ids, in case order (`<unknown>` for a span without one).
        span_ids: Vec<String>,
    },
    /// A matching span has no recorded response status, so it cannot answer as a mock.
    #[error(
        "find_in_case: span {span_id} has no http.response.status_code; narrow the predicate \
         to a span with a recorded response, or mock with an explicit response"
    )]
    MissingStatus {
        /// The span's id.
        span_id: String,
    },
}

impl Error {
    /// The HTTP status of the runtime's error answer, for the variants that are one
    /// ([`UnknownSession`](Self::UnknownSession), [`InvalidRequest`](Self::InvalidRequest)
    /// (400), [`Unauthorized`](Self::Unauthorized), [`Runtime`](Self::Runtime)); `None` for
    /// the others.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::UnknownSession { status, .. }
            | Self::Unauthorized { status, .. }
            | Self::Runtime { status, .. } => Some(*status),
            Self::InvalidRequest { .. } => Some(400),
            _ => None,
        }
    }
}
