//! Case files and `find_in_case`: the recorded spans of a case, looked up locally with the
//! official SDKs' predicate semantics.

use crate::error::{Error, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use softprobe_otlp::keys;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// Which way a hop goes, as the proxy sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// A request arriving at the app under test.
    Inbound,
    /// A request the app makes to a dependency.
    Outbound,
}

impl Direction {
    /// The wire spelling: `inbound` or `outbound`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// A case document: kept byte for byte (it is loaded into sessions as it is) and parsed once
/// for lookups. Cloning is cheap.
#[derive(Clone)]
pub struct Case {
    raw: Bytes,
    document: Arc<Value>,
}

impl Case {
    /// Parses a case from its JSON text.
    pub fn parse(json: impl Into<Bytes>) -> Result<Self> {
        let raw = json.into();
        let document = serde_json::from_slice(&raw)
            .map_err(|source| Error::InvalidCase { path: None, source })?;
        Ok(Self {
            raw,
            document: Arc::new(document),
        })
    }

    /// Reads and parses a case file (`*.case.json`).
    pub async fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let raw = tokio::fs::read(path).await.map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(raw).map_err(|err| match err {
            Error::InvalidCase { source, .. } => Error::InvalidCase {
                path: Some(path.to_owned()),
                source,
            },
            other => other,
        })
    }

    /// The case's `caseId`.
    pub fn case_id(&self) -> Option<&str> {
        self.document["caseId"].as_str()
    }

    /// The case as it was read, byte for byte (write it to a file to keep a capture).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The parsed document.
    pub fn document(&self) -> &Value {
        &self.document
    }

    pub(crate) fn raw(&self) -> Bytes {
        self.raw.clone()
    }

    /// The one recorded span matching `predicate`, with its response ready to use as a mock.
    ///
    /// The official SDKs' semantics: only spans whose `sp.span.type` is `inject` or `extract`
    /// are candidates (inbound ones too), the set predicates must all hold, and exactly one
    /// span may match: none is [`Error::NotFound`], several is [`Error::Ambiguous`] with their
    /// span ids. A match without a recorded status is [`Error::MissingStatus`].
    pub fn find(&self, predicate: &CasePredicate) -> Result<CapturedHit> {
        let mut matches = self.spans().filter(|span| predicate.matches(span));
        let (Some(first), None) = (matches.next(), matches.next()) else {
            let span_ids: Vec<String> = self
                .spans()
                .filter(|span| predicate.matches(span))
                .map(|span| span.id().to_owned())
                .collect();
            return Err(if span_ids.is_empty() {
                Error::NotFound {
                    predicate: predicate.to_string(),
                }
            } else {
                Error::Ambiguous {
                    predicate: predicate.to_string(),
                    span_ids,
                }
            });
        };
        first.hit()
    }

    /// Every recorded span matching `predicate`, in case order (possibly none). Fails with
    /// [`Error::MissingStatus`] if any of them has no recorded status.
    pub fn find_all(&self, predicate: &CasePredicate) -> Result<Vec<CapturedHit>> {
        self.spans()
            .filter(|span| predicate.matches(span))
            .map(|span| span.hit())
            .collect()
    }

    /// Every span, in document order: `traces[].resourceSpans[].scopeSpans[].spans[]`.
    fn spans(&self) -> impl Iterator<Item = SpanView<'_>> {
        fn list<'v>(value: &'v Value, key: &str) -> std::slice::Iter<'v, Value> {
            value[key].as_array().map(|a| a.iter()).unwrap_or_default()
        }
        list(&self.document, "traces")
            .flat_map(move |trace| list(trace, "resourceSpans"))
            .flat_map(move |resource_spans| {
                let service = attribute(
                    &resource_spans["resource"]["attributes"],
                    keys::RESOURCE_SERVICE_NAME,
                );
                list(resource_spans, "scopeSpans")
                    .flat_map(move |scope| list(scope, "spans"))
                    .map(move |span| SpanView {
                        span,
                        resource_service: service.clone(),
                    })
            })
    }
}

impl fmt::Debug for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Case")
            .field("case_id", &self.case_id())
            .field("bytes", &self.raw.len())
            .finish()
    }
}

