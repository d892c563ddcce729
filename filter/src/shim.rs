//! The proxy-wasm host shim: the one place that talks to Envoy. It moves headers and bodies
//! into [`Exchange`] and applies its decisions. It never panics on its own: invalid config
//! fails `on_configure`, runtime trouble is logged and the request continues (or gets a 502
//! when failing closed).
//!
//! Host calls go through `proxy_wasm::hostcalls` (which return `Result`) rather than the
//! trait helpers (which unwrap).

use std::rc::Rc;
use std::time::UNIX_EPOCH;

use log::{debug, error, info, warn};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType};

use crate::answer::{self, Answer, Verdict};
use crate::config::{self, BackendProtocol, Config};
use crate::exchange::{Exchange, HeaderEdit};
use crate::trace_context::{self, Ids, SESSION_HEADER, TRACESTATE};

const INJECT_PATH: &str = "/v1/inject";
const TRACES_PATH: &str = "/v1/traces";
const PROTOBUF: &str = "application/x-protobuf";
const GRPC_SERVICE: &str = "softprobe.v1.InjectService";
const GRPC_METHOD: &str = "Inject";

proxy_wasm::main! {{
    // Until configured, the host filters the lines (see `follow_host_log_level`).
    proxy_wasm::set_log_level(LogLevel::Debug);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { config: None }) });
}}

