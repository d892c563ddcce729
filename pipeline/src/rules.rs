//! The rule model: what a test posts to `…/rules` (and a case embeds), parsed and validated.
//!
//! Everything that could make a rule fail at inject time is refused here, when it is posted,
//! with a message that names the place. The wire shape is the reference `rule.schema.json`
//! plus what the official clients really send (`id` as well as `name`, `when.hostSuffix`,
//! `headers: null`, a bare array of rules).

use crate::document::{DocumentError, parse_json, parse_json_object};
use crate::json_path::BodyJsonPredicate;
use serde::Deserialize;
use serde::de::{self, Deserializer};
use std::collections::BTreeMap;
use std::fmt;

/// A parsed, validated rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// The rule's label, from `name` or (legacy, Go/Python SDKs) `id`.
    pub label: Option<String>,
    /// Higher wins; default 0.
    pub priority: i64,
    /// Whether the rule fires once or on every match.
    pub consume: Consume,
    /// The predicates, all of which must hold.
    pub when: When,
    /// What to do on a match.
    pub then: Action,
}

/// How often a rule may fire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consume {
    /// Fires on every match (the default).
    #[default]
    Many,
    /// Fires on the first match only, per rules revision.
    Once,
}

/// Traffic direction as seen by the proxy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A request arriving at the app under test.
    Inbound,
    /// A request the app makes to a dependency.
    Outbound,
}

impl Direction {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// The `when` predicates of a rule. Absent or empty predicates match anything.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct When {
    /// `inbound` or `outbound`.
    pub direction: Option<Direction>,
    /// The service name the proxy reports.
    #[serde(default, deserialize_with = "non_empty")]
    pub service: Option<String>,
    /// The host, case-insensitive, port ignored unless given; also matches as a dot-anchored
    /// suffix (`stripe.com` matches `api.stripe.com`), because the SDKs send `hostSuffix` here.
    #[serde(default, deserialize_with = "non_empty")]
    pub host: Option<String>,
    /// The host ends with this, case-insensitive (dot-anchored when it has no leading dot).
    #[serde(default, deserialize_with = "non_empty")]
    pub host_suffix: Option<String>,
    /// The host ends with none of these.
    #[serde(default, deserialize_with = "non_empty_list")]
    pub not_host_suffix: Option<Vec<String>>,
    /// HTTP method, case-insensitive.
    #[serde(default, deserialize_with = "non_empty")]
    pub method: Option<String>,
    /// Exact path, compared without the query string.
    #[serde(default, deserialize_with = "non_empty")]
    pub path: Option<String>,
    /// Path prefix, compared without the query string.
    #[serde(default, deserialize_with = "non_empty")]
    pub path_prefix: Option<String>,
    /// Request headers that must be present: name (case-insensitive) → value, or a list of
    /// values that must all be present.
    #[serde(default)]
    pub headers: Option<BTreeMap<String, OneOrMany>>,
    /// A JSON path that must resolve in the request body, optionally `== <JSON literal>`.
    #[serde(default)]
    pub body_json_path: Option<BodyJsonPredicate>,
    /// Span attributes that must equal the given primitive values.
    #[serde(default)]
    pub trace_tags: Option<BTreeMap<String, TagValue>>,
}

/// A header predicate value: one string, or a non-empty list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            One(String),
            Many(Vec<String>),
        }
        match Raw::deserialize(deserializer)
            .map_err(|_| de::Error::custom("expected a string or a non-empty list of strings"))?
        {
            Raw::One(value) => Ok(Self(vec![value])),
            Raw::Many(values) if values.is_empty() => Err(de::Error::custom(
                "expected a string or a non-empty list of strings, got an empty list",
            )),
            Raw::Many(values) => Ok(Self(values)),
        }
    }
}

