//! One HTTP stream through the filter, as plain data: what to rewrite on the request, whether
//! to ask the runtime, what to send it, and what to upload once the response is complete.
//! The shim feeds it host data and applies its answers.

use std::borrow::Cow;
use std::sync::LazyLock;

use softprobe_otlp::{keys, tracestate_with_session, valid_session_id};

use crate::answer::{self, Answer, Verdict};
use crate::body::{self, Captured};
use crate::config::{Config, Direction};
use crate::proto::{span, status};
use crate::span::{
    Attributes, EXTRACT, INJECT, REQUEST_BODY_TRUNCATED, RESPONSE_BODY_TRUNCATED, SpanFields,
    encode,
};
use crate::trace_context::{
    Ids, SESSION_HEADER, TRACEPARENT, TRACESTATE, TraceParent, format_traceparent, header,
    header_values, session_id, tracestate,
};

/// Attributes of a request besides its headers: session, direction, service, method, host,
/// path, body, body encoding, truncation (a response's status, body, encoding and truncation
/// fit in as many).
const MESSAGE_ATTRIBUTES: usize = 10;

/// `sp.span.type` of each span the filter sends, encoded once rather than on every request.
static INJECT_TYPE: LazyLock<Attributes> = LazyLock::new(|| span_type(INJECT));
static EXTRACT_TYPE: LazyLock<Attributes> = LazyLock::new(|| span_type(EXTRACT));

fn span_type(kind: &str) -> Attributes {
    let mut attrs = Attributes::with_capacity(1);
    attrs.string(keys::SPAN_TYPE, kind);
    attrs
}

/// Request header that names the service when the config does not (reference behaviour).
pub const SERVICE_NAME_HEADER: &str = "x-sp-service-name";