/// The plugin: holds the validated configuration and creates one [`Stream`] per request.
struct Root {
    config: Option<Rc<Config>>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, plugin_configuration_size: usize) -> bool {
        follow_host_log_level();
        let bytes = match hostcalls::get_buffer(
            BufferType::PluginConfiguration,
            0,
            plugin_configuration_size,
        ) {
            Ok(bytes) => bytes.unwrap_or_default(),
            Err(status) => {
                error!(
                    "softprobe: cannot read the plugin configuration ({status:?}); the filter is not loaded"
                );
                return false;
            }
        };
        match config::parse_bytes(&bytes) {
            Ok(config) => {
                info!(
                    "softprobe: direction={} cluster={} protocol={:?} failure_mode={:?}: configured",
                    config.direction.as_str(),
                    config.backend.cluster,
                    config.backend.protocol,
                    config.failure_mode
                );
                self.config = Some(Rc::new(config));
                true
            }
            Err(err) => {
                error!("softprobe: invalid plugin configuration: {err}; the filter is not loaded");
                false
            }
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream {
            config: self.config.clone(),
            exchange: None,
            phase: Phase::Passthrough,
            buffered_request_bytes: 0,
            inject_token: None,
            extract_token: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Not ours (untagged, not selected, unconfigured): every callback continues.
    Passthrough,
    /// Selected; the request is held while its body is buffered.
    AwaitingBody,
    /// Selected; the request is held until the runtime answers.
    AwaitingAnswer,
    /// The request went upstream; the response is recorded.
    Forwarded,
    /// Answered locally; nothing more to do.
    Replied,
    /// The extract upload has been dispatched.
    Uploaded,
}

/// One HTTP stream.
struct Stream {
    config: Option<Rc<Config>>,
    exchange: Option<Exchange>,
    phase: Phase,
    buffered_request_bytes: usize,
    inject_token: Option<u32>,
    extract_token: Option<u32>,
}

impl Stream {
    fn session(&self) -> &str {
        self.exchange.as_ref().map_or("-", Exchange::session_id)
    }

    /// Reads the buffered request body, then asks the runtime.
    fn finish_request(&mut self, total: usize) -> Action {
        if let Some(exchange) = self.exchange.as_mut() {
            let wanted = exchange.request_body_wanted(total);
            match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, wanted) {
                Ok(prefix) => exchange.set_request_body(&prefix.unwrap_or_default(), total),
                Err(status) => {
                    warn!(
                        "softprobe: session={}: cannot read the request body ({status:?})",
                        self.session()
                    );
                    if let Some(exchange) = self.exchange.as_mut() {
                        exchange.set_request_body(&[], total);
                    }
                }
            }
        }
        self.ask_runtime()
    }

    /// Dispatches the inject lookup and holds the request (or applies the failure policy when
    /// the dispatch itself fails). Runs inside a request callback.
    fn ask_runtime(&mut self) -> Action {
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_mut()) else {
            return Action::Continue;
        };
        let payload = exchange.inject_payload(&config, now_ns());
        let backend = &config.backend;
        let bearer = backend
            .api_key
            .as_ref()
            .map(|key| format!("Bearer {}", key.expose()));
        let dispatched = match backend.protocol {
            BackendProtocol::Http => {
                let length = payload.len().to_string();
                let mut headers = vec![
                    (":method", "POST"),
                    (":path", INJECT_PATH),
                    (":authority", backend.authority.as_str()),
                    ("accept", PROTOBUF),
                    ("content-type", PROTOBUF),
                    ("content-length", length.as_str()),
                ];
                if let Some(bearer) = &bearer {
                    headers.push(("authorization", bearer.as_str()));
                }
                hostcalls::dispatch_http_call(
                    &backend.cluster,
                    headers,
                    Some(&payload),
                    Vec::new(),
                    backend.timeout,
                )
                .map_err(|status| format!("cannot call cluster {:?} ({status:?})", backend.cluster))
            }
            BackendProtocol::Grpc => {
                let metadata = bearer
                    .as_ref()
                    .map(|b| vec![("authorization", b.as_bytes())])
                    .unwrap_or_default();
                hostcalls::dispatch_grpc_call(
                    &backend.grpc_cluster,
                    GRPC_SERVICE,
                    GRPC_METHOD,
                    metadata,
                    Some(&payload),
                    backend.timeout,
                )
                .map_err(|status| {
                    format!(
                        "cannot call gRPC cluster {:?} ({status:?})",
                        backend.grpc_cluster
                    )
                })
            }
        };
        match dispatched {
            Ok(token) => {
                self.inject_token = Some(token);
                self.phase = Phase::AwaitingAnswer;
                Action::Pause
            }
            Err(reason) => self.conclude(Answer::Failure(reason), true),
        }
    }

    /// Applies the runtime's answer. `in_callback`: still inside a request callback, where
    /// continuing is the callback's return value rather than a resume call.
    fn conclude(&mut self, answer: Answer, in_callback: bool) -> Action {
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_mut()) else {
            return Action::Continue;
        };
        let session = exchange.session_id();
        match &answer {
            Answer::Hit(reply) => debug!(
                "softprobe: session={session} decision={} rule={} status={}: replying locally",
                reply.decision.as_deref().unwrap_or("-"),
                reply.rule.as_deref().unwrap_or("-"),
                reply.status
            ),
            Answer::Miss => debug!("softprobe: session={session}: miss, forwarding upstream"),
            Answer::Failure(reason) => warn!(
                "softprobe: session={session} failure_mode={:?}: inject lookup failed: {reason}",
                config.failure_mode
            ),
        }
        match exchange.decide(&config, answer) {
            Verdict::Resume => {
                self.phase = Phase::Forwarded;
                if in_callback {
                    return Action::Continue;
                }
                if let Err(status) = hostcalls::resume_http_request() {
                    error!(
                        "softprobe: session={}: cannot resume the request ({status:?})",
                        self.session()
                    );
                }
                Action::Continue
            }
            Verdict::Reply(reply) => {
                self.phase = Phase::Replied;
                let headers = reply
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_str()))
                    .collect();
                let body = (!reply.body.is_empty()).then_some(reply.body.as_slice());
                if let Err(status) = hostcalls::send_http_response(reply.status, headers, body) {
                    error!(
                        "softprobe: session={}: cannot send the local reply ({status:?})",
                        self.session()
                    );
                }
                Action::Pause
            }
        }
    }

    /// Dispatches the extract upload once the response is complete.
    fn upload(&mut self) {
        if self.phase != Phase::Forwarded {
            return;
        }
        self.phase = Phase::Uploaded;
        let (Some(config), Some(exchange)) = (self.config.clone(), self.exchange.as_ref()) else {
            return;
        };
        let Some(payload) = exchange.extract_payload(&config, now_ns()) else {
            return;
        };
        let backend = &config.backend;
        let bearer = backend
            .api_key
            .as_ref()
            .map(|key| format!("Bearer {}", key.expose()));
        let length = payload.len().to_string();
        let mut headers = vec![
            (":method", "POST"),
            (":path", TRACES_PATH),
            (":authority", backend.authority.as_str()),
            ("content-type", PROTOBUF),
            ("content-length", length.as_str()),
        ];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        match hostcalls::dispatch_http_call(
            &backend.cluster,
            headers,
            Some(&payload),
            Vec::new(),
            backend.timeout,
        ) {
            Ok(token) => self.extract_token = Some(token),
            Err(status) => {
                warn!(
                    "softprobe: session={}: cannot upload to cluster {:?} ({status:?})",
                    self.session(),
                    backend.cluster
                );
            }
        }
    }

    fn recording(&self) -> bool {
        self.phase == Phase::Forwarded
            && self
                .exchange
                .as_ref()
                .is_some_and(Exchange::records_response)
    }
}

