//! Running one case: its own replay session (the case loaded, outbound calls answered from it,
//! the suite's mocks and policy), the recorded inbound request sent to the app, and the answer
//! compared with the recorded one; calls the case lacks come back as explained misses. Hooks
//! apply where the reference applies them: a mock's `hook` to its response before the rules are
//! sent, `request.transform` to the request before it is sent, `assertions.*.custom` after the
//! comparison, their issues added to the differences.

use super::check::{Answer, Difference, compare};
use super::document::{Mock, PlannedCase};
use super::hooks::{HookError, Hooks, Kind, canonical};
use super::recorded::{Recorded, ingress};
use crate::commands::CliError;
use crate::commands::session::miss_lines;
use serde_json::{Value, json};
use softprobe_sdk::{Mode, Session, Softprobe};
use std::time::{Duration, Instant};

/// How a case ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Status {
    Passed,
    Failed,
    Skipped,
}

/// One case's result.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct CaseResult {
    pub(super) case_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) display_name: Option<String>,
    pub(super) path: String,
    pub(super) status: Status,
    pub(super) duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) differences: Vec<Difference>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) misses: Vec<String>,
}

impl CaseResult {
    pub(super) fn skipped(case: &PlannedCase) -> Self {
        Self {
            case_id: String::new(),
            display_name: case.name.clone(),
            path: case.path.display().to_string(),
            status: Status::Skipped,
            duration_ms: 0,
            error: None,
            differences: Vec::new(),
            misses: Vec::new(),
        }
    }

    /// The failure as text: the error, each difference, each miss.
    pub(super) fn failure_text(&self) -> String {
        let mut lines: Vec<String> = self.error.iter().cloned().collect();
        lines.extend(self.differences.iter().map(ToString::to_string));
        lines.extend(
            self.misses
                .iter()
                .map(|m| format!("call the case lacks: {m}")),
        );
        lines.join("\n")
    }
}

/// What a case run needs besides the case.
pub(super) struct Runner {
    pub(super) client: Softprobe,
    pub(super) app: reqwest::Client,
    pub(super) app_url: Option<String>,
    pub(super) noise: Vec<String>,
    pub(super) hooks: Hooks,
}

/// Who is calling a hook: the `ctx` of its payload.
#[derive(Clone, Copy)]
struct Context<'a> {
    case_id: &'a str,
    session: &'a str,
}

