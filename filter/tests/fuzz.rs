//! Property tests ("fuzzing" on the stable toolchain, with proptest) of the filter's pure core on
//! what reaches it from outside: the plugin configuration, request and response headers and
//! bodies, and the runtime's answers. Nothing may panic there (the shim would take Envoy's
//! worker down with it), and a valid configuration must mean what it says.
//!
//! Seeds come from `testdata/fuzz/` (see `testdata/README.md`). Each property runs a bounded
//! number of cases; `PROPTEST_CASES` overrides them all for longer runs by hand. A failing input
//! is printed in full: minimized, it belongs in `testdata/fuzz/regressions/`, which every run
//! replays.

#![allow(clippy::unwrap_used)] // a test fails loudly on the first surprise

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::LazyLock;
use std::time::Duration;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use prost::Message as _;
use serde_json::{Value, json};
use softprobe_filter::answer::{self, Answer, LocalReply, Verdict};
use softprobe_filter::body::{self, Captured};
use softprobe_filter::config::{self, BackendProtocol, Config, Direction, FailureMode};
use softprobe_filter::exchange::{Exchange, HeaderEdit};
use softprobe_filter::proto::{Span, TracesData};
use softprobe_filter::span::{Attributes, SpanFields, encode, int_attr, string_attr};
use softprobe_filter::trace_context::{
    Ids, SESSION_HEADER, TRACEPARENT, TRACESTATE, TraceParent, format_traceparent, session_id,
};
use softprobe_otlp::{keys, tracestate_session, valid_session_id};

// ---------------------------------------------------------------------------------------------
// Settings and corpus

/// The settings of a property that runs `cases` cases by default; `PROPTEST_CASES`, when set,
/// replaces every default. Failure persistence is off: proptest would keep an RNG seed next to
/// this file, which names no input and goes stale when a strategy changes; failures are kept
/// as inputs under `testdata/fuzz/regressions/` instead.
fn settings(cases: u32) -> ProptestConfig {
    let cases = if std::env::var_os("PROPTEST_CASES").is_some() {
        ProptestConfig::default().cases
    } else {
        cases
    };
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn corpus(dir: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/fuzz")
        .join(dir)
}

/// The files of a corpus directory whose name ends with `suffix`, sorted by name.
fn files(dir: &str, suffix: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus(dir);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| path.file_name().unwrap().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(suffix))
        .map(|name| {
            let bytes = std::fs::read(dir.join(&name)).unwrap();
            (name, bytes)
        })
        .collect();
    files.sort();
    files
}

/// Plugin configurations, and OTLP protobuf documents (the runtime's hits among them).
static CONFIGS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    files("filter", ".json")
        .into_iter()
        .map(|(_, b)| b)
        .collect()
});
static ANSWERS: LazyLock<Vec<Vec<u8>>> =
    LazyLock::new(|| files("otlp", ".pb").into_iter().map(|(_, b)| b).collect());

/// The seed configurations, parsed once.
static CONFIG_VALUES: LazyLock<Vec<Config>> = LazyLock::new(|| {
    CONFIGS
        .iter()
        .map(|bytes| config::parse_bytes(bytes).unwrap())
        .collect()
});

// ---------------------------------------------------------------------------------------------
// Inputs

/// Bytes under test, shown as hex and as text when a property fails.
#[derive(Clone, PartialEq, Eq)]
struct Input(Vec<u8>);

impl fmt::Debug for Input {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        write!(
            f,
            "Input({} bytes, hex {hex}, text {:?})",
            self.0.len(),
            String::from_utf8_lossy(&self.0)
        )
    }
}

/// One byte-level change: overwrite, flip a bit, insert, remove, truncate.
#[derive(Debug, Clone)]
enum Mutation {
    Overwrite(Index, u8),
    FlipBit(Index, u8),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
}

fn mutation(byte: BoxedStrategy<u8>) -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(at, b)| Mutation::Overwrite(at, b)),
        (any::<Index>(), 0..8u8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), byte).prop_map(|(at, b)| Mutation::Insert(at, b)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
    ]
}

fn mutate(mut body: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for mutation in mutations {
        let len = body.len();
        match mutation {
            Mutation::Overwrite(at, byte) if len > 0 => body[at.index(len)] = *byte,
            Mutation::FlipBit(at, bit) if len > 0 => body[at.index(len)] ^= 1u8 << *bit,
            Mutation::Insert(at, byte) => body.insert(at.index(len + 1), *byte),
            Mutation::Remove(at) if len > 0 => {
                body.remove(at.index(len));
            }
            Mutation::Truncate(at) => body.truncate(at.index(len + 1)),
            _ => {}
        }
    }
    body
}

/// Strings the filter treats specially.
const WORDS: &[&str] = &[
    "",
    " ",
    "inbound",
    "outbound",
    "server",
    "egress",
    "auto",
    "open",
    "closed",
    "http",
    "grpc",
    "http://softprobe-runtime:8080",
    "https://[::1]:8443",
    "http://h:99999",
    "http://user@h",
    "ftp://x",
    "http://",
    "http://x/api",
    ".*",
    "^/api/",
    "(?i)refunds",
    "(",
    "[",
    "*",
    "\\",
    "a{99999}",
    "/v1/traces",
    "x-custom",
    "ünïcode",
];

/// Keys of the plugin configuration.
const CONFIG_KEYS: &[&str] = &[
    "traffic_direction",
    "sp_backend_url",
    "backend_cluster",
    "grpc_backend_cluster",
    "backend_protocol",
    "timeout_ms",
    "failure_mode",
    "service_name",
    "public_key",
    "api_key",
    "collectionRules",
    "http",
    "server",
    "client",
    "host",
    "path",
    "paths",
    "exemptionRules",
    "hostPatterns",
    "pathPatterns",
    "max_body_bytes",
    "redact_headers",
];

