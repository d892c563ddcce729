//! A session handle: its id, the rules it has sent, and the case it has loaded.

use crate::case::{CapturedHit, Case, CasePredicate};
use crate::client::Softprobe;
use crate::documents::{AuthFixtures, Mode, Policy};
use crate::error::{Error, Result};
use crate::report::{Misses, SessionState, Stats};
use crate::rules::{MockRule, ReplayRule, Rule, RulesDocument};
use bytes::Bytes;
use reqwest::{Method, Url};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One session on the runtime, from [`Softprobe::start_session`] or [`Softprobe::attach`].
///
/// Rules are merged here and replaced on the wire, as the official SDKs do: each
/// [`mock_outbound`](Self::mock_outbound) or [`replay`](Self::replay) sends the whole list.
/// Requests to the app under test join the session with the
/// [`SESSION_HEADER`](crate::SESSION_HEADER) set to [`id`](Self::id).
#[derive(Debug)]
pub struct Session {
    client: Softprobe,
    id: String,
    rules: Vec<Rule>,
    case: Option<Case>,
}

// Opening sessions is the client's, but lives here, where a session is made, so the client
// does not depend on the session.
impl Softprobe {
    /// Opens a session (`POST /v1/sessions`). A new session is at revision 0.
    pub async fn start_session(&self, mode: Mode) -> Result<Session> {
        let body = serde_json::json!({ "mode": mode });
        self.start_session_raw(body.to_string()).await
    }

    /// Opens a session from a create request as given, for documents read from a file or
    /// built by hand: `{"mode":"replay"}`, optionally with a `policy` applied at creation
    /// (revision 0 all the same). The runtime judges it: an unknown mode or a bad policy is
    /// [`Error::InvalidRequest`] naming the place.
    pub async fn start_session_raw(&self, request: impl Into<Bytes>) -> Result<Session> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            session_id: String,
        }
        let created: Created = self
            .call_json(
                Method::POST,
                self.endpoint(&["v1", "sessions"]),
                Some(request.into().into()),
                None,
            )
            .await?;
        Ok(Session::new(self.clone(), created.session_id, None))
    }

    /// A handle on an existing session, without a call. Its local rules list starts empty, so
    /// its first rule replaces the rules another handle sent.
    pub fn attach(&self, id: impl Into<String>) -> Session {
        Session::new(self.clone(), id.into(), None)
    }
}

/// The answer to a document write.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Written {
    session_revision: u64,
}

impl Session {
    pub(crate) fn new(client: Softprobe, id: String, case: Option<Case>) -> Self {
        Self {
            client,
            id,
            rules: Vec::new(),
            case,
        }
    }

    /// The session id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Reads a case file and loads it as [`load_case`](Self::load_case) does; an unreadable
    /// or non-JSON file sends nothing.
    pub async fn load_case_from_file(&mut self, path: impl AsRef<Path>) -> Result<u64> {
        let case = Case::from_file(path).await?;
        self.load_case(&case).await
    }

    /// Loads `case` into the session (`POST …/load-case`, the bytes as read): its exchanges
    /// answer [`replay`](Self::replay) rules, its embedded rules apply, and
    /// [`find_in_case`](Self::find_in_case) looks into it. Returns the session's revision.
    pub async fn load_case(&mut self, case: &Case) -> Result<u64> {
        let revision = self.write("load-case", case.raw()).await?;
        self.case = Some(case.clone());
        Ok(revision)
    }

    /// Loads a case document as given (`POST …/load-case`), for bytes that should reach the
    /// runtime untouched: the runtime judges them, so a broken document is
    /// [`Error::InvalidRequest`] with the runtime's words. Nothing is parsed here, so
    /// [`find_in_case`](Self::find_in_case) has no case afterwards (it needs
    /// [`load_case`](Self::load_case)). Returns the session's revision.
    pub async fn load_case_raw(&mut self, json: impl Into<Bytes>) -> Result<u64> {
        let revision = self.write("load-case", json.into()).await?;
        self.case = None;
        Ok(revision)
    }