/// A `traceTags` value: the attribute must carry this primitive.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged, expecting = "a string, number or boolean")]
pub enum TagValue {
    /// A string attribute value.
    String(String),
    /// A boolean attribute value.
    Bool(bool),
    /// A numeric attribute value (integer or double).
    Number(serde_json::Number),
}

/// What a rule does when it wins.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(try_from = "RawThen")]
pub enum Action {
    /// Answer with this response instead of calling upstream.
    Mock(MockResponse),
    /// Answer with an error status and body.
    Error(ErrorResponse),
    /// Forward to the real upstream.
    Passthrough,
    /// Forward and record (recording itself happens in capture sessions).
    CaptureOnly,
    /// Answer from the session's loaded case: the recorded exchange whose request matches the
    /// hop on these fields (and always the direction).
    Replay(MatchOn),
}

impl Action {
    /// The wire name of the action.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Mock(_) => "mock",
            Self::Error(_) => "error",
            Self::Passthrough => "passthrough",
            Self::CaptureOnly => "capture_only",
            Self::Replay(_) => "replay",
        }
    }
}

/// `then.matchOn` of a replay rule: the request fields a recorded exchange must share with the
/// hop. The direction always must.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatchOn {
    /// The method.
    pub method: bool,
    /// The host, case-insensitive, ports ignored.
    pub host: bool,
    /// The path without the query.
    pub path: bool,
    /// The query string, exactly.
    pub query: bool,
    /// The request body, JSON compared as values. Without it, an exchange with an equal body
    /// is still preferred among those that share the other fields.
    pub body: bool,
}

impl Default for MatchOn {
    /// Everything but the body.
    fn default() -> Self {
        Self {
            method: true,
            host: true,
            path: true,
            query: true,
            body: false,
        }
    }
}

impl MatchOn {
    fn parse(fields: Vec<String>) -> Result<Self, String> {
        let mut on = Self {
            method: false,
            host: false,
            path: false,
            query: false,
            body: false,
        };
        for field in &fields {
            let flag = match field.as_str() {
                "method" => &mut on.method,
                "host" => &mut on.host,
                "path" => &mut on.path,
                "query" => &mut on.query,
                "body" => &mut on.body,
                other => {
                    return Err(format!(
                        "matchOn: unknown field {other:?} (expected \"method\", \"host\", \
                         \"path\", \"query\" or \"body\")"
                    ));
                }
            };
            *flag = true;
        }
        Ok(on)
    }
}

/// A mocked response.
#[derive(Debug, Clone, PartialEq)]
pub struct MockResponse {
    /// HTTP status, 200 when not given.
    pub status: u16,
    /// Response headers, in the order given (names as given).
    pub headers: Vec<(String, String)>,
    /// Response body.
    pub body: Body,
}

/// An `error` action's response.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResponse {
    /// HTTP status, 400–599 except 404 (which the proxy reads as "no mock").
    pub status: u16,
    /// The error text, sent as `{"error":"<text>"}`.
    pub body: String,
}

/// A response body: text as given, or bytes that travelled as base64.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Body {
    /// No body.
    #[default]
    Empty,
    /// A UTF-8 body (a JSON value given in the rule is serialized compactly).
    Text(String),
    /// A binary body, given as base64 with `bodyEncoding: "base64"`.
    Binary(Vec<u8>),
}

impl Body {
    /// Normalizes a posted body: absent/null/"" → empty, a string verbatim, any other JSON
    /// value serialized compactly.
    fn from_json(value: Option<serde_json::Value>) -> Self {
        match value {
            None | Some(serde_json::Value::Null) => Self::Empty,
            Some(serde_json::Value::String(text)) if text.is_empty() => Self::Empty,
            Some(serde_json::Value::String(text)) => Self::Text(text),
            Some(other) => Self::Text(other.to_string()),
        }
    }
}