impl Runner {
    pub(super) fn new(
        client: Softprobe,
        app_url: Option<String>,
        noise: Vec<String>,
        hooks: Hooks,
    ) -> Result<Self, CliError> {
        let app = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|err| CliError::new(1, "client_error", err.to_string(), ""))?;
        Ok(Self {
            client,
            app,
            app_url,
            noise,
            hooks,
        })
    }

    /// Runs one case in its own session, closed whatever happens.
    pub(super) async fn run(&self, case: &PlannedCase) -> CaseResult {
        let started = Instant::now();
        let mut result = CaseResult {
            case_id: case.path.display().to_string(),
            display_name: case.name.clone(),
            path: case.path.display().to_string(),
            status: Status::Passed,
            duration_ms: 0,
            error: None,
            differences: Vec::new(),
            misses: Vec::new(),
        };
        let outcome = self.run_in_session(case, &mut result).await;
        if let Err(error) = outcome {
            result.error = Some(error);
        }
        if result.error.is_some() || !result.differences.is_empty() || !result.misses.is_empty() {
            result.status = Status::Failed;
        }
        result.duration_ms = started.elapsed().as_millis() as u64;
        result
    }

    async fn run_in_session(
        &self,
        case: &PlannedCase,
        result: &mut CaseResult,
    ) -> Result<(), String> {
        let bytes = std::fs::read(&case.path)
            .map_err(|err| format!("cannot read {}: {err}", case.path.display()))?;
        let document: Value = serde_json::from_slice(&bytes)
            .map_err(|err| format!("{} is not JSON: {err}", case.path.display()))?;
        if let Some(id) = document["caseId"].as_str() {
            result.case_id = id.to_owned();
        }
        // A hook that cannot be called fails the case before its session starts.
        for hook in hook_names(case) {
            self.hooks.check(hook).map_err(|err| err.to_string())?;
        }
        let settings = &case.settings;
        let request = ingress(settings.request.as_ref(), &document)?;
        let mut session = self
            .client
            .start_session(Mode::Replay)
            .await
            .map_err(|err| failed("runtime unavailable (session start)", err))?;
        let outcome = self
            .in_session(
                &mut session,
                settings.policy.as_ref(),
                bytes,
                request,
                case,
                result,
            )
            .await;
        let _ = session.close().await;
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    async fn in_session(
        &self,
        session: &mut Session,
        policy: Option<&Value>,
        case_bytes: Vec<u8>,
        request: Option<Recorded>,
        case: &PlannedCase,
        result: &mut CaseResult,
    ) -> Result<(), String> {
        let case_id = result.case_id.clone();
        let id = session.id().to_owned();
        let ctx = Context {
            case_id: &case_id,
            session: &id,
        };
        if let Some(policy) = policy {
            session
                .set_policy_raw(policy.to_string())
                .await
                .map_err(|err| failed("policy failed", err))?;
        }
        let mocks = case.settings.mocks.as_deref().unwrap_or_default();
        let hooked = self.hooked_responses(mocks, &case_bytes, ctx).await?;
        session
            .load_case_raw(case_bytes)
            .await
            .map_err(|err| failed("load-case failed", err))?;
        session
            .set_rules_raw(rules(mocks, &hooked).to_string())
            .await
            .map_err(|err| failed("rules failed", err))?;
        // Without a request there is nothing to send: the case passes, as in the reference.
        let Some(mut request) = request else {
            return Ok(());
        };
        let transform = case.settings.request.as_ref();
        if let Some(hook) = transform.and_then(|r| r.transform.as_deref()) {
            let patch = self
                .hooks
                .call(hook, Kind::Request, request_payload(&request, ctx))
                .await
                .map_err(|err| err.to_string())?;
            patch_request(&mut request, hook, &patch).map_err(|err| err.to_string())?;
        }
        let actual = self.send(&id, &request).await?;
        let assertions = case.settings.assertions.as_ref();
        result.differences = compare(assertions, &self.noise, request.response.as_ref(), &actual)?;
        let custom = [
            (
                assertions.and_then(|a| a.body.as_ref()?.custom.as_deref()),
                Kind::AssertBody,
            ),
            (
                assertions.and_then(|a| a.headers.as_ref()?.custom.as_deref()),
                Kind::AssertHeaders,
            ),
        ];
        for (hook, kind) in custom {
            let Some(hook) = hook else { continue };
            let payload = assert_payload(kind, &request, &actual, ctx);
            let issues = self
                .hooks
                .call(hook, kind, payload)
                .await
                .and_then(|returned| issues(hook, kind, &returned))
                .map_err(|err| err.to_string())?;
            result.differences.extend(issues);
        }
        // Calls the app made that the case lacks, explained.
        let misses = session
            .misses_json()
            .await
            .map_err(|err| failed("misses", err))?;
        let outbound: Vec<Value> = misses["misses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["direction"] == "outbound")
            .cloned()
            .collect();
        result.misses = miss_lines(&json!({"misses": outbound}));
        Ok(())
    }

    /// For each mock with a `hook`: its response (inline, or the recorded one the SDK's
    /// `find_in_case` finds with its `match`) patched by the hook; `None` for the others.
    async fn hooked_responses(
        &self,
        mocks: &[Mock],
        case_bytes: &[u8],
        ctx: Context<'_>,
    ) -> Result<Vec<Option<Value>>, String> {
        let mut recorded: Option<softprobe_sdk::Case> = None;
        let mut out = Vec::with_capacity(mocks.len());
        for (index, mock) in mocks.iter().enumerate() {
            let Some(hook) = mock.hook.as_deref() else {
                out.push(None);
                continue;
            };
            let name = mock.name.as_deref().unwrap_or_default();
            let located = |err: &dyn std::fmt::Display| {
                format!("resolve mocks: mocks[{index}] {name:?}: {err}")
            };
            let (mut response, span) = if is_inline(mock) {
                (inline_response(mock), Value::Null)
            } else {
                if recorded.is_none() {
                    let case = softprobe_sdk::Case::parse(case_bytes.to_vec())
                        .map_err(|err| located(&err))?;
                    recorded = Some(case);
                }
                let case = recorded.as_ref().ok_or("the case did not parse")?;
                let predicate: softprobe_sdk::CasePredicate =
                    serde_json::from_value(json!(mock.matcher))
                        .map_err(|err| located(&format!("match: {err}")))?;
                let hit = case.find(&predicate).map_err(|err| located(&err))?;
                let response = serde_json::to_value(&hit.response).map_err(|err| located(&err))?;
                (response, hit.span)
            };
            let payload = json!({
                "capturedResponse": response,
                "capturedSpan": span,
                "mockName": name,
                "ctx": {"caseId": ctx.case_id, "sessionId": ctx.session, "mockName": name},
            });
            let patch = self
                .hooks
                .call(hook, Kind::MockResponse, payload)
                .await
                .map_err(|err| located(&err))?;
            patch_response(&mut response, hook, &patch).map_err(|err| located(&err))?;
            out.push(Some(response));
        }
        Ok(out)
    }

    async fn send(&self, session: &str, request: &Recorded) -> Result<Answer, String> {
        let url = match (&request.url, &self.app_url) {
            (Some(url), _) => url.clone(),
            (None, Some(app)) => format!("{}{}", app.trim_end_matches('/'), request.path),
            (None, None) => {
                return Err("no target URL: pass --app-url or set request.url".to_owned());
            }
        };
        let method = reqwest::Method::from_bytes(request.method.as_bytes())
            .map_err(|_| format!("invalid method {:?}", request.method))?;
        let mut outgoing = self.app.request(method, &url).body(request.body.clone());
        for (name, value) in &request.headers {
            outgoing = outgoing.header(name, value);
        }
        let response = outgoing
            .header("x-softprobe-session-id", session)
            .send()
            .await
            .map_err(|err| format!("{url}: {}", crate::commands::error_chain(&err)))?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let body = response
            .text()
            .await
            .map_err(|err| format!("{url}: {err}"))?;
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

/// Every hook a case names.
fn hook_names(case: &PlannedCase) -> Vec<&str> {
    let settings = &case.settings;
    let request = settings
        .request
        .iter()
        .filter_map(|r| r.transform.as_deref());
    let mocks = settings
        .mocks
        .iter()
        .flatten()
        .filter_map(|m| m.hook.as_deref());
    let assertions = settings.assertions.iter().flat_map(|a| {
        let headers = a.headers.as_ref().and_then(|h| h.custom.as_deref());
        let body = a.body.as_ref().and_then(|b| b.custom.as_deref());
        headers.into_iter().chain(body)
    });
    request.chain(mocks).chain(assertions).collect()
}

/// The rules document of a case session: the outbound replay rule first (so the suite's
/// mocks win ties), then each mock: inline ones and those a hook answered (`hooked`, by index)
/// as `mock` rules, case-sourced ones as `replay` rules narrowed by their `match`.
fn rules(mocks: &[Mock], hooked: &[Option<Value>]) -> Value {
    let mut rules = vec![json!({
        "name": "suite-replay-outbound",
        "when": {"direction": "outbound"},
        "then": {"action": "replay"}
    })];
    for (index, mock) in mocks.iter().enumerate() {
        let mut rule = json!({"when": mock.matcher});
        rule["then"] = match hooked.get(index).cloned().flatten() {
            Some(response) => json!({"action": "mock", "response": response}),
            None if is_inline(mock) => json!({"action": "mock", "response": inline_response(mock)}),
            None => json!({"action": "replay"}),
        };
        if let Some(name) = &mock.name {
            rule["name"] = json!(name);
        }
        if let Some(priority) = mock.priority {
            rule["priority"] = json!(priority);
        }
        if let Some(consume) = &mock.consume {
            rule["consume"] = json!(consume);
        }
        rules.push(rule);
    }
    json!({"version": 1, "rules": rules})
}

/// `source: inline`, or no source and a `response`.
fn is_inline(mock: &Mock) -> bool {
    mock.source.as_deref() == Some("inline") || (mock.source.is_none() && mock.response.is_some())
}

/// An inline mock's response, a JSON body given as YAML structure sent as its JSON text.
fn inline_response(mock: &Mock) -> Value {
    let mut response = mock.response.clone().unwrap_or_else(|| json!({}));
    if let Some(body) = response
        .get_mut("body")
        .filter(|b| !b.is_string() && !b.is_null())
    {
        *body = Value::String(body.to_string());
    }
    response
}

/// A body a hook returned: text as is, anything else but `null` as its JSON text.
fn body_text(body: &Value) -> Option<String> {
    match body {
        Value::Null => None,
        Value::String(text) => Some(text.clone()),
        other => Some(other.to_string()),
    }
}

/// A `request` hook's payload.
fn request_payload(request: &Recorded, ctx: Context<'_>) -> Value {
    let headers: serde_json::Map<String, Value> = request
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), json!(v)))
        .collect();
    let mut fields = json!({
        "method": request.method,
        "path": request.path,
        "headers": headers,
        "body": String::from_utf8_lossy(&request.body),
    });
    if let Some(url) = &request.url {
        fields["url"] = json!(url);
    }
    if let Some(host) = &request.host {
        fields["host"] = json!(host);
    }
    json!({"request": fields, "ctx": {"caseId": ctx.case_id, "sessionId": ctx.session}})
}