/// A change to the live request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderEdit {
    /// Replace every value of the header with this one.
    Set(&'static str, String),
    /// Remove the header.
    Remove(&'static str),
}

/// The state of one tagged stream.
#[derive(Debug)]
pub struct Exchange {
    session_id: String,
    selected: bool,
    direction: Direction,
    service_name: String,
    trace_id: [u8; 16],
    parent_span_id: Option<[u8; 8]>,
    span_id: [u8; 8],
    method: String,
    host: String,
    path: String,
    request_headers: Vec<(String, String)>,
    request_body: Captured,
    /// The request's attributes as the inject span carried them, for the extract span.
    encoded_request: Option<Attributes>,
    response_status: Option<u32>,
    response_headers: Vec<(String, String)>,
    response_body: Captured,
    replied_locally: bool,
    started_ns: u64,
}

impl Exchange {
    /// Starts a tagged stream from its request headers (lowercase names, pseudo-headers
    /// included). Returns the edits to apply to the live request, or `None` for an untagged
    /// request: it is not ours, so it costs no ids, copies or edits.
    pub fn begin(
        config: &Config,
        headers: Vec<(String, String)>,
        ids: impl FnOnce() -> Ids,
        now_ns: u64,
    ) -> Option<(Self, Vec<HeaderEdit>)> {
        let session_id = session_id(&headers)?;
        let ids = ids();
        let method = header(&headers, ":method").unwrap_or_default().to_owned();
        let host = header(&headers, ":authority")
            .or_else(|| header(&headers, "host"))
            .unwrap_or_default()
            .to_owned();
        let path = header(&headers, ":path").unwrap_or_default().to_owned();
        let selected = config.selection.selects(&host, &path);
        let service_name = config
            .service_name(header(&headers, SERVICE_NAME_HEADER))
            .to_owned();
        let incoming = header(&headers, TRACEPARENT).and_then(TraceParent::parse);

        let mut edits = Vec::new();
        if incoming.is_none() {
            edits.push(HeaderEdit::Set(
                TRACEPARENT,
                format_traceparent(&incoming_or(ids, incoming), &ids.span_id),
            ));
        }
        match config.direction {
            // The app propagates tracestate to its outbound calls; that is how egress finds
            // the session. An id that cannot travel in tracestate is not written (the shim
            // warns).
            Direction::Inbound if valid_session_id(&session_id) => {
                edits.push(HeaderEdit::Set(
                    TRACESTATE,
                    tracestate_with_session(&tracestate(&headers), &session_id),
                ));
            }
            Direction::Inbound => {}
            // The real dependency has no business with the session header.
            Direction::Outbound => edits.push(HeaderEdit::Remove(SESSION_HEADER)),
        }

        let mut exchange = Self {
            selected,
            direction: config.direction,
            service_name,
            trace_id: incoming_or(ids, incoming),
            parent_span_id: incoming.map(|tp| tp.parent_id),
            span_id: ids.span_id,
            method,
            host,
            path,
            request_headers: headers,
            request_body: Captured::new(config.max_body_bytes),
            encoded_request: None,
            response_status: None,
            response_headers: Vec::new(),
            response_body: Captured::new(config.max_body_bytes),
            replied_locally: false,
            started_ns: now_ns,
            session_id,
        };
        exchange.apply(&edits);
        Some((exchange, edits))
    }

    /// Keeps the recorded request headers equal to what is forwarded.
    fn apply(&mut self, edits: &[HeaderEdit]) {
        for edit in edits {
            match edit {
                HeaderEdit::Set(name, value) => {
                    self.request_headers
                        .retain(|(n, _)| !n.eq_ignore_ascii_case(name));
                    self.request_headers
                        .push(((*name).to_owned(), value.clone()));
                }
                HeaderEdit::Remove(name) => self
                    .request_headers
                    .retain(|(n, _)| !n.eq_ignore_ascii_case(name)),
            }
        }
    }

    /// The session the request is tagged with.
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Whether a tagged inbound request's session could not be written to `tracestate`.
    pub fn session_unpropagated(&self) -> bool {
        self.direction == Direction::Inbound && !valid_session_id(&self.session_id)
    }

    /// Whether this stream is asked about (inject) and recorded (extract): tagged, and
    /// selected by the collection and exemption rules. Such a request is held until the
    /// runtime answers.
    pub fn selected(&self) -> bool {
        self.selected
    }

    /// How many bytes to read from a buffered request body of `total` bytes.
    pub fn request_body_wanted(&self, total: usize) -> usize {
        self.request_body.wanted(total)
    }

    /// Records the start of the complete request body (`total` bytes long).
    pub fn set_request_body(&mut self, prefix: &[u8], total: usize) {
        self.request_body.set(prefix, total);
        self.encoded_request = None;
    }

    /// The protobuf `TracesData` for the inject lookup. The request's attributes are kept for
    /// the extract span, which carries them too.
    pub fn inject_payload(&mut self, config: &Config, now_ns: u64) -> Vec<u8> {
        let request = self.request_attributes(config);
        let span = self.span(now_ns, now_ns, None);
        let payload = encode(&self.service_name, &span, &[&INJECT_TYPE, &request]);
        self.encoded_request = Some(request.into_owned());
        payload
    }

    /// Applies the runtime's answer: the verdict for the held request.
    pub fn decide(&mut self, config: &Config, answer: Answer) -> Verdict {
        let verdict = answer::verdict(answer, config.failure_mode);
        if matches!(verdict, Verdict::Reply(_)) {
            self.replied_locally = true;
        }
        verdict
    }

    /// Whether the response is worth recording: the request went upstream and is selected.
    pub fn records_response(&self) -> bool {
        self.selected && !self.replied_locally
    }

    /// Records the response headers (`:status` included).
    pub fn set_response_headers(&mut self, headers: Vec<(String, String)>) {
        self.response_status = header(&headers, ":status").and_then(|s| s.trim().parse().ok());
        self.response_headers = headers;
    }

    /// How many bytes of the next response chunk are worth reading.
    pub fn response_body_room(&self) -> usize {
        self.response_body.room()
    }

    /// Appends the start of a streamed response chunk of `len` bytes (kept up to
    /// `max_body_bytes`).
    pub fn push_response_body(&mut self, prefix: &[u8], len: usize) {
        self.response_body.push_prefix(prefix, len);
    }

    /// The protobuf `TracesData` for `/v1/traces`, once the response is complete; `None` when
    /// the exchange is not recorded (not selected, replied locally, no status).
    pub fn extract_payload(&self, config: &Config, now_ns: u64) -> Option<Vec<u8>> {
        let status = self.response_status.filter(|_| self.records_response())?;
        let mut attrs = Attributes::with_capacity(MESSAGE_ATTRIBUTES + self.response_headers.len());
        attrs.int(keys::RESPONSE_STATUS, i64::from(status));
        self.message_attributes(
            config,
            &mut attrs,
            &self.response_headers,
            &self.response_body,
            [
                keys::RESPONSE_HEADER_PREFIX,
                keys::RESPONSE_BODY,
                keys::RESPONSE_BODY_ENCODING,
                RESPONSE_BODY_TRUNCATED,
            ],
        );
        let code = if status >= 500 {
            status::StatusCode::Error
        } else {
            status::StatusCode::Ok
        };
        let request = self.request_attributes(config);
        Some(encode(
            &self.service_name,
            &self.span(self.started_ns, now_ns, Some(code)),
            &[&EXTRACT_TYPE, &request, &attrs],
        ))
    }

    /// The request's attributes: as the inject span carried them, or encoded now.
    fn request_attributes(&self, config: &Config) -> Cow<'_, Attributes> {
        if let Some(encoded) = &self.encoded_request {
            return Cow::Borrowed(encoded);
        }
        let mut attrs = Attributes::with_capacity(MESSAGE_ATTRIBUTES + self.request_headers.len());
        attrs
            .string(keys::SESSION_ID, self.session_id.as_str())
            .string(keys::DIRECTION, self.direction.as_str())
            .string(keys::SERVICE_NAME, self.service_name.as_str())
            .string(keys::REQUEST_METHOD, self.method.as_str())
            .string(keys::URL_HOST, self.host.as_str())
            .string(keys::URL_PATH, self.path.as_str());
        self.message_attributes(
            config,
            &mut attrs,
            &self.request_headers,
            &self.request_body,
            [
                keys::REQUEST_HEADER_PREFIX,
                keys::REQUEST_BODY,
                keys::REQUEST_BODY_ENCODING,
                REQUEST_BODY_TRUNCATED,
            ],
        );
        Cow::Owned(attrs)
    }

    /// Headers (minus pseudo-headers, which have their own attributes, and redacted names)
    /// and the body of one message. `keys` = header prefix, body, body encoding, truncated.
    fn message_attributes(
        &self,
        config: &Config,
        attrs: &mut Attributes,
        headers: &[(String, String)],
        body: &Captured,
        [prefix, body_key, encoding_key, truncated_key]: [&str; 4],
    ) {
        let mut seen: Vec<&str> = Vec::new();
        for (name, _) in headers {
            if name.starts_with(':')
                || config.is_redacted(name)
                || seen.iter().any(|s| s.eq_ignore_ascii_case(name))
            {
                continue;
            }
            seen.push(name);
            // Repeated headers travel as one comma-joined value, as HTTP allows.
            let mut values = header_values(headers, name);
            let first = values.next().unwrap_or_default();
            match values.next() {
                None => attrs.header(prefix, name, first),
                Some(second) => {
                    let all: Vec<&str> = [first, second].into_iter().chain(values).collect();
                    attrs.header(prefix, name, &all.join(","))
                }
            };
        }
        if !body.bytes().is_empty() {
            let (value, encoding) = body::encode(
                body.bytes(),
                header(headers, "content-type"),
                header(headers, "content-encoding"),
            );
            attrs.string(body_key, &value);
            if let Some(encoding) = encoding {
                attrs.string(encoding_key, encoding);
            }
        }
        if body.truncated() {
            attrs.bool(truncated_key, true);
        }
    }

    /// The span's fields besides its attributes.
    fn span(
        &self,
        start_ns: u64,
        end_ns: u64,
        status: Option<status::StatusCode>,
    ) -> SpanFields<'_> {
        let route = self.path.split('?').next().unwrap_or_default();
        SpanFields {
            trace_id: &self.trace_id,
            span_id: &self.span_id,
            parent_span_id: self.parent_span_id.as_ref(),
            name: if route.is_empty() {
                "unknown_path"
            } else {
                route
            },
            kind: match self.direction {
                Direction::Inbound => span::SpanKind::Server,
                Direction::Outbound => span::SpanKind::Client,
            },
            start_time_unix_nano: start_ns,
            end_time_unix_nano: end_ns.max(start_ns),
            status,
        }
    }
}