/// The most rules one document holds: a `…/rules` body, or the `rules` embedded in a case. A
/// session holds at most twice this many (its rules plus its case's). The index keeps lookups
/// flat however many rules there are, but a scan remains for rules whose only predicates
/// cannot be indexed (headers, `bodyJsonPath`, `traceTags`, …) and the index is rebuilt on
/// every write: the ceiling bounds both.
pub const MAX_RULES_PER_DOCUMENT: usize = 100_000;

/// Parses a `…/rules` body: `{"version":1,"rules":[…]}` or a bare array of rules.
///
/// `version` may be absent; when present it must be 1.
pub fn parse_rules_document(bytes: &[u8]) -> Result<Vec<Rule>, DocumentError> {
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first == Some(&b'[') {
        return parse_json::<RuleList>(bytes).map(|list| list.0);
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct RulesDocument {
        #[serde(default)]
        version: Option<RulesVersion>,
        rules: RuleList,
    }
    let document: RulesDocument = parse_json_object(bytes)?;
    let _ = document.version;
    Ok(document.rules.0)
}

/// A list of at most [`MAX_RULES_PER_DOCUMENT`] rules.
struct RuleList(Vec<Rule>);

impl<'de> Deserialize<'de> for RuleList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserialize_rule_list(deserializer).map(Self)
    }
}

/// Deserializes a list of rules, refusing it as soon as it holds more than
/// [`MAX_RULES_PER_DOCUMENT`], before the rest is parsed. For `#[serde(deserialize_with)]` on
/// a document's `rules` field (rules documents, and a case's embedded rules).
pub fn deserialize_rule_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Rule>, D::Error> {
    struct Visitor;

    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<Rule>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of rules")
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Rule>, A::Error> {
            // The size hint comes from the sender: trust it only up to the ceiling.
            let hint = seq.size_hint().unwrap_or(0).min(MAX_RULES_PER_DOCUMENT);
            let mut rules = Vec::with_capacity(hint);
            while let Some(rule) = seq.next_element()? {
                if rules.len() == MAX_RULES_PER_DOCUMENT {
                    return Err(de::Error::custom(format!(
                        "more than {MAX_RULES_PER_DOCUMENT} rules: a rules document (or a \
                         case's embedded rules) holds at most {MAX_RULES_PER_DOCUMENT}"
                    )));
                }
                rules.push(rule);
            }
            Ok(rules)
        }
    }

    deserializer.deserialize_seq(Visitor)
}

/// The rules document `version`: absent or 1.
struct RulesVersion;

impl<'de> Deserialize<'de> for RulesVersion {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match i64::deserialize(deserializer)? {
            1 => Ok(Self),
            other => Err(de::Error::custom(format!(
                "unsupported rules document version {other}; this runtime reads version 1"
            ))),
        }
    }
}

impl<'de> Deserialize<'de> for Rule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct RawRule {
            #[serde(default)]
            id: Option<String>,
            #[serde(default)]
            name: Option<String>,
            #[serde(default)]
            priority: Option<i64>,
            #[serde(default)]
            consume: Option<Consume>,
            when: When,
            then: Action,
        }
        let raw = RawRule::deserialize(deserializer)?;
        Ok(Rule {
            label: raw.name.or(raw.id).filter(|label| !label.is_empty()),
            priority: raw.priority.unwrap_or(0),
            consume: raw.consume.unwrap_or_default(),
            when: raw.when,
            then: raw.then,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[serde(rename_all = "camelCase")]
struct RawThen {
    action: ActionName,
    #[serde(default)]
    response: Option<RawResponse>,
    #[serde(default)]
    error: Option<RawError>,
    #[serde(default)]
    match_on: Option<Vec<String>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ActionName {
    Mock,
    Error,
    Passthrough,
    CaptureOnly,
    Replay,
}

impl fmt::Display for ActionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Mock => "mock",
            Self::Error => "error",
            Self::Passthrough => "passthrough",
            Self::CaptureOnly => "capture_only",
            Self::Replay => "replay",
        })
    }
}

