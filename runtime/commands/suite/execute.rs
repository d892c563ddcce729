//! Running one case: its own replay session (the case loaded, outbound calls answered from it,
//! the suite's mocks and policy), the recorded inbound request sent to the app, and the answer
//! compared with the recorded one; calls the case lacks come back as explained misses.

use super::check::{Answer, Difference, compare};
use super::document::{Mock, PlannedCase, RequestSpec};
use crate::commands::session::{miss_lines, path as session_path};
use crate::commands::{CliError, RuntimeClient};
use serde_json::{Value, json};
use softprobe_pipeline::hop::Hop;
use softprobe_pipeline::otlp::{self, AttrRef, Encoding, SpanView, keys};
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
    pub(super) client: RuntimeClient,
    pub(super) app: reqwest::Client,
    pub(super) app_url: Option<String>,
    pub(super) noise: Vec<String>,
}

impl Runner {
    pub(super) fn new(
        client: RuntimeClient,
        app_url: Option<String>,
        noise: Vec<String>,
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
        let hooks: Vec<&str> = hook_names(case);
        if let Some(hook) = hooks.first() {
            return Err(format!(
                "hook {hook:?}: this CLI does not run JavaScript hooks yet; remove the hook \
                 reference, or run this suite with the reference CLI"
            ));
        }
        let settings = &case.settings;
        let rules = rules(settings.mocks.as_deref().unwrap_or_default());
        let request = ingress(settings.request.as_ref(), &document)?;
        let created = self
            .client
            .post("/v1/sessions", Some(br#"{"mode":"replay"}"#.to_vec()))
            .await
            .map_err(|err| format!("runtime unavailable (session start): {}", err.message))?;
        let id = created["sessionId"].as_str().unwrap_or_default().to_owned();
        let outcome = self
            .in_session(
                &id,
                settings.policy.as_ref(),
                bytes,
                rules,
                request,
                case,
                result,
            )
            .await;
        let _ = self.client.post(&session_path(&id, "close"), None).await;
        outcome
    }

    #[allow(clippy::too_many_arguments)]
    async fn in_session(
        &self,
        id: &str,
        policy: Option<&Value>,
        case_bytes: Vec<u8>,
        rules: Value,
        request: Option<Recorded>,
        case: &PlannedCase,
        result: &mut CaseResult,
    ) -> Result<(), String> {
        let post = |route: &'static str, body: Vec<u8>| async move {
            self.client
                .post(&session_path(id, route), Some(body))
                .await
                .map_err(|err| format!("{route} failed: {}", err.message))
        };
        if let Some(policy) = policy {
            post("policy", policy.to_string().into_bytes()).await?;
        }
        post("load-case", case_bytes).await?;
        post("rules", rules.to_string().into_bytes()).await?;
        // Without a request there is nothing to send: the case passes, as in the reference.
        let Some(request) = request else {
            return Ok(());
        };
        let actual = self.send(id, &request).await?;
        result.differences = compare(
            case.settings.assertions.as_ref(),
            &self.noise,
            request.response.as_ref(),
            &actual,
        )?;
        // Calls the app made that the case lacks, explained.
        let misses = self
            .client
            .get(&session_path(id, "misses"))
            .await
            .map_err(|err| format!("misses: {}", err.message))?;
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

/// Every hook a case names (none are run yet).
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
/// mocks win ties), then each mock: inline ones as `mock` rules, case-sourced ones as `replay`
/// rules narrowed by their `match`.
fn rules(mocks: &[Mock]) -> Value {
    let mut rules = vec![json!({
        "name": "suite-replay-outbound",
        "when": {"direction": "outbound"},
        "then": {"action": "replay"}
    })];
    for mock in mocks {
        let inline = mock.source.as_deref() == Some("inline")
            || (mock.source.is_none() && mock.response.is_some());
        let mut rule = json!({"when": mock.matcher});
        rule["then"] = if inline {
            let mut response = mock.response.clone().unwrap_or_else(|| json!({}));
            // A JSON body given as YAML structure is sent as its JSON text.
            if let Some(body) = response
                .get_mut("body")
                .filter(|b| !b.is_string() && !b.is_null())
            {
                *body = Value::String(body.to_string());
            }
            json!({"action": "mock", "response": response})
        } else {
            json!({"action": "replay"})
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

/// A request to send and, when recorded, its response.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    url: Option<String>,
    /// Path with query.
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    response: Option<Answer>,
}

/// Headers a recorded request does not replay: per-connection ones and pseudo-headers.
const NOT_REPLAYED: [&str; 7] = [
    "host",
    "content-length",
    "connection",
    "transfer-encoding",
    "keep-alive",
    "x-softprobe-session-id",
    "traceparent",
];

/// The request to send: the recorded inbound one (`source: case.ingress`, or a request without
/// method and path), with the inline fields over it; `None` when there is none to send.
fn ingress(spec: Option<&RequestSpec>, document: &Value) -> Result<Option<Recorded>, String> {
    let Some(spec) = spec else {
        // No request section: replay the recorded inbound request when there is one.
        return Ok(recorded_ingress(document));
    };
    let from_case = spec.source.as_deref() == Some("case.ingress")
        || (spec.method.is_none() && spec.path.is_none());
    let mut request = match (from_case, recorded_ingress(document)) {
        (true, Some(recorded)) => recorded,
        (true, None) if spec.source.is_some() => {
            return Err(
                "request.source is case.ingress but the case records no inbound request".to_owned(),
            );
        }
        (_, _) => Recorded {
            method: "GET".to_owned(),
            url: None,
            path: "/".to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            response: None,
        },
    };
    if let Some(method) = &spec.method {
        request.method = method.to_ascii_uppercase();
    }
    if let Some(path) = &spec.path {
        request.path = if path.starts_with('/') {
            path.clone()
        } else {
            format!("/{path}")
        };
    }
    if let Some(url) = &spec.url {
        request.url = Some(url.clone());
    }
    for (name, value) in &spec.headers {
        request
            .headers
            .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        request.headers.push((name.clone(), value.clone()));
    }
    if let Some(body) = &spec.body {
        request.body = body.clone().into_bytes();
    }
    Ok(Some(request))
}

/// The first recorded inbound span with a response, as a request to send again.
fn recorded_ingress(document: &Value) -> Option<Recorded> {
    for trace in document["traces"].as_array()? {
        let json = serde_json::to_vec(trace).ok()?;
        let Ok(traces) = otlp::decode_traces(&json, Some(Encoding::Json)) else {
            continue;
        };
        for rs in &traces.resource_spans {
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let view = SpanView::of(span, rs.resource.as_ref());
                if view.attributes.string(keys::DIRECTION) != Some("inbound") {
                    continue;
                }
                return Some(recorded_request(view));
            }
        }
    }
    None
}

fn recorded_request(view: SpanView<'_>) -> Recorded {
    let attributes = view.attributes.clone();
    let headers = |prefix: &str| -> Vec<(String, String)> {
        attributes
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(prefix)?;
                (!name.starts_with(':'))
                    .then(|| (name.to_ascii_lowercase(), value.text().unwrap_or_default()))
            })
            .collect()
    };
    let request_headers: Vec<(String, String)> = headers(keys::REQUEST_HEADER_PREFIX)
        .into_iter()
        .filter(|(name, _)| !NOT_REPLAYED.contains(&name.as_str()) && name != "tracestate")
        .collect();
    let response = match attributes.get(keys::RESPONSE_STATUS) {
        Some(AttrRef::Int(code)) => u16::try_from(code).ok(),
        Some(AttrRef::Str(code)) => code.trim().parse().ok(),
        _ => None,
    }
    .map(|status| Answer {
        status,
        headers: headers(keys::RESPONSE_HEADER_PREFIX),
        body: text_body(
            &attributes,
            keys::RESPONSE_BODY,
            keys::RESPONSE_BODY_ENCODING,
        ),
    });
    let hop = Hop::from_span(view);
    let path = match hop.query {
        "" => hop.path.to_owned(),
        query => format!("{}?{query}", hop.path),
    };
    Recorded {
        method: if hop.method.is_empty() {
            "GET".to_owned()
        } else {
            hop.method.to_string()
        },
        url: None,
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path
        },
        headers: request_headers,
        body: hop
            .body()
            .map(|b| b.into_owned().into_bytes())
            .unwrap_or_default(),
        response,
    }
}

fn text_body(attributes: &otlp::Attributes<'_>, key: &str, encoding: &str) -> String {
    let Some(body) = attributes.string(key) else {
        return String::new();
    };
    if attributes.string(encoding) == Some("base64") {
        use base64::Engine as _;
        if let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(body) {
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    body.to_owned()
}
