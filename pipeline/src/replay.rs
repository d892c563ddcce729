//! The recorded exchanges of a loaded case, read and indexed once when the case is loaded, so
//! that a `replay` rule finds a hop's recorded answer at the cost of a mock lookup whatever the
//! case's size.

use crate::case::Case;
use crate::hop::{Hop, host_without_port};
use crate::otlp::{self, AttrRef, Encoding, SpanView, keys};
use crate::rules::{Body, Direction, MatchOn, MockResponse};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// One recorded request and its response: a case span with a recorded status.
#[derive(Debug)]
pub struct Exchange {
    /// The span id, hex.
    pub span_id: String,
    /// `inbound` or `outbound`.
    pub direction: Option<Direction>,
    /// Method, upper-cased.
    pub method: String,
    /// Host as recorded (port included when it was).
    pub host: String,
    /// Path without the query.
    pub path: String,
    /// The query without `?`.
    pub query: String,
    /// The request body as text, if one was recorded.
    pub request_body: Option<String>,
    /// The recorded response.
    pub response: MockResponse,
    /// Whether a replay has answered with it (repeated requests walk the recorded sequence).
    served: AtomicBool,
}

/// A case's exchanges, in recorded order, indexed by path.
#[derive(Debug, Default)]
pub struct Exchanges {
    all: Vec<Exchange>,
    by_path: HashMap<String, Vec<usize>>,
}

impl Exchanges {
    /// Reads the exchanges of `case`'s traces. Spans that do not decode or record no response
    /// are not exchanges; a case's other content is not the replay's business.
    pub fn of(case: &Case) -> Self {
        let mut exchanges = Self::default();
        for trace in &case.traces {
            let Ok(json) = serde_json::to_vec(trace) else {
                continue;
            };
            let Ok(traces) = otlp::decode_traces(&json, Some(Encoding::Json)) else {
                continue;
            };
            for resource_spans in &traces.resource_spans {
                let spans = resource_spans.scope_spans.iter().flat_map(|s| &s.spans);
                for span in spans {
                    let view = SpanView::of(span, resource_spans.resource.as_ref());
                    if let Some(exchange) = Exchange::read(hex::encode(&span.span_id), view) {
                        let index = exchanges.all.len();
                        let path = exchange.path.clone();
                        exchanges.all.push(exchange);
                        exchanges.by_path.entry(path).or_default().push(index);
                    }
                }
            }
        }
        exchanges
    }

    /// Number of exchanges.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the case recorded none.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Every exchange in recorded order.
    pub fn iter(&self) -> impl Iterator<Item = &Exchange> {
        self.all.iter()
    }

    /// The exchanges that share the hop's path (the index the closest-candidate search and
    /// replay lookups start from).
    pub fn on_path(&self, path: &str) -> impl Iterator<Item = &Exchange> {
        self.by_path
            .get(path)
            .into_iter()
            .flatten()
            .map(|&index| &self.all[index])
    }

    /// The recorded exchanges that answer `hop` under `on`, in recorded order; those whose
    /// request body equals the hop's come first when any does (only those, with `on.body`).
    fn candidates(&self, hop: &Hop<'_>, on: MatchOn) -> Vec<&Exchange> {
        let pool: Box<dyn Iterator<Item = &Exchange>> = if on.path {
            Box::new(self.on_path(hop.path))
        } else {
            Box::new(self.all.iter())
        };
        let matching: Vec<&Exchange> = pool.filter(|e| e.answers(hop, on)).collect();
        if matching.iter().all(|e| e.request_body.is_none()) && !on.body {
            return matching;
        }
        let body = hop.body();
        let body = body.as_deref();
        let equal: Vec<&Exchange> = matching
            .iter()
            .copied()
            .filter(|e| bodies_equal(e.request_body.as_deref(), body))
            .collect();
        if on.body || !equal.is_empty() {
            equal
        } else {
            matching
        }
    }

    /// Whether some recorded exchange answers `hop` under `on` (nothing is claimed).
    pub fn answers(&self, hop: &Hop<'_>, on: MatchOn) -> bool {
        !self.candidates(hop, on).is_empty()
    }