impl<'de> Deserialize<'de> for ActionName {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        match name.as_str() {
            "mock" => Ok(Self::Mock),
            "error" => Ok(Self::Error),
            "passthrough" => Ok(Self::Passthrough),
            "capture_only" => Ok(Self::CaptureOnly),
            "replay" => Ok(Self::Replay),
            other => Err(de::Error::custom(format!(
                "unknown action {other:?} (expected \"mock\", \"error\", \"passthrough\", \
                 \"capture_only\" or \"replay\")"
            ))),
        }
    }
}

/// `then.response` as posted. The schema leaves it open, so unknown keys are ignored.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawResponse {
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    #[serde(default)]
    body: Option<serde_json::Value>,
    #[serde(default)]
    body_encoding: Option<BodyEncoding>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum BodyEncoding {
    Text,
    Base64,
}

/// `then.error` as posted. The schema leaves it open, so unknown keys are ignored.
#[derive(Deserialize)]
struct RawError {
    status: u16,
    #[serde(default)]
    body: Option<serde_json::Value>,
}

impl TryFrom<RawThen> for Action {
    type Error = String;

    fn try_from(then: RawThen) -> Result<Self, String> {
        then.into_action()
    }
}

impl RawThen {
    fn into_action(self) -> Result<Action, String> {
        let misplaced = |field: &str| {
            format!(
                "\"{field}\" does not belong to a \"{}\" action",
                self.action
            )
        };
        if self.match_on.is_some() && self.action != ActionName::Replay {
            return Err(misplaced("matchOn"));
        }
        match self.action {
            ActionName::Replay => {
                if self.response.is_some() {
                    return Err(misplaced("response"));
                }
                if self.error.is_some() {
                    return Err(misplaced("error"));
                }
                Ok(Action::Replay(match self.match_on {
                    Some(fields) => MatchOn::parse(fields)?,
                    None => MatchOn::default(),
                }))
            }
            ActionName::Mock => {
                if self.error.is_some() {
                    return Err(misplaced("error"));
                }
                let response = self.response.ok_or(
                    "a \"mock\" action needs a \"response\" ({\"status\":200,\"body\":\"…\"})",
                )?;
                Ok(Action::Mock(response.into_mock()?))
            }
            ActionName::Error => {
                if self.response.is_some() {
                    return Err(misplaced("response"));
                }
                let error = self
                    .error
                    .ok_or("an \"error\" action needs \"error\": {\"status\": 4xx|5xx}")?;
                if !(400..=599).contains(&error.status) || error.status == 404 {
                    return Err(format!(
                        "error.status {} is not usable: an error action answers 400–599 except \
                         404, which the proxy reads as \"no mock\"; use a \"mock\" action with \
                         response.status for other statuses",
                        error.status
                    ));
                }
                let body = match Body::from_json(error.body) {
                    Body::Text(text) => text,
                    Body::Empty | Body::Binary(_) => String::new(),
                };
                Ok(Action::Error(ErrorResponse {
                    status: error.status,
                    body,
                }))
            }
            ActionName::Passthrough | ActionName::CaptureOnly => {
                if self.response.is_some() {
                    return Err(misplaced("response"));
                }
                if self.error.is_some() {
                    return Err(misplaced("error"));
                }
                Ok(if self.action == ActionName::Passthrough {
                    Action::Passthrough
                } else {
                    Action::CaptureOnly
                })
            }
        }
    }
}