    /// The case last loaded through this handle.
    pub fn case(&self) -> Option<&Case> {
        self.case.as_ref()
    }

    /// The one span of the loaded case matching `predicate` (see [`Case::find`]); locally, no
    /// call. [`Error::CaseNotLoaded`] before a case was loaded.
    pub fn find_in_case(&self, predicate: &CasePredicate) -> Result<CapturedHit> {
        self.case
            .as_ref()
            .ok_or(Error::CaseNotLoaded)?
            .find(predicate)
    }

    /// Every span of the loaded case matching `predicate` (see [`Case::find_all`]).
    pub fn find_all_in_case(&self, predicate: &CasePredicate) -> Result<Vec<CapturedHit>> {
        self.case
            .as_ref()
            .ok_or(Error::CaseNotLoaded)?
            .find_all(predicate)
    }

    /// Adds a mock rule and sends the whole rules list. Returns the session's revision.
    ///
    /// A `host_suffix` predicate is sent as `when.hostSuffix` (the official SDKs send it as
    /// `host`, which this runtime also reads as a dot-anchored suffix).
    pub async fn mock_outbound(&mut self, rule: MockRule) -> Result<u64> {
        self.add_rule(rule.into()).await
    }

    /// Adds a replay rule, answering matching hops from the loaded case, and sends the whole
    /// rules list. Returns the session's revision.
    pub async fn replay(&mut self, rule: ReplayRule) -> Result<u64> {
        self.add_rule(rule.into()).await
    }

    /// The rules sent through this handle, in order (later ones win ties).
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Removes every rule sent through this handle (sends an empty list).
    pub async fn clear_rules(&mut self) -> Result<u64> {
        let revision = self.send_rules(&[]).await?;
        self.rules.clear();
        Ok(revision)
    }

    /// Replaces the session's rules with a rules document as given (`{"version":1,"rules":
    /// […]}` or a bare list), for rules written in a file. The rules this handle sent are
    /// forgotten: the next [`mock_outbound`](Self::mock_outbound) or
    /// [`replay`](Self::replay) replaces these. Returns the session's revision.
    pub async fn set_rules_raw(&mut self, json: impl Into<Bytes>) -> Result<u64> {
        let revision = self.write("rules", json.into()).await?;
        self.rules.clear();
        Ok(revision)
    }

    /// Replaces the session's policy. Returns the session's revision.
    pub async fn set_policy(&self, policy: &Policy) -> Result<u64> {
        self.write("policy", json(policy)?).await
    }

    /// Replaces the session's policy with a document as given (JSON text). Returns the
    /// session's revision.
    pub async fn set_policy_raw(&self, json: impl Into<Bytes>) -> Result<u64> {
        self.write("policy", json.into()).await
    }

    /// Replaces the session's auth fixtures. Returns the session's revision.
    pub async fn set_auth_fixtures(&self, fixtures: &AuthFixtures) -> Result<u64> {
        self.write("fixtures/auth", json(fixtures)?).await
    }

    /// Replaces the session's auth fixtures with a document as given (JSON text). Returns the
    /// session's revision.
    pub async fn set_auth_fixtures_raw(&self, json: impl Into<Bytes>) -> Result<u64> {
        self.write("fixtures/auth", json.into()).await
    }

    /// The session's counters.
    pub async fn stats(&self) -> Result<Stats> {
        self.get("stats").await
    }

    /// The session's stored documents (as posted), case summary and counters.
    pub async fn state(&self) -> Result<SessionState> {
        self.get("state").await
    }

    /// The recent hops no rule answered, each with the closest rule or recorded exchange and
    /// the predicates it failed.
    pub async fn misses(&self) -> Result<Misses> {
        self.get("misses").await
    }