fn incoming_or(ids: Ids, incoming: Option<TraceParent>) -> [u8; 16] {
    incoming.map_or(ids.trace_id, |tp| tp.trace_id)
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::config::parse;
    use crate::proto::{KeyValue, TracesData, any_value};
    use crate::span::{int_attr, string_attr};
    use crate::trace_context::to_hex;

    const IDS: Ids = Ids {
        trace_id: [0x11; 16],
        span_id: [0x22; 8],
    };

    fn tagged(config: &Config, headers: Vec<(String, String)>) -> (Exchange, Vec<HeaderEdit>) {
        Exchange::begin(config, headers, || IDS, 7).expect("a tagged request")
    }

    fn config(extra: &str) -> Config {
        parse(&format!(
            r#"{{"sp_backend_url":"http://rt:8080","public_key":"pk-secret-123"{extra}}}"#
        ))
        .unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn get(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut all = headers(&[
            (":method", "GET"),
            (":authority", "app:8081"),
            (":path", "/hello?x=1"),
            (":scheme", "http"),
        ]);
        all.extend(headers(pairs));
        all
    }

    fn decode(bytes: &[u8]) -> (Vec<KeyValue>, crate::proto::Span) {
        let traces = TracesData::decode(bytes).unwrap();
        let rs = &traces.resource_spans[0];
        (
            rs.resource.clone().unwrap().attributes,
            rs.scope_spans[0].spans[0].clone(),
        )
    }

    #[test]
    fn inbound_writes_trace_context_and_keeps_the_header() {
        let config = config(r#","traffic_direction":"inbound""#);
        let (exchange, edits) = tagged(
            &config,
            get(&[
                ("x-softprobe-session-id", "sess_1"),
                ("tracestate", "rojo=1,x-softprobe-session-id=old"),
            ]),
        );
        assert_eq!(
            edits,
            vec![
                HeaderEdit::Set(
                    TRACEPARENT,
                    format!("00-{}-{}-01", "11".repeat(16), "22".repeat(8))
                ),
                HeaderEdit::Set(
                    TRACESTATE,
                    "x-softprobe-session-id=sess_1,rojo=1".to_owned()
                ),
            ]
        );
        assert_eq!(exchange.session_id(), "sess_1");
        assert!(exchange.selected());

        let incoming = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (mut exchange, edits) = tagged(
            &config,
            get(&[("x-softprobe-session-id", "s"), ("traceparent", incoming)]),
        );
        assert_eq!(
            edits,
            vec![HeaderEdit::Set(
                TRACESTATE,
                "x-softprobe-session-id=s".to_owned()
            )],
            "a valid traceparent stays"
        );
        let (_, span) = decode(&exchange.inject_payload(&config, 8));
        assert_eq!(to_hex(&span.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(to_hex(&span.parent_span_id), "b7ad6b7169203331");
        assert_eq!(span.span_id, vec![0x22; 8]);

        let (_, edits) = tagged(
            &config,
            get(&[("x-softprobe-session-id", "s"), ("traceparent", "junk")]),
        );
        assert!(
            matches!(&edits[0], HeaderEdit::Set(TRACEPARENT, v) if v.starts_with("00-1111")),
            "an invalid traceparent is replaced"
        );

        let (exchange, edits) = tagged(&config, get(&[("x-softprobe-session-id", "sess_abc==")]));
        assert_eq!(
            edits.len(),
            1,
            "an id that cannot travel in tracestate is not written there"
        );
        assert!(exchange.session_unpropagated() && exchange.selected());
    }

    #[test]
    fn untagged_requests_are_untouched() {
        let config = config(r#","traffic_direction":"inbound""#);
        let ids = || panic!("an untagged request needs no ids");
        assert!(Exchange::begin(&config, get(&[("tracestate", "rojo=1")]), ids, 7).is_none());
    }

    #[test]
    fn outbound_reads_tracestate_and_strips_the_header() {
        let config = config(r#","traffic_direction":"outbound""#);
        let (exchange, edits) = tagged(
            &config,
            get(&[("tracestate", "x-softprobe-session-id=sess_ts,rojo=1")]),
        );
        assert_eq!(exchange.session_id(), "sess_ts");
        assert_eq!(edits[1], HeaderEdit::Remove(SESSION_HEADER));
        let (mut exchange, edits) = tagged(
            &config,
            get(&[
                ("x-softprobe-session-id", "sess_h"),
                ("tracestate", "x-softprobe-session-id=sess_ts"),
            ]),
        );
        assert_eq!(exchange.session_id(), "sess_h", "the header wins");
        assert!(edits.contains(&HeaderEdit::Remove(SESSION_HEADER)));
        let (_, span) = decode(&exchange.inject_payload(&config, 8));
        assert!(
            string_attr(
                &span.attributes,
                "http.request.header.x-softprobe-session-id"
            )
            .is_none(),
            "recorded as forwarded"
        );
        assert_eq!(span.kind, i32::from(span::SpanKind::Client));
    }

    #[test]
    fn inject_span_content() {
        let config = config(
            r#","traffic_direction":"inbound","service_name":"checkout","redact_headers":["x-internal"]"#,
        );
        let mut request = get(&[
            ("x-softprobe-session-id", "sess_1"),
            ("authorization", "Bearer user-token"),
            ("cookie", "a=b"),
            ("x-api-key", "k"),
            ("x-internal", "secret"),
            ("content-type", "application/json"),
            ("accept", "a"),
            ("accept", "b"),
        ]);
        request[0].1 = "POST".into();
        let (mut exchange, _) = tagged(&config, request);
        exchange.set_request_body(b"{\"n\":1}", 7);
        let bytes = exchange.inject_payload(&config, 8);
        let (resource, span) = decode(&bytes);
        let a = &span.attributes;
        assert_eq!(
            string_attr(&resource, keys::RESOURCE_SERVICE_NAME),
            Some("checkout")
        );
        assert_eq!(string_attr(a, keys::SPAN_TYPE), Some("inject"));
        assert_eq!(string_attr(a, keys::SESSION_ID), Some("sess_1"));
        assert_eq!(string_attr(a, keys::DIRECTION), Some("inbound"));
        assert_eq!(string_attr(a, keys::SERVICE_NAME), Some("checkout"));
        assert_eq!(string_attr(a, keys::REQUEST_METHOD), Some("POST"));
        assert_eq!(string_attr(a, keys::URL_HOST), Some("app:8081"));
        assert_eq!(string_attr(a, keys::URL_PATH), Some("/hello?x=1"));
        assert_eq!(
            string_attr(a, "http.request.header.content-type"),
            Some("application/json")
        );
        assert_eq!(string_attr(a, "http.request.header.accept"), Some("a,b"));
        assert_eq!(
            string_attr(a, "http.request.header.tracestate"),
            Some("x-softprobe-session-id=sess_1")
        );
        assert_eq!(string_attr(a, keys::REQUEST_BODY), Some("{\"n\":1}"));
        assert!(string_attr(a, keys::REQUEST_BODY_ENCODING).is_none());
        for gone in [
            "authorization",
            "cookie",
            "x-api-key",
            "x-internal",
            ":method",
            ":path",
        ] {
            assert!(
                string_attr(a, &format!("http.request.header.{gone}")).is_none(),
                "{gone}"
            );
        }
        assert_eq!(span.name, "/hello");
        assert_eq!(span.kind, i32::from(span::SpanKind::Server));
        assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (8, 8));
        let leaked = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
        assert!(!leaked(b"pk-secret-123"), "the API key never enters a span");
        assert!(!leaked(b"user-token") && !leaked(b"secret"));
    }

    #[test]
    fn binary_and_truncated_bodies() {
        let config = config(r#","traffic_direction":"outbound","max_body_bytes":4"#);
        let (mut exchange, _) = tagged(
            &config,
            get(&[
                ("x-softprobe-session-id", "s"),
                ("content-type", "application/octet-stream"),
            ]),
        );
        assert_eq!(exchange.request_body_wanted(10), 4);
        exchange.set_request_body(&[0, 1, 2, 3], 10);
        let (_, span) = decode(&exchange.inject_payload(&config, 8));
        assert_eq!(
            string_attr(&span.attributes, keys::REQUEST_BODY),
            Some("AAECAw==")
        );
        assert_eq!(
            string_attr(&span.attributes, keys::REQUEST_BODY_ENCODING),
            Some("base64")
        );
        let truncated = span
            .attributes
            .iter()
            .find(|kv| kv.key == REQUEST_BODY_TRUNCATED)
            .unwrap();
        assert_eq!(
            truncated.value.as_ref().unwrap().value,
            Some(any_value::Value::BoolValue(true))
        );

        exchange.set_response_headers(headers(&[
            (":status", "200"),
            ("content-type", "text/plain"),
            ("set-cookie", "x"),
        ]));
        exchange.push_response_body(b"hel", 3);
        exchange.push_response_body(b"l", 3);
        let (_, span) = decode(&exchange.extract_payload(&config, 9).unwrap());
        let a = &span.attributes;
        assert_eq!(string_attr(a, keys::RESPONSE_BODY), Some("hell"));
        assert!(a.iter().any(|kv| kv.key == RESPONSE_BODY_TRUNCATED));
        assert!(string_attr(a, "http.response.header.set-cookie").is_none());
    }

    /// The extract span reuses the request attributes the inject span was built with, and
    /// carries exactly what encoding them afresh would, a body read after the lookup included.
    #[test]
    fn the_extract_span_carries_the_request_as_the_inject_span_did() {
        let config = config(r#","traffic_direction":"inbound""#);
        let request = get(&[
            ("x-softprobe-session-id", "s"),
            ("x-a", "1"),
            ("content-type", "text/plain"),
        ]);
        let respond = |exchange: &mut Exchange| {
            assert_eq!(exchange.decide(&config, Answer::Miss), Verdict::Resume);
            exchange.set_response_headers(headers(&[(":status", "200")]));
            exchange.extract_payload(&config, 9).unwrap()
        };
        let (mut asked, _) = tagged(&config, request.clone());
        asked.inject_payload(&config, 8);
        let (mut fresh, _) = tagged(&config, request.clone());
        assert_eq!(respond(&mut asked), respond(&mut fresh));

        let (mut late_body, _) = tagged(&config, request);
        late_body.inject_payload(&config, 8);
        late_body.set_request_body(b"late", 4);
        let (_, span) = decode(&respond(&mut late_body));
        assert_eq!(
            string_attr(&span.attributes, keys::REQUEST_BODY),
            Some("late")
        );
        assert_eq!(
            string_attr(&span.attributes, "http.request.header.x-a"),
            Some("1")
        );
    }

    #[test]
    fn extract_after_a_real_response_only() {
        let config = config(r#","traffic_direction":"inbound","failure_mode":"closed""#);
        let (mut exchange, _) = tagged(&config, get(&[("x-softprobe-session-id", "s")]));
        assert_eq!(exchange.decide(&config, Answer::Miss), Verdict::Resume);
        exchange.set_response_headers(headers(&[
            (":status", "503"),
            ("content-type", "application/json"),
        ]));
        exchange.push_response_body(b"{}", 2);
        let (_, span) = decode(&exchange.extract_payload(&config, 9).unwrap());
        let a = &span.attributes;
        assert_eq!(string_attr(a, keys::SPAN_TYPE), Some("extract"));
        assert_eq!(int_attr(a, keys::RESPONSE_STATUS), Some(503));
        assert_eq!(
            string_attr(a, "http.response.header.content-type"),
            Some("application/json")
        );
        assert!(string_attr(a, "http.response.header.:status").is_none());
        assert_eq!(string_attr(a, keys::RESPONSE_BODY), Some("{}"));
        assert_eq!(string_attr(a, keys::REQUEST_METHOD), Some("GET"));
        assert_eq!((span.start_time_unix_nano, span.end_time_unix_nano), (7, 9));
        assert_eq!(
            span.status.unwrap().code,
            i32::from(status::StatusCode::Error)
        );

        let (mut mocked, _) = tagged(&config, get(&[("x-softprobe-session-id", "s")]));
        assert!(
            matches!(mocked.decide(&config, Answer::Failure("down".into())), Verdict::Reply(r) if r.status == 502)
        );
        mocked.set_response_headers(headers(&[(":status", "502")]));
        assert!(!mocked.records_response());
        assert!(
            mocked.extract_payload(&config, 9).is_none(),
            "a local reply is never uploaded"
        );

        let (exempt, _) = tagged(
            &config,
            headers(&[(":path", "/v1/traces"), ("x-softprobe-session-id", "s")]),
        );
        assert!(
            !exempt.selected() && !exempt.records_response(),
            "exempted traffic is neither injected nor extracted"
        );
    }
}