/// Merges what a `request` hook returned: each field it sets replaces the request's; headers
/// merge by name (case-insensitive), a `null` header removes it; `host` becomes the Host
/// header.
fn patch_request(request: &mut Recorded, hook: &str, patch: &Value) -> Result<(), HookError> {
    let fields = match patch {
        Value::Null => return Ok(()),
        Value::Object(fields) => fields,
        other => return Err(HookError::shape(hook, Kind::Request, other)),
    };
    let mut set_header = |name: &str, value: Option<String>| {
        request
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        if let Some(value) = value {
            request.headers.push((name.to_ascii_lowercase(), value));
        }
    };
    if let Some(host) = fields.get("host").and_then(Value::as_str) {
        set_header("host", Some(host.to_owned()));
    }
    for (name, value) in fields
        .get("headers")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        set_header(name, body_text(value));
    }
    if let Some(method) = fields.get("method").and_then(Value::as_str) {
        request.method = method.to_ascii_uppercase();
    }
    if let Some(url) = fields.get("url").and_then(Value::as_str) {
        request.url = Some(url.to_owned());
    }
    if let Some(path) = fields.get("path").and_then(Value::as_str) {
        request.path = match path.starts_with('/') {
            true => path.to_owned(),
            false => format!("/{path}"),
        };
    }
    if let Some(body) = fields.get("body").and_then(body_text) {
        request.body = body.into_bytes();
    }
    Ok(())
}