/// What `find_in_case` looks for; every predicate that is set must hold, an unset or empty one
/// is ignored. Build it with the chained setters:
///
/// ```
/// use softprobe_sdk::CasePredicate;
///
/// let charge = CasePredicate::outbound().method("POST").path("/v1/charges");
/// assert_eq!(charge.to_string(), r#"{ direction: "outbound", method: "POST", path: "/v1/charges" }"#);
/// ```
///
/// The same predicates make the `when` of [`MockRule`](crate::MockRule) and
/// [`ReplayRule`](crate::ReplayRule), where the runtime's matching applies (methods and hosts
/// case-insensitive, paths without the query).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CasePredicate {
    /// Equals `sp.traffic.direction`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    /// Equals `sp.service.name`, else the resource's `service.name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    /// Equals `url.host`, port included as captured (`api.example.com:8443`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// `url.host` ends with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_suffix: Option<String>,
    /// Equals `http.request.method`, else the `:method` header attribute; case-sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    /// Equals `url.path`, else the `:path` header attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// The same path starts with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_prefix: Option<String>,
}

impl CasePredicate {
    /// Matches every span (until predicates are added).
    pub fn new() -> Self {
        Self::default()
    }

    /// Outbound spans: the app's calls to its dependencies.
    pub fn outbound() -> Self {
        Self::new().direction(Direction::Outbound)
    }

    /// Inbound spans: the requests the app received.
    pub fn inbound() -> Self {
        Self::new().direction(Direction::Inbound)
    }

    /// Sets [`direction`](Self::direction).
    pub fn direction(mut self, direction: Direction) -> Self {
        self.direction = Some(direction);
        self
    }

    /// Sets [`service`](Self::service).
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// Sets [`host`](Self::host).
    pub fn host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Sets [`host_suffix`](Self::host_suffix).
    pub fn host_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.host_suffix = Some(suffix.into());
        self
    }

    /// Sets [`method`](Self::method).
    pub fn method(mut self, method: impl Into<String>) -> Self {
        self.method = Some(method.into());
        self
    }

    /// Sets [`path`](Self::path).
    pub fn path(mut self, path: impl Into<String>) -> Self {
        self.path = Some(path.into());
        self
    }

    /// Sets [`path_prefix`](Self::path_prefix).
    pub fn path_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.path_prefix = Some(prefix.into());
        self
    }

    /// The set, non-empty predicates in display order, as (name, value).
    fn set(&self) -> impl Iterator<Item = (&'static str, &str)> {
        [
            ("direction", self.direction.map(Direction::as_str)),
            ("service", self.service.as_deref()),
            ("host", self.host.as_deref()),
            ("hostSuffix", self.host_suffix.as_deref()),
            ("method", self.method.as_deref()),
            ("path", self.path.as_deref()),
            ("pathPrefix", self.path_prefix.as_deref()),
        ]
        .into_iter()
        .filter_map(|(name, value)| Some((name, value.filter(|v| !v.is_empty())?)))
    }

    fn matches(&self, span: &SpanView<'_>) -> bool {
        /// An unset or empty predicate holds; a set one needs the value, and the test to pass.
        fn holds<'a>(
            wanted: Option<&str>,
            actual: impl FnOnce() -> Option<Cow<'a, str>>,
            test: impl FnOnce(&str, &str) -> bool,
        ) -> bool {
            match wanted.filter(|w| !w.is_empty()) {
                None => true,
                Some(wanted) => actual().is_some_and(|actual| test(&actual, wanted)),
            }
        }
        let equals = |actual: &str, wanted: &str| actual == wanted;
        let candidate = matches!(
            span.attribute(keys::SPAN_TYPE).as_deref(),
            Some("inject" | "extract")
        );
        candidate
            && holds(
                self.direction.map(Direction::as_str),
                || span.attribute(keys::DIRECTION),
                equals,
            )
            && holds(
                self.service.as_deref(),
                || {
                    span.attribute(keys::SERVICE_NAME)
                        .or_else(|| span.resource_service.clone())
                },
                equals,
            )
            && holds(
                self.host.as_deref(),
                || span.attribute(keys::URL_HOST),
                equals,
            )
            && holds(
                self.host_suffix.as_deref(),
                || span.attribute(keys::URL_HOST),
                |actual, wanted| actual.ends_with(wanted),
            )
            && holds(self.method.as_deref(), || span.method(), equals)
            && holds(self.path.as_deref(), || span.path(), equals)
            && holds(
                self.path_prefix.as_deref(),
                || span.path(),
                |actual, wanted| actual.starts_with(wanted),
            )
    }
}