impl RawResponse {
    fn into_mock(self) -> Result<MockResponse, String> {
        let status = self.status.unwrap_or(0);
        let status = if status == 0 { 200 } else { status };
        if !(100..=599).contains(&status) {
            return Err(format!(
                "response.status {status} is not an HTTP status (100–599)"
            ));
        }
        let body = match self.body_encoding.unwrap_or(BodyEncoding::Text) {
            BodyEncoding::Text => Body::from_json(self.body),
            BodyEncoding::Base64 => match self.body {
                None | Some(serde_json::Value::Null) => Body::Empty,
                Some(serde_json::Value::String(encoded)) => {
                    use base64::Engine as _;
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(encoded.trim())
                        .map_err(|err| format!("response.body is not valid base64: {err}"))?;
                    Body::Binary(bytes)
                }
                Some(_) => {
                    return Err(
                        "response.body must be a base64 string when bodyEncoding is \
                                \"base64\""
                            .to_owned(),
                    );
                }
            },
        };
        Ok(MockResponse {
            status,
            headers: self.headers.unwrap_or_default().into_iter().collect(),
            body,
        })
    }
}

/// Deserializes an optional string, treating `""` as absent.
fn non_empty<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<String>::deserialize(deserializer)?.filter(|value| !value.is_empty()))
}