/// Merges what a `mock_response` hook returned, field by field; as in the reference, only a
/// non-zero status, non-empty headers and a non-empty body override.
fn patch_response(response: &mut Value, hook: &str, patch: &Value) -> Result<(), HookError> {
    let fields = match patch {
        Value::Null => return Ok(()),
        Value::Object(fields) => fields,
        other => return Err(HookError::shape(hook, Kind::MockResponse, other)),
    };
    if let Some(status) = fields
        .get("status")
        .and_then(Value::as_u64)
        .filter(|s| *s != 0)
    {
        response["status"] = json!(status);
    }
    if let Some(headers) = fields
        .get("headers")
        .filter(|h| h.as_object().is_some_and(|h| !h.is_empty()))
    {
        response["headers"] = headers.clone();
    }
    if let Some(body) = fields
        .get("body")
        .and_then(body_text)
        .filter(|b| !b.is_empty())
    {
        response["body"] = json!(body);
        // A new body is text unless the hook says otherwise.
        if let Some(response) = response.as_object_mut() {
            response.remove("bodyEncoding");
        }
    }
    if let Some(encoding) = fields.get("bodyEncoding").and_then(Value::as_str) {
        response["bodyEncoding"] = json!(encoding);
    }
    Ok(())
}

/// An assert hook's payload: the actual body parsed as JSON (`null` when it is not JSON) or
/// the actual headers, each next to the recorded one (`null` when nothing was recorded).
fn assert_payload(kind: Kind, request: &Recorded, actual: &Answer, ctx: Context<'_>) -> Value {
    let json_body = |body: &str| serde_json::from_str::<Value>(body).unwrap_or(Value::Null);
    let headers = |answer: &Answer| -> Value {
        let mut map = serde_json::Map::new();
        for (name, value) in answer.headers.iter().filter(|(n, _)| !n.starts_with(':')) {
            // The first value of each name, under Go's canonical name, as in the reference.
            map.entry(canonical(name)).or_insert_with(|| json!(value));
        }
        Value::Object(map)
    };
    let recorded = request.response.as_ref();
    let (actual, captured) = match kind {
        Kind::AssertHeaders => (headers(actual), recorded.map(headers)),
        _ => (
            json_body(&actual.body),
            recorded.map(|r| json_body(&r.body)),
        ),
    };
    json!({
        "actual": actual,
        "captured": captured,
        "ctx": {"caseId": ctx.case_id, "direction": "inbound", "path": request.path},
    })
}

/// The issues an assert hook returned, as differences: `null` or `[]` is a pass.
fn issues(hook: &str, kind: Kind, returned: &Value) -> Result<Vec<Difference>, HookError> {
    let list = match returned {
        Value::Null => return Ok(Vec::new()),
        Value::Array(list) if list.iter().all(Value::is_object) => list,
        other => return Err(HookError::shape(hook, kind, other)),
    };
    let text = |value: Option<&Value>| value.map(Value::to_string).unwrap_or_default();
    Ok(list
        .iter()
        .map(|issue| Difference {
            path: match &issue["path"] {
                Value::String(path) => path.clone(),
                Value::Null => "$".to_owned(),
                other => other.to_string(),
            },
            expected: text(issue.get("expected")),
            actual: text(issue.get("actual")),
            reason: Some(match issue["reason"].as_str() {
                Some(reason) => format!("hook {hook}: {reason}"),
                None => format!("reported by hook {hook}"),
            }),
        })
        .collect())
}