    /// [`stats`](Self::stats) as the runtime wrote it, every field kept, for showing it.
    pub async fn stats_json(&self) -> Result<Value> {
        self.get("stats").await
    }

    /// [`state`](Self::state) as the runtime wrote it, every field kept, for showing it.
    pub async fn state_json(&self) -> Result<Value> {
        self.get("state").await
    }

    /// [`misses`](Self::misses) as the runtime wrote it, every field kept, for showing it.
    pub async fn misses_json(&self) -> Result<Value> {
        self.get("misses").await
    }

    /// The case of a capture session (`GET /v1/captures/{id}`): what was recorded so far while
    /// it is open, the written file once closed.
    pub async fn capture(&self) -> Result<Case> {
        let (url, bytes) = self
            .client
            .call(
                Method::GET,
                self.client.endpoint(&["v1", "captures", &self.id]),
                None,
                Some(&self.id),
            )
            .await?;
        Case::parse(bytes).map_err(|err| Error::InvalidResponse {
            url: url.to_string(),
            message: err.to_string(),
        })
    }

    /// Closes the session. A capture session's case is written first: the answer is where, on
    /// the runtime's host (download it with [`capture`](Self::capture)). Later calls about
    /// this session fail with [`Error::UnknownSession`].
    pub async fn close(&self) -> Result<Option<PathBuf>> {
        self.close_at(self.route("close")).await
    }

    /// Closes the session as [`close`](Self::close) does, writing a capture session's case to
    /// `out` on the runtime's host (`?out=`) instead of its capture directory. The runtime
    /// takes only paths its `--capture-dir` allows; a refused one is
    /// [`Error::InvalidRequest`] and the session stays open.
    pub async fn close_to(&self, out: &str) -> Result<Option<PathBuf>> {
        let mut url = self.route("close");
        url.query_pairs_mut().append_pair("out", out);
        self.close_at(url).await
    }

    async fn close_at(&self, url: Url) -> Result<Option<PathBuf>> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Closed {
            #[serde(default)]
            capture_path: Option<PathBuf>,
        }
        let closed: Closed = self
            .client
            .call_json(Method::POST, url, Some("{}".into()), Some(&self.id))
            .await?;
        Ok(closed.capture_path)
    }

    async fn add_rule(&mut self, rule: Rule) -> Result<u64> {
        // The list changes only once the runtime took it: a refused rule is not kept.
        let mut rules = self.rules.clone();
        rules.push(rule);
        let revision = self.send_rules(&rules).await?;
        self.rules = rules;
        Ok(revision)
    }

    async fn send_rules(&self, rules: &[Rule]) -> Result<u64> {
        self.write("rules", json(&RulesDocument { version: 1, rules })?)
            .await
    }

    /// `POST /v1/sessions/{id}/{route}` with `body`; the new revision.
    async fn write(&self, route: &str, body: impl Into<reqwest::Body>) -> Result<u64> {
        let written: Written = self
            .client
            .call_json(
                Method::POST,
                self.route(route),
                Some(body.into()),
                Some(&self.id),
            )
            .await?;
        Ok(written.session_revision)
    }

    async fn get<T: serde::de::DeserializeOwned>(&self, route: &str) -> Result<T> {
        self.client
            .call_json(Method::GET, self.route(route), None, Some(&self.id))
            .await
    }

    /// The URL of `/v1/sessions/{id}/{route}`.
    fn route(&self, route: &str) -> Url {
        let mut segments = vec!["v1", "sessions", self.id.as_str()];
        segments.extend(route.split('/'));
        self.client.endpoint(&segments)
    }
}

/// A document as JSON text. Serializing these types cannot fail (string keys, no custom
/// serializers that error), but the error is kept rather than unwrapped.
fn json(document: &impl Serialize) -> Result<String> {
    serde_json::to_string(document).map_err(|err| Error::InvalidRequest {
        message: err.to_string(),
    })
}