fn text() -> BoxedStrategy<String> {
    prop_oneof![
        4 => select(WORDS).prop_map(str::to_owned),
        2 => "[ -~]{0,12}",
        1 => ".{0,6}",
    ]
    .boxed()
}

fn json_value(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        prop_oneof![
            Just(json!(0)),
            Just(json!(-1)),
            Just(json!(16)),
            Just(json!(1.5)),
            Just(json!(u64::MAX)),
            any::<i64>().prop_map(|n| json!(n)),
        ],
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        let key = prop_oneof![4 => select(CONFIG_KEYS).prop_map(str::to_owned), 1 => text()];
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Value::Array),
            vec((key, inner), 0..5)
                .prop_map(|members| Value::Object(members.into_iter().collect())),
        ]
    })
    .boxed()
}

/// One change to a JSON tree at a node picked by index: replace it, or add a member to it.
#[derive(Debug, Clone)]
enum Edit {
    Replace(Index, Value),
    Add(Index, String, Value),
}

fn edit() -> BoxedStrategy<Edit> {
    let key = prop_oneof![4 => select(CONFIG_KEYS).prop_map(str::to_owned), 1 => text()];
    prop_oneof![
        (any::<Index>(), json_value(2)).prop_map(|(at, value)| Edit::Replace(at, value)),
        (any::<Index>(), key, json_value(2)).prop_map(|(at, key, value)| Edit::Add(at, key, value)),
    ]
    .boxed()
}

fn count(value: &Value) -> usize {
    1 + match value {
        Value::Array(items) => items.iter().map(count).sum(),
        Value::Object(map) => map.values().map(count).sum(),
        _ => 0,
    }
}

fn nth_mut<'a>(value: &'a mut Value, n: &mut usize) -> Option<&'a mut Value> {
    if *n == 0 {
        return Some(value);
    }
    *n -= 1;
    match value {
        Value::Array(items) => items.iter_mut().find_map(|item| nth_mut(item, n)),
        Value::Object(map) => map.values_mut().find_map(|item| nth_mut(item, n)),
        _ => None,
    }
}

fn apply_edits(mut root: Value, edits: &[Edit]) -> Value {
    for edit in edits {
        let (Edit::Replace(at, _) | Edit::Add(at, ..)) = edit;
        let mut n = at.index(count(&root));
        let node = nth_mut(&mut root, &mut n).unwrap();
        match (edit, node) {
            (Edit::Add(_, key, value), Value::Object(map)) => {
                map.insert(key.clone(), value.clone());
            }
            (Edit::Add(_, _, value) | Edit::Replace(_, value), node) => *node = value.clone(),
        }
    }
    root
}

/// Configurations: mutated and edited seeds and valid generated ones, random trees, random
/// bytes.
fn config_input() -> BoxedStrategy<Input> {
    let seeds: &'static [Vec<u8>] = &CONFIGS;
    let trees: Vec<Value> = seeds
        .iter()
        .map(|seed| serde_json::from_slice(seed).unwrap())
        .collect();
    let json_byte = || {
        const ALPHABET: &[u8] = br#"{}[]":,.-0123456789eEnulltrue\/ubfnrt*()^$?|+ "#;
        prop_oneof![9 => select(ALPHABET), 1 => any::<u8>()].boxed()
    };
    prop_oneof![
        3 => (any::<Index>(), vec(mutation(json_byte()), 1..3))
            .prop_map(move |(seed, mutations)| {
                Input(mutate(seeds[seed.index(seeds.len())].clone(), &mutations))
            }),
        3 => (select(trees), vec(edit(), 1..3))
            .prop_map(|(tree, edits)| Input(apply_edits(tree, &edits).to_string().into_bytes())),
        3 => (model(), vec(edit(), 0..2))
            .prop_map(|(model, edits)| {
                Input(apply_edits(model.json(), &edits).to_string().into_bytes())
            }),
        1 => json_value(4).prop_map(|value| Input(value.to_string().into_bytes())),
        1 => vec(any::<u8>(), 0..48).prop_map(Input),
    ]
    .boxed()
}