    /// The recorded exchange that answers `hop` now: the first of its candidates not served
    /// yet, claimed atomically so concurrent hops never get the same one while others remain;
    /// once all were served, the last one repeats.
    pub fn answer(&self, hop: &Hop<'_>, on: MatchOn) -> Option<&Exchange> {
        let candidates = self.candidates(hop, on);
        candidates
            .iter()
            .find(|e| {
                e.served
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
            .or(candidates.last())
            .copied()
    }
}

impl Exchange {
    fn read(span_id: String, view: SpanView<'_>) -> Option<Self> {
        let attributes = view.attributes.clone();
        let status = match attributes.get(keys::RESPONSE_STATUS)? {
            AttrRef::Int(code) => u16::try_from(code).ok()?,
            AttrRef::Str(code) => code.trim().parse().ok()?,
            _ => return None,
        };
        let headers = attributes
            .iter()
            .filter_map(|(key, value)| {
                let name = key.strip_prefix(keys::RESPONSE_HEADER_PREFIX)?;
                Some((name.to_owned(), value.text()?))
            })
            .collect();
        let body = match attributes.string(keys::RESPONSE_BODY) {
            None => Body::Empty,
            Some(text) if attributes.string(keys::RESPONSE_BODY_ENCODING) == Some("base64") => {
                use base64::Engine as _;
                match base64::engine::general_purpose::STANDARD.decode(text) {
                    Ok(bytes) => Body::Binary(bytes),
                    Err(_) => Body::Text(text.to_owned()),
                }
            }
            Some(text) => Body::Text(text.to_owned()),
        };
        let hop = Hop::from_span(view);
        Some(Self {
            span_id,
            direction: hop.direction,
            method: hop.method.to_ascii_uppercase(),
            host: hop.host.to_owned(),
            path: hop.path.to_owned(),
            query: hop.query.to_owned(),
            request_body: hop.body().map(|b| b.into_owned()),
            response: MockResponse {
                status,
                headers,
                body,
            },
            served: AtomicBool::new(false),
        })
    }

    /// Whether this exchange was recorded for `hop` on the fields of `on` (the body aside).
    fn answers(&self, hop: &Hop<'_>, on: MatchOn) -> bool {
        self.direction == hop.direction
            && (!on.method || self.method.eq_ignore_ascii_case(&hop.method))
            && (!on.host || same_host(&self.host, hop.host))
            && (!on.path || self.path == hop.path)
            && (!on.query || self.query == hop.query)
    }
}

/// Hosts compare case-insensitively, and without ports when either side has none.
pub(crate) fn same_host(recorded: &str, host: &str) -> bool {
    recorded.eq_ignore_ascii_case(host)
        || host_without_port(recorded).eq_ignore_ascii_case(host_without_port(host))
}

/// Request bodies are equal as JSON values when both parse, else as text.
pub(crate) fn bodies_equal(recorded: Option<&str>, body: Option<&str>) -> bool {
    fn text(body: Option<&str>) -> Option<&str> {
        body.map(str::trim).filter(|b| !b.is_empty())
    }
    match (text(recorded), text(body)) {
        (None, None) => true,
        (Some(a), Some(b)) => {
            a == b
                || matches!(
                    (
                        serde_json::from_str::<serde_json::Value>(a),
                        serde_json::from_str::<serde_json::Value>(b),
                    ),
                    (Ok(x), Ok(y)) if x == y
                )
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::Attributes;
    use std::borrow::Cow;
    use std::sync::Arc;

    fn hop<'a>(direction: Direction, method: &'a str, path: &'a str) -> Hop<'a> {
        Hop {
            direction: Some(direction),
            service: "",
            host: "api.example.com",
            method: Cow::Borrowed(method),
            path,
            query: "",
            attributes: Attributes::Wire(Vec::new()),
        }
    }

    #[test]
    fn reads_cases_of_this_runtime_and_of_the_reference() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../testdata/cases/orders-checkout.case.json"
        );
        let case = Case::parse(&std::fs::read(path).unwrap()).unwrap();
        let exchanges = Exchanges::of(&case);
        let ids: Vec<&str> = exchanges.iter().map(|e| e.span_id.as_str()).collect();
        assert_eq!(ids, ["00f067aa0ba902b7", "b7ad6b7169203331"]);
        let charge = &exchanges.all[1];
        assert_eq!(
            (charge.method.as_str(), charge.path.as_str()),
            ("POST", "/v1/charges")
        );
        assert_eq!(charge.response.status, 201);
        // The reference runtime writes base64 ids (Go's protojson), integers as numbers, and
        // the method as http.request.method; a span without a response is not an exchange.
        let reference = br#"{"version":"1.0.0","caseId":"ref","traces":[{"resourceSpans":[{"scopeSpans":[{"spans":[
            {"traceId":"W47/95gDgQPSabYzgT/GDA==","spanId":"BRWBvzy1XBM=","attributes":[
              {"key":"sp.traffic.direction","value":{"stringValue":"outbound"}},
              {"key":"url.host","value":{"stringValue":"softprobe-proxy:8084"}},
              {"key":"url.path","value":{"stringValue":"/fragment"}},
              {"key":"http.request.method","value":{"stringValue":"GET"}},
              {"key":"http.response.status_code","value":{"intValue":200}},
              {"key":"http.response.body","value":{"stringValue":"{\"dep\":\"ok\"}\n"}}]},
            {"spanId":"AQIDBAUGBwg=","attributes":[{"key":"url.path","value":{"stringValue":"/inject-only"}}]}
        ]}]}]}]}"#;
        let exchanges = Exchanges::of(&Case::parse(reference).unwrap());
        assert_eq!(exchanges.len(), 1);
        let answer = exchanges
            .answer(
                &hop(Direction::Outbound, "GET", "/fragment"),
                MatchOn {
                    host: false,
                    ..MatchOn::default()
                },
            )
            .unwrap();
        assert_eq!(answer.span_id, "051581bf3cb55c13");
        assert_eq!(
            answer.response.body,
            Body::Text("{\"dep\":\"ok\"}\n".into())
        );
    }

    #[test]
    fn concurrent_hops_never_share_a_recorded_answer_while_others_remain() {
        let spans: Vec<String> = (1..=5)
            .map(|n| {
                format!(
                    r#"{{"spanId":"000000000000000{n}","attributes":[
                  {{"key":"sp.traffic.direction","value":{{"stringValue":"outbound"}}}},
                  {{"key":"url.host","value":{{"stringValue":"api.example.com"}}}},
                  {{"key":"url.path","value":{{"stringValue":"/token"}}}},
                  {{"key":"http.request.method","value":{{"stringValue":"GET"}}}},
                  {{"key":"http.response.status_code","value":{{"intValue":200}}}}]}}"#
                )
            })
            .collect();
        let case = format!(
            r#"{{"version":"1.0.0","caseId":"seq","traces":[{{"resourceSpans":[{{"scopeSpans":[{{"spans":[{}]}}]}}]}}]}}"#,
            spans.join(",")
        );
        for _ in 0..20 {
            let exchanges = Arc::new(Exchanges::of(&Case::parse(case.as_bytes()).unwrap()));
            let threads: Vec<_> = (0..8)
                .map(|_| {
                    let exchanges = exchanges.clone();
                    std::thread::spawn(move || {
                        let hop = hop(Direction::Outbound, "GET", "/token");
                        exchanges
                            .answer(&hop, MatchOn::default())
                            .unwrap()
                            .span_id
                            .clone()
                    })
                })
                .collect();
            let mut answers: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
            answers.sort();
            let last = "0000000000000005".to_owned();
            let mut expected: Vec<String> =
                (1..=5).map(|n| format!("000000000000000{n}")).collect();
            expected.extend([last.clone(), last.clone(), last]);
            expected.sort();
            assert_eq!(answers, expected);
        }
    }
}