impl Context for Stream {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        if self.inject_token == Some(token_id) {
            self.inject_token = None;
            let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.conclude(answer::from_http(status.as_deref(), &body), false);
        } else if self.extract_token == Some(token_id) {
            self.extract_token = None;
            match status.as_deref() {
                Some(s) if s.starts_with('2') => {
                    debug!("softprobe: session={}: exchange uploaded", self.session())
                }
                other => warn!(
                    "softprobe: session={}: upload answered {}",
                    self.session(),
                    other.unwrap_or("nothing (timeout or connection failure)")
                ),
            }
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        if self.inject_token == Some(token_id) {
            self.inject_token = None;
            let body = hostcalls::get_buffer(BufferType::GrpcReceiveBuffer, 0, response_size)
                .ok()
                .flatten()
                .unwrap_or_default();
            self.conclude(answer::from_grpc(status_code, &body), false);
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(config) = self.config.clone() else {
            return Action::Continue;
        };
        let tagged = trace_context::may_be_tagged(
            request_header(SESSION_HEADER).as_deref(),
            request_header(TRACESTATE).as_deref(),
        );
        if !tagged {
            return Action::Continue;
        }
        let headers = match header_map(MapType::HttpRequestHeaders) {
            Ok(headers) => headers,
            Err(status) => {
                warn!("softprobe: cannot read the request headers ({status:?}); passing through");
                return Action::Continue;
            }
        };
        let Some((exchange, edits)) = Exchange::begin(&config, headers, random_ids, now_ns())
        else {
            return Action::Continue;
        };
        for edit in &edits {
            let applied = match edit {
                HeaderEdit::Set(name, value) => {
                    hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value))
                }
                HeaderEdit::Remove(name) => {
                    hostcalls::remove_map_value(MapType::HttpRequestHeaders, name)
                }
            };
            if let Err(status) = applied {
                warn!("softprobe: cannot rewrite the request headers ({status:?})");
            }
        }
        if exchange.session_unpropagated() {
            warn!(
                "softprobe: session={}: the id is not valid in a W3C tracestate (printable ASCII without ',' '=' ' ', \
                 at most 256 chars); it is not propagated to outbound calls",
                exchange.session_id()
            );
        }
        let selected = exchange.selected();
        self.exchange = Some(exchange);
        if !selected {
            return Action::Continue;
        }
        if end_of_stream {
            return self.ask_runtime();
        }
        // Hold the headers too, so a mocked request never reaches the real upstream.
        self.phase = Phase::AwaitingBody;
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::AwaitingBody {
            return Action::Continue;
        }
        if !end_of_stream {
            // Pause on a body chunk = StopIterationAndBuffer: Envoy keeps accumulating.
            self.buffered_request_bytes = body_size;
            return Action::Pause;
        }
        self.finish_request(body_size)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.phase != Phase::AwaitingBody {
            return Action::Continue;
        }
        self.finish_request(self.buffered_request_bytes)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        if !self.recording() {
            return Action::Continue;
        }
        match header_map(MapType::HttpResponseHeaders) {
            Ok(headers) => {
                if let Some(exchange) = self.exchange.as_mut() {
                    exchange.set_response_headers(headers);
                }
            }
            Err(status) => {
                warn!(
                    "softprobe: session={}: cannot read the response headers ({status:?})",
                    self.session()
                );
                self.phase = Phase::Uploaded;
                return Action::Continue;
            }
        }
        if end_of_stream {
            self.upload();
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.recording() {
            return Action::Continue;
        }
        // Responses stream (Continue): each callback sees only the new chunk.
        if let Some(exchange) = self.exchange.as_mut() {
            let wanted = body_size.min(exchange.response_body_room());
            let prefix = if wanted == 0 {
                Vec::new()
            } else {
                hostcalls::get_buffer(BufferType::HttpResponseBody, 0, wanted)
                    .ok()
                    .flatten()
                    .unwrap_or_default()
            };
            exchange.push_response_body(&prefix, body_size);
        }
        if end_of_stream {
            self.upload();
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        if self.recording() {
            self.upload();
        }
        Action::Continue
    }
}

/// A request header's first value, without copying the whole map out of the host.
fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(lossy)
}

