//! The rules a session sends: mocks and replays, written as the runtime's rules document.

use crate::case::{CapturedResponse, CasePredicate};
use serde::{Deserialize, Serialize, Serializer};

/// Answer matching hops with a fixed response: `{"then":{"action":"mock","response":…}}`.
///
/// ```
/// use softprobe_sdk::{CapturedResponse, CasePredicate, MockRule};
///
/// let charge = MockRule::new(
///     CasePredicate::outbound().method("POST").host("api.stripe.com").path("/v1/charges"),
///     CapturedResponse::new(200, r#"{"id":"ch_1"}"#).header("content-type", "application/json"),
/// )
/// .name("charge-ok");
/// # let _ = charge;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MockRule {
    /// The rule's label, shown in inject answers and misses.
    pub name: Option<String>,
    /// Higher wins; the runtime's default is 0 (the policy sits at 0 in the lowest layer).
    pub priority: Option<i64>,
    /// The hops it answers; an empty predicate answers every hop.
    pub when: CasePredicate,
    /// What they get.
    pub response: CapturedResponse,
}

impl MockRule {
    /// A mock answering hops that match `when` with `response`.
    pub fn new(when: CasePredicate, response: CapturedResponse) -> Self {
        Self {
            name: None,
            priority: None,
            when,
            response,
        }
    }

    /// Sets [`name`](Self::name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`priority`](Self::priority).
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = Some(priority);
        self
    }
}

/// Answer matching hops from the session's loaded case:
/// `{"then":{"action":"replay","matchOn":[…]}}`.
///
/// The recorded exchange must have the hop's direction and share the [`match_on`] fields
/// (default: all but the body); repeated identical requests get the recorded responses in
/// order. Without a recorded exchange the rule does not match and precedence goes on (a lower
/// rule, then the policy).
///
/// [`match_on`]: Self::match_on
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRule {
    /// The rule's label, shown in inject answers and misses.
    pub name: Option<String>,
    /// Higher wins; the runtime's default is 0.
    pub priority: Option<i64>,
    /// The hops it answers. Usually [`CasePredicate::outbound()`]: inbound hops are the test's
    /// own requests to the app, which should reach it.
    pub when: CasePredicate,
    /// The request fields a recorded exchange must share with the hop; `None` sends no
    /// `matchOn`, which means method, host, path and query.
    pub match_on: Option<Vec<MatchField>>,
}

impl ReplayRule {
    /// A replay answering hops that match `when`.
    pub fn new(when: CasePredicate) -> Self {
        Self {
            name: None,
            priority: None,
            when,
            match_on: None,
        }
    }

    /// Sets [`name`](Self::name).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sets [`priority`](Self::priority).
    pub fn priority(mut self, priority: i64) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Sets [`match_on`](Self::match_on).
    pub fn match_on(mut self, fields: impl IntoIterator<Item = MatchField>) -> Self {
        self.match_on = Some(fields.into_iter().collect());
        self
    }
}

/// A request field a replayed exchange must share with the hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatchField {
    /// The method.
    Method,
    /// The host, case-insensitive, ports ignored when either side has none.
    Host,
    /// The path, without the query.
    Path,
    /// The query string.
    Query,
    /// The request body (JSON compared as values, else as text).
    Body,
}

/// One rule of a session's rules document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    /// A mock.
    Mock(MockRule),
    /// A replay from the loaded case.
    Replay(ReplayRule),
}

impl From<MockRule> for Rule {
    fn from(rule: MockRule) -> Self {
        Self::Mock(rule)
    }
}

impl From<ReplayRule> for Rule {
    fn from(rule: ReplayRule) -> Self {
        Self::Replay(rule)
    }
}

impl Serialize for Rule {
    /// The wire form: `{name?, priority?, when, then}`.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            name: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            priority: Option<i64>,
            when: &'a CasePredicate,
            then: Then<'a>,
        }
        #[derive(Serialize)]
        #[serde(tag = "action", rename_all = "lowercase")]
        enum Then<'a> {
            Mock {
                response: &'a CapturedResponse,
            },
            Replay {
                #[serde(rename = "matchOn", skip_serializing_if = "Option::is_none")]
                match_on: Option<&'a [MatchField]>,
            },
        }
        let wire = match self {
            Self::Mock(rule) => Wire {
                name: rule.name.as_deref(),
                priority: rule.priority,
                when: &rule.when,
                then: Then::Mock {
                    response: &rule.response,
                },
            },
            Self::Replay(rule) => Wire {
                name: rule.name.as_deref(),
                priority: rule.priority,
                when: &rule.when,
                then: Then::Replay {
                    match_on: rule.match_on.as_deref(),
                },
            },
        };
        wire.serialize(serializer)
    }
}

/// The `…/rules` body: `{"version":1,"rules":[…]}`.
#[derive(Serialize)]
pub(crate) struct RulesDocument<'a> {
    pub(crate) version: u8,
    pub(crate) rules: &'a [Rule],
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn writes_the_wire_form() {
        let rules = [
            Rule::from(
                MockRule::new(
                    CasePredicate::outbound().method("GET").path("/fragment"),
                    CapturedResponse::new(200, "{\"dep\":\"ok\"}\n"),
                )
                .name("fragment-replay")
                .priority(100),
            ),
            Rule::from(ReplayRule::new(CasePredicate::outbound())),
            Rule::from(
                ReplayRule::new(CasePredicate::new().host_suffix("stripe.com"))
                    .match_on([MatchField::Path, MatchField::Body]),
            ),
        ];
        let document = serde_json::to_value(RulesDocument {
            version: 1,
            rules: &rules,
        })
        .unwrap();
        assert_eq!(
            document,
            json!({"version": 1, "rules": [
                {"name": "fragment-replay", "priority": 100,
                 "when": {"direction": "outbound", "method": "GET", "path": "/fragment"},
                 "then": {"action": "mock", "response": {"status": 200, "headers": {}, "body": "{\"dep\":\"ok\"}\n"}}},
                {"when": {"direction": "outbound"}, "then": {"action": "replay"}},
                {"when": {"hostSuffix": "stripe.com"}, "then": {"action": "replay", "matchOn": ["path", "body"]}},
            ]})
        );
    }
}
