//! Plugin configuration: the JSON Envoy (or Istio's `pluginConfig`) hands to `on_configure`,
//! parsed and validated into the only object the filter runs with.

use std::fmt;
use std::time::Duration;

use regex_lite::Regex;
use serde::Deserialize;

/// Defaults, in one place.
mod defaults {
    /// The reference filter's default runtime.
    pub(super) const BACKEND_URL: &str = "https://runtime.softprobe.dev";
    /// `sp.service.name` when neither the config nor `x-sp-service-name` names the service.
    pub(super) const SERVICE_NAME: &str = "default-service";
    /// The reference's fixed dispatch timeout.
    pub(super) const TIMEOUT_MS: u64 = 5000;
    /// Per body; also Envoy's default per-connection buffer limit.
    pub(super) const MAX_BODY_BYTES: usize = 1024 * 1024;
    /// Exempted when `exemptionRules` is absent (or an entry has no `pathPatterns`): telemetry
    /// uploads are never test traffic.
    pub(super) const EXEMPT_PATHS: &[&str] = &[
        "/v1/traces",
        "/api/traces",
        "/v1/metrics",
        "/api/metrics",
        "/v1/logs",
        "/api/logs",
        "/otlp/v1/traces",
        "/otlp/v1/metrics",
        "/otlp/v1/logs",
    ];
    /// Headers never copied into spans, whatever `redact_headers` says.
    pub(super) const REDACTED_HEADERS: &[&str] = softprobe_otlp::SENSITIVE_HEADERS;
}

/// Why a plugin configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Not UTF-8.
    #[error("plugin configuration is not UTF-8")]
    NotUtf8,
    /// Not JSON, a wrong type, an unknown key or an unknown enum value; `path` locates it.
    #[error("{path}: {message}")]
    Json {
        /// Where in the document (`collectionRules.http.client[0].host`), `.` for the root.
        path: String,
        /// What serde found wrong.
        message: String,
    },
    /// A key with a well-typed but unusable value.
    #[error("{key}: {message}")]
    Invalid {
        /// The offending key.
        key: String,
        /// Why it cannot be used.
        message: String,
    },
}