/// A valid configuration, as written, with what it must mean.
#[derive(Debug, Clone)]
struct Model {
    direction: (&'static str, Direction),
    url: (&'static str, String, u16),
    service_name: Option<String>,
    backend_cluster: Option<String>,
    grpc_backend_cluster: Option<String>,
    protocol: Option<(&'static str, BackendProtocol)>,
    timeout_ms: Option<u64>,
    failure_mode: Option<(&'static str, FailureMode)>,
    max_body_bytes: Option<usize>,
    keys: (Option<String>, Option<String>),
    redact_headers: Vec<String>,
    server: Vec<String>,
    client: Vec<(String, Option<Vec<String>>)>,
    exemptions: Option<Vec<Exemption>>,
}

/// An exemption rule as written: host patterns and path patterns, each possibly absent.
type Exemption = (Option<Vec<String>>, Option<Vec<String>>);

/// Patterns that compile, plain or regex-escaped text.
fn pattern() -> BoxedStrategy<String> {
    prop_oneof![
        select(
            &[
                ".*",
                "^/api/",
                "^/v1/charges",
                "(?i)refunds",
                "^payments\\.example$",
                "^geo\\.",
                "health",
                "",
                "[0-9]+$",
                "^internal",
            ][..]
        )
        .prop_map(str::to_owned),
        text().prop_map(|text| regex_lite::escape(&text)),
    ]
    .boxed()
}

fn model() -> impl Strategy<Value = Model> {
    let direction = select(
        &[
            ("inbound", Direction::Inbound),
            ("server", Direction::Inbound),
            ("ingress", Direction::Inbound),
            ("outbound", Direction::Outbound),
            ("client", Direction::Outbound),
            ("egress", Direction::Outbound),
        ][..],
    );
    let url = (
        select(&["http", "https", "HTTP"][..]),
        select(&["softprobe-runtime", "Runtime.Example", "[::1]", "10.0.0.7"][..]),
        proptest::option::of(1..=u16::MAX),
    )
        .prop_map(|(scheme, host, port)| {
            let default = if scheme.eq_ignore_ascii_case("https") {
                443
            } else {
                80
            };
            let authority = port.map_or(host.to_owned(), |port| format!("{host}:{port}"));
            (scheme, authority, port.unwrap_or(default))
        });
    let name = || proptest::option::of("[ -~]{0,10}");
    let backend = (
        name(),
        proptest::option::of("[!-~]{1,10}"),
        proptest::option::of("[!-~]{1,10}"),
        proptest::option::of(select(
            &[
                ("http", BackendProtocol::Http),
                ("grpc", BackendProtocol::Grpc),
            ][..],
        )),
        proptest::option::of(1..=u64::MAX),
        proptest::option::of(select(
            &[("open", FailureMode::Open), ("closed", FailureMode::Closed)][..],
        )),
        proptest::option::of(any::<usize>()),
        (name(), name()),
    );
    let rules = (
        vec("[!-~]{1,8}( )?", 0..3),
        vec(pattern(), 0..3),
        vec(
            (pattern(), proptest::option::of(vec(pattern(), 0..3))),
            0..3,
        ),
        proptest::option::of(vec(
            (
                proptest::option::of(vec(pattern(), 0..2)),
                proptest::option::of(vec(pattern(), 1..3)),
            ),
            0..3,
        )),
    );
    (direction, url, backend, rules).prop_map(
        |(
            direction,
            (scheme, authority, port),
            (service_name, cluster, grpc, protocol, timeout, failure, max_body, keys),
            (redact_headers, server, client, exemptions),
        )| Model {
            direction,
            url: (scheme, authority, port),
            service_name,
            backend_cluster: cluster,
            grpc_backend_cluster: grpc,
            protocol,
            timeout_ms: timeout,
            failure_mode: failure,
            max_body_bytes: max_body,
            keys,
            redact_headers,
            server,
            client,
            exemptions,
        },
    )
}

impl Model {
    fn json(&self) -> Value {
        let mut config = json!({
            "traffic_direction": self.direction.0,
            "sp_backend_url": format!("{}://{}", self.url.0, self.url.1),
            "redact_headers": self.redact_headers,
            "collectionRules": {"http": {
                "server": self.server.iter().map(|path| json!({"path": path})).collect::<Vec<_>>(),
                "client": self.client.iter().map(|(host, paths)| match paths {
                    Some(paths) => json!({"host": host, "paths": paths}),
                    None => json!({"host": host}),
                }).collect::<Vec<_>>(),
            }},
        });
        let map = config.as_object_mut().unwrap();
        let mut set = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                map.insert(key.to_owned(), value);
            }
        };
        set("service_name", self.service_name.clone().map(Value::from));
        set(
            "backend_cluster",
            self.backend_cluster.clone().map(Value::from),
        );
        set(
            "grpc_backend_cluster",
            self.grpc_backend_cluster.clone().map(Value::from),
        );
        set("backend_protocol", self.protocol.map(|p| p.0.into()));
        set("timeout_ms", self.timeout_ms.map(Value::from));
        set("failure_mode", self.failure_mode.map(|f| f.0.into()));
        set("max_body_bytes", self.max_body_bytes.map(Value::from));
        set("public_key", self.keys.0.clone().map(Value::from));
        set("api_key", self.keys.1.clone().map(Value::from));
        let exemptions = self.exemptions.as_ref().map(|rules| {
            let rules = rules.iter().map(|(hosts, paths)| {
                let mut rule = serde_json::Map::new();
                if let Some(hosts) = hosts {
                    rule.insert("hostPatterns".into(), json!(hosts));
                }
                if let Some(paths) = paths {
                    rule.insert("pathPatterns".into(), json!(paths));
                }
                Value::Object(rule)
            });
            Value::Array(rules.collect())
        });
        set("exemptionRules", exemptions);
        config
    }

    /// Whether a request to `host` for `path` is collected, by the README's rules.
    fn selects(&self, host: &str, path: &str) -> bool {
        let matches =
            |pattern: &str, text: &str| regex_lite::Regex::new(pattern).unwrap().is_match(text);
        let otlp_paths: Vec<String> = [
            "/v1/traces",
            "/api/traces",
            "/v1/metrics",
            "/api/metrics",
            "/v1/logs",
            "/api/logs",
            "/otlp/v1/traces",
            "/otlp/v1/metrics",
            "/otlp/v1/logs",
        ]
        .map(str::to_owned)
        .into();
        let default_exemption = [(None, None)];
        let exemptions = self.exemptions.as_deref().unwrap_or(&default_exemption);
        let exempted = exemptions.iter().any(|(hosts, paths)| {
            let hosts = hosts.as_deref().unwrap_or_default();
            (hosts.is_empty() || hosts.iter().any(|p| matches(p, host)))
                && paths
                    .as_ref()
                    .unwrap_or(&otlp_paths)
                    .iter()
                    .any(|p| matches(p, path))
        });
        let rules = self.server.len() + self.client.len();
        !exempted
            && (rules == 0
                || self.server.iter().any(|p| matches(p, path))
                || self.client.iter().any(|(h, paths)| {
                    let paths = paths.as_deref().unwrap_or_default();
                    matches(h, host) && (paths.is_empty() || paths.iter().any(|p| matches(p, path)))
                }))
    }
}

/// Header names the filter reads, and others.
const HEADER_NAMES: &[&str] = &[
    ":method",
    ":authority",
    ":path",
    ":status",
    "host",
    "x-softprobe-session-id",
    "X-Softprobe-Session-Id",
    "tracestate",
    "traceparent",
    "x-sp-service-name",
    "content-type",
    "content-encoding",
    "authorization",
    "cookie",
    "x-custom",
    "accept",
];

/// Header values the filter reads specially, and others.
const HEADER_VALUES: &[&str] = &[
    "",
    " ",
    "sess_1",
    "sess_abc==",
    " sess_padded ",
    "a,b",
    "x-softprobe-session-id=sess_ts",
    "rojo=1, x-softprobe-session-id=old ,b=2",
    "x-softprobe-session-id=",
    "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-00000000000000000000000000000000-b7ad6b7169203331-01",
    "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
    "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
    "junk",
    "GET",
    "POST",
    "app:8081",
    "/hello?x=1",
    "/v1/traces",
    "/",
    "200",
    " 503 ",
    "application/json",
    "text/plain; charset=utf-8",
    "application/octet-stream",
    "gzip",
    "identity",
    "Bearer user-secret",
    "sid=secret-cookie",
    "ünïcode",
];

fn headers() -> BoxedStrategy<Vec<(String, String)>> {
    let name = prop_oneof![4 => select(HEADER_NAMES).prop_map(str::to_owned), 1 => text()];
    let value = prop_oneof![4 => select(HEADER_VALUES).prop_map(str::to_owned), 1 => text()];
    vec((name, value), 0..10).boxed()
}

/// Runtime answers: hits built from the attributes the filter reads (with any values), mutated
/// seeds, and random bytes.
fn answer_body() -> BoxedStrategy<Input> {
    let header_key = prop_oneof![
        select(
            &[
                "Content-Type",
                "content-length",
                ":status",
                "",
                "x-a",
                "Connection",
                "TE"
            ][..]
        )
        .prop_map(str::to_owned),
        text(),
    ]
    .prop_map(|name| format!("{}{name}", keys::RESPONSE_HEADER_PREFIX));
    let status = prop_oneof![
        Just(None),
        prop_oneof![Just(204i64), 100..600i64, any::<i64>()].prop_map(|code| Some(Ok(code))),
        select(&["201", " 302 ", "abc", "-1", "99999999999"][..]).prop_map(|s| Some(Err(s))),
    ];
    let body = proptest::option::of((
        prop_oneof![text(), Just("/wAB".to_owned()), Just("%%".to_owned())],
        proptest::option::of(select(&["base64", "BASE64", "", "rot13"][..])),
    ));
    let hit = (
        status,
        vec((header_key, text()), 0..4),
        body,
        proptest::option::of(text()),
    )
        .prop_map(|(status, headers, body, decision)| {
            let mut attrs = Attributes::default();
            match status {
                Some(Ok(code)) => {
                    attrs.int(keys::RESPONSE_STATUS, code);
                }
                Some(Err(text)) => {
                    attrs.string(keys::RESPONSE_STATUS, text);
                }
                None => {}
            }
            for (key, value) in headers {
                attrs.string(&key, &value);
            }
            if let Some((text, encoding)) = body {
                attrs.string(keys::RESPONSE_BODY, &text);
                if let Some(encoding) = encoding {
                    attrs.string(keys::RESPONSE_BODY_ENCODING, encoding);
                }
            }
            if let Some(decision) = decision {
                attrs.string(keys::DECISION, &decision);
            }
            Input(encode("runtime", &SpanFields::default(), &[&attrs]))
        });
    let seeds: &'static [Vec<u8>] = &ANSWERS;
    prop_oneof![
        3 => hit.clone(),
        2 => (hit, vec(mutation(any::<u8>().boxed()), 1..3))
            .prop_map(|(hit, mutations)| Input(mutate(hit.0, &mutations))),
        2 => (any::<Index>(), vec(mutation(any::<u8>().boxed()), 0..3)).prop_map(
            move |(seed, mutations)| {
                Input(mutate(seeds[seed.index(seeds.len())].clone(), &mutations))
            }
        ),
        1 => vec(any::<u8>(), 0..48).prop_map(Input),
    ]
    .boxed()
}

/// The runtime's answer as it reaches the filter: an HTTP status (if any) or a gRPC code, and
/// the body.
#[derive(Debug, Clone)]
enum Reply {
    Http(Option<String>, Input),
    Grpc(u32, Input),
}

fn reply() -> impl Strategy<Value = Reply> {
    let status = prop_oneof![
        3 => select(&["200", "204", " 200 "][..]).prop_map(|s| Some(s.to_owned())),
        2 => select(&["404", "0404", "500", "503", "abc", ""][..]).prop_map(|s| Some(s.to_owned())),
        1 => Just(None),
        1 => "[0-9]{1,4}".prop_map(Some),
    ];
    prop_oneof![
        3 => (status, answer_body()).prop_map(|(status, body)| Reply::Http(status, body)),
        1 => (prop_oneof![Just(0u32), Just(5), 0..20u32, any::<u32>()], answer_body())
            .prop_map(|(code, body)| Reply::Grpc(code, body)),
    ]
}

impl Reply {
    fn answer(&self) -> Answer {
        match self {
            Reply::Http(status, body) => answer::from_http(status.as_deref(), &body.0),
            Reply::Grpc(code, body) => answer::from_grpc(*code, &body.0),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checks

/// The configuration parser answers a configuration or says what is wrong; a configuration it
/// accepts never fails later on the requests it selects.
fn config_parses_or_says_why(bytes: &[u8], host: &str, path: &str) -> Result<(), TestCaseError> {
    let parsed = config::parse_bytes(bytes);
    if let Ok(text) = std::str::from_utf8(bytes) {
        prop_assert_eq!(config::parse(text).is_ok(), parsed.is_ok());
    }
    match &parsed {
        Err(err) => {
            let message = err.to_string();
            prop_assert!(
                !message.is_empty() && !message.ends_with(": "),
                "{message:?}"
            );
        }
        Ok(config) => {
            let _ = config.selection.selects(host, path);
            prop_assert!(!config.service_name(Some(host)).is_empty());
            prop_assert!(config.is_redacted("Authorization"));
            prop_assert!(config.backend.timeout > Duration::ZERO);
            prop_assert!(!config.backend.cluster.trim().is_empty());
        }
    }
    // A key is a secret: with the keys replaced by a marker, neither the refusal nor the
    // configuration's `Debug` shows the marker.
    const MARKER: &str = "marker-of-a-secret";
    if let Ok(Value::Object(mut map)) = serde_json::from_slice::<Value>(bytes) {
        let mut keyed = false;
        for key in ["public_key", "api_key"] {
            if let Some(value @ Value::String(_)) = map.get_mut(key) {
                *value = Value::from(MARKER);
                keyed = true;
            }
        }
        if keyed {
            let shown = match config::parse(&Value::Object(map).to_string()) {
                Ok(config) => format!("{config:?}"),
                Err(err) => err.to_string(),
            };
            prop_assert!(!shown.contains(MARKER), "{shown}");
        }
    }
    Ok(())
}

/// A valid configuration parses to what it says, however it is laid out.
fn config_means_what_it_says(model: &Model, host: &str, path: &str) -> Result<(), TestCaseError> {
    let written = model.json();
    let config = config::parse(&written.to_string())
        .map_err(|err| TestCaseError::fail(format!("{written}: {err}")))?;
    let pretty = config::parse(&serde_json::to_string_pretty(&written).unwrap()).unwrap();
    prop_assert_eq!(format!("{config:?}"), format!("{pretty:?}"));

    prop_assert_eq!(config.direction, model.direction.1);
    let service = model
        .service_name
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    prop_assert_eq!(config.service_name.as_deref(), service);
    let host_name = model
        .url
        .1
        .rsplit_once(':')
        .filter(|(_, port)| !port.contains(']'));
    let host_name = host_name
        .map_or(model.url.1.as_str(), |(host, _)| host)
        .to_ascii_lowercase();
    let derived = format!("outbound|{}||{host_name}", model.url.2);
    let cluster = model.backend_cluster.clone().unwrap_or(derived);
    prop_assert_eq!(&config.backend.cluster, &cluster);
    prop_assert_eq!(
        &config.backend.grpc_cluster,
        model.grpc_backend_cluster.as_ref().unwrap_or(&cluster)
    );
    let default_port = if model.url.0.eq_ignore_ascii_case("https") {
        443
    } else {
        80
    };
    let authority = if model.url.2 == default_port {
        host_name
    } else {
        format!("{host_name}:{}", model.url.2)
    };
    prop_assert_eq!(&config.backend.authority, &authority);
    prop_assert_eq!(
        config.backend.protocol,
        model.protocol.map_or(BackendProtocol::Http, |p| p.1)
    );
    prop_assert_eq!(
        config.backend.timeout,
        Duration::from_millis(model.timeout_ms.unwrap_or(5000))
    );
    prop_assert_eq!(
        config.failure_mode,
        model.failure_mode.map_or(FailureMode::Open, |f| f.1)
    );
    prop_assert_eq!(
        config.max_body_bytes,
        model.max_body_bytes.unwrap_or(1024 * 1024)
    );
    let key = [&model.keys.0, &model.keys.1]
        .into_iter()
        .flatten()
        .find(|key| !key.is_empty());
    prop_assert_eq!(
        config.backend.api_key.as_ref().map(|k| k.expose()),
        key.map(String::as_str)
    );
    for name in &model.redact_headers {
        prop_assert!(config.is_redacted(&name.trim().to_ascii_uppercase()));
    }
    for name in softprobe_otlp::SENSITIVE_HEADERS {
        prop_assert!(config.is_redacted(name));
    }
    prop_assert_eq!(
        config.selection.selects(host, path),
        model.selects(host, path)
    );
    Ok(())
}

/// Captured bodies against a model: the kept bytes are the pushed prefixes cut at the limit;
/// a body is truncated when more was seen than kept.
#[derive(Debug, Clone)]
enum Chunk {
    Push(Vec<u8>),
    Prefix(Vec<u8>, usize),
    Set(Vec<u8>, usize),
}

fn chunks() -> impl Strategy<Value = Vec<Chunk>> {
    let bytes = || vec(any::<u8>(), 0..12);
    vec(
        prop_oneof![
            bytes().prop_map(Chunk::Push),
            (bytes(), prop_oneof![0..40usize, any::<usize>()])
                .prop_map(|(b, n)| Chunk::Prefix(b, n)),
            (bytes(), prop_oneof![0..40usize, any::<usize>()]).prop_map(|(b, n)| Chunk::Set(b, n)),
        ],
        0..6,
    )
}

fn capture_keeps_what_fits(limit: usize, chunks: &[Chunk]) -> Result<(), TestCaseError> {
    let mut captured = Captured::new(limit);
    let (mut kept, mut seen) = (Vec::new(), 0usize);
    for chunk in chunks {
        match chunk {
            Chunk::Push(bytes) => {
                captured.push(bytes);
                seen = seen.saturating_add(bytes.len());
                kept.extend_from_slice(bytes);
            }
            Chunk::Prefix(bytes, len) => {
                captured.push_prefix(bytes, *len);
                seen = seen.saturating_add((*len).max(bytes.len()));
                kept.extend_from_slice(bytes);
            }
            Chunk::Set(bytes, total) => {
                captured.set(bytes, *total);
                seen = (*total).max(bytes.len());
                kept = bytes.clone();
            }
        }
        kept.truncate(limit);
        prop_assert_eq!(captured.bytes(), kept.as_slice());
        prop_assert_eq!(captured.room(), limit - kept.len());
        prop_assert_eq!(captured.truncated(), seen > kept.len());
        prop_assert_eq!(captured.wanted(seen), seen.min(limit));
    }
    Ok(())
}

/// The hit in `body` as prost's decoding of it reads (the filter's reading before it read
/// answers in place); `None` when prost refuses the body.
fn hit_by_prost(body: &[u8]) -> Option<Result<LocalReply, ()>> {
    let traces = TracesData::decode(body).ok()?;
    let Some(span) = traces
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .next()
    else {
        return Some(Err(()));
    };
    let attrs = &span.attributes;
    let status = match int_attr(attrs, keys::RESPONSE_STATUS) {
        None => 200,
        Some(code) => match u32::try_from(code).ok().filter(|c| (100..=599).contains(c)) {
            Some(code) => code,
            None => return Some(Err(())),
        },
    };
    let headers = attrs
        .iter()
        .filter_map(|kv| {
            let name = kv
                .key
                .strip_prefix(keys::RESPONSE_HEADER_PREFIX)?
                .to_ascii_lowercase();
            let value = string_attr(std::slice::from_ref(kv), &kv.key)?;
            (!answer::is_unsendable(&name)).then(|| (name, value.to_owned()))
        })
        .collect();
    let body = match string_attr(attrs, keys::RESPONSE_BODY) {
        None => Vec::new(),
        Some(value) => {
            match body::decode(value, string_attr(attrs, keys::RESPONSE_BODY_ENCODING)) {
                Ok(body) => body,
                Err(_) => return Some(Err(())),
            }
        }
    };
    Some(Ok(LocalReply {
        status,
        headers,
        body,
        decision: string_attr(attrs, keys::DECISION).map(str::to_owned),
        rule: string_attr(attrs, keys::RULE_NAME).map(str::to_owned),
    }))
}

/// An answer is acted on as the README says, and a hit is a response Envoy can send.
fn answers_are_acted_on(reply: &Reply) -> Result<(), TestCaseError> {
    let answer = reply.answer();
    match (reply, &answer) {
        (Reply::Http(Some(status), _), Answer::Miss) => {
            prop_assert_eq!(status.trim().parse::<u32>(), Ok(404));
        }
        (Reply::Grpc(code, _), Answer::Miss) => prop_assert_eq!(*code, 5),
        (_, Answer::Miss) => prop_assert!(false, "a miss without a 404"),
        // The body is checked against prost's reading below; damage past the first span is
        // not looked at, as the runtime does with an inject body.
        (Reply::Http(status, _), Answer::Hit(_)) => {
            let status = status
                .as_deref()
                .map(str::trim)
                .and_then(|s| s.parse::<u32>().ok());
            prop_assert!(status.is_some_and(|s| (200..300).contains(&s)));
        }
        (Reply::Grpc(code, _), Answer::Hit(_)) => prop_assert_eq!(*code, 0),
        (_, Answer::Failure(reason)) => prop_assert!(!reason.is_empty()),
    }
    // Wherever prost decodes the answer, reading it in place finds the same hit (or none).
    let body = match reply {
        Reply::Http(_, body) | Reply::Grpc(_, body) => &body.0,
    };
    if let Some(expected) = hit_by_prost(body) {
        prop_assert_eq!(answer::parse_hit(body).map_err(|_| ()), expected);
    }
    if let Answer::Hit(reply) = &answer {
        prop_assert!((100..=599).contains(&reply.status));
        for (name, _) in &reply.headers {
            prop_assert!(!name.is_empty() && !name.starts_with(':'), "{name:?}");
            prop_assert_eq!(name.clone(), name.to_ascii_lowercase());
            prop_assert!(!matches!(
                name.as_str(),
                "content-length" | "transfer-encoding" | "connection" | "te"
            ));
        }
    }
    for mode in [FailureMode::Open, FailureMode::Closed] {
        match (answer::verdict(answer.clone(), mode), &answer) {
            (Verdict::Reply(sent), Answer::Hit(hit)) => prop_assert_eq!(&sent, hit),
            (Verdict::Resume, Answer::Miss) => {}
            (Verdict::Resume, Answer::Failure(_)) => prop_assert_eq!(mode, FailureMode::Open),
            (Verdict::Reply(sent), Answer::Failure(_)) => {
                prop_assert_eq!(mode, FailureMode::Closed);
                prop_assert_eq!(sent.status, 502);
                let body: Value = serde_json::from_slice(&sent.body).unwrap();
                prop_assert_eq!(&body["error"]["code"], "softprobe_runtime_unavailable");
            }
            (verdict, answer) => {
                return Err(TestCaseError::fail(format!(
                    "{answer:?} became {verdict:?}"
                )));
            }
        }
    }
    Ok(())
}

/// One stream with arbitrary headers, bodies and answer: never a panic; the edits keep the
/// session travelling; the spans decode, name the session and leave out redacted headers.
#[allow(clippy::too_many_arguments)]
fn exchange_holds_together(
    config: &Config,
    request: Vec<(String, String)>,
    ids: [u8; 24],
    request_body: (&[u8], usize),
    reply: &Reply,
    response: Vec<(String, String)>,
    response_chunks: &[(Vec<u8>, usize)],
) -> Result<(), TestCaseError> {
    // Secrets sent in redacted headers, that appear nowhere else, must not reach a span.
    let all = || request.iter().chain(&response);
    let public: Vec<&str> = all()
        .filter(|(name, _)| !config.is_redacted(name))
        .flat_map(|(name, value)| [name.as_str(), value.as_str()])
        .collect();
    let secrets: Vec<&str> = all()
        .filter(|(name, value)| config.is_redacted(name) && value.contains("secret"))
        .map(|(_, value)| value.as_str())
        .filter(|value| !public.iter().any(|p| p.contains(value)))
        .collect();
    let Some((mut exchange, edits)) =
        Exchange::begin(config, request.clone(), || Ids::from_random(ids), 1)
    else {
        // Untagged: not the filter's business, so nothing is edited, asked or recorded.
        prop_assert!(session_id(&request).is_none());
        return Ok(());
    };
    let id = exchange.session_id().to_owned();
    prop_assert_eq!(session_id(&request), Some(id.clone()));
    prop_assert!(!id.is_empty());
    for edit in &edits {
        match edit {
            HeaderEdit::Set(name, value) if *name == TRACEPARENT => {
                prop_assert!(TraceParent::parse(value).is_some(), "{value}");
            }
            HeaderEdit::Set(name, value) if *name == TRACESTATE => {
                prop_assert_eq!(config.direction, Direction::Inbound);
                prop_assert_eq!(tracestate_session(value), Some(id.as_str()));
            }
            HeaderEdit::Remove(name) => {
                prop_assert_eq!(*name, SESSION_HEADER);
                prop_assert_eq!(config.direction, Direction::Outbound);
            }
            other => prop_assert!(false, "unexpected edit {:?}", other),
        }
    }
    let wrote_state = edits
        .iter()
        .any(|e| matches!(e, HeaderEdit::Set(name, _) if *name == TRACESTATE));
    if config.direction == Direction::Inbound {
        prop_assert_eq!(wrote_state, valid_session_id(&id));
        prop_assert_eq!(exchange.session_unpropagated(), !valid_session_id(&id));
    }
    let wanted = exchange.request_body_wanted(request_body.1);
    prop_assert!(wanted <= config.max_body_bytes);
    exchange.set_request_body(request_body.0, request_body.1);

    let spans_hold = |payload: &[u8], what: &str| -> Result<Span, TestCaseError> {
        let traces = TracesData::decode(payload)
            .map_err(|err| TestCaseError::fail(format!("{what} does not decode: {err}")))?;
        let span = traces.resource_spans[0].scope_spans[0].spans[0].clone();
        prop_assert_eq!(
            string_attr(&span.attributes, keys::SESSION_ID),
            Some(id.as_str())
        );
        prop_assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
        for kv in &span.attributes {
            if let Some(name) = kv
                .key
                .strip_prefix(keys::REQUEST_HEADER_PREFIX)
                .or_else(|| kv.key.strip_prefix(keys::RESPONSE_HEADER_PREFIX))
            {
                prop_assert!(
                    !config.is_redacted(name) && !name.starts_with(':'),
                    "{name}"
                );
            }
        }
        for secret in &secrets {
            prop_assert!(
                !payload
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes())
            );
        }
        if let Some(key) = &config.backend.api_key {
            let key = key.expose().as_bytes();
            prop_assert!(key.len() < 8 || !payload.windows(key.len()).any(|w| w == key));
        }
        Ok(span)
    };
    spans_hold(&exchange.inject_payload(config, 2), "the inject span")?;
    let verdict = exchange.decide(config, reply.answer());
    exchange.set_response_headers(response.clone());
    for (prefix, len) in response_chunks {
        let room = exchange.response_body_room();
        prop_assert!(room <= config.max_body_bytes);
        exchange.push_response_body(prefix, *len);
    }
    let extract = exchange.extract_payload(config, 3);
    let has_status = response
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(":status"))
        .is_some_and(|(_, status)| status.trim().parse::<u32>().is_ok());
    let recorded = exchange.selected() && matches!(verdict, Verdict::Resume) && has_status;
    prop_assert_eq!(extract.is_some(), recorded);
    if let Some(extract) = extract {
        let span = spans_hold(&extract, "the extract span")?;
        prop_assert!(int_attr(&span.attributes, keys::RESPONSE_STATUS).is_some());
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The properties

// Default case counts keep this binary near 10 s in a debug build on two cores.

proptest! {
    #![proptest_config(settings(8000))]

    /// The plugin configuration parser, on configurations of every kind.
    #[test]
    fn config_parse_never_panics_and_says_why(
        config in config_input(),
        host in text(),
        path in text(),
    ) {
        config_parses_or_says_why(&config.0, &host, &path)?;
    }
}

proptest! {
    #![proptest_config(settings(4000))]

    /// A valid configuration round-trips: written as JSON, it parses to what it says.
    #[test]
    fn valid_configs_mean_what_they_say(model in model(), host in text(), path in text()) {
        config_means_what_it_says(&model, &host, &path)?;
    }
}

proptest! {
    #![proptest_config(settings(10_000))]

    /// Bodies become span attributes and back unchanged, whatever their type and bytes.
    #[test]
    fn bodies_round_trip(
        bytes in vec(any::<u8>(), 0..32),
        content_type in proptest::option::of(prop_oneof![
            select(&[
                "application/json",
                "text/plain; charset=utf-8",
                "image/png",
                "application/problem+json",
                "json",
            ][..])
            .prop_map(str::to_owned),
            text(),
        ]),
        content_encoding in proptest::option::of(prop_oneof![
            select(&["identity", "gzip", " ", ""][..]).prop_map(str::to_owned),
            text(),
        ]),
        attribute in text(),
        encoding in proptest::option::of(prop_oneof![Just("base64".to_owned()), text()]),
    ) {
        let content_type = content_type.as_deref();
        let content_encoding = content_encoding.as_deref();
        let (value, marked) = body::encode(&bytes, content_type, content_encoding);
        prop_assert_eq!(body::decode(&value, marked).unwrap(), bytes.clone());
        let textual = body::is_textual(content_type, content_encoding);
        prop_assert_eq!(marked.is_none(), textual && std::str::from_utf8(&bytes).is_ok());
        if let Err(err) = body::decode(&attribute, encoding.as_deref()) {
            prop_assert!(!err.is_empty());
        }
    }

    /// Bounded capture against its model.
    #[test]
    fn captured_bodies_keep_what_fits(
        limit in prop_oneof![0..20usize, Just(usize::MAX)],
        chunks in chunks(),
    ) {
        capture_keeps_what_fits(limit, &chunks)?;
    }

    /// `traceparent` values from the network, and the ones the filter writes.
    #[test]
    fn trace_context_parses_safely(
        value in prop_oneof![
            select(HEADER_VALUES).prop_map(str::to_owned),
            text(),
            "[0-9a-f-]{50,60}",
        ],
        ids in any::<[u8; 24]>(),
    ) {
        if let Some(parent) = TraceParent::parse(&value) {
            prop_assert!(parent.trace_id != [0; 16] && parent.parent_id != [0; 8]);
        }
        let ids = Ids::from_random(ids);
        let written = format_traceparent(&ids.trace_id, &ids.span_id);
        let parsed = TraceParent::parse(&written).unwrap();
        prop_assert_eq!(
            (parsed.trace_id, parsed.parent_id, parsed.flags),
            (ids.trace_id, ids.span_id, 1)
        );
    }
}

proptest! {
    #![proptest_config(settings(6000))]

    /// The runtime's answers, well-formed or not.
    #[test]
    fn answers_never_panic_and_are_acted_on(reply in reply()) {
        answers_are_acted_on(&reply)?;
    }

    /// Whole streams through the pure core.
    #[test]
    fn exchanges_never_panic(
        config in any::<Index>(),
        request in headers(),
        ids in any::<[u8; 24]>(),
        body in (vec(any::<u8>(), 0..24), prop_oneof![0..64usize, any::<usize>()]),
        reply in reply(),
        response in headers(),
        chunks in vec((vec(any::<u8>(), 0..12), prop_oneof![0..24usize, any::<usize>()]), 0..3),
    ) {
        let configs = &*CONFIG_VALUES;
        let config = &configs[config.index(configs.len())];
        let body = (body.0.as_slice(), body.1);
        exchange_holds_together(config, request, ids, body, &reply, response, &chunks)?;
    }
}

// ---------------------------------------------------------------------------------------------
// The corpus

/// Every seed configuration is valid, and every seed answer decodes.
#[test]
fn corpus_seeds_are_valid() {
    assert!(CONFIG_VALUES.len() >= 2);
    assert!(!ANSWERS.is_empty());
    for answer in ANSWERS.iter() {
        TracesData::decode(answer.as_slice()).unwrap();
    }
    let hit = std::fs::read(corpus("otlp/hit.pb")).unwrap();
    let Answer::Hit(reply) = answer::from_http(Some("200"), &hit) else {
        panic!("the hit seed is a hit");
    };
    assert_eq!(
        (reply.status, reply.decision.as_deref()),
        (201, Some("mock"))
    );
}

/// Minimized failures, kept as inputs (`regressions/filter-config/`, `filter-answer/`) and
/// replayed every run.
#[test]
fn regressions_pass() {
    for (name, bytes) in files("regressions/filter-config", "") {
        config_parses_or_says_why(&bytes, "h", "/p").unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for (name, bytes) in files("regressions/filter-answer", "") {
        for reply in [
            Reply::Http(Some("200".into()), Input(bytes.clone())),
            Reply::Grpc(0, Input(bytes.clone())),
        ] {
            answers_are_acted_on(&reply).unwrap_or_else(|err| panic!("{name}: {err}"));
        }
    }
}

/// The inputs mean something: configurations parse and fail, answers are hits, misses and
/// failures, streams are selected or not. (Strategies that drifted into producing only
/// garbage would leave the properties vacuous.)
#[test]
fn inputs_are_varied_enough() {
    use proptest::strategy::ValueTree as _;
    use proptest::test_runner::TestRunner;
    fn sample<T: fmt::Debug>(strategy: impl Strategy<Value = T>, count: usize) -> Vec<T> {
        let mut runner = TestRunner::deterministic();
        (0..count)
            .map(|_| strategy.new_tree(&mut runner).unwrap().current())
            .collect()
    }
    let n = 1000;
    let share = |count: usize| count * 100 / n;
    let configs = sample(config_input(), n);
    let parsed = share(
        configs
            .iter()
            .filter(|c| config::parse_bytes(&c.0).is_ok())
            .count(),
    );
    let answers: Vec<Answer> = sample(reply(), n).iter().map(Reply::answer).collect();
    let kinds = [
        |a: &Answer| matches!(a, Answer::Hit(_)),
        |a: &Answer| matches!(a, Answer::Miss),
        |a: &Answer| matches!(a, Answer::Failure(_)),
    ]
    .map(|kind| share(answers.iter().filter(|a| kind(a)).count()));
    let minimal = std::fs::read(corpus("filter/minimal.json")).unwrap();
    let config = config::parse_bytes(&minimal).unwrap();
    let ids = Ids::from_random([1; 24]);
    let selected = sample(headers(), n)
        .into_iter()
        .filter(|headers| {
            Exchange::begin(&config, headers.clone(), || ids, 0)
                .is_some_and(|(exchange, _)| exchange.selected())
        })
        .count();
    let selected = share(selected);
    eprintln!(
        "% configurations parsed: {parsed}; hits, misses, failures: {kinds:?}; selected: {selected}"
    );
    assert!(parsed > 5 && parsed < 95, "{parsed}");
    assert!(kinds.iter().all(|share| *share > 5), "{kinds:?}");
    assert!(selected > 10 && selected < 90, "{selected}");
}