impl fmt::Display for CasePredicate {
    /// `{ direction: "outbound", path: "/v1/charges" }`, as the official SDKs' messages show it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set: Vec<String> = self
            .set()
            .map(|(name, value)| format!("{name}: {value:?}"))
            .collect();
        if set.is_empty() {
            f.write_str("{}")
        } else {
            write!(f, "{{ {} }}", set.join(", "))
        }
    }
}

/// A recorded span that `find_in_case` found, and the response it recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct CapturedHit {
    /// The recorded response, ready for [`MockRule::new`](crate::MockRule::new); change it
    /// first to test variations.
    pub response: CapturedResponse,
    /// The raw OTLP JSON span.
    pub span: Value,
}

impl CapturedHit {
    /// The span's id (hex), if it has one.
    pub fn span_id(&self) -> Option<&str> {
        self.span["spanId"].as_str()
    }
}

/// A response: recorded in a case, or sent by a mock rule as `then.response`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CapturedResponse {
    /// The status code.
    pub status: u16,
    /// The headers, every `http.response.header.<name>` as recorded (proxy captures include
    /// pseudo-headers such as `:status`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The body text; base64 when [`body_encoding`](Self::body_encoding) says so.
    #[serde(default)]
    pub body: String,
    /// How [`body`](Self::body) is written: text, or base64 for a binary body.
    #[serde(default, skip_serializing_if = "BodyEncoding::is_text")]
    pub body_encoding: BodyEncoding,
}

impl CapturedResponse {
    /// A response with this status and body, and no headers.
    pub fn new(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            body: body.into(),
            ..Self::default()
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// How a response body is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyEncoding {
    /// UTF-8 text, as is.
    #[default]
    Text,
    /// Base64 of the bytes (binary bodies).
    Base64,
}

impl BodyEncoding {
    fn is_text(&self) -> bool {
        *self == Self::Text
    }
}

/// One span of a case, with the service of its resource.
struct SpanView<'a> {
    span: &'a Value,
    resource_service: Option<Cow<'a, str>>,
}

impl<'a> SpanView<'a> {
    fn attribute(&self, key: &str) -> Option<Cow<'a, str>> {
        attribute(&self.span["attributes"], key)
    }

    fn header(&self, name: &str) -> Option<Cow<'a, str>> {
        self.attribute(&format!("{}{name}", keys::REQUEST_HEADER_PREFIX))
    }

    fn method(&self) -> Option<Cow<'a, str>> {
        self.attribute(keys::REQUEST_METHOD)
            .or_else(|| self.header(":method"))
    }

    fn path(&self) -> Option<Cow<'a, str>> {
        self.attribute(keys::URL_PATH)
            .or_else(|| self.header(":path"))
    }

    fn id(&self) -> &'a str {
        self.span["spanId"]
            .as_str()
            .filter(|id| !id.is_empty())
            .unwrap_or("<unknown>")
    }

    /// The hit, or [`Error::MissingStatus`].
    fn hit(&self) -> Result<CapturedHit> {
        let status = self
            .attribute(keys::RESPONSE_STATUS)
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::MissingStatus {
                span_id: self.id().to_owned(),
            })?;
        let headers = self.span["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|kv| {
                let name = kv["key"]
                    .as_str()?
                    .strip_prefix(keys::RESPONSE_HEADER_PREFIX)?;
                Some((name.to_owned(), text(&kv["value"])?.into_owned()))
            })
            .collect();
        let body_encoding = match self.attribute(keys::RESPONSE_BODY_ENCODING).as_deref() {
            Some("base64") => BodyEncoding::Base64,
            _ => BodyEncoding::Text,
        };
        Ok(CapturedHit {
            response: CapturedResponse {
                status,
                headers,
                body: self
                    .attribute(keys::RESPONSE_BODY)
                    .map(Cow::into_owned)
                    .unwrap_or_default(),
                body_encoding,
            },
            span: self.span.clone(),
        })
    }
}

/// The value of `key` in an OTLP JSON attribute list.
fn attribute<'a>(attributes: &'a Value, key: &str) -> Option<Cow<'a, str>> {
    attributes
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)
        .and_then(|kv| text(&kv["value"]))
}