/// Deserializes an optional non-empty list of non-empty strings.
fn non_empty_list<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Vec<String>>, D::Error> {
    match Option::<Vec<String>>::deserialize(deserializer)? {
        Some(list) if list.is_empty() => Err(de::Error::custom(
            "expected a non-empty list of host suffixes (omit the field to match any host)",
        )),
        Some(list) if list.iter().any(String::is_empty) => Err(de::Error::custom(
            "an empty host suffix would match every host",
        )),
        other => Ok(other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Rule>, String> {
        parse_rules_document(json.as_bytes()).map_err(|err| err.to_string())
    }

    #[test]
    fn accepts_what_real_clients_send() {
        // Go/Python SDK: `id`, hostSuffix sent as host, headers {}.
        let rules = parse(
            r#"{"version":1,"rules":[{"id":"r1","priority":100,
              "when":{"direction":"outbound","host":"stripe.com","method":"POST"},
              "then":{"action":"mock","response":{"status":200,"headers":{},"body":"{}"}}}]}"#,
        )
        .unwrap();
        assert_eq!(rules[0].label.as_deref(), Some("r1"));
        assert_eq!(rules[0].priority, 100);
        // Java SDK: `name`; Python dict response without headers or body; headers null.
        let rules = parse(
            r#"[{"name":"n","consume":"once","when":{"hostSuffix":"x.com","path":""},
                 "then":{"action":"mock","response":{"status":201,"headers":null}}},
                {"when":{},"then":{"action":"mock","response":{"status":204}}}]"#,
        )
        .unwrap();
        assert_eq!(rules[0].label.as_deref(), Some("n"));
        assert_eq!(rules[0].consume, Consume::Once);
        assert_eq!(rules[0].when.path, None, "an empty predicate is absent");
        assert_eq!(
            rules[1].then,
            Action::Mock(MockResponse {
                status: 204,
                headers: vec![],
                body: Body::Empty
            })
        );
    }

    #[test]
    fn json_bodies_are_serialized_compactly() {
        let rules = parse(
            r#"[{"when":{},"then":{"action":"mock","response":{"body":{"b":1,"a":[true]}}}},
                {"when":{},"then":{"action":"error","error":{"status":503,"body":{"e":"x"}}}}]"#,
        )
        .unwrap();
        let Action::Mock(mock) = &rules[0].then else {
            panic!("not a mock")
        };
        assert_eq!(mock.status, 200);
        assert_eq!(mock.body, Body::Text(r#"{"a":[true],"b":1}"#.into()));
        assert_eq!(
            rules[1].then,
            Action::Error(ErrorResponse {
                status: 503,
                body: r#"{"e":"x"}"#.into()
            })
        );
    }

    #[test]
    fn base64_bodies_are_decoded_when_posted() {
        let rules = parse(
            r#"[{"when":{},"then":{"action":"mock","response":{"body":"AAEC/w==","bodyEncoding":"base64"}}}]"#,
        )
        .unwrap();
        let Action::Mock(mock) = &rules[0].then else {
            panic!("not a mock")
        };
        assert_eq!(mock.body, Body::Binary(vec![0, 1, 2, 255]));
        let err = parse(
            r#"[{"when":{},"then":{"action":"mock","response":{"body":"**","bodyEncoding":"base64"}}}]"#,
        )
        .unwrap_err();
        assert!(
            err.starts_with("[0].then: response.body is not valid base64"),
            "{err}"
        );
    }

    #[test]
    fn errors_name_the_place_and_the_value() {
        let cases = [
            (
                r#"{"rules":[{"when":{},"then":{"action":"mokc"}}]}"#,
                "rules[0].then.action: unknown action \"mokc\"",
            ),
            (
                r#"{"rules":[{"when":{},"then":{"action":"replay","matchOn":["path","verb"]}}]}"#,
                "rules[0].then: matchOn: unknown field \"verb\"",
            ),
            (
                r#"{"rules":[{"when":{},"then":{"action":"mock","matchOn":["path"],"response":{}}}]}"#,
                "rules[0].then: \"matchOn\" does not belong to a \"mock\" action",
            ),
            (
                r#"{"rules":[{"when":{"hots":"x"},"then":{"action":"passthrough"}}]}"#,
                "rules[0].when.hots: unknown field `hots`",
            ),
            (
                r#"{"rules":[{"when":{"direction":"sideways"},"then":{"action":"passthrough"}}]}"#,
                "rules[0].when.direction: unknown variant `sideways`",
            ),
            (
                r#"{"rules":[{"priority":"high","when":{},"then":{"action":"passthrough"}}]}"#,
                "rules[0].priority: invalid type: string \"high\"",
            ),
            (
                r#"{"rules":[{"when":{},"then":{"action":"mock"}}]}"#,
                "rules[0].then: a \"mock\" action needs a \"response\"",
            ),
            (
                r#"{"rules":[{"when":{},"then":{"action":"error","error":{"status":404}}}]}"#,
                "rules[0].then: error.status 404 is not usable",
            ),
            (
                r#"{"rules":[{"then":{"action":"passthrough"}}]}"#,
                "rules[0]: missing field `when`",
            ),
            (
                r#"{"version":2,"rules":[]}"#,
                "version: unsupported rules document version 2",
            ),
            (
                r#"{"rules":[{"when":{"headers":{"x":[]}},"then":{"action":"passthrough"}}]}"#,
                "rules[0].when.headers.x: expected a string or a non-empty list",
            ),
            (
                r#"{"rules":[{"when":{"notHostSuffix":[]},"then":{"action":"passthrough"}}]}"#,
                "rules[0].when.notHostSuffix: expected a non-empty list",
            ),
            (r#"{"version":1}"#, "missing field `rules`"),
        ];
        let mut failures = Vec::new();
        for (document, expected) in cases {
            match parse(document) {
                Ok(_) => failures.push(format!("accepted {document}")),
                Err(err) if !err.starts_with(expected) => {
                    failures.push(format!("{document}\n  got:  {err}\n  want: {expected}…"))
                }
                Err(_) => {}
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn documents_hold_at_most_the_ceiling() {
        let rule = r#"{"when":{},"then":{"action":"passthrough"}}"#;
        let list = |n: usize| format!("[{}]", vec![rule; n].join(","));
        assert_eq!(
            parse(&list(MAX_RULES_PER_DOCUMENT)).unwrap().len(),
            MAX_RULES_PER_DOCUMENT
        );
        let over = list(MAX_RULES_PER_DOCUMENT + 1);
        let want = format!("more than {MAX_RULES_PER_DOCUMENT} rules");
        let err = parse(&over).unwrap_err();
        assert!(err.contains(&want), "{err}");
        let err = parse(&format!(r#"{{"version":1,"rules":{over}}}"#)).unwrap_err();
        assert!(err.starts_with("rules") && err.contains(&want), "{err}");
    }
}