/// A runtime call's failure as a case's error: what was being done, then the CLI's message.
fn failed(doing: &str, err: softprobe_sdk::Error) -> String {
    format!("{doing}: {}", CliError::from(err).message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Recorded {
        Recorded {
            method: "GET".to_owned(),
            url: None,
            host: Some("shop.local".to_owned()),
            path: "/checkout".to_owned(),
            headers: vec![
                ("accept".to_owned(), "*/*".to_owned()),
                ("x-drop".to_owned(), "1".to_owned()),
            ],
            body: Vec::new(),
            response: Some(Answer {
                status: 200,
                headers: vec![(":status".to_owned(), "200".to_owned())],
                body: r#"{"ok":true}"#.to_owned(),
            }),
        }
    }

    #[test]
    fn a_request_hook_merges_fields_and_headers() {
        let mut sent = request();
        let patch = json!({
            "method": "post",
            "path": "orders",
            "headers": {"Accept": "application/json", "x-drop": null, "x-n": 2},
            "body": {"a": 1},
        });
        patch_request(&mut sent, "h", &patch).unwrap();
        assert_eq!(
            (sent.method.as_str(), sent.path.as_str()),
            ("POST", "/orders")
        );
        assert_eq!(
            sent.headers,
            [
                ("accept".to_owned(), "application/json".to_owned()),
                ("x-n".to_owned(), "2".to_owned())
            ]
        );
        assert_eq!(sent.body, br#"{"a":1}"#);
        patch_request(&mut sent, "h", &Value::Null).unwrap();
        let err = patch_request(&mut sent, "h", &json!("GET")).unwrap_err();
        assert!(err.to_string().contains("returned \"GET\""), "{err}");
    }

    #[test]
    fn a_mock_hook_overrides_only_what_it_sets() {
        let mut response =
            json!({"status": 201, "headers": {"a": "1"}, "body": "AAE=", "bodyEncoding": "base64"});
        patch_response(
            &mut response,
            "h",
            &json!({"status": 0, "headers": {}, "body": ""}),
        )
        .unwrap();
        assert_eq!(
            response["status"], 201,
            "zero and empty fields do not override"
        );
        assert_eq!(response["bodyEncoding"], "base64");
        patch_response(
            &mut response,
            "h",
            &json!({"status": 402, "body": {"paid": false}}),
        )
        .unwrap();
        assert_eq!(
            response,
            json!({"status": 402, "headers": {"a": "1"}, "body": "{\"paid\":false}"})
        );
    }

    #[test]
    fn assert_hooks_get_json_bodies_and_canonical_headers_and_their_issues_become_differences() {
        let ctx = Context {
            case_id: "c",
            session: "s",
        };
        let actual = Answer {
            status: 200,
            headers: vec![
                ("content-type".to_owned(), "text/plain".to_owned()),
                ("content-type".to_owned(), "second".to_owned()),
            ],
            body: "not json".to_owned(),
        };
        let body = assert_payload(Kind::AssertBody, &request(), &actual, ctx);
        assert_eq!(body["actual"], Value::Null);
        assert_eq!(body["captured"], json!({"ok": true}));
        assert_eq!(body["ctx"]["path"], "/checkout");
        let headers = assert_payload(Kind::AssertHeaders, &request(), &actual, ctx);
        assert_eq!(headers["actual"], json!({"Content-Type": "text/plain"}));
        assert_eq!(headers["captured"], json!({}), "pseudo-headers left out");

        let found = issues(
            "shape",
            Kind::AssertBody,
            &json!([{"path": "$.a", "expected": 1, "actual": "x"}, {"reason": "empty"}]),
        )
        .unwrap();
        assert_eq!(
            found.iter().map(ToString::to_string).collect::<Vec<_>>(),
            [
                "$.a: reported by hook shape (expected 1, got \"x\")",
                "$: hook shape: empty"
            ]
        );
        assert!(
            issues("shape", Kind::AssertBody, &json!(null))
                .unwrap()
                .is_empty()
        );
        assert!(issues("shape", Kind::AssertBody, &json!({"path": "$"})).is_err());
    }
}