/// A header map with its values read as bytes: Envoy passes obs-text (bytes above 0x7F) in
/// values, on which the SDK's `String` readers panic.
fn header_map(map: MapType) -> Result<Vec<(String, String)>, proxy_wasm::types::Status> {
    hostcalls::get_map_bytes(map).map(|pairs| {
        pairs
            .into_iter()
            .map(|(name, value)| (name, lossy(value)))
            .collect()
    })
}

/// Text from header bytes; anything not UTF-8 becomes U+FFFD.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes)
        .unwrap_or_else(|err| String::from_utf8_lossy(err.as_bytes()).into_owned())
}

/// Logs from the host's level up: a line the host would drop is not even formatted (the
/// debug line of every mocked request was 2 % of a mocked hop's instructions). Read once per
/// configuration, so a level changed later applies from the next one. The SDK's
/// `get_log_level` panics on a host without the call and reads its answer straight into an
/// enum; this keeps debug there and ignores a level it does not know, hence its own import.
#[allow(unsafe_code)] // one host import, called with a valid out-pointer
fn follow_host_log_level() {
    #[link(wasm_import_module = "env")]
    unsafe extern "C" {
        fn proxy_get_log_level(level: *mut u32) -> u32;
    }
    const OK: u32 = 0;
    let mut level = u32::MAX;
    // SAFETY: the host writes one u32 to the pointer it is given, which is valid and aligned.
    let status = unsafe { proxy_get_log_level(&mut level) };
    let level = match (status, level) {
        (OK, 0) => LogLevel::Trace,
        (OK, 1) => LogLevel::Debug,
        (OK, 2) => LogLevel::Info,
        (OK, 3) => LogLevel::Warn,
        // Errors always reach the host: a refused configuration must be explained.
        (OK, 4 | 5) => LogLevel::Error,
        _ => LogLevel::Debug,
    };
    proxy_wasm::set_log_level(level);
}

fn now_ns() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Ids from WASI `random_get`; if the host has none, a splitmix64 stream seeded by the clock
/// and a counter (unique per VM, not unpredictable, which ids need not be).
fn random_ids() -> Ids {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        thread_local! {
            static COUNTER: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
        }
        let count = COUNTER.with(|c| {
            c.set(c.get().wrapping_add(1));
            c.get()
        });
        let mut state = now_ns() ^ count.rotate_left(32);
        for chunk in bytes.chunks_mut(8) {
            state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
    }
    Ids::from_random(bytes)
}