impl ConfigError {
    fn invalid(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Which side of the application this listener sits on (`sp.traffic.direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Direction {
    /// Traffic into the application (the reference's `server`).
    #[serde(rename = "inbound", alias = "server", alias = "ingress")]
    Inbound,
    /// Traffic from the application to a dependency (the reference's `client`).
    #[serde(rename = "outbound", alias = "client", alias = "egress")]
    Outbound,
}

impl Direction {
    /// The `sp.traffic.direction` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbound => "inbound",
            Self::Outbound => "outbound",
        }
    }
}

/// What to do when the runtime cannot answer an inject lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureMode {
    /// Forward the request upstream as if the runtime had said "miss".
    #[default]
    Open,
    /// Answer the client with a 502 and a JSON error.
    Closed,
}

/// How inject lookups reach the runtime. Extract uploads always use OTLP/HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// `POST /v1/inject` with an OTLP protobuf body.
    #[default]
    Http,
    /// `softprobe.v1.InjectService/Inject`.
    Grpc,
}

/// The runtime's API token. Its `Debug` never shows the value, so it cannot leak into logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The token, for the `authorization` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Where and how the runtime is called.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Envoy cluster for `/v1/inject` (http protocol) and `/v1/traces`.
    pub cluster: String,
    /// Envoy cluster for the gRPC inject call (HTTP/2); the `cluster` unless configured.
    pub grpc_cluster: String,
    /// `:authority` of the calls: host, plus the port when it is not the scheme's default.
    pub authority: String,
    /// Inject transport.
    pub protocol: BackendProtocol,
    /// Timeout of every call to the runtime.
    pub timeout: Duration,
    /// Sent as `authorization: Bearer <key>`, never anywhere else.
    pub api_key: Option<Secret>,
}

/// A collection rule: a request is collected when any rule selects it.
#[derive(Debug, Clone)]
enum CollectRule {
    /// `collectionRules.http.server[].path`: the request path (query included) matches.
    Server { path: Pattern },
    /// `collectionRules.http.client[]`: the host matches and, when paths are given, one matches.
    Client { host: Pattern, paths: Vec<Pattern> },
}

/// An exemption: host (any, when no patterns) and path both match → never collected.
#[derive(Debug, Clone)]
struct Exemption {
    hosts: Vec<Pattern>,
    paths: Vec<Pattern>,
}

/// One unanchored pattern of `collectionRules` or `exemptionRules`. A pattern without regex
/// syntax (every default exemption is one) is matched as a plain substring, which is what the
/// regex would answer: regex_lite's backtracking-free search ran once per pattern and request
/// and was the filter's largest cost on a selected request.
#[derive(Debug, Clone)]
enum Pattern {
    Literal(String),
    Regex(Regex),
}

impl Pattern {
    fn is_match(&self, text: &str) -> bool {
        match self {
            Pattern::Literal(literal) => text.contains(literal.as_str()),
            Pattern::Regex(regex) => regex.is_match(text),
        }
    }
}

/// Which requests the filter looks at, from `collectionRules` and `exemptionRules`.
#[derive(Debug, Clone)]
pub struct Selection {
    collect: Vec<CollectRule>,
    exempt: Vec<Exemption>,
}

impl Selection {
    /// Whether a request to `host` (the `:authority`, port included) for `path` (query
    /// included) is collected: not exempted, and selected by a rule (or there are no rules).
    /// Patterns are unanchored regexes, like the reference filter's.
    pub fn selects(&self, host: &str, path: &str) -> bool {
        let exempted = self.exempt.iter().any(|rule| {
            (rule.hosts.is_empty() || rule.hosts.iter().any(|re| re.is_match(host)))
                && rule.paths.iter().any(|re| re.is_match(path))
        });
        if exempted {
            return false;
        }
        self.collect.is_empty()
            || self.collect.iter().any(|rule| match rule {
                CollectRule::Server { path: re } => re.is_match(path),
                CollectRule::Client { host: re, paths } => {
                    re.is_match(host)
                        && (paths.is_empty() || paths.iter().any(|p| p.is_match(path)))
                }
            })
    }
}

/// The validated configuration; [`parse`] is the only way to one.
#[derive(Debug, Clone)]
pub struct Config {
    /// `sp.traffic.direction` of every span from this listener.
    pub direction: Direction,
    /// The configured service name; `None` lets `x-sp-service-name` decide per request.
    pub service_name: Option<String>,
    /// The runtime.
    pub backend: Backend,
    /// Runtime trouble on inject: forward or 502.
    pub failure_mode: FailureMode,
    /// Bodies are cut at this many bytes and marked truncated.
    pub max_body_bytes: usize,
    /// Which requests are collected.
    pub selection: Selection,
    /// Lowercase header names never copied into spans.
    redacted: Vec<String>,
}

impl Config {
    /// Whether the header `name` (any case) must stay out of spans.
    pub fn is_redacted(&self, name: &str) -> bool {
        self.redacted.iter().any(|r| r.eq_ignore_ascii_case(name))
    }

    /// `sp.service.name` for a request that carries `header` (`x-sp-service-name`).
    pub fn service_name<'a>(&'a self, header: Option<&'a str>) -> &'a str {
        match (&self.service_name, header.map(str::trim)) {
            (Some(name), _) => name,
            (None, Some(header)) if !header.is_empty() => header,
            (None, _) => defaults::SERVICE_NAME,
        }
    }
}

/// The plugin configuration as written. Keys follow the reference filter (including its
/// camelCase rule keys); unknown keys are refused so a typo cannot silently do nothing.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    /// Runtime base URL; only scheme, host and port are used.
    #[serde(default = "default_backend_url")]
    sp_backend_url: String,
    /// Service name; empty or absent lets `x-sp-service-name` decide.
    #[serde(default)]
    service_name: String,
    /// `inbound`/`outbound` (or `server`/`client`, `ingress`/`egress`). Required.
    traffic_direction: Option<Direction>,
    /// API token; wins over `api_key`.
    #[serde(default)]
    public_key: String,
    /// API token alias.
    #[serde(default)]
    api_key: String,
    /// Which requests to collect.
    #[serde(default, rename = "collectionRules")]
    collection_rules: RawCollectionRules,
    /// Which requests never to collect; absent → the OTLP upload paths.
    #[serde(rename = "exemptionRules")]
    exemption_rules: Option<Vec<RawExemption>>,
    /// Envoy cluster of the runtime; absent → `outbound|<port>||<host>` from the URL.
    backend_cluster: Option<String>,
    /// Envoy cluster for gRPC inject; absent → `backend_cluster`.
    grpc_backend_cluster: Option<String>,
    /// Runtime call timeout in milliseconds.
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    /// `open` or `closed`.
    #[serde(default)]
    failure_mode: FailureMode,
    /// Body capture limit in bytes.
    #[serde(default = "default_max_body_bytes")]
    max_body_bytes: usize,
    /// Extra header names to keep out of spans.
    #[serde(default)]
    redact_headers: Vec<String>,
    /// `http` or `grpc`.
    #[serde(default)]
    backend_protocol: BackendProtocol,
}

fn default_backend_url() -> String {
    defaults::BACKEND_URL.to_owned()
}
fn default_timeout_ms() -> u64 {
    defaults::TIMEOUT_MS
}
fn default_max_body_bytes() -> usize {
    defaults::MAX_BODY_BYTES
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCollectionRules {
    /// HTTP rules (the only protocol).
    #[serde(default)]
    http: RawHttpRules,
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpRules {
    /// Path rules.
    #[serde(default)]
    server: Vec<RawServerRule>,
    /// Host (+ paths) rules.
    #[serde(default)]
    client: Vec<RawClientRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServerRule {
    /// Path regex.
    path: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientRule {
    /// Host regex.
    host: String,
    /// Path regexes; empty → any path.
    #[serde(default)]
    paths: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExemption {
    /// Host regexes; absent or empty → any host.
    #[serde(default, rename = "hostPatterns")]
    host_patterns: Vec<String>,
    /// Path regexes; absent → the OTLP upload paths; empty is refused.
    #[serde(rename = "pathPatterns")]
    path_patterns: Option<Vec<String>>,
}

/// Parses and validates a plugin configuration.
pub fn parse(json: &str) -> Result<Config, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(json).map_err(|err| ConfigError::Json {
        path: ".".into(),
        message: err.to_string(),
    })?;
    if !value.is_object() {
        return Err(ConfigError::Json {
            path: ".".into(),
            message: "must be a JSON object".into(),
        });
    }
    let raw: RawConfig =
        serde_path_to_error::deserialize(value).map_err(|err| ConfigError::Json {
            path: err.path().to_string(),
            message: err.inner().to_string(),
        })?;
    raw.validate()
}

/// [`parse`] for the raw bytes the host hands over.
pub fn parse_bytes(bytes: &[u8]) -> Result<Config, ConfigError> {
    parse(std::str::from_utf8(bytes).map_err(|_| ConfigError::NotUtf8)?)
}

fn compile(key: &str, pattern: &str) -> Result<Pattern, ConfigError> {
    let regex = Regex::new(pattern)
        .map_err(|err| ConfigError::invalid(key, format!("invalid regex {pattern:?}: {err}")))?;
    Ok(if regex_lite::escape(pattern) == pattern {
        Pattern::Literal(pattern.to_owned())
    } else {
        Pattern::Regex(regex)
    })
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let direction = self.traffic_direction.ok_or_else(|| {
            ConfigError::invalid("traffic_direction", "required: \"inbound\" or \"outbound\"")
        })?;
        let url = BackendUrl::parse(&self.sp_backend_url)
            .map_err(|message| ConfigError::invalid("sp_backend_url", message))?;
        if self.timeout_ms == 0 {
            return Err(ConfigError::invalid("timeout_ms", "must be greater than 0"));
        }
        let cluster = match self.backend_cluster {
            Some(name) if name.trim().is_empty() => {
                return Err(ConfigError::invalid("backend_cluster", "must not be empty"));
            }
            Some(name) => name,
            None => url.cluster(),
        };
        let grpc_cluster = match self.grpc_backend_cluster {
            Some(name) if name.trim().is_empty() => {
                return Err(ConfigError::invalid(
                    "grpc_backend_cluster",
                    "must not be empty",
                ));
            }
            Some(name) => name,
            None => cluster.clone(),
        };
        let api_key = [self.public_key, self.api_key]
            .into_iter()
            .find(|key| !key.is_empty())
            .map(Secret);

        let mut collect = Vec::new();
        for (i, rule) in self.collection_rules.http.server.iter().enumerate() {
            let key = format!("collectionRules.http.server[{i}].path");
            collect.push(CollectRule::Server {
                path: compile(&key, &rule.path)?,
            });
        }
        for (i, rule) in self.collection_rules.http.client.iter().enumerate() {
            let host = compile(
                &format!("collectionRules.http.client[{i}].host"),
                &rule.host,
            )?;
            let paths = rule
                .paths
                .iter()
                .enumerate()
                .map(|(j, p)| compile(&format!("collectionRules.http.client[{i}].paths[{j}]"), p))
                .collect::<Result<_, _>>()?;
            collect.push(CollectRule::Client { host, paths });
        }

        let default_paths = || -> Result<Vec<Pattern>, ConfigError> {
            defaults::EXEMPT_PATHS
                .iter()
                .map(|p| compile("exemptionRules", p))
                .collect()
        };
        let exempt = match self.exemption_rules {
            None => vec![Exemption {
                hosts: Vec::new(),
                paths: default_paths()?,
            }],
            Some(rules) => rules
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let hosts = rule
                        .host_patterns
                        .iter()
                        .enumerate()
                        .map(|(j, p)| compile(&format!("exemptionRules[{i}].hostPatterns[{j}]"), p))
                        .collect::<Result<_, _>>()?;
                    let paths = match &rule.path_patterns {
                        None => default_paths()?,
                        Some(paths) if paths.is_empty() => {
                            return Err(ConfigError::invalid(
                                format!("exemptionRules[{i}].pathPatterns"),
                                "is empty; omit it for the default OTLP paths, or list patterns",
                            ));
                        }
                        Some(paths) => paths
                            .iter()
                            .enumerate()
                            .map(|(j, p)| {
                                compile(&format!("exemptionRules[{i}].pathPatterns[{j}]"), p)
                            })
                            .collect::<Result<_, _>>()?,
                    };
                    Ok(Exemption { hosts, paths })
                })
                .collect::<Result<_, _>>()?,
        };

        let mut redacted: Vec<String> = defaults::REDACTED_HEADERS
            .iter()
            .map(|h| (*h).to_owned())
            .collect();
        for (i, name) in self.redact_headers.iter().enumerate() {
            let name = name.trim().to_ascii_lowercase();
            if name.is_empty() {
                return Err(ConfigError::invalid(
                    format!("redact_headers[{i}]"),
                    "must not be empty",
                ));
            }
            redacted.push(name);
        }

        let service_name = Some(self.service_name.trim().to_owned()).filter(|s| !s.is_empty());
        Ok(Config {
            direction,
            service_name,
            backend: Backend {
                cluster,
                grpc_cluster,
                authority: url.authority(),
                protocol: self.backend_protocol,
                timeout: Duration::from_millis(self.timeout_ms),
                api_key,
            },
            failure_mode: self.failure_mode,
            max_body_bytes: self.max_body_bytes,
            selection: Selection { collect, exempt },
            redacted,
        })
    }
}

/// The parts of `sp_backend_url` the filter uses.
#[derive(Debug, PartialEq, Eq)]
struct BackendUrl {
    host: String,
    port: u16,
    default_port: bool,
}

impl BackendUrl {
    fn parse(url: &str) -> Result<Self, String> {
        let (scheme, rest) = url
            .split_once("://")
            .ok_or_else(|| format!("{url:?} is not an http(s) URL"))?;
        let default = match scheme.to_ascii_lowercase().as_str() {
            "http" => 80,
            "https" => 443,
            _ => return Err(format!("{url:?}: scheme must be http or https")),
        };
        let (authority, path) = rest.split_once('/').map_or((rest, ""), |(a, p)| (a, p));
        if !path.is_empty() {
            return Err(format!(
                "{url:?}: must not have a path; calls always go to /v1/inject and /v1/traces"
            ));
        }
        if authority.contains('@') || authority.contains('?') || authority.contains('#') {
            return Err(format!("{url:?}: only scheme, host and port are allowed"));
        }
        // A bracketed IPv6 literal keeps its colons.
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !port.contains(']') => {
                let port = port
                    .parse::<u16>()
                    .map_err(|_| format!("{url:?}: invalid port {port:?}"))?;
                (host, port)
            }
            _ => (authority, default),
        };
        if host.is_empty() {
            return Err(format!("{url:?}: missing host"));
        }
        Ok(Self {
            host: host.to_ascii_lowercase(),
            port,
            default_port: port == default,
        })
    }

    /// The Istio-style cluster name the reference derives (`outbound|8080||softprobe-runtime`).
    fn cluster(&self) -> String {
        format!("outbound|{}||{}", self.port, self.host)
    }

    fn authority(&self) -> String {
        if self.default_port {
            self.host.clone()
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REFERENCE: &str = r#"{ "traffic_direction": "inbound", "service_name": "checkout",
      "sp_backend_url": "http://softprobe-runtime:8080", "public_key": "dev-public-key",
      "collectionRules": {"http": {"server": [], "client": [{"host": ".*", "paths": [".*"]}]}},
      "exemptionRules": [{"hostPatterns": [".*"], "pathPatterns": ["/health", "/healthz", "/ready"]}] }"#;

    fn error(json: &str) -> String {
        parse(json).unwrap_err().to_string()
    }

    #[test]
    fn parses_the_reference_example() {
        let config = parse(REFERENCE).unwrap();
        assert_eq!(config.direction, Direction::Inbound);
        assert_eq!(config.service_name.as_deref(), Some("checkout"));
        assert_eq!(config.backend.cluster, "outbound|8080||softprobe-runtime");
        assert_eq!(config.backend.authority, "softprobe-runtime:8080");
        assert_eq!(
            config.backend.api_key.as_ref().unwrap().expose(),
            "dev-public-key"
        );
        assert_eq!(config.backend.timeout, Duration::from_secs(5));
        assert_eq!(config.backend.protocol, BackendProtocol::Http);
        assert_eq!(config.failure_mode, FailureMode::Open);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert!(
            !format!("{config:?}").contains("dev-public-key"),
            "the key never reaches Debug output"
        );
        assert!(config.selection.selects("app:8081", "/hello"));
        assert!(!config.selection.selects("app:8081", "/healthz"));
    }

    #[test]
    fn defaults_and_extensions() {
        let config = parse(r#"{"traffic_direction":"client"}"#).unwrap();
        assert_eq!(config.direction, Direction::Outbound);
        assert_eq!(
            config.backend.cluster,
            "outbound|443||runtime.softprobe.dev"
        );
        assert_eq!(config.backend.authority, "runtime.softprobe.dev");
        assert!(config.backend.api_key.is_none());
        assert_eq!(config.service_name(None), "default-service");
        assert_eq!(config.service_name(Some("cart")), "cart");
        assert!(config.is_redacted("Authorization") && config.is_redacted("x-api-key"));
        assert!(!config.is_redacted("x-custom"));

        let config = parse(
            r#"{"traffic_direction":"egress","backend_cluster":"softprobe","grpc_backend_cluster":"softprobe-grpc",
                "timeout_ms":250,"failure_mode":"closed","max_body_bytes":16,"redact_headers":["X-Custom"],
                "backend_protocol":"grpc","api_key":"k","public_key":""}"#,
        )
        .unwrap();
        assert_eq!(config.backend.cluster, "softprobe");
        assert_eq!(config.backend.grpc_cluster, "softprobe-grpc");
        assert_eq!(config.backend.timeout, Duration::from_millis(250));
        assert_eq!(config.failure_mode, FailureMode::Closed);
        assert_eq!(config.max_body_bytes, 16);
        assert!(config.is_redacted("x-custom"));
        assert_eq!(config.backend.protocol, BackendProtocol::Grpc);
        assert_eq!(config.backend.api_key.unwrap().expose(), "k");
    }

    #[test]
    fn public_key_wins_over_api_key() {
        let config =
            parse(r#"{"traffic_direction":"inbound","api_key":"b","public_key":"a"}"#).unwrap();
        assert_eq!(config.backend.api_key.unwrap().expose(), "a");
    }

    #[test]
    fn direction_aliases() {
        for (value, expected) in [
            ("inbound", Direction::Inbound),
            ("server", Direction::Inbound),
            ("ingress", Direction::Inbound),
            ("outbound", Direction::Outbound),
            ("client", Direction::Outbound),
            ("egress", Direction::Outbound),
        ] {
            let config = parse(&format!(r#"{{"traffic_direction":"{value}"}}"#)).unwrap();
            assert_eq!(config.direction, expected, "{value}");
            assert_eq!(
                config.direction.as_str(),
                if expected == Direction::Inbound {
                    "inbound"
                } else {
                    "outbound"
                }
            );
        }
    }

    #[test]
    fn refuses_invalid_configurations_with_a_reason() {
        let cases = [
            ("{", "EOF while parsing"),
            ("[]", ".: must be a JSON object"),
            (r#"{}"#, "traffic_direction: required"),
            (
                r#"{"traffic_direction":"auto"}"#,
                "traffic_direction: unknown variant `auto`",
            ),
            (
                r#"{"traffic_direction":"inbound","service_name":5}"#,
                "service_name: invalid type: integer `5`",
            ),
            (
                r#"{"traffic_direction":"inbound","direction":"ingress"}"#,
                "unknown field `direction`",
            ),
            (
                r#"{"traffic_direction":"inbound","timeout_ms":0}"#,
                "timeout_ms: must be greater than 0",
            ),
            (
                r#"{"traffic_direction":"inbound","timeout_ms":"5s"}"#,
                "timeout_ms: invalid type: string",
            ),
            (
                r#"{"traffic_direction":"inbound","failure_mode":"fail"}"#,
                "failure_mode: unknown variant `fail`",
            ),
            (
                r#"{"traffic_direction":"inbound","backend_protocol":"h2"}"#,
                "backend_protocol: unknown variant",
            ),
            (
                r#"{"traffic_direction":"inbound","sp_backend_url":"ftp://x"}"#,
                "sp_backend_url: \"ftp://x\": scheme",
            ),
            (
                r#"{"traffic_direction":"inbound","sp_backend_url":"http://x/api"}"#,
                "must not have a path",
            ),
            (
                r#"{"traffic_direction":"inbound","sp_backend_url":"http://x:99999"}"#,
                "invalid port",
            ),
            (
                r#"{"traffic_direction":"inbound","backend_cluster":" "}"#,
                "backend_cluster: must not be empty",
            ),
            (
                r#"{"traffic_direction":"inbound","redact_headers":[""]}"#,
                "redact_headers[0]: must not be empty",
            ),
            (
                r#"{"traffic_direction":"inbound","collectionRules":{"http":{"server":[{"path":"("}]}}}"#,
                "collectionRules.http.server[0].path: invalid regex \"(\"",
            ),
            (
                r#"{"traffic_direction":"inbound","collectionRules":{"http":{"server":[{"host":"a","paths":[]}]}}}"#,
                "collectionRules.http.server[0].host: unknown field `host`, expected `path`",
            ),
            (
                r#"{"traffic_direction":"inbound","collectionRules":{"http":{"client":[{"host":"a","paths":["["]}]}}}"#,
                "collectionRules.http.client[0].paths[0]: invalid regex",
            ),
            (
                r#"{"traffic_direction":"inbound","exemptionRules":[{"hostPatterns":["a"],"pathPatterns":[]}]}"#,
                "exemptionRules[0].pathPatterns: is empty",
            ),
            (
                r#"{"traffic_direction":"inbound","exemptionRules":[{"hostPatterns":["*"]}]}"#,
                "exemptionRules[0].hostPatterns[0]: invalid regex",
            ),
        ];
        for (json, expected) in cases {
            let message = error(json);
            assert!(
                message.contains(expected),
                "{json}: {message:?} lacks {expected:?}"
            );
        }
        assert!(matches!(parse_bytes(b"\xff"), Err(ConfigError::NotUtf8)));
        assert!(
            !error(r#"{"traffic_direction":"x","public_key":"secret-key"}"#).contains("secret-key")
        );
    }

    #[test]
    fn backend_urls() {
        let url = |s| BackendUrl::parse(s).unwrap();
        assert_eq!(
            (url("https://h").cluster(), url("https://h").authority()),
            ("outbound|443||h".into(), "h".into())
        );
        assert_eq!(url("https://h:8443/").cluster(), "outbound|8443||h");
        assert_eq!(url("https://h:8443").authority(), "h:8443");
        assert_eq!(url("http://H:80").authority(), "h");
        assert_eq!(url("http://h:3000").cluster(), "outbound|3000||h");
        assert_eq!(url("http://[::1]:8080").cluster(), "outbound|8080||[::1]");
        assert!(BackendUrl::parse("runtime:8080").is_err());
        assert!(BackendUrl::parse("http://").is_err());
    }

    #[test]
    fn collection_and_exemption_rules() {
        let config = parse(
            r#"{"traffic_direction":"outbound","collectionRules":{"http":{
                 "server":[{"path":"^/api/"}],
                 "client":[{"host":"^payments\\.example$","paths":["^/v1/charges"]},{"host":"^geo\\."}]}}}"#,
        )
        .unwrap();
        let s = &config.selection;
        assert!(
            s.selects("anything", "/api/orders"),
            "a server rule matches the path"
        );
        assert!(
            s.selects("payments.example", "/v1/charges?x=1"),
            "a client rule needs host and path"
        );
        assert!(!s.selects("payments.example", "/v2/refunds"));
        assert!(
            s.selects("geo.example", "/whatever"),
            "a client rule without paths matches any path"
        );
        assert!(!s.selects("other", "/other"));
        assert!(
            !s.selects("anything", "/api/v1/traces"),
            "the default exemption still applies"
        );

        let everything = parse(r#"{"traffic_direction":"inbound"}"#)
            .unwrap()
            .selection;
        assert!(everything.selects("h", "/x"), "no rules: everything");
        assert!(
            !everything.selects("h", "/v1/traces"),
            "the default exemption covers OTLP uploads"
        );

        let host_scoped = parse(
            r#"{"traffic_direction":"inbound","exemptionRules":[{"hostPatterns":["^internal"]}]}"#,
        )
        .unwrap()
        .selection;
        assert!(!host_scoped.selects("internal:80", "/v1/logs"));
        assert!(
            host_scoped.selects("public:80", "/v1/logs"),
            "host patterns scope the exemption"
        );
        assert!(host_scoped.selects("internal:80", "/hello"));
    }

    #[test]
    fn plain_patterns_match_as_their_regex_would() {
        let patterns = [
            "/v1/traces",
            "",
            "health",
            "é/ü",
            " x",
            ".",
            "^/api",
            "a-b",
            "v1|v2",
        ];
        let texts = [
            "",
            "/v1/traces",
            "/api/v1/traces?x",
            "/healthz",
            "/é/ü/",
            " x",
            "a-b",
            "v2",
        ];
        for pattern in patterns {
            let compiled = compile("p", pattern).unwrap();
            let literal = matches!(compiled, Pattern::Literal(_));
            assert_eq!(
                literal,
                pattern
                    .chars()
                    .all(|c| c.is_alphanumeric() || "/ ".contains(c))
            );
            let regex = Regex::new(pattern).unwrap();
            for text in texts {
                assert_eq!(
                    compiled.is_match(text),
                    regex.is_match(text),
                    "{pattern:?} on {text:?}"
                );
            }
        }
    }
}