/// An OTLP JSON `AnyValue` as text: strings as they are, ints (numbers or numeric strings),
/// booleans and doubles rendered.
fn text(value: &Value) -> Option<Cow<'_, str>> {
    if let Some(s) = value["stringValue"].as_str() {
        return Some(Cow::Borrowed(s));
    }
    match &value["intValue"] {
        Value::String(s) => return Some(Cow::Borrowed(s)),
        Value::Number(n) => return Some(Cow::Owned(n.to_string())),
        _ => {}
    }
    if let Some(b) = value["boolValue"].as_bool() {
        return Some(Cow::Borrowed(if b { "true" } else { "false" }));
    }
    value["doubleValue"]
        .as_f64()
        .map(|d| Cow::Owned(d.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn span(id: &str, attributes: &[(&str, Value)]) -> Value {
        let attributes: Vec<Value> = attributes
            .iter()
            .map(|(key, value)| json!({"key": key, "value": value}))
            .collect();
        json!({"spanId": id, "attributes": attributes})
    }

    fn case(service: &str, spans: Vec<Value>) -> Case {
        let document = json!({"version": "1.0.0", "caseId": "c", "traces": [{"resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": spans}]}]}]});
        Case::parse(document.to_string()).unwrap()
    }

    fn s(value: &str) -> Value {
        json!({ "stringValue": value })
    }

    #[test]
    fn falls_back_to_pseudo_headers_and_the_resource_service() {
        let case = case(
            "orders",
            vec![span(
                "aa",
                &[
                    ("sp.span.type", s("extract")),
                    ("sp.traffic.direction", s("outbound")),
                    ("url.host", s("api.example.com:8443")),
                    ("http.request.header.:method", s("GET")),
                    ("http.request.header.:path", s("/items?page=2")),
                    ("http.response.status_code", json!({"intValue": "201"})),
                    ("http.response.header.content-type", s("text/plain")),
                    ("http.response.body", s("ok")),
                ],
            )],
        );
        let found = case
            .find(
                &CasePredicate::outbound()
                    .service("orders")
                    .method("GET")
                    .path("/items?page=2")
                    .host_suffix("example.com:8443")
                    .path_prefix("/items"),
            )
            .unwrap();
        assert_eq!(
            found.response,
            CapturedResponse::new(201, "ok").header("content-type", "text/plain")
        );
        assert_eq!(found.span_id(), Some("aa"));
        // Case-sensitive method, exact host with port, empty predicates ignored.
        let lower = CasePredicate::new().method("get");
        assert!(matches!(case.find(&lower), Err(Error::NotFound { .. })));
        let no_port = CasePredicate::new().host("api.example.com");
        assert!(matches!(case.find(&no_port), Err(Error::NotFound { .. })));
        assert!(case.find(&CasePredicate::new().path("")).is_ok());
    }

    #[test]
    fn only_inject_and_extract_spans_are_candidates() {
        let case = case(
            "orders",
            vec![
                span("aa", &[("url.path", s("/x"))]),
                span("bb", &[("sp.span.type", s("other")), ("url.path", s("/x"))]),
                span(
                    "cc",
                    &[
                        ("sp.span.type", s("inject")),
                        ("url.path", s("/x")),
                        ("http.response.status_code", json!({"intValue": 200})),
                    ],
                ),
            ],
        );
        let found = case.find(&CasePredicate::new().path("/x")).unwrap();
        assert_eq!(found.span_id(), Some("cc"));
    }

    #[test]
    fn ambiguity_is_reported_before_a_missing_status() {
        let case = case(
            "orders",
            vec![
                span("aa", &[("sp.span.type", s("extract"))]),
                span("", &[("sp.span.type", s("extract"))]),
            ],
        );
        let err = case.find(&CasePredicate::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "find_in_case: 2 spans match {}. Disambiguate the predicate — candidate span ids: aa, <unknown>."
        );
        let err = case.find_all(&CasePredicate::new()).unwrap_err();
        assert!(matches!(err, Error::MissingStatus { span_id } if span_id == "aa"));
    }

    #[test]
    fn serializes_only_the_set_predicates() {
        let predicate = CasePredicate::outbound().host_suffix("stripe.com");
        assert_eq!(
            serde_json::to_value(&predicate).unwrap(),
            json!({"direction": "outbound", "hostSuffix": "stripe.com"})
        );
    }
}
